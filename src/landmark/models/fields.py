"""Validation messages and strictness shared by every pydantic settings model (pydantic only).

:func:`validation_fields` turns a pydantic ``ValidationError`` into one line naming each bad
field and what to change; :func:`refuse_bool_numbers` refuses ``true``/``false`` where a
number is expected.  They live apart from :mod:`landmark.models.spec` so that settings
modules (``landmark.config_files``, ``landmark.retrieval.config``) and the command line load
without building the model specification's classes (0.15 CPU-s).
"""
from __future__ import annotations

import difflib
import typing
from typing import Literal

from pydantic import BaseModel, ValidationError, ValidationInfo


def _takes_bool(annotation) -> bool:
    """Whether a field annotation admits ``True``/``False`` (``bool``, ``bool | Literal["auto"]``...)."""
    if annotation is bool:
        return True
    if typing.get_origin(annotation) is Literal:
        return any(isinstance(a, bool) for a in typing.get_args(annotation))
    return any(_takes_bool(a) for a in typing.get_args(annotation))


def validation_fields(err: ValidationError, schema: type[BaseModel] | None = None) -> str:
    """One line naming each bad field of a pydantic error and what to change there:
    ``stages.0.lr: Input should be greater than 0 (got -0.001); model.backbon: unknown key
    (did you mean backbone?)``.

    Args:
        schema: the model that was validated; with it an unknown key names the closest
            known key at its place (or lists them).
    """
    return "; ".join(_field_problem(e, schema) for e in err.errors())


def _field_problem(error: dict, schema: type[BaseModel] | None) -> str:
    """``where: what is wrong (got VALUE)`` for one pydantic error."""
    loc = error["loc"]
    where = ".".join(map(str, loc)) or "value"
    if error["type"] == "extra_forbidden":
        known = _known_keys(schema, loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        hint = f"did you mean {close[0]}?" if close else f"known keys: {', '.join(known)}" if known else ""
        return f"{where}: unknown key" + (f" ({hint})" if hint else "")
    message = error["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    value = error.get("input")
    if error["type"] not in ("value_error", "assertion_error", "missing") and (
            value is None or isinstance(value, (str, int, float))):
        shown = repr(value)
        message += f" (got {shown if len(shown) <= 40 else shown[:37] + '...'})"
    return f"{where}: {message}"


def _known_keys(schema: type[BaseModel] | None, loc: tuple) -> list[str]:
    """The field names of the model found at ``loc`` inside ``schema`` ([] when not a model)."""
    model = schema
    for part in loc:
        if model is None:
            return []
        if isinstance(part, int):   # an item of a list field: the field's model already
            continue
        field = model.model_fields.get(str(part))
        model = _model_in(field.annotation) if field is not None else None
    return list(model.model_fields) if model is not None else []


def _model_in(annotation) -> type[BaseModel] | None:
    """The pydantic model in a field annotation (``Stage``, ``list[Stage]``, ``Crop | None``...)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next((m for m in map(_model_in, typing.get_args(annotation)) if m is not None), None)


def refuse_bool_numbers(model: type[BaseModel], value, info: ValidationInfo):
    """A ``field_validator("*", mode="before")`` body: YAML ``true``/``false`` in a field that is
    not a boolean is an error, not the number 1 or 0 (pydantic's lax mode reads it so)."""
    if isinstance(value, bool) and not _takes_bool(model.model_fields[info.field_name].annotation):
        raise ValueError(f"{str(value).lower()}: a true/false where a number belongs")
    return value
