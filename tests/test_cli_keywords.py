"""The command line calls the library with keywords, and takes its retrieval defaults from it.

Rule checked over ``src/landmark/cli.py``: every call of a name the CLI imports from
``landmark`` (a function, a class, or a method reached through an imported class such as
``Recognizer.load``) passes at most two arguments by position -- the subject(s) of the
call, such as the input and the output -- and every setting by keyword, so that
reordering or inserting a parameter in the library can never silently change what the
command line means.
"""
from __future__ import annotations

import ast
from pathlib import Path

import landmark.cli

CLI = Path(landmark.cli.__file__)
MAX_POSITIONAL = 2


def _library_names(tree: ast.AST) -> set[str]:
    """Names bound by ``from .x import a`` / ``from landmark.x import a`` anywhere in the module."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.level > 0 or (node.module or "").startswith("landmark")):
            names.update(alias.asname or alias.name for alias in node.names)
    return names


def _called_name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
        return func.value.id   # Recognizer.load(...)
    return None


def test_cli_calls_the_library_with_keywords():
    tree = ast.parse(CLI.read_text())
    library = _library_names(tree)
    assert {"knn_predict", "build_index", "index_embeddings", "download_csv", "DownloadOptions"} <= library
    offenders = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _called_name(node.func) in library and len(node.args) > MAX_POSITIONAL:
            offenders.append(f"line {node.lineno}: {ast.unparse(node.func)} with {len(node.args)} positional arguments")
    assert not offenders, "\n".join(offenders)


def test_library_steps_take_settings_by_keyword():
    """The functions the retrieval and download commands call accept options only by keyword."""
    import inspect

    from landmark.data.download import download_csv
    from landmark.data.gldv2_shards import download_shards
    from landmark.retrieval import embeddings, knn, pipeline
    steps = [pipeline.embed_checkpoint, pipeline.index_embeddings, pipeline.build_index, pipeline.knn_predict,
             pipeline.image_frame, embeddings.embed_images, knn.recognise, knn.verify_rerank, download_csv,
             download_shards]
    for fn in steps:
        params = inspect.signature(fn).parameters.values()
        positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        assert len(positional) <= 4, f"{fn.__qualname__} takes {positional} by position"
        assert any(p.kind is p.KEYWORD_ONLY for p in params), f"{fn.__qualname__} has no keyword-only options"
