"""Files a command reads and writes: CSVs that name themselves in errors, outputs that are
never overwritten without asking, multi-file artifacts a reader can tell finished from
interrupted, and a lock for run folders.

The lowest layer of the package: it imports nothing from ``landmark``.
"""
from __future__ import annotations

import errno
import json
import os
import stat
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, TypeVar

if TYPE_CHECKING:   # pandas is imported where a CSV is read: the torch-free recogniser reads index records without it
    import pandas as pd

LOCK_FILE = ".lock"
T = TypeVar("T")


def read_csv(path: str | Path, **kwargs) -> pd.DataFrame:
    """``pandas.read_csv`` whose errors name the file.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not UTF-8 text, is empty, or is not parseable CSV.
    """
    import pandas as pd
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


class NpyRows:
    """A new ``.npy`` of ``shape`` (rows x width) filled by positional writes (``os.pwrite``).

    Writing through a memory map of the whole file keeps every written page in the writer's
    resident memory (4.1 GB for 1.6M x 1280 float16 embeddings, 8 GB for GLDv2-clean's probe
    features: docs/scale.md); here only the rows being written are in memory.  The ``.npy``
    header and a sparse file of the full size are made first (``numpy.lib.format.open_memmap``),
    so a reader may map it at any time.

    Args:
        path: the file to create (replaced if it exists).
        shape: ``(rows, width)``; rows is the most that will be written.
        dtype: the stored dtype (``float16``, ``float32``).
    """

    def __init__(self, path: str | Path, shape: tuple[int, int], dtype):
        import numpy as np
        self.path, self.shape, self.dtype = Path(path), (int(shape[0]), int(shape[1])), np.dtype(dtype)
        np.lib.format.open_memmap(self.path, mode="w+", dtype=self.dtype, shape=self.shape)
        self.offset = int(np.load(self.path, mmap_mode="r", allow_pickle=False).offset)
        self.row_bytes = self.shape[1] * self.dtype.itemsize
        self.file = open(self.path, "r+b")

    def write(self, start: int, rows) -> None:
        """Store ``rows`` ``[B, width]`` (cast to the file's dtype) at rows ``start .. start + B``.

        Raises:
            ValueError: rows of another width, or past the file's last row.
        """
        import numpy as np
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        if rows.ndim != 2 or rows.shape[1] != self.shape[1] or not 0 <= start <= self.shape[0] - len(rows):
            raise ValueError(f"{self.path}: rows {start}..{start + len(rows)} of shape {rows.shape} do not fit "
                             f"a file of shape {self.shape}")
        data, at = memoryview(rows.tobytes()), self.offset + start * self.row_bytes
        while data:   # pwrite may write less than asked
            done = os.pwrite(self.file.fileno(), data, at)
            data, at = data[done:], at + done

    def close(self) -> None:
        """Flush and close the file (idempotent)."""
        if not self.file.closed:
            self.file.close()


def temp_path(path: str | Path) -> Path:
    """A temporary name beside ``path`` for writing it whole before :func:`commit`
    (``.NAME.tmp<pid>``: hidden, unique to this process, same file system)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def clear_temps(paths: Iterable[str | Path], keep: Iterable[str | Path] = ()) -> None:
    """Delete the temporary files (:func:`temp_path`, any process) and the versions
    (:func:`commit`) of ``paths`` that a killed writer left behind, except those in ``keep``
    (the files a completion record still names: :func:`artifact_files`)."""
    keep = {Path(k).name for k in keep}
    for path in map(Path, paths):
        for pattern in (f".{path.name}.tmp*", f".{path.name}.v*", f".{path.name}.ln*"):
            for tmp in path.parent.glob(pattern):
                if tmp.name not in keep:
                    tmp.unlink(missing_ok=True)


def fsync_file(path: str | Path) -> None:
    """Flush a written file's data to the disk (before it is renamed into place)."""
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def fsync_dir(folder: str | Path) -> None:
    """Flush a folder's entries (renames, new files) to the disk."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit(files: Iterable[tuple[Path, Path]], marker: Path, record: dict,
           members: Iterable[str | Path] = ()) -> None:
    """Replace a multi-file artifact so that a crash at any step leaves the old or the new one.

    The completion record ``marker`` (a small JSON file, replaced atomically) is the pointer
    readers follow (:func:`artifact_files`); its ``files`` maps each file's final name to the
    name that holds it now.  Steps, each safe to be killed after:

    1. each finished temporary file is synced and renamed to a hidden version
       ``.FINAL.v<token>`` (the old record still names the old files);
    2. the record is replaced by the new one naming those versions and their sizes
       (``bytes``, checked by :func:`artifact_files`): *the* switch;
    3. each version is hard-linked over its final name (``os.link`` + ``os.replace``);
    4. the record is replaced by one naming the final names; the versions, the files of
       ``members`` the new artifact lacks, and leftovers of killed writers are removed.

    Writers of one artifact must hold its lock (:func:`folder_lock`); readers need none, but
    read the record again after opening the files and retry when it changed (:func:`read_artifact`).

    Args:
        files: ``(temporary, final)`` pairs, each temporary file completely written, in the
            folder of ``marker``.
        marker: the JSON record (e.g. ``meta.json``, ``NAME.json``).
        record: its content (``files`` and ``version`` are added).
        members: every file the artifact may have (optional side files): those not written
            now are deleted after the switch, so an old one never pairs with the new rows.
    """
    marker, files = Path(marker), [(Path(t), Path(f)) for t, f in files]
    folder = marker.parent
    token = f"{os.getpid()}-{time.time_ns()}"
    versions = []
    for tmp, final in files:
        fsync_file(tmp)
        version = final.with_name(f".{final.name}.v{token}")
        os.replace(tmp, version)
        versions.append((version, final))
    fsync_dir(folder)
    record = {k: v for k, v in record.items() if k not in ("files", "version", "bytes")}
    record["bytes"] = {f.name: v.stat().st_size for v, f in versions}
    write_text_atomic(marker, json.dumps({**record, "version": token,
                                          "files": {f.name: v.name for v, f in versions}}, indent=2))
    for version, final in versions:
        link = final.with_name(f".{final.name}.ln{os.getpid()}")
        link.unlink(missing_ok=True)
        os.link(version, link)
        os.replace(link, final)
    fsync_dir(folder)
    write_text_atomic(marker, json.dumps({**record, "version": token + "-final",
                                          "files": {f.name: f.name for _, f in versions}}, indent=2))
    written = {f.name for _, f in files}
    for member in map(Path, members):
        if member.name not in written:
            member.unlink(missing_ok=True)
    clear_temps([f for _, f in files] + list(map(Path, members)) + [marker])


def json_text(value, indent: int | None = None, **options) -> str:
    """JSON meant for people (printed by the CLI, ``metrics.json``, ``report.json``): names as they are
    written (``Sacré-Cœur``, not ``Sacr\\u00e9-C\\u0153ur``); still valid JSON, to be written as UTF-8."""
    return json.dumps(value, ensure_ascii=False, indent=indent, **options)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through a synced temporary file and a rename (never half written)."""
    path = Path(path)
    tmp = temp_path(path)
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def _read_regular(path: str | Path) -> bytes:
    """The bytes of ``path`` when it is a regular file, else ``b""`` (missing, a folder, or a
    FIFO or device that would block or never end: opened non-blocking, checked on the open file)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return b""
    with os.fdopen(fd, "rb") as f:
        return f.read() if stat.S_ISREG(os.fstat(fd).st_mode) else b""


def _json_object(data: bytes) -> dict | None:
    """``data`` as a JSON object, None when it is not one (damaged, or nested past the parser's depth)."""
    try:
        record = json.loads(data)
    except (ValueError, RecursionError):
        return None
    return record if isinstance(record, dict) else None


def read_record(marker: str | Path) -> dict | None:
    """The JSON completion record ``marker`` (None when missing, not a regular file, or unreadable)."""
    return _json_object(_read_regular(marker))


def _named_file(folder: Path, marker: Path, final: Path, name: object) -> Path:
    """The file a record names for ``final``: a plain file name in the record's own folder.

    Raises:
        ValueError: the name is not a string, names a path (a separator, ``.``, ``..``: a file
            outside the folder would be read), or names something that is not a regular file
            (a FIFO or device would block the reader or never end).
    """
    if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise ValueError(f"{marker} is not a valid record: it names {name!r} for {final.name} (a file name "
                         f"in {folder} is expected); write it again")
    path = folder / name
    if path.exists() and not path.is_file():
        raise ValueError(f"{path} is not a regular file ({marker} names it for {final.name}); write it again")
    return path


def artifact_files(marker: str | Path, record: dict, finals: Iterable[str | Path]) -> dict[str, Path | None]:
    """Where each of ``finals`` is held now, following the record's ``files`` (:func:`commit`):
    final name -> path, or None when the artifact has no such file.  A record without
    ``files`` (written before versions existed) names the final files themselves, those that exist.

    Raises:
        ValueError: a named file's size differs from the record's ``bytes`` (changed since it
            was written: truncated, appended to, or replaced by hand).
    """
    folder, names, sizes = Path(marker).parent, record.get("files"), record.get("bytes") or {}
    out = {}
    for final in map(Path, finals):
        if isinstance(names, dict):
            out[final.name] = _named_file(folder, Path(marker), final, names[final.name]) \
                if final.name in names else None
        else:
            out[final.name] = _named_file(folder, Path(marker), final, final.name) if final.exists() else None
        path, size = out[final.name], sizes.get(final.name) if isinstance(sizes, dict) else None
        if path is not None and size is not None and path.is_file() and path.stat().st_size != size:
            raise ValueError(f"{final} is damaged: {path.stat().st_size} bytes, {marker} says {size} (truncated "
                             "or replaced after it was written); write it again")
    return out


def read_artifact(marker: str | Path, read: Callable[[dict], T], tries: int = 5) -> T:
    """``read(record)`` of a multi-file artifact, consistent despite a concurrent :func:`commit`.

    The record is read before and after ``read`` (which opens the files the record names);
    when it changed, or a named file vanished meanwhile, ``read`` runs again.  A record that
    is not a JSON object reaches ``read`` as ``{}``.

    Raises:
        whatever ``read`` raises when the record did not change (the artifact is bad).
    """
    marker = Path(marker)
    for attempt in range(tries):
        before = _read_regular(marker)   # missing, a FIFO, damaged or not JSON: ``read`` refuses ``{}``
        record = _json_object(before) or {}
        try:
            out = read(record)
        except (FileNotFoundError, ValueError):
            after = _read_regular(marker)
            if after == before or attempt == tries - 1:
                raise
            continue
        after = _read_regular(marker)
        if after == before:
            return out
    return out


class LockedError(FileExistsError):
    """Another process holds the lock of a folder."""


@contextmanager
def folder_lock(folder: str | Path, wait: float = 0.0, name: str = LOCK_FILE) -> Iterator[Path]:
    """Hold an exclusive lock on ``folder/name`` (``fcntl.flock``) for the ``with`` block.

    The operating system releases the lock when the process ends, however it ends, so a
    stale lock file left by a killed run never blocks the next one.

    Args:
        wait: seconds to wait for another holder to finish (0: refuse at once).

    Raises:
        LockedError: another process holds it (after ``wait`` seconds).
    """
    import fcntl
    path = Path(folder) / name
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as err:
                if err.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    raise LockedError(f"{folder} is in use by another landmark process (it holds {path}); "
                                      f"wait for it to end, or choose another --out") from None
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield path
    finally:
        os.close(fd)  # releases the lock


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
