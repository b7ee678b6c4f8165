"""One run folder, as one type: the files ``landmark train`` writes and everything else reads.

A run folder (``RUN``) holds::

    config.yaml          the resolved TrainConfig            (RunFolder.config_file, .config())
    run.json             data folder(s), versions            (.info_file, .info(), .data())
    split.csv            id, landmark_id, split              (.split_file, .split())
    split_summary.json   class selection and split counts    (.split_summary)
    metrics.csv/.json    one row per epoch                   (.metrics_file, .metrics())
    curves.png           training curves                     (.curves)
    rejects.csv          unreadable photos, with the reason  (.rejects)
    test_metrics.json    the held-out test of the best model (.test_metrics)
    checkpoints/best.pt  best validation GAP                 (.best)
    checkpoints/last.pt  after every epoch, for resume       (.last)
    index/               the reference index                 (.index, .index_dir())
    reference.json       its summary and reject thresholds   (.reference, .reference_info())
    model.onnx           an export (landmark export)         (.export)
    features/            frozen-backbone descriptors cache   (.features)

Checkpoints are read and written only through :mod:`landmark.models` (``load_model``,
``save_checkpoint``, ``write_checkpoint``); this module names paths and reads the small
text files.  It imports neither torch nor pandas at import time.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

class RunExistsError(FileExistsError):
    """The run folder already holds a run and ``resume`` was not asked for."""


@dataclass(frozen=True)
class RunFolder:
    """The files of one run folder (module docstring); ``root`` need not exist yet."""

    root: Path

    def __init__(self, root: str | Path):
        object.__setattr__(self, "root", Path(root))

    # -- the files ---------------------------------------------------------------------------
    config_file = property(lambda self: self.root / "config.yaml")
    info_file = property(lambda self: self.root / "run.json")
    split_file = property(lambda self: self.root / "split.csv")
    split_summary = property(lambda self: self.root / "split_summary.json")
    metrics_file = property(lambda self: self.root / "metrics.csv")
    metrics_json = property(lambda self: self.root / "metrics.json")
    curves = property(lambda self: self.root / "curves.png")
    rejects = property(lambda self: self.root / "rejects.csv")
    test_metrics = property(lambda self: self.root / "test_metrics.json")
    checkpoints = property(lambda self: self.root / "checkpoints")
    best = property(lambda self: self.root / "checkpoints" / "best.pt")
    last = property(lambda self: self.root / "checkpoints" / "last.pt")
    index = property(lambda self: self.root / "index")
    reference = property(lambda self: self.root / "reference.json")
    export = property(lambda self: self.root / "model.onnx")
    features = property(lambda self: self.root / "features")

    # -- finding one -------------------------------------------------------------------------
    @classmethod
    def of(cls, source: str | Path) -> "RunFolder | None":
        """The run folder of ``source``: the folder itself, or the one a checkpoint sits in
        (``RUN/checkpoints/best.pt``) or beside (``RUN/model.onnx``); None when no ``run.json``
        is found there."""
        source = Path(source)
        folders = [source] if source.is_dir() else [source.parent.parent, source.parent]
        return next((cls(f) for f in folders if (f / "run.json").is_file()), None)

    @classmethod
    def of_checkpoint(cls, checkpoint: str | Path) -> "RunFolder":
        """The folder above a checkpoint's ``checkpoints/`` (resolved), a run folder or not."""
        return cls(Path(checkpoint).resolve().parent.parent)

    def is_run(self) -> bool:
        """``run.json`` is there."""
        return self.info_file.is_file()

    def require(self) -> "RunFolder":
        """This folder, when it holds ``config.yaml`` and ``run.json`` (what ``resume`` needs).

        Raises:
            FileNotFoundError: one of them is missing.
        """
        if not self.config_file.is_file() or not self.info_file.is_file():
            raise FileNotFoundError(f"{self.root} is not a run folder (no config.yaml/run.json); start it with --out")
        return self

    def taken(self) -> bool:
        """True when the folder is a file or holds anything but a lock file (a new run may not start)."""
        from .io import LOCK_FILE
        root = self.root
        return root.exists() and (not root.is_dir() or any(p.name != LOCK_FILE for p in root.iterdir()))

    def refuse_taken(self) -> None:
        """Raise when :meth:`taken` (the check ``landmark train --out`` makes before anything loads).

        Raises:
            RunExistsError: the folder holds a run (resume it) or other files.
        """
        if self.taken():
            hint = f"continue it with --resume {self.root}" if self.config_file.is_file() else \
                "it is not empty (or is a file)"
            raise RunExistsError(f"{self.root} cannot hold a new run: {hint}; or choose another --out folder "
                                  f"(nothing was changed)")

    @classmethod
    def export_of(cls, source: str | Path) -> Path:
        """Where ``landmark export`` writes the export of ``source`` when no ``--out`` is given:
        ``RUN/model.onnx`` for a run folder or its ``checkpoints/best.pt`` (where ``recognize
        --model RUN``, ``predict`` ... look for it first: :attr:`export`), else the checkpoint's
        name with ``.onnx`` beside it (``other.pt`` -> ``other.onnx``, also looked for).

        Raises:
            FileNotFoundError: ``source`` is neither a checkpoint file nor a folder with
                ``checkpoints/best.pt``.
        """
        source = Path(source)
        if source.is_dir():
            run = cls(source)
            run.best_checkpoint()
            return run.export
        if not source.is_file():
            raise FileNotFoundError(f"{source} does not exist (give a run folder or a .pt checkpoint)")
        run = cls.of_checkpoint(source)
        if run.is_run() and run.best.is_file() and run.best.resolve() == source.resolve():
            return run.export
        return source.with_suffix(".onnx")

    def best_checkpoint(self) -> Path:
        """``checkpoints/best.pt``.

        Raises:
            FileNotFoundError: it is missing.
        """
        if not self.best.is_file():
            raise FileNotFoundError(f"{self.root} is a folder without checkpoints/best.pt; give a run folder "
                                    "written by landmark train, or a .pt file")
        return self.best

    # -- reading -----------------------------------------------------------------------------
    def info(self) -> dict:
        """``run.json`` ({} when absent)."""
        return json.loads(self.info_file.read_text()) if self.info_file.is_file() else {}

    def data(self):
        """The data folder (a ``Path``) or folders (a list) that ``run.json`` names; None when absent."""
        from .data.gldv2 import data_source
        data = self.info().get("data")
        return data_source(data) if data else None

    def config(self):
        """The run's :class:`~landmark.config.TrainConfig` (``config.yaml``)."""
        from .config import load_config
        return load_config(self.config_file)

    def split(self):
        """``split.csv`` as a DataFrame of str (``id, landmark_id, split``); None when absent."""
        import pandas as pd
        return pd.read_csv(self.split_file, dtype=str, keep_default_na=False) if self.split_file.is_file() else None

    def metrics(self):
        """``metrics.csv`` as a DataFrame; None when absent."""
        import pandas as pd
        return pd.read_csv(self.metrics_file) if self.metrics_file.is_file() else None

    def reference_info(self) -> dict | None:
        """``reference.json`` (the reference index's summary and thresholds); None when absent."""
        return json.loads(self.reference.read_text()) if self.reference.is_file() else None

    def index_dir(self) -> Path | None:
        """``index/`` when there; None when the run was trained without one.

        Raises:
            FileNotFoundError: the run was trained with an index (``reference.json``) that is gone.
        """
        if self.index.is_dir():
            return self.index
        if self.reference.is_file():
            raise FileNotFoundError(f"{self.index} is missing (the run was trained with one); train again, "
                                    f"or answer with the classifier alone (--classifier-only, index=False)")
        return None

    # -- writing -----------------------------------------------------------------------------
    def write_info(self, data, **versions: str) -> None:
        """``run.json``: the data folder(s) (resolved) and ``versions`` (e.g. torch, python)."""
        from .io import write_text_atomic
        names = str(Path(data).resolve()) if isinstance(data, (str, Path)) else [str(Path(d).resolve()) for d in data]
        write_text_atomic(self.info_file, json.dumps({"data": names, **versions}))
