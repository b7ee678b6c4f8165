"""Retrieval metrics: GLDv2 mAP@100 and the Revisited Oxford/Paris protocol.

* :func:`mean_average_precision` is GLDv2's retrieval metric (Weyand et al., CVPR 2020;
  reference code ``tensorflow/models/research/delf/delf/python/google_landmarks_dataset/
  metrics.py``, ``MeanAveragePrecision``): for each query,
  ``AP@K = 1/min(n_relevant, K) * sum_{i<=K} P(i) rel(i)`` over its first ``K`` predictions
  (a repeated prediction keeps its position but scores nothing the second time); the mean
  runs over *every* query of the solution, so a query without predictions counts 0.
* :func:`revisited_map` is the Revisited Oxford 5k / Paris 6k protocol (Radenovic, Iscen,
  Tolias, Avrithis, Chum, "Revisiting Oxford and Paris", CVPR 2018; reference code
  ``cirtorch/utils/evaluate.py`` ``compute_map``): AP is the area under the
  precision-recall curve by trapezoids, junk images are removed from the ranking before
  positions are counted, and Easy / Medium / Hard differ in what is positive or junk:

  ======  ================  ====================
  setup   positives         junk (ignored)
  ======  ================  ====================
  easy    easy              junk + hard
  medium  easy + hard       junk
  hard    hard              junk + easy
  ======  ================  ====================
"""
from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

REVISITED_SETUPS = ("easy", "medium", "hard")


def _in_solution(predictions: Mapping[str, Sequence[str]], solution: Mapping[str, Sequence[str]]):
    """``predictions.items()``, refusing a query the solution does not have.

    Raises:
        ValueError: a predicted query is not in ``solution``.
    """
    for key, ranked in predictions.items():
        if key not in solution:
            raise ValueError(f"query {key} is not part of the retrieval solution")
        yield key, ranked


def mean_average_precision(predictions: Mapping[str, Sequence[str]], solution: Mapping[str, Sequence[str]],
                           max_predictions: int = 100) -> float:
    """GLDv2 retrieval mAP@``max_predictions`` (module docstring).

    Args:
        predictions: query id -> ranked index image ids (best first).
        solution: query id -> relevant index image ids; queries with no relevant image
            must not be listed (GLDv2 lists only such queries).
        max_predictions: K, 100 in the GLDv2 / Kaggle retrieval challenges.

    Returns:
        mAP in [0, 1] (0.0 for an empty solution).

    Raises:
        ValueError: a predicted query is not in ``solution``, or a solution query has no
            relevant image (its AP would divide by zero).
    """
    if not solution:
        return 0.0
    total = 0.0
    for key, ranked in _in_solution(predictions, solution):
        relevant = set(solution[key])
        if not relevant:
            raise ValueError(f"query {key} has no relevant image in the solution")
        seen: set[str] = set()
        correct, ap = 0, 0.0
        for i, image in enumerate(list(ranked)[:max_predictions]):
            if image in seen:
                continue
            seen.add(image)
            if image in relevant:
                correct += 1
                ap += correct / (i + 1)
        total += ap / min(len(relevant), max_predictions)
    return total / len(solution)


def precision_at_k(predictions: Mapping[str, Sequence[str]], solution: Mapping[str, Sequence[str]],
                   k: int = 10) -> float:
    """Mean precision@``k``: the share of relevant ids among each query's first ``k`` predictions
    (repeats count once), averaged over every solution query (no predictions = 0).

    Args, Raises: as :func:`mean_average_precision`.
    """
    if not solution:
        return 0.0
    total = 0.0
    for key, ranked in _in_solution(predictions, solution):
        total += len(set(list(ranked)[:k]) & set(solution[key])) / k
    return total / len(solution)


def revisited_map_ranked(predictions: Mapping[str, Sequence[str]], labels: Mapping[str, Mapping[str, Sequence[str]]],
                         kappas: Sequence[int] = (1, 5, 10)) -> dict:
    """:func:`revisited_map` on rankings of ids (a retrieval submission) instead of a full
    ``[n_db, n_queries]`` matrix: positives missing from a query's ranking count as not
    retrieved, as with a ranking cut at 100.

    Args:
        predictions: query id -> ranked index ids (queries of ``labels`` without one rank nothing).
        labels: query id -> ``{'easy', 'hard', 'junk'}`` index ids.

    Returns:
        as :func:`revisited_map`.
    """
    queries = list(labels)
    code: dict[str, int] = {}
    rankings = [[code.setdefault(i, len(code)) for i in dict.fromkeys(predictions.get(q, []))] for q in queries]
    width = max([len(r) for r in rankings] + [1])
    ranks = np.full((width, len(queries)), -1, dtype=np.int64)
    for q, ranking in enumerate(rankings):
        ranks[:len(ranking), q] = ranking
    gnd = [{name: [code.setdefault(i, len(code)) for i in labels[q].get(name, [])] for name in ("easy", "hard", "junk")}
           for q in queries]
    return revisited_map(ranks, gnd, kappas)


def average_precision_trapezoid(positions: np.ndarray, n_positives: int) -> float:
    """AP of one query from the 0-based ranks of its retrieved positives (cirtorch ``compute_ap``).

    Each positive adds the trapezoid between precision just before and at its rank:
    ``(j / r + (j + 1) / (r + 1)) / 2 * 1 / n_positives`` for the ``j``-th positive
    (0-based) at rank ``r``, with precision 1 before rank 0.

    Args:
        positions: int array ``[P]`` of increasing 0-based ranks (junk already removed).
        n_positives: all positives of the query (retrieved or not), > 0.
    """
    ap = 0.0
    for j, rank in enumerate(np.asarray(positions).tolist()):
        before = 1.0 if rank == 0 else j / rank
        at = (j + 1) / (rank + 1)
        ap += (before + at) / 2.0 / n_positives
    return ap


def compute_map(ranks: np.ndarray, gnd: Sequence[Mapping], kappas: Sequence[int] = (1, 5, 10)
                ) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """mAP and mean precision@kappa with junk images ignored (cirtorch ``compute_map``).

    Args:
        ranks: int array ``[n_db, n_queries]``; column ``q`` lists database indices for
            query ``q``, best first (cirtorch's layout, ``argsort(-scores, axis=0)``).
        gnd: per query, ``{'ok': indices, 'junk': indices}`` (``junk`` may be absent).
        kappas: cut-offs for mP@k.

    Returns:
        (mAP, APs float ``[n_queries]``, mP@kappas float ``[len(kappas)]``, P@kappas
        float ``[n_queries, len(kappas)]``).  Queries without positives get NaN AP and are
        left out of the means, as in cirtorch.

    Raises:
        ValueError: ``ranks`` has fewer columns than ``gnd`` has queries.
    """
    ranks = np.asarray(ranks)
    if ranks.ndim != 2 or ranks.shape[1] < len(gnd):
        raise ValueError(f"ranks must be [n_db, n_queries>={len(gnd)}], got shape {ranks.shape}")
    nq = len(gnd)
    aps = np.zeros(nq)
    prs = np.zeros((nq, len(kappas)))
    empty = 0
    for q in range(nq):
        ok = np.asarray(gnd[q]["ok"])
        if ok.size == 0:
            aps[q], prs[q] = np.nan, np.nan
            empty += 1
            continue
        junk = np.asarray(gnd[q].get("junk", []))
        column = ranks[:, q]
        pos = np.flatnonzero(np.isin(column, ok))
        junk_pos = np.flatnonzero(np.isin(column, junk)) if junk.size else np.zeros(0, dtype=int)
        # each positive moves up by the number of junk images ranked before it
        pos = pos - np.searchsorted(junk_pos, pos)
        aps[q] = average_precision_trapezoid(pos, ok.size)
        pos1 = pos + 1  # 1-based
        if pos1.size:
            for j, kappa in enumerate(kappas):
                cut = min(int(pos1.max()), kappa)
                prs[q, j] = (pos1 <= cut).sum() / cut
    valid = nq - empty
    mean_ap = float(np.nansum(aps) / valid) if valid else 0.0
    mean_pr = np.nansum(prs, axis=0) / valid if valid else np.zeros(len(kappas))
    return mean_ap, aps, mean_pr, prs


def revisited_map(ranks: np.ndarray, gnd: Sequence[Mapping], kappas: Sequence[int] = (1, 5, 10)) -> dict:
    """Revisited Oxford/Paris mAP and mP@kappa for the Easy, Medium and Hard setups.

    Args:
        ranks: int array ``[n_db, n_queries]`` (see :func:`compute_map`).
        gnd: per query ``{'easy': [...], 'hard': [...], 'junk': [...]}`` database indices
            (``gnd_roxford5k.pkl``'s ``gnd`` list; ``bbx`` is not used).

    Returns:
        ``{setup: {'map': float, 'mp@k': {k: float}}}`` for setup in easy, medium, hard;
        values are fractions in [0, 1] (papers print them x100).
    """
    out = {}
    for setup in REVISITED_SETUPS:
        gnd_t = []
        for g in gnd:
            easy, hard, junk = list(g["easy"]), list(g["hard"]), list(g["junk"])
            ok = {"easy": easy, "medium": easy + hard, "hard": hard}[setup]
            ignore = {"easy": junk + hard, "medium": junk, "hard": junk + easy}[setup]
            gnd_t.append({"ok": ok, "junk": ignore})
        mean_ap, _, mean_pr, _ = compute_map(ranks, gnd_t, kappas)
        out[setup] = {"map": mean_ap, "mp@k": {int(k): float(v) for k, v in zip(kappas, mean_pr)}}
    return out


def read_revisited_gnd(path: str | Path) -> dict:
    """Read a Revisited Oxford/Paris ground truth (``gnd_roxford5k.pkl``, ``gnd_rparis6k.pkl``).

    Returns:
        dict with ``imlist`` (database image names), ``qimlist`` (query names) and ``gnd``
        (per query ``easy``, ``hard``, ``junk`` index lists and ``bbx`` box in pixels).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file asks to build anything but plain containers, numbers, strings and
            numpy arrays (refused before it runs: see :class:`_GroundTruthUnpickler`); the pickle
            lacks one of these keys, or a ``gnd`` entry lacks
            ``easy``/``hard``/``junk``, or ``gnd`` and ``qimlist`` differ in length.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ground truth {path} does not exist")
    try:
        with open(path, "rb") as f:
            data = _GroundTruthUnpickler(f).load()
    except pickle.UnpicklingError as err:
        raise ValueError(f"{path}: {err}") from None
    except (EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError) as err:
        raise ValueError(f"{path} is not a readable pickle ({type(err).__name__}: {err}); expected the "
                         f"gnd_roxford5k.pkl format") from None
    missing = {"imlist", "qimlist", "gnd"} - set(data) if isinstance(data, dict) else {"imlist", "qimlist", "gnd"}
    if missing:
        raise ValueError(f"{path} lacks {sorted(missing)}; expected the gnd_roxford5k.pkl format")
    if len(data["gnd"]) != len(data["qimlist"]):
        raise ValueError(f"{path}: {len(data['gnd'])} gnd entries for {len(data['qimlist'])} queries")
    for q, g in enumerate(data["gnd"]):
        lacking = {"easy", "hard", "junk"} - set(g)
        if lacking:
            raise ValueError(f"{path}: gnd[{q}] lacks {sorted(lacking)}")
    return data


# What a ground-truth pickle may name: numpy's array and scalar rebuilders (both module names,
# numpy 1 and 2) and plain containers.  Lists, dicts, str and numbers need no global at all.
_GND_GLOBALS = frozenset({
    *(f"{m}.{n}" for m in ("numpy.core.multiarray", "numpy._core.multiarray") for n in ("_reconstruct", "scalar")),
    "numpy.ndarray", "numpy.dtype", "builtins.set", "builtins.frozenset", "builtins.bytearray",
    "collections.OrderedDict",
})


class _GroundTruthUnpickler(pickle.Unpickler):
    """An unpickler that builds only plain data: any other global (``os.system`` in a
    ``__reduce__`` payload, a class) is refused before it is imported, following "Restricting
    Globals" in the Python ``pickle`` documentation."""

    def find_class(self, module: str, name: str):
        if f"{module}.{name}" not in _GND_GLOBALS:
            raise pickle.UnpicklingError(f"refused: reading it would run {module}.{name} (a ground truth holds only "
                                         f"lists, numbers and arrays); nothing in it was run")
        return super().find_class(module, name)
