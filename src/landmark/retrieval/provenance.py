"""Which model made a set of vectors, and the refusal to mix vectors of different models.

Vectors are comparable only when one network with one preprocessing made them: an index of
lite0 vectors searched with lite2 queries, or an embeddings file half of whose rows came
from another checkpoint, gives confident wrong answers.  Every embeddings file (``NAME.json``),
shard folder (``manifest.json``, every part) and index (``meta.json``) therefore records its
model (:func:`model_record`):

* ``sha256``: SHA-256 of the ``.pt`` checkpoint (for an ONNX export, the checkpoint it was
  exported from, as stored in its metadata: an export and its checkpoint make the same vectors);
* ``image_size``, ``mean``, ``std``: the preprocessing the photos went through; ``max_side``
  (only when set): the photos kept their aspect ratio, the longer side ``image_size`` px
  (``landmark embed --max-side``), instead of being squashed to ``image_size`` squares;
* ``checkpoint``, ``backbone``, ``runtime``: for people reading the record;
* ``members`` (only for vectors of several models concatenated, :func:`ensemble_record`): each
  model's own record; ``sha256`` is then the members' joined by ``+`` and ``checkpoint`` the first's.

Two records are the same model when :data:`IDENTITY` agree.  Files written before records
existed carry none: they are read with a :class:`ProvenanceWarning`, not refused.
"""
from __future__ import annotations

import warnings
from functools import lru_cache
from pathlib import Path

#: the fields that make two sets of vectors comparable (and ``max_side``, absent for square inputs:
#: :func:`same_model`)
IDENTITY = ("sha256", "image_size")


class ProvenanceWarning(UserWarning):
    """Vectors whose model is unknown (a file written before models were recorded)."""


class ModelMismatch(ValueError):
    """Vectors of one model offered to an artifact of another."""


def model_record(checkpoint: str | Path, sha256: str, preprocess: dict, image_size: int | None = None,
                 backbone: str | None = None, runtime: str | None = None, max_side: int | None = None) -> dict:
    """The record of the model that embeds at ``image_size`` px squares (None: the checkpoint's size),
    or, with ``max_side``, photos whose longer side is ``max_side`` px, aspect ratio kept
    (``image_size`` is then ``max_side``, and the record has ``max_side``)."""
    record = {"checkpoint": str(Path(checkpoint).resolve()), "sha256": sha256, "backbone": backbone,
              "image_size": int(max_side or image_size or preprocess["size"]), "mean": list(preprocess.get("mean", [])),
              "std": list(preprocess.get("std", [])), "runtime": runtime}
    return {**record, "max_side": int(max_side)} if max_side else record


def ensemble_record(records: list[dict]) -> dict:
    """The record of vectors that concatenate the descriptors of several models
    (:class:`landmark.models.runtime.EnsembleRuntime`): ``sha256`` the members' joined by ``+`` (so
    it equals no single model's, nor the same models in another order), ``members`` each record.

    Raises:
        ValueError: fewer than two records, the same model twice (one ``sha256``: a checkpoint and
            its own export, or a copy), or records of other image sizes / ``max_side``.
    """
    if len(records) < 2:
        raise ValueError("an ensemble record needs two or more models")
    seen: dict[str, str] = {}
    for r in records:
        if (sha := str(r.get("sha256"))) in seen:
            raise ValueError(f"{seen[sha]} and {r.get('checkpoint')} are the same model (sha256 {sha[:12]}; an "
                             "ONNX export stands for the checkpoint it came from): an ensemble needs different "
                             "models, give each once")
        seen[sha] = str(r.get("checkpoint"))
    shapes = {(r.get("image_size"), max_side_of(r)) for r in records}
    if len(shapes) > 1:
        sizes = ", ".join(f"{Path(str(r.get('checkpoint'))).name} {r.get('image_size')} px" for r in records)
        raise ValueError(f"an ensemble's models must embed the same photos, these embed at their own sizes "
                         f"({sizes}): give --image-size N (or --max-side N), at which every one embeds them")
    first = records[0]
    return {**first, "sha256": "+".join(str(r.get("sha256")) for r in records),
            "backbone": "+".join(str(r.get("backbone")) for r in records),
            "runtime": "+".join(str(r.get("runtime")) for r in records), "members": [dict(r) for r in records]}


def checkpoints_of(record: dict | None) -> list[Path]:
    """The checkpoint file(s) that made vectors of ``record``: one, or each member's
    (:func:`ensemble_record`); none when the record names none."""
    if not isinstance(record, dict):
        return []
    if record.get("members"):
        return [Path(m["checkpoint"]) for m in record["members"] if m.get("checkpoint")]
    return [Path(record["checkpoint"])] if record.get("checkpoint") else []


def one_pass_refusal(record: dict | None, size: int | None = None) -> str | None:
    """Why a model answering from one forward pass of ``size`` px squares (logits and embedding
    together: the Recognizer, ``recognize``, ``predict --index``, the service) cannot use an index whose
    vectors ``record`` describes; None when it can (or the record is unknown).  ``size`` None (the model
    not loaded yet): only what no single square pass can make (several models, aspect-kept photos)."""
    if not isinstance(record, dict):
        return None
    if record.get("members"):
        return (f"the index holds the descriptors of {len(record['members'])} models concatenated "
                f"({describe(record)}); the model answers from its own pass: search it with landmark retrieve "
                "(or landmark knn --scoring knn-vote), or build an index with one --checkpoint and without "
                "--max-side to recognise with")
    if record.get("max_side"):
        squares = f"{size} px squares" if size is not None else "squares"
        return (f"the index holds embeddings of photos whose longer side is {record['max_side']} px (aspect kept), "
                f"the model answers on {squares}; search it with landmark retrieve (or serve --retrieval-index), "
                "or build the index without --max-side to recognise with")
    if size is not None and record.get("image_size") is not None and record["image_size"] != size:
        return (f"the index holds embeddings of {record['image_size']} px images, the model answers at {size} px; "
                "build the index without --image-size")
    return None


def max_side_of(record: dict | None) -> int | None:
    """``max_side`` of a model record (None: square inputs, or no record): what queries of an index
    must be embedded with, beside ``image_size``."""
    return int(record["max_side"]) if isinstance(record, dict) and record.get("max_side") else None


def known(record: dict | None) -> bool:
    """Whether ``record`` says which model it is (has every :data:`IDENTITY` field)."""
    return isinstance(record, dict) and all(record.get(k) is not None for k in IDENTITY)


def describe(record: dict | None) -> str:
    """``best.pt (sha256 1a2b3c4d5e6f, 128 px)`` for messages."""
    if not known(record):
        return "an unrecorded model"
    shape = f"longer side {record['max_side']} px" if max_side_of(record) else f"{record['image_size']} px"
    if record.get("members"):
        names = " + ".join(_short(m.get("checkpoint")) for m in record["members"])
        return f"{names} (sha256 {' + '.join(str(m.get('sha256'))[:12] for m in record['members'])}, {shape})"
    name = _short(record.get("checkpoint"))
    return f"{name} (sha256 {record['sha256'][:12]}, {shape})"


def _short(checkpoint: str | None) -> str:
    """A checkpoint's name for people: ``mine/best.pt`` for ``runs/mine/checkpoints/best.pt`` (the run
    says which model, where every run's file is ``best.pt``), else the file name."""
    path = Path(checkpoint or "?")
    return f"{path.parent.parent.name}/{path.name}" if path.parent.name == "checkpoints" else path.name


def same_model(a: dict | None, b: dict | None) -> bool:
    """Whether two records name the same model and preprocessing (unknown ones never do)."""
    return known(a) and known(b) and all(a[k] == b[k] for k in IDENTITY) and max_side_of(a) == max_side_of(b)


def check_model(made_by: dict | None, expected: dict | None, what: str, against: str, fix: str) -> None:
    """Refuse vectors ``what`` made by ``made_by`` for ``against``, made by ``expected``.

    A side without a record (written before records existed) passes with a
    :class:`ProvenanceWarning`.

    Args:
        what / against: e.g. ``"the vectors of q.npy"`` / ``"this index"``.
        fix: what to do, e.g. ``"re-embed them with landmark embed CKPT"``.

    Raises:
        ModelMismatch: both records are known and differ (one line, naming both models and ``fix``).
    """
    if not known(made_by) or not known(expected):
        unknown = what if not known(made_by) else against
        warnings.warn(f"{unknown}: no model recorded (written by an older landmark, or made in memory); assumed "
                      f"to match {against if unknown == what else what}, which only you can check: {fix}",
                      ProvenanceWarning, stacklevel=3)
        return
    if not same_model(made_by, expected):
        members = checkpoints_of(expected) if expected.get("members") else []
        # a fix naming every member already says what to run (`landmark embed A B`); else the order to give them
        if members and made_by["sha256"] != expected["sha256"] and not all(str(c) in fix for c in members):
            fix = (f"{against} concatenates {len(members)} models' descriptors: give every one, in "
                   f"this order ({' '.join('--checkpoint ' + str(c) for c in members)})")
        raise ModelMismatch(f"{what} were made by model {describe(made_by)}, {against} by {describe(expected)}: "
                            f"{fix}")


@lru_cache(maxsize=16)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    from ..models.runtime import file_sha256
    return file_sha256(path)


def checkpoint_sha256(checkpoint: str | Path) -> str:
    """SHA-256 of a checkpoint file (cached while its size and time stamp stay)."""
    path = Path(checkpoint).resolve()
    stat = path.stat()
    return _sha256(str(path), stat.st_size, stat.st_mtime_ns)


def runtime_record(engine, checkpoint: str | Path, image_size: int | None, max_side: int | None = None) -> dict:
    """The record (:func:`model_record`) of ``engine`` (a :class:`~landmark.models.runtime.Runtime`)
    embedding at ``image_size`` px (or longer side ``max_side`` px): an ONNX export is recorded as
    the checkpoint it was exported from; an ``EnsembleRuntime`` (``checkpoint`` unused) as
    :func:`ensemble_record` of its members'."""
    if getattr(engine, "members", None):   # an EnsembleRuntime: each member with its own checkpoint
        size = None if max_side else image_size or engine.preprocess["size"]   # one tensor feeds every member
        return ensemble_record([runtime_record(m, c, size, max_side) for m, c in zip(engine.members, engine.checkpoints)])
    meta = getattr(engine, "meta", None) or {}
    sha = meta.get("checkpoint_sha256") if engine.name == "onnx" else None
    return model_record(checkpoint, sha or checkpoint_sha256(checkpoint), engine.preprocess, image_size,
                        backbone=getattr(engine.spec, "backbone", None), runtime=engine.name, max_side=max_side)
