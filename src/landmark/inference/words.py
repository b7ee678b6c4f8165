"""How sure an answer is, in words a person reads: the one mapping from score and verdict to words.

Used by :class:`~landmark.inference.recognizer.Answer` (its ``certainty`` and ``words``, so
``recognize --json``, the service's JSON and the web page show the same), by ``landmark tag``
(the ``landmark:certainty`` field of a sidecar) and by the report.

* ``probably``: the verdict is the landmark (score at or above the "no landmark" threshold);
* ``not sure``: below the threshold, but at least :data:`NOT_SURE_FRACTION` of it: the best
  guess is shown as a guess and nothing is tagged;
* ``no landmark``: below that.

The words follow the verdict and do not second-guess it: the threshold was chosen on
validation photos (``landmark train``), and ``not sure`` only marks the guesses it rejects
narrowly.
"""
from __future__ import annotations

PROBABLY, NOT_SURE, NO_LANDMARK = "probably", "not sure", "no landmark"
#: A rejected answer whose score is at least this fraction of the threshold is ``not sure``.
NOT_SURE_FRACTION = 0.5


def certainty(score: float, threshold: float, is_landmark: bool) -> str:
    """``probably``, ``not sure`` or ``no landmark`` (module docstring) for an answer's
    ``score`` and ``threshold`` (same scale, in [0, 1]) and its verdict ``is_landmark``."""
    if is_landmark:
        return PROBABLY
    if threshold > 0 and score >= NOT_SURE_FRACTION * threshold:
        return NOT_SURE
    return NO_LANDMARK


def sentence(name: str, score: float, threshold: float, is_landmark: bool) -> str:
    """The answer in a few words: ``probably Colosseum``, ``not sure: maybe Colosseum`` or
    ``no landmark``."""
    said = certainty(score, threshold, is_landmark)
    if said == PROBABLY:
        return f"{PROBABLY} {name}"
    if said == NOT_SURE and name:
        return f"{NOT_SURE}: maybe {name}"
    return NO_LANDMARK
