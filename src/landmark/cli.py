"""Command line: a thin shell over the library (``landmark --help``)."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Landmark recognition: train, predict and evaluate (GLDv2 / Kaggle formats).")


def _fail(err: Exception) -> None:
    typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _refuse_overwrite(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        _fail(FileExistsError(f"{path} exists; pass --overwrite to replace it, or choose another --out"))


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="log each epoch")) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s")


@app.command()
def train(
    data: Optional[Path] = typer.Option(None, help="GLDv2 folder (train.csv, train/a/b/c/ID.jpg) or folder-per-class tree"),
    config: str = typer.Option("fast", help="config YAML path or preset name: fast, xception, vgg16"),
    out: Optional[Path] = typer.Option(None, help="run folder to create (must be empty or absent)"),
    resume: Optional[Path] = typer.Option(None, help="continue the interrupted run in this folder"),
    weights: Optional[str] = typer.Option(None, help="override model.weights: imagenet | none | PATH"),
    epochs: Optional[int] = typer.Option(None, help="override: epochs of every stage (quick trials)"),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:1 ... (default: cuda if available)"),
) -> None:
    """Train a landmark classifier in stages; writes checkpoints, metrics and curves to --out."""
    from .config import load_config
    from .models import WeightsError
    from .training import RunExistsError
    from .training import resume as resume_run
    from .training import train as train_run
    try:
        if resume is not None:
            best = resume_run(resume, device)
        else:
            if data is None or out is None:
                _fail(ValueError("give --data and --out (or --resume RUN_DIR)"))
            cfg = load_config(config, {"model": {"weights": weights}} if weights else None)
            if epochs:
                for stage in cfg.stages:
                    stage.epochs = epochs
            best = train_run(cfg, data, out, device)
    except (RunExistsError, FileNotFoundError, ValueError, WeightsError) as err:
        _fail(err)
    run_dir = best.parent.parent
    test = json.loads((run_dir / "test_metrics.json").read_text())
    typer.echo(json.dumps({"best_checkpoint": str(best), "held_out_test": test,
                           "curves": str(run_dir / "curves.png"), "rejects": str(run_dir / "rejects.csv")}, indent=2))


@app.command()
def predict(
    checkpoint: Path = typer.Argument(..., help="a .pt file written by landmark train"),
    images: Path = typer.Option(..., help="folder of images (searched recursively) or CSV with an id column"),
    out: Path = typer.Option(Path("submission.csv"), help="Kaggle submission to write (id,landmarks)"),
    tta: int = typer.Option(1, help="test-time voting over K crops (1 = none, 10 = TenCrop)"),
    batch_size: int = typer.Option(32, help="images per forward pass (divided by --tta)"),
    workers: int = typer.Option(2, help="image decoding processes"),
    device: Optional[str] = typer.Option(None),
    overwrite: bool = typer.Option(False, help="replace --out if it exists"),
) -> None:
    """Predict one landmark per image; unreadable images get an empty row and a line in OUT.rejects.csv."""
    from .data.kaggle import write_submission
    from .inference import predict as run_predict
    from .training.prepare import write_rejects
    _refuse_overwrite(out, overwrite)
    try:
        predictions, rejects = run_predict(checkpoint, images, tta, batch_size, workers, device)
    except (FileNotFoundError, ValueError) as err:
        _fail(err)
    write_submission(predictions, out)
    rejects_file = out.with_name(out.stem + ".rejects.csv")
    write_rejects(rejects, rejects_file)
    typer.echo(json.dumps({"submission": str(out), "images": len(predictions), "rejects": len(rejects),
                           "rejects_file": str(rejects_file)}))


@app.command()
def evaluate(
    submission: Path = typer.Argument(..., help="Kaggle submission (id,landmarks)"),
    solution: Path = typer.Option(..., help="recognition_solution.csv (id,landmarks,Usage)"),
    out: Optional[Path] = typer.Option(None, help="folder for per_class_accuracy.csv/.png and metrics.json"),
    usage: Optional[str] = typer.Option(None, help="score only Public or Private rows"),
) -> None:
    """Print GAP, GAP over landmark queries only, and accuracy as one JSON object."""
    from .evaluation import evaluate as run_evaluate
    try:
        result = run_evaluate(submission, solution, out, usage)
    except (FileNotFoundError, ValueError) as err:
        _fail(err)
    typer.echo(json.dumps(result))


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    app()
