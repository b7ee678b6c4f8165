"""A retrieval index with the model(s) that embed its queries, for photos held in memory.

The recogniser answers from one forward pass of a square photo, so its own index must hold vectors of
that pass.  The descriptor that finds landmarks the model never learned best is another: photos at a 448 px
longer side, aspect kept, and several models' descriptors concatenated (docs/retrieval.md, ``ens448``).
:class:`Searcher` keeps such an index beside the recogniser: ``Searcher.load(DIR)`` loads the index and
every model its record names (:func:`~landmark.retrieval.provenance.checkpoints_of`), and embeds photos
exactly as ``landmark embed`` / ``index build`` embedded the index's (the same record, checked), so
``Recognizer.retrieve`` and the service's ``POST /v1/retrieve`` rank as ``landmark retrieve`` does.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..data.preprocess import Preprocess
from ..models.runtime import Runtime
from ..models.runtime_info import DEFAULT_RUNTIME
from .config import RetrieveConfig
from .index import LandmarkIndex
from .provenance import checkpoints_of


@dataclass
class Searcher:
    """``index`` searched with vectors of ``engine`` (one model or an ensemble) at ``size`` px squares
    or, with ``max_side``, photos whose longer side is ``max_side`` px, aspect kept."""

    index: LandmarkIndex
    engine: Runtime
    size: int
    max_side: int | None = None

    @classmethod
    def load(cls, index_dir: str | Path, *, runtime: str = DEFAULT_RUNTIME, device: str | None = None,
             threads: int | None = None) -> "Searcher":
        """Load an index folder and the model(s) its ``meta.json`` records.

        Raises:
            FileNotFoundError: no index, or a checkpoint the record names is missing.
            ValueError: the index records no model (it cannot say how to embed its queries).
            landmark.retrieval.provenance.ModelMismatch: a checkpoint on disk is no longer the one recorded.
        """
        from .pipeline import index_embedder
        index = LandmarkIndex.load(index_dir)
        paths = checkpoints_of(index.meta.get("model"))
        if not paths:
            raise ValueError(f"{index_dir} records no model, so its queries cannot be embedded alike; build it "
                             "again with landmark index build --checkpoint")
        for k, path in enumerate(paths, 1):
            if not path.is_file():
                raise FileNotFoundError(f"{index_dir} was built with {path} (model {k} of {len(paths)}), which is "
                                        "gone: put it back, or build the retrieval index again")
        engine, size, max_side = index_embedder(index, paths, runtime=runtime, device=device, threads=threads,
                                                fix="put back the checkpoints it was built with, or build the "
                                                    "retrieval index again")
        return cls(index, engine, size, max_side)

    def embed(self, photos: list[Image.Image]) -> np.ndarray:
        """L2-normalised float32 ``[N, D]`` vectors of RGB photos, made as the index's were: one photo per
        pass at ``max_side`` (aspect kept), else ``size`` px squares; rounded through float16 as stored."""
        from torchvision.transforms.v2 import functional as TF

        from ..data.transforms import resize_longer_uint8
        contract = Preprocess(size=self.size, mean=self.engine.preprocess["mean"], std=self.engine.preprocess["std"])
        out = []
        with torch.no_grad():
            if self.max_side:
                resize = resize_longer_uint8(self.max_side)
                for photo in photos:
                    x = contract.finish_batch(resize(TF.pil_to_tensor(photo.convert("RGB")))[None])
                    out.append(F.normalize(self.engine(x)[1].float(), dim=1).cpu())
            else:
                square = contract.decode_transform()
                x = contract.finish_batch(torch.stack([square(photo.convert("RGB")) for photo in photos]))
                out.append(F.normalize(self.engine(x)[1].float(), dim=1).cpu())
        return torch.cat(out).numpy().astype(np.float16).astype(np.float32)

    def search(self, photos: list[Image.Image], config: RetrieveConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ranking scores ``[Q, k]``, index rows ``[Q, k]`` (-1: none), the photos' vectors ``[Q, D]``) of
        :func:`~landmark.retrieval.pipeline.rank_index` for ``photos``."""
        from .pipeline import rank_index
        vectors = self.embed(photos)
        sims, rows = rank_index(self.index, vectors, config)
        return sims, rows, vectors
