"""``--engine ray`` (Ray Data: decoding tasks, a pool of model actors) gives the rows of the
single-process command, in the same order, with the same rejects; a killed job resumes; the pool
never takes the CPUs its decoding needs; without Ray the engine says in one line how to install it.

One local Ray cluster of 2 CPUs serves the module (what the default pool must not deadlock on).
"""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from landmark.models.ray_engine import plan_pool

SRC = Path(__file__).resolve().parents[1] / "src"
PREPROCESS = {"size": 64, "resize": 72, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
HAVE_RAY = importlib.util.find_spec("ray") is not None and importlib.util.find_spec("pyarrow") is not None
needs_ray = pytest.mark.skipif(not HAVE_RAY, reason="Ray is not installed: pip install 'landmark[ray]'")
# from /work/shared/data/dirty (MANIFEST.csv): odd formats that decode, and the three files that do not
DIRTY_FILES = ["049d10ca-58e1-4cd8-a8e8-ebbbcc665c45.jpg", "synthetic_html_page.jpg", "43704a98-5b76-4194-904c-e9a99f1e9640.png",
               "synthetic_truncated_half.jpg", "synthetic_gray16.png", "synthetic_zero_bytes.jpg",
               "synthetic_exif_rotate90.jpg"]
REJECTED = {"synthetic_html_page", "synthetic_truncated_half", "synthetic_zero_bytes"}


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster of 2 CPUs for the module; its workers import this checkout."""
    if not HAVE_RAY:
        pytest.skip("Ray is not installed: pip install 'landmark[ray]'")
    import ray
    os.environ["PYTHONPATH"] = os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])   # inherited by workers
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="warning")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def setup(l13, tmp_path_factory):
    """A tiny checkpoint (64 px) and 30 real photos with 7 dirty files among them (3 unreadable)."""
    import torch

    from landmark.models import create_model, save_checkpoint
    dirty = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dirty"
    if not dirty.is_dir():
        pytest.skip(f"real data missing: {dirty}")
    work = tmp_path_factory.mktemp("ray")
    torch.manual_seed(0)
    model = create_model("test_efficientnet", 3, weights="none").eval()
    save_checkpoint(work / "run" / "checkpoints" / "best.pt", model, ["a", "b", "c"], preprocess=PREPROCESS)
    files = sorted((l13 / "train").rglob("*.jpg"))[:23]
    for k, name in enumerate(DIRTY_FILES):
        files.insert(3 * k + 1, dirty / name)
    frame = pd.DataFrame({"id": [f.stem for f in files], "path": [str(f) for f in files]})
    frame.to_csv(work / "photos.csv", index=False)
    return work, work / "run" / "checkpoints" / "best.pt", frame


def _embed(checkpoint, frame, folder, engine, **options):
    from landmark.retrieval.pipeline import embed_checkpoint_shard
    return embed_checkpoint_shard(checkpoint, frame, folder, part_size=7, top_classes=2, dtype="float16",
                                  batch_size=4, runtime="torch", engine=engine, **options)


@pytest.fixture(scope="module")
def local_parts(setup, tmp_path_factory):
    """The single-process command's parts folder (``embed --shard 0/1 --part-size 7``) and its merge."""
    from landmark.retrieval.shards import merge_shards
    work, checkpoint, frame = setup
    folder = tmp_path_factory.mktemp("local") / "parts"
    _embed(checkpoint, frame, folder, "local", workers=0)
    merge_shards(folder, folder.parent / "all.npy")
    return folder


def _same_embeddings(got: Path, want: Path):
    from landmark.retrieval.embeddings import load_embeddings, sidecar
    a, b = load_embeddings(got), load_embeddings(want)
    assert a.ids.tolist() == b.ids.tolist() and len(a) == 27
    np.testing.assert_allclose(np.asarray(a.vectors, np.float32), np.asarray(b.vectors, np.float32), atol=2e-3)
    assert (a.classes[0] == b.classes[0]).mean() > 0.9   # top-2 labels (near-ties may swap)
    np.testing.assert_allclose(np.sort(a.classes[1], 1), np.sort(b.classes[1], 1), atol=1e-3)
    ra, rb = (pd.read_csv(sidecar(p, "rejects.csv")) for p in (got, want))
    pd.testing.assert_frame_equal(ra, rb)
    assert set(ra["id"]) == REJECTED


@needs_ray
@pytest.mark.slow
def test_embed_on_ray_writes_the_parts_of_the_single_process_command(ray_cluster, setup, local_parts, tmp_path):
    from landmark.retrieval.shards import merge_shards
    work, checkpoint, frame = setup
    summary = _embed(checkpoint, frame, tmp_path / "parts", "ray")   # default pool on 2 CPUs: must not deadlock
    assert summary["parts"] == 5 and summary["embedded"] == 5 and summary["rows"] == 27 and summary["rejects"] == 3
    assert (summary["actors"], summary["actor_cpus"]) == (1, 1.0)
    assert sorted(p.name for p in (tmp_path / "parts").iterdir()) == sorted(p.name for p in local_parts.iterdir()
                                                                           if not p.name.startswith("all"))
    assert json.loads((tmp_path / "parts" / "manifest.json").read_text()) == \
        json.loads((local_parts / "manifest.json").read_text())
    merge_shards(tmp_path / "parts", tmp_path / "all.npy")
    _same_embeddings(tmp_path / "all.npy", local_parts.parent / "all.npy")


@needs_ray
@pytest.mark.slow
def test_killed_ray_job_resumes_where_it_stopped(ray_cluster, setup, local_parts, tmp_path):
    from landmark.retrieval.shards import merge_shards
    work, checkpoint, frame = setup
    written = []

    def stop_after_two(k):
        written.append(k)
        if len(written) == 2:
            raise KeyboardInterrupt   # as Ctrl-C (or a lost driver) part-way

    with pytest.raises(KeyboardInterrupt):
        _embed(checkpoint, frame, tmp_path / "parts", "ray", on_part=stop_after_two)
    assert sorted(p.name for p in (tmp_path / "parts").glob("part-*")) == ["part-00000", "part-00001"]
    from typer.testing import CliRunner

    from landmark.cli import app
    result = CliRunner().invoke(app, ["embed", str(checkpoint), "--images", str(work / "photos.csv"), "--out",
                                      str(tmp_path / "parts"), "--part-size", "7", "--top-classes", "2",
                                      "--batch-size", "4", "--runtime", "torch", "--engine", "ray"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert (summary["done_before"], summary["embedded"]) == (2, 3)
    assert not list((tmp_path / "parts").glob(".part-*"))   # no temporary folder left
    merge_shards(tmp_path / "parts", tmp_path / "all.npy")
    _same_embeddings(tmp_path / "all.npy", local_parts.parent / "all.npy")


@needs_ray
@pytest.mark.slow
def test_predict_on_ray_writes_the_csvs_of_the_single_process_command(ray_cluster, setup, tmp_path):
    from typer.testing import CliRunner

    from landmark.cli import app
    work, checkpoint, frame = setup
    runner = CliRunner()
    for engine in ("local", "ray"):
        args = ["predict", str(checkpoint), "--images", str(work / "photos.csv"), "--out", str(tmp_path / f"{engine}.csv"),
                "--tta", "2", "--batch-size", "8", "--runtime", "torch", "--engine", engine]
        result = runner.invoke(app, args + (["--workers", "0"] if engine == "local" else []))
        assert result.exit_code == 0, result.output
    local, ray = (pd.read_csv(tmp_path / f"{e}.answers.csv", dtype={"landmark_id": str}) for e in ("local", "ray"))
    assert local["id"].tolist() == ray["id"].tolist() == frame["id"].tolist()
    pd.testing.assert_frame_equal(local.drop(columns="score"), ray.drop(columns="score"))
    np.testing.assert_allclose(local["score"], ray["score"], atol=1e-5)
    assert local["score"].isna().sum() == 3
    sub_local, sub_ray = (pd.read_csv(tmp_path / f"{e}.csv", keep_default_na=False) for e in ("local", "ray"))
    assert sub_local["id"].tolist() == sub_ray["id"].tolist()
    assert [s.split(" ")[0] for s in sub_local["landmarks"]] == [s.split(" ")[0] for s in sub_ray["landmarks"]]
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "local.rejects.csv"), pd.read_csv(tmp_path / "ray.rejects.csv"))
    assert set(pd.read_csv(tmp_path / "ray.rejects.csv")["id"]) == REJECTED


@needs_ray
def test_decoding_and_the_model_stay_separate_stages(ray_cluster):
    """Ray fuses map stages with equal resources (ray-project/ray#54433): the photos would then be
    decoded inside the model actor, one batch at a time, with the decoding CPUs idle."""
    import contextlib
    import io

    from landmark.models.ray_engine import build_pipeline
    data = build_pipeline(pd.DataFrame({"id": ["a"], "path": ["a.jpg"]}), np.arange(1), side=8, draft=16,
                          model=dict, model_args={}, batch_size=4, plan=plan_pool(2))
    plan = io.StringIO()
    with contextlib.redirect_stdout(plan):
        data.explain()
    assert "TaskPoolMapOperator[MapBatches(decode_batch)]" in plan.getvalue(), plan.getvalue()
    assert "ActorPoolMapOperator[MapBatches(dict)]" in plan.getvalue(), plan.getvalue()


def test_the_pool_always_leaves_cpus_to_decoding():
    small = plan_pool(2)
    assert (small.actors, small.actor_cpus, small.decode_cpus, small.device) == (1, 1.0, 1.0, "cpu")
    big = plan_pool(16)
    assert (big.actors, big.actor_cpus, big.decode_cpus) == (6, 2.0, 4.0)
    gpu = plan_pool(16, 2)
    assert (gpu.actors, gpu.actor_cpus, gpu.actor_gpus, gpu.decode_cpus, gpu.device) == (2, 1.0, 1.0, 14.0, "cuda")
    assert plan_pool(8, 1, actor_gpus=0.5).actors == 2
    assert plan_pool(16, 1, actor_gpus=0).device == "cpu"
    for bad in ({"actor_cpus": 2}, {"actors": 2}, {"actors": 3, "actor_cpus": 0.5}):
        with pytest.raises(ValueError, match="leave none to decode"):
            plan_pool(2, **bad)
    with pytest.raises(ValueError, match="GPUs"):
        plan_pool(8, 1, actors=2, actor_gpus=1)
    with pytest.raises(ValueError, match="at least 2"):
        plan_pool(1)
    assert plan_pool(16, memory=2.5 * 2**30).actors == 2   # an actor per ACTOR_MEMORY, else Ray never starts them all
    with pytest.raises(ValueError, match="memory"):
        plan_pool(16, memory=2.5 * 2**30, actors=3)


def _fresh_python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(SRC), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


def test_without_ray_the_engine_says_how_to_install_it_before_loading_torch(tmp_path):
    hide_ray = ("import importlib.util as u, sys\n"
                "real = u.find_spec\n"
                "u.find_spec = lambda name, *a: None if name.split('.')[0] == 'ray' else real(name, *a)\n")
    (tmp_path / "m.pt").write_bytes(b"x")
    (tmp_path / "photos").mkdir()
    code = hide_ray + (f"sys.argv = ['landmark', 'predict', {str(tmp_path / 'm.pt')!r}, '--images', "
                       f"{str(tmp_path / 'photos')!r}, '--out', {str(tmp_path / 's.csv')!r}, '--engine', 'ray']\n"
                       "from landmark.cli import app\n"
                       "try:\n    app()\nexcept SystemExit as e:\n    print(e.code, 'torch' in sys.modules, 'ray' in sys.modules)\n")
    done = _fresh_python(code)
    assert done.stdout.split() == ["2", "False", "False"], done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'landmark[ray]'" in lines[0], done.stderr
    library = hide_ray + ("from landmark.models.runtime_info import check_engine\n"
                          "try:\n    check_engine('ray')\nexcept ValueError as e:\n    print(e)\n")
    assert "pip install 'landmark[ray]'" in _fresh_python(library).stdout


def test_import_landmark_and_the_local_engine_never_load_ray():
    done = _fresh_python("import sys, landmark, landmark.cli, landmark.retrieval.pipeline, landmark.inference.predict\n"
                         "from landmark.retrieval.pipeline import embed_checkpoint_shard\n"
                         "print('ray' in sys.modules)")
    assert done.stdout.strip() == "False", done.stderr


def test_ray_options_need_the_ray_engine(setup, tmp_path):
    from typer.testing import CliRunner

    from landmark.cli import app
    work, checkpoint, _ = setup
    result = CliRunner().invoke(app, ["embed", str(checkpoint), "--images", str(work / "photos.csv"),
                                      "--out", str(tmp_path / "e.npy"), "--actors", "2"])
    assert result.exit_code == 2 and "--actors only apply with --engine ray" in result.output
    if HAVE_RAY:
        result = CliRunner().invoke(app, ["embed", str(checkpoint), "--images", str(work / "photos.csv"),
                                          "--out", str(tmp_path / "e.npy"), "--engine", "ray"])
        assert result.exit_code == 2 and "give --out a folder" in result.output
