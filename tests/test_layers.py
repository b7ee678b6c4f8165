"""Layers only look down (docs/architecture.md): data -> models -> config -> evaluation (numbers)
-> retrieval -> inference -> training -> reporting (pictures) -> CLI / service.  The library's
main job imports neither matplotlib nor the HTML report, ``import landmark`` not even torch, and
reporting changes no global matplotlib state."""
import ast
import os
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "landmark"
#: Layers, lowest first: a module imports its own layer and those before it, never a later one.
LAYERS = [("io", "devices", "_lazy", "memory", "threads", "defaults"), ("data",), ("models",), ("config", "config_files", "runs"),
          ("evaluation",), ("retrieval",), ("inference",), ("training",), ("reporting",), ("serving", "cli")]
#: Packages and modules below reporting: none of them may draw.
LOWER = ("config.py", "config_files.py", "runs.py", "defaults.py", "devices.py", "io.py", "memory.py", "threads.py", "data",
         "models", "training", "inference", "retrieval", "evaluation")


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``path``, at any depth (lazy imports too)."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    package = parts[:-1]  # the package a relative import starts from (also for __init__.py)
    found, tree = [], ast.parse(path.read_text())
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and getattr(block.test, "id", "") == "TYPE_CHECKING" for n in ast.walk(block)}
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1]) if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            found += [(node.lineno, f"{module}.{alias.name}" if node.level and not node.module else module)
                      for alias in node.names]
    return found


def _files(*names: str) -> list[Path]:
    return [f for name in names for f in ([PACKAGE / name] if name.endswith(".py") else
                                          sorted((PACKAGE / name).rglob("*.py")))]


def _fresh_python(code: str) -> str:
    """Run ``code`` in a new interpreter on this checkout's package; its stdout, stripped."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PACKAGE.parent), os.environ.get("PYTHONPATH", "")]),
           "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _layer(name: str) -> int:
    return next(k for k, names in enumerate(LAYERS) if name in names)


def test_layers_only_look_down():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.parent == PACKAGE and path.name == "__init__.py":
            continue   # the public API re-exports every layer, lazily
        own = _layer(path.relative_to(PACKAGE).parts[0].removesuffix(".py"))
        upward += [f"{path.relative_to(PACKAGE)}:{line} imports {module}"
                   for line, module in sorted(set(_imports(path)))
                   if module.startswith("landmark.") and _layer(module.split(".")[1]) > own]
    assert not upward, "\n".join(upward)


def test_lower_layers_never_import_matplotlib():
    bad = [f"{path.relative_to(PACKAGE)}:{line} imports {module}"
           for path in _files(*LOWER) for line, module in _imports(path) if module.split(".")[0] == "matplotlib"]
    assert not bad, "\n".join(bad)


def test_reporting_leaves_matplotlib_global_state_alone():
    """No pyplot (its figure manager and backend) and no matplotlib.use in reporting."""
    bad = [f"{path.relative_to(PACKAGE)}:{line} imports {module}"
           for path in _files("reporting") for line, module in _imports(path)
           if module.startswith("matplotlib.pyplot") or module == "pylab"]
    bad += [str(path.relative_to(PACKAGE)) for path in _files("reporting") if "matplotlib.use(" in path.read_text()]
    assert not bad, "\n".join(bad)


def test_import_landmark_loads_neither_torch_nor_matplotlib():
    code = ("import sys, landmark, landmark.config, landmark.models.spec, landmark.data.preprocess\n"
            "print(sorted(m for m in ('torch', 'matplotlib', 'landmark.reporting') if m in sys.modules))")
    assert _fresh_python(code) == "[]"


def test_the_main_job_imports_neither_matplotlib_nor_the_report():
    """In a fresh interpreter: ``import landmark`` and the names of the README's main job."""
    code = ("import sys, landmark\n"
            "for name in ('train', 'resume', 'evaluate', 'predict', 'Recognizer', 'load_model', 'create_model'):\n"
            "    getattr(landmark, name)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'matplotlib' or m == 'pylab'\n"
            "             or m.startswith('landmark.reporting') or m.startswith('landmark.cli')))\n")
    assert _fresh_python(code) == "[]"


def test_importing_reporting_keeps_the_matplotlib_backend():
    """A notebook user importing the reporting layer keeps the backend they chose."""
    code = ("import matplotlib\n"
            "matplotlib.use('svg')\n"
            "import landmark.reporting, landmark.reporting.report, landmark.reporting.dataset_report\n"
            "import landmark.reporting.explain\n"
            "import sys\n"
            "print(matplotlib.get_backend(), 'matplotlib.pyplot' in sys.modules)\n")
    assert _fresh_python(code).split() == ["svg", "False"]


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_cycles() -> list[list[str]]:
    """Circles of modules importing each other, counting imports inside functions too (not
    ``if TYPE_CHECKING:`` ones): strongly connected components of the import graph (Tarjan)."""
    files = {_module(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        targets = set()
        for _, target in _imports(path):
            while target and target not in files:   # from .x import name -> module .x
                target = target.rpartition(".")[0]
            if target and target != name:
                targets.add(target)
        graph[name] = sorted(targets)
    index, low, stack, on, cycles = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
                on.discard(component[-1])
            if len(component) > 1:
                cycles.append(sorted(component))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_no_import_cycle_even_through_imports_inside_functions():
    assert import_cycles() == []


def test_the_cycle_finder_finds_a_cycle_through_a_function(tmp_path, monkeypatch):
    package = tmp_path / "landmark"
    (package / "inference").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "inference" / "__init__.py").write_text("")
    (package / "inference" / "a.py").write_text("from .b import x\n")
    (package / "inference" / "b.py").write_text("def x():\n    from .a import y\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", package)
    assert import_cycles() == [["landmark.inference.a", "landmark.inference.b"]]
