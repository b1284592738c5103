"""Offline report and comparison dashboard of one or more sweeps:
`python -m deepart.report <sweep dir> [<sweep dir> ...] [--out DIR] [--baseline KEY=VALUE[,KEY=VALUE]]`.

Reads only the sweeps' files (each run's .hydra/overrides.yaml, metrics.json or failure.json, and
val_predictions.csv when present); the runs of several sweeps are pooled (a run is then `<sweep dir name>/<n>`).
A config is the set of a run's override values other than `seed`; its runs with other seeds are replicates.
Writes into --out (default: the first sweep dir)
  report.csv               every run: swept values, status, best val top-1/top-5 per task, best epoch, epochs,
                           run time, error; sorted by the objective (failed runs last, listed)
  report_seeds.csv         (sweeps over `seed`) mean and std per metric over runs differing only in seed
  report_compare.csv       per config: seeds done; per task and for mean top-1 the seed mean, std and 95 %
                           interval of the mean; macro-F1 mean and std; mean best epoch
  report_paired.csv        per config and task (and the mean over tasks) against the baseline config, on the
                           same val images: difference in top-1 (points), paired bootstrap interval and p-value,
                           McNemar test of seed-matched runs, verdict (significant / within noise)
  report.md                the comparison, the paired tests in words, every run, the seed aggregate, failures
  report.png               the objective against each swept value
  report_bars.png          per task: seed mean top-1 of every config with its 95 % interval
  report_curves.png        (runs with a history) val top-1 per cumulative epoch over the phases
  report.html              all of the above on one self-contained page
`log_report_to_wandb` (or --wandb PROJECT) logs the tables, figures and page to one W&B run.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from deepart.core.config import OBJECTIVE, PREDICTIONS_FILE, sweep_group
from deepart.core.errors import DeepArtError
from deepart.report import dashboard
from deepart.report.compare import (
    SIGNIFICANT,
    Config,
    as_text,
    comparison_table,
    config_tasks,
    group_configs,
    metric_key,
    metric_name,
    paired_table,
    resolve_baseline,
    varying_keys,
)

log = logging.getLogger(__name__)

METRIC_COLUMNS = ("top1", "top5", "macro_f1", "balanced_acc")
#: Overrides that steer how a run is started, not what it computes.
NOT_SWEPT = ("resume", "resume_sweep", "hparams_search", "fail_on_run_error")
RUN_COLUMNS = ("run", "run_dir", "status", "error", "best_epoch", "epochs", "runtime_s")
FILES = {"csv": "report.csv", "md": "report.md", "png": "report.png", "seeds": "report_seeds.csv",
         "compare": "report_compare.csv", "paired": "report_paired.csv", "bars": "report_bars.png",
         "curves": "report_curves.png", "html": "report.html"}
HOW_TO_READ = (
    "A config is a set of override values; its runs with different seeds are replicates. mean ± std: the std "
    "over seeds is the training noise, how far a rerun of the same config moves the number. 95 % CI: the "
    "interval of the seed mean (a t-interval over seeds; for a single run a Wilson interval over its val images). "
    "Paired tests compare each config with the baseline on the same val images: the difference in top-1 in points "
    "with a 95 % interval from a two-level bootstrap (val images and seeds resampled); a difference is significant "
    f"({dashboard.UP} better, {dashboard.DOWN} worse) when that interval excludes 0, otherwise it is within noise. "
    "McNemar's exact test on the images where seed-matched runs disagree is a second opinion.")


def read_overrides(run_dir: Path) -> dict[str, str]:
    """`key: value` of the overrides the run was launched with (.hydra/overrides.yaml)."""
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return {}
    out = {}
    for item in yaml.safe_load(path.read_text()) or []:
        key, _, value = str(item).partition("=")
        key = key.lstrip("+~")
        if key not in NOT_SWEPT:
            out[key] = value.strip("'\"")
    return out


def run_status(run_dir: Path) -> tuple[str, str | None]:
    """done (metrics.json) | failed (failure.json: its error) | unfinished (killed, or still running)."""
    if (run_dir / "metrics.json").is_file():
        return "done", None
    failure = run_dir / "failure.json"
    if failure.is_file():
        info = json.loads(failure.read_text())
        return "failed", ("out of memory: " if info.get("oom") else "") + f"{info['error']}: {info['message']}"
    return "unfinished", None


def run_dirs(sweep_dir: Path) -> list[Path]:
    """The job dirs of a sweep (those holding a .hydra/ folder), in job order."""
    found = [p for p in sweep_dir.iterdir() if (p / ".hydra").is_dir()]
    return sorted(found, key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else p.name))


def collect_runs(sweep_dir: str | Path) -> pd.DataFrame:
    """One row per run of a sweep: its dir, overrides, status, error, final val metrics (`val/...`), the metrics
    of the best epoch (`best/val/...`), best_epoch, epochs and run time."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise DeepArtError(f"sweep dir not found: {sweep_dir}. Pass the dir of a `train.py -m` run, "
                           f"e.g. multirun/2026-01-01/12-00-00")
    rows: list[dict[str, Any]] = []
    for run_dir in run_dirs(sweep_dir):
        status, error = run_status(run_dir)
        row: dict[str, Any] = {"run": run_dir.name, "run_dir": str(run_dir), **read_overrides(run_dir),
                               "status": status, "error": error}
        if status == "done":
            metrics = json.loads((run_dir / "metrics.json").read_text())
            for section, prefix in (("final", ""), ("best", "best/")):
                for key, value in metrics.get(section, {}).items():
                    if key.split("/")[-1] in METRIC_COLUMNS or key == OBJECTIVE:
                        row[prefix + key] = value
            row.update(best_epoch=metrics.get("best_epoch"), epochs=metrics.get("epochs"),
                       runtime_s=metrics.get("runtime_s"))
        rows.append(row)
    return pd.DataFrame(rows)


def collect_sweeps(sweep_dirs: Sequence[Path]) -> pd.DataFrame:
    """collect_runs of every sweep dir, pooled in the order given; with several dirs a run is `<sweep name>/<n>`
    (`<parent>/<name>` when two sweep dirs share a name)."""
    names = [d.name for d in sweep_dirs]
    if len(set(names)) < len(names):
        names = ["/".join(d.resolve().parts[-2:]) for d in sweep_dirs]
    if len(set(names)) < len(names):
        raise DeepArtError(f"a sweep dir is given twice: {', '.join(map(str, sweep_dirs))}; pass each one once")
    frames = []
    for sweep_dir, name in zip(sweep_dirs, names):
        frame = collect_runs(sweep_dir)
        if len(sweep_dirs) > 1 and not frame.empty:
            frame["run"] = name + "/" + frame["run"].astype(str)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def override_keys(frame: pd.DataFrame) -> list[str]:
    """The override keys among the columns of collect_runs rows."""
    return [c for c in frame.columns if c not in RUN_COLUMNS and "/" not in c]


def swept_keys(frame: pd.DataFrame, overrides: list[str]) -> list[str]:
    """Override keys whose values differ between runs (all of them if none differ)."""
    keys = [k for k in overrides if k in frame.columns]
    return varying_keys(frame, keys) or keys


def report_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Swept values, status, best val/mean_top1 and per-task top-1/top-5, best epoch, run time, error;
    sorted by the objective, best first, runs without metrics last."""
    swept = swept_keys(frame, override_keys(frame))
    tasks = [c for c in frame.columns if c.startswith("best/val/") and c.endswith(("/top1", "/top5"))]
    for col in (f"best/{OBJECTIVE}", "best_epoch", "epochs", "runtime_s"):
        if col not in frame.columns:
            frame[col] = float("nan")
    cols = ["run", *swept, "status", f"best/{OBJECTIVE}", *tasks, "best_epoch", "epochs", "runtime_s", "error"]
    table = frame[cols].sort_values(f"best/{OBJECTIVE}", ascending=False, na_position="last", kind="stable")
    return table.rename(columns=lambda c: c.replace("best/", "", 1)).reset_index(drop=True)


def seed_table(table: pd.DataFrame) -> pd.DataFrame | None:
    """Runs that differ only in `seed`, aggregated: n runs, n done, mean and std of every metric."""
    if "seed" not in table.columns:
        return None
    keys = [c for c in table.columns if c not in RUN_COLUMNS and "/" not in c and c != "seed"]
    metrics = [c for c in table.columns if "/" in c] + ["best_epoch", "runtime_s"]
    rows = []
    for values, group in table.groupby(keys, dropna=False, sort=False) if keys else [((), table)]:
        values = values if isinstance(values, tuple) else (values,)
        done = group[group["status"] == "done"]
        row: dict[str, Any] = dict(zip(keys, values))
        seeds = sorted(group["seed"], key=lambda v: (len(str(v)), str(v)))
        row.update(runs=len(group), done=len(done), seeds=",".join(map(str, seeds)))
        for m in metrics:  # std of one run is undefined (NaN), not 0
            vals = pd.to_numeric(done[m], errors="coerce")
            row[f"{m} mean"], row[f"{m} std"] = vals.mean(), vals.std(ddof=1)
        rows.append(row)
    out = pd.DataFrame(rows)
    return out.sort_values(f"{OBJECTIVE} mean", ascending=False, na_position="last").reset_index(drop=True)


def _cell(col: str, value: Any) -> str:
    """A value as shown in the tables: metrics (`.../top1` etc.) in %, run time in s, short numbers."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if "/" in col and isinstance(value, (int, float)):
        return f"{100 * value:.1f}"
    if col == "runtime_s" and isinstance(value, (int, float)):
        return f"{value:.0f}"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    try:  # swept values as short numbers: 8.468008575248323e-05 -> 8.468e-05
        number = float(value)
        return str(value) if number.is_integer() else f"{number:.4g}"
    except (TypeError, ValueError):
        return str(value)


def display(frame: pd.DataFrame) -> pd.DataFrame:
    """The cells of `frame` as text (see _cell)."""
    return pd.DataFrame({c: [_cell(c, v) for v in frame[c]] for c in frame.columns}, columns=frame.columns)


def text_markdown(frame: pd.DataFrame) -> str:
    """A GitHub Markdown table of text cells, shown as they are."""
    head = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([head, rule, *body])


def markdown(frame: pd.DataFrame) -> str:
    """A GitHub Markdown table; metrics (`.../top1` etc.) in %."""
    return text_markdown(display(frame))


def seed_markdown(seeds: pd.DataFrame) -> str:
    """The seed aggregate with `mean ± std` cells (metrics in %)."""
    shown = pd.DataFrame()
    for col in seeds.columns:
        if col.endswith(" std"):
            continue
        if col.endswith(" mean"):
            name = col[: -len(" mean")]
            scale = 100 if "/" in name else 1
            shown[name] = [("" if pd.isna(m) else f"{scale * m:.1f}" + ("" if pd.isna(s) else f" ± {scale * s:.1f}"))
                           for m, s in zip(seeds[col], seeds[f"{name} std"])]
        else:
            shown[col] = seeds[col]
    return markdown(shown)


PLOT_COLUMNS = 4  # panels per row of report.png: many swept keys (pooled sweeps) wrap instead of widening it


def plot(table: pd.DataFrame, swept: list[str], path: Path) -> None:
    """The objective (%) against each swept value; one panel per key, at most PLOT_COLUMNS to a row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = swept or ["run"]
    done = table[table["status"] == "done"]
    rows, cols = dashboard.grid(len(keys), PLOT_COLUMNS)
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


def _points(value: float) -> str:
    return "" if pd.isna(value) else f"{100 * value:.1f}"


def _mean_std(mean: float, std: float) -> str:
    return _points(mean) + ("" if pd.isna(std) else f" ± {_points(std)}")


def _interval(low: float, high: float, scale: float = 100) -> str:
    return "" if pd.isna(low) or pd.isna(high) else f"[{scale * low:.1f}, {scale * high:.1f}]"


def _p_value(p: float) -> str:
    return "" if pd.isna(p) else "< 0.001" if p < 0.001 else f"{p:.3f}"


def significance_marks(paired: pd.DataFrame) -> dict[tuple[str, str], str]:
    """{(config, metric): ▲ or ▼} for the significant differences from the baseline."""
    significant = paired[paired["verdict"] == SIGNIFICANT]
    return {(r.config, r.metric): dashboard.UP if r.diff_points > 0 else dashboard.DOWN
            for r in significant.itertuples()}


def compare_display(compare: pd.DataFrame, tasks: list[str], marks: dict[tuple[str, str], str]) -> pd.DataFrame:
    """The comparison table as text (metrics in %): mean ± std (with the significance mark), 95 % CI per metric,
    macro-F1 per task, mean best epoch."""
    shown = pd.DataFrame({
        "config": [c + (" (baseline)" if b else "") for c, b in zip(compare["config"], compare["baseline"])],
        "seeds": [str(s) if s == r else f"{s} of {r} runs" for s, r in zip(compare["seeds"], compare["runs"])]})
    for key in ([OBJECTIVE] if len(tasks) > 1 else []) + [metric_key(t) for t in tasks]:
        name = metric_name(key)
        shown[name] = [f"{_mean_std(m, s)} {marks.get((c, key), '')}".strip()
                       for c, m, s in zip(compare["config"], compare[f"{key} mean"], compare[f"{key} std"])]
        shown[f"{name} 95 % CI"] = [_interval(lo, hi) for lo, hi in zip(compare[f"{key} ci_low"],
                                                                        compare[f"{key} ci_high"])]
    for task in tasks:
        key = f"val/{task}/macro_f1"
        shown[f"{task} macro-F1"] = [_mean_std(m, s) for m, s in zip(compare[f"{key} mean"], compare[f"{key} std"])]
    shown["best epoch"] = ["" if pd.isna(e) else f"{e:.1f}" for e in compare["best_epoch mean"]]
    shown["mean top-1, last epoch"] = [_mean_std(m, s) for m, s in zip(compare["final mean"], compare["final std"])]
    for column in (c[: -len(" mean")] for c in compare.columns if c.startswith("phase ") and c.endswith(" mean")):
        shown[f"mean top-1, {column}"] = [_mean_std(m, s) for m, s in zip(compare[f"{column} mean"],
                                                                           compare[f"{column} std"])]
    return shown


def paired_display(paired: pd.DataFrame) -> pd.DataFrame:
    """The paired tests as text: difference and interval in points, p-values, discordant counts, verdict."""
    rows = []
    for r in paired.itertuples():
        tested = not pd.isna(r.diff_points)
        mark = (dashboard.UP if r.diff_points > 0 else dashboard.DOWN) if r.verdict == SIGNIFICANT else ""
        rows.append({
            "config": r.config, "metric": metric_name(r.metric),
            "images": "" if pd.isna(r.images) else str(int(r.images)),
            "seeds (config / baseline)": f"{r.seeds} / {r.baseline_seeds}",
            "diff (points)": f"{r.diff_points:+.1f}" if tested else "",
            "95 % CI (points)": _interval(r.ci_low_points, r.ci_high_points, scale=1),
            "p (bootstrap)": _p_value(r.p_bootstrap),
            "McNemar only config / only baseline": "" if pd.isna(r.mcnemar_b) else
            f"{int(r.mcnemar_b)} / {int(r.mcnemar_c)} ({r.matched_seeds} seeds)",
            "p (McNemar)": _p_value(r.p_mcnemar), "verdict": f"{r.verdict} {mark}".strip()})
    return pd.DataFrame(rows)


def paired_sentences(paired: pd.DataFrame) -> list[str]:
    """Each difference in words: `X vs baseline, style top-1: +2.1 points [0.4, 3.8], significant`."""
    lines: dict[str, None] = {}
    for r in paired.itertuples():
        if pd.isna(r.diff_points):
            lines[f"{r.config} vs baseline: {r.verdict}"] = None
        else:
            lines[f"{r.config} vs baseline, {metric_name(r.metric)}: {r.diff_points:+.1f} points "
                  f"[{r.ci_low_points:.1f}, {r.ci_high_points:.1f}], {r.verdict}"] = None
    return list(lines)


def baseline_note(baseline: Config, spec: str | None) -> str:
    how = "given by --baseline" if spec else \
        "the first config in job order; choose another with --baseline KEY=VALUE[,KEY=VALUE]"
    return f"Baseline: {baseline.label} ({how})."


def run_notes(configs: list[Config]) -> list[str]:
    """Finished runs without val_predictions.csv (no paired test) or without a history (no curve)."""
    runs = [r for c in configs for r in c.runs]
    notes = []
    no_predictions = [r.id for r in runs if r.predictions is None]
    no_history = [r.id for r in runs if r.history is None]
    if no_predictions:
        notes.append(f"no {PREDICTIONS_FILE}, so no paired test: run {', '.join(no_predictions)}")
    if no_history:
        notes.append(f"no per-epoch history in metrics.json, so no learning curve: run {', '.join(no_history)}")
    return notes


def failure_lines(table: pd.DataFrame) -> list[str]:
    """`run 3: failed (error)` for every run without results."""
    failed = table[table["status"] != "done"]
    return [f"run {r.run}: {r.status}" + (f" ({r.error})" if pd.notna(r.error) else "") for r in failed.itertuples()]


def _html_report(title: str, intro: str, note: str, compare_text: pd.DataFrame, paired_text: pd.DataFrame,
                 sentences: list[str], table: pd.DataFrame, paths: dict[str, Path], notes: list[str]) -> str:
    """report.html: the tables, the figures inlined, the failures and notes."""
    h = dashboard
    rows = ["baseline" if c.endswith(" (baseline)") else "" for c in compare_text["config"]]
    paired_blocks = [h.paragraph(note), h.html_table(paired_text), h.bullets(sentences)] if len(paired_text) else \
        [h.paragraph(note + " There is no other config to compare with.")]
    bars = [h.paragraph("Bars: seed mean; whiskers: 95 % interval of the mean; dots: the seeds; "
                        f"{h.UP} / {h.DOWN}: significant against the baseline (outlined).", "note"),
            h.image(paths["bars"], "seed mean top-1 per config with 95 % intervals")]
    curves = [h.paragraph("Val top-1 after every epoch of every phase; one colour per config, one line per seed; "
                          "dashed lines: phase boundaries.", "note"), h.image(paths["curves"], "learning curves")] \
        if "curves" in paths else [h.paragraph("No run has a per-epoch history: no learning curves.", "note")]
    sections = [
        ("Comparison of configs", [h.paragraph(f"{h.UP} / {h.DOWN}: significantly better / worse than the "
                                               "baseline (paired bootstrap); metrics in % at the best epoch.", "note"),
                                   h.html_table(compare_text, rows)]),
        ("Paired tests against the baseline", paired_blocks),
        ("Top-1 per config", bars),
        ("Learning curves", curves),
        ("Objective against the swept values", [h.image(paths["png"], "objective against swept values")]),
        ("Every run", [h.paragraph(f"Sorted by best {OBJECTIVE}; metrics in % at the best epoch.", "note"),
                       h.html_table(display(table))]),
    ]
    failures = failure_lines(table)
    if failures or notes:
        sections.append(("Runs without results, missing files", [h.bullets(failures + notes)]))
    return h.page(title, sections, [h.paragraph(intro), h.paragraph("How to read this: " + HOW_TO_READ, "note")])


def write_report(sweep_dirs: str | Path | Sequence[str | Path], out_dir: str | Path | None = None,
                 baseline: str | None = None) -> dict[str, Path]:
    """Write the report of one or more sweeps (see the module docstring) into `out_dir` (default: the first
    sweep dir); `baseline`: `key=value[,key=value]` of the config the others are tested against (default: the
    first config in job order). Returns the paths written, by kind (csv, md, png, seeds, compare, paired, bars,
    curves, html)."""
    dirs = [Path(d) for d in ([sweep_dirs] if isinstance(sweep_dirs, (str, Path)) else sweep_dirs)]
    if not dirs:
        raise DeepArtError("no sweep dir given; pass the dir of a `train.py -m` run")
    frame = collect_sweeps(dirs)
    if frame.empty:
        raise DeepArtError(f"{', '.join(map(str, dirs))} holds no runs (no <run>/.hydra dirs); "
                           f"pass the dir of a `train.py -m` run")
    configs = group_configs(frame, [k for k in override_keys(frame) if k != "seed"])
    base = resolve_baseline(configs, baseline)
    tasks = config_tasks(configs)
    out = Path(out_dir) if out_dir else dirs[0]
    out.mkdir(parents=True, exist_ok=True)
    paths = {kind: out / FILES[kind] for kind in ("csv", "md", "png", "compare", "paired", "bars", "html")}
    table = report_table(frame)
    swept = swept_keys(frame, override_keys(frame))
    table.to_csv(paths["csv"], index=False)
    compare = comparison_table(configs, tasks, base)
    compare.to_csv(paths["compare"], index=False)
    paired = paired_table(configs, base, tasks)
    paired.to_csv(paths["paired"], index=False)

    marks = significance_marks(paired)
    shown = paired if len(tasks) > 1 else paired[paired["metric"] != OBJECTIVE]  # one task: its top-1 is the mean
    compare_text, paired_text, sentences = compare_display(compare, tasks, marks), paired_display(shown), \
        paired_sentences(shown)
    note, notes = baseline_note(base, baseline), run_notes(configs)
    counts = table["status"].value_counts().to_dict()
    title = f"Sweep report: {dirs[0]}" if len(dirs) == 1 else f"Sweep report: {len(dirs)} sweeps"
    pooled = "" if len(dirs) == 1 else f"Sweeps: {', '.join(map(str, dirs))}. "
    intro = (pooled + f"{len(table)} runs: " + ", ".join(f"{n} {s}" for s, n in counts.items()) +
             f"; {len(configs)} configs, tasks: {', '.join(tasks) or 'none'}.")
    lines = [f"# {title}", "", intro, "", "## Comparison of configs", "", HOW_TO_READ, "",
             f"{dashboard.UP} / {dashboard.DOWN}: significantly better / worse than the baseline; metrics in %.", "",
             text_markdown(compare_text), "", "## Paired tests against the baseline", "", note, ""]
    lines += [text_markdown(paired_text), "", *(f"- {s}" for s in sentences)] if len(paired) else \
        ["There is no other config to compare with."]
    lines += ["", "## Every run", "", f"Sorted by best {OBJECTIVE}; metrics in % at the best epoch.", "",
              markdown(table)]
    seeds = seed_table(table) if "seed" in swept else None
    if seeds is not None:
        paths["seeds"] = out / FILES["seeds"]
        seeds.to_csv(paths["seeds"], index=False)
        lines += ["", "## Over seeds (mean ± std of the runs that finished)", "", seed_markdown(seeds)]
    failures = failure_lines(table)
    if failures:
        lines += ["", "## Runs without results", "", *(f"- {line}" for line in failures)]
    if notes:
        lines += ["", "## Missing files", "", *(f"- {line}" for line in notes)]
    paths["md"].write_text("\n".join(lines) + "\n")

    plot(table, [k for k in swept if k != "seed"] or swept, paths["png"])
    dashboard.bar_figure(compare, configs, tasks, marks, paths["bars"])
    if dashboard.curve_figure(configs, tasks, out / FILES["curves"]):
        paths["curves"] = out / FILES["curves"]
    paths["html"].write_text(_html_report(title, intro, note, compare_text, paired_text, sentences, table, paths,
                                          notes))
    return paths


def headline(compare: pd.DataFrame, paired: pd.DataFrame) -> dict[str, Any]:
    """The numbers for a W&B run summary: configs, finished runs, baseline and best config with their seed mean
    objective, the number of configs significantly different from the baseline on it, each config's difference."""
    done = compare[compare["seeds"] > 0]
    base = compare[compare["baseline"]].iloc[0]
    mean = paired[paired["metric"] == OBJECTIVE]
    out: dict[str, Any] = {"configs": len(compare), "runs_done": int(compare["seeds"].sum()),
                           "baseline": base["config"], f"baseline/{OBJECTIVE}": base[f"{OBJECTIVE} mean"],
                           "significant_vs_baseline": int((mean["verdict"] == SIGNIFICANT).sum())}
    if len(done):
        best = done.loc[done[f"{OBJECTIVE} mean"].idxmax()]
        out.update({"best_config": best["config"], f"best/{OBJECTIVE}": best[f"{OBJECTIVE} mean"]})
    out.update({f"vs_baseline/{r.config}/diff_points": r.diff_points for r in mean.itertuples()
                if not pd.isna(r.diff_points)})
    return {k: v.item() if hasattr(v, "item") else v for k, v in out.items() if not pd.isna(v)}


def log_report_to_wandb(report_dir: str | Path, *, project: str, entity: str | None = None, mode: str = "offline",
                        group: str | None = None, name: str = "sweep-summary") -> str | None:
    """Log a written report to ONE W&B run (job_type `sweep-summary`, in `group`): the comparison and paired
    tables as tables, the figures as images, report.html as HTML, the headline numbers in the run summary.
    Offline by default (files under <report_dir>/wandb). Never raises: a W&B problem is logged as a warning.
    Returns the W&B run id, or None when nothing was logged."""
    report_dir = Path(report_dir)
    try:
        import wandb

        compare = pd.read_csv(report_dir / FILES["compare"])
        paired = pd.read_csv(report_dir / FILES["paired"])
        os.environ.setdefault("WANDB_SILENT", "true")
        run = wandb.init(project=project, entity=entity, mode=mode, group=group, name=name, job_type="sweep-summary",
                         dir=str(report_dir), reinit="finish_previous")
        try:
            data: dict[str, Any] = {"compare": wandb.Table(dataframe=compare), "paired": wandb.Table(dataframe=paired),
                                    "report": wandb.Html((report_dir / FILES["html"]).read_text())}
            for kind in ("png", "bars", "curves"):
                if (report_dir / FILES[kind]).is_file():
                    data[f"figures/{Path(FILES[kind]).stem}"] = wandb.Image(str(report_dir / FILES[kind]))
            run.log(data)
            run.summary.update(headline(compare, paired))
        finally:
            run.finish()
        return run.id
    except Exception as exc:  # noqa: BLE001 - W&B must never break the report
        log.warning("W&B logging of the report in %s failed (%s: %s); the report files are unaffected", report_dir,
                    type(exc).__name__, exc)
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deepart.report", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dirs", nargs="+", metavar="sweep_dir",
                        help="sweep dirs written by `python train.py -m ...` (several: their runs are pooled)")
    parser.add_argument("--out", default=None, help="where to write the report (default: the first sweep dir)")
    parser.add_argument("--baseline", default=None, metavar="KEY=VALUE[,KEY=VALUE]",
                        help="the config the others are tested against (default: the first config in job order)")
    parser.add_argument("--wandb", default=None, metavar="PROJECT",
                        help="also log the report to one W&B run in this project, in the first sweep's group")
    parser.add_argument("--wandb-entity", default=None, help="W&B entity (default: yours)")
    parser.add_argument("--wandb-mode", default="offline", choices=("offline", "online"),
                        help="W&B mode (default: offline; sync later with `wandb sync`)")
    args = parser.parse_args(argv)
    try:
        paths = write_report(args.sweep_dirs, args.out, args.baseline)
    except DeepArtError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(paths["md"].read_text())
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    if args.wandb:
        run_id = log_report_to_wandb(paths["html"].parent, project=args.wandb, entity=args.wandb_entity,
                                     mode=args.wandb_mode, group=sweep_group(args.sweep_dirs[0]))
        print(f"W&B run {run_id} (project {args.wandb})" if run_id else "W&B logging failed; see the warning above")
    return 0

