"""Draw docs/layers.svg: the package's layers (tests/test_layers.py's LAYERS), lowest at the
bottom, each box with its modules and lines of code, and beside it how many of the imports
made in that layer go to each lower one (imports inside functions included).  Plain SVG, no
graphviz or matplotlib:  python docs/layers.py  (rewrites docs/layers.svg)."""
from __future__ import annotations

import sys
from collections import Counter
from html import escape
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from test_layers import LAYERS, PACKAGE, _imports, _layer  # noqa: E402

WIDTH, ROW, GAP, LEFT = 900, 58, 14, 20


def _top(path: Path) -> str:
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def layer_facts() -> tuple[list[dict], Counter]:
    """Per layer: its modules and lines; and (from, to) -> imports from a layer into a lower one."""
    facts = [{"names": names, "modules": 0, "lines": 0} for names in LAYERS]
    edges: Counter = Counter()
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.parent == PACKAGE and path.name == "__init__.py":
            continue
        own = _layer(_top(path))
        facts[own]["modules"] += 1
        facts[own]["lines"] += len(path.read_text().splitlines())
        for _, module in set(_imports(path)):
            if module.startswith("landmark.") and (other := _layer(module.split(".")[1])) < own:
                edges[(own, other)] += 1
    return facts, edges


def svg() -> str:
    facts, edges = layer_facts()
    height = len(facts) * (ROW + GAP) + 60
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
           f'font-family="sans-serif" font-size="13">',
           f'<text x="{LEFT}" y="22" font-size="15" font-weight="bold">landmark: layers (a module imports '
           f'its own layer and those below, never one above; tests/test_layers.py)</text>']
    for k, fact in enumerate(facts):
        y = 40 + (len(facts) - 1 - k) * (ROW + GAP)
        names = ", ".join(n + ("" if (PACKAGE / f"{n}.py").is_file() else "/") for n in fact["names"])
        below = ", ".join(f"{'/'.join(facts[o]['names'][:1])} {n}" for (f, o), n in sorted(edges.items()) if f == k)
        out += [f'<rect x="{LEFT}" y="{y}" width="{WIDTH - 2 * LEFT}" height="{ROW}" rx="6" '
                f'fill="hsl({200 + 14 * k}, 45%, 90%)" stroke="#556"/>',
                f'<text x="{LEFT + 12}" y="{y + 22}" font-weight="bold">{k}  {escape(names)}</text>',
                f'<text x="{LEFT + 12}" y="{y + 44}" fill="#333">{fact["modules"]} modules, {fact["lines"]:,} lines'
                + (f'; imports from below: {escape(below)}' if below else '') + '</text>']
    out.append("</svg>")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    (ROOT / "docs" / "layers.svg").write_text(svg())
    print(ROOT / "docs" / "layers.svg")
