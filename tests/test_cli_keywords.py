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
    from landmark.inference.predict import knn_predict
    from landmark.retrieval import embeddings, knn, pipeline
    steps = [pipeline.embed_checkpoint, pipeline.index_embeddings, pipeline.build_index, pipeline.knn_vote_predict,
             knn_predict,
             pipeline.image_frame, embeddings.embed_images, knn.recognise, knn.verify_rerank, download_csv,
             download_shards]
    for fn in steps:
        params = inspect.signature(fn).parameters.values()
        positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        assert len(positional) <= 4, f"{fn.__qualname__} takes {positional} by position"
        assert any(p.kind is p.KEYWORD_ONLY for p in params), f"{fn.__qualname__} has no keyword-only options"


def _typer_literal(default: ast.expr | None):
    """The literal default of ``typer.Option(<literal>, ...)`` / ``typer.Argument``; None if not one."""
    if isinstance(default, ast.Call) and ast.unparse(default.func) in ("typer.Option", "typer.Argument") \
            and default.args and isinstance(default.args[0], ast.Constant) \
            and default.args[0].value is not None and default.args[0].value is not Ellipsis \
            and not isinstance(default.args[0].value, bool):   # --x/--no-x: the flag's state, not a setting
        return default.args[0].value
    if isinstance(default, ast.Call) and ast.unparse(default.func) in ("typer.Option", "typer.Argument") \
            and default.args and isinstance(default.args[0], ast.Call) and ast.unparse(default.args[0].func) == "Path" \
            and default.args[0].args and isinstance(default.args[0].args[0], ast.Constant):
        return Path(default.args[0].args[0].value)
    return None


def _library_object(command: ast.FunctionDef, tree: ast.Module, func: ast.expr):
    """The library function or class a call in ``command`` reaches (imports at module or function level)."""
    import importlib
    import inspect
    name = _called_name(func)
    for node in [*ast.walk(command), *tree.body]:
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("landmark")):
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    module = importlib.import_module("landmark" + ("." + node.module if node.module else "")
                                                     if node.level else node.module)
                    found = getattr(module, alias.name)
                    if isinstance(func, ast.Attribute):
                        found = getattr(found, func.attr, None)
                    return found if callable(found) or inspect.isclass(found) else None
    return None


def test_cli_states_no_default_the_library_states():
    """A typer default written as a literal and passed to a library parameter that has the same
    default is a second home of that default: take it from the library instead (issue 20)."""
    import inspect
    tree = ast.parse(CLI.read_text())
    offenders = []
    for command in (n for n in tree.body if isinstance(n, ast.FunctionDef)):
        args = command.args.args + command.args.kwonlyargs
        defaults = [None] * (len(command.args.args) - len(command.args.defaults)) + command.args.defaults \
            + command.args.kw_defaults
        literal = {a.arg: _typer_literal(d) for a, d in zip(args, defaults) if _typer_literal(d) is not None}
        for call in (n for n in ast.walk(command) if isinstance(n, ast.Call)):
            passed = {kw.arg: kw.value.id for kw in call.keywords
                      if kw.arg and isinstance(kw.value, ast.Name) and kw.value.id in literal}
            if not passed:
                continue
            target = _library_object(command, tree, call.func)
            try:
                params = inspect.signature(target).parameters if target is not None else {}
            except (TypeError, ValueError):
                continue
            for keyword, option in passed.items():
                param = params.get(keyword)
                if param is not None and param.default is not param.empty and param.default == literal[option] \
                        and type(param.default) is type(literal[option]):
                    offenders.append(f"{command.name}: --{option.replace('_', '-')} states {literal[option]!r}, "
                                     f"the default of {ast.unparse(call.func)}({keyword}=)")
    assert not offenders, "\n".join(offenders)


#: modules whose functions the package calls with many positional arguments by their own convention
_EXTERNAL = {"cv2", "faiss", "F", "np", "log", "torch", "asyncio", "pool", "os", "logging", "TF"}


def test_package_calls_its_own_functions_with_at_most_four_positional_arguments():
    """Package-wide (issue 20): a call of a function or class defined in ``landmark`` passes at
    most 4 arguments by position, the rest by keyword (``fn(*args)`` pass-throughs aside)."""
    package = CLI.parent
    trees = {p: ast.parse(p.read_text()) for p in sorted(package.rglob("*.py"))}
    defined, passthrough = set(), set()
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                defined.add(node.name)
                if not isinstance(node, ast.ClassDef) and node.args.vararg is not None:
                    passthrough.add(node.name)
    offenders = []
    for path, tree in trees.items():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or len(node.args) <= 4 or any(isinstance(a, ast.Starred) for a in node.args):
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) and \
                isinstance(func.value, ast.Name) and func.value.id not in _EXTERNAL else None
            if name == "cls" or (name in defined and name not in passthrough):
                offenders.append(f"{path.relative_to(package)}:{node.lineno} {ast.unparse(func)} "
                                 f"with {len(node.args)} positional arguments")
    assert not offenders, "\n".join(offenders)
