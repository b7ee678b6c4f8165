"""Command line: a thin shell over the library (``landmark --help``)."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from .config_files import PRESETS_DIR
from .defaults import (BATCH_SIZE, CALIBRATION_IMAGES, EMBED_DTYPE, PART_SIZE, REPORT_SAMPLES, REPORT_TTA,
                       STATS_TOP, STATS_WORKERS, TAG_BATCH, TOP_CLASSES, TOP_K, TTA, VERIFY_IMAGES, WORKERS)
from .data.download_options import DownloadOptions
from .data.preprocess import MAX_SIDE
from .io import json_text
from .models.runtime_info import DEFAULT_ENGINE, DEFAULT_RUNTIME, ENGINES, MAX_THREADS_PER_CPU, check_engine
from .retrieval.config import (KNN_SCORING, KNN_SCORINGS, RANSAC_THRESHOLD_PX, RetrievalConfig, check_threshold,
                               retrieval_presets)
from .serving.settings import MAX_BATCH_WINDOW_MS, ServeSettings

# Every default below is read from the library's own settings (these modules import
# pydantic only, so `landmark --help` stays fast); none is restated here.
_DOWNLOAD = DownloadOptions()
_RETRIEVAL = RetrievalConfig()
_SERVE = ServeSettings()
_WORKERS_HELP = "image decoders: threads when the network runs on the CPU, processes beside a GPU"
_DECODERS = ("image decoders: threads when the network runs on the CPU (default: one per CPU), processes "
             "beside a GPU (default: half the CPUs); 0 decodes between forward passes")
_TRAIN_PRESETS = ", ".join(sorted(p.stem for p in PRESETS_DIR.glob("*.yaml")))
_DEVICE_HELP = "cpu, cuda, cuda:1 ... (default: cuda if available)"
_RUNTIME_HELP = ("torch | onnx | auto (auto: onnx for a .onnx, and for a .pt when an export of this very .pt by "
                 "landmark export lies beside it or in its run folder and the network runs on the CPU, else torch; "
                 "the choice is printed on stderr)")
_THREADS_HELP = f"ONNX Runtime threads (default: all CPUs; at most {MAX_THREADS_PER_CPU} per CPU)"
_BATCH_HELP = "images per forward pass"
_MAX_SIDE_HELP = ("pixels of each photo's longer side, aspect ratio kept (no squashing to a square; photos go "
                  "through the network one at a time): instead of --image-size")
_ENGINE_HELP = (f"{' | '.join(ENGINES)}: this process, or Ray Data (photos decoded in CPU tasks, the model in a pool "
                "of actors on CPUs or GPUs; a local Ray cluster unless --ray-address; needs the optional 'ray' extra "
                "of landmark; docs/distributed.md)")
_RAY_ADDRESS_HELP = ("with --engine ray: a running Ray cluster to join (e.g. HEAD_IP:6379 or auto); default: "
                     "$RAY_ADDRESS when set, else a local cluster for the command")
_ACTORS_HELP = "with --engine ray: model actors (default: one per GPU, or as many as leave a quarter of the CPUs to decoding)"
_NUM_CPUS_HELP = "with --engine ray: CPUs (and threads) per model actor (default: 1; 2 where actors get 4 CPUs or more)"
_NUM_GPUS_HELP = "with --engine ray: GPUs per model actor, e.g. 1 or 0.5 (default: 1 when the cluster has GPUs, else 0)"

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Landmark recognition: train, predict and evaluate (GLDv2 / Kaggle formats).")


def _bars_aside():
    """A context in which a line written to stderr gets a line of its own: tqdm's progress bars
    are cleared while it is written and drawn again below it (without it, a runtime, warning or
    error line written while a bar is shown lands on the bar's line).  No-op before tqdm loads."""
    import contextlib
    import sys
    loaded = sys.modules.get("tqdm")
    return loaded.tqdm.external_write_mode(file=sys.stderr) if loaded else contextlib.nullcontext()


def _say(text: str, **style) -> None:
    """``text`` on one stderr line of its own, over any progress bar (:func:`_bars_aside`)."""
    with _bars_aside():
        typer.secho(text, err=True, **style)


def _fail(err: Exception) -> None:
    _say(f"error: {err}", fg=typer.colors.RED)
    raise typer.Exit(2)


def _refuse_overwrite(path, overwrite: bool) -> None:
    """One ``error:`` line, before any work, when a file the command will write exists
    (``path``: one path or the list of every file the command writes)."""
    from .io import refuse_existing
    try:
        refuse_existing([path] if isinstance(path, Path) else path, overwrite)
    except FileExistsError as err:
        _fail(err)


def _engine_options(engine: str, ray_address: Optional[str], actors: Optional[int], num_cpus: Optional[float],
                    num_gpus: Optional[float]) -> dict:
    """The library's engine keywords; one ``error:`` line, before any slow import, for an unknown
    engine, Ray missing (how to install it), or Ray options without ``--engine ray``."""
    try:
        check_engine(engine)
    except ValueError as err:
        _fail(err)
    given = [flag for flag, value in (("--ray-address", ray_address), ("--actors", actors), ("--num-cpus", num_cpus),
                                      ("--num-gpus", num_gpus)) if value is not None]
    if engine != "ray" and given:
        _fail(ValueError(f"{', '.join(given)} only apply with --engine ray"))
    return {"engine": engine, "ray_address": ray_address, "actors": actors, "actor_cpus": num_cpus,
            "actor_gpus": num_gpus}


def _data_source(data: Optional[list[Path]]):
    """Repeated ``--data`` as the library takes it: None, one folder, or a list read as one set
    (:func:`landmark.data.gldv2.data_source`; ValueError for a folder given twice)."""
    if not data:
        return None
    from .data.gldv2 import data_source
    return data_source(data)


def _require(*named: tuple[str, Optional[Path]]) -> None:
    """Refuse missing input files before anything heavy (torch) is imported."""
    for name, path in named:
        if path is not None and not path.exists():
            _fail(FileNotFoundError(f"{name} {path} does not exist"))


def _require_index(folder: Optional[Path], option: str = "") -> None:
    """Refuse a folder that holds no index (no ``meta.json``) before anything heavy is imported; a run
    folder is pointed to its own ``RUN/index``."""
    if folder is not None and not (folder / "meta.json").is_file():
        hint = f": the run's own index is {folder / 'index'}" if (folder / "index" / "meta.json").is_file() else ""
        named = f"{option} {folder}" if option else str(folder)
        _fail(FileNotFoundError(f"{named} holds no index (no meta.json): give a folder landmark index build "
                                f"wrote{hint}"))


class _Stderr(logging.Handler):
    """Log records as plain lines on the current stderr (click's, so tests capture them)."""

    def emit(self, record: logging.LogRecord) -> None:
        _say(self.format(record))


def _one_line_warnings() -> None:
    """The library's own warnings (e.g. vectors of an unrecorded model) on one ``warning: ...`` line."""
    import warnings
    plain = warnings.formatwarning

    def one_line(message, category, filename, lineno, line=None):
        if category.__module__.startswith("landmark"):
            return f"warning: {message}\n"
        return plain(message, category, filename, lineno, line)
    warnings.formatwarning = one_line
    if not getattr(warnings.showwarning, "over_bars", False):   # each on its own line, never on a progress bar
        shown = warnings.showwarning

        def over_bars(*args, **kwargs):
            with _bars_aside():
                shown(*args, **kwargs)
        over_bars.over_bars = True
        warnings.showwarning = over_bars


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="log each epoch")) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s",
                        handlers=[_Stderr()])   # -v's lines too: each on its own line, over progress bars
    _one_line_warnings()
    # Commands that load a model say on one stderr line which runtime runs it (--runtime auto
    # picks ONNX Runtime when an export of the checkpoint sits beside it): models/runtime_info.py.
    from .models.runtime_info import LOGGER
    shown = logging.getLogger(LOGGER)
    shown.setLevel(logging.INFO)
    shown.propagate = False
    if not any(isinstance(h, _Stderr) for h in shown.handlers):
        shown.addHandler(_Stderr())


@app.command()
def train(
    data: Optional[list[Path]] = typer.Option(None, metavar="DIR", help="GLDv2 folder (train.csv, train/a/b/c/ID.jpg) or folder-per-class "
                                              "tree; repeat (--data A --data B) to train on several as one set"),
    config: str = typer.Option("fast", help=f"config YAML path or preset name: {_TRAIN_PRESETS}"),
    out: Optional[Path] = typer.Option(None, help="run folder to create (must be empty or absent)"),
    resume: Optional[Path] = typer.Option(None, help="continue the interrupted run in this folder"),
    weights: Optional[str] = typer.Option(None, help="override model.weights: imagenet | none | PATH"),
    epochs: Optional[int] = typer.Option(None, min=1, help="override: epochs of every stage but a probe "
                                         "(quick trials)"),
    nonlandmarks: Optional[Path] = typer.Option(None, help="override data.nonlandmarks: photos without landmarks "
                                                "that help choose the 'no landmark' threshold"),
    device: Optional[str] = typer.Option(None, help=_DEVICE_HELP),
) -> None:
    """Train a landmark classifier in stages into a new run folder (--out).

    Writes checkpoints, metrics, curves and the reference index (RUN/index)
    with its 'no landmark' thresholds; --resume continues an interrupted run.
    """
    from .runs import RunFolder
    ignored = [flag for flag, value in (("--data", data or None), ("--epochs", epochs), ("--weights", weights),
                                        ("--nonlandmarks", nonlandmarks)) if value is not None]
    if resume is not None and ignored:
        _fail(ValueError(f"--resume continues the run with its saved config.yaml; {', '.join(ignored)} would be "
                         f"ignored: start a new run with --out instead"))
    if resume is None and out is not None:
        try:   # before torch loads; the trainer checks again under its lock
            RunFolder(out).refuse_taken()
        except FileExistsError as err:
            _fail(err)
    _require(*(("--data", d) for d in data or []), ("--resume", resume), ("--nonlandmarks", nonlandmarks))
    if nonlandmarks is not None and (not nonlandmarks.is_dir() or not any(p.is_file() for p in nonlandmarks.rglob("*"))):
        _fail(ValueError(f"--nonlandmarks {nonlandmarks} must be a folder of photos without landmarks "
                         f"(it is {'empty' if nonlandmarks.is_dir() else 'not a folder'})"))
    from .config import load_config
    from .models import WeightsError
    from .reporting.charts import write_training_curves
    from .training import resume as resume_run
    from .training import train as train_run
    try:
        if resume is not None:
            best = resume_run(resume, device=device, on_epoch_end=write_training_curves)
        else:
            if not data or out is None:
                _fail(ValueError("give --data and --out (or --resume RUN_DIR)"))
            overrides = {"model": {"weights": weights}} if weights else {}
            if nonlandmarks is not None:
                overrides["data"] = {"nonlandmarks": str(nonlandmarks.resolve())}
            cfg = load_config(config, overrides, epochs=epochs)
            best = train_run(cfg, data[0] if len(data) == 1 else data, run_dir=out, device=device, on_epoch_end=write_training_curves)
    except (FileExistsError, FileNotFoundError, ValueError, WeightsError) as err:
        _fail(err)
    if os.environ.get("RANK", "0") != "0":
        return  # under torchrun, rank 0 reports
    run = RunFolder(best.parent.parent)
    test = json.loads(run.test_metrics.read_text())
    reference = run.reference_info()
    typer.echo(json_text({"best_checkpoint": str(best), "held_out_test": test, "reference": reference,
                           "curves": str(run.curves), "rejects": str(run.rejects)}, indent=2))
    from .retrieval.reference import threshold_line, threshold_warning
    # how "no landmark" was chosen and its value, or that it could not be, in one line; one more when
    # it rests on few validation photos
    record = (reference or {}).get("threshold_method") or {
        "method": "none", "reason": "the run built no reference index (data.reference_index: false)"}
    for line in (threshold_line(record), threshold_warning(record)):
        if line:
            typer.echo(line)


@app.command()
def predict(
    checkpoint: Path = typer.Argument(..., help="a .pt file written by landmark train, its run folder, or a .onnx "
                                               "export (landmark export)"),
    images: Path = typer.Option(..., help="folder of images (recursive), CSV with an id column, or one image"),
    out: Path = typer.Option(Path("submission.csv"), help="Kaggle submission to write (id,landmarks)"),
    tta: int = typer.Option(TTA, min=1, max=10, help="test-time voting over K crops (1 = none, 10 = TenCrop)"),
    batch_size: int = typer.Option(BATCH_SIZE, min=1, help="images per forward pass (divided by --tta)"),
    workers: Optional[int] = typer.Option(None, min=0, help=_DECODERS),
    device: Optional[str] = typer.Option(None, help=_DEVICE_HELP),
    index: Optional[Path] = typer.Option(None, help="index folder whose photos confirm the classifier's answers "
                                         "(default: the run's own RUN/index when it has one)"),
    classifier_only: bool = typer.Option(False, "--classifier-only", help="score with the softmax alone, no index"),
    overwrite: bool = typer.Option(False, help="replace --out (and OUT.answers.csv) if they exist"),
    runtime: str = typer.Option(DEFAULT_RUNTIME, help=_RUNTIME_HELP),
    threads: Optional[int] = typer.Option(None, min=1, help=_THREADS_HELP),
    engine: str = typer.Option(DEFAULT_ENGINE, help=_ENGINE_HELP),
    ray_address: Optional[str] = typer.Option(None, help=_RAY_ADDRESS_HELP),
    actors: Optional[int] = typer.Option(None, min=1, help=_ACTORS_HELP),
    num_cpus: Optional[float] = typer.Option(None, min=0.01, help=_NUM_CPUS_HELP),
    num_gpus: Optional[float] = typer.Option(None, min=0, help=_NUM_GPUS_HELP),
) -> None:
    """Predict one landmark per image and write a Kaggle submission (--out).

    Also writes OUT.answers.csv: id, landmark_id, score, name, verdict (the
    name, or "no landmark" below the model's threshold) and path of every
    image. Unreadable images get an empty row and a line in OUT.rejects.csv.
    CHECKPOINT may be a .onnx file written by `landmark export`; a .pt runs on
    its export when one lies beside it (--runtime auto, the default).
    """
    answers_file, rejects_file = (out.with_name(out.stem + suffix) for suffix in (".answers.csv", ".rejects.csv"))
    _refuse_overwrite([out, answers_file, rejects_file], overwrite)
    if classifier_only and index is not None:
        _fail(ValueError("--classifier-only and --index contradict each other: give one"))
    _require(("CHECKPOINT", checkpoint), ("--images", images), ("--index", index))
    engine_options = _engine_options(engine, ray_address, actors, num_cpus, num_gpus=num_gpus)
    from .data import write_rejects
    from .data.kaggle import write_submission
    from .inference import predict as run_predict
    try:
        predictions, rejects = run_predict(checkpoint, images, tta=tta, batch_size=batch_size, workers=workers,
                                           device=device, index=False if classifier_only else index,
                                           runtime=runtime, threads=threads, **engine_options)
        write_submission(predictions, out)
    except (FileNotFoundError, ValueError) as err:
        _fail(err)
    predictions.to_csv(answers_file, index=False)
    write_rejects(rejects, rejects_file)
    typer.echo(json_text({"submission": str(out), "answers": str(answers_file), "images": len(predictions),
                           "rejects": len(rejects), "rejects_file": str(rejects_file)}))


@app.command()
def export(
    checkpoint: Path = typer.Argument(..., help="a .pt file written by landmark train, or its run folder"),
    out: Optional[Path] = typer.Option(None, help="the .onnx file to write (default: RUN/model.onnx for a run "
                                                 "folder or its best.pt, else CHECKPOINT.onnx beside it; either is "
                                                 "then run by predict, embed, recognize ... on the CPU: --runtime "
                                                 "auto)"),
    int8: bool = typer.Option(False, help="quantise to int8 (static, calibrated on training photos; dynamic "
                                          "where static fails)"),
    images: Optional[Path] = typer.Option(None, help="real photos (folder/CSV) for verification and calibration "
                                                     "(default: the run's test split, else val, and its train split)"),
    verify_images: int = typer.Option(VERIFY_IMAGES, min=1, help="photos compared between ONNX Runtime and PyTorch"),
    calibration_images: int = typer.Option(CALIBRATION_IMAGES, min=1, help="photos that calibrate int8 activations"),
    fp32_blocks: Optional[int] = typer.Option(None, min=0, help="with --int8: leading backbone blocks kept fp32 "
                                                                "besides the stem (default: the first; more: closer "
                                                                "to fp32, slower; docs/runtime.md)"),
    threads: Optional[int] = typer.Option(None, min=1, help=_THREADS_HELP),
    overwrite: bool = typer.Option(False, help="replace --out if it exists"),
) -> None:
    """Export a checkpoint to ONNX, checked against PyTorch on real photos.

    The model gives logits and embedding for any batch size and carries its
    classes and preprocessing in its metadata; nothing is written when ONNX
    Runtime and PyTorch disagree.
    """
    if out is None:   # where recognize --model RUN looks for it (runs.RunFolder), before torch loads
        from .runs import RunFolder
        try:
            out = RunFolder.export_of(checkpoint)
        except FileNotFoundError as err:
            _fail(err)
        _refuse_overwrite(out, overwrite)
    from .inference.export import export_onnx   # it refuses a bad --out before any work
    try:
        report = export_onnx(checkpoint, out, int8=int8, images=images, verify_images=verify_images,
                             calibration_images=calibration_images, overwrite=overwrite, threads=threads,
                             fp32_blocks=fp32_blocks)
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        _fail(err)
    typer.echo(json_text(report, indent=2))


@app.command()
def evaluate(
    submission: Optional[Path] = typer.Argument(None, help="Kaggle submission (id,landmarks); leave out with --model"),
    solution: Optional[Path] = typer.Option(None, help="recognition_solution.csv (id,landmarks,Usage), a retrieval solution "
                                            "(id,images,Usage[,easy,hard,junk]) for a landmark retrieve submission, or a labelled "
                                            "folder tree: one folder per landmark, photos of no landmark in "
                                            "no_landmark/ (the submission predicted from that folder)"),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="run folder, .pt or .onnx: predict --folder "
                                         "and score it in one go (no SUBMISSION)"),
    folder: Optional[Path] = typer.Option(None, help="with --model: the labelled folder tree to predict and score"),
    nonlandmarks: Optional[Path] = typer.Option(None, help="with a folder tree: a folder of photos without "
                                                "landmarks, scored as 'no landmark'"),
    out: Optional[Path] = typer.Option(None, help="folder for per_class_accuracy.csv/.png and metrics.json "
                                       "(and submission.csv with --model)"),
    usage: Optional[str] = typer.Option(None, help="score only the solution's Public or Private rows (default: all)"),
    overwrite: bool = typer.Option(False, help="replace the files of an earlier evaluation in --out"),
) -> None:
    """Print GAP, GAP over landmark queries only, and accuracy as one JSON object.

    Solutions: landmark evaluate SUB.csv --solution recognition_solution.csv | --solution FOLDER_TREE;
    landmark evaluate --model RUN --folder FOLDER_TREE [--nonlandmarks DIR] predicts and scores.
    Given a retrieval solution (id,images,Usage) and a landmark retrieve submission: mAP@100,
    precision@10 and, where the solution has easy/hard/junk columns, Revisited mAP Easy/Medium/Hard."""
    if usage is not None and usage.lower() not in ("public", "private"):
        _fail(ValueError(f"--usage {usage!r}: use Public or Private"))
    if model is not None or folder is not None:
        if model is None or folder is None or submission is not None or solution is not None:
            _fail(ValueError("give --model RUN --folder TREE (predict and score), or SUBMISSION --solution "
                             "(score a submission), not both"))
    elif submission is None or solution is None:
        _fail(ValueError("give SUBMISSION --solution SOLUTION, or --model RUN --folder TREE"))
    if out is not None:
        if out.exists() and not out.is_dir():
            _fail(ValueError(f"--out {out} is a file; give a folder"))
        from .io import evaluate_files
        _refuse_overwrite(evaluate_files(out) + ([out / "submission.csv"] if model is not None else []), overwrite)
    _require(("SUBMISSION", submission), ("--solution", solution), ("--model", model), ("--folder", folder),
             ("--nonlandmarks", nonlandmarks))
    if solution is not None and solution.is_file():
        from .evaluation.evaluate import evaluate_retrieval, is_retrieval_solution
        if is_retrieval_solution(solution):
            try:
                typer.echo(json_text(evaluate_retrieval(submission, solution, out=out, usage=usage)))
            except (FileNotFoundError, ValueError) as err:
                _fail(err)
            return
    try:
        if model is not None:
            from .inference.labelled import evaluate_folder
            result = evaluate_folder(model, folder, nonlandmarks=nonlandmarks, out=out)
        else:
            from .evaluation import evaluate as run_evaluate
            result = run_evaluate(submission, solution, out=out, usage=usage, nonlandmarks=nonlandmarks)
    except (FileNotFoundError, ValueError) as err:
        _fail(err)
    if out is not None:
        from .reporting.charts import write_per_class_accuracy
        write_per_class_accuracy(out)
    typer.echo(json_text(result))


# --- data: download, stats ---
@app.command()
def download(
    out: Path = typer.Option(..., help="output folder (GLDv2 layout); an existing one is resumed"),
    csv_file: Optional[Path] = typer.Option(None, "--csv", help="id,url[,landmark_id] CSV to download"),
    gldv2: Optional[str] = typer.Option(None, help="official GLDv2 shards instead: train, index or test"),
    shards: str = typer.Option("0", help="with --gldv2: shard numbers, e.g. 0-9, 0,3,5-7 or all"),
    base_url: str = typer.Option(_DOWNLOAD.base_url, help="with --gldv2: shard server"),
    keep_tars: bool = typer.Option(False, help="with --gldv2: keep verified TARs in OUT/tars"),
    split: str = typer.Option(_DOWNLOAD.split, help="with --csv: folder under OUT (train, index, test)"),
    max_width: int = typer.Option(_DOWNLOAD.max_width, help="shrink to at most this width in pixels "
                                                          "(0 keeps originals)"),
    workers: int = typer.Option(_DOWNLOAD.workers, help="concurrent downloads (--csv) or decoding threads (--gldv2)"),
    timeout: float = typer.Option(_DOWNLOAD.timeout, help="seconds one attempt may take, request to last byte"),
    retries: int = typer.Option(_DOWNLOAD.retries, help="further attempts after timeouts, resets, 5xx, 429"),
    backoff: float = typer.Option(_DOWNLOAD.backoff, help="seconds before the first retry, doubling after"),
    rate: float = typer.Option(_DOWNLOAD.rate_per_host, help="requests per second per host (0 = unlimited)"),
    max_mb: float = typer.Option(_DOWNLOAD.max_bytes / 2**20, help="refuse images larger than this many MB"),
    progress: bool = typer.Option(True, help="show a progress bar"),
) -> None:
    """Download images into the GLDv2 layout (resumable); failures go to OUT/download_failures.csv."""
    from .data.download import download_csv
    from .data.gldv2_shards import download_shards, parse_shards
    if (csv_file is None) == (gldv2 is None):
        _fail(ValueError("give exactly one of --csv FILE or --gldv2 train|index|test"))
    if gldv2 is not None and gldv2 not in ("train", "index", "test"):
        _fail(ValueError(f"--gldv2 {gldv2!r}: use train, index or test"))
    if max_width < 0 or workers < 1 or retries < 0 or timeout <= 0:
        _fail(ValueError("need --max-width >= 0, --workers >= 1, --retries >= 0, --timeout > 0"))
    try:
        opts = DownloadOptions(max_width=max_width, workers=workers, timeout=timeout, retries=retries,
                               backoff=backoff, rate_per_host=rate, max_bytes=int(max_mb * 2**20),
                               split=gldv2 or split, base_url=base_url)
        if csv_file is not None:
            result = download_csv(csv_file, out, opts=opts, progress=progress).as_dict()
        else:
            result = download_shards(gldv2, parse_shards(shards, gldv2), out=out, opts=opts, keep_tars=keep_tars,
                                     progress=progress).as_dict()
    except (FileNotFoundError, ValueError) as err:
        _fail(err)
    typer.echo(json_text(result, indent=2))


@app.command()
def stats(
    data: Path = typer.Argument(..., help="GLDv2 folder (train.csv) or folder-per-class tree"),
    out: Path = typer.Option(Path("stats"), help="folder for stats.md/.json, CSVs and PNGs"),
    images: bool = typer.Option(True, help="read every file: duplicates and unreadable files"),
    near_duplicates: bool = typer.Option(False, help="also group images with identical pHash (imagehash)"),
    workers: int = typer.Option(STATS_WORKERS, min=1, help="threads reading files"),
    top: int = typer.Option(STATS_TOP, min=1, help="classes in each panel of class_frequency.png"),
    overwrite: bool = typer.Option(False, help="write into an existing non-empty --out"),
) -> None:
    """Class balance, long tail, duplicates and unreadable files of a dataset (Markdown, JSON, PNG)."""
    from .reporting.dataset_report import write_stats_report
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        _fail(FileExistsError(f"{out} exists and is not empty; pass --overwrite or choose another --out"))
    try:
        summary = write_stats_report(data, out, check_images=images, near_duplicates=near_duplicates,
                                     workers=workers, top=top)
    except (FileNotFoundError, ValueError) as err:
        _fail(err)
    keys = ("images", "classes", "images_per_class", "classes_by_size", "top1pct", "duplicates",
            "near_duplicates", "unreadable")
    typer.echo(json_text({k: summary.get(k) for k in keys} | {"report": str(out / "stats.md")}, indent=2))


# --- report, saliency ---
@app.command()
def report(
    run_dir: Path = typer.Argument(..., help="run folder written by landmark train"),
    images: Optional[Path] = typer.Option(None, help="evaluation images (folder or CSV); default: the run's held-out "
                                          "test split (fast and finetune runs keep none: give --images)"),
    solution: Optional[Path] = typer.Option(None, help="recognition_solution.csv, or a labelled folder tree as "
                                            "evaluate reads it (default: the CSV beside --images, else --images "
                                            "itself when its folders name the run's landmarks)"),
    out: Path = typer.Option(Path("report"), help="folder for report.html, the PNGs, report.json and CSVs"),
    checkpoint: Optional[Path] = typer.Option(None, help="checkpoint to report on (default: "
                                              "RUN_DIR/checkpoints/best.pt)"),
    samples: int = typer.Option(REPORT_SAMPLES, min=1, help="photos for the ImageNet top-3 and saliency sections"),
    tta: int = typer.Option(REPORT_TTA, help="crops of the voted prediction compared with the single view (2..10)"),
    batch_size: int = typer.Option(BATCH_SIZE, min=1, help="images per forward pass (divided by --tta)"),
    workers: int = typer.Option(WORKERS, min=0, help=_WORKERS_HELP),
    device: Optional[str] = typer.Option(None, help="cpu, cuda ... for prediction (saliency runs on cpu; default: "
                                         "cuda if available)"),
    overwrite: bool = typer.Option(False, help="write into a non-empty --out"),
) -> None:
    """Explain a run on one self-contained HTML page: curves, class sizes, accuracy, examples, saliency."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from .models import WeightsError
    from .reporting.report import build_report
    try:
        result = build_report(run_dir, out, images=images, solution=solution, checkpoint=checkpoint,
                              samples=samples, tta=tta, batch_size=batch_size, workers=workers, device=device,
                              overwrite=overwrite)
    except (FileExistsError, FileNotFoundError, ValueError, WeightsError) as err:
        _fail(err)
    typer.echo(json_text({"html": result["html"], "metrics": result.get("metrics"),
                           "rejects": result["rejects"]}, indent=2))


@app.command()
def saliency(
    checkpoint: Path = typer.Argument(..., help="a .pt file written by landmark train"),
    images: list[Path] = typer.Argument(..., help="photos to explain"),
    out: Path = typer.Option(..., help="folder for one <id>.saliency.png per photo and saliency.csv"),
    overwrite: bool = typer.Option(False, help="replace existing pictures in --out"),
) -> None:
    """Plain-gradient and guided-backprop saliency maps of the predicted class, overlaid on each photo."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from .reporting.saliency import explain_files
    try:
        result = explain_files(checkpoint, images, out=out, overwrite=overwrite)
    except (FileExistsError, FileNotFoundError, ValueError) as err:
        _fail(err)
    typer.echo(json_text(result, indent=2))


# --- match ---
_VERIFY = _RETRIEVAL.verify


@app.command()
def match(
    image_a: Path = typer.Argument(..., help="first image (any format Pillow reads)"),
    image_b: Path = typer.Argument(..., help="second image"),
    out: Optional[Path] = typer.Option(None, help="PNG to write: both images side by side with the inlier matches"),
    max_keypoints: Optional[int] = typer.Option(None, min=1, help="keypoints per image, strongest first (default: "
                                                f"{_VERIFY.max_keypoints} rootsift, {_RETRIEVAL.local.max_keypoints} learned)"),
    max_side: Optional[int] = typer.Option(None, min=16, help="pixels; longest side the images are shrunk to (default: "
                                           f"{_VERIFY.max_side} rootsift, {_RETRIEVAL.local.max_side} learned)"),
    ratio: float = typer.Option(_VERIFY.ratio, min=0.01, max=1.0, help="Lowe ratio test threshold"),
    model: str = typer.Option(_VERIFY.model, help="RANSAC model: fundamental | homography"),
    threshold: Optional[float] = typer.Option(_VERIFY.ransac_threshold, min=0.01,
                                              help="RANSAC threshold in pixels (default: " + ", ".join(
                                                  f"{v:g} {k}" for k, v in RANSAC_THRESHOLD_PX.items()) + ")"),
    tentative: bool = typer.Option(False, help="also draw the rejected tentative matches (red)"),
    overwrite: bool = typer.Option(False, help="replace --out if it exists"),
    features: str = typer.Option("rootsift", help="local features: rootsift (no extra package) | aliked | disk "
                                                  "(LightGlue; the 'local' extra)"),
) -> None:
    """Geometric verification of two photos: local features, matches, MAGSAC++ inliers.

    RootSIFT + mutual ratio-test matches (default), or ALIKED/DISK keypoints matched
    by LightGlue (--features aliked|disk). Prints JSON with the inlier count and
    whether it reaches the same-landmark threshold of those features; with --out
    draws the inlier matches.
    """
    from .retrieval.config import LOCAL_FEATURES
    if features not in LOCAL_FEATURES:
        _fail(ValueError(f"--features must be one of {', '.join(LOCAL_FEATURES)}, not {features!r}"))
    if out is not None:
        _refuse_overwrite(out, overwrite)
    if features != "rootsift":
        _match_learned(image_a, image_b, out=out, features=features, tentative=tentative,
                       max_keypoints=max_keypoints, max_side=max_side)
        return
    max_keypoints = _VERIFY.max_keypoints if max_keypoints is None else max_keypoints
    max_side = _VERIFY.max_side if max_side is None else max_side
    from .data import ImageError, load_image
    from .reporting.match_plot import draw_matches
    from .retrieval.config import SAME_LANDMARK_INLIERS
    from .retrieval.verification import local_features
    from .retrieval.verification import match as run_match
    images = []
    for path in (image_a, image_b):
        try:
            images.append(load_image(path))
        except ImageError as err:
            _fail(ValueError(f"cannot read {path}: {err}"))
    try:
        fa, fb = (local_features(img, max_keypoints=max_keypoints, max_side=max_side) for img in images)
        result = run_match(fa, fb, ratio=ratio, model=model, ransac_threshold=threshold)  # type: ignore[arg-type]
    except ValueError as err:
        _fail(err)
    if out is not None:
        draw_matches(result, out, images=(images[0], images[1]), features=(fa, fb), max_side=max_side,
                     tentative=tentative)
    typer.echo(json_text({"inliers": result.num_inliers, "tentative_matches": int(len(result.matches)),
                           "keypoints": [len(fa), len(fb)], "model": model,
                           "same_landmark": result.num_inliers >= SAME_LANDMARK_INLIERS,
                           "threshold_inliers": SAME_LANDMARK_INLIERS, "out": str(out) if out else None}))


def _match_learned(image_a: Path, image_b: Path, *, out: Optional[Path], features: str, tentative: bool,
                   max_keypoints: Optional[int], max_side: Optional[int]) -> None:
    """``landmark match --features aliked|disk``: LightGlue matches and MAGSAC++ inliers."""
    from .retrieval.local import MissingPackageError, match_photos
    try:
        found = match_photos(image_a, image_b, features=features, max_keypoints=max_keypoints, max_side=max_side)
    except (MissingPackageError, ValueError) as err:
        _fail(err)
    if out is not None:
        from .reporting.match_plot import draw_matches
        draw_matches(found.result, out, images=found.images, features=found.features, max_side=found.max_side,
                     tentative=tentative)
    typer.echo(json_text({**found.summary, "out": str(out) if out else None}))


# --- retrieval: embed, index, knn ---
index_app = typer.Typer(no_args_is_help=True, help="FAISS index of labelled photos: build, add (enrol).")
app.add_typer(index_app, name="index")


def _landmark_list(landmarks: Optional[str]) -> Optional[list[str]]:
    return [x.strip() for x in landmarks.split(",") if x.strip()] if landmarks else None


@app.command()
def embed(
    checkpoint: list[Path] = typer.Argument(..., metavar="CHECKPOINT",
                                            help="a .pt file written by landmark train, or a .onnx export (landmark "
                                                 "export); several: each photo's descriptors of every model, "
                                                 "concatenated (an ensemble, docs/retrieval.md)"),
    images: Optional[Path] = typer.Option(None, help="folder of images (recursive) or CSV with an id column"),
    data: Optional[list[Path]] = typer.Option(None, metavar="DIR", help="labelled set instead: GLDv2 folder (train.csv) "
                                              "or class tree; repeat for several folders as one set"),
    landmarks: Optional[str] = typer.Option(None, help="with --data: only these landmark ids, e.g. 3,7"),
    label: Optional[str] = typer.Option(None, help="with --images: give every image this landmark id"),
    out: Path = typer.Option(..., help="NAME.npy to write (+ NAME.ids.csv, NAME.rejects.csv, NAME.json)"),
    dtype: str = typer.Option(EMBED_DTYPE, help="storage type: float16 | float32"),
    image_size: Optional[int] = typer.Option(None, min=16, max=MAX_SIDE, help="pixels (square); default: the checkpoint's size"),
    max_side: Optional[int] = typer.Option(None, min=16, max=MAX_SIDE, help=_MAX_SIDE_HELP),
    top_classes: int = typer.Option(TOP_CLASSES, min=0, help="also store the classifier's top-K classes (NAME.classes.npz)"),
    batch_size: int = typer.Option(BATCH_SIZE, min=1, help=_BATCH_HELP),
    device: Optional[str] = typer.Option(None, help=_DEVICE_HELP),
    workers: Optional[int] = typer.Option(None, min=0, help=_DECODERS),
    overwrite: bool = typer.Option(False, help="replace NAME.npy and its side files"),
    runtime: str = typer.Option(DEFAULT_RUNTIME, help=_RUNTIME_HELP),
    threads: Optional[int] = typer.Option(None, min=1, help=_THREADS_HELP),
    shard: Optional[str] = typer.Option(None, help="i/n: embed shard i of n into the folder --out (resumable; "
                                                   "then landmark embed-merge)"),
    part_size: int = typer.Option(PART_SIZE, min=1, help="with --shard or --engine ray: images per atomically written part"),
    engine: str = typer.Option(DEFAULT_ENGINE, help=_ENGINE_HELP + "; ray writes the folder of parts of --shard "
                               "into --out (resumable), merged by landmark embed-merge"),
    ray_address: Optional[str] = typer.Option(None, help=_RAY_ADDRESS_HELP),
    actors: Optional[int] = typer.Option(None, min=1, help=_ACTORS_HELP),
    num_cpus: Optional[float] = typer.Option(None, min=0.01, help=_NUM_CPUS_HELP),
    num_gpus: Optional[float] = typer.Option(None, min=0, help=_NUM_GPUS_HELP),
) -> None:
    """L2-normalised global descriptors (LandmarkNet.embed) streamed into a memory-mapped .npy.

    With --shard i/n or --engine ray, --out is a folder of parts (shared by
    all shards); a restarted job skips the parts already written; then
    landmark embed-merge FOLDER --out NAME.npy.
    """
    engine_options = _engine_options(engine, ray_address, actors, num_cpus, num_gpus=num_gpus)
    if engine == "ray" and out.suffix.lower() == ".npy":
        _fail(ValueError(f"--engine ray writes a folder of parts: give --out a folder (e.g. {out.with_suffix('')}"
                         f".parts), then landmark embed-merge FOLDER --out {out}"))
    from .io import embedding_files, embeddings_path, sidecar
    from .retrieval.pipeline import embed_checkpoint, image_frame
    if shard is None and engine != "ray":
        _refuse_overwrite(embedding_files(embeddings_path(out)), overwrite)
    try:
        frame = image_frame(images=images, data=_data_source(data), landmarks=_landmark_list(landmarks), label=label)
        if shard is not None or engine == "ray":
            from .retrieval.pipeline import embed_checkpoint_shard
            from .retrieval.shards import parse_shard
            typer.echo(json_text(embed_checkpoint_shard(checkpoint, frame, folder=out,
                                                         shard=parse_shard(shard) if shard else (0, 1),
                                                         part_size=part_size, top_classes=top_classes, dtype=dtype,
                                                         image_size=image_size, max_side=max_side,
                                                         batch_size=batch_size, workers=workers, device=device,
                                                         runtime=runtime, threads=threads, **engine_options)))
            return
        emb, rejects, _ = embed_checkpoint(checkpoint, frame, out=embeddings_path(out), top_classes=top_classes,
                                           dtype=dtype, image_size=image_size, max_side=max_side,
                                           batch_size=batch_size, workers=workers,
                                           device=device, overwrite=overwrite, runtime=runtime, threads=threads)
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        _fail(err)
    path = embeddings_path(out)
    typer.echo(json_text({"embeddings": str(path), "rows": len(emb), "dim": int(emb.vectors.shape[1]),
                           "ids": str(sidecar(path, "ids.csv")), "rejects": len(rejects),
                           "rejects_file": str(sidecar(path, "rejects.csv"))}))


@app.command("embed-merge")
def embed_merge(
    folder: Path = typer.Argument(..., help="the --out folder of landmark embed --shard i/n"),
    out: Path = typer.Option(..., help="NAME.npy to write (+ NAME.ids.csv, NAME.rejects.csv, NAME.json)"),
    overwrite: bool = typer.Option(False, help="replace NAME.npy and its side files"),
) -> None:
    """Merge the finished shards of landmark embed --shard into one embeddings file.

    One part is in memory at a time; then: landmark index build --embeddings NAME.npy.
    """
    from .io import embedding_files, embeddings_path
    _refuse_overwrite(embedding_files(embeddings_path(out)), overwrite)   # every side file, before torch loads
    from .retrieval.shards import merge_shards
    try:
        result = merge_shards(folder, out, overwrite=overwrite)
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        _fail(err)
    typer.echo(json_text(result))


_PRESET_HELP = (f"retrieval settings: a preset ({', '.join(retrieval_presets())}) or a YAML file with index, "
                f"knn and verify sections; the flags below override it")


def _retrieval_settings(preset: Optional[str], **sections: dict) -> RetrievalConfig:
    """``--preset`` (or the library's defaults) with the flags that were given on top
    (``sections``: ``index``/``knn``/``verify`` -> {field: flag value or None})."""
    from .retrieval.config import load_retrieval_config
    given = {name: {k: v for k, v in fields.items() if v is not None} for name, fields in sections.items()}
    try:   # errors are one line, as the training config's: "invalid ...: index.kind: ... (got 'x'); knn.k: ..."
        return load_retrieval_config(preset, {name: fields for name, fields in given.items() if fields})
    except (FileNotFoundError, ValueError) as err:
        _fail(err)


def _default(value) -> str:
    return f"default {'off' if value is None else value}, or the preset's"


_INDEX, _KNN = _RETRIEVAL.index, _RETRIEVAL.knn

# The query-embedding options `knn` and `retrieve` share (one declaration each; defaults stay the library's).
_BatchOption = Annotated[int, typer.Option(min=1, help=_BATCH_HELP)]
_WorkersOption = Annotated[int, typer.Option(min=0, help=_WORKERS_HELP)]
_DeviceOption = Annotated[Optional[str], typer.Option(help=_DEVICE_HELP)]
_OverwriteQueriesOption = Annotated[bool, typer.Option(help="replace --out and its query embeddings")]
_RuntimeOption = Annotated[str, typer.Option(help=_RUNTIME_HELP)]
_ThreadsOption = Annotated[Optional[int], typer.Option(min=1, help=_THREADS_HELP)]


@index_app.command("build")
def index_build(
    out: Path = typer.Option(..., help="index folder to create (index.faiss, items.csv, meta.json)"),
    checkpoint: Optional[list[Path]] = typer.Option(None, help="model that embeds --data/--images; repeat for an "
                                                    "ensemble: their descriptors concatenated (docs/retrieval.md)"),
    data: Optional[list[Path]] = typer.Option(None, metavar="DIR", help="labelled GLDv2 folder (train.csv) or class "
                                              "tree; repeat for several folders as one set"),
    images: Optional[Path] = typer.Option(None, help="folder/CSV of images of one landmark (with --label), or, "
                                          "without --label, an archive of unlabelled photos: an index for landmark "
                                          "retrieve only"),
    label: Optional[str] = typer.Option(None, help="landmark of every --images image, as people name it ('India "
                                        "Gate': id India_Gate, named India Gate)"),
    landmarks: Optional[str] = typer.Option(None, help="with --data: only these landmark ids, e.g. 0,1,2"),
    embeddings: Optional[Path] = typer.Option(None, help="or an embeddings .npy from landmark embed"),
    labels: Optional[Path] = typer.Option(None, help="with --embeddings: CSV id,landmark_id (without it and "
                                          "without landmark ids in its ids.csv: unlabelled photos)"),
    preset: Optional[str] = typer.Option(None, help=_PRESET_HELP),
    kind: Optional[str] = typer.Option(None, help=f"auto | flat | hnsw | hnswsq | ivf | ivfsq | ivfpq (auto: flat <100k, then "
                                                  f"ivf <2M, ivfsq, ivfpq as memory_gb allows; {_default(_INDEX.kind)})"),
    nlist: Optional[int] = typer.Option(None, min=0, help=f"IVF cells (0: ~4 sqrt(N); {_default(_INDEX.nlist)})"),
    nprobe: Optional[int] = typer.Option(None, min=1, help=f"IVF cells searched per query ({_default(_INDEX.nprobe)})"),
    pq_m: Optional[int] = typer.Option(None, min=1, help=f"IVF-PQ bytes per vector, divides the dimension "
                                                         f"({_default(_INDEX.pq_m)})"),
    hnsw_m: Optional[int] = typer.Option(None, min=2, help=f"HNSW links per node ({_default(_INDEX.hnsw_m)})"),
    ef_search: Optional[int] = typer.Option(None, min=1, help=f"HNSW search beam ({_default(_INDEX.ef_search)})"),
    image_size: Optional[int] = typer.Option(None, min=16, max=MAX_SIDE, help="pixels; default: the checkpoint's size"),
    max_side: Optional[int] = typer.Option(None, min=16, max=MAX_SIDE, help=_MAX_SIDE_HELP + "; queries follow "
                                           "the index (landmark retrieve, knn --scoring knn-vote)"),
    batch_size: int = typer.Option(BATCH_SIZE, min=1, help=_BATCH_HELP),
    workers: int = typer.Option(WORKERS, min=0, help=_WORKERS_HELP),
    device: Optional[str] = typer.Option(None, help=_DEVICE_HELP),
    overwrite: bool = typer.Option(False, help="replace an index in --out"),
) -> None:
    """Build a FAISS inner-product index over photos (unlabelled ones: for landmark retrieve only).

    Embeddings go to OUT/embeddings.npy."""
    _require(("--images", images), ("--embeddings", embeddings), ("--labels", labels),
             *(("--data", d) for d in data or []), *(("--checkpoint", c) for c in checkpoint or []))
    from .io import INDEX_FILES, embedding_files
    settings = _retrieval_settings(preset, index={"kind": kind, "nlist": nlist, "nprobe": nprobe, "pq_m": pq_m,
                                                  "hnsw_m": hnsw_m, "ef_search": ef_search})
    _refuse_overwrite([out / name for name in INDEX_FILES]
                      + (embedding_files(out / "embeddings.npy") if embeddings is None else []), overwrite)
    from .retrieval.index import unlabelled_note
    from .retrieval.pipeline import build_index, index_embeddings, source_names
    try:
        data = _data_source(data)
        emb, rejects, info = index_embeddings(checkpoint=checkpoint, embeddings=embeddings, labels=labels, data=data,
                                              images=images, landmarks=_landmark_list(landmarks), label=label,
                                              out=out / "embeddings.npy", image_size=image_size, max_side=max_side,
                                              batch_size=batch_size, workers=workers, device=device,
                                              overwrite=overwrite, params=settings.index, unlabelled=True)
        names = source_names(data=data, label=label if images is not None else None,
                             landmark_ids=emb.items["landmark_id"].unique() if "landmark_id" in emb.items else [])
        result = build_index(emb, out, params=settings.index, model_info=info, overwrite=overwrite, names=names)
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        _fail(err)
    if result.get("unlabelled"):   # photos without a landmark (--images without --label): landmark retrieve only
        _say(unlabelled_note(result["unlabelled"], result["count"]))
    typer.echo(json_text({**result, "rejects": len(rejects)}))


@index_app.command("add")
def index_add(
    index: Path = typer.Argument(..., help="index folder written by landmark index build"),
    checkpoint: Optional[list[Path]] = typer.Option(None, help="the model the index was built with (default: the "
                                                    "one(s) recorded in the index)"),
    data: Optional[list[Path]] = typer.Option(None, metavar="DIR", help="labelled GLDv2 folder or class tree to "
                                              "enrol; repeat for several folders"),
    images: Optional[Path] = typer.Option(None, help="folder/CSV of photos of one landmark (with --label); into an "
                                          "archive of unlabelled photos, more such photos (without --label)"),
    label: Optional[str] = typer.Option(None, help="landmark of every --images photo (new or known), as people name "
                                        "it: 'India Gate' is enrolled as the id India_Gate named India Gate"),
    landmarks: Optional[str] = typer.Option(None, help="with --data: only these landmark ids"),
    embeddings: Optional[Path] = typer.Option(None, help="or an embeddings .npy"),
    labels: Optional[Path] = typer.Option(None, help="with --embeddings: CSV id,landmark_id"),
    batch_size: int = typer.Option(BATCH_SIZE, min=1, help=_BATCH_HELP),
    workers: int = typer.Option(WORKERS, min=0, help=_WORKERS_HELP),
    device: Optional[str] = typer.Option(None, help=_DEVICE_HELP),
) -> None:
    """Enrol photos (of known or whole new landmarks) into an index without retraining anything."""
    _require(("index folder", index), ("--images", images), ("--embeddings", embeddings), ("--labels", labels),
             *(("--data", d) for d in data or []), *(("--checkpoint", c) for c in checkpoint or []))
    _require_index(index)
    from .data.names import display_name
    from .inference.recognizer import answer_changes
    from .retrieval.index import ENROL_UNLABELLED_FIX, LandmarkIndex, refuse_unlabelled
    from .retrieval.pipeline import (StagedEnrolment, add_unlabelled, enrol, index_embeddings, refuse_names_alike,
                                     source_names)
    from .retrieval.provenance import checkpoints_of, max_side_of
    try:
        data = _data_source(data)
        current = LandmarkIndex.load(index)
        archive = current.unlabelled > 0   # photos without a landmark: more such photos only (docs/retrieval.md)
        if archive and (label is not None or data or labels is not None):   # before any photo is embedded
            refuse_unlabelled(current.labels, "enrolment", fix=ENROL_UNLABELLED_FIX)
        info = current.meta.get("model", {})
        if not checkpoint and embeddings is None:
            checkpoint = checkpoints_of(info) or None   # every member of an ensemble's index
        if archive:
            with StagedEnrolment(index) as staged:
                emb, rejects, _ = index_embeddings(checkpoint=checkpoint, embeddings=embeddings, images=images,
                                                   out=staged.path,
                                                   image_size=None if max_side_of(info) else info.get("image_size"),
                                                   max_side=max_side_of(info), batch_size=batch_size, workers=workers,
                                                   device=device, expect=info, unlabelled=True)
                result = add_unlabelled(index, emb, saved=staged.saved if embeddings is None else None)
            typer.echo(json_text({**result, "rejects": len(rejects)}))
            return

        def names_alike(ids: list[str]) -> None:   # before any photo is embedded (seconds each)
            refuse_names_alike(current, landmark_ids=ids, checkpoint=checkpoint[0] if checkpoint else None,
                               names=source_names(data=data or None, landmark_ids=ids,
                                                  label=label if images is not None else None))
        # photos embedded under hidden names, named added-STAMP.npy once enrolled; refused: deleted
        with StagedEnrolment(index) as staged:   # a folder this user cannot write: refused here
            emb, rejects, _ = index_embeddings(checkpoint=checkpoint, embeddings=embeddings, labels=labels,
                                               data=data, images=images, landmarks=_landmark_list(landmarks),
                                               label=label, out=staged.path,
                                               image_size=None if max_side_of(info) else info.get("image_size"),
                                               max_side=max_side_of(info), batch_size=batch_size,
                                               workers=workers, device=device, expect=info, check=names_alike)
            names = source_names(data=data or None, label=label if images is not None else None,
                                 landmark_ids=emb.items["landmark_id"].unique())
            # what it changes for look-alikes: answered by one model's Recognizer (not for an ensemble's index)
            model = checkpoint[0] if checkpoint and len(checkpoint) == 1 else None
            changes = answer_changes(model, device=device) if model is not None and model.is_file() else None
            # staged.saved: named as soon as the index takes photos from them (a later Ctrl-C keeps them)
            result = enrol(index, emb, names=names, changes=changes,
                           saved=staged.saved if embeddings is None else None)
    except (FileNotFoundError, FileExistsError, PermissionError, ValueError) as err:
        _fail(err)
    for lid, cover in result["landmarks"].items():   # how well each is covered, in words (JSON on stdout)
        if "summary" in cover:
            _say(f"{display_name(lid, (names or {}).get(lid))}: {cover['summary']}")
    typer.echo(json_text({**result, "rejects": len(rejects)}))


@app.command()
def knn(
    checkpoint: Path = typer.Argument(..., help="the model the index was built with (.pt, or its .onnx "
                                               "export)"),
    index: Path = typer.Option(..., help="index folder (landmark index build)"),
    images: Path = typer.Option(..., help="query folder, CSV with an id column, or query embeddings .npy"),
    out: Path = typer.Option(Path("submission.csv"), help="Kaggle submission to write (id,landmarks)"),
    scoring: str = typer.Option(KNN_SCORING, help=f"{' | '.join(KNN_SCORINGS)}: reference = the one scoring path (the "
                                "answers of predict, recognize and the service); knn-vote = the kNN vote, an "
                                "alternative kept for benchmarks, whose settings are the options below"),
    preset: Optional[str] = typer.Option(None, help=_PRESET_HELP + " (--scoring knn-vote)"),
    k: Optional[int] = typer.Option(None, min=1, help=f"neighbours that vote ({_default(_KNN.k)})"),
    p: Optional[float] = typer.Option(None, help=f"vote weight = similarity ** p ({_default(_KNN.p)})"),
    combine: Optional[float] = typer.Option(None, min=0.0, max=1.0, help="classifier weight w: score = (1-w) knn + "
                                            f"w softmax (0 = kNN only; {_default(_KNN.classifier_weight)})"),
    nonlandmarks: Optional[Path] = typer.Option(None, help="folder (or .npy) of non-landmark photos: penalty"),
    nonlandmark_weight: Optional[float] = typer.Option(None, help="lambda of the non-landmark penalty "
                                                       f"({_default(_KNN.nonlandmark_weight)})"),
    nonlandmark_k: Optional[int] = typer.Option(None, min=1, help="non-landmark neighbours averaged in the penalty "
                                                f"({_default(_KNN.nonlandmark_k)})"),
    reject_below: Optional[float] = typer.Option(None, help="no prediction for queries scoring below this "
                                                 f"({_default(_KNN.reject_below)})"),
    verify_top: Optional[int] = typer.Option(None, min=0, help="re-rank by RANSAC inliers of the top-N neighbours "
                                             f"(0 = off; {_default(_VERIFY.top)})"),
    min_inliers: Optional[int] = typer.Option(None, min=0, help="with --verify-top: queries below this are ranked "
                                              f"last ({_default(_VERIFY.min_inliers)})"),
    verify_cache: Optional[Path] = typer.Option(None, help="local-feature cache (default OUT.local_features)"),
    batch_size: _BatchOption = BATCH_SIZE,
    workers: _WorkersOption = WORKERS,
    device: _DeviceOption = None,
    overwrite: _OverwriteQueriesOption = False,
    runtime: _RuntimeOption = DEFAULT_RUNTIME,
    threads: _ThreadsOption = None,
) -> None:
    """Recognise landmarks against an index; writes a Kaggle submission.

    By default the answers of predict, recognize and the service (--scoring reference: the
    classifier's answer confirmed by the index's photos, enrolled landmarks by their photos).
    --scoring knn-vote votes by the nearest photos instead (docs/retrieval.md), with the
    options from --preset on.  Also writes OUT.answers.csv (id, landmark_id, score, name,
    verdict: the name or "no landmark"), OUT.rejects.csv and, with knn-vote,
    OUT.queries.npy (query embeddings) and, with --nonlandmarks, OUT.nonlandmarks.npy.
    """
    if scoring not in KNN_SCORINGS:
        _fail(ValueError(f"--scoring {scoring!r}: choose one of {', '.join(KNN_SCORINGS)}"))
    knn_flags = {"k": k, "p": p, "classifier_weight": combine, "nonlandmark_k": nonlandmark_k,
                 "nonlandmark_weight": nonlandmark_weight, "reject_below": reject_below}
    settings = _retrieval_settings(preset, knn=knn_flags,
                                   verify={"top": verify_top, "min_inliers": min_inliers})
    voting = scoring == "knn-vote"
    work = out.with_suffix("")
    answers_file, rejects_file = (out.with_name(out.stem + suffix) for suffix in (".answers.csv", ".rejects.csv"))
    from .io import embedding_files
    _refuse_overwrite([out, rejects_file, answers_file]
                      + (embedding_files(f"{work}.queries") if voting and not str(images).endswith(".npy") else [])
                      + (embedding_files(f"{work}.nonlandmarks") if voting and nonlandmarks
                         and not str(nonlandmarks).endswith(".npy") else []), overwrite)
    _require(("--index", index), ("--images", images), ("--nonlandmarks", nonlandmarks))  # before any query is embedded
    vote_flags = [flag for flag, value in (("--preset", preset), ("--k", k), ("--p", p), ("--combine", combine),
                                           ("--nonlandmarks", nonlandmarks), ("--nonlandmark-weight", nonlandmark_weight),
                                           ("--nonlandmark-k", nonlandmark_k), ("--reject-below", reject_below),
                                           ("--verify-top", verify_top), ("--min-inliers", min_inliers),
                                           ("--verify-cache", verify_cache)) if value is not None]
    if vote_flags and not voting:
        one = len(vote_flags) == 1
        _fail(ValueError(f"{', '.join(vote_flags)} {'is an option' if one else 'are options'} of the kNN vote: add "
                         f"--scoring knn-vote, or leave {'it' if one else 'them'} out (the default scoring, reference, "
                         "answers as predict and recognize do)"))
    from .data import write_rejects
    from .data.kaggle import write_submission
    from .inference.predict import knn_predict
    try:
        predictions, rejects, result = knn_predict(checkpoint, index, images=images, scoring=scoring,
                                                   work=work if voting else None, config=settings if voting else None,
                                                   nonlandmarks=nonlandmarks, verify_cache=verify_cache,
                                                   batch_size=batch_size, workers=workers, device=device,
                                                   overwrite=overwrite, runtime=runtime, threads=threads)
        write_submission(predictions, out)
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        _fail(err)
    predictions.to_csv(answers_file, index=False)
    write_rejects(rejects, rejects_file)
    typer.echo(json_text({"submission": str(out), "answers": str(answers_file), "scoring": scoring,
                           "images": len(predictions), "rejects": len(rejects),
                           "rejects_file": str(rejects_file),
                           "predicted": int((predictions["landmark_id"] != "").sum()),
                           "verification_failures": len(result.failures or []) if result is not None else 0}))


_RETRIEVE = _RETRIEVAL.retrieve


@app.command()
def retrieve(
    queries: Path = typer.Argument(..., help="query photos: a folder (recursive), a CSV with an id column, one photo, "
                                             "or query embeddings .npy of the index's model"),
    index: Path = typer.Option(..., help="index folder (landmark index build)"),
    out: Path = typer.Option(Path("retrieval.csv"), help="Kaggle retrieval submission to write (id,images)"),
    checkpoint: Optional[list[Path]] = typer.Option(None, help="the model the index was built with (default: the "
                                                    "one(s) recorded in the index)"),
    preset: Optional[str] = typer.Option(None, help=_PRESET_HELP),
    top_k: Optional[int] = typer.Option(None, min=1, help=f"index photos per query ({_default(_RETRIEVE.top_k)})"),
    qe: Optional[int] = typer.Option(None, min=0, help="alpha-query expansion over this many nearest photos, then "
                                     f"a second search (0 = off; {_default(_RETRIEVE.qe)})"),
    qe_alpha: Optional[float] = typer.Option(None, min=0.0, help="alpha-QE weight exponent "
                                             f"({_default(_RETRIEVE.qe_alpha)})"),
    dba: Optional[int] = typer.Option(None, min=0, help="database-side augmentation over this many nearest index "
                                      f"photos, computed at search time (0 = off; {_default(_RETRIEVE.dba)})"),
    diffusion: Optional[int] = typer.Option(None, min=0, help="kNN-graph diffusion over the index with this many "
                                            f"neighbours per photo (0 = off; {_default(_RETRIEVE.diffusion)})"),
    rerank: Optional[int] = typer.Option(None, min=0, help="re-rank this many first photos by local-feature inliers "
                                         "(ALIKED, needs the local extra; features cached in OUT.local_features/; "
                                         f"0 = off; {_default(_RETRIEVAL.local.top)})"),
    as_json: bool = typer.Option(False, "--json", help="print every query's photos (ids, paths, scores) as JSON"),
    batch_size: _BatchOption = BATCH_SIZE,
    workers: _WorkersOption = WORKERS,
    device: _DeviceOption = None,
    overwrite: _OverwriteQueriesOption = False,
    runtime: _RuntimeOption = DEFAULT_RUNTIME,
    threads: _ThreadsOption = None,
) -> None:
    """For each query photo, the index photos most similar to it, most similar first.

    Writes OUT (Kaggle retrieval submission: id,images with space-separated ids, scored by
    landmark evaluate OUT --solution retrieval_solution.csv), OUT.rejects.csv and, for photos,
    OUT.queries.npy.
    """
    settings = _retrieval_settings(preset, retrieve={"top_k": top_k, "qe": qe, "qe_alpha": qe_alpha, "dba": dba,
                                                     "diffusion": diffusion}, local={"top": rerank})
    work = out.with_suffix("")
    rejects_file = out.with_name(out.stem + ".rejects.csv")
    from .io import embedding_files
    _refuse_overwrite([out, rejects_file] + (embedding_files(f"{work}.queries") if not str(queries).endswith(".npy")
                                             else []), overwrite)
    _require(("--index", index), ("QUERIES", queries))
    from .data import write_rejects
    from .data.kaggle import write_retrieval_submission
    from .retrieval.pipeline import retrieval_answers, retrieval_rankings, retrieve as run_retrieve
    try:
        found, rejects = run_retrieve(index, queries, work=work, checkpoint=checkpoint, config=settings.retrieve,
                                      local=settings.local, batch_size=batch_size, workers=workers, device=device, overwrite=overwrite,
                                      runtime=runtime, threads=threads)
        unreadable = {r.id for r in rejects}
        rankings = retrieval_rankings(found)
        write_retrieval_submission(rankings, out)
    except (FileNotFoundError, FileExistsError, ValueError, ImportError) as err:
        _fail(err)
    write_rejects(rejects, rejects_file)
    if as_json:
        typer.echo(json_text(retrieval_answers(found), indent=2))
        return
    typer.echo(json_text({"submission": str(out), "queries": len(rankings), "rejects": len(unreadable),
                           "rejects_file": str(rejects_file), "top_k": settings.retrieve.top_k}))


# --- recognize, serve: the Recognizer on the terminal and over HTTP ---
@app.command()
def recognize(
    photos: list[Path] = typer.Argument(..., help="photos to recognise (any format Pillow reads)"),
    model: Path = typer.Option(..., "--model", "-m", help="run folder (its checkpoints/best.pt), a .pt file, or a "
                                                          ".onnx export (landmark export)"),
    index: Optional[Path] = typer.Option(None, help="index folder (landmark index build): reference photos that "
                                         "confirm answers, kNN for enrolled landmarks (default: the run's RUN/index)"),
    nonlandmarks: Optional[Path] = typer.Option(None, help="folder or .npy of photos without landmarks: penalty"),
    top_k: int = typer.Option(TOP_K, min=1, help="alternatives (and nearest reference photos) per photo"),
    threshold: Optional[float] = typer.Option(None, help="'no landmark' below this score (default: the model's)"),
    tta: int = typer.Option(TTA, min=1, max=10, help="test-time voting over K crops"),
    as_json: bool = typer.Option(False, "--json", help="print the answers as a JSON array"),
    explain: Optional[Path] = typer.Option(None, help="folder for <n>_<photo>.saliency.png (.matches.png with --index)"),
    device: Optional[str] = typer.Option(None, help=_DEVICE_HELP),
    runtime: str = typer.Option(DEFAULT_RUNTIME, help=_RUNTIME_HELP),
    threads: Optional[int] = typer.Option(None, min=1, help=_THREADS_HELP),
    overwrite: bool = typer.Option(False, help="replace pictures in --explain"),
) -> None:
    """Name the landmark in each photo: one line per photo, or JSON with alternatives.

    "photo.jpg  Colosseum  0.93",
    or "photo.jpg  no landmark (best: Petra 0.12 < 0.40)".
    Unreadable photos are reported on stderr (exit code 1 when any); the
    others are answered.
    """
    _require(("--model", model), ("--index", index), ("--nonlandmarks", nonlandmarks))
    missing = [p for p in photos if not p.is_file()]
    if missing:
        first = missing[0]
        kind = "is a folder: pass the photos in it" if first.is_dir() else \
            "is not a regular file" if first.exists() else "does not exist"
        _fail(FileNotFoundError(f"photo {first} {kind}" + (f" (and {len(missing) - 1} more not readable)"
                                                            if len(missing) > 1 else "")))
    if explain is not None and explain.exists() and not explain.is_dir():
        _fail(ValueError(f"--explain {explain} is a file; give a folder for the pictures"))
    if explain is not None:
        from .io import explain_files
        _refuse_overwrite([f for pair in explain_files(explain, photos) for f in pair], overwrite)
    try:
        check_threshold(threshold)
    except ValueError as err:
        _fail(err)
    if explain is not None and model.suffix.lower() == ".onnx":
        _fail(ValueError("--explain computes saliency with PyTorch gradients: give the .pt checkpoint or its run "
                         "folder (its export still answers)"))
    from .data import ImageError
    from .inference.answers import decode
    from .inference.instant import open_recognizer   # an export answers without torch (docs/runtime.md)
    try:
        rec = open_recognizer(model, index=index, nonlandmarks=nonlandmarks, threshold=threshold, device=device,
                              runtime=runtime, threads=threads, tta=tta, explain=explain is not None)
    except (FileNotFoundError, ValueError) as err:
        _fail(err)
    good, errors = [], []
    for k, path in enumerate(photos):
        try:
            good.append((k, path, decode(path, draft=rec.draft(tta))))   # the pixels predict decodes
        except ImageError as err:
            errors.append({"source": str(path), "error": str(err)})
    answers = rec.recognize([img for _, _, img in good], top_k=top_k, tta=tta,
                            sources=[str(p) for _, p, _ in good]) if good else []
    if explain is not None:
        _write_explanations(rec, good, answers, explain, photos=photos)
    if as_json:
        typer.echo(json_text([a.model_dump() for a in answers] + errors, indent=2))
    else:
        for a in answers:
            typer.echo(a.line())
    for e in errors:
        _say(f"{e['source']}  unreadable: {e['error']}", fg=typer.colors.RED)
    if errors:
        raise typer.Exit(1)


@app.command()
def tag(
    photos: list[Path] = typer.Argument(..., help="photos and folders of photos (folders walked recursively)"),
    model: Path = typer.Option(..., "--model", "-m", help="run folder (its checkpoints/best.pt), a .pt file, or a "
                                                          ".onnx export (landmark export)"),
    index: Optional[Path] = typer.Option(None, help="index folder (landmark index build / index add): reference "
                                         "photos and enrolled landmarks, as recognize --index (default: the run's "
                                         "RUN/index)"),
    in_place: bool = typer.Option(False, "--in-place", help="write into the photos' own XMP instead of "
                                  "photo.jpg.xmp sidecars (what Lightroom reads for JPEG; docs/tagging.md)"),
    names: Optional[Path] = typer.Option(None, help="CSV landmark_id,name: names to write instead of the run's"),
    threshold: Optional[float] = typer.Option(None, help="'no landmark' below this score (default: the model's)"),
    batch_size: int = typer.Option(TAG_BATCH, min=1, help=_BATCH_HELP),
    device: Optional[str] = typer.Option(None, help=_DEVICE_HELP),
    runtime: str = typer.Option(DEFAULT_RUNTIME, help=_RUNTIME_HELP),
) -> None:
    """Write the landmark of each photo where photo software reads it (XMP sidecars photo.jpg.xmp).

    Keywords dc:subject and lr:hierarchicalSubject "Landmarks|Name", and score and model in the
    landmark: namespace, merged with any sidecar already there.  Photos already tagged by this
    model and index state are skipped, so a stopped run resumes (an enrolment re-answers them).  Ends with a summary (exit code 1 when a photo
    was unreadable); docs/tagging.md."""
    _require(("--model", model), ("--index", index), ("--names", names))
    for path in photos:
        if not path.exists():
            _fail(FileNotFoundError(f"{path} does not exist: give photos or folders of photos"))
    try:
        check_threshold(threshold)
    except ValueError as err:
        _fail(err)
    from .inference.tagging import tag as run_tag
    try:
        summary = run_tag(model, photos, index=index, in_place=in_place, threshold=threshold, names=names,
                          device=device, runtime=runtime, batch_size=batch_size)
    except (FileNotFoundError, ValueError, ImportError) as err:
        _fail(err)
    except KeyboardInterrupt:   # each sidecar is written whole: what is done stays done
        _say("stopped: the sidecars written so far are whole; run the same command again to tag the rest "
             "(photos already tagged by this model are skipped)")
        raise typer.Exit(130) from None
    for line in summary.lines():
        typer.echo(line)
    if summary.unreadable:
        raise typer.Exit(1)


def _write_explanations(rec, good: list, answers: list, folder: Path, photos: list[Path]) -> None:
    """``<k>_<stem>.saliency.png`` (and ``.matches.png``) per answered photo into ``folder``
    (``k``: the photo's position on the command line; names from :func:`landmark.io.explain_files`)."""
    from .io import explain_files
    from .reporting.explain import explain
    folder.mkdir(parents=True, exist_ok=True)
    names = explain_files(folder, photos)
    for (k, _, photo), answer in zip(good, answers):
        found = explain(rec, photo, answer=answer)
        saliency, matches = names[k]
        saliency.write_bytes(found.saliency_png)
        if found.matches_png is not None:
            matches.write_bytes(found.matches_png)


@app.command()
def serve(
    model: Path = typer.Argument(..., help="run folder (its checkpoints/best.pt), a .pt file, or a .onnx export "
                                          "(landmark export)"),
    index: Optional[Path] = typer.Option(None, help="index folder: kNN scores, nearest photos, enrolment (a run's "
                                         "own RUN/index is used for scores but never written: copy it to enrol)"),
    retrieval_index: Optional[Path] = typer.Option(None, help="index folder POST /v1/retrieve searches instead of "
                                                   "--index, embedding with the model(s) it records: one built "
                                                   "for retrieval (--max-side 448, several --checkpoint) or an "
                                                   "archive of unlabelled photos (docs/serving.md)"),
    nonlandmarks: Optional[Path] = typer.Option(None, help="folder or .npy of photos without landmarks: penalty"),
    host: str = typer.Option(_SERVE.host, help="address to listen on (0.0.0.0: every interface)"),
    port: int = typer.Option(_SERVE.port, help="port to listen on (0: a free one, shown at start-up)"),
    token: Optional[str] = typer.Option(None, envvar="LANDMARK_TOKEN", show_envvar=True,
                                        help="password for enrolment (POST /v1/landmarks/ID/images); visible ASCII, "
                                             "no spaces; none: enrolment off. Prefer LANDMARK_TOKEN or --token-file: "
                                             "an option shows in ps"),
    token_file: Optional[Path] = typer.Option(None, help="file whose first line is the enrolment token"),
    threshold: Optional[float] = typer.Option(None, help="'no landmark' below this score, 0 to 1 (default: the "
                                              "model's)"),
    max_mb: float = typer.Option(_SERVE.max_mb, help="largest request body in MB"),
    max_pixels: int = typer.Option(_SERVE.max_pixels, help="largest image (width x height) decoded"),
    batch_window_ms: float = typer.Option(_SERVE.batch_window_ms, help="wait this long to batch concurrent requests "
                                          f"(at most {MAX_BATCH_WINDOW_MS:g})"),
    memory_budget_mb: float = typer.Option(_SERVE.memory_budget_mb, help="memory the requests in flight may hold "
                                           "(bodies and decoded pixels); beyond it: 503 with Retry-After"),
    decoders: int = typer.Option(_SERVE.decoders, help="threads that decode uploads"),
    threads: Optional[int] = typer.Option(None, help="CPU threads of one forward pass, torch or ONNX Runtime "
                                          "(default: torch's, all cores); 1 on a machine shared with other work"),
    device: Optional[str] = typer.Option(None, help=_DEVICE_HELP),
    runtime: str = typer.Option(DEFAULT_RUNTIME, help=_RUNTIME_HELP),
) -> None:
    """Serve the recogniser over HTTP (FastAPI + uvicorn): API, OpenAPI page at /docs, web page at /.

    Anyone who reaches the port may recognise photos; only token holders may enrol, and only
    into --index (docs/serving.md: threat model and limits).
    """
    _require(("MODEL", model), ("--index", index), ("--retrieval-index", retrieval_index),
             ("--nonlandmarks", nonlandmarks))
    _require_index(index, "--index")   # before the model loads
    _require_index(retrieval_index, "--retrieval-index")
    from .serving.server import serve as run_server   # settings and the port are checked before torch loads
    try:
        run_server(model, index=index, retrieval_index=retrieval_index, nonlandmarks=nonlandmarks, token=token,
                   token_file=token_file, device=device,
                   runtime=runtime, host=host, port=port, threshold=threshold, max_mb=max_mb, max_pixels=max_pixels,
                   batch_window_ms=batch_window_ms, memory_budget_mb=memory_budget_mb, decoders=decoders,
                   threads=threads, announce=lambda line: typer.echo(line, err=True))
    except (FileNotFoundError, ValueError) as err:
        _fail(err)


def main() -> None:
    """Entry point: a bad file, folder, config or argument that the library reports with an
    exception ends in one ``error: ...`` line and exit code 2, not a traceback."""
    from .memory import keep_freed_memory
    from .threads import spin_less
    keep_freed_memory()   # eager PyTorch on the CPU: freed activations stay mapped (memory.py)
    spin_less()           # before torch loads: idle OpenMP threads leave the cores to decoding (threads.py)
    try:
        app()
    except Exception as err:  # noqa: BLE001 -- only the user errors below; anything else re-raised
        if not isinstance(err, _user_errors()):
            raise
        typer.secho(f"error: {type(err).__name__}: {err}", fg=typer.colors.RED, err=True)
        raise SystemExit(2) from None


def _user_errors() -> tuple[type[Exception], ...]:
    """Exception types that mean bad input.  Those of modules not yet imported cannot have
    been raised, so they are looked up in ``sys.modules`` instead of importing torch or
    yaml just to name them (``landmark --help`` stays fast)."""
    import pickle
    import sys
    errors: list[type[Exception]] = [OSError, ValueError, KeyError, pickle.UnpicklingError]
    for module, name in (("yaml", "YAMLError"), ("landmark.models.weights", "WeightsError"),
                         ("landmark.data.images", "ImageError")):
        if module in sys.modules:
            errors.append(getattr(sys.modules[module], name))
    return tuple(errors)


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
