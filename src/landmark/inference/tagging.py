"""``landmark tag``: write what the recogniser saw where photo software reads it (XMP).

For each photo below the given files and folders (walked as it goes, never listed whole first)
the recogniser of ``landmark recognize`` (:func:`~landmark.inference.instant.open_recognizer`: the
torch-free one on a run with an ONNX export, else the PyTorch Recognizer) answers in batches, and the answer is
written to the photo's XMP **sidecar** ``photo.jpg.xmp`` (the name darktable and digiKam write
and Immich reads; docs/tagging.md), or with ``in_place=True`` into the photo's own XMP packet
(what Lightroom reads for JPEG/TIFF/DNG):

* ``dc:subject`` (keywords): the landmark's name (:func:`landmark.data.names.display_name`);
* ``lr:hierarchicalSubject``: ``Landmarks|<name>``;
* ``digiKam:TagsList``: ``Landmarks/<name>`` (digiKam's own tag tree; Immich reads it first);
* the product's namespace :data:`NAMESPACE` (prefix ``landmark``): ``name``, ``landmarkId``,
  ``score``, ``threshold``, ``verdict``, ``certainty`` (:mod:`landmark.inference.words`),
  ``scoring`` and ``model`` (the SHA-256 of the checkpoint, or of the checkpoint an ONNX
  export came from, and, when an index answers too, ``+index:`` and a short hash of its state:
  :func:`model_identity`).

A photo the recogniser finds no landmark in (``not sure`` included) gets only the product's
fields (verdict ``no landmark``, its score, and the best guess as ``bestGuess`` / ``bestGuessId``,
never as ``name`` / ``landmarkId``, which would read as the photo's landmark beside ``Verdict:
no landmark``): no keyword, but a record that this model has seen it.  A photo whose XMP already names this model (and index state) in
``landmark:model`` is skipped unread, so a run killed half-way resumes where it stopped; another model's earlier
keywords are replaced by this one's.  Every other field of an existing sidecar (keywords,
ratings, darktable's history, unknown namespaces) is kept: the XMP is read with exiv2
(https://exiv2.org, Python bindings ``exiv2`` on PyPI), changed, and written to a temporary
file beside it that replaces the old one (``os.replace``: a crash leaves the old or the new
sidecar, never half of one).  A sidecar exiv2 cannot read is left alone and the photo is
listed as unreadable.
"""
from __future__ import annotations

import logging
import os
import shutil
import stat
import sys
from collections import Counter
from pathlib import Path
from typing import Iterable, Iterator

from pydantic import BaseModel

from ..data.images import ImageError
from ..defaults import TAG_BATCH   # photos per forward pass of `landmark tag` (one home: defaults.py)
from ..io import fsync_dir, temp_path
from .answers import resolve_checkpoint

#: The product's XMP namespace and its prefix (``Xmp.landmark.*``).
NAMESPACE = "http://ns.landmark.dev/1.0/"
PREFIX = "landmark"
#: Parent of every hierarchical keyword written (``Landmarks|Colosseum``).
HIERARCHY_ROOT = "Landmarks"
#: File name endings walked as photos (lower case); other files are counted, not read.
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif",
                  ".heic", ".heif", ".avif")
#: The sidecar's ending: ``photo.jpg`` -> ``photo.jpg.xmp``.
SIDECAR_SUFFIX = ".xmp"

_SUBJECT, _HIER, _TAGS = "Xmp.dc.subject", "Xmp.lr.hierarchicalSubject", "Xmp.digiKam.TagsList"
_FIELDS = ("name", "landmarkId", "bestGuess", "bestGuessId", "score", "threshold", "verdict", "certainty", "scoring",
           "model")


class TagSummary(BaseModel):
    """What a :func:`tag_photos` run did.

    Attributes:
        tagged: photos that got the landmark's keywords.
        no_landmark: photos recognised as no landmark (``not sure`` included): product fields only.
        skipped: photos already tagged by this model and index state (their XMP names its identity).
        unreadable: ``(photo, reason)`` of each photo or sidecar that could not be read or written.
        not_photos: other files met on the way, counted by ending (``{".mp4": 3}``).
        not_entered: ``(folder, reason)`` of each folder not walked (:func:`walk_photos`: a link to
            a folder walked already, a broken link, a folder that cannot be read).
        landmarks: photos tagged per landmark name.
    """

    tagged: int = 0
    no_landmark: int = 0
    skipped: int = 0
    unreadable: list[tuple[str, str]] = []
    not_photos: dict[str, int] = {}
    not_entered: list[tuple[str, str]] = []
    landmarks: dict[str, int] = {}

    def lines(self) -> list[str]:
        """The summary as printed by ``landmark tag``."""
        out = [f"tagged {self.tagged}, no landmark {self.no_landmark}, skipped {self.skipped} "
               f"(already tagged by this model and index), unreadable {len(self.unreadable)}"]
        if self.landmarks:
            out.append("landmarks: " + ", ".join(f"{n} {c}" for n, c in
                                                 sorted(self.landmarks.items(), key=lambda x: (-x[1], x[0]))))
        if self.not_photos:
            out.append("not photos (left alone): " + ", ".join(f"{k or '(no ending)'} {v}"
                                                             for k, v in sorted(self.not_photos.items())))
        out += [f"unreadable: {p}: {why}" for p, why in self.unreadable]
        out += [f"not entered: {p}: {why}" for p, why in self.not_entered]
        return out


#: Folders a link is never followed into (the kernel's pseudo file systems): a link to /proc led,
#: through /proc/PID/cwd, into the working folder of every process on the machine.
SYSTEM_FOLDERS = ("/proc", "/sys", "/dev")


def sidecar_path(photo: str | Path) -> Path:
    """The sidecar of ``photo``: ``photo.jpg`` -> ``photo.jpg.xmp`` (docs/tagging.md)."""
    photo = Path(photo)
    return photo.with_name(photo.name + SIDECAR_SUFFIX)


def _is_our_temp(name: str) -> bool:
    """A temporary file a killed ``landmark tag`` left (``.photo.jpg.xmp.tmp<pid>``, ``.photo.jpg.tmp<pid>``):
    its process is gone (another ``landmark tag`` running on the same folder is writing its own)."""
    if not name.startswith("."):
        return False
    stem, _, pid = name.rpartition(".tmp")
    return (bool(stem) and pid.isdigit() and stem[1:].lower().endswith((SIDECAR_SUFFIX, *PHOTO_SUFFIXES))
            and not _running(int(pid)))


def _running(pid: int) -> bool:
    """Whether another process ``pid`` runs (this one writes no temporary file while it walks)."""
    if pid == os.getpid() or pid <= 0:
        return False
    try:
        os.kill(pid, 0)   # signal 0: only asks whether the process exists
    except (ProcessLookupError, OverflowError):   # gone, or a pid no process can have
        return False
    except PermissionError:   # another user's process
        return True
    return True


def walk_photos(paths: Iterable[str | Path], not_photos: Counter | None = None,
                not_entered: list | None = None) -> Iterator[Path]:
    """Photos below ``paths`` (files, folders walked recursively in name order, one folder at a
    time), by :data:`PHOTO_SUFFIXES`.  Hidden folders are not entered; leftovers of a killed
    run (:func:`_is_our_temp`) are deleted; other files are counted in ``not_photos`` by ending.

    Links to folders are followed, each real folder walked once (by its resolved path): a link
    back to a folder above it (a loop), or to one walked already (or given twice), is not entered
    again.  Each folder not entered, but for hidden ones, is appended to ``not_entered`` as
    ``(path, reason)``: those links, broken links, folders that cannot be read.  A photo given
    twice, or given and found again in a folder given, is yielded once (by its absolute path; a
    link to a photo elsewhere is a photo of its own, with its sidecar beside the link).

    Raises:
        FileNotFoundError: a path given does not exist.
    """
    not_photos = Counter() if not_photos is None else not_photos
    not_entered = [] if not_entered is None else not_entered
    walked: dict[str, str] = {}   # resolved folder -> the path it was walked as
    given: set[str] = set()       # photos yielded, by absolute path: a photo given and in a folder given is tagged once

    def first(photo: str) -> bool:
        key = os.path.abspath(photo)
        if key in given:
            return False
        given.add(key)
        return True

    paths = [Path(p) for p in paths]
    roots = [os.path.realpath(p) for p in paths if p.is_dir()]

    def enter(folder: str) -> bool:
        real = os.path.realpath(folder)
        if real in walked:
            link = " (a link)" if os.path.islink(folder) else ""
            not_entered.append((folder, f"{real}{link} is walked already as {walked[real]}: each folder is "
                                        f"tagged once (a link back to a folder above it would loop)"))
            return False
        above = None if real in roots else next((r for r in roots if r.startswith(real.rstrip(os.sep) + os.sep)), None)
        system = None if real in roots else next((d for d in SYSTEM_FOLDERS if real == d or real.startswith(d + os.sep)), None)
        if system is not None:   # /proc/<pid>/cwd leads into every process's working folder
            not_entered.append((folder, f"{real} is in {system}, the kernel's view of the system, not photos"))
            return False
        if above is not None:   # a link to / or to a parent: it would tag photos outside the folders given
            not_entered.append((folder, f"{real} holds {above}, a folder given: entering it would tag photos "
                                        f"outside the folders given (give {real} itself to tag it all)"))
            return False
        walked[real] = folder
        return True

    def unreadable(err: OSError) -> None:
        not_entered.append((err.filename or "?", f"cannot be read ({err.strerror or err}): its photos are "
                                                 f"not tagged"))

    for path in paths:
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist: give photos or folders of photos")
        if not path.is_dir():   # a file (or a pipe, socket or device: tag_photos lists it)
            if path.suffix.lower() in PHOTO_SUFFIXES:
                if first(str(path)):
                    yield path
            else:
                not_photos[path.suffix.lower()] += 1
            continue
        if not enter(str(path)):
            continue
        for folder, dirs, files in os.walk(path, followlinks=True, onerror=unreadable):
            dirs[:] = [d for d in sorted(dirs) if not d.startswith(".") and enter(os.path.join(folder, d))]
            for name in sorted(files):
                full = os.path.join(folder, name)
                if _is_our_temp(name):
                    Path(full).unlink(missing_ok=True)
                elif name.lower().endswith(PHOTO_SUFFIXES) and not name.startswith("._"):
                    if first(full):
                        yield Path(full)   # a broken link named as a photo: listed unreadable by tag_photos
                elif os.path.islink(full) and not os.path.exists(full):   # a link to a folder, maybe
                    try:
                        to = os.readlink(full)
                    except OSError as err:   # /proc/1/cwd (EACCES), or gone since the folder was listed
                        not_entered.append((full, f"a link that cannot be followed ({err.strerror or err})"))
                    else:
                        not_entered.append((full, f"a broken link (to {to}, which does not exist)"))
                elif not name.lower().endswith(SIDECAR_SUFFIX):
                    not_photos[Path(name).suffix.lower()] += 1


def _exiv2():
    """The exiv2 module, quiet, with the product's namespace registered.

    Raises:
        ImportError: not installed (one line: how to install it).
    """
    try:
        import exiv2
    except ImportError:
        raise ImportError("landmark tag needs exiv2: pip install 'landmark[tag]'") from None
    exiv2.LogMsg.setLevel(exiv2.LogMsg.Level.mute)
    try:
        exiv2.XmpProperties.ns(PREFIX)
    except exiv2.Exiv2Error:
        exiv2.XmpProperties.registerNs(NAMESPACE, PREFIX)
    return exiv2


def read_xmp(path: str | Path) -> dict[str, list[str]]:
    """The XMP of a sidecar or photo as ``{key: [values]}`` (``Xmp.dc.subject``: every keyword;
    ``Xmp.landmark.model``: one value); ``{}`` when ``path`` does not exist.

    Raises:
        ValueError: exiv2 cannot read it (the reason named).
    """
    path = Path(path)
    if not path.exists():
        return {}
    data = _read_data(path)
    out: dict[str, list[str]] = {}
    for datum in data:
        value = datum.value()
        count = value.count() if datum.typeName() in ("XmpBag", "XmpSeq", "XmpAlt", "LangAlt") else 1
        out[datum.key()] = [datum.toString(i) for i in range(count)] if count > 1 else [datum.toString()]
    return out


def _read_data(path: Path):
    """exiv2's ``XmpData`` of ``path`` (a sidecar or a photo)."""
    exiv2 = _exiv2()
    # exiv2 logs a packet it cannot parse (broken XML, a DTD: entities are refused) and reads it
    # as empty XMP; writing that back would erase the user's keywords, so the logged error is caught.
    errors = _Errors()
    logger = logging.getLogger("exiv2")   # where exiv2.pythonHandler logs
    propagate, logger.propagate = logger.propagate, False
    logger.addHandler(errors)
    exiv2.LogMsg.setHandler(exiv2.pythonHandler)
    exiv2.LogMsg.setLevel(exiv2.LogMsg.Level.error)
    try:
        image = exiv2.ImageFactory.open(path.read_bytes() if path.suffix.lower() == SIDECAR_SUFFIX else str(path))
        image.readMetadata()
    except exiv2.Exiv2Error as err:
        raise ValueError(f"{path} is not readable XMP ({err}); fix or move it away") from None
    finally:
        exiv2.LogMsg.setLevel(exiv2.LogMsg.Level.mute)
        logger.removeHandler(errors)
        logger.propagate = propagate
    if errors.messages:
        raise ValueError(f"{path} is not readable XMP ({errors.messages[0]}); fix or move it away")
    data = exiv2.XmpData()
    for datum in image.xmpData():
        data.add(datum)
    return data


class _Errors(logging.Handler):
    """The error messages exiv2 logs while one file is read."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _keywords(name: str) -> tuple[str, str, str]:
    """The keywords written for landmark ``name``: ``dc:subject``, ``lr:hierarchicalSubject`` and
    ``digiKam:TagsList`` values (a ``|`` in the name, Lightroom's separator, is written as ``/``)."""
    name = name.replace("|", "/")
    return name, f"{HIERARCHY_ROOT}|{name}", f"{HIERARCHY_ROOT}/{name}"


def _values(data, key: str) -> list[str]:
    datum = data.findKey(_exiv2().XmpKey(key))
    if datum == data.end():
        return []
    count = datum.count() if datum.typeName() in ("XmpBag", "XmpSeq") else 1
    return [datum.toString(i) for i in range(count)] if count > 1 else [datum.toString()]


def _erase(data, key: str) -> None:
    datum = data.findKey(_exiv2().XmpKey(key))
    if datum != data.end():
        data.erase(datum)


def _set_bag(data, key: str, values: list[str]) -> None:
    exiv2 = _exiv2()
    _erase(data, key)
    if values:
        bag = exiv2.XmpArrayValue(exiv2.TypeId.xmpBag)
        for v in values:
            bag.read(v)
        data.add(exiv2.XmpKey(key), bag)


def tagged_model(data) -> str:
    """The ``landmark:model`` an XMP records ("" when none)."""
    found = _values(data, f"Xmp.{PREFIX}.model")
    return found[0] if found else ""


def apply_answer(data, answer, model: str) -> None:
    """Write ``answer`` (an :class:`~landmark.inference.recognizer.Answer`) into exiv2 ``XmpData``:
    keywords when it is a landmark (replacing this product's earlier ones), the product's fields
    always; every other entry is kept."""
    old = _values(data, f"Xmp.{PREFIX}.name")
    old_verdict = _values(data, f"Xmp.{PREFIX}.verdict")
    ours = set()
    if old and old_verdict and old_verdict[0] == old[0]:   # the keywords an earlier run wrote
        ours = set(_keywords(old[0]))
    name = _keywords(answer.name)[0] if answer.is_landmark else ""
    for key, new in zip((_SUBJECT, _HIER, _TAGS), _keywords(name)):
        kept = [v for v in _values(data, key) if v not in ours]
        if name and new not in kept:
            kept.append(new)
        if kept != _values(data, key):
            _set_bag(data, key, kept)
    # a landmark's name and id as landmark:name / landmarkId; a photo of no landmark keeps its best guess
    # only as bestGuess / bestGuessId, never as a name beside "Verdict: no landmark" (docs/tagging.md)
    named, guess = ("name", "landmarkId"), ("bestGuess", "bestGuessId")
    fields = dict(zip(named if answer.is_landmark else guess, (answer.name, answer.landmark_id)))
    fields.update({"score": f"{answer.score:.4f}", "threshold": f"{answer.threshold:.4f}", "verdict": answer.verdict,
                   "certainty": answer.certainty, "scoring": answer.scoring, "model": model})
    for field in _FIELDS:
        if fields.get(field):
            data[f"Xmp.{PREFIX}.{field}"] = fields[field]
        else:
            _erase(data, f"Xmp.{PREFIX}.{field}")


def _encode(data) -> bytes:
    exiv2 = _exiv2()
    status, packet = exiv2.XmpParser.encode(data, exiv2.XmpParser.XmpFormatFlags.useCompactFormat)
    if status != 0:
        raise ValueError(f"exiv2 could not write the XMP (code {status})")
    return packet.encode("utf-8")


def _kept_mode(path: Path) -> int | None:
    """The permission bits of the existing file ``path`` (None when there is none), which its
    replacement keeps (a private 0600 sidecar stays private).

    Raises:
        PermissionError: its owner may not write it (0444): the user protected it, so it is left
            alone even where the process could replace it (root, a writable folder).
    """
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return None
    if not mode & stat.S_IWUSR:
        raise PermissionError(f"{path} is read-only: make it writable (chmod u+w) to tag it")
    return stat.S_IMODE(mode)


def write_sidecar(path: Path, data) -> None:
    """``data`` as the XMP sidecar ``path``: a synced temporary file beside it, then ``os.replace``;
    an existing sidecar's permissions are kept.

    Raises:
        PermissionError: the existing sidecar is read-only (:func:`_kept_mode`).
    """
    mode = _kept_mode(path)
    tmp = temp_path(path)
    with open(tmp, "wb") as f:
        f.write(_encode(data))
        f.flush()
        if mode is not None:
            os.fchmod(f.fileno(), mode)
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def write_in_place(photo: Path, data) -> None:
    """``data`` as the XMP packet inside ``photo``: written into a copy beside it by exiv2, then
    ``os.replace`` (the photo is whole at every moment; its pixels are not re-encoded).

    Raises:
        PermissionError: the photo is read-only (:func:`_kept_mode`).
    """
    exiv2 = _exiv2()
    _kept_mode(photo)
    tmp = temp_path(photo)
    shutil.copy2(photo, tmp)
    try:
        image = exiv2.ImageFactory.open(str(tmp))
        image.readMetadata()
        image.setXmpData(data)
        image.writeMetadata()
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, photo)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(photo.parent)


def tag_photos(recognizer, paths: Iterable[str | Path], model: str, *, in_place: bool = False,
               batch_size: int = TAG_BATCH, progress: bool = True) -> TagSummary:
    """Recognise every photo below ``paths`` and write the answers as XMP (module docstring).

    Args:
        recognizer: a loaded recogniser (:class:`~landmark.inference.recognizer.Recognizer` or
            :class:`~landmark.inference.instant.InstantRecognizer`), or a function
            without arguments that loads one: called at the first photo to recognise, so a run
            that finds every photo tagged already never loads the model.
        paths: photo files and folders (walked recursively by :func:`walk_photos`).
        model: the identity recorded in ``landmark:model`` and compared to skip photos
            already tagged (the checkpoint's SHA-256 and the index state: :func:`model_identity`).
        in_place: write into the photos' own XMP instead of sidecars.
        batch_size: photos per forward pass.
        progress: a tqdm bar on stderr (photos done, rate).

    Returns:
        the :class:`TagSummary`.

    Raises:
        ImportError: exiv2 is not installed.
        FileNotFoundError: a path given does not exist.
    """
    from tqdm import tqdm

    from ..data.images import load_image   # what Recognizer's decode does for a path, without torch
    exiv2 = _exiv2()
    summary, not_photos, landmarks = TagSummary(), Counter(), Counter()
    loaded = [] if callable(recognizer) and not hasattr(recognizer, "recognize") else [recognizer]
    bar = tqdm(unit="photo", desc="tag", disable=not progress, file=sys.stderr)
    batch: list[tuple[Path, object, object]] = []   # (photo, decoded image, XmpData)

    def draft() -> int | None:
        """JPEGs are decoded as ``landmark predict`` and ``recognize`` decode them (shrunk by JPEG
        draft to at least twice the model's side: the same pixels, the same answer), once the
        recogniser is loaded; before that (the first batch) in full, and again at :func:`flush`."""
        own = getattr(loaded[0], "draft", None) if loaded else None   # a stand-in recogniser may have none
        return own(1) if own is not None else None

    def flush() -> None:
        if not batch:
            return
        if not loaded:
            loaded.append(recognizer())
        for k, (photo, image, data) in enumerate(batch):
            if image is None:   # read before the recogniser was loaded: again, at its draft size (if any)
                try:
                    batch[k] = (photo, load_image(photo, draft=draft()), data)
                except (ImageError, OSError) as err:   # changed since it was first read
                    summary.unreadable.append((str(photo), str(err)))
                    bar.update(1)
        batch[:] = [b for b in batch if b[1] is not None]
        if not batch:
            return
        answers = loaded[0].recognize([image for _, image, _ in batch], sources=[str(p) for p, _, _ in batch])
        for (photo, _, data), answer in zip(batch, answers):
            try:
                apply_answer(data, answer, model)
                write_in_place(photo, data) if in_place else write_sidecar(sidecar_path(photo), data)
            except (OSError, ValueError, exiv2.Exiv2Error) as err:
                summary.unreadable.append((str(photo), f"cannot write its XMP: {err}"))
                continue
            if answer.is_landmark:
                summary.tagged += 1
                landmarks[answer.name] += 1
            else:
                summary.no_landmark += 1
        bar.update(len(batch))
        batch.clear()

    try:
        for photo in walk_photos(paths, not_photos, summary.not_entered):
            target = photo if in_place else sidecar_path(photo)
            irregular = next((p for p in (photo, target) if p.exists() and not p.is_file()), None)
            if irregular is not None:   # a pipe would block the read forever; a folder cannot be read
                summary.unreadable.append((str(photo), f"{irregular} is not a regular file (a folder, pipe, socket "
                                                       f"or device); move it away to tag this photo"))
                bar.update(1)
                continue
            if target.is_symlink():   # os.replace would put a file where the link was, the file it points to unchanged
                what = "the photo" if in_place else "its sidecar"
                summary.unreadable.append((str(photo), f"{what} {target} is a link (to {os.path.realpath(target)}): "
                                                       f"not written, writing would replace the link by a file; tag "
                                                       f"the file it points to{'' if in_place else ' or replace the link by a copy'}"))
                bar.update(1)
                continue
            try:
                data = _read_data(target) if target.exists() else exiv2.XmpData()
            except (ValueError, OSError) as err:
                summary.unreadable.append((str(photo), str(err)))
                bar.update(1)
                continue
            if tagged_model(data) == model:
                summary.skipped += 1
                bar.update(1)
                continue
            try:
                size = draft()
                image = load_image(photo, draft=size)   # read before the model loads: an unreadable photo never loads it
            except (ImageError, OSError) as err:
                summary.unreadable.append((str(photo), str(err)))
                bar.update(1)
                continue
            batch.append((photo, image if size is not None else None, data))
            if len(batch) >= batch_size:
                flush()
        flush()
    finally:   # closed however the run ends (Ctrl-C, an error), so the next line printed gets a line of its own
        bar.close()
    summary.not_photos = dict(not_photos)
    summary.landmarks = dict(landmarks)
    return summary


#: Joins the checkpoint's SHA-256 and the index state in ``landmark:model`` (``<sha256>+index:<16 hex>``).
INDEX_MARK = "+index:"
#: what follows the identity when ``--threshold`` / ``--names`` are given (:func:`model_identity`)
THRESHOLD_MARK, NAMES_MARK = "+threshold:", "+names:"


def index_identity(folder: str | Path) -> str:
    """A short hash (16 hex digits of a SHA-256) of an index folder's state: its ``meta.json``
    record without the fields that name files or the write (``files``, ``version``), i.e. its
    count, landmarks, file sizes, names, calibrated thresholds and model.  Enrolment changes it
    (more photos, new sizes); reading the folder, or a save of the same content, does not.
    Reads only ``meta.json`` (a few KB), deterministic.

    Raises:
        FileNotFoundError: ``folder`` holds no readable ``meta.json`` (not an index folder).
    """
    import hashlib
    import json

    from ..io import read_record
    record = read_record(Path(folder) / "meta.json")
    if record is None:
        raise FileNotFoundError(f"{folder} holds no index (no readable meta.json): give a folder of landmark "
                                f"index build")
    state = {k: v for k, v in record.items() if k not in ("files", "version")}
    return hashlib.sha256(json.dumps(state, sort_keys=True, default=str).encode()).hexdigest()[:16]


def model_identity(source: str | Path, runtime=None, index: str | Path | None = None,
                   threshold: float | None = None, names: str | Path | None = None) -> str:
    """The identity recorded as ``landmark:model`` and compared to skip photos: what decides the
    answers.  The SHA-256 (hex) of the run's ``checkpoints/best.pt`` or the checkpoint given (for
    an ONNX export, of the checkpoint it came from: the export's metadata, read from its loaded
    ``runtime``), followed, when an index answers too (``index``, else the run's own
    ``RUN/index``), by ``+index:`` and :func:`index_identity`: ``<sha256>+index:<16 hex>``; then
    by ``+threshold:<value>`` when a "no landmark" threshold is given (``--threshold``: it
    decides which photos are named) and by ``+names:<16 hex>`` (the SHA-256 of the names CSV's
    bytes) when ``--names`` replaces the stored names (they are the keywords written).  A run
    without an index, threshold or names keeps the bare SHA-256 (what earlier versions wrote).

    Raises:
        FileNotFoundError: the checkpoint, the index's ``meta.json`` or the names CSV is missing.
    """
    import hashlib

    from .answers import run_index
    path = resolve_checkpoint(source)
    if path.suffix.lower() == ".onnx" and (getattr(runtime, "meta", None) or {}).get("checkpoint_sha256"):
        digest = runtime.meta["checkpoint_sha256"]
    else:
        with open(path, "rb") as f:   # the digest models.runtime.file_sha256 gives, without importing torch
            digest = hashlib.file_digest(f, "sha256").hexdigest()
    folder = run_index(source) if index is None else Path(index)   # the index open_recognizer answers with
    identity = digest if folder is None else f"{digest}{INDEX_MARK}{index_identity(folder)}"
    if threshold is not None:
        identity += f"{THRESHOLD_MARK}{float(threshold)!r}"
    if names is not None:
        identity += f"{NAMES_MARK}{hashlib.sha256(Path(names).read_bytes()).hexdigest()[:16]}"
    return identity


def tag(model: str | Path, photos: list[str | Path], *, index: str | Path | None = None, in_place: bool = False,
        batch_size: int = TAG_BATCH, threshold: float | None = None, names: str | Path | None = None,
        progress: bool = True, **load) -> TagSummary:
    """Load ``model`` (a run folder or checkpoint) and tag ``photos`` (:func:`tag_photos`); a
    checkpoint is loaded only when a photo needs recognising (a run over a library tagged already
    reads the sidecars and stops).  The recogniser is the one ``landmark recognize --model`` uses
    (:func:`~landmark.inference.instant.open_recognizer`): on a run with an ONNX export the
    torch-free :class:`~landmark.inference.instant.InstantRecognizer` (no PyTorch imported: about
    a quarter of the memory, docs/tagging.md), else the PyTorch
    :class:`~landmark.inference.recognizer.Recognizer`; the same answers either way.  ``names``: a
    CSV ``landmark_id,name`` whose names replace the stored ones; ``threshold``: the "no landmark"
    threshold instead of the run's; ``index``: an index folder (``landmark index build`` / ``index
    add``) instead of the run's own ``RUN/index``, as ``landmark recognize --index``; its state is
    part of the identity recorded (:func:`model_identity`), so photos are answered again after an
    enrolment; ``load``: further keywords of ``open_recognizer`` (``device``, ``runtime``, ``threads``).

    Raises:
        ImportError: exiv2 is not installed (checked before the model loads).
        FileNotFoundError: the model or a photo path does not exist.
    """
    _exiv2()
    for path in photos:
        if not Path(path).exists():
            raise FileNotFoundError(f"{path} does not exist: give photos or folders of photos")
    def load_recognizer():
        from .instant import open_recognizer   # torch only where no export answers (docs/runtime.md)
        return open_recognizer(model, index=index, threshold=threshold, names=names, **load)
    if resolve_checkpoint(model).suffix.lower() == ".onnx":   # its identity is in the export's metadata
        rec = load_recognizer()
        return tag_photos(rec, photos, model_identity(model, rec.runtime, index=index, threshold=threshold,
                                                      names=names), in_place=in_place,
                          batch_size=batch_size, progress=progress)
    return tag_photos(load_recognizer, photos, model_identity(model, index=index, threshold=threshold, names=names),
                      in_place=in_place,
                      batch_size=batch_size, progress=progress)
