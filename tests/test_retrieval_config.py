"""Retrieval settings: presets, overrides, one place per default, and the CLI reading them."""
from __future__ import annotations

import inspect
import json
import subprocess
import sys

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from landmark.cli import _retrieval_settings, app
from landmark.data.download_options import DownloadOptions
from landmark.retrieval.config import (SAME_LANDMARK_INLIERS, IndexParams, KnnConfig, RetrievalConfig, VerifyConfig,
                                       load_retrieval_config, retrieval_presets)


def _command(*path: str):
    """The click command of ``landmark PATH...`` (e.g. ``index build``)."""
    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]
    return command


def _defaults(*path: str) -> dict:
    return {p.name: p.default for p in _command(*path).params}


def test_presets_validate_and_say_what_they_change():
    assert retrieval_presets() == ["exact", "ivfpq", "verified"]
    exact, ivfpq, verified = (load_retrieval_config(name) for name in retrieval_presets())
    assert exact.index.kind == "flat" and exact.knn == KnnConfig() and exact.verify == VerifyConfig()
    assert ivfpq.index.kind == "ivfpq" and ivfpq.index.pq_m == 64 and ivfpq.knn == KnnConfig()
    assert verified.verify.top == 3 and verified.verify.min_inliers == SAME_LANDMARK_INLIERS
    assert verified.index == IndexParams() and verified.knn == KnnConfig()
    assert load_retrieval_config() == RetrievalConfig()


def test_bad_preset_is_one_line_naming_the_presets(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_retrieval_config("fastest")
    assert "\n" not in str(err.value) and "exact, ivfpq, verified" in str(err.value)
    res = CliRunner().invoke(app, ["knn", str(tmp_path / "m.pt"), "--index", str(tmp_path), "--images", str(tmp_path),
                                   "--preset", "fastest"])
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "exact, ivfpq, verified" in lines[0]
    res = CliRunner().invoke(app, ["index", "build", "--out", str(tmp_path / "idx"), "--kind", "kdtree",
                                   "--preset", "exact"])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1 and "index.kind" in res.output


def test_knn_refuses_options_of_the_vote_without_scoring_knn_vote(tmp_path):
    """`landmark knn` answers through the one scoring path by default; an option of the kNN vote without
    --scoring knn-vote is refused in one line before anything loads, and an unknown scoring too."""
    base = ["knn", str(tmp_path / "m.pt"), "--index", str(tmp_path), "--images", str(tmp_path),
            "--out", str(tmp_path / "k.csv")]
    for extra, said in ((["--k", "5"], "--k is an option of the kNN vote"),
                        (["--preset", "verified", "--p", "2"], "--preset, --p are options of the kNN vote"),
                        (["--scoring", "vote"], "choose one of reference, knn-vote")):
        res = CliRunner().invoke(app, base + extra)
        lines = res.output.strip().splitlines()
        assert res.exit_code == 2 and len(lines) == 1 and said in lines[0], res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_yaml_file_and_bad_fields(tmp_path):
    good = tmp_path / "mine.yaml"
    good.write_text("knn:\n  k: 20\nverify:\n  top: 5\n")
    settings = load_retrieval_config(good)
    assert (settings.knn.k, settings.verify.top, settings.index) == (20, 5, IndexParams())
    bad = tmp_path / "bad.yaml"
    bad.write_text("index:\n  kind: kdtree\nknn:\n  neighbours: 3\n")
    with pytest.raises(ValueError, match=r"index\.kind: .*\(got 'kdtree'\); knn\.neighbours: unknown key "
                                         r"\(known keys: k, p, ") as err:
        load_retrieval_config(bad)
    assert "\n" not in str(err.value)   # one line, as the training config's errors
    with pytest.raises(ValueError, match=r"knn\.k"):
        load_retrieval_config(None, {"knn": {"k": 0}})


def test_overrides_win_over_the_preset():
    settings = load_retrieval_config("verified", {"knn": {"k": 5}, "verify": {"min_inliers": 30}})
    assert (settings.knn.k, settings.verify.top, settings.verify.min_inliers) == (5, 3, 30)
    # the CLI passes only the flags that were given
    assert _retrieval_settings(None, knn={"k": None, "p": None}) == RetrievalConfig()
    settings = _retrieval_settings("ivfpq", index={"kind": None, "nprobe": 4})
    assert (settings.index.kind, settings.index.nprobe, settings.index.pq_m) == ("ivfpq", 4, 64)
    settings = _retrieval_settings("exact", knn={"k": 3}, verify={"top": None, "min_inliers": None})
    assert (settings.index.kind, settings.knn.k, settings.verify) == ("flat", 3, VerifyConfig())


def test_cli_defaults_are_the_librarys():
    # retrieval flags are overrides: unset unless given; what they fall back to is the library's
    for path, names in ((("knn",), ("k", "p", "combine", "nonlandmark_k", "nonlandmark_weight", "reject_below",
                                     "verify_top", "min_inliers", "preset")),
                        (("index", "build"), ("kind", "nlist", "nprobe", "pq_m", "hnsw_m", "ef_search", "preset"))):
        defaults = _defaults(*path)
        assert all(defaults[n] is None for n in names), path
    knn_help = {p.name: p.help for p in _command("knn").params}
    assert f"default {KnnConfig().k}," in knn_help["k"]
    assert f"default {SAME_LANDMARK_INLIERS}," in knn_help["min_inliers"]
    verify, match = VerifyConfig(), _defaults("match")
    assert (match["ratio"], match["model"], match["threshold"]) == (verify.ratio, verify.model, verify.ransac_threshold)
    # keypoints and size fall back to the chosen features' settings: VerifyConfig's (rootsift) or LocalConfig's
    assert match["max_keypoints"] is None and match["max_side"] is None and match["features"] == "rootsift"
    match_help = {p.name: p.help for p in _command("match").params}
    local = RetrievalConfig().local
    assert f"{verify.max_keypoints} rootsift, {local.max_keypoints} learned" in match_help["max_keypoints"]
    assert f"{verify.max_side} rootsift, {local.max_side} learned" in match_help["max_side"]
    opts, download = DownloadOptions(), _defaults("download")
    assert (download["max_width"], download["workers"], download["timeout"], download["retries"],
            download["backoff"], download["rate"], download["split"], download["base_url"]) == \
        (opts.max_width, opts.workers, opts.timeout, opts.retries, opts.backoff, opts.rate_per_host, opts.split,
         opts.base_url)
    assert download["max_mb"] * 2**20 == opts.max_bytes


def test_library_defaults_have_one_place():
    from landmark.reporting import match_plot
    from landmark.retrieval import knn, verification
    knn_cfg, verify = KnnConfig(), VerifyConfig()
    assert inspect.signature(knn.knn_vote).parameters["p"].default == knn_cfg.p
    sim = inspect.signature(knn.nonlandmark_similarity).parameters
    assert (sim["k"].default, sim["p"].default) == (knn_cfg.nonlandmark_k, knn_cfg.p)
    for fn in (verification.local_features, verification.sift_features, verification.FeatureCache):
        params = inspect.signature(fn).parameters
        assert (params["max_keypoints"].default, params["max_side"].default) == (verify.max_keypoints,
                                                                                  verify.max_side)
    for fn in (verification.match, verification.count_inliers):
        params = inspect.signature(fn).parameters
        assert (params["ratio"].default, params["model"].default) == (verify.ratio, verify.model)
    assert inspect.signature(match_plot.matches_png).parameters["max_side"].default == verify.max_side
    # one "same landmark" threshold
    assert verify.min_inliers == SAME_LANDMARK_INLIERS == 15
    assert not hasattr(verification, "RECOMMENDED_MIN_INLIERS")


def _write_embeddings(path, n=200, d=16):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, d)).astype(np.float32)
    np.save(path, x / np.linalg.norm(x, axis=1, keepdims=True))
    path.with_suffix(".ids.csv").write_text("id,landmark_id\n" + "".join(f"i{k},{k % 5}\n" for k in range(n)))
    path.with_suffix(".json").write_text(json.dumps({"rows": n}))


def test_index_build_takes_a_preset_and_flags(tmp_path):
    emb = tmp_path / "e.npy"
    _write_embeddings(emb)
    runner = CliRunner()
    res = runner.invoke(app, ["index", "build", "--embeddings", str(emb), "--out", str(tmp_path / "exact"),
                              "--preset", "exact"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["kind"] == "flat"
    res = runner.invoke(app, ["index", "build", "--embeddings", str(emb), "--out", str(tmp_path / "pq"),
                              "--preset", "ivfpq", "--pq-m", "4"])
    assert res.exit_code == 0, res.output
    meta = json.loads((tmp_path / "pq" / "meta.json").read_text())
    assert meta["kind"] == "ivfpq" and meta["params"]["pq_m"] == 4 and meta["params"]["nprobe"] == 16


def test_command_line_imports_no_torch():
    loaded = subprocess.run([sys.executable, "-c", "import sys, landmark.cli; print(' '.join(sys.modules))"],
                            capture_output=True, text=True, check=True).stdout.split()
    assert "landmark.retrieval.config" in loaded and "landmark.data.download_options" in loaded
    assert not {"torch", "faiss", "cv2", "pandas", "requests"} & set(loaded)
