"""The report's figures (matplotlib, Agg): the objective against each swept value (report.png), the seed mean
top-1 of every config with its interval (report_bars.png), the learning curves (report_curves.png)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from deepart.core.config import OBJECTIVE
from deepart.report.compare import UP, Config, metric_key, metric_name
from deepart.report.runs import as_text
from deepart.vis.plots import pyplot


def config_colors(n: int) -> list[Any]:
    """One colour per config, the same in every figure: tab10 up to 10 configs, tab20 up to 20, then evenly
    spaced hues, so no two configs share a colour."""
    plt = pyplot()
    if n <= 20:
        cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
        return [cmap(i) for i in range(n)]
    cmap = plt.get_cmap("hsv")
    return [cmap(i / n) for i in range(n)]

def grid(n: int, columns: int = 3) -> tuple[int, int]:
    """(rows, columns) of a grid of n panels, at most `columns` to a row."""
    return math.ceil(n / columns), min(n, columns)


PLOT_COLUMNS = 4  # panels per row of report.png: many swept keys (pooled sweeps) wrap instead of widening it

def objective_figure(table: pd.DataFrame, swept: list[str], path: Path) -> None:
    """The objective (%) against each swept value; one panel per key, at most PLOT_COLUMNS to a row."""
    plt = pyplot()

    keys = swept or ["run"]
    done = table[table["status"] == "done"]
    rows, cols = grid(len(keys), PLOT_COLUMNS)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.6 * rows), squeeze=False)
    for ax in axes.flat[len(keys):]:
        ax.set_visible(False)
    for ax, key in zip(axes.flat, keys):
        y = 100 * pd.to_numeric(done[OBJECTIVE], errors="coerce")
        x = pd.to_numeric(done[key], errors="coerce")
        if len(done) and x.notna().all():
            ax.scatter(x, y, alpha=0.8)
            if (x > 0).all() and x.max() / x.min() >= 10:
                ax.set_xscale("log")
        else:
            levels = sorted(table[key].map(as_text).unique())
            pos = done[key].map(as_text).map({v: i for i, v in enumerate(levels)})
            ax.scatter(pos, y, alpha=0.8)
            names = [level or "(default)" for level in levels]  # a key another pooled sweep left unset
            ax.set_xticks(range(len(levels)), names, rotation=30, ha="right")
            ax.set_xlim(-0.5, len(levels) - 0.5)
        failed = int((table["status"] != "done").sum())
        ax.set_xlabel(key)
        ax.set_ylabel(f"best {OBJECTIVE} (%)")
        ax.set_title(f"{len(done)} runs" + (f", {failed} without results (not shown)" if failed else ""), fontsize=9)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def bar_figure(compare: pd.DataFrame, configs: list[Config], tasks: list[str], marks: dict[tuple[str, str], str],
               path: Path) -> None:
    """Per task and for the mean top-1: the seed mean of every config as a bar with its 95 % interval, the
    seeds as dots and the significance mark against the baseline; written to `path`."""
    plt = pyplot()
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
    plt = pyplot()
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
