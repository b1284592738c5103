"""The report's tables as text: every run, the seed aggregate, the comparison of configs and the paired tests
(metrics in %), as GitHub Markdown; the sentences and notes around them."""
from __future__ import annotations

import math
from typing import Any

import pandas as pd

from deepart.core import rundir
from deepart.core.config import OBJECTIVE
from deepart.report.compare import DOWN, SIGNIFICANT, UP, Config, metric_key, metric_name
from deepart.report.runs import override_keys, swept_keys

HOW_TO_READ = (
    "A config is a set of override values; its runs with different seeds are replicates. mean ± std: the std "
    "over seeds is the training noise, how far a rerun of the same config moves the number. 95 % CI: the "
    "interval of the seed mean (a t-interval over seeds; for a single run a Wilson interval over its val images). "
    "Paired tests compare each config with the baseline on the same val images: the difference in top-1 in points "
    "with a 95 % interval from a two-level bootstrap (val images and seeds resampled); a difference is significant "
    f"({UP} better, {DOWN} worse) when that interval excludes 0, otherwise it is within noise. "
    "McNemar's exact test on the images where seed-matched runs disagree is a second opinion.")

#: The note over the table of every run (report.md and report.html).
EVERY_RUN_NOTE = (f"Sorted by best {OBJECTIVE}; metrics in % at the best epoch; {rundir.LAST_MINUS_BEST}{OBJECTIVE}: "
                  "the last epoch's minus the best epoch's, in points (below 0: the run peaked early).")


def report_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Swept values, status, best val/mean_top1, the last epoch's minus the best epoch's, per task the metrics of
    rundir.REPORT_TASK_METRICS, the run-level fields (rundir.RUN_FIELDS, best_epoch first), error; sorted by the
    objective, best first, runs without metrics last."""
    swept = swept_keys(frame, override_keys(frame))
    metrics = [c for c in frame.columns
               if c.startswith("best/val/") and c.split("/")[-1] in rundir.REPORT_TASK_METRICS]
    drop = rundir.LAST_MINUS_BEST + OBJECTIVE
    for col in (f"best/{OBJECTIVE}", drop, *rundir.RUN_FIELDS):
        if col not in frame.columns:
            frame[col] = float("nan")
    cols = ["run", *swept, "status", f"best/{OBJECTIVE}", drop, *metrics, *rundir.RUN_FIELDS, "error"]
    table = frame[cols].sort_values(f"best/{OBJECTIVE}", ascending=False, na_position="last", kind="stable")
    return table.rename(columns=lambda c: c.removeprefix("best/")).reset_index(drop=True)


def seed_table(table: pd.DataFrame) -> pd.DataFrame | None:
    """Runs that differ only in `seed`, aggregated: n runs, n done, mean and std of every metric."""
    if "seed" not in table.columns:
        return None
    keys = [c for c in table.columns if c not in rundir.SUMMARY_COLUMNS and "/" not in c and c != "seed"]
    metrics = [c for c in table.columns if "/" in c] + [f for f in rundir.RUN_FIELDS if f != "epochs"]
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
    return {(r.config, r.metric): UP if r.diff_points > 0 else DOWN
            for r in significant.itertuples()}

def compare_display(compare: pd.DataFrame, tasks: list[str], marks: dict[tuple[str, str], str]) -> pd.DataFrame:
    """The comparison table as text (metrics in %): mean ± std (with the significance mark), 95 % CI per metric,
    macro-F1 per task, mean best epoch, the last epoch's mean top-1 and its difference from the best epoch's."""
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
    shown["last - best (points)"] = [_mean_std(m, s) for m, s in zip(compare["last_minus_best mean"],
                                                                     compare["last_minus_best std"])]
    for column in (c[: -len(" mean")] for c in compare.columns if c.startswith("phase ") and c.endswith(" mean")):
        shown[f"mean top-1, {column}"] = [_mean_std(m, s) for m, s in zip(compare[f"{column} mean"],
                                                                           compare[f"{column} std"])]
    return shown

def paired_display(paired: pd.DataFrame) -> pd.DataFrame:
    """The paired tests as text: difference and interval in points, p-values, discordant counts, verdict."""
    rows = []
    for r in paired.itertuples():
        tested = not pd.isna(r.diff_points)
        mark = (UP if r.diff_points > 0 else DOWN) if r.verdict == SIGNIFICANT else ""
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
        notes.append(f"no {rundir.PREDICTIONS}, so no paired test: run {', '.join(no_predictions)}")
    if no_history:
        notes.append(f"no per-epoch history in {rundir.METRICS}, so no learning curve: run {', '.join(no_history)}")
    return notes

def failure_lines(table: pd.DataFrame) -> list[str]:
    """`run 3: failed (error)` for every run without results."""
    failed = table[table["status"] != "done"]
    return [f"run {r.run}: {r.status}" + (f" ({r.error})" if pd.notna(r.error) else "") for r in failed.itertuples()]
