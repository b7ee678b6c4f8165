"""Lines printed while a tqdm progress bar is shown (runtime, warning, error, stop and summary
lines) each get a line of their own: the bar is cleared first (cli._say), and a bar is closed
however its loop ends (tagging, data.dataset.good_batches)."""
import shutil
import sys

import pytest
from tqdm import tqdm
from typer.testing import CliRunner

from landmark.data import image_path

PHOTOS = ["0293bfc9c30f70fe", "03ebea6fd7624da2"]   # landmarks13 test photos


def own_line(stderr: str, words: str) -> bool:
    """Whether ``words`` starts a line as a terminal shows it: nothing of a bar before it, after
    the last carriage return of its line."""
    lines = [line for line in stderr.split("\n") if words in line]
    assert lines, f"{words!r} not printed: {stderr!r}"
    return all(line.split(words)[0].rsplit("\r", 1)[-1] == "" for line in lines)


def test_a_line_said_while_a_bar_is_shown_gets_its_own_line(capsys):
    from landmark.cli import _say
    with tqdm(total=3, desc="work", file=sys.stderr) as bar:
        bar.update(1)
        _say("runtime: onnx (RUN/model.onnx, fp32)")
        bar.update(1)
    err = capsys.readouterr().err
    assert own_line(err, "runtime: onnx") and "work:" in err.split("runtime:")[0]   # the bar was there first
    with tqdm(total=3, desc="work", file=sys.stderr) as bar:   # what happened before: the line on the bar's line
        bar.update(1)
        print("runtime: torch", file=sys.stderr)
    assert not own_line(capsys.readouterr().err, "runtime: torch")


def test_a_bar_over_batches_is_closed_when_the_caller_stops():
    from landmark.data.dataset import good_batches
    batches = good_batches([({"x": 1}, []), ({"x": 2}, [])], [], desc="embed", file=sys.stderr)
    next(batches)
    assert len(tqdm._instances) == 1
    batches.close()   # the consumer stopped (an error, Ctrl-C): the bar goes with it
    assert len(tqdm._instances) == 0


@pytest.mark.slow
def test_tag_prints_runtime_stop_and_summary_lines_on_lines_of_their_own(l13, recognizer_run, tmp_path, monkeypatch):
    pytest.importorskip("exiv2", reason="exiv2 not installed: pip install 'landmark[tag]'")
    from landmark.cli import app
    from landmark.inference import tagging
    library = tmp_path / "Pictures"
    library.mkdir()
    for i in PHOTOS:
        shutil.copy(image_path(l13, i, "test"), library / f"{i}.jpg")
    # the recogniser loads at the first photo, under the bar: its runtime line gets its own line
    result = CliRunner().invoke(app, ["tag", str(library), "--model", str(recognizer_run), "--batch-size", "1"])
    assert result.exit_code == 0, result.output
    assert own_line(result.stderr, "runtime: ") and "tag:" in result.stderr.split("runtime: ")[0]
    assert result.stdout.startswith("tagged ") and "\r" not in result.stdout
    # Ctrl-C mid-run: the bar is closed and the stop line is a line of its own
    for p in library.glob("*.xmp"):
        p.unlink()

    def interrupted(path, data):
        raise KeyboardInterrupt
    monkeypatch.setattr(tagging, "write_sidecar", interrupted)
    result = CliRunner().invoke(app, ["tag", str(library), "--model", str(recognizer_run), "--batch-size", "1"])
    assert result.exit_code == 130, result.output
    assert own_line(result.stderr, "stopped: the sidecars written so far are whole")
    assert len(tqdm._instances) == 0
