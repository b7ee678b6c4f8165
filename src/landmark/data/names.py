"""Landmark names: the one rule for what a name may hold, and how any stored name is shown.

Names arrive from users (``landmark serve`` enrolment, a names CSV) and end up on terminals,
in JSON and in the web page.  A new name (:func:`check_name`) is at most
:data:`MAX_NAME_CHARS` characters, none of them a control or format character (Unicode
categories ``Cc``, ``Cf``, ``Cs``, ``Co``, ``Cn``, ``Zl``, ``Zp``: ESC sequences, ``\\r``,
bidirectional overrides, line separators).  A name stored before this rule, or read from a
file, is shown through :func:`printable_name`, which escapes those characters and cuts the
length, so printing one never moves a terminal's cursor or floods an answer.

Every place that shows a landmark to a person (``predict``'s ``name`` column, ``recognize``,
the web page, ``landmark tag``'s keywords, the report's charts) goes through
:func:`display_name`: the stored name (a GLDv2 category, a names file, an enrolled name)
when there is one, else the class folder's name made readable by :func:`pretty_name`
(``hue_imperial_city`` -> ``Hue Imperial City``).
"""
from __future__ import annotations

import re
import unicodedata

#: Longest landmark name, in characters (GLDv2's longest category name is about 110).
MAX_NAME_CHARS = 200

_HIDDEN = ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")


def _hidden(char: str) -> bool:
    return unicodedata.category(char) in _HIDDEN


def first_hidden(text: str) -> int | None:
    """Position of the first control / format character of ``text`` (None: there is none);
    the rule of :func:`check_name`, also applied to upload file names that the service shows back."""
    return next((k for k, c in enumerate(text) if _hidden(c)), None)


def check_name(name: str) -> str:
    """``name`` without surrounding spaces, when it may be stored.

    Raises:
        ValueError: empty, longer than :data:`MAX_NAME_CHARS`, or holding a control / format
            character (the message names the first one and its position).
    """
    name = name.strip()
    if not name:
        raise ValueError("the name is empty: give the landmark's name, or leave the field out")
    if len(name) > MAX_NAME_CHARS:
        raise ValueError(f"the name has {len(name)} characters; at most {MAX_NAME_CHARS} are kept")
    bad = first_hidden(name)
    if bad is not None:
        raise ValueError(f"the name holds the control character {name[bad]!r} at position {bad}: "
                         f"use printable characters only")
    return name


def printable_name(name: str) -> str:
    """``name`` safe to print: control / format characters as escapes (``\\x1b``), at most
    :data:`MAX_NAME_CHARS` characters (longer ones end in ``…``)."""
    if len(name) > MAX_NAME_CHARS:
        name = name[:MAX_NAME_CHARS - 1] + "…"
    if any(_hidden(c) for c in name):
        name = "".join(c.encode("unicode_escape").decode("ascii") if _hidden(c) else c for c in name)
        if len(name) > MAX_NAME_CHARS:
            name = name[:MAX_NAME_CHARS - 1] + "…"
    return name


_SEPARATORS = re.compile(r"[\s_]+")


def pretty_name(folder: str) -> str:
    """A class folder's name as people write it: ``_`` and runs of spaces become one space,
    and a name written all in lower case gets capital initials (``hue_imperial_city`` ->
    ``Hue Imperial City``, ``st-paul's_cathedral`` -> ``St-Paul's Cathedral``).  A name that
    already has a capital letter (``Piazza_San_Marco``, ``McDonald's``) keeps its case; an id
    without letters (``12345``) is returned as it is."""
    text = _SEPARATORS.sub(" ", str(folder)).strip()
    if not text:
        return str(folder)
    if text == text.lower():
        text = re.sub(r"(^|[\s-])(\w)", lambda m: m.group(1) + m.group(2).upper(), text)
    return text


def display_name(landmark_id: str, name: str | None = None) -> str:
    """What a person reads for a landmark: ``name`` when one was stored and differs from the id
    (GLDv2 category, names file, enrolment), else :func:`pretty_name` of the id (a folder
    tree's class folder); always through :func:`printable_name` (safe to print)."""
    landmark_id = str(landmark_id)
    shown = name if name and str(name) != landmark_id else pretty_name(landmark_id)
    return printable_name(str(shown))


#: Class folder names (any case; ``_``, ``-`` or spaces between the words) that hold photos of no
#: landmark in a labelled tree: ``landmark evaluate`` / ``report`` score them as "no landmark", and
#: ``index build`` / ``index add --data`` leave them out of an index (``landmark knn --nonlandmarks``
#: is where such photos are used).
#: Singular and plural alike (``non_landmark`` was trained as a landmark named "Non Landmark").
NO_LANDMARK_FOLDERS = ("no landmark", "no landmarks", "nonlandmark", "nonlandmarks", "non landmark", "non landmarks",
                       "not landmark", "not landmarks")


class NoLandmarkClassWarning(UserWarning):
    """A model trained with a folder of no landmark as a class (:func:`warn_no_landmark_class`)."""


def warn_no_landmark_class(classes) -> None:
    """Warn (one line) when a model's ``classes`` hold a folder of no landmark (:func:`is_no_landmark_folder`):
    a run begun before 2026-12-08 trained a tree's ``no_landmark/`` as a class, so it can answer "No
    Landmark" as a landmark (``is_landmark`` true); since then such photos choose the threshold instead."""
    import warnings
    found = [str(c) for c in classes if is_no_landmark_folder(str(c))]
    if found:
        warnings.warn(f"the model has a class {found[0]!r}, photos without a landmark (trained before 2026-12-08, "
                      f"when a tree's no_landmark/ folder was a class): it can answer {display_name(found[0])!r} as "
                      f"a landmark; train it again (that folder's photos then choose the 'no landmark' threshold)",
                      NoLandmarkClassWarning, stacklevel=3)


def is_no_landmark_folder(folder: str) -> bool:
    """Whether a class folder's name (or the landmark id made of it, :func:`landmark.data.gldv2.folder_landmark_id`:
    ``no_landmark``) is one of :data:`NO_LANDMARK_FOLDERS` (``no_landmark``, ``No Landmarks``, ``non-landmarks``)."""
    return pretty_name(str(folder).replace("-", " ")).lower() in NO_LANDMARK_FOLDERS
