"""The runs of sweeps as one table: each run's overrides, status, error and the metrics its metrics.json gives
summary.csv (deepart.core.rundir lists them), one row per run; sweeps pooled."""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from deepart.core import rundir
from deepart.core.config import OBJECTIVE, launch_keys
from deepart.core.errors import DeepArtError

#: Overrides that steer how a run is started, not what it computes (Hydra's override_dirname exclude_keys).
NOT_SWEPT = launch_keys()


def read_overrides(run_dir: Path) -> dict[str, str]:
    """`key: value` of the overrides the run was launched with (.hydra/overrides.yaml; for a run lost before Hydra
    wrote it, those its failure.json names), NOT_SWEPT left out."""
    out = {}
    items = rundir.read_overrides(run_dir)
    if items is None:
        items = lost_overrides(run_dir)
    for item in items or []:
        key, _, value = item.partition("=")
        key = key.lstrip("+~")
        if key not in NOT_SWEPT:
            out[key] = value.strip("'\"")
    return out


def run_status(run_dir: Path) -> tuple[str, str | None]:
    """done (metrics.json) | pruned (pruned.json: a search trial its pruner stopped) | failed (failure.json: its
    error) | unfinished (killed, or still running)."""
    if (run_dir / rundir.METRICS).is_file():
        return "done", None
    pruned = rundir.read_pruned(run_dir)
    if pruned is not None:
        return "pruned", f"stopped by the pruner after epoch {pruned['epoch']} ({OBJECTIVE} {pruned['value']:.3f})"
    error = rundir.read_failure(run_dir)
    return ("failed", error) if error is not None else ("unfinished", None)


def lost_overrides(run_dir: Path) -> list[str] | None:
    """The overrides in the failure.json of a run lost before Hydra wrote its .hydra/ (its worker died), or None."""
    path = run_dir / rundir.FAILURE
    if not path.is_file():
        return None
    try:
        items = json.loads(path.read_text()).get("overrides")
    except (OSError, ValueError):
        return None
    return [str(item) for item in items] if isinstance(items, list) else None


def run_dirs(sweep_dir: Path) -> list[Path]:
    """The job dirs of a sweep, in job order: those holding a .hydra/ folder, and those of runs lost before Hydra
    wrote it (only their failure.json: the worker died first), so that the summary lists and counts them."""
    found = [p for p in sweep_dir.iterdir() if rundir.is_run_dir(p) or (p / rundir.FAILURE).is_file()]
    return sorted(found, key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else p.name))


def collect_runs(sweep_dir: str | Path) -> pd.DataFrame:
    """One row per run of a sweep: its dir, overrides, status, error, final val metrics (`val/...`), the metrics
    of the best epoch (`best/val/...`) and the run-level fields (rundir.summary_row)."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise DeepArtError(f"sweep dir not found: {sweep_dir}. Pass the dir of a `train.py -m` run, "
                           f"e.g. multirun/2026-01-01/12-00-00")
    rows: list[dict[str, Any]] = []
    for run_dir in run_dirs(sweep_dir):
        status, error = run_status(run_dir)
        row: dict[str, Any] = {"run": run_dir.name, "run_dir": str(run_dir), **read_overrides(run_dir),
                               "status": status, "error": error}
        if status in ("done", "pruned"):  # a pruned trial: the metrics it had reached
            row.update(rundir.summary_row(rundir.read_metrics(run_dir) or rundir.read_pruned(run_dir), OBJECTIVE))
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
    return [c for c in frame.columns if c not in rundir.SUMMARY_COLUMNS and "/" not in c]


def swept_keys(frame: pd.DataFrame, overrides: list[str]) -> list[str]:
    """Override keys whose values differ between runs (all of them if none differ)."""
    keys = [k for k in overrides if k in frame.columns]
    return varying_keys(frame, keys) or keys


def as_text(value: Any) -> str:
    """An override value as text; a key the run did not set (NaN in a pooled table) is ''."""
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)

def varying_keys(frame: pd.DataFrame, keys: list[str]) -> list[str]:
    """The keys among `keys` whose values differ between the rows of `frame` (a key unset in some rows counts)."""
    return [k for k in keys if k in frame.columns and frame[k].map(as_text).nunique() > 1]
