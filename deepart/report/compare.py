"""Configs of one or more sweeps compared. A config is the set of a run's override values other than `seed`
(and the launch keys, deepart.report.runs.NOT_SWEPT); runs of a config with different seeds are its replicates.

`comparison_table` aggregates every config over its seeds (mean ± std, 95 % interval of the mean);
`paired_table` tests every config against a baseline config on the same val images, from the
val_predictions.csv of their runs (columns `index`, `path`, and per task `<task>` (true class, -1 = no label)
and `<task>_pred`).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deepart.core import rundir
from deepart.core.config import OBJECTIVE
from deepart.core.errors import DeepArtError
from deepart.report.runs import as_text, varying_keys
from deepart.report.stats import mcnemar_exact, paired_bootstrap, t_interval, wilson_interval

SIGNIFICANT, WITHIN_NOISE = "significant", "within noise"
#: The marks of a significant difference from the baseline in the tables, figures and page.
UP, DOWN = "▲", "▼"
#: The label (and --baseline) of the config that sets none of the swept keys: the command's own defaults.
DEFAULTS = "defaults"
PAIRED_COLUMNS = ("config", "baseline", "metric", "images", "seeds", "baseline_seeds", "diff_points",
                  "ci_low_points", "ci_high_points", "p_bootstrap", "matched_seeds", "mcnemar_b", "mcnemar_c",
                  "p_mcnemar", "verdict")


@dataclass
class Run:
    """A finished run: its id (`<n>` or `<sweep>/<n>`), seed, the metrics of its best checkpoint, its per-epoch
    history (None for runs written before history was recorded) and its val predictions (None if absent)."""

    id: str
    seed: str | None
    best: dict[str, Any]
    best_epoch: float
    history: list[dict[str, Any]] | None
    predictions: pd.DataFrame | None
    final: dict[str, Any] = field(default_factory=dict)        # metrics of the run's last epoch
    phase_best: dict[str, float] = field(default_factory=dict)  # phase name -> its best OBJECTIVE


@dataclass
class Config:
    """Runs with the same override values except `seed`. `values`: all of them; `swept`: those that differ
    between configs, which make up the label `key=value,key=value` (a valid --baseline)."""

    label: str
    values: dict[str, str]
    swept: dict[str, str]
    runs: list[Run]
    n_runs: int


def metric_key(task: str) -> str:
    """The metrics.json key of a task's top-1."""
    return f"val/{task}/top1"


def metric_name(key: str) -> str:
    """`val/style/top1` -> `style top-1`, `val/mean_top1` -> `mean top-1`."""
    return "mean top-1" if key == OBJECTIVE else key.split("/")[1] + " top-1"


def run_tasks(best: dict[str, Any]) -> list[str]:
    """The tasks of a run, from the `val/<task>/top1` keys of its metrics."""
    return [k.split("/")[1] for k in best if k.startswith("val/") and k.endswith("/top1") and k.count("/") == 2]


def read_predictions(path: Path, tasks: list[str]) -> pd.DataFrame | None:
    """A run's val_predictions.csv indexed by `index` (None when the file is absent)."""
    if not path.is_file():
        return None
    frame = pd.read_csv(path)
    missing = [c for c in ("index", *tasks, *(f"{t}_pred" for t in tasks)) if c not in frame.columns]
    if missing:
        raise DeepArtError(f"{path} lacks the columns {missing}; it needs `index`, `path` and, per task, `<task>` "
                           f"(true class, -1 = no label) and `<task>_pred`. Rewrite it or delete it to skip the "
                           f"paired tests of this run")
    if frame["index"].duplicated().any():
        raise DeepArtError(f"{path}: the `index` column repeats values; it must name each val image once")
    return frame.set_index("index")


def load_run(run_dir: Path, run_id: str, seed: str | None) -> Run:
    """A finished run from its metrics.json (and val_predictions.csv when present)."""
    metrics = rundir.read_metrics(run_dir)
    best = metrics.get("best", {})
    history = metrics.get("history")
    phases = {name: p.get("best", {}).get(OBJECTIVE, math.nan) for name, p in metrics.get("phases", {}).items()}
    return Run(id=run_id, seed=seed, best=best, best_epoch=metrics.get("best_epoch", math.nan),
               history=history if isinstance(history, list) and history else None,
               predictions=read_predictions(run_dir / rundir.PREDICTIONS, run_tasks(best)),
               final=metrics.get("final", {}), phase_best=phases if len(phases) > 1 else {})


def group_configs(frame: pd.DataFrame, keys: list[str]) -> list[Config]:
    """The configs of the runs in `frame` (collect_runs rows, with `run_dir`) in job order; `keys`: the override
    keys that define a config (all but `seed`). Finished runs are loaded with their predictions and history."""
    varying = varying_keys(frame, keys)
    configs: dict[tuple[str, ...], Config] = {}
    for row in frame.to_dict("records"):
        values = {k: as_text(row.get(k)) for k in keys}
        config = configs.get(tuple(values.values()))
        if config is None:
            swept = {k: values[k] for k in varying}
            label = ",".join(f"{k}={v}" for k, v in swept.items() if v) or (DEFAULTS if swept else "all runs")
            config = configs[tuple(values.values())] = Config(label, values, swept, [], 0)
        config.n_runs += 1
        if row["status"] == "done":
            seed = as_text(row.get("seed")) or None
            config.runs.append(load_run(Path(row["run_dir"]), str(row["run"]), seed))
    return list(configs.values())


def config_tasks(configs: list[Config]) -> list[str]:
    """The tasks of all finished runs, in order of first appearance."""
    tasks: dict[str, None] = {}
    for config in configs:
        for run in config.runs:
            tasks.update(dict.fromkeys(run_tasks(run.best)))
    return list(tasks)


def parse_assignments(spec: str) -> dict[str, str]:
    """`key=value[,key=value]` -> {key: value} (a comma starts a new pair only when `key=` follows it)."""
    out = {}
    for part in re.split(r",(?=[^,=]+=)", spec):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise DeepArtError(f"--baseline {spec}: expected KEY=VALUE[,KEY=VALUE], e.g. --baseline phase.lr=0.001")
        out[key.strip().lstrip("+~")] = value.strip().strip("'\"")
    return out


def _same_value(a: str, b: str) -> bool:
    try:
        return a == b or float(a) == float(b)
    except ValueError:
        return False


def resolve_baseline(configs: list[Config], spec: str | None) -> Config:
    """The config matching `spec` (`key=value[,key=value]`); by default the first config in job order that
    has a finished run."""
    if spec is None:
        return next((c for c in configs if c.runs), configs[0])
    if spec == DEFAULTS:
        wanted = {k: "" for c in configs for k in c.swept}
    else:
        wanted = parse_assignments(spec)
    keys = sorted({k for c in configs for k in c.values})
    unknown = [k for k in wanted if k not in keys]
    labels = ", ".join(c.label for c in configs)
    if unknown:
        raise DeepArtError(f"--baseline {spec}: {', '.join(unknown)} is not an override of these runs; their config "
                           f"keys are {', '.join(keys) or 'none'} (seed is not part of a config)")
    matches = [c for c in configs if all(_same_value(c.values[k], v) for k, v in wanted.items())]
    if not matches:
        raise DeepArtError(f"--baseline {spec} matches no config; the configs are: {labels}")
    if len(matches) > 1:
        raise DeepArtError(f"--baseline {spec} matches {len(matches)} configs ({', '.join(c.label for c in matches)}); "
                           f"add KEY=VALUE pairs to pick one, e.g. --baseline {matches[0].label}")
    return matches[0]


def _counts(run: Run, task: str) -> tuple[int, int] | None:
    """(correct, labelled) val images of a task: from the predictions, else from `val/<task>/count`."""
    if run.predictions is not None and task in run.predictions.columns:
        truth = run.predictions[task]
        labelled = truth >= 0
        return int((run.predictions[f"{task}_pred"][labelled] == truth[labelled]).sum()), int(labelled.sum())
    count, top1 = run.best.get(f"val/{task}/count"), run.best.get(metric_key(task))
    if count is None or top1 is None:
        return None
    return round(top1 * count), int(count)


def single_run_interval(run: Run, key: str) -> tuple[float, float]:
    """Wilson interval of one run's top-1 over its val images. For the mean over its tasks: Wilson at the mean
    with the effective number of images T^2 / sum(1 / n_task) (tasks as independent samples)."""
    if key != OBJECTIVE:
        counts = _counts(run, key.split("/")[1])
        return wilson_interval(*counts) if counts else (math.nan, math.nan)
    counts = [_counts(run, t) for t in run_tasks(run.best)]
    if not counts or any(c is None or c[1] == 0 for c in counts):
        return math.nan, math.nan
    p = float(np.mean([hits / n for hits, n in counts]))
    n_eff = len(counts) ** 2 / sum(1 / n for _, n in counts)
    return wilson_interval(p * n_eff, n_eff)


def comparison_table(configs: list[Config], tasks: list[str], baseline: Config) -> pd.DataFrame:
    """One row per config: its swept values, whether it is the baseline, finished seeds and runs; per task and
    for the mean top-1: seed mean, std (ddof=1), 95 % interval of the mean (t over seeds; one run: Wilson over
    its val images); per task macro-F1 mean and std; best epoch mean; the mean top-1 of the last epoch (no
    selection), its difference from the best epoch's (`last_minus_best`: below 0 when runs peaked early) and, for
    runs of several phases, of each phase's best epoch. Metrics as fractions."""
    keys = [metric_key(t) for t in tasks] + [OBJECTIVE]
    phase_names = list(dict.fromkeys(name for c in configs for r in c.runs for name in r.phase_best))
    rows = []
    for config in configs:
        runs = config.runs
        row: dict[str, Any] = {"config": config.label, **config.swept, "baseline": config is baseline,
                               "seeds": len(runs), "runs": config.n_runs,
                               "interval": "t over seeds" if len(runs) > 1 else "Wilson over images" if runs else ""}
        for key in keys:
            values = pd.Series([r.best.get(key, math.nan) for r in runs], dtype=float)
            low, high = t_interval(values) if len(runs) > 1 else \
                single_run_interval(runs[0], key) if runs else (math.nan, math.nan)
            row.update({f"{key} mean": values.mean(), f"{key} std": values.std(ddof=1),
                        f"{key} ci_low": low, f"{key} ci_high": high})
        for task in tasks:
            f1 = pd.Series([r.best.get(f"val/{task}/macro_f1", math.nan) for r in runs], dtype=float)
            row.update({f"val/{task}/macro_f1 mean": f1.mean(), f"val/{task}/macro_f1 std": f1.std(ddof=1)})
        row["best_epoch mean"] = pd.Series([r.best_epoch for r in runs], dtype=float).mean()
        final = [r.final.get(OBJECTIVE, math.nan) for r in runs]
        columns = {"final": final,
                   "last_minus_best": [last - r.best.get(OBJECTIVE, math.nan) for last, r in zip(final, runs)]}
        columns.update({f"phase {name} best": [r.phase_best.get(name, math.nan) for r in runs]
                        for name in phase_names})
        for column, values in columns.items():
            values = pd.Series(values, dtype=float)
            row.update({f"{column} mean": values.mean(), f"{column} std": values.std(ddof=1)})
        if all(math.isnan(row[f"{key} ci_low"]) for key in keys):
            row["interval"] = ""
        rows.append(row)
    return pd.DataFrame(rows)


def _align(runs: list[Run], tasks: list[str]) -> tuple[np.ndarray, np.ndarray] | str:
    """Labels (tasks, images) and correctness (runs, tasks, images) on the val images all runs share, or why
    they cannot be paired."""
    frames = [r.predictions for r in runs]
    common = frames[0].index
    for frame in frames[1:]:
        common = common.intersection(frame.index)
    if not len(common):
        return "no val image in common (index column)"
    reference = frames[0].loc[common]
    preds = [f"{t}_pred" for t in tasks]
    for run, frame in zip(runs, frames):
        if any(c not in frame.columns for c in (*tasks, *preds)):
            return f"run {run.id} has other tasks"
        part = frame.loc[common]
        if "path" in part.columns and "path" in reference.columns and \
                not all(map(_same_image, part["path"].astype(str), reference["path"].astype(str))):
            return "the val images differ (path column)"
        if (part[tasks].to_numpy() != reference[tasks].to_numpy()).any():
            return "the val labels differ"
    labels = reference[tasks].to_numpy().T
    correct = np.stack([(f.loc[common, preds].to_numpy().T == labels) & (labels >= 0) for f in frames])
    return labels, correct


def _same_image(a: str, b: str) -> bool:
    """Two `path` entries name the same image: equal, or one is the other's path relative to a dataset folder
    (files written by older versions held absolute paths)."""
    return a == b or a.endswith("/" + b) or b.endswith("/" + a)


def _seed_pairs(runs: list[Run], baseline_runs: list[Run]) -> list[tuple[int, int]]:
    """(i, j) for runs[i] and baseline_runs[j] with the same seed, each run used once."""
    free: dict[str | None, list[int]] = {}
    for j, run in enumerate(baseline_runs):
        free.setdefault(run.seed, []).append(j)
    return [(i, free[run.seed].pop(0)) for i, run in enumerate(runs) if free.get(run.seed)]


def _discordant(a: np.ndarray, b: np.ndarray, mask: np.ndarray, pairs: list[tuple[int, int]]) -> tuple[int, int]:
    """McNemar's discordant counts pooled over seed-matched pairs: (only a right, only b right)."""
    only_a = sum(int((a[i] & ~b[j] & mask).sum()) for i, j in pairs)
    only_b = sum(int((~a[i] & b[j] & mask).sum()) for i, j in pairs)
    return only_a, only_b


def _paired_rows(config: Config, baseline: Config, tasks: list[str], n_boot: int, seed: int) -> list[dict]:
    """The paired_table rows of one config: per task, then the mean over tasks."""
    keys = [metric_key(t) for t in tasks] + [OBJECTIVE]
    runs = [r for r in config.runs if r.predictions is not None]
    base_runs = [r for r in baseline.runs if r.predictions is not None]
    head = {"config": config.label, "baseline": baseline.label, "seeds": len(runs), "baseline_seeds": len(base_runs)}
    if not config.runs or not baseline.runs:
        aligned: tuple | str = "no finished run"
    elif not runs or not base_runs:
        aligned = f"no {rundir.PREDICTIONS}"
    else:
        aligned = _align(runs + base_runs, tasks)
    if isinstance(aligned, str):
        return [{**head, "metric": key, "verdict": f"no paired test: {aligned}"} for key in keys]
    labels, correct = aligned
    a, b = correct[: len(runs)], correct[len(runs):]
    pairs = _seed_pairs(runs, base_runs)
    rows = []
    for t, key in enumerate(keys):
        if key == OBJECTIVE:
            mask, task_a, task_b = labels >= 0, a, b
        else:
            mask, task_a, task_b = labels[t: t + 1] >= 0, a[:, t: t + 1], b[:, t: t + 1]
        used = mask.any(axis=0)
        images = int(used.sum())
        if not images:
            rows.append({**head, "metric": key, "images": 0, "verdict": "no paired test: no labelled val image"})
            continue
        result = paired_bootstrap(task_a[..., used], task_b[..., used], mask[:, used], n_boot=n_boot, seed=seed)
        only_a, only_b = _discordant(task_a, task_b, mask, pairs)
        rows.append({**head, "metric": key, "images": images, "diff_points": 100 * result.diff,
                     "ci_low_points": 100 * result.low, "ci_high_points": 100 * result.high,
                     "p_bootstrap": result.p_value, "matched_seeds": len(pairs),
                     "mcnemar_b": only_a if pairs else math.nan, "mcnemar_c": only_b if pairs else math.nan,
                     "p_mcnemar": mcnemar_exact(only_a, only_b) if pairs else math.nan,
                     "verdict": SIGNIFICANT if result.significant else WITHIN_NOISE})
    return rows


def paired_table(configs: list[Config], baseline: Config, tasks: list[str], *, n_boot: int = 2000,
                 seed: int = 0) -> pd.DataFrame:
    """Each config against the baseline, per task and for the mean over tasks, on the val images all their runs
    share (per task: those labelled for it): the difference in top-1 (config minus baseline, points), its 95 %
    two-level paired bootstrap interval and p-value, McNemar's exact test on the discordant images of
    seed-matched runs (mean over tasks: discordant (image, task) pairs) and the verdict, `significant` when the
    interval excludes 0, else `within noise`, or why there is no test."""
    rows = [row for config in configs if config is not baseline
            for row in _paired_rows(config, baseline, tasks, n_boot, seed)]
    return pd.DataFrame(rows, columns=list(PAIRED_COLUMNS))
