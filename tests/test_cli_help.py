"""`landmark --help` and every `landmark CMD --help` read as sentences: the one-line summary
in the command list is a whole sentence, and every argument and option says what it is."""
from __future__ import annotations

import typer
from typer.testing import CliRunner

from landmark.cli import _default, app
from landmark.config import PRESETS_DIR


def _commands(group, prefix: str = "") -> dict:
    found = {}
    for name, command in group.commands.items():
        found[prefix + name] = command
        if hasattr(command, "commands"):
            found.update(_commands(command, f"{prefix}{name} "))
    return found


def test_every_command_summary_is_one_line_and_every_parameter_is_explained():
    commands = _commands(typer.main.get_command(app))
    assert {"train", "predict", "knn", "recognize", "serve", "index build", "index add"} <= set(commands)
    for name, command in commands.items():
        summary = (command.help or "").strip().split("\n\n")[0]
        # the command list shows this paragraph with its line breaks: a break there cuts a sentence
        assert summary and "\n" not in summary, f"{name}: summary spans lines: {summary!r}"
        for param in command.params:
            if param.name != "help" and not hasattr(command, "commands"):
                assert (getattr(param, "help", None) or "").strip(), f"landmark {name}: {param.name} has no help"


def test_help_lists_every_training_preset_and_says_what_none_means():
    result = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for preset in PRESETS_DIR.glob("*.yaml"):
        assert preset.stem in result.output, preset.stem
    assert _default(None) == "default off, or the preset's" and _default(10) == "default 10, or the preset's"


def test_tag_help_shows_its_batch_size_as_a_number():
    from landmark.defaults import TAG_BATCH
    result = CliRunner().invoke(app, ["tag", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "TAG_BATCH" not in result.output and f"[default: {TAG_BATCH}]" in result.output
