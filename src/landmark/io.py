"""Files a command reads and writes: CSVs that name themselves in errors, outputs that are
never overwritten without asking, multi-file artifacts a reader can tell finished from
interrupted, and a lock for run folders.

The lowest layer of the package: it imports nothing from ``landmark``.
"""
from __future__ import annotations

import errno
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

import pandas as pd

LOCK_FILE = ".lock"


def read_csv(path: str | Path, **kwargs) -> pd.DataFrame:
    """``pandas.read_csv`` whose errors name the file.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not UTF-8 text, is empty, or is not parseable CSV.
    """
    try:
        return pd.read_csv(path, **kwargs)
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start}); save it as UTF-8 CSV") from None
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path} is empty; a CSV with a header line is expected") from None
    except pd.errors.ParserError as err:
        raise ValueError(f"{path} is not a readable CSV ({' '.join(str(err).split())[:160]})") from None
    except IsADirectoryError:
        raise ValueError(f"{path} is a folder, not a CSV file") from None


def refuse_existing(paths: Iterable[str | Path], overwrite: bool = False) -> None:
    """Refuse, before any work, to write over files that exist (unless ``overwrite``).

    Args:
        paths: every file the command will write (main output and the files beside it).

    Raises:
        FileExistsError: one or more exist; the message lists them and says what to pass.
    """
    if overwrite:
        return
    taken = [str(p) for p in paths if Path(p).exists()]
    if taken:
        more = f" (and {len(taken) - 3} more)" if len(taken) > 3 else ""
        verb = "exists" if len(taken) == 1 else "exist"
        raise FileExistsError(f"{', '.join(taken[:3])}{more} {verb}; pass --overwrite to replace, "
                              f"or choose another --out (nothing was written)")


def temp_path(path: str | Path) -> Path:
    """A temporary name beside ``path`` for writing it whole before :func:`commit`
    (``.NAME.tmp<pid>``: hidden, unique to this process, same file system)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def clear_temps(paths: Iterable[str | Path]) -> None:
    """Delete the temporary files (:func:`temp_path`, any process) of ``paths`` that a killed
    writer left behind; they are never read."""
    for path in map(Path, paths):
        for tmp in path.parent.glob(f".{path.name}.tmp*"):
            tmp.unlink(missing_ok=True)


def commit(files: Iterable[tuple[Path, Path]], marker: Path, marker_text: str) -> None:
    """Move finished temporary files into place, the completion ``marker`` last.

    The old marker is removed first, so at every moment either the marker is absent
    (the artifact is unfinished and readers refuse it) or every file beside it belongs
    to the same finished write.

    Args:
        files: ``(temporary, final)`` pairs, each temporary file completely written.
        marker: the file whose presence says "finished" (a JSON sidecar).
        marker_text: its content, written atomically.
    """
    marker = Path(marker)
    marker.unlink(missing_ok=True)
    for tmp, final in files:
        os.replace(tmp, final)
    write_text_atomic(marker, marker_text)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename (never half written)."""
    tmp = temp_path(path)
    tmp.write_text(text)
    os.replace(tmp, path)


class LockedError(FileExistsError):
    """Another process holds the lock of a folder."""


@contextmanager
def folder_lock(folder: str | Path) -> Iterator[Path]:
    """Hold an exclusive lock on ``folder/.lock`` (``fcntl.flock``) for the ``with`` block.

    The operating system releases the lock when the process ends, however it ends, so a
    stale ``.lock`` file left by a killed run never blocks the next one.

    Raises:
        LockedError: another process holds it.
    """
    import fcntl
    path = Path(folder) / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno in (errno.EWOULDBLOCK, errno.EACCES):
                raise LockedError(f"{folder} is in use by another landmark process (it holds {path}); "
                                  f"wait for it to end, or choose another --out") from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield path
    finally:
        os.close(fd)  # releases the lock


# --- the files of each artifact: one place, light to import (the CLI checks them before torch) ---

#: files ``landmark evaluate --out DIR`` writes into DIR
EVALUATE_FILES = ("metrics.json", "per_class_accuracy.csv", "per_class_accuracy.png")
#: files of an index folder (``meta.json``, the completion marker, last)
INDEX_FILES = ("index.faiss", "items.csv", "meta.json")


def evaluate_files(out: str | Path) -> list[Path]:
    """Every file ``evaluate`` writes into the folder ``out``."""
    return [Path(out) / name for name in EVALUATE_FILES]


def embeddings_path(out: str | Path) -> Path:
    """The ``.npy`` file for ``out`` (adds the suffix when missing)."""
    out = Path(out)
    return out if out.suffix == ".npy" else out.with_name(out.name + ".npy")


def sidecar(path: str | Path, kind: str) -> Path:
    """``NAME.npy`` -> ``NAME.<kind>`` (``ids.csv``, ``rejects.csv``, ``classes.npz``, ``json``)."""
    return Path(path).with_suffix(f".{kind}")


def embedding_files(path: str | Path) -> list[Path]:
    """Every file an embeddings file ``NAME.npy`` consists of: the array and its side files."""
    path = embeddings_path(path)
    return [path] + [sidecar(path, kind) for kind in ("ids.csv", "rejects.csv", "classes.npz", "json")]



def explain_files(folder: str | Path, photos: Iterable[str | Path]) -> list[tuple[Path, Path]]:
    """``(saliency, matches)`` PNGs that ``recognize --explain FOLDER`` writes for each photo:
    ``<k>_<stem>.saliency.png`` / ``.matches.png``, ``k`` its position among the photos given."""
    folder = Path(folder)
    return [(folder / f"{k:03d}_{Path(p).stem}.saliency.png", folder / f"{k:03d}_{Path(p).stem}.matches.png")
            for k, p in enumerate(photos)]
