"""Voting over test-time crops and the answers table: the torch-light helpers that
:mod:`~landmark.inference.predict`, :mod:`~landmark.inference.ray_predict` and
:class:`~landmark.inference.recognizer.Recognizer` share (one module below all three, so none
of them imports another at import time or inside a function in a circle).

Voting rule (``tta=K`` crops per image): each crop votes for its arg-max landmark;
the landmark with most votes wins (a tie goes to the larger summed probability);
its confidence is the sum of its probability over the crops that voted for it,
divided by K.  So ten unanimous crops at 0.9 give 0.9, while six crops at 0.9 with
four dissenting give 0.54: disagreement between crops lowers the confidence, which
is what GAP's ranking rewards.
"""
from __future__ import annotations

import pandas as pd
import torch

from ..retrieval.scoring import verdict
from .answers import DRAFT_FACTOR  # noqa: F401 (re-exported)

# Crop order taken by tta=K (first K): centre, corners, then the mirrors of these.
# Indices into torchvision TenCrop's output (tl, tr, bl, br, centre, mirrored ...).
TTA_ORDER = [4, 0, 1, 2, 3, 9, 5, 6, 7, 8]


def vote_scores(probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every landmark's rank key and score under the voting rule (module docstring).

    Landmarks that got votes rank by votes, ties by summed probability, and score the
    module's confidence; the others rank after them by mean probability and score it
    (with one crop, every score is the plain softmax probability).

    Args:
        probs: float tensor ``[N, K, C]`` of softmax probabilities (K crops per image).
    Returns:
        (rank keys float ``[N, C]``, higher first; scores float ``[N, C]`` in [0, 1]).
    """
    n, k, c = probs.shape
    votes = torch.nn.functional.one_hot(probs.argmax(2), c).to(probs.dtype)  # [N, K, C]
    count, support, mean = votes.sum(1), (probs * votes).sum(1), probs.mean(1)  # [N, C]
    voted = count > 0
    key = count + torch.where(voted, support, mean) / (k + 1)
    return key, torch.where(voted, support / k, mean)


def tta_vote(probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Test-time majority vote over the crops of each image.

    Args:
        probs: float tensor ``[N, K, C]`` of softmax probabilities (K crops per image).
    Returns:
        (labels int64 ``[N]``, confidences float ``[N]`` in [0, 1]) by the module's rule.
    """
    key, score = vote_scores(probs)
    labels = key.argmax(1)
    return labels, score.gather(1, labels[:, None]).squeeze(1)


def check_tta(tta: int) -> None:
    """Raise ``ValueError`` unless ``tta`` is 1 (no voting) to 10 crops (before any work)."""
    if isinstance(tta, bool) or not isinstance(tta, int) or not 1 <= tta <= 10:
        raise ValueError(f"tta={tta!r}: choose 1 (no voting) to 10 crops")


def answers_frame(rec, queries: pd.DataFrame, best: dict[int, tuple[str, float]]) -> pd.DataFrame:
    """The frame :func:`~landmark.inference.predict.predict_images` returns, from the best ``(landmark_id, score)`` of each
    decoded query row (``best``: row number -> answer; rows missing from it were unreadable)."""
    labels = [best[i][0] if i in best else "" for i in range(len(queries))]
    scores = [best[i][1] if i in best else float("nan") for i in range(len(queries))]
    verdicts = [("unreadable" if i not in best else verdict(rec.name(best[i][0]), rec.decide(*best[i])[0]))
                for i in range(len(queries))]
    out = pd.DataFrame({"id": queries["id"].astype(str).to_numpy(), "landmark_id": labels, "score": scores,
                        "name": [rec.name(lid) if lid else "" for lid in labels], "verdict": verdicts,
                        "path": queries["path"].astype(str).to_numpy()})
    return out


def best_answers(rec, x, tta: int, paths) -> list[tuple]:
    """The best answer of each photo of a batch, scored as :meth:`Recognizer.recognize` scores it:
    ``(landmark_id, score)``, or ``(landmark_id, score, inliers)`` when the recogniser confirms
    enrolled landmarks by local features (``inliers`` None where no confirmation was needed).

    Args:
        rec: a loaded :class:`~landmark.inference.recognizer.Recognizer`.
        x: float ``[N, 3, S, S]`` or ``[N, 10, 3, S, S]`` (:meth:`Preprocess.finish_batch`).
        paths: the ``N`` photos' files, decoded again (as the Recognizer decodes them) only for
            the photos whose answer needs local features.
    """
    if getattr(rec, "confirmer", None) is None:
        return [c[0] for c in rec.rank(x, tta, top_k=1)]
    probs, vectors = rec.forward(x, tta)
    ranked, inliers = rec.confirm_enrolled(rec._score(probs, vectors, 1), _Decoded(paths, rec.draft(tta)), vectors)
    return [(*(cands[0] if cands else ("", 0.0)), n) for cands, n in zip(ranked, inliers)]


class _Decoded:
    """Photos decoded on access (``photos[i]``: the path's RGB image at JPEG draft ``draft``)."""

    def __init__(self, paths, draft: int):
        self.paths, self.draft = list(paths), draft

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        from .answers import decode
        return decode(self.paths[i], draft=self.draft)
