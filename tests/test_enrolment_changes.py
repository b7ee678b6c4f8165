"""Enrolling a look-alike says how many answers of its nearest landmarks' photos it changes
(``answers_changed`` in the enrolment reply, its sentence in ``summary``, printed by ``index add``):
real photos of landmarks_many, a run that knows the Gateway of India (an ImageNet backbone whose
ArcFace centres are its landmarks' mean embeddings), India Gate enrolled beside it."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from landmark.cli import app
from landmark.retrieval.scoring import changes_summary

MANY = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "landmarks_many"
KNOWN = ["21", "25", "28", "36", "13", "38"]   # Charminar, Gateway of India, Humayun's Tomb, Qutub Minar, ...
INDIA_GATE, PONTE = "29", "41"                  # a triumphal arch like the Gateway; a Porto bridge
runner = CliRunner()


def test_changes_summary_counts_only_answers_right_before():
    truth = ["25", "25", "25", "21"]
    before = [("25", True), ("25", True), ("21", True), ("21", True)]
    after = [("29", True), ("25", False), ("29", True), ("21", True)]
    got = changes_summary(truth, before, after, "29", name_of={"25": "Gateway of India", "21": "Charminar",
                                                              "29": "India Gate"}.get)
    assert {k: got[k] for k in ("checked", "right_before", "changed", "to_new", "to_no_landmark", "to_other")} == {
        "checked": 4, "right_before": 3, "changed": 2, "to_new": 1, "to_no_landmark": 1, "to_other": 0}
    assert got["landmarks"][0] == {"landmark_id": "25", "name": "Gateway of India", "checked": 3, "right_before": 2,
                                   "changed": 2, "to_new": 1, "to_no_landmark": 1, "to_other": 0}
    assert got["summary"] == ("it changes 2 of the 3 answers that were right for the photos of its nearest landmarks "
                              "checked (Gateway of India: 2 of 2), now 1 as India Gate, 1 as no landmark")
    lost = changes_summary([], [], [], "29", unreadable=3)
    assert lost["checked"] == 0 and lost["summary"] == ("no other landmark's photos could be checked (3 of their "
                                                        "indexed photos could not be read: not checked)")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    if not MANY.is_dir():
        pytest.skip(f"real data missing: {MANY}")
    from landmark.data.gldv2 import landmark_names
    from landmark.models import create_model, save_checkpoint
    from landmark.retrieval.embeddings import labelled_images
    from landmark.retrieval.index import IndexParams
    from landmark.retrieval.pipeline import build_index, embed_checkpoint
    work = tmp_path_factory.mktemp("changes")
    torch.manual_seed(0)
    model = create_model("tf_efficientnet_lite0", len(KNOWN), weights="imagenet", loss="arcface").eval()
    pre = {"size": 128, "resize": 144, "mean": model.arch["mean"], "std": model.arch["std"]}
    save_checkpoint(work / "raw.pt", model, KNOWN, preprocess=pre)
    frame = labelled_images(MANY, KNOWN).groupby("landmark_id", observed=True).head(20).reset_index(drop=True)
    emb, _, _ = embed_checkpoint(work / "raw.pt", frame, work / "raw.npy", workers=0, runtime="torch")
    vectors = torch.tensor(np.asarray(emb.vectors, np.float32))
    with torch.no_grad():   # each landmark's centre: its photos' mean embedding (the head is cosine x s)
        for i, lid in enumerate(KNOWN):
            model.head.weight[i] = F.normalize(vectors[emb.labels == lid].mean(0), dim=0)
    names = landmark_names(MANY, KNOWN)
    save_checkpoint(work / "best.pt", model, KNOWN, preprocess=pre, names=names)
    emb, _, info = embed_checkpoint(work / "best.pt", frame, work / "ref.npy", workers=0, runtime="torch")
    build_index(emb, work / "idx", params=IndexParams(kind="flat"), model_info=info, names=names)
    for lid in (INDIA_GATE, PONTE):
        labelled_images(MANY, [lid]).head(3)[["id", "path"]].to_csv(work / f"{lid}.csv", index=False)
    return work


def enrol(run, tmp_path, lid, label):
    shutil.copytree(run / "idx", tmp_path / lid)
    result = runner.invoke(app, ["index", "add", str(tmp_path / lid), "--images", str(run / f"{lid}.csv"),
                                 "--label", label, "--workers", "0"])
    assert result.exit_code == 0, result.output
    reply = json.loads(result.stdout[result.stdout.index("{"):])
    return reply["landmarks"][label.replace(" ", "_")], result.output


def test_a_look_alike_says_which_answers_it_changes(run, tmp_path):
    cover, output = enrol(run, tmp_path, INDIA_GATE, "India Gate")
    changed = cover["answers_changed"]
    gateway = next(r for r in changed["landmarks"] if r["landmark_id"] == "25")
    assert changed["landmarks"][0]["landmark_id"] == "25"   # the nearest landmark first
    assert gateway["right_before"] > 0 and gateway["changed"] > 0, changed
    assert changed["changed"] == changed["to_new"] + changed["to_no_landmark"] + changed["to_other"] > 0
    assert changed["checked"] <= 3 * 20 and changed["unreadable"] == 0
    assert changed["summary"] in cover["summary"] and "Gateway of India: " in changed["summary"]
    assert f"India Gate: {cover['summary']}" in output   # index add's line on stderr


def test_a_different_landmark_changes_no_answer(run, tmp_path):
    cover, _ = enrol(run, tmp_path, PONTE, "Ponte da Arrabida")
    changed = cover["answers_changed"]
    assert changed["right_before"] > 40 and changed["changed"] == 0, changed
    assert "it changes none of the" in cover["summary"]


def test_the_count_is_what_the_recognizer_answers_without_the_photo(run, tmp_path):
    """Leave-one-out, checked the slow way: each Gateway of India photo counted is answered by the
    Recognizer itself (recognize) on the index rebuilt without that photo, before and after India
    Gate's enrolment; the changes counted are exactly those."""
    from landmark import Recognizer
    from landmark.retrieval.embeddings import Embeddings
    from landmark.retrieval.index import IndexParams, LandmarkIndex
    cover, _ = enrol(run, tmp_path, INDIA_GATE, "India Gate")
    gateway = next(r for r in cover["answers_changed"]["landmarks"] if r["landmark_id"] == "25")
    before, after = LandmarkIndex.load(run / "idx"), LandmarkIndex.load(tmp_path / INDIA_GATE)

    def without(index, row):
        keep = np.flatnonzero(np.arange(len(index)) != row)
        vectors = np.stack([index.index.reconstruct(int(r)) for r in keep])
        return LandmarkIndex.build(Embeddings(vectors, index.items.iloc[keep].reset_index(drop=True)),
                                   IndexParams(kind="flat"), meta=dict(index.meta))
    rec = Recognizer.load(run / "best.pt", index=before, confirm_enrolled=False)
    rows = np.flatnonzero(before.labels == "25")
    assert gateway["checked"] == len(rows) == 20   # every one of its 20 photos (at most 20 are checked)
    right = changed = 0
    for row in rows:
        photo = before.items["path"].iat[row]
        answers = []
        for index in (before, after):
            rec.index = without(index, row)
            rec.rescore()
            answers.append(rec.recognize(photo)[0])
        if answers[0].landmark_id == "25" and answers[0].is_landmark:
            right += 1
            changed += not (answers[1].landmark_id == "25" and answers[1].is_landmark)
    assert (gateway["right_before"], gateway["changed"]) == (right, changed)
