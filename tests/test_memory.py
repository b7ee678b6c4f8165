"""The CLI keeps freed memory mapped (glibc M_TOP_PAD) and lets idle OpenMP threads sleep sooner
(GOMP_SPINCOUNT), unless the user's environment says otherwise."""
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


def test_idle_openmp_threads_spin_less_unless_the_environment_says(monkeypatch):
    from landmark import threads
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert threads.spin_less() is False and "GOMP_SPINCOUNT" not in threads.os.environ   # torch is loaded: too late
    monkeypatch.delitem(sys.modules, "torch")   # as at the start of the `landmark` command
    assert threads.spin_less() is True and threads.os.environ["GOMP_SPINCOUNT"] == "30000"
    monkeypatch.setenv("GOMP_SPINCOUNT", "INFINITE")        # the user's own choice wins
    assert threads.spin_less() is False and threads.os.environ["GOMP_SPINCOUNT"] == "INFINITE"
    monkeypatch.delenv("GOMP_SPINCOUNT")
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert threads.spin_less() is False and "GOMP_SPINCOUNT" not in threads.os.environ


def test_the_command_sets_the_spin_count_before_torch_loads(tmp_path):
    """`landmark` in a fresh process: GOMP_SPINCOUNT is set by the time a command imports torch."""
    import os
    import subprocess
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    code = ("import sys, os; from landmark import cli; sys.argv = ['landmark', '--help']\n"
            "try:\n    cli.main()\nexcept SystemExit:\n    pass\n"
            "print('SPIN', os.environ.get('GOMP_SPINCOUNT'), 'torch' in sys.modules, file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert "SPIN 30000 False" in out.stderr, out.stderr


@pytest.mark.skipif(sys.platform != "linux", reason="glibc setting")
def test_service_arenas_are_limited_unless_the_environment_sets_it(monkeypatch):
    import os
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert memory.limit_arenas(8 * os.cpu_count()) is True   # glibc's own default on 64-bit: nothing changes
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert memory.limit_arenas(2) is False
    with pytest.raises(ValueError, match="at least 1"):
        memory.limit_arenas(0)
