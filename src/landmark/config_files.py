"""Settings files: the strict pydantic base and the one YAML loader of every config.

:class:`_Strict` (unknown keys, non-finite numbers and booleans for numbers refused),
:func:`read_config` (a YAML file or a preset by name, overrides merged, validated) and
:func:`validate_config` (one-line errors naming each field) serve the training config
(:mod:`landmark.config`) and the retrieval settings (:mod:`landmark.retrieval.config`).
This module imports pydantic only (PyYAML when a file is read), so the command line, whose
defaults come from those settings, starts without building the training config's classes.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator

from .models.fields import refuse_bool_numbers, validation_fields

if TYPE_CHECKING:   # PyYAML is imported when a file is read
    import yaml

PRESETS_DIR = Path(__file__).parent / "configs"


class _Strict(BaseModel):
    """Unknown keys, non-finite numbers (``.inf``, ``.nan``) and true/false for numbers are refused."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_numbers(cls, value, info: ValidationInfo):
        return refuse_bool_numbers(cls, value, info)


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


_M = TypeVar("_M", bound=BaseModel)


def read_config(source: str | Path, schema: type[_M], presets: Path, overrides: dict | None = None,
                what: str = "config", adjust: Callable[[dict], dict] | None = None) -> _M:
    """Validate a YAML file, or the preset ``presets/<source>.yaml``, against ``schema``.

    The one loader behind :func:`load_config` and
    :func:`landmark.retrieval.config.load_retrieval_config`.  ``overrides`` (a nested
    mapping) is merged over the file, then ``adjust`` (raw mapping -> raw mapping) applied,
    before validation; ``what`` names the kind of config in error messages.

    Raises:
        FileNotFoundError: neither a file nor a preset of that name exists (one line
            naming the presets).
        ValueError: not YAML, not a mapping, or it does not validate; the message names
            each bad field.
    """
    import yaml
    path = Path(source)
    if not path.is_file():   # a folder named like a preset (a run folder 'fast') does not hide the preset
        preset = presets / f"{source}.yaml"
        if not preset.is_file():
            names = ", ".join(sorted(p.stem for p in presets.glob("*.yaml")))
            kind = "a folder, not a YAML file," if path.is_dir() else "neither a file"
            raise FileNotFoundError(f"{what} {str(source)!r} is {kind} nor a preset ({names})")
        path = preset
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"{what} {path} is not valid YAML: {yaml_problem(err)}") from None
    if not isinstance(raw, dict):
        keys = ", ".join(f"{k}:" for k in schema.model_fields)
        raise ValueError(f"{what} {path} must be a YAML mapping ({keys} ...), "
                         f"found {'an empty file' if raw is None else type(raw).__name__}")
    raw = _merge(raw, overrides or {})
    return validate_config(schema, adjust(raw) if adjust else raw, f"{what} {path}")


def yaml_problem(err: yaml.YAMLError) -> str:
    """A YAML parser error on one line: ``line 2, column 1: expected ',' or ']', but got
    '<stream end>' (while parsing a flow sequence from line 1, column 9)``."""
    import yaml
    if not isinstance(err, yaml.MarkedYAMLError) or err.problem is None:
        return " ".join(str(err).split())
    mark, context = err.problem_mark, err.context_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    since = ""
    if err.context and context is not None and (context.line, context.column) != (mark.line, mark.column):
        since = f" ({err.context} from line {context.line + 1}, column {context.column + 1})"
    return where + err.problem + since


def validate_config(schema: type[_M], raw: dict, where: str) -> _M:
    """``schema.model_validate(raw)``; a one-line ValueError names ``where`` it came from and each
    bad field with what to change (:func:`landmark.models.spec.validation_fields`)."""
    try:
        return schema.model_validate(raw)
    except ValidationError as err:
        raise ValueError(f"invalid {where}: {validation_fields(err, schema)}") from None
