"""One type for a run folder (landmark.runs.RunFolder): its files, found from a checkpoint or an export."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from landmark.runs import RunExistsError, RunFolder

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "landmark"


def _run(tmp_path: Path) -> RunFolder:
    run = RunFolder(tmp_path / "run")
    run.checkpoints.mkdir(parents=True)
    run.write_info(tmp_path / "data", torch="x")
    run.split_file.write_text("id,landmark_id,split\na,1,train\nb,2,test\n")
    run.best.write_bytes(b"")
    return run


def test_files_and_reading(tmp_path):
    run = _run(tmp_path)
    assert run.best == tmp_path / "run" / "checkpoints" / "best.pt" and run.index == tmp_path / "run" / "index"
    assert run.info() == {"data": str((tmp_path / "data").resolve()), "torch": "x"}
    assert run.data() == (tmp_path / "data").resolve()
    assert run.split()["split"].tolist() == ["train", "test"] and run.metrics() is None
    assert RunFolder(tmp_path / "nothing").info() == {} and RunFolder(tmp_path / "nothing").split() is None


def test_found_from_its_folder_a_checkpoint_or_an_export(tmp_path):
    run = _run(tmp_path)
    assert RunFolder.of(run.root) == RunFolder.of(run.best) == RunFolder.of(run.export) == run
    assert RunFolder.of(tmp_path) is None and RunFolder.of_checkpoint(run.best) == run


def test_index_and_missing_index(tmp_path):
    run = _run(tmp_path)
    assert run.index_dir() is None and run.reference_info() is None
    run.reference.write_text(json.dumps({"count": 3}))
    with pytest.raises(FileNotFoundError, match=r"index is missing .*\(--classifier-only"):
        run.index_dir()
    run.index.mkdir()
    assert run.index_dir() == run.index and run.reference_info() == {"count": 3}


def test_taken_and_required(tmp_path):
    run = _run(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a run folder .no config.yaml/run.json"):
        run.require()
    run.config_file.write_text("")
    assert run.require() == run
    with pytest.raises(RunExistsError, match=f"continue it with --resume {run.root}"):
        run.refuse_taken()
    empty = RunFolder(tmp_path / "empty")
    empty.root.mkdir()
    (empty.root / ".lock").write_text("")
    assert not empty.taken()
    empty.refuse_taken()
    with pytest.raises(RunExistsError, match="not empty"):
        (empty.root / "x").write_text("")
        empty.refuse_taken()


def test_no_module_spells_a_run_folder_file_by_hand():
    """The run folder's file names are written in landmark/runs.py only (string constants; the
    models layer, below it, names ``checkpoints/best.pt`` in a hint only)."""
    names = {"run.json", "reference.json", "split.csv", "metrics.csv", "test_metrics.json", "best.pt", "last.pt",
             "config.yaml"}
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "runs.py" or path.relative_to(PACKAGE).parts[0] == "models":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in names:
                bad.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.value!r}")
    assert not bad, "\n".join(bad)
