"""End-of-sweep summary: one row per run of a Hydra multirun, swept values as columns."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)

METRIC_COLUMNS = ("top1", "top5", "macro_f1", "balanced_acc")


def _overrides(run_dir: Path) -> dict[str, str]:
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return {}
    items = yaml.safe_load(path.read_text()) or []
    out = {}
    for item in items:
        key, _, value = str(item).partition("=")
        out[key.lstrip("+~")] = value.strip("'\"")
    return out


def collect_runs(sweep_dir: str | Path) -> pd.DataFrame:
    """One row per run dir of a sweep: its overrides and the final / best val metrics of metrics.json."""
    sweep_dir = Path(sweep_dir)
    rows: list[dict[str, Any]] = []
    for run_dir in sorted((p for p in sweep_dir.iterdir() if (p / ".hydra").is_dir()),
                          key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else p.name)):
        row: dict[str, Any] = {"run": run_dir.name, **_overrides(run_dir)}
        metrics_path = run_dir / "metrics.json"
        if metrics_path.is_file():
            metrics = json.loads(metrics_path.read_text())
            final, best = metrics.get("final", {}), metrics.get("best", {})
            row["status"] = "done"
            for key, value in final.items():
                if key.split("/")[-1] in METRIC_COLUMNS or key == "val/mean_top1":
                    row[key] = value
            row["best/val/mean_top1"] = best.get("val/mean_top1")
            row["best_epoch"] = metrics.get("best_epoch")
            row["runtime_s"] = metrics.get("runtime_s")
        else:
            row["status"] = "failed"
        rows.append(row)
    return pd.DataFrame(rows)


def swept_keys(frame: pd.DataFrame, overrides: list[str]) -> list[str]:
    """Override keys whose values differ between runs (all of them if there is one run)."""
    keys = [k for k in overrides if k in frame.columns]
    varying = [k for k in keys if frame[k].astype(str).nunique() > 1]
    return varying or keys


def summarize(sweep_dir: str | Path) -> pd.DataFrame | None:
    """Write `<sweep_dir>/summary.csv` and return the table (None when the sweep has no runs)."""
    frame = collect_runs(sweep_dir)
    if frame.empty:
        return None
    override_keys = [c for c in frame.columns if c not in ("run", "status") and "/" not in c
                     and c not in ("best_epoch", "runtime_s")]
    swept = swept_keys(frame, override_keys)
    metric_cols = [c for c in frame.columns if "/" in c or c in ("best_epoch", "runtime_s")]
    frame = frame[["run", *swept, "status", *metric_cols]]
    frame.to_csv(Path(sweep_dir) / "summary.csv", index=False)
    return frame


def format_summary(frame: pd.DataFrame) -> str:
    shown = frame[[c for c in frame.columns if not c.endswith(("/top5", "/macro_f1", "/balanced_acc"))]].copy()
    for col in shown.columns:
        if "/" in col:
            shown[col] = shown[col].map(lambda v: "" if pd.isna(v) else f"{100 * v:.1f}")
    shown.columns = [c.replace("val/", "").replace("/top1", " top1") for c in shown.columns]
    return shown.to_string(index=False)


class SweepSummary(Callback):
    """Hydra callback: at the end of a multirun, compare its runs in summary.csv and a printed table."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        frame = summarize(sweep_dir)
        if frame is None:
            return
        text = format_summary(frame)
        print(f"\nSweep summary ({sweep_dir / 'summary.csv'}):\n{text}", flush=True)
