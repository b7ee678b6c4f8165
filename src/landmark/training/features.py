"""Frozen-backbone features computed once per run: pooled descriptors kept per photo and view.

While the backbone is frozen, a run would otherwise pass the same photos through it several
times with the same preprocessing: the probe fit (every training photo and its mirror), the
validation pass after it, and the final fit on training + validation photos (data.final_fit).
:class:`FeatureStore` keeps the pooled descriptor ``[C]`` float32 of each (photo id, view)
and hands it back instead of running the backbone again.  A stored descriptor is reused only
for the same backbone and pooling (a fingerprint of their weights and buffers), the same
deterministic transform (its ``repr``: sizes, mean, std) and the same device; anything else
empties the store first, so a result never depends on whether it was reused.

Memory: ``4 * C`` bytes per photo and view (5 KB for EfficientNet-Lite0, C = 1280): 7.4 MB for
the 720 photos of landmarks13 with their mirrors, 16 GB for the 1.6M photos of GLDv2's clean
train set.  The store is bounded by ``max_bytes`` (default 2 GiB, about 400k photo views
of C = 1280): past it, descriptors are computed as without a store and not kept.  It lives in
memory for one process and one run; a resumed run computes afresh.
"""
from __future__ import annotations

import hashlib

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from ..data.dataset import good_batches
from ..models import LandmarkNet
from . import distributed as dist

#: default bound of a :class:`FeatureStore`, bytes
MAX_BYTES = 2 << 30


def fingerprint(model: LandmarkNet) -> str:
    """SHA-1 of the backbone's and the head pooling's weights and buffers (what a pooled descriptor depends on)."""
    digest = hashlib.sha1()
    pool = model.head.pool.state_dict() if isinstance(model.head.pool, nn.Module) else {}
    for name, t in [*model.backbone.state_dict().items(), *pool.items()]:
        digest.update(name.encode())
        digest.update(str(t.dtype).encode())
        digest.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class FeatureStore:
    """Pooled frozen-backbone descriptors ``[C]`` float32 by (photo id, view); module docstring.

    View 0 is the photo as the loader's transform gives it, view 1 its horizontal mirror.
    """

    def __init__(self, max_bytes: int = MAX_BYTES):
        self.max_bytes = max_bytes
        self.key: tuple | None = None
        self.rows: dict[tuple[str, int], torch.Tensor] = {}
        self.nbytes = 0
        self.computed = self.reused = 0   # photo views passed through the backbone / taken from the store

    def clear(self) -> None:
        self.key, self.rows, self.nbytes = None, {}, 0

    @torch.no_grad()
    def pooled(self, model: LandmarkNet, loader: DataLoader, device, rejects: dict, views: int = 2,
               desc: str = "features") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Pooled descriptors of the images of ``loader`` (deterministic transform, no shuffling),
        in the loader's order, computing only the (photo, view) pairs not stored yet.

        Args:
            loader: a DataLoader over an :class:`~landmark.data.ImageDataset` with :func:`~landmark.data.collate`.
            views: 1 (the images) or 2 (the images, then their mirrors).

        Returns:
            (features float32 ``[views * N, C]`` on the CPU: the N readable images, then (views=2)
            their mirrors; targets int64 ``[views * N]``; dataset row indices int64 ``[N]``).
            Unreadable images are added to ``rejects`` and left out.
        """
        model.eval()
        dataset = loader.dataset
        key = (fingerprint(model), repr(dataset.transform), str(device))
        if key != self.key:
            self.clear()
            self.key = key
        order = list(iter(loader.sampler))   # DistributedSampler: this rank's shard, padding included
        missing = list(dict.fromkeys(i for i in order if any((dataset.ids[i], v) not in self.rows
                                                             for v in range(views))))
        fresh = DataLoader(Subset(dataset, missing), batch_size=loader.batch_size, num_workers=loader.num_workers,
                           collate_fn=loader.collate_fn) if missing else []
        computed: dict[tuple[str, int], torch.Tensor] = {}
        for batch in good_batches(fresh, rejects, desc, leave=False, disable=not dist.is_main() or not missing):
            ids = dataset.ids[batch["index"].numpy()]
            for v in range(views):
                need = [k for k, i in enumerate(ids) if (i, v) not in self.rows]
                if need:
                    x = batch["image"][need].to(device)
                    out = model.head.pool(model.forward_features(x.flip(3) if v else x)).float().cpu()
                    computed.update({(ids[k], v): row for k, row in zip(need, out)})
        self.computed += len(computed)
        known = {**self.rows, **computed}
        found = [i for i in order if (dataset.ids[i], 0) in known]   # the readable images
        self.reused += views * len(found) - len(computed)
        rows = [known[dataset.ids[i], v] for v in range(views) for i in found]
        self._keep(computed)
        index = torch.tensor(found, dtype=torch.int64)
        targets = dataset.targets[index] if dataset.targets is not None else torch.full((len(found),), -1)
        features = torch.stack(rows) if rows else torch.empty(0, model.backbone.num_features)
        return features, targets.repeat(views), index

    def _keep(self, computed: dict[tuple[str, int], torch.Tensor]) -> None:
        for k, row in computed.items():
            if self.nbytes + row.nbytes > self.max_bytes:
                return
            self.rows[k] = row.clone()   # a row of the batch's tensor would keep the whole batch alive
            self.nbytes += row.nbytes
