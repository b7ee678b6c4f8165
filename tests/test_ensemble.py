"""Several models' descriptors concatenated (an ensemble: `landmark embed A B`, `index build --checkpoint A
--checkpoint B`): each photo's embedding of every model, L2-normalised, concatenated, unit norm; the index
records every member, and its queries and enrolled photos are embedded by all of them."""
import json
import re

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from _helpers import tiny_checkpoint
from landmark.cli import app
from landmark.models import create_model, save_checkpoint
from landmark.models.runtime import EnsembleRuntime, TorchRuntime, load_runtimes
from landmark.retrieval.embeddings import Embeddings, labelled_images, load_embeddings
from landmark.retrieval.index import LandmarkIndex
from landmark.retrieval.pipeline import embed_checkpoint
from landmark.retrieval.provenance import (ModelMismatch, check_model, checkpoints_of, describe, ensemble_record,
                                           model_record, one_pass_refusal, same_model)

PREPROCESS = {"size": 64, "resize": 72, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
runner = CliRunner()


def _second_checkpoint(path, preprocess=PREPROCESS):
    """Another untrained 3-class network (seed 1): other weights, so other descriptors."""
    torch.manual_seed(1)
    model = create_model("test_efficientnet", 3, weights="none").eval()
    save_checkpoint(path, model, ["a", "b", "c"], preprocess=preprocess)
    return model


def _ensemble_index(work, l13, idx):
    """`index build --checkpoint a.pt --checkpoint b.pt --max-side 80` over two landmarks13 landmarks."""
    done = runner.invoke(app, ["index", "build", "--checkpoint", str(work / "a.pt"), "--checkpoint",
                               str(work / "b.pt"), "--data", str(l13), "--landmarks", "9,11", "--max-side", "80",
                               "--out", str(idx), "--kind", "flat", "--workers", "0"])
    assert done.exit_code == 0, done.output
    return idx


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    work = tmp_path_factory.mktemp("ensemble")
    a = tiny_checkpoint(work / "a.pt", PREPROCESS)
    b = _second_checkpoint(work / "b.pt")
    return work, a, b


def test_ensemble_runtime_concatenates_normalised_members(two):
    work, a, b = two
    engine = load_runtimes([work / "a.pt", work / "b.pt"], "torch")
    assert isinstance(engine, EnsembleRuntime) and engine.name == "torch+torch"
    x = torch.randn(2, 3, 64, 48)
    logits, emb = engine(x)
    with torch.no_grad():
        ea, eb = F.normalize(a.embed(x), dim=1), F.normalize(b.embed(x), dim=1)
        own_logits = a(x)
    expected = torch.cat([ea, eb], dim=1) / np.sqrt(2)
    assert emb.shape == (2, ea.shape[1] + eb.shape[1])
    torch.testing.assert_close(emb, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(logits, own_logits, atol=1e-5, rtol=1e-5)   # the classifier: the first model's
    # its inner product is the mean of the members' cosines
    assert float(emb[0] @ emb[1]) == pytest.approx(float(ea[0] @ ea[1] + eb[0] @ eb[1]) / 2, abs=1e-5)
    assert load_runtimes([work / "a.pt"], "torch").name == "torch"   # one checkpoint: that runtime alone
    with pytest.raises(ValueError, match="given twice"):
        load_runtimes([work / "a.pt", work / "a.pt"], "torch")


def test_ensemble_refuses_members_that_normalise_differently(two, tmp_path):
    work, _, _ = two
    _second_checkpoint(tmp_path / "c.pt", {**PREPROCESS, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]})
    members = [TorchRuntime.from_checkpoint(p) for p in (work / "a.pt", tmp_path / "c.pt")]
    with pytest.raises(ValueError, match="must share them"):
        EnsembleRuntime(members, [work / "a.pt", tmp_path / "c.pt"])
    with pytest.raises(ValueError, match="two or more"):
        EnsembleRuntime(members[:1], [work / "a.pt"])


def test_ensemble_record_is_its_own_model():
    a = model_record("/m/a.pt", "a" * 64, PREPROCESS, max_side=448)
    b = model_record("/m/b.pt", "b" * 64, PREPROCESS, max_side=448)
    both = ensemble_record([a, b])
    assert both["sha256"] == "a" * 64 + "+" + "b" * 64 and both["max_side"] == 448
    assert [str(p) for p in checkpoints_of(both)] == ["/m/a.pt", "/m/b.pt"]
    assert checkpoints_of(a) == [checkpoints_of(a)[0]] and checkpoints_of(None) == []
    assert not same_model(both, a) and not same_model(both, ensemble_record([b, a]))   # order matters
    assert same_model(both, json.loads(json.dumps(both)))
    assert describe(both) == f"a.pt + b.pt (sha256 {'a' * 12} + {'b' * 12}, longer side 448 px)"
    with pytest.raises(ModelMismatch, match="--checkpoint /m/a.pt --checkpoint /m/b.pt"):
        check_model(a, both, "the vectors of a.pt", "this index", fix="give the checkpoint the index was built with")
    with pytest.raises(ValueError, match="same photos"):
        ensemble_record([a, model_record("/m/b.pt", "b" * 64, PREPROCESS, image_size=224)])
    assert "2 models concatenated" in one_pass_refusal(both, 224)
    assert "longer side is 448 px" in one_pass_refusal(a, 224)
    assert one_pass_refusal(model_record("/m/a.pt", "a" * 64, PREPROCESS), 64) is None


def test_embed_checkpoint_with_two_models_equals_their_concatenation(two, l13):
    work, _, _ = two
    frame = labelled_images(l13, ["9", "11"]).groupby("landmark_id").head(2).reset_index(drop=True)
    both, _, info = embed_checkpoint([work / "a.pt", work / "b.pt"], frame, work / "both.npy", max_side=80,
                                     dtype="float32", workers=0, runtime="auto", top_classes=0)
    parts = [np.asarray(embed_checkpoint(work / f"{m}.pt", frame, work / f"{m}.npy", max_side=80, dtype="float32",
                                         workers=0, top_classes=0)[0].vectors) for m in ("a", "b")]
    np.testing.assert_allclose(np.asarray(both.vectors), np.concatenate(parts, axis=1) / np.sqrt(2), atol=1e-5)
    assert len(info["members"]) == 2 and info["max_side"] == 80
    assert load_embeddings(work / "both.npy").model["sha256"] == info["sha256"]


@pytest.mark.slow
def test_index_of_two_models_embeds_queries_and_enrolments_with_both(two, l13, tmp_path):
    work, _, _ = two
    idx = _ensemble_index(work, l13, tmp_path / "idx")
    index = LandmarkIndex.load(idx)
    assert [m["checkpoint"] for m in index.meta["model"]["members"]] == [str(work / "a.pt"), str(work / "b.pt")]
    items = pd.read_csv(idx / "items.csv", dtype=str)
    queries = tmp_path / "q.csv"
    pd.DataFrame({"id": ["self"], "path": [items["path"].iloc[1]]}).to_csv(queries, index=False)
    out = tmp_path / "retrieval.csv"
    done = runner.invoke(app, ["retrieve", str(queries), "--index", str(idx), "--out", str(out), "--top-k", "3",
                               "--qe", "0", "--dba", "0", "--diffusion", "0", "--json", "--workers", "0"])
    assert done.exit_code == 0, done.output
    first = json.loads(done.stdout[done.stdout.index("["):])[0]["images"][0]
    assert first["id"] == items["id"].iloc[1] and first["similarity"] == pytest.approx(1.0, abs=2e-3)
    # one member alone is another model for this index: refused, saying which to give
    done = runner.invoke(app, ["retrieve", str(queries), "--index", str(idx), "--out", str(tmp_path / "r2.csv"),
                               "--checkpoint", str(work / "b.pt"), "--workers", "0"])
    assert done.exit_code == 2 and f"--checkpoint {work / 'a.pt'} --checkpoint {work / 'b.pt'}" in done.output
    # the kNN vote given the first checkpoint embeds with every member the index records
    sub = tmp_path / "knn" / "submission.csv"
    done = runner.invoke(app, ["knn", str(work / "a.pt"), "--index", str(idx), "--images", str(queries),
                               "--out", str(sub), "--scoring", "knn-vote", "--workers", "0"])
    assert done.exit_code == 0, done.output
    assert len(json.loads(sub.with_name("submission.queries.json").read_text())["model"]["members"]) == 2
    # the one-pass scoring (recognize, predict --index, the service) refuses it in one line
    done = runner.invoke(app, ["knn", str(work / "a.pt"), "--index", str(idx), "--images", str(queries),
                               "--out", str(tmp_path / "knn2.csv"), "--workers", "0"])
    assert done.exit_code == 2 and "2 models concatenated" in done.output
    # index add follows the record: new photos embedded by both models
    photos = labelled_images(l13, ["3"]).head(2)
    enrol = tmp_path / "new"
    enrol.mkdir()
    for i, path in enumerate(photos["path"]):
        (enrol / f"n{i}.jpg").write_bytes(open(path, "rb").read())
    done = runner.invoke(app, ["index", "add", str(idx), "--images", str(enrol), "--label", "New Place",
                               "--workers", "0"])
    assert done.exit_code == 0, done.output
    grown = LandmarkIndex.load(idx)
    assert len(grown) == len(index) + 2 and grown.dim == index.dim
    np.testing.assert_allclose(np.linalg.norm(grown.stored(np.arange(len(grown))), axis=1), 1.0, atol=2e-3)


def test_members_of_other_sizes_embed_the_first_ones_squares(two, l13, tmp_path):
    work, _, _ = two
    _second_checkpoint(tmp_path / "d.pt", {**PREPROCESS, "size": 80, "resize": 90})
    frame = labelled_images(l13, ["9"]).head(2).reset_index(drop=True)
    emb, _, info = embed_checkpoint([work / "a.pt", tmp_path / "d.pt"], frame, tmp_path / "sq.npy", workers=0,
                                    runtime="torch", top_classes=0)
    assert info["image_size"] == 64 and [m["image_size"] for m in info["members"]] == [64, 64]
    assert "max_side" not in info and len(emb) == 2


@pytest.fixture(scope="module")
def exported(two, l13):
    """``d96.pt`` (another network at 96 px) and its ONNX export ``d96.onnx``, the export ``a.onnx`` of
    ``a.pt``, and a CSV of 2 real photos."""
    from landmark.inference.export import export_onnx
    work, _, _ = two
    _second_checkpoint(work / "d96.pt", {**PREPROCESS, "size": 96, "resize": 110})
    files = sorted((l13 / "test").rglob("*.jpg"))[:2]
    pd.DataFrame({"id": [f.stem for f in files], "path": [str(f) for f in files]}).to_csv(work / "p.csv", index=False)
    export_onnx(work / "d96.pt", work / "d96.onnx", images=work / "p.csv", verify_images=2, threads=1)
    export_onnx(work / "a.pt", work / "a.onnx", images=work / "p.csv", verify_images=2, threads=1)
    return work


def test_onnx_member_at_another_size_than_the_first_is_refused_in_one_line(exported):
    """An ONNX export takes its own size only: fed the first member's size it failed inside ONNX Runtime
    (a traceback); given its own size, it was refused, naming the first member's size as the export's."""
    work = exported
    args = ["embed", str(work / "b.pt"), str(work / "d96.onnx"), "--images", str(work / "p.csv"), "--workers", "0"]
    done = runner.invoke(app, args + ["--out", str(work / "w64.npy"), "--image-size", "64"])
    assert done.exit_code == 2, done.output
    assert f"an ONNX export ({work / 'd96.onnx'}) takes 96 px inputs only; embed at 64 px" in done.output
    assert "give --image-size 96" in done.output and not (work / "w64.npy").exists()
    # its own size: both members embed at 96
    done = runner.invoke(app, args + ["--out", str(work / "w96.npy"), "--image-size", "96"])
    assert done.exit_code == 0, done.output
    record = load_embeddings(work / "w96.npy").model
    assert [m["image_size"] for m in record["members"]] == [96, 96] and record["runtime"] == "torch+onnx"


def test_the_same_model_twice_is_refused_as_an_export_or_a_copy(exported):
    """A checkpoint and its own export (or a byte copy) make the same vectors: an ensemble of them doubles
    the index for nothing, as the same path twice (refused) would."""
    work = exported
    (work / "a_copy.pt").write_bytes((work / "a.pt").read_bytes())
    for other in ("a.onnx", "a_copy.pt"):
        done = runner.invoke(app, ["embed", str(work / "a.pt"), str(work / other), "--images", str(work / "p.csv"),
                                   "--out", str(work / "same.npy"), "--workers", "0"])
        assert done.exit_code == 2 and "same model" in done.output and other in done.output, done.output
        assert not (work / "same.npy").exists()


def test_ensemble_refusals_say_what_the_command_given_can_do():
    """Vectors of a .npy are re-embedded with landmark embed (the command has no --checkpoint to give);
    members in another order are told the order."""
    a = model_record("/m/a.pt", "a" * 64, PREPROCESS)
    b = model_record("/m/b.pt", "b" * 64, PREPROCESS)
    both = ensemble_record([a, b])
    with pytest.raises(ModelMismatch, match=r"embed them with `landmark embed /m/a.pt /m/b.pt`$"):
        check_model(a, both, "the queries of q.npy", "this index",
                    fix="embed them with `landmark embed /m/a.pt /m/b.pt`")
    with pytest.raises(ModelMismatch, match="in this order .--checkpoint /m/a.pt --checkpoint /m/b.pt"):
        check_model(ensemble_record([b, a]), both, "the vectors of b + a", "this index",
                    fix="give the checkpoint the index was built with")


def test_knn_vote_given_another_member_is_told_the_first_checkpoint(two, tmp_path):
    """`landmark knn` takes one CHECKPOINT: an ensemble index's refusal told it to give '--checkpoint A
    --checkpoint B', an option knn does not have; it is given the first member (the others follow the record)."""
    work, _, _ = two
    both = ensemble_record([model_record(work / f"{m}.pt", "0" * 63 + m, PREPROCESS) for m in ("a", "b")])
    items = pd.DataFrame({"id": ["x", "y"], "landmark_id": ["a", "b"], "path": ["", ""]})
    LandmarkIndex.build(Embeddings(np.eye(2, 512, dtype=np.float32), items, model=both),
                        meta={"model": both}).save(tmp_path / "idx")
    queries = tmp_path / "q.npy"
    queries.write_bytes(b"")   # refused before it is read
    done = runner.invoke(app, ["knn", str(work / "b.pt"), "--index", str(tmp_path / "idx"), "--images", str(queries),
                               "--scoring", "knn-vote", "--out", str(tmp_path / "s.csv")])
    assert done.exit_code == 2 and f"give its first model, `landmark knn {work / 'a.pt'}`" in done.output, done.output
    assert "--checkpoint" not in done.output


def test_recognizer_refuses_nonlandmark_vectors_of_another_model(exported):
    """`recognize --nonlandmarks NAME.npy` took any vectors: an ensemble's (512-d) failed as 'ValueError:
    queries have dimension 256, non-landmarks 512', another model's of the same width silently moved every
    score.  They are checked against the model's record, as knn --scoring knn-vote checks them."""
    from landmark import Recognizer
    work = exported
    frame = pd.read_csv(work / "p.csv", dtype=str)
    embed_checkpoint([work / "a.pt", work / "b.pt"], frame, work / "nl_ab.npy", dtype="float32", workers=0,
                     runtime="torch", top_classes=0)
    embed_checkpoint(work / "b.pt", frame, work / "nl_b.npy", dtype="float32", workers=0, runtime="torch",
                     top_classes=0)
    embed_checkpoint(work / "a.pt", frame, work / "nl_a.npy", dtype="float32", workers=0, runtime="torch",
                     top_classes=0)
    for other, made_by in (("nl_ab.npy", "a.pt + b.pt"), ("nl_b.npy", "b.pt")):
        expected = f"the non-landmarks of .*{other} were made by model {re.escape(made_by)} "
        with pytest.raises(ModelMismatch, match=expected):
            Recognizer.load(work / "a.pt", index=False, runtime="torch", nonlandmarks=work / other)
    done = runner.invoke(app, ["recognize", frame["path"][0], "--model", str(work / "a.pt"), "--runtime", "torch",
                               "--nonlandmarks", str(work / "nl_ab.npy")])
    assert done.exit_code == 2 and "error: the non-landmarks of" in done.output, done.output
    rec = Recognizer.load(work / "a.pt", index=False, runtime="torch", nonlandmarks=work / "nl_a.npy")   # its own
    assert rec.nonlandmarks.shape == (2, 256)
    # the export stands for its checkpoint
    assert Recognizer.load(work / "a.onnx", index=False, nonlandmarks=work / "nl_a.npy").nonlandmarks.shape == (2, 256)


def test_a_member_gone_since_the_build_is_named_with_what_to_do(two, tmp_path):
    """A member read from meta.json and gone was 'checkpoint B does not exist': `landmark knn A` had
    never named B, and knn cannot be given it; the refusal says which model it is and what to do."""
    work, _, _ = two
    gone = tmp_path / "moved" / "b.pt"
    both = ensemble_record([model_record(work / "a.pt", "0" * 63 + "a", PREPROCESS),
                            model_record(gone, "0" * 63 + "b", PREPROCESS)])
    items = pd.DataFrame({"id": ["x", "y"], "landmark_id": ["a", "b"], "path": ["", ""]})
    LandmarkIndex.build(Embeddings(np.eye(2, 512, dtype=np.float32), items, model=both),
                        meta={"model": both}).save(tmp_path / "idx")
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "p.jpg").write_bytes(b"")   # refused before it is read
    expected = f"checkpoint {gone} does not exist: it is model 2 of the 2"
    for args in (["knn", str(work / "a.pt"), "--index", str(tmp_path / "idx"), "--images", str(photos),
                  "--scoring", "knn-vote", "--out", str(tmp_path / "s.csv")],
                 ["retrieve", str(photos), "--index", str(tmp_path / "idx"), "--out", str(tmp_path / "r.csv")],
                 ["index", "add", str(tmp_path / "idx"), "--images", str(photos), "--label", "x"]):
        done = runner.invoke(app, args)
        assert done.exit_code == 2 and expected in done.output, (args[0], done.output)


def test_runtime_line_says_which_member_has_no_export(exported):
    """`runtime: onnx+torch (cpu; auto: no export of this checkpoint ...)` read as if the first had none."""
    work = exported
    engine = load_runtimes([work / "a.pt", work / "b.pt"], "auto", "cpu")
    assert engine.name == "onnx+torch"
    assert engine.why_not_onnx == "b.pt: no export of it (landmark export writes one)"


def test_shards_embed_an_ensemble_at_max_side_as_one_process_does(two, l13, tmp_path):
    """`embed A B --max-side S --shard i/n` on each of n processes, then `embed-merge`: the single process's
    vectors, record and max_side (the setting for millions of photos, one shard per machine)."""
    work, _, _ = two
    frame = labelled_images(l13, ["9", "11"]).groupby("landmark_id").head(3).reset_index(drop=True)
    photos = tmp_path / "p.csv"
    frame[["id", "path"]].to_csv(photos, index=False)
    models = [str(work / "a.pt"), str(work / "b.pt")]
    common = ["--images", str(photos), "--max-side", "80", "--workers", "0", "--top-classes", "0"]
    done = runner.invoke(app, ["embed", *models, *common, "--out", str(tmp_path / "one.npy")])
    assert done.exit_code == 0, done.output
    for i in (1, 0):
        done = runner.invoke(app, ["embed", *models, *common, "--out", str(tmp_path / "parts"), "--shard", f"{i}/2",
                                   "--part-size", "2"])
        assert done.exit_code == 0, done.output
    assert json.loads((tmp_path / "parts" / "manifest.json").read_text())["max_side"] == 80
    done = runner.invoke(app, ["embed-merge", str(tmp_path / "parts"), "--out", str(tmp_path / "merged.npy")])
    assert done.exit_code == 0, done.output
    one, merged = load_embeddings(tmp_path / "one.npy"), load_embeddings(tmp_path / "merged.npy")
    assert list(merged.ids) == list(one.ids) and merged.model["sha256"] == one.model["sha256"]
    np.testing.assert_allclose(np.asarray(merged.vectors, dtype=np.float32), np.asarray(one.vectors, dtype=np.float32),
                               atol=2e-3)
    assert json.loads((tmp_path / "merged.json").read_text())["max_side"] == 80
    assert merged.model["max_side"] == 80 and len(merged.model["members"]) == 2
    # a second run over the same folder with squares is another run: refused
    done = runner.invoke(app, ["embed", *models, "--images", str(photos), "--workers", "0", "--out",
                               str(tmp_path / "parts"), "--shard", "0/2", "--part-size", "2"])
    assert done.exit_code == 2 and "another run" in done.output
    # Ray Data's actors take squares of one model
    done = runner.invoke(app, ["embed", *models, *common, "--out", str(tmp_path / "rayparts"), "--engine", "ray"])
    assert done.exit_code == 2 and "--shard i/n" in done.output


def test_recogniser_refuses_an_ensemble_index_before_loading_its_model(two, tmp_path, monkeypatch):
    """`recognize --index ENSEMBLE` said so only after seconds of model loading; now before it."""
    from landmark import Recognizer
    from landmark.inference import recognizer as module
    from landmark.retrieval.config import IndexParams
    from landmark.retrieval.embeddings import Embeddings
    work, _, _ = two
    record = ensemble_record([model_record(work / "a.pt", "a" * 64, PREPROCESS, max_side=80),
                              model_record(work / "b.pt", "b" * 64, PREPROCESS, max_side=80)])
    vectors = np.eye(4, 8, dtype=np.float32)
    index = LandmarkIndex.build(Embeddings(vectors=vectors, items=pd.DataFrame({"id": list("wxyz"),
                                                                                "landmark_id": list("aabb")})),
                                IndexParams(kind="flat"), {"model": record})

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the index was refused")
    monkeypatch.setattr(module, "load_model", no_model)
    with pytest.raises(ValueError, match=r"2 models concatenated \(a\.pt \+ b\.pt .*one --checkpoint and without "
                                         r"--max-side"):
        Recognizer.load(work / "a.pt", index=index)


def test_index_commands_refuse_missing_inputs_in_one_line(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    done = runner.invoke(app, ["index", "add", str(tmp_path / "nowhere"), "--images", str(empty), "--label", "X"])
    assert done.exit_code == 2 and done.output.strip() == f"error: index folder {tmp_path / 'nowhere'} does not exist"
    done = runner.invoke(app, ["index", "add", str(empty), "--images", str(tmp_path / "nothere"), "--label", "X"])
    assert done.exit_code == 2 and "--images" in done.output and "does not exist" in done.output
    done = runner.invoke(app, ["index", "add", str(empty), "--images", str(empty), "--label", "X"])
    assert done.exit_code == 2 and "holds no index (no meta.json)" in done.output
    from landmark.retrieval.pipeline import image_frame
    with pytest.raises(ValueError, match=f"no photos in {empty}"):
        image_frame(images=empty)


@pytest.mark.slow
def test_service_retrieves_from_an_ensemble_retrieval_index(two, l13, tmp_path):
    """`serve --retrieval-index DIR`: POST /v1/retrieve searches an index of two models' aspect-kept
    descriptors, embedding the upload as `landmark retrieve` embeds a photo; its thumbnails are served."""
    from fastapi.testclient import TestClient

    from _helpers import tiny_recognizer
    from landmark.serving.app import create_app
    work, _, _ = two
    idx = _ensemble_index(work, l13, tmp_path / "idx")
    items = pd.read_csv(idx / "items.csv", dtype=str)
    photo = items["path"].iloc[2]
    queries = tmp_path / "q.csv"
    pd.DataFrame({"id": ["q"], "path": [photo]}).to_csv(queries, index=False)
    done = runner.invoke(app, ["retrieve", str(queries), "--index", str(idx), "--out", str(tmp_path / "r.csv"),
                               "--top-k", "5", "--json", "--workers", "0"])
    assert done.exit_code == 0, done.output
    expected = [p["id"] for p in json.loads(done.stdout[done.stdout.index("["):])[0]["images"]]
    rec = tiny_recognizer(tmp_path)     # the recogniser has no index of its own
    rec.use_retrieval_index(idx)
    assert rec.retrieval.max_side == 80 and len(rec.retrieval.engine.members) == 2
    with TestClient(create_app(rec)) as client:
        with open(photo, "rb") as fh:
            reply = client.post("/v1/retrieve?top_k=5", files={"file": ("p.jpg", fh.read(), "image/jpeg")})
        assert reply.status_code == 200, reply.text
        found = reply.json()["results"][0]["images"]
        assert [p["id"] for p in found] == expected    # the ranking `landmark retrieve` gives the same photo
        assert client.get(f"/v1/references/{found[1]['id']}/thumbnail").status_code == 200
        assert client.get("/v1/references/nothere/thumbnail").status_code == 404
    from landmark.retrieval.config import RetrieveConfig
    plain = rec.retrieve(photo, top_k=3, config=RetrieveConfig(qe=0, dba=0, diffusion=0))[0]   # cosine alone
    assert plain[0].id == items["id"].iloc[2] and plain[0].similarity == pytest.approx(1.0, abs=5e-3)
    rec.use_retrieval_index(None)
    with TestClient(create_app(rec)) as client:
        assert client.post("/v1/retrieve", files={"file": ("p.jpg", open(photo, "rb").read(), "image/jpeg")}
                           ).status_code == 409
