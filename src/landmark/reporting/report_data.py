"""What ``landmark report`` shows about one run, computed without writing anything.

:func:`compute_report` loads the run and its checkpoint, predicts the evaluation set with
one view and with test-time voting, scores it, and picks the photos to show; the result is
a :class:`ReportData` that :mod:`landmark.reporting.report` renders (HTML, PNGs, CSVs).

The evaluation set is ``images`` (a folder or CSV, scored when a
``recognition_solution.csv`` is beside it or given, or when it is a labelled folder tree as
``landmark evaluate`` reads it) or, by default, the run's own
held-out split (``split.csv`` rows with ``split == test``); a run that kept no test photos
(the ``fast`` and ``finetune`` presets) is reported on its validation photos, and the page says
so: they chose the checkpoint and the threshold, so their numbers are optimistic.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from PIL import Image
from tqdm import tqdm

from ..data import ImageError, Reject, image_path, load_image, read_queries, read_train, with_paths
from ..data.gldv2 import natural_key
from ..data.kaggle import read_solution
from ..defaults import BATCH_SIZE, REPORT_SAMPLES, REPORT_TTA, WORKERS
from ..runs import RunFolder
from ..evaluation import per_class_accuracy, recognition_scores
from ..inference import predict_images
from ..models import WeightsError, load_model
from . import analysis, imagenet, saliency

SOLUTION_NAME = "recognition_solution.csv"


@dataclass
class EvalSet:
    """Queries (``id, path``), their truth (id -> set of landmark ids; empty set: no
    landmark; ``None`` when there is no ground truth) and where they came from."""

    queries: pd.DataFrame
    solution: dict[str, set[str]] | None
    source: str


@dataclass
class RunInfo:
    """A run folder as ``landmark train`` left it: ``run.json`` (empty dict if absent), the
    data folder it names, ``split.csv`` and ``metrics.csv`` (None if absent) and the number
    of images rejected during training (None without ``rejects.csv``)."""

    run_dir: Path
    info: dict
    data: Path | list[Path] | None
    split: pd.DataFrame | None
    history: pd.DataFrame | None
    train_rejects: int | None


@dataclass
class AccuracyData:
    """Per-class figures of an evaluation set with ground truth.

    ``per_class``: :func:`landmark.evaluation.per_class_accuracy`; ``joined``: the same with
    ``name`` and ``train_images`` (:func:`landmark.reporting.analysis.accuracy_vs_count`) and
    ``correlation`` its coefficients; ``worst``/``near_50``: classes to show examples of;
    ``pairs``: the most confused pairs; ``references``: landmark_id -> one training photo.
    """

    per_class: pd.DataFrame
    joined: pd.DataFrame
    correlation: dict
    worst: list[str]
    near_50: list[str]
    pairs: pd.DataFrame
    references: dict[str, str]


@dataclass
class Samples:
    """The photos of the ImageNet and saliency sections: ``photos`` (RGB), their captions
    (``titles``) and ids; ImageNet top-3 ``(name, probability)`` per photo, or the reason it
    was skipped; one :class:`landmark.reporting.saliency.SaliencyResult` per photo."""

    photos: list[Image.Image] = field(default_factory=list)
    titles: list[str] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    imagenet_top3: list[list[tuple[str, float]]] | None = None
    imagenet_skipped: str | None = None
    saliency: list[saliency.SaliencyResult] = field(default_factory=list)

    def centre_shares(self) -> dict[str, dict[str, float]]:
        """id -> share of the ``gradient`` and ``guided`` maps in the central quarter of the
        photo (:func:`landmark.reporting.saliency.centre_share`; 0.25 = uniform)."""
        return {i: {"gradient": saliency.centre_share(m.gradient), "guided": saliency.centre_share(m.guided)}
                for i, m in zip(self.ids, self.saliency)}


@dataclass
class ReportData:
    """Everything ``landmark report`` shows about one run (see :func:`compute_report`).

    ``predictions``: crop count (1 and ``tta``) -> frame ``id, landmark_id, score``;
    ``queries``: :func:`landmark.reporting.analysis.query_table` of the single view;
    ``scores``: crop count -> :func:`landmark.evaluation.recognition_scores` (None without
    ground truth); ``accuracy``: None without a landmark query in the ground truth.
    """

    run: RunInfo
    checkpoint: Path
    arch: dict
    classes: list[str]
    names: dict[str, str]
    evalset: EvalSet
    train_counts: pd.Series
    tta: int
    predictions: dict[int, pd.DataFrame]
    rejects: dict[str, Reject]
    queries: pd.DataFrame
    scores: dict[int, dict] | None
    accuracy: AccuracyData | None
    samples: Samples


def read_run(run_dir: str | Path) -> RunInfo:
    """Read the files of a run folder (see :class:`RunInfo`).

    Raises:
        FileNotFoundError: ``run_dir`` is not a folder.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} does not exist")
    run = RunFolder(run_dir)
    rejects = len(pd.read_csv(run.rejects)) if run.rejects.is_file() else None
    return RunInfo(run_dir, run.info(), run.data(), run.split(), history=run.metrics(), train_rejects=rejects)


def data_paths(data: Path | list[Path]) -> dict[str, str]:
    """id -> file of every labelled image in the run's data folder(s) (GLDv2 layout or folder tree)."""
    frame = with_paths(read_train(data), data)
    return dict(zip(frame["id"], frame["path"]))


def evaluation_set(split: pd.DataFrame | None, data: Path | list[Path] | None, images: Path | None = None,
                   solution: Path | None = None, final_fit: bool = False,
                   names: dict[str, str] | None = None) -> EvalSet:
    """The queries to evaluate on (see the module docstring); ``final_fit``: the run's last fit
    also trained on its validation photos (said when they are the evaluation set).

    A labelled folder tree (one folder per landmark, ``no_landmark/``) is read as ``landmark
    evaluate`` reads it (:func:`landmark.evaluation.evaluate.folder_solution`, its folders
    matched to the run's landmarks ``names``): given as ``solution`` (a folder), or as
    ``images`` without a ``recognition_solution.csv`` beside it when
    :func:`~landmark.evaluation.evaluate.is_labelled_tree`.

    Raises:
        FileNotFoundError: ``images``/``solution`` missing; or no ``images`` and the run has
            no ``split.csv`` or data folder.
        ValueError: the run's split has neither test nor validation rows; a folder ``solution``
            that is not the ``images`` folder; a tree without photos in a landmark folder.
    """
    from ..evaluation.evaluate import folder_solution, is_labelled_tree
    if solution is not None and solution.is_dir():
        if images is not None and images.resolve() != solution.resolve():
            raise ValueError(f"--solution {solution} is a folder tree, which labels its own photos: give it "
                             f"alone (or as --images), not with --images {images}")
        images = solution
    if images is not None:
        if solution is None:
            beside = (images if images.is_dir() else images.parent) / SOLUTION_NAME
            solution = beside if beside.is_file() else None
            if solution is None and is_labelled_tree(images, names or {}):
                solution = images
        if solution is not None and solution.is_dir():
            queries, found = folder_solution(solution, names=names or None)
            landmarks = sorted({lid for lid in found["folders"].values() if lid})
            empty = sum(1 for lid in found["folders"].values() if not lid)
            return EvalSet(queries[["id", "path"]], found["truth"],
                           f"{images} (labelled folder tree: {len(landmarks)} landmark folders"
                           f"{f', {empty} of photos without a landmark' if empty else ''}; "
                           f"{len(queries)} photos)")
        queries = read_queries(images)
        truth = read_solution(solution) if solution is not None else None
        return EvalSet(queries, truth, str(images))
    if split is None or data is None:
        raise FileNotFoundError("the run has no split.csv or no data folder in run.json; pass --images")
    test = split[split["split"] == "test"]
    source = f"held-out split of the run ({len(test)} images of {data})"
    if test.empty:
        test = split[split["split"] == "val"]
        used = "chose its checkpoint and threshold" + (" and its final fit trained on them" if final_fit else "")
        source = (f"validation photos of the run ({len(test)} images of {data}; the run kept no test split, and "
                  f"these {used}, so the numbers are optimistic: pass --images for photos it never saw)")
    if test.empty:
        raise ValueError("the run's split.csv has neither test nor validation rows; pass --images")
    paths = data_paths(data)
    queries = pd.DataFrame({"id": test["id"].to_numpy(),
                            "path": [paths[i] if i in paths else str(image_path(data, i)) for i in test["id"]]})
    return EvalSet(queries, {i: {lid} for i, lid in zip(test["id"], test["landmark_id"])}, source)


def pick_samples(table: pd.DataFrame, count: int) -> pd.DataFrame:
    """``count`` readable queries for the saliency and ImageNet sections: one landmark query
    per class (classes in id order, lowest id query first), then non-landmark ones -- never two
    of one class, so with few classes there may be fewer than ``count``; without ground truth,
    the first query of each predicted class."""
    readable = table[table["landmark_id"] != ""]
    landmark = readable[readable["truth"] != ""]
    if landmark.empty:  # no ground truth: one query per predicted class
        return readable.drop_duplicates("landmark_id").head(count)
    firsts = landmark.sort_values("id").groupby("truth", sort=False).head(1)
    firsts = firsts.iloc[sorted(range(len(firsts)), key=lambda k: natural_key(firsts["truth"].iloc[k]))]
    others = readable[readable["truth"] == ""].sort_values("id")
    return pd.concat([firsts, others]).head(count)


def compute_report(run_dir: str | Path, images: str | Path | None = None, solution: str | Path | None = None,
                   checkpoint: str | Path | None = None, samples: int = REPORT_SAMPLES, tta: int = REPORT_TTA, batch_size: int = BATCH_SIZE,
                   workers: int = WORKERS, device: str | None = None) -> ReportData:
    """Load, predict, score and pick photos for the report of one run; writes nothing.

    Args: as :func:`landmark.reporting.report.build_report`.

    Raises:
        FileNotFoundError: run folder, checkpoint, images or solution missing.
        ValueError: ``tta`` outside 2..10; not a landmark checkpoint.
    """
    if not 2 <= tta <= 10:
        raise ValueError(f"tta={tta}: the report compares 1 crop with 2 to 10 crops")
    run = read_run(run_dir)
    checkpoint = Path(checkpoint) if checkpoint else RunFolder(run.run_dir).best
    try:
        final_fit = bool((RunFolder(run.run_dir).reference_info() or {}).get("final_fit"))
    except (ValueError, AttributeError, OSError):   # an unreadable record only costs the remark
        final_fit = False
    names = analysis.class_names(run.data)
    trained = run.split["landmark_id"].astype(str).unique() if run.split is not None else []
    evalset = evaluation_set(run.split, run.data, Path(images) if images else None,
                             Path(solution) if solution else None, final_fit=final_fit,
                             names={**{lid: None for lid in trained}, **names})   # a tree's folders: by id or name
    model, ckpt = load_model(checkpoint)
    predictions, rejects = {}, {}
    for k in (1, tta):
        predictions[k], bad = predict_images(model, ckpt["classes"], ckpt["preprocess"], evalset.queries, tta=k,
                                             batch_size=batch_size, workers=workers, device=device)
        rejects.update({r.id: r for r in bad})
    truth = evalset.solution or {}
    queries = analysis.query_table(evalset.queries, predictions[1], truth)
    counts = analysis.train_counts(run.split) if run.split is not None else pd.Series(dtype=int)
    scored = any(truth.values())
    scores = {k: recognition_scores(p, truth) for k, p in predictions.items()} if scored else None
    accuracy = accuracy_data(queries, truth, predictions[1], counts, names=names, run=run) if scored else None
    picked = sample_photos(queries, samples, names, rejects)
    picked.imagenet_top3, picked.imagenet_skipped = imagenet_top3(picked.photos, ckpt["arch"]["backbone"])
    picked.saliency = saliency_of(model, ckpt["preprocess"], picked.photos)
    return ReportData(run, checkpoint, ckpt["arch"], list(ckpt["classes"]), names=names, evalset=evalset,
                      train_counts=counts, tta=tta,
                      predictions=predictions, rejects=rejects, queries=queries, scores=scores, accuracy=accuracy,
                      samples=picked)


def accuracy_data(queries: pd.DataFrame, truth: dict[str, set[str]], predictions: pd.DataFrame,
                  counts: pd.Series, names: dict[str, str], run: RunInfo) -> AccuracyData:
    """Per-class accuracy, its correlation with class size, the classes and pairs to show."""
    per_class = per_class_accuracy(predictions, truth)
    joined, correlation = analysis.accuracy_vs_count(per_class, counts)
    joined.insert(1, "name", [names.get(k, "") for k in joined["landmark_id"]])
    worst, middle = analysis.pick_classes(per_class)
    return AccuracyData(per_class, joined, correlation, worst, near_50=middle,
                        pairs=analysis.confusion_pairs(predictions, truth),
                        references=training_examples(run))


def training_examples(run: RunInfo) -> dict[str, str]:
    """landmark_id -> the training photo with the lowest id of that landmark (empty without
    ``split.csv`` or data folder)."""
    if run.split is None or run.data is None:
        return {}
    firsts = run.split[run.split["split"] == "train"].sort_values("id").drop_duplicates("landmark_id")
    paths = data_paths(run.data)
    return {lid: paths[i] for i, lid in zip(firsts["id"], firsts["landmark_id"]) if i in paths}


def sample_photos(queries: pd.DataFrame, count: int, names: dict[str, str], rejects: dict[str, Reject]) -> Samples:
    """Decode the :func:`pick_samples` photos with their captions (true and predicted landmark).

    A photo that no longer decodes (it changed since prediction) is left out and added to
    ``rejects``.
    """
    picked = Samples()
    for r in pick_samples(queries, count).itertuples():
        try:
            picked.photos.append(load_image(r.path))
        except ImageError as err:
            rejects[r.id] = Reject(r.id, r.path, str(err))
            continue
        picked.ids.append(r.id)
        picked.titles.append(f"{'true ' + analysis.label(r.truth, names, 24) + chr(10) if r.truth else ''}"
                             f"pred {analysis.label(r.landmark_id, names, 24)} {r.score:.0%}")
    return picked


def imagenet_top3(photos: list[Image.Image], backbone: str) -> tuple[list | None, str | None]:
    """ImageNet top-3 of each photo by the pretrained ``backbone`` (its original classifier),
    or ``(None, reason)`` when there is no photo or its ImageNet weights are unavailable."""
    if not photos:
        return None, "No readable query with a prediction: nothing to show."
    try:
        return imagenet.imagenet_topk(photos, 3, backbone), None
    except WeightsError as err:
        return None, f"Skipped: {err}"


def saliency_of(model, preprocess: dict, photos: list[Image.Image]) -> list[saliency.SaliencyResult]:
    """Plain-gradient and guided-backprop maps of each photo's predicted class (on the CPU)."""
    model = model.cpu().eval()
    guided = saliency.guided_copy(model)
    return [saliency.saliency_maps(model, photo, preprocess, guided_model=guided)
            for photo in tqdm(photos, desc="saliency", unit="image", dynamic_ncols=True)]
