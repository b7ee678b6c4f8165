"""The CLI keeps freed memory mapped (glibc M_TOP_PAD) unless the user's environment says otherwise."""
import sys

import pytest

from landmark import memory


@pytest.mark.skipif(sys.platform != "linux", reason="glibc setting")
def test_applied_on_glibc_unless_the_environment_sets_it(monkeypatch):
    monkeypatch.delenv("MALLOC_TOP_PAD_", raising=False)
    monkeypatch.delenv("MALLOC_MMAP_MAX_", raising=False)
    assert memory.keep_freed_memory() is True
    for variable in ("MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_"):   # the user's own choice wins
        monkeypatch.setenv(variable, "0")
        assert memory.keep_freed_memory() is False
        monkeypatch.delenv(variable)


def test_off_linux_nothing_is_touched(monkeypatch):
    monkeypatch.setattr(memory.sys, "platform", "darwin")
    assert memory.keep_freed_memory() is False


def test_the_command_line_applies_it_before_any_command(monkeypatch):
    from landmark import cli
    calls = []
    monkeypatch.setattr(memory, "keep_freed_memory", lambda *a: calls.append(a) or True)
    monkeypatch.setattr(sys, "argv", ["landmark", "--help"])
    with pytest.raises(SystemExit) as done:
        cli.main()
    assert done.value.code == 0 and calls == [()]
