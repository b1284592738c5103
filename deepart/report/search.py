"""The hyper-parameter search part of a sweep's report (hparams_search=optuna): the best trial and the table of
trials (pruned and failed ones marked) that the Optuna sweeper wrote into the sweep dir."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

from deepart.core.config import OBJECTIVE

TRIALS = "optuna_trials.csv"   # written by hydra_plugins/deepart_plugins/_optuna.py
BEST = "optuna_best.yaml"


def search_summary(sweep_dir: str | Path) -> tuple[str, pd.DataFrame] | None:
    """(one sentence on the study and its best trial, the trials table for display), or None for a sweep that
    was no Optuna search."""
    sweep_dir = Path(sweep_dir)
    if not (sweep_dir / TRIALS).is_file() or not (sweep_dir / BEST).is_file():
        return None
    best = yaml.safe_load((sweep_dir / BEST).read_text()) or {}
    trials = pd.read_csv(sweep_dir / TRIALS)
    counts = ", ".join(f"{n} {state}" for state, n in (best.get("trials") or {}).items())
    text = f"Optuna study {best.get('study')} ({best.get('direction')} {OBJECTIVE}): {len(trials)} trials ({counts})."
    if "best_trial" in best:
        values = ", ".join(f"{k}={v}" for k, v in (best.get("best_params") or {}).items())
        text += (f" Best: trial {best['best_trial']} (run {best['best_run']}), {100 * best['best_value']:.1f} "
                 f"with {values}. A pruned trial stopped early; its value is its last reported epoch's.")
    shown = trials.copy()
    shown["value"] = shown["value"].map(lambda v: "" if pd.isna(v) else f"{100 * v:.1f}")
    return text, shown
