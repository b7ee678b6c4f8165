"""``landmark report``: everything about one training run on one HTML page, plus the PNGs.

Sections (as in the original work's notebook): training curves; class distribution;
accuracy, GAP and GAP over landmark queries with and without test-time voting;
per-class accuracy and its correlation with class size; example photos of the worst
classes and of classes near 50 %; the most confused pairs; the pretrained backbone's
ImageNet top-3 labels; plain-gradient and guided-backprop saliency maps.

The evaluation set is ``images`` (a folder or CSV, scored when a
``recognition_solution.csv`` is beside it or given) or, by default, the run's own
held-out split (``split.csv`` rows with ``split == test``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from ..data import ImageError, Reject, image_path, load_image, read_queries, read_train, with_paths, write_rejects
from ..data.gldv2 import natural_key
from ..data.kaggle import read_solution
from ..evaluation import per_class_accuracy, recognition_scores
from ..inference import predict_images
from ..models import WeightsError, load_model
from . import analysis, charts, imagenet, photo_grids, saliency
from .html import Page

SOLUTION_NAME = "recognition_solution.csv"


@dataclass
class EvalSet:
    """Queries (``id, path``), their truth (id -> set of landmark ids; empty set: no
    landmark; ``None`` when there is no ground truth) and where they came from."""

    queries: pd.DataFrame
    solution: dict[str, set[str]] | None
    source: str


def read_run(run_dir: Path) -> tuple[dict, pd.DataFrame | None, pd.DataFrame | None]:
    """``run.json`` (dict, empty if absent), ``split.csv`` and ``metrics.csv`` (None if absent).

    Raises:
        FileNotFoundError: ``run_dir`` is not a folder.
    """
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} does not exist")
    info = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").is_file() else {}
    split = pd.read_csv(run_dir / "split.csv", dtype=str, keep_default_na=False) \
        if (run_dir / "split.csv").is_file() else None
    metrics = pd.read_csv(run_dir / "metrics.csv") if (run_dir / "metrics.csv").is_file() else None
    return info, split, metrics


def data_paths(data: Path) -> dict[str, str]:
    """id -> file of every labelled image in the run's data folder (GLDv2 layout or folder tree)."""
    frame = with_paths(read_train(data), data)
    return dict(zip(frame["id"], frame["path"]))


def evaluation_set(split: pd.DataFrame | None, data: Path | None, images: Path | None = None,
                   solution: Path | None = None) -> EvalSet:
    """The queries to evaluate on (see the module docstring).

    Raises:
        FileNotFoundError: ``images``/``solution`` missing; or no ``images`` and the run has
            no ``split.csv`` or data folder.
        ValueError: the run's split has no test rows.
    """
    if images is not None:
        queries = read_queries(images)
        if solution is None:
            beside = (images if images.is_dir() else images.parent) / SOLUTION_NAME
            solution = beside if beside.is_file() else None
        truth = read_solution(solution) if solution is not None else None
        return EvalSet(queries, truth, str(images))
    if split is None or data is None:
        raise FileNotFoundError("the run has no split.csv or no data folder in run.json; pass --images")
    test = split[split["split"] == "test"]
    if test.empty:
        raise ValueError("the run's split.csv has no test rows; pass --images")
    paths = data_paths(data)
    queries = pd.DataFrame({"id": test["id"].to_numpy(),
                            "path": [paths[i] if i in paths else str(image_path(data, i)) for i in test["id"]]})
    return EvalSet(queries, {i: {lid} for i, lid in zip(test["id"], test["landmark_id"])},
                   f"held-out split of the run ({len(test)} images of {data})")


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


def build_report(run_dir: str | Path, out: str | Path, images: str | Path | None = None,
                 solution: str | Path | None = None, checkpoint: str | Path | None = None, samples: int = 6,
                 tta: int = 10, batch_size: int = 32, workers: int = 2, device: str | None = None,
                 overwrite: bool = False) -> dict:
    """Write ``out/report.html``, its PNGs, ``report.json`` and CSVs for one run.

    Args:
        run_dir: a folder written by ``landmark train`` (``run.json``, ``split.csv``,
            ``metrics.csv``, ``rejects.csv``, ``checkpoints/best.pt``).
        images: evaluation queries (folder or CSV); default the run's held-out split.
        solution: ``recognition_solution.csv``; default the one beside ``images``.
        checkpoint: default ``run_dir/checkpoints/best.pt``.
        samples: photos for the saliency and ImageNet sections.
        tta: crops of the voted prediction compared with the single view (2..10).

    Returns:
        the ``report.json`` dict (numbers and file names).

    Raises:
        FileExistsError: ``out`` exists and is not empty, without ``overwrite``.
        FileNotFoundError: run folder, checkpoint, images or solution missing.
        ValueError: ``tta`` outside 2..10; not a landmark checkpoint.
    """
    run_dir, out = Path(run_dir), Path(out)
    if not 2 <= tta <= 10:
        raise ValueError(f"tta={tta}: the report compares 1 crop with 2 to 10 crops")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty; pass --overwrite or choose another --out")
    info, split, metrics = read_run(run_dir)
    checkpoint = Path(checkpoint) if checkpoint else run_dir / "checkpoints" / "best.pt"
    data = Path(info["data"]) if info.get("data") else None
    evalset = evaluation_set(split, data, Path(images) if images else None, Path(solution) if solution else None)
    model, ckpt = load_model(checkpoint)
    out.mkdir(parents=True, exist_ok=True)
    names = analysis.class_names(data)
    page, result = Page(f"Landmark run report: {run_dir.name}"), {"run_dir": str(run_dir), "checkpoint": str(checkpoint),
                                                                  "evaluation_set": evalset.source}
    page.section("Run")
    page.text(f"Run folder {run_dir}, checkpoint {checkpoint} (backbone {ckpt['arch']['backbone']}, "
              f"head {ckpt['arch']['head']}, {len(ckpt['classes'])} classes); data {data}; "
              f"evaluation set: {evalset.source}.")

    page.section("Training curves")
    if metrics is not None and not metrics.empty:
        charts.plot_training_curves(metrics, out / "training_curves.png")
        page.image(out / "training_curves.png", "training curves")
        best = metrics.loc[metrics["val_gap"].idxmax()] if "val_gap" in metrics else metrics.iloc[-1]
        page.text(f"{len(metrics)} epochs; best validation GAP {best.get('val_gap', float('nan')):.3f} "
                  f"at epoch {int(best['epoch'])} (stage {best.get('stage', '?')}). Dashed lines: stage boundaries.")
    else:
        page.text("metrics.csv is missing or empty: no curves.", note=True)

    counts = analysis.train_counts(split) if split is not None else pd.Series(dtype=int)
    page.section("Class distribution (training split)")
    if len(counts):
        charts.plot_class_distribution(counts, names, out / "class_distribution.png")
        page.image(out / "class_distribution.png", "class distribution")
        result["train_images"] = {"classes": int(len(counts)), "images": int(counts.sum()),
                                  "min": int(counts.min()), "median": float(counts.median()), "max": int(counts.max())}
    else:
        page.text("split.csv is missing: no class distribution.", note=True)

    predictions, rejects = {}, {}
    for k in (1, tta):
        predictions[k], bad = predict_images(model, ckpt["classes"], ckpt["preprocess"], evalset.queries, k,
                                             batch_size, workers, device)
        rejects.update({r.id: r for r in bad})
        predictions[k].to_csv(out / f"predictions_tta{k}.csv", index=False)
    write_rejects(rejects, out / "rejects.csv")
    truth = evalset.solution or {}
    table = analysis.query_table(evalset.queries, predictions[1], truth)

    page.section("Numbers")
    train_rejects = len(pd.read_csv(run_dir / "rejects.csv")) if (run_dir / "rejects.csv").is_file() else None
    result["rejects"] = {"training": train_rejects, "evaluation": len(rejects)}
    if evalset.solution is not None and any(truth.values()):
        rows = {"single view (tta=1)": recognition_scores(predictions[1], truth),
                f"voting over {tta} crops (tta={tta})": recognition_scores(predictions[tta], truth)}
        result["metrics"] = {"tta1": rows["single view (tta=1)"], f"tta{tta}": rows[f"voting over {tta} crops (tta={tta})"]}
        result["queries"] = {"all": len(truth), "landmark": sum(1 for v in truth.values() if v)}
        page.table(pd.DataFrame([{"prediction": k, **v} for k, v in rows.items()]))
        page.text(f"{result['queries']['all']} queries, {result['queries']['landmark']} of them show a landmark. "
                  f"GAP ranks every prediction by confidence (Kaggle/GLDv2 micro-AP); "
                  f"gap_landmarks_only ignores the predictions for non-landmark queries.")
    else:
        page.text("No ground truth for these images (no recognition_solution.csv beside them; pass --solution): "
                  "predictions only.", note=True)
    page.text(f"Rejected images: {train_rejects if train_rejects is not None else 'unknown (no rejects.csv)'} "
              f"during training (RUN_DIR/rejects.csv), {len(rejects)} in this evaluation (rejects.csv here).")
    if rejects:
        page.table(pd.DataFrame([r.__dict__ for r in rejects.values()]).head(20))

    if any(truth.values()):
        _accuracy_sections(page, result, table, truth, predictions[1], counts, names, split, data, out)

    sample = pick_samples(table, samples)
    photos, titles, ids = [], [], []
    for r in sample.itertuples():
        try:
            photos.append(load_image(r.path))
        except ImageError as err:  # decoded fine during prediction; a file changed since
            rejects[r.id] = Reject(r.id, r.path, str(err))
            continue
        ids.append(r.id)
        titles.append(f"{'true ' + analysis.label(r.truth, names, 24) + chr(10) if r.truth else ''}"
                      f"pred {analysis.label(r.landmark_id, names, 24)} {r.score:.0%}")
    _imagenet_section(page, result, photos, titles, ids, ckpt["arch"]["backbone"], out)
    _saliency_section(page, result, model, ckpt, photos, titles, ids, out)

    (out / "report.json").write_text(json.dumps(result, indent=2, default=float))
    page.write(out / "report.html")
    result["html"] = str(out / "report.html")
    return result


def _accuracy_sections(page: Page, result: dict, table: pd.DataFrame, truth: dict, predictions: pd.DataFrame,
                       counts: pd.Series, names: dict, split: pd.DataFrame | None, data: Path | None, out: Path) -> None:
    per_class = per_class_accuracy(predictions, truth)
    page.section("Per-class accuracy")
    charts.plot_per_class_accuracy(per_class, out / "per_class_accuracy.png", names)
    page.image(out / "per_class_accuracy.png", "per-class accuracy")
    joined, corr = analysis.accuracy_vs_count(per_class, counts)
    joined.insert(1, "name", [names.get(k, "") for k in joined["landmark_id"]])
    joined.to_csv(out / "per_class_accuracy.csv", index=False)
    result["per_class"] = {"classes": int(len(per_class)), "mean_accuracy": float(per_class["accuracy"].mean()),
                           "classes_at_0": int((per_class["accuracy"] == 0).sum()), **corr}
    if charts.plot_accuracy_vs_count(joined, corr, names, out / "accuracy_vs_train_images.png") is not None:
        page.image(out / "accuracy_vs_train_images.png", "accuracy against training images")
    if corr["classes"] < charts.CORRELATION_MIN_CLASSES:
        page.text(f"Only {corr['classes']} classes: no correlation of accuracy with training images.", note=True)
    else:
        page.text(f"Correlation of per-class accuracy with training images per class over {corr['classes']} classes: "
                  f"Pearson r = {corr['pearson']:.3f} (p = {corr['pearson_p']:.3f}), Spearman ρ = "
                  f"{corr['spearman']:.3f} (p = {corr['spearman_p']:.3f}). The original work found no correlation.")
    page.table(joined.head(15))
    page.text("Lowest 15 classes shown; all in per_class_accuracy.csv.", note=True)

    worst, middle = analysis.pick_classes(per_class)
    page.section("Examples: worst classes and classes near 50 %")
    page.text("Green captions: correct, with confidence; red: misclassified, with the predicted landmark and "
              "its confidence (single view, the same view the saliency maps explain).", note=True)
    result["example_classes"] = {"worst": worst, "near_50": middle}
    for kind, ids in (("worst", worst), ("near50", middle)):
        for lid in ids:
            name = f"examples_{kind}_{lid}.png"
            photo_grids.plot_class_examples(table, lid, names, out / name)
            page.image(out / name, f"examples of class {lid}")

    pairs = analysis.confusion_pairs(predictions, truth)
    pairs.to_csv(out / "confused_pairs.csv", index=False)
    result["confused_pairs"] = pairs.to_dict("records")
    page.section("Most confused pairs")
    references = {}
    if split is not None and data is not None:
        firsts = split[split["split"] == "train"].sort_values("id").drop_duplicates("landmark_id")
        paths = data_paths(data)
        references = {lid: paths[i] for i, lid in zip(firsts["id"], firsts["landmark_id"]) if i in paths}
    if pairs.empty:
        page.text("No landmark query was mistaken for another landmark.")
    else:
        page.table(pairs.assign(name_a=[names.get(a, "") for a in pairs["class_a"]],
                                name_b=[names.get(b, "") for b in pairs["class_b"]]))
        photo_grids.plot_confusion_examples(pairs, table, references, names, out / "confused_pairs.png")
        page.image(out / "confused_pairs.png", "confused pairs")

    page.section("Confidence")
    charts.plot_confidence(table, out / "confidence.png")
    page.image(out / "confidence.png", "confidence histogram")
    page.text("GAP ranks all predictions by confidence: wrong and non-landmark predictions above correct ones "
              "cost the most.", note=True)


def _imagenet_section(page: Page, result: dict, photos: list, titles: list, ids: list, backbone: str,
                      out: Path) -> None:
    page.section("Pretrained backbone: ImageNet top-3")
    if not photos:
        page.text("No readable query with a prediction: nothing to show.", note=True)
        return
    try:
        top = imagenet.imagenet_topk(photos, 3, backbone)
    except WeightsError as err:
        page.text(f"Skipped: {err}", note=True)
        return
    frame = imagenet.topk_frame(ids, titles, top)
    frame.to_csv(out / "imagenet_top3.csv", index=False)
    result["imagenet_top3"] = {i: [[n, p] for n, p in t] for i, t in zip(ids, top)}
    imagenet.plot_topk(photos, titles, top, out / "imagenet_top3.png")
    page.image(out / "imagenet_top3.png", "ImageNet top-3")
    page.text(f"{backbone} with its original 1000-class ImageNet classifier, before fine-tuning: "
              "a sound backbone already calls landmark photos something architectural.", note=True)


def _saliency_section(page: Page, result: dict, model, ckpt: dict, photos: list, titles: list, ids: list,
                      out: Path) -> None:
    page.section("Saliency maps")
    model = model.cpu().eval()
    guided = saliency.guided_copy(model)
    rows, shares = [], {}
    for photo, title, i in tqdm(list(zip(photos, titles, ids)), desc="saliency", unit="image", dynamic_ncols=True):
        maps = saliency.saliency_maps(model, photo, ckpt["preprocess"], guided_model=guided)
        rows.append((photo, maps, title))
        shares[i] = {"gradient": saliency.centre_share(maps.gradient), "guided": saliency.centre_share(maps.guided)}
    if rows:
        saliency.plot_saliency(rows, out / "saliency.png")
        page.image(out / "saliency.png", "saliency maps")
    result["saliency_centre_share"] = shares
    page.text("For the predicted class: plain gradient |∂logit/∂pixel| (Simonyan et al. 2014) and guided "
              "backpropagation (Springenberg et al. 2015), max over colour channels, overlaid on the photo; bright = "
              "pixels that change the score most. Share of the map in the central quarter of the photo "
              "(0.25 = uniform): " + ", ".join(f"{i}: {s['gradient']:.2f}/{s['guided']:.2f}" for i, s in shares.items())
              + " (gradient/guided).", note=True)
