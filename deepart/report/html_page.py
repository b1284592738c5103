"""report.html: one self-contained page, figures inlined as base64 PNG, no scripts, no external CSS or fonts."""
from __future__ import annotations

import base64
import html
import math
import re
from pathlib import Path

import pandas as pd

from deepart.report.compare import DOWN, UP
from deepart.report.tables import EVERY_RUN_NOTE, HOW_TO_READ, display, failure_lines

STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 24px auto; max-width: 1360px;
       color: #222; line-height: 1.45; padding: 0 16px; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
th, td { border: 1px solid #ddd; padding: 3px 7px; text-align: right; white-space: nowrap; }
th { background: #f3f3f3; text-align: center; } td.text { text-align: left; }
tr.baseline td { background: #f4f7fb; font-weight: 600; }
td.up { background: #dff3e1; font-weight: 600; } td.down { background: #f9e0e0; font-weight: 600; }
.scroll { overflow-x: auto; } img { max-width: 100%; } .note { color: #555; font-size: 0.92em; }
"""

NUMBER = re.compile(r"^$|^[-+<\[\d]")

def html_table(frame: pd.DataFrame, row_classes: list[str] | None = None) -> str:
    """An HTML table of string cells: text left-aligned, numbers right-aligned, a cell holding ▲ / ▼ marked."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = []
    for n, row in enumerate(frame.itertuples(index=False)):
        cells = []
        for value in row:
            text = "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)
            classes = [name for name, on in (("text", not NUMBER.match(text)), ("up", UP in text),
                                             ("down", DOWN in text)) if on]
            css = f' class="{" ".join(classes)}"' if classes else ""
            cells.append(f"<td{css}>{html.escape(text)}</td>")
        css = f' class="{row_classes[n]}"' if row_classes and row_classes[n] else ""
        body.append(f"<tr{css}>{''.join(cells)}</tr>")
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'

def image(path: Path, alt: str) -> str:
    """The PNG at `path` inlined as a data URI."""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<p><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></p>'

def paragraph(text: str, css: str = "") -> str:
    """An escaped paragraph, with a CSS class if given."""
    return f'<p class="{css}">{html.escape(text)}</p>' if css else f"<p>{html.escape(text)}</p>"

def bullets(items: list[str]) -> str:
    """An escaped bullet list."""
    return "<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in items) + "</ul>"

def page(title: str, sections: list[tuple[str, list[str]]], intro: list[str]) -> str:
    """The whole document: a title, intro blocks, then (heading, blocks) sections (blocks are HTML)."""
    parts = [f"<h1>{html.escape(title)}</h1>", *intro]
    for heading, blocks in sections:
        parts += [f"<h2>{html.escape(heading)}</h2>", *blocks]
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head>\n<body>\n" + "\n".join(parts) + "\n</body></html>\n")


def report_page(title: str, intro: str, note: str, compare_text: pd.DataFrame, paired_text: pd.DataFrame,
                 sentences: list[str], table: pd.DataFrame, paths: dict[str, Path], notes: list[str]) -> str:
    """report.html: the tables, the figures inlined, the failures and notes."""
    rows = ["baseline" if c.endswith(" (baseline)") else "" for c in compare_text["config"]]
    paired_blocks = [paragraph(note), html_table(paired_text), bullets(sentences)] if len(paired_text) else \
        [paragraph(note + " There is no other config to compare with.")]
    bars = [paragraph("Bars: seed mean; whiskers: 95 % interval of the mean; dots: the seeds; "
                      f"{UP} / {DOWN}: significant against the baseline (outlined).", "note"),
            image(paths["bars"], "seed mean top-1 per config with 95 % intervals")]
    curves = [paragraph("Val top-1 after every epoch of every phase; one colour per config, one line per seed; "
                        "dashed lines: phase boundaries.", "note"), image(paths["curves"], "learning curves")] \
        if "curves" in paths else [paragraph("No run has a per-epoch history: no learning curves.", "note")]
    sections = [
        ("Comparison of configs", [paragraph(f"{UP} / {DOWN}: significantly better / worse than the "
                                             "baseline (paired bootstrap); metrics in % at the best epoch; last - "
                                             "best: the last epoch's mean top-1 minus the best epoch's.", "note"),
                                   html_table(compare_text, rows)]),
        ("Paired tests against the baseline", paired_blocks),
        ("Top-1 per config", bars),
        ("Learning curves", curves),
        ("Objective against the swept values", [image(paths["png"], "objective against swept values")]),
        ("Every run", [paragraph(EVERY_RUN_NOTE, "note"),
                       html_table(display(table))]),
    ]
    failures = failure_lines(table)
    if failures or notes:
        sections.append(("Runs without results, missing files", [bullets(failures + notes)]))
    return page(title, sections, [paragraph(intro), paragraph("How to read this: " + HOW_TO_READ, "note")])

