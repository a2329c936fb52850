"""The report as a document: sections of blocks (paragraphs, tables, figures, code) and their two renderings,
markdown and one self-contained HTML page.

The report is built once as sections of blocks and rendered twice, so the two files can never say different things.
Nothing here knows about merging.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from loramerge import paths


def plural(count: int, noun: str) -> str:
    """ "1 pair", "3 pairs": a count in words, for any section's prose."""
    return f"{count} {noun}" + ("" if count == 1 else "s")


@dataclass
class Table:
    frame: pd.DataFrame
    id: str | None = None  # the HTML table's id, for readers' links and the browser test


@dataclass
class Figure:
    path: Path  # a PNG under reports/figures: linked from the markdown, inlined in the HTML
    caption: str


@dataclass
class Code:
    text: str


Block = str | Table | Figure | Code  # a str is one plain-text paragraph


@dataclass
class Section:
    id: str
    title: str
    blocks: list[Block]


def markdown_block(block: Block) -> str:
    if isinstance(block, Table):
        formatted = not any(
            pd.api.types.is_numeric_dtype(dtype) for dtype in block.frame.dtypes
        )  # pre-formatted text: keep "5e-05" as written
        return (
            block.frame.to_markdown(index=False, floatfmt=".3f", disable_numparse=formatted)
            if len(block.frame)
            else "(none)"
        )
    if isinstance(block, Figure):
        return f"![{block.caption}]({block.path.relative_to(paths.REPORTS).as_posix()})"
    if isinstance(block, Code):
        return f"```yaml\n{block.text.rstrip()}\n```"
    return block


def html_block(block: Block) -> str:
    if isinstance(block, Table):
        return (
            block.frame.to_html(index=False, table_id=block.id, border=0, na_rep="–", float_format="{:.3f}".format)
            if len(block.frame)
            else "<p>(none)</p>"
        )
    if isinstance(block, Figure):
        data = base64.b64encode(block.path.read_bytes()).decode("ascii")
        return f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(block.caption)}"><figcaption>{html.escape(block.caption)}</figcaption></figure>'
    if isinstance(block, Code):
        return f"<pre>{html.escape(block.text)}</pre>"
    return f"<p>{html.escape(block)}</p>"


def render_markdown(title: str, sections: list[Section]) -> str:
    parts = [f"# {title}"]
    for section in sections:
        parts += [f"## {section.title}", *map(markdown_block, section.blocks)]
    return "\n\n".join(parts) + "\n"


STYLE = """body{font-family:sans-serif;max-width:1400px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:.9em}th,td{padding:.25em .6em;border-bottom:1px solid #ddd;text-align:left}
th{background:#f3f3f3}img{max-width:100%}figure{margin:1em 0}#heatmaps figure{display:inline-block;max-width:32%;vertical-align:top}
figcaption{font-size:.85em;color:#555}pre{background:#f6f6f6;padding:1em;overflow:auto;font-size:.85em}"""


def render_html(title: str, sections: list[Section]) -> str:
    """One HTML file with every figure inlined as base64, so it opens anywhere without the figures folder."""
    body = "\n".join(
        f'<section id="{section.id}"><h2>{html.escape(section.title)}</h2>\n'
        + "\n".join(map(html_block, section.blocks))
        + "</section>"
        for section in sections
    )
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head>\n<body><h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n"
    )
