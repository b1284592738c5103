"""Offline report of a sweep: `python -m deepart.report <sweep dir> [--out DIR]`.

Reads only the sweep's files (each run's .hydra/overrides.yaml, metrics.json or failure.json) and writes
  report.csv / report.md   every run: swept values, status, best val top-1/top-5 per task, best epoch,
                           epochs, run time, error; sorted by the objective (failed runs last, listed)
  report_seeds.csv         (sweeps over `seed`) mean and std per metric over runs differing only in seed
  report.png               the objective against each swept value
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from deepart.config import OBJECTIVE
from deepart.errors import DeepArtError

METRIC_COLUMNS = ("top1", "top5", "macro_f1", "balanced_acc")
#: Overrides that steer how a run is started, not what it computes.
NOT_SWEPT = ("resume", "resume_sweep", "hparams_search")
RUN_COLUMNS = ("run", "status", "error", "best_epoch", "epochs", "runtime_s")


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
    """One row per run of a sweep: overrides, status, error, final val metrics (`val/...`), the metrics
    of the best epoch (`best/val/...`), best_epoch, epochs and run time."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise DeepArtError(f"sweep dir not found: {sweep_dir}. Pass the dir of a `train.py -m` run, "
                           f"e.g. multirun/2026-01-01/12-00-00")
    rows: list[dict[str, Any]] = []
    for run_dir in run_dirs(sweep_dir):
        status, error = run_status(run_dir)
        row: dict[str, Any] = {"run": run_dir.name, **read_overrides(run_dir), "status": status, "error": error}
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


def override_keys(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c not in RUN_COLUMNS and "/" not in c]


def swept_keys(frame: pd.DataFrame, overrides: list[str]) -> list[str]:
    """Override keys whose values differ between runs (all of them if none differ)."""
    keys = [k for k in overrides if k in frame.columns]
    varying = [k for k in keys if frame[k].astype(str).nunique() > 1]
    return varying or keys


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
        return str(value).replace("|", "\\|")


def markdown(frame: pd.DataFrame) -> str:
    """A GitHub Markdown table; metrics (`.../top1` etc.) in %."""
    head = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(_cell(c, v) for c, v in zip(frame.columns, row)) + " |"
            for row in frame.itertuples(index=False)]
    return "\n".join([head, rule, *body])


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


def plot(table: pd.DataFrame, swept: list[str], path: Path) -> None:
    """The objective (%) against each swept value; one panel per key."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = swept or ["run"]
    done = table[table["status"] == "done"]
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.6), squeeze=False)
    for ax, key in zip(axes[0], keys):
        y = 100 * pd.to_numeric(done[OBJECTIVE], errors="coerce")
        x = pd.to_numeric(done[key], errors="coerce")
        if len(done) and x.notna().all():
            ax.scatter(x, y, alpha=0.8)
            if (x > 0).all() and x.max() / x.min() >= 10:
                ax.set_xscale("log")
        else:
            levels = sorted(table[key].astype(str).unique())
            pos = done[key].astype(str).map({v: i for i, v in enumerate(levels)})
            ax.scatter(pos, y, alpha=0.8)
            ax.set_xticks(range(len(levels)), levels, rotation=30, ha="right")
            ax.set_xlim(-0.5, len(levels) - 0.5)
        failed = int((table["status"] != "done").sum())
        ax.set_xlabel(key)
        ax.set_ylabel(f"best {OBJECTIVE} (%)")
        ax.set_title(f"{len(done)} runs" + (f", {failed} without results (not shown)" if failed else ""), fontsize=9)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(sweep_dir: str | Path, out_dir: str | Path | None = None) -> dict[str, Path]:
    """Write report.csv, report.md, report.png (and report_seeds.csv) for a sweep; returns their paths."""
    sweep_dir = Path(sweep_dir)
    frame = collect_runs(sweep_dir)
    if frame.empty:
        raise DeepArtError(f"{sweep_dir} holds no runs (no <run>/.hydra dirs); pass the dir of a `train.py -m` run")
    out = Path(out_dir) if out_dir else sweep_dir
    out.mkdir(parents=True, exist_ok=True)
    table = report_table(frame)
    swept = swept_keys(frame, override_keys(frame))
    paths = {"csv": out / "report.csv", "md": out / "report.md", "png": out / "report.png"}
    table.to_csv(paths["csv"], index=False)
    counts = table["status"].value_counts().to_dict()
    lines = [f"# Sweep report: {sweep_dir}", "",
             f"{len(table)} runs: " + ", ".join(f"{n} {s}" for s, n in counts.items()) +
             f". Sorted by best {OBJECTIVE}; metrics in % at the best epoch.", "", markdown(table)]
    seeds = seed_table(table) if "seed" in swept else None
    if seeds is not None:
        paths["seeds"] = out / "report_seeds.csv"
        seeds.to_csv(paths["seeds"], index=False)
        lines += ["", "## Over seeds (mean ± std of the runs that finished)", "", seed_markdown(seeds)]
    failed = table[table["status"] != "done"]
    if len(failed):
        lines += ["", "## Runs without results", ""]
        lines += [f"- run {r.run}: {r.status}" + (f" ({r.error})" if pd.notna(r.error) else "")
                  for r in failed.itertuples()]
    paths["md"].write_text("\n".join(lines) + "\n")
    plot(table, [k for k in swept if k != "seed"] or swept, paths["png"])
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deepart.report", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", help="a sweep dir written by `python train.py -m ...`")
    parser.add_argument("--out", default=None, help="where to write the report (default: the sweep dir)")
    args = parser.parse_args(argv)
    try:
        paths = write_report(args.sweep_dir, args.out)
    except DeepArtError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(paths["md"].read_text())
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
