"""``landmark report``: everything about one training run on one HTML page, plus the PNGs.

Sections (as in the original work's notebook): training curves; class distribution;
accuracy, GAP and GAP over landmark queries with and without test-time voting;
per-class accuracy and its correlation with class size; example photos of the worst
classes and of classes near 50 %; the most confused pairs; the pretrained backbone's
ImageNet top-3 labels; plain-gradient and guided-backprop saliency maps.

:func:`build_report` is :func:`landmark.reporting.report_data.compute_report` (loading,
prediction, scoring; nothing written) followed by :func:`render_report` (pictures, CSVs,
``report.json`` and the page; one short function per section).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..data import write_rejects
from . import charts, imagenet, photo_grids, saliency
from .html import Page
from .report_data import ReportData, compute_report
from ..defaults import BATCH_SIZE, REPORT_SAMPLES, REPORT_TTA, WORKERS
from ..io import json_text


def build_report(run_dir: str | Path, out: str | Path, images: str | Path | None = None,
                 solution: str | Path | None = None, checkpoint: str | Path | None = None, samples: int = REPORT_SAMPLES,
                 tta: int = REPORT_TTA, batch_size: int = BATCH_SIZE, workers: int = WORKERS, device: str | None = None,
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
        the ``report.json`` dict (numbers), with ``html``: the page's path.

    Raises:
        FileExistsError: ``out`` exists and is not empty, without ``overwrite``.
        FileNotFoundError: run folder, checkpoint, images or solution missing.
        ValueError: ``tta`` outside 2..10; not a landmark checkpoint.
    """
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty; pass --overwrite or choose another --out")
    data = compute_report(run_dir, images, solution, checkpoint, samples=samples, tta=tta, batch_size=batch_size,
                          workers=workers, device=device)
    return render_report(data, out)


def render_report(data: ReportData, out: str | Path) -> dict:
    """Write the page, its PNGs, the CSVs and ``report.json`` of ``data`` into ``out``.

    Returns:
        :func:`report_summary` of ``data`` with ``html``: the page's path.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    page = Page(f"Landmark run report: {data.run.run_dir.name}")
    for section in (_run_section, _curves_section, _distribution_section, _numbers_section, _per_class_section,
                    _examples_section, _confusion_section, _confidence_section, _imagenet_section,
                    _saliency_section):
        section(page, data, out)
    summary = report_summary(data)
    (out / "report.json").write_text(json_text(summary, indent=2, default=float), encoding="utf-8")
    page.write(out / "report.html")
    return {**summary, "html": str(out / "report.html")}


def report_summary(data: ReportData) -> dict:
    """The numbers of the report (``report.json``): run, evaluation set, class sizes, rejects,
    scores, per-class accuracy, example classes, confused pairs, ImageNet top-3, saliency."""
    result = {"run_dir": str(data.run.run_dir), "checkpoint": str(data.checkpoint),
              "evaluation_set": data.evalset.source}
    counts = data.train_counts
    if len(counts):
        result["train_images"] = {"classes": int(len(counts)), "images": int(counts.sum()), "min": int(counts.min()),
                                  "median": float(counts.median()), "max": int(counts.max())}
    result["rejects"] = {"training": data.run.train_rejects, "evaluation": len(data.rejects)}
    if data.scores is not None:
        result["metrics"] = {f"tta{k}": v for k, v in data.scores.items()}
        truth = data.evalset.solution
        result["queries"] = {"all": len(truth), "landmark": sum(1 for v in truth.values() if v)}
    if data.accuracy is not None:
        acc = data.accuracy
        result["per_class"] = {"classes": int(len(acc.per_class)), "mean_accuracy": float(acc.per_class["accuracy"].mean()),
                               "classes_at_0": int((acc.per_class["accuracy"] == 0).sum()), **acc.correlation}
        result["example_classes"] = {"worst": acc.worst, "near_50": acc.near_50}
        result["confused_pairs"] = acc.pairs.to_dict("records")
    s = data.samples
    if s.imagenet_top3 is not None:
        result["imagenet_top3"] = {i: [[n, p] for n, p in t] for i, t in zip(s.ids, s.imagenet_top3)}
    result["saliency_centre_share"] = s.centre_shares()
    return result


def _run_section(page: Page, data: ReportData, out: Path) -> None:
    page.section("Run")
    shown = " + ".join(map(str, data.run.data)) if isinstance(data.run.data, list) else data.run.data
    page.text(f"Run folder {data.run.run_dir}, checkpoint {data.checkpoint} (backbone {data.arch['backbone']}, "
              f"head {data.arch['head']}, {len(data.classes)} classes); data {shown}; "
              f"evaluation set: {data.evalset.source}.")


def _curves_section(page: Page, data: ReportData, out: Path) -> None:
    page.section("Training curves")
    metrics = data.run.history
    if metrics is None or metrics.empty:
        page.text("metrics.csv is missing or empty: no curves.", note=True)
        return
    charts.plot_training_curves(metrics, out / "training_curves.png")
    page.image(out / "training_curves.png", "training curves")
    best = metrics.loc[metrics["val_gap"].idxmax()] if "val_gap" in metrics else metrics.iloc[-1]
    page.text(f"{len(metrics)} epochs; best validation GAP {best.get('val_gap', float('nan')):.3f} "
              f"at epoch {int(best['epoch'])} (stage {best.get('stage', '?')}). Dashed lines: stage boundaries.")


def _distribution_section(page: Page, data: ReportData, out: Path) -> None:
    page.section("Class distribution (training split)")
    if not len(data.train_counts):
        page.text("split.csv is missing: no class distribution.", note=True)
        return
    charts.plot_class_frequency(charts.class_count_frame(data.train_counts, data.names),
                                out / "class_distribution.png", xlabel="training images")
    page.image(out / "class_distribution.png", "class distribution")


def _numbers_section(page: Page, data: ReportData, out: Path) -> None:
    for k, frame in data.predictions.items():
        frame.to_csv(out / f"predictions_tta{k}.csv", index=False)
    write_rejects(data.rejects, out / "rejects.csv")
    page.section("Numbers")
    if data.scores is not None:
        labels = {1: "single view (tta=1)", data.tta: f"voting over {data.tta} crops (tta={data.tta})"}
        page.table(pd.DataFrame([{"prediction": labels[k], **v} for k, v in data.scores.items()]))
        truth = data.evalset.solution
        page.text(f"{len(truth)} queries, {sum(1 for v in truth.values() if v)} of them show a landmark. "
                  f"GAP ranks every prediction by confidence (Kaggle/GLDv2 micro-AP); "
                  f"gap_landmarks_only ignores the predictions for non-landmark queries.")
    else:
        page.text("No ground truth for these images (no recognition_solution.csv beside them; pass --solution): "
                  "predictions only.", note=True)
    trained = data.run.train_rejects
    page.text(f"Rejected images: {trained if trained is not None else 'unknown (no rejects.csv)'} "
              f"during training (RUN_DIR/rejects.csv), {len(data.rejects)} in this evaluation (rejects.csv here).")
    if data.rejects:
        page.table(pd.DataFrame([r.__dict__ for r in data.rejects.values()]).head(20))


def _per_class_section(page: Page, data: ReportData, out: Path) -> None:
    acc = data.accuracy
    if acc is None:
        return
    page.section("Per-class accuracy")
    charts.plot_per_class_accuracy(acc.per_class, out / "per_class_accuracy.png", data.names)
    page.image(out / "per_class_accuracy.png", "per-class accuracy")
    acc.joined.to_csv(out / "per_class_accuracy.csv", index=False)
    corr = acc.correlation
    if charts.plot_accuracy_vs_count(acc.joined, corr, data.names, out / "accuracy_vs_train_images.png") is not None:
        page.image(out / "accuracy_vs_train_images.png", "accuracy against training images")
    if corr["classes"] < charts.CORRELATION_MIN_CLASSES:
        page.text(f"Only {corr['classes']} classes: no correlation of accuracy with training images.", note=True)
    else:
        page.text(f"Correlation of per-class accuracy with training images per class over {corr['classes']} classes: "
                  f"Pearson r = {corr['pearson']:.3f} (p = {corr['pearson_p']:.3f}), Spearman ρ = "
                  f"{corr['spearman']:.3f} (p = {corr['spearman_p']:.3f}). The original work found no correlation.")
    page.table(acc.joined.head(15))
    page.text("Lowest 15 classes shown; all in per_class_accuracy.csv.", note=True)


def file_part(landmark_id: str) -> str:
    """``landmark_id`` as part of a file name inside the report folder: itself when it is letters,
    digits, ``_ - .`` and at most 64 characters (every GLDv2 id and class folder name), else its
    safe characters (at most 40) and 8 hex digits of its SHA-256 (a solution CSV's ``a/b``,
    ``../x`` or a 300-character id stays one file in the folder, one per id)."""
    import hashlib
    import re
    text = str(landmark_id)
    if re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}", text):
        return text
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._")[:40]
    return f"{safe}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def _examples_section(page: Page, data: ReportData, out: Path) -> None:
    if data.accuracy is None:
        return
    page.section("Examples: worst classes and classes near 50 %")
    page.text("Green captions: correct, with confidence; red: misclassified, with the predicted landmark and "
              "its confidence (single view, the same view the saliency maps explain).", note=True)
    for kind, ids in (("worst", data.accuracy.worst), ("near50", data.accuracy.near_50)):
        for lid in ids:
            name = f"examples_{kind}_{file_part(lid)}.png"
            photo_grids.plot_class_examples(data.queries, lid, data.names, out / name)
            page.image(out / name, f"examples of class {lid}")


def _confusion_section(page: Page, data: ReportData, out: Path) -> None:
    if data.accuracy is None:
        return
    pairs, names = data.accuracy.pairs, data.names
    pairs.to_csv(out / "confused_pairs.csv", index=False)
    page.section("Most confused pairs")
    if pairs.empty:
        page.text("No landmark query was mistaken for another landmark.")
        return
    page.table(pairs.assign(name_a=[names.get(a, "") for a in pairs["class_a"]],
                            name_b=[names.get(b, "") for b in pairs["class_b"]]))
    photo_grids.plot_confusion_examples(pairs, data.queries, data.accuracy.references, names,
                                        path=out / "confused_pairs.png")
    page.image(out / "confused_pairs.png", "confused pairs")


def _confidence_section(page: Page, data: ReportData, out: Path) -> None:
    if data.accuracy is None:
        return
    page.section("Confidence")
    charts.plot_confidence(data.queries, out / "confidence.png")
    page.image(out / "confidence.png", "confidence histogram")
    page.text("GAP ranks all predictions by confidence: wrong and non-landmark predictions above correct ones "
              "cost the most.", note=True)


def _imagenet_section(page: Page, data: ReportData, out: Path) -> None:
    page.section("Pretrained backbone: ImageNet top-3")
    s = data.samples
    if s.imagenet_top3 is None:
        page.text(s.imagenet_skipped or "", note=True)
        return
    imagenet.topk_frame(s.ids, s.titles, s.imagenet_top3).to_csv(out / "imagenet_top3.csv", index=False)
    imagenet.plot_topk(s.photos, s.titles, s.imagenet_top3, out / "imagenet_top3.png")
    page.image(out / "imagenet_top3.png", "ImageNet top-3")
    page.text(f"{data.arch['backbone']} with its original 1000-class ImageNet classifier, before fine-tuning: "
              "a sound backbone already calls landmark photos something architectural.", note=True)


def _saliency_section(page: Page, data: ReportData, out: Path) -> None:
    page.section("Saliency maps")
    s = data.samples
    if s.saliency:
        saliency.plot_saliency(list(zip(s.photos, s.saliency, s.titles)), out / "saliency.png")
        page.image(out / "saliency.png", "saliency maps")
    shares = ", ".join(f"{i}: {v['gradient']:.2f}/{v['guided']:.2f}" for i, v in s.centre_shares().items())
    page.text("For the predicted class: plain gradient |∂logit/∂pixel| (Simonyan et al. 2014) and guided "
              "backpropagation (Springenberg et al. 2015), max over colour channels, overlaid on the photo; bright = "
              "pixels that change the score most. Share of the map in the central quarter of the photo "
              f"(0.25 = uniform): {shares} (gradient/guided).", note=True)
