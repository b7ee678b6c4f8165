"""Reading labelled and query image sets: the GLDv2 layout and plain folder trees.

GLDv2 (Weyand et al., "Google Landmarks Dataset v2", CVPR 2020,
https://github.com/cvdfoundation/google-landmark): ``train.csv`` with
``id,url,landmark_id``, ``train_clean.csv`` with ``landmark_id,images``
(space-separated ids), images at ``train/<a>/<b>/<c>/<id>.jpg`` where a, b, c are
the first three characters of the id.  A folder-per-class tree
(``ROOT/<landmark_id>/<any name>``) is read too.

Frames returned here have one row per image: ``id`` (str), ``landmark_id``
(pandas ``category`` of str) and, for folder trees and query lists, ``path``.
GLDv2 frames carry no path column (4.1M path strings would cost ~0.5 GB);
:func:`image_path` derives it from the id.

Ids are never trusted as paths.  An id read from a CSV must match :data:`GLDV2_ID`
(3 to 128 characters of ``0-9 A-Z a-z _ -``, the rule ``landmark download`` applies);
a row with any other id is kept, so that it is reported and never silently dropped,
with a ``reason`` column saying why it cannot be read (every reader of images turns
such a row into a reject).  Files of folder trees and query folders get ids from
:func:`file_ids`: safe and unique, whatever the file names.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pandas as pd

from ..io import read_csv

# Files that are never images, skipped when a directory of queries is listed.
NOT_IMAGES = {".csv", ".md", ".txt", ".json", ".yaml", ".yml", ".tsv", ".py",
              ".xmp"}   # XMP sidecars, which `landmark tag` writes beside photos
# Metadata operating systems leave beside photos (lower-case names); a hidden file that is
# none of these (``.x.jpg``) is a photo like any other.
OS_JUNK = {".ds_store": "macOS folder settings", "thumbs.db": "Windows thumbnail cache",
           "desktop.ini": "Windows folder settings", ".directory": "KDE folder settings"}


# Ids in a GLDv2 CSV (train.csv, train_clean.csv, a query list): what `download` accepts.
GLDV2_ID = re.compile(r"^[0-9A-Za-z_-]{3,128}$")
BAD_ID = "bad id (need 3 to 128 characters of 0-9 A-Z a-z _ -)"
# Any id that may become a file name under a root (cache, layout): no separators, no dots.
SAFE_ID = re.compile(r"^[0-9A-Za-z_-]{1,128}$")
_UNSAFE_CHARS = re.compile(r"[^0-9A-Za-z_-]")


def image_path(root: Path, image_id: str, split: str = "train") -> Path:
    """``root/split/a/b/c/id.jpg`` as in GLDv2 (a, b, c: the first three characters).

    Ids of 1 or 2 characters (file names such as ``1.jpg`` in a folder tree, cached by
    id) pad the folder names with ``_``: ``ab`` -> ``a/b/_/ab.jpg``.

    Raises:
        ValueError: ``image_id`` is not a :data:`SAFE_ID`; so the path never leaves ``root/split``.
    """
    if not SAFE_ID.match(str(image_id)):
        raise ValueError(f"id {str(image_id)[:80]!r} cannot name a file ({BAD_ID})")
    a, b, c = (image_id + "__")[:3]
    return Path(root) / split / a / b / c / f"{image_id}.jpg"


def with_paths(frame: pd.DataFrame, root: str | Path, split: str = "train") -> pd.DataFrame:
    """``frame`` with a ``path`` column: kept when present (folder trees, query lists),
    else the GLDv2 path of each id under ``root/split`` (:func:`image_path`); rows with a
    ``reason`` (bad ids) get an empty path."""
    if "path" in frame.columns:
        return frame
    reasons = frame["reason"].astype(str).to_numpy() if "reason" in frame.columns else [""] * len(frame)
    return frame.assign(path=["" if r else str(image_path(Path(root), i, split))
                              for i, r in zip(frame["id"], reasons)])


def file_ids(files: list[Path], root: Path) -> list[str]:
    """Safe, unique ids for image files below ``root`` (folder trees, query folders).

    The id is the file name without extension, with every character other than
    ``0-9 A-Z a-z _ -`` replaced by ``_`` (at most 64 kept).  Files whose ids would
    coincide (``0/img.jpg`` and ``1/img.jpg``; ``same.jpg`` and ``same.png``; ``A.jpg``
    and ``a.jpg``, which a case-insensitive disk cannot keep apart) all get ``-`` and
    the first 8 hex digits of the SHA-1 of their path relative to ``root`` appended.

    Returns:
        one id per file, in order; all distinct, also ignoring case (:data:`SAFE_ID`).
    """
    rel = [Path(f).relative_to(root).as_posix() for f in files]
    ids = [_UNSAFE_CHARS.sub("_", Path(r).stem)[:64] or "_" for r in rel]
    for digits in (8, 40):
        clash = pd.Series([i.lower() for i in ids], dtype=object).duplicated(keep=False).to_numpy()
        if not clash.any():
            break
        ids = [f"{i}-{hashlib.sha1(r.encode()).hexdigest()[:digits]}" if c else i for i, r, c in zip(ids, rel, clash)]
    return ids


def mark_bad_ids(frame: pd.DataFrame, pattern: re.Pattern = GLDV2_ID) -> pd.DataFrame:
    """Add a ``reason`` column (:data:`BAD_ID`) when some ids do not match ``pattern``
    (ids that would become paths); the frame is returned unchanged when all match."""
    if pattern is GLDV2_ID and _short_safe_ids(frame["id"].to_numpy()):
        return frame
    ok = frame["id"].astype(str).str.fullmatch(pattern.pattern)
    if ok.all():
        return frame
    return frame.assign(reason=np.where(ok, "", BAD_ID))


def is_gldv2(root: Path) -> bool:
    return (Path(root) / "train.csv").is_file()


#: What ``--data`` / ``train(data=...)`` take: one labelled folder, or several trained on as one.
DataSource = str | Path | Sequence[str | Path]


def data_roots(data: DataSource) -> list[Path]:
    """The folders of ``data`` (one path, or a list of them as stored in a run's ``run.json``),
    in order, as paths.

    Raises:
        ValueError: an empty list, or a folder given twice.
    """
    roots = [Path(data)] if isinstance(data, (str, Path)) else [Path(r) for r in data]
    if not roots:
        raise ValueError("no data folder given; give --data DIR (once per folder)")
    seen = [r.resolve() for r in roots]
    twice = next((r for k, r in enumerate(roots) if seen[k] in seen[:k]), None)
    if twice is not None:
        raise ValueError(f"--data {twice} is given twice; give each folder once")
    return roots


def data_source(data: DataSource) -> Path | list[Path]:
    """``data`` as one ``Path`` when it names one folder, else a list of them (what a run's
    ``run.json`` stores under ``"data"``: one string, or a list of strings)."""
    roots = data_roots(data)
    return roots[0] if len(roots) == 1 else roots


def read_train(root: DataSource, clean: bool | str = False, unusable: list | None = None) -> pd.DataFrame:
    """Read the labelled images of ``root`` (GLDv2 layout or folder-per-class tree).

    Args:
        root: a folder with ``train.csv`` (GLDv2) or with one sub-folder per landmark; or a
            list of such folders, read as one set by :func:`read_union`.
        clean: ``True``: read ``train_clean.csv`` instead of ``train.csv`` (GLDv2 only);
            ``"auto"``: read it when the folder has one, else ``train.csv`` or the tree.
        unusable: a list that receives ``(id, landmark_id, path, reason)`` for each row or
            file that cannot be used and is not in the frame: ``train.csv`` rows with an
            empty id or ``landmark_id``; operating-system metadata in a tree (``.DS_Store``,
            ``._x.jpg`` AppleDouble files, :data:`OS_JUNK`).  Callers that list rejects pass one.

    Returns:
        frame with columns ``id``, ``landmark_id`` (category), and ``path`` for trees and
        for several folders.

    Raises:
        FileNotFoundError: ``root`` is missing, or ``clean`` is asked for and there is no
            ``train_clean.csv``.
        ValueError: ``train.csv`` lacks the ``id`` or ``landmark_id`` column, or a tree
            holds no image files; for several folders, see :func:`read_union`.
    """
    roots = data_roots(root)
    unusable = [] if unusable is None else unusable
    if len(roots) > 1:
        return read_union(roots, clean, unusable)
    root = roots[0]
    if root.is_file():
        raise ValueError(f"{root} is a file; --data takes a GLDv2 folder (with train.csv) or a folder per class")
    if not root.is_dir():
        raise FileNotFoundError(f"data folder {root} does not exist")
    if clean == "auto":
        clean = (root / "train_clean.csv").is_file()
    if is_gldv2(root):
        return read_train_clean(root / "train_clean.csv") if clean else read_train_csv(root / "train.csv", unusable)
    if clean:
        raise FileNotFoundError(f"{root} has no train_clean.csv; set data.clean: false")
    return read_folder_tree(root, unusable)


def without_no_landmark_folders(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split labelled photos (``id, landmark_id[, path]``, as :func:`read_train` gives them) into
    the landmarks' photos and those of a tree's folders of no landmark (``no_landmark/``:
    :func:`landmark.data.names.is_no_landmark_folder`), which are never a class.  GLDv2's landmark
    ids are numbers, so a GLDv2 folder has none.

    Returns:
        (landmark photos, photos of no landmark), both re-indexed; ``landmark_id`` keeps only the
        categories still used.
    """
    from .names import is_no_landmark_folder
    ids = frame["landmark_id"].astype(str)
    out = ids.isin([lid for lid in dict.fromkeys(ids) if is_no_landmark_folder(lid)]).to_numpy()
    kept, apart = frame[~out].reset_index(drop=True), frame[out].reset_index(drop=True)
    if out.any() and isinstance(frame["landmark_id"].dtype, pd.CategoricalDtype):
        kept = kept.assign(landmark_id=kept["landmark_id"].cat.remove_unused_categories())
    return kept, apart


def read_union(roots: list[Path], clean: bool | str = False, unusable: list | None = None) -> pd.DataFrame:
    """The labelled images of several folders as one set (each read by :func:`read_train`;
    photos stay where they are: every row gets its ``path``).

    A landmark id found in several folders is one class only when every folder gives it
    the same name: the category of ``train_label_to_category.csv`` (GLDv2), or the class
    folder itself (a tree, where the id is the folder's name).  A GLDv2 folder without a
    category for that id names nothing, so a shared id there is refused: GLDv2 subsets
    number their landmarks independently, and merging two different landmarks silently
    would teach the model that they are one.

    Returns:
        frame ``id, landmark_id`` (category of str), ``path`` (and ``reason`` for bad ids),
        the folders' rows in the order given.

    Raises:
        ValueError: a landmark id named differently (or left unnamed) in two folders, or an
            image id found in two folders (the run's files key photos by id).
    """
    from .names import is_no_landmark_folder
    frames, names = [], []
    for root in roots:
        frame = with_paths(read_train(root, clean, unusable), root)
        if not is_gldv2(root):
            named = {str(i): str(i) for i in frame["landmark_id"].cat.categories}
        else:
            categories = read_categories(root)
            named = {str(i): categories.get(str(i)) for i in frame["landmark_id"].cat.categories}
        frames.append(frame.assign(landmark_id=frame["landmark_id"].astype(str)))
        names.append(named)
    trees = [(root, lid) for root, named in zip(roots, names) if not is_gldv2(root) for lid in named]
    clash = same_name_folders(lid for _, lid in trees)
    if clash:   # one id in several trees is one landmark; two ids named alike would look like one
        (a, b) = (next(root / d.name for root, lid in trees if lid == c for d in root.iterdir()
                        if d.is_dir() and folder_landmark_id(d.name) == c) for c in clash)
        refuse_same_name(a, b)
    for k in range(len(roots)):
        for j in range(k):
            for lid in sorted(set(names[k]) & set(names[j]), key=natural_key):
                if is_no_landmark_folder(lid):   # photos without a landmark in both: never a class, nothing to name
                    continue
                a, b = names[j][lid], names[k][lid]
                if a is None or b is None or a != b:
                    what = f"named {a!r} and {b!r}" if a and b else \
                        f"unnamed in {roots[j] if a is None else roots[k]} (no train_label_to_category.csv row)"
                    raise ValueError(f"landmark_id {lid} is in both {roots[j]} and {roots[k]} but {what}: renumber "
                                     f"one folder's landmark ids, or give both the same category to merge them")
            shared = np.intersect1d(frames[k]["id"].to_numpy(dtype=str), frames[j]["id"].to_numpy(dtype=str))
            if len(shared):
                raise ValueError(f"image id {shared[0]} is in both {roots[j]} and {roots[k]} ({len(shared)} such "
                                 f"ids): a photo given twice? remove it from one folder (ids must be unique)")
    frame = pd.concat(frames, ignore_index=True)
    if "reason" in frame.columns:
        frame["reason"] = frame["reason"].fillna("")
    frame["landmark_id"] = frame["landmark_id"].astype("category")
    return frame


def read_train_csv(path: Path, unusable: list | None = None) -> pd.DataFrame:
    """GLDv2 ``train.csv`` (``id,url,landmark_id``); the url column is dropped.

    Rows with an empty ``id`` or ``landmark_id`` are left out of the frame and appended to
    ``unusable`` as ``(id, landmark_id, "", reason)`` (the reason names the line).
    """
    head = read_csv(path, nrows=0).columns
    missing = {"id", "landmark_id"} - set(head)
    if missing:
        raise ValueError(f"{path} lacks column(s) {sorted(missing)}; GLDv2 train.csv has id,url,landmark_id")
    frame = read_csv(path, usecols=["id", "landmark_id"], dtype=str, keep_default_na=False)
    empty = (frame["id"] == "") | (frame["landmark_id"] == "")
    if empty.any() and unusable is not None:
        for line, (image_id, label) in zip(frame.index[empty] + 2, frame.loc[empty, ["id", "landmark_id"]].to_numpy()):
            why = (f"empty id: {path.name} line {line} names no photo" if not image_id else
                   f"empty landmark_id: {path.name} line {line} is unlabelled, it cannot train")
            unusable.append((image_id or f"{path.name}:{line}", label, "", why))
    frame = frame[~empty]
    return _finish(mark_bad_ids(frame))


def read_train_clean(path: Path) -> pd.DataFrame:
    """GLDv2 ``train_clean.csv`` (``landmark_id,images`` with space-separated ids)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; set data.clean: false")
    raw = read_csv(path, dtype=str, keep_default_na=False)
    if not {"landmark_id", "images"} <= set(raw.columns):
        raise ValueError(f"{path} lacks the columns landmark_id,images of GLDv2's train_clean.csv")
    ids = raw["images"].str.split()
    frame = pd.DataFrame({"id": ids.explode().to_numpy(), "landmark_id": raw["landmark_id"].repeat(ids.str.len()).to_numpy()})
    return _finish(mark_bad_ids(frame.dropna()))


def read_folder_tree(root: Path, unusable: list | None = None) -> pd.DataFrame:
    """``root/<landmark folder>/<file>``: every file below a class folder is an image candidate
    of the landmark :func:`folder_landmark_id` names,
    hidden ones (``.x.jpg``) included; operating-system metadata (:func:`os_junk`) is
    appended to ``unusable`` as ``(relative path, landmark_id, path, reason)`` instead."""
    rows = []
    for cls in sorted(p for p in root.iterdir() if p.is_dir()):
        for f in sorted(cls.rglob("*")):
            if not f.is_file() or f.suffix.lower() in NOT_IMAGES:
                continue
            junk = os_junk(f.name)
            if junk:
                if unusable is not None:
                    unusable.append((f.relative_to(root).as_posix(), folder_landmark_id(cls.name), str(f), junk))
            else:
                rows.append((folder_landmark_id(cls.name), f))
    if not rows:
        raise ValueError(f"{root} has neither train.csv nor class folders with images")
    used = list(dict.fromkeys(f.relative_to(root).parts[0] for _, f in rows))
    clash = same_name_folders(used)
    if clash:
        refuse_same_name(root / clash[0], root / clash[1])
    files = [f for _, f in rows]
    return _finish(pd.DataFrame({"id": file_ids(files, root), "landmark_id": [c for c, _ in rows],
                                 "path": [str(f) for f in files]}))


def folder_key(folder: str) -> str:
    """What people read of a class folder's name, compared: case, ``_`` and runs of spaces
    ignored (``Petra``, ``petra`` and ``PETRA``; ``Porto_Cathedral`` and ``porto  cathedral``)."""
    return " ".join(str(folder).replace("_", " ").split()).casefold()


def same_name_folders(folders) -> tuple[str, str] | None:
    """The first two of ``folders`` (class folder names) with the same :func:`folder_key` (they
    would be two landmarks shown with one name, or one landmark made of two folders); None.
    Folders of no landmark (``no_landmark/`` and ``No Landmark/`` of two trees:
    :func:`landmark.data.names.is_no_landmark_folder`) are never a class, so they never clash."""
    from .names import is_no_landmark_folder
    seen: dict[str, str] = {}
    for folder in folders:
        if is_no_landmark_folder(folder):
            continue
        key = folder_key(folder)
        if key in seen and seen[key] != folder:
            return seen[key], folder
        seen.setdefault(key, folder)
    return None


def refuse_same_name(a: Path, b: Path) -> None:
    """Raise the one-line refusal of two class folders named alike (:func:`same_name_folders`).

    Raises:
        ValueError: always.
    """
    from .names import pretty_name
    raise ValueError(f"class folders {a} and {b} differ only in case, '_' or spaces, so both would be shown as "
                     f"'{pretty_name(a.name)}': move the photos of one into the other if they are one landmark, "
                     f"or rename one so the names differ (nothing was written)")


def folder_landmark_id(folder: str) -> str:
    """The landmark id of a class folder: its name with each run of whitespace made one ``_``
    (``Porto Cathedral`` -> ``Porto_Cathedral``), since the Kaggle formats separate a
    prediction's fields with spaces; shown to people as the folder's name again
    (:func:`landmark.data.names.display_name`)."""
    return "_".join(folder.split())


#: What :func:`landmark.io.temp_path` names (``.photo.jpg.tmp<pid>``) and a killed writer leaves.
_TEMP_FILE = re.compile(r"^\..+\.tmp\d+$")


def os_junk(name: str) -> str:
    """Why a file named ``name`` is operating-system metadata rather than a photo ('' when it may be one)."""
    if name.startswith("._"):
        return "macOS AppleDouble metadata file (._name), not a photo"
    if _TEMP_FILE.match(name):   # landmark.io.temp_path: a killed `landmark tag --in-place` leaves a whole copy
        return f"temporary file of an interrupted write ({name}), not a photo"
    kind = OS_JUNK.get(name.lower())
    return f"{kind} file ({name}), not a photo" if kind else ""


def read_queries(source: str | Path) -> pd.DataFrame:
    """List query images from a folder (recursively), a CSV with an ``id`` column, or one image file.

    A folder's files get ids from :func:`file_ids` (unique even when names repeat in
    sub-folders); hidden files (``.x.jpg``) are queries too, operating-system metadata
    (:func:`os_junk`: ``.DS_Store``, ``._x.jpg``) is not listed.  A CSV may give a ``path`` column; otherwise each id is looked up in
    the GLDv2 layout beside the CSV (``<csv dir>/a/b/c/id.jpg``, then
    ``<csv dir>/test/a/b/c/id.jpg``), and ids that are not :data:`GLDV2_ID` get a
    ``reason`` instead of a path.  Ids whose file is missing are kept, so that they are
    reported, never dropped.

    Returns:
        frame with columns ``id`` and ``path`` (and ``reason`` when some ids are bad).

    Raises:
        FileNotFoundError: ``source`` does not exist.
        ValueError: the CSV has no ``id`` column, or gives one id two different paths.
    """
    source = Path(source)
    if source.is_dir():
        files = sorted(f for f in source.rglob("*") if f.is_file() and f.suffix.lower() not in NOT_IMAGES
                       and not os_junk(f.name))
        return pd.DataFrame({"id": file_ids(files, source), "path": [str(f) for f in files]})
    if not source.exists():
        raise FileNotFoundError(f"{source} does not exist: give a folder of photos, one photo or a CSV with an id column")
    if not source.is_file():
        raise FileNotFoundError(f"{source} is neither a folder of images nor a CSV")
    if source.suffix.lower() != ".csv":  # one image file
        return pd.DataFrame({"id": file_ids([source], source.parent), "path": [str(source)]})
    frame = read_csv(source, dtype=str, keep_default_na=False)
    if "id" not in frame.columns:
        raise ValueError(f"{source} has no 'id' column")
    if "path" not in frame.columns:
        frame = mark_bad_ids(frame[["id"]])
        base = source.parent
        def locate(image_id: str) -> str:
            for candidate in (image_path(base, image_id, "."), image_path(base, image_id, "test")):
                if candidate.exists():
                    return str(candidate)
            return str(image_path(base, image_id, "."))
        bad = frame["reason"] != "" if "reason" in frame.columns else pd.Series(False, index=frame.index)
        frame["path"] = [("" if b else locate(i)) for i, b in zip(frame["id"], bad)]
    frame = frame[[c for c in ("id", "path", "reason") if c in frame.columns]].drop_duplicates()
    repeated = frame["id"].duplicated()
    if repeated.any():
        raise ValueError(f"{source}: id {frame.loc[repeated, 'id'].iloc[0]!r} is given more than one path; "
                         f"ids must be unique (a submission has one row per id)")
    return frame.reset_index(drop=True)


def read_categories(root: DataSource) -> dict[str, str]:
    """``train_label_to_category.csv`` as {landmark_id: category}; empty when absent.

    Several folders: their categories merged (the first folder's wins on a shared id;
    :func:`read_union` refuses to train on ids named differently)."""
    if not isinstance(root, (str, Path)):
        merged: dict[str, str] = {}
        for one in reversed(data_roots(root)):
            merged.update(read_categories(one))
        return merged
    path = Path(root) / "train_label_to_category.csv"
    if not path.is_file():
        return {}
    frame = read_csv(path, dtype=str, keep_default_na=False)
    if not {"landmark_id", "category"} <= set(frame.columns):
        return {}
    return dict(zip(frame["landmark_id"], frame["category"]))


def category_name(category: str) -> str:
    """Readable name of a GLDv2 category: ``.../wiki/Category:Alhambra_Palace`` -> ``Alhambra Palace``."""
    name = category.rsplit("Category:", 1)[-1] if "Category:" in category else category.rstrip("/").rsplit("/", 1)[-1]
    return unquote(name).replace("_", " ").strip() or category


def landmark_names(root: DataSource | None, landmark_ids) -> dict[str, str]:
    """{landmark_id: readable name} for ``landmark_ids``: the GLDv2 category of ``root``
    (:func:`category_name` of ``train_label_to_category.csv``; of each folder when ``root``
    is several) when there is one, else the id itself, which for a folder-per-class tree is
    the class folder's name."""
    categories = read_categories(root) if root is not None else {}
    return {str(i): category_name(categories[str(i)]) if str(i) in categories else str(i) for i in landmark_ids}


def natural_key(landmark_id: str) -> tuple:
    """Sort key putting numeric landmark ids in numeric order (2 before 10), then other ids."""
    return (0, int(landmark_id), "") if str(landmark_id).isdigit() else (1, 0, str(landmark_id))


def _finish(frame: pd.DataFrame) -> pd.DataFrame:
    """Drop repeated ids (first kept) and make ``landmark_id`` a category of str.

    Same result as ``drop_duplicates("id")``; on GLDv2's 4.1M ids :func:`duplicated_ids`
    takes 4.8 s where ``drop_duplicates`` took 12.0 s (benchmarks/gldv2_scale.py).
    """
    frame = frame[~duplicated_ids(frame["id"].to_numpy())].reset_index(drop=True)
    frame["landmark_id"] = frame["landmark_id"].astype("category")
    return frame


_SAFE_BYTE = np.zeros(256, dtype=bool)
_SAFE_BYTE[np.frombuffer(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_-", dtype=np.uint8)] = True


def _short_safe_ids(ids: np.ndarray) -> bool:
    """Fast path of :func:`mark_bad_ids`: True when every id has 3 to 16 characters of
    :data:`GLDV2_ID` (GLDv2's 16 hex digits: 4.1M ids in ~0.7 s instead of ~2 s by regex).
    False means "check each id", not "bad"."""
    try:
        raw = np.asarray(ids, dtype="S17")
    except (UnicodeEncodeError, ValueError, TypeError):
        return False
    digits = raw.view(np.uint8).reshape(-1, 17)
    used = digits != 0
    return bool(len(raw) and not used[:, 16].any() and used[:, :3].all()
                and (used[:, :-1] >= used[:, 1:]).all() and (_SAFE_BYTE[digits] | ~used).all())


_HEX = np.full(256, 255, dtype=np.uint8)
_HEX[np.frombuffer(b"0123456789abcdef", dtype=np.uint8)] = np.arange(16, dtype=np.uint8)


def duplicated_ids(ids: np.ndarray) -> np.ndarray:
    """Boolean mask, shape ``[len(ids)]``: True for every repeat of an earlier id (exact).

    GLDv2 ids (16 lower-case hex digits) are packed into uint64 first, which hashes
    ~3x faster than Python strings; any other id falls back to string hashing.
    """
    try:
        raw = np.asarray(ids, dtype="S17")
    except (UnicodeEncodeError, ValueError, TypeError):
        return pd.Series(ids, dtype=object).duplicated().to_numpy()
    digits = raw.view(np.uint8).reshape(-1, 17)
    nibbles = _HEX[digits[:, :16]]
    if len(raw) == 0 or (digits[:, 16] != 0).any() or (nibbles == 255).any():
        return pd.Series(ids, dtype=object).duplicated().to_numpy()
    packed = np.ascontiguousarray((nibbles[:, 0::2] << 4) | nibbles[:, 1::2]).view(np.uint64).ravel()
    return pd.Series(packed).duplicated().to_numpy()
