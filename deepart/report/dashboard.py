"""The figures of the sweep report (matplotlib, Agg) and report.html: one self-contained page, figures inlined
as base64 PNG, no scripts, no external CSS or fonts."""
from __future__ import annotations

import base64
import html
import math
import re
from pathlib import Path
from typing import Any

import pandas as pd

from deepart.core.config import OBJECTIVE
from deepart.report.compare import Config, metric_key, metric_name

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
UP, DOWN = "▲", "▼"
NUMBER = re.compile(r"^$|^[-+<\[\d]")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def config_colors(n: int) -> list[Any]:
    """One colour per config, the same in every figure: tab10 up to 10 configs, tab20 up to 20, then evenly
    spaced hues, so no two configs share a colour."""
    plt = _pyplot()
    if n <= 20:
        cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
        return [cmap(i) for i in range(n)]
    cmap = plt.get_cmap("hsv")
    return [cmap(i / n) for i in range(n)]


def grid(n: int, columns: int = 3) -> tuple[int, int]:
    """(rows, columns) of a grid of n panels, at most `columns` to a row."""
    return math.ceil(n / columns), min(n, columns)


def bar_figure(compare: pd.DataFrame, configs: list[Config], tasks: list[str], marks: dict[tuple[str, str], str],
               path: Path) -> None:
    """Per task and for the mean top-1: the seed mean of every config as a bar with its 95 % interval, the
    seeds as dots and the significance mark against the baseline; written to `path`."""
    plt = _pyplot()
    keys = [OBJECTIVE] + [metric_key(t) for t in tasks]
    rows, cols = grid(len(keys))
    height = 1.2 + 0.42 * len(configs)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols + 1.5, height * rows), squeeze=False, sharey=True)
    colors = config_colors(len(configs))
    y = list(range(len(configs)))
    for ax, key in zip(axes.flat, keys):
        mean = 100 * compare[f"{key} mean"]
        low = (mean - 100 * compare[f"{key} ci_low"]).clip(lower=0).fillna(0)
        high = (100 * compare[f"{key} ci_high"] - mean).clip(lower=0).fillna(0)
        ax.barh(y, mean.fillna(0), xerr=[low, high], color=colors, alpha=0.55, capsize=3,
                edgecolor=["black" if b else "none" for b in compare["baseline"]], linewidth=1.2)
        seeds = [(i, 100 * r.best[key]) for i, c in enumerate(configs) for r in c.runs if key in r.best]
        if seeds:
            ax.scatter([v for _, v in seeds], [i for i, _ in seeds], s=12, color="black", zorder=3)
        known = pd.concat([mean - low, mean + high]).dropna()
        lo, hi = (known.min(), known.max()) if len(known) else (0.0, 100.0)
        pad = max(2.0, 0.15 * (hi - lo))
        ax.set_xlim(max(0.0, lo - pad), min(100.0, hi + pad) + pad)
        for i, config in enumerate(configs):
            mark = marks.get((config.label, key))
            if mark and not math.isnan(mean.iloc[i]):
                ax.text(mean.iloc[i] + high.iloc[i] + 0.3, i, mark, va="center", color="#1a7f37" if mark == UP else
                        "#b42318", fontsize=11)
        ax.set_title(metric_name(key), fontsize=10)
        ax.set_xlabel("val top-1 (%), axis zoomed")
        ax.grid(axis="x", alpha=0.3)
    for ax in axes.flat[len(keys):]:
        ax.set_visible(False)
    labels = [c.label + (" (baseline)" if b else "") for c, b in zip(configs, compare["baseline"])]
    for row in axes:
        row[0].set_yticks(y, labels, fontsize=9)
    axes[0][0].invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _phase_spans(history: list[dict[str, Any]]) -> list[tuple[str, int, int]]:
    """(phase, first, last) cumulative epochs (1-based) of each phase in a run's history."""
    spans: list[tuple[str, int, int]] = []
    for x, record in enumerate(history, start=1):
        phase = str(record.get("phase", ""))
        if spans and spans[-1][0] == phase:
            spans[-1] = (phase, spans[-1][1], x)
        else:
            spans.append((phase, x, x))
    return spans


def curve_figure(configs: list[Config], tasks: list[str], path: Path) -> bool:
    """Learning curves of every run with a history: val mean top-1 per cumulative epoch over the phases (and one
    panel per task when there are several), one colour per config, one line per seed, phase boundaries as
    dashed lines with the phases shaded alternately. Returns False (and writes nothing) when no run has a
    history."""
    runs = [(i, run) for i, c in enumerate(configs) for run in c.runs if run.history]
    if not runs:
        return False
    plt = _pyplot()
    keys = [OBJECTIVE] + ([metric_key(t) for t in tasks] if len(tasks) > 1 else [])
    rows, cols = grid(len(keys))
    fig, axes = plt.subplots(rows, cols, figsize=(4.8 * cols, 3.4 * rows + 0.6), squeeze=False)
    colors = config_colors(len(configs))
    # the phases shaded and named: those of the run with the most phases (then the most epochs)
    longest = max((run.history for _, run in runs), key=lambda h: (len(_phase_spans(h)), len(h)))
    boundaries = sorted({first - 0.5 for _, run in runs for _, first, _ in _phase_spans(run.history)[1:]})
    for ax, key in zip(axes.flat, keys):
        for n, (phase, first, last) in enumerate(_phase_spans(longest)):
            if n % 2:
                ax.axvspan(first - 0.5, last + 0.5, color="grey", alpha=0.08, lw=0)
            ax.text((first + last) / 2, 1.0, f"phase {phase}", transform=ax.get_xaxis_transform(), ha="center",
                    va="bottom", fontsize=7, color="#555")
        for x in boundaries:
            ax.axvline(x, color="grey", ls="--", lw=0.8)
        for i, run in runs:
            points = [(x, 100 * r[key]) for x, r in enumerate(run.history, start=1) if r.get(key) is not None]
            if points:
                ax.plot(*zip(*points), color=colors[i], lw=1.2, alpha=0.8, marker="o", ms=2.5)
        ax.set_title(metric_name(key), fontsize=10, pad=14)
        ax.set_xlabel("epoch (cumulative over phases)")
        ax.set_ylabel("val top-1 (%)")
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(keys):]:
        ax.set_visible(False)
    shown = sorted({i for i, _ in runs})
    handles = [plt.Line2D([], [], color=colors[i], lw=2) for i in shown]
    labels = [configs[i].label for i in shown]
    fig.tight_layout()
    # beside the panels, one config per line: never over an axis label, long labels never cut off
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return True


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
