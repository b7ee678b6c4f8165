"""A self-contained HTML page: PNGs embedded as ``data:`` URIs, inline CSS, no script and
no network access needed to view it."""
from __future__ import annotations

import base64
import html
from pathlib import Path

import pandas as pd

CSS = """
body { font-family: sans-serif; max-width: 1200px; margin: 1em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 1.6em; }
img { max-width: 100%; border: 1px solid #ddd; margin: .4em 0; }
table { border-collapse: collapse; margin: .5em 0; font-size: .9em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th { background: #f2f2f2; } td:first-child, th:first-child { text-align: left; }
.note { color: #555; font-size: .9em; } nav a { margin-right: .8em; }
"""


class Page:
    """Collects sections of text, tables and images and writes one HTML file."""

    def __init__(self, title: str):
        self.title = title
        self.sections: list[tuple[str, list[str]]] = []

    def section(self, title: str) -> None:
        """Start a new section (``<h2>`` with an anchor in the navigation bar)."""
        self.sections.append((title, []))

    def text(self, text: str, note: bool = False) -> None:
        """A paragraph of plain text (escaped)."""
        cls = ' class="note"' if note else ""
        self.sections[-1][1].append(f"<p{cls}>{html.escape(text)}</p>")

    def table(self, frame: pd.DataFrame, floats: str = "{:.3f}") -> None:
        """A table from a frame (values escaped, floats formatted with ``floats``)."""
        self.sections[-1][1].append(frame.to_html(index=False, float_format=floats.format, border=0, escape=True))

    def image(self, path: str | Path, alt: str) -> None:
        """Embed a PNG file as a base64 ``data:`` URI."""
        data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
        self.sections[-1][1].append(f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}" '
                                    f'title="{html.escape(Path(path).name)}">')

    def write(self, path: str | Path) -> None:
        """Write the page (UTF-8)."""
        nav = " ".join(f'<a href="#s{k}">{html.escape(t)}</a>' for k, (t, _) in enumerate(self.sections))
        body = "\n".join(f'<h2 id="s{k}">{html.escape(t)}</h2>\n' + "\n".join(parts)
                         for k, (t, parts) in enumerate(self.sections))
        Path(path).write_text(f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
                              f"<title>{html.escape(self.title)}</title><style>{CSS}</style></head>\n"
                              f"<body><h1>{html.escape(self.title)}</h1><nav>{nav}</nav>\n{body}\n</body></html>\n",
                              encoding="utf-8")
