"""The files of a run dir and of a sweep dir: their names and schemas, written and read through here only.

    <run>/metrics.json            a finished run (training writes it last): `RunMetrics`
    <run>/failure.json            a run that raised (sweeps): error, message, oom, traceback[, hint]
    <run>/val_predictions.csv     per val image of the best checkpoint: index, path, per task <task>, <task>_pred
    <run>/checkpoints/            {last,best}.pt; a chained run (phase=all) also phase-<name>/{last,best}.pt
    <run>/.hydra/overrides.yaml   the command-line overrides the run was launched with (Hydra)
    <run>/.hydra/config.yaml      the run's composed config (Hydra)
    <run>/lr_find.{json,png}      the LR range test (lr_find=true)
    <run>/eval/                   eval.py's output: metrics.json, per_class.csv, <split>_predictions.csv, pictures
    <run>/metrics.csv             logger=csv: one row per epoch (step, epoch, then every metric name)
    <run>/tensorboard/            logger=tensorboard: the run's event files
    <run or sweep>/mlflow.db      logger=mlflow: the local MLflow store (a sweep's runs share the sweep's),
    <run or sweep>/mlartifacts/   and its artifacts
    <sweep>/summary.csv           one row per run (`SUMMARY_COLUMNS` and the swept keys), after a multirun
    <sweep>/sweep-summary/        logger=tensorboard: the sweep report's event files

The columns the sweep summary and the report take from metrics.json are listed once, here: every
`<split>/<task>/<name>` for a name in `TASK_METRICS` (and the objective), and the run-level `RUN_FIELDS`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

METRICS = "metrics.json"
FAILURE = "failure.json"
PRUNED = "pruned.json"        # a search trial its pruner stopped (hparams_search=optuna)
PREDICTIONS = "val_predictions.csv"
CHECKPOINTS = "checkpoints"
SUMMARY = "summary.csv"
HYDRA = ".hydra"
BEST = "best.pt"
LAST = "last.pt"
EVAL = "eval"
LR_FIND = "lr_find"
METRICS_CSV = "metrics.csv"
TENSORBOARD = "tensorboard"
MLFLOW_DB = "mlflow.db"
MLFLOW_ARTIFACTS = "mlartifacts"
SWEEP_SUMMARY = "sweep-summary"

#: Per-task metrics of metrics.json copied into summary.csv and report.csv (`val/<task>/<name>`).
TASK_METRICS = ("top1", "top5", "macro_f1", "balanced_acc", "ece")
#: Of those, the ones report.csv / report.md show per task (ece: expected calibration error, lower is better).
REPORT_TASK_METRICS = ("top1", "top5", "ece")
#: Run-level numbers of metrics.json copied into summary.csv and report.csv, in this order.
RUN_FIELDS = ("best_epoch", "epochs", "runtime_s")
#: Prefix of the column of summary.csv / report.csv with the last epoch's objective minus the best epoch's (<= 0;
#: below 0 when the run peaked early): `last_minus_best/val/mean_top1`.
LAST_MINUS_BEST = "last_minus_best/"
#: Columns of summary.csv / report.csv that describe a run rather than a config or a metric.
SUMMARY_COLUMNS = ("run", "run_dir", "status", "error", *RUN_FIELDS)


# ------------------------------------------------------------------------------------------ metrics.json
def write_metrics(run_dir: str | Path, summary: dict[str, Any]) -> Path:
    """Write `<run>/metrics.json`: final, best (val metrics of the last and the best epoch), best_epoch,
    best_phase, epochs, skipped_images, runtime_s, phases ({name: final, best, best_epoch, epochs}), history
    (one record per epoch). Its presence marks the run as finished."""
    return _write_json(Path(run_dir) / METRICS, summary)


def read_metrics(run_dir: str | Path) -> dict[str, Any] | None:
    """A finished run's metrics.json, or None when the run has not finished."""
    return _read_json(Path(run_dir) / METRICS)


def _write_json(path: Path, info: dict[str, Any]) -> Path:
    path.write_text(json.dumps(info, indent=2))
    return path


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def summary_row(metrics: dict[str, Any], objective: str) -> dict[str, Any]:
    """The columns a finished run gives summary.csv / report.csv: final val metrics as `val/...`, those of the
    best epoch as `best/val/...` (the names in TASK_METRICS and `objective`), the last minus the best epoch's
    `objective` (LAST_MINUS_BEST), then RUN_FIELDS."""
    row: dict[str, Any] = {}
    for section, prefix in (("final", ""), ("best", "best/")):
        for key, value in metrics.get(section, {}).items():
            if key.split("/")[-1] in TASK_METRICS or key == objective:
                row[prefix + key] = value
    if objective in row and f"best/{objective}" in row:
        row[LAST_MINUS_BEST + objective] = row[objective] - row[f"best/{objective}"]
    row.update({name: metrics.get(name) for name in RUN_FIELDS})
    return row


# ------------------------------------------------------------------------------------------ failure.json
def write_failure(run_dir: str | Path, info: dict[str, Any]) -> Path:
    """Write `<run>/failure.json` (keys: error, message, oom, traceback, and hint for an out-of-memory)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / FAILURE
    path.write_text(json.dumps(info, indent=2))
    return path


def clear_failure(run_dir: str | Path) -> None:
    (Path(run_dir) / FAILURE).unlink(missing_ok=True)


def read_failure(run_dir: str | Path) -> str | None:
    """The one-line error of a failed run (`out of memory: ` first for an out-of-memory), or None."""
    path = Path(run_dir) / FAILURE
    if not path.is_file():
        return None
    info = json.loads(path.read_text())
    return ("out of memory: " if info.get("oom") else "") + f"{info['error']}: {info['message']}"


# ------------------------------------------------------------------------------------------ pruned.json
def write_pruned(run_dir: str | Path, info: dict[str, Any]) -> Path:
    """Write `<run>/pruned.json`: a search trial stopped by its pruner (keys: epoch, value, and the final, best,
    best_epoch, epochs it had reached, as metrics.json names them)."""
    return _write_json(Path(run_dir) / PRUNED, info)


def read_pruned(run_dir: str | Path) -> dict[str, Any] | None:
    """A pruned trial's pruned.json, or None."""
    return _read_json(Path(run_dir) / PRUNED)


# ------------------------------------------------------------------------------------------ overrides
def read_overrides(run_dir: str | Path) -> list[str] | None:
    """The `key=value` overrides a run was launched with (.hydra/overrides.yaml), None without that file."""
    path = Path(run_dir) / HYDRA / "overrides.yaml"
    if not path.is_file():
        return None
    return [str(item) for item in yaml.safe_load(path.read_text()) or []]


def hydra_config(run_dir: str | Path) -> Path:
    """`<run>/.hydra/config.yaml`: the run's composed config as Hydra saved it."""
    return Path(run_dir) / HYDRA / "config.yaml"


def sweep_dir_of(run_dir: str | Path) -> Path | None:
    """The sweep dir a run dir belongs to (its parent, when Hydra recorded the job as part of a multirun in
    .hydra/hydra.yaml), or None for a single run."""
    path = Path(run_dir) / HYDRA / "hydra.yaml"
    if not path.is_file():
        return None
    saved = yaml.safe_load(path.read_text()) or {}
    return Path(run_dir).resolve().parent if (saved.get("hydra") or {}).get("mode") == "MULTIRUN" else None


def is_run_dir(path: Path) -> bool:
    """A job dir of a sweep: it holds Hydra's .hydra/ folder, and is not the eval/ folder that eval.py writes into
    a sweep dir it evaluates as an ensemble (or into a run dir)."""
    return (path / HYDRA).is_dir() and path.name != EVAL


def newest_run(folder: str | Path = "outputs") -> Path | None:
    """The run dir under `folder` (at any depth) whose metrics.json was written last: the newest finished run
    (`python train.py` writes to outputs/<date>/<time>/), or None when there is none."""
    found = [p for p in Path(folder).glob(f"**/{METRICS}") if is_run_dir(p.parent)]
    return max(found, key=lambda p: p.stat().st_mtime).parent if found else None


def newest_sweep(folder: str | Path = "multirun") -> Path | None:
    """The sweep dir under `folder` (at any depth) whose summary.csv was written last: the newest finished sweep
    (`python train.py -m` writes to multirun/<date>/<time>/), or None when there is none."""
    found = list(Path(folder).glob(f"**/{SUMMARY}"))
    return max(found, key=lambda p: p.stat().st_mtime).parent if found else None


# ------------------------------------------------------------------------------------------ checkpoints
def phase_dir(run_dir: str | Path, phase_name: str, chained: bool) -> Path:
    """Folder of a phase's last.pt / best.pt."""
    return Path(run_dir) / CHECKPOINTS / (f"phase-{phase_name}" if chained else "")


def best_checkpoint(run_dir: str | Path) -> Path:
    """`<run>/checkpoints/best.pt`: the run's best checkpoint (of its selected phase for a chain)."""
    return Path(run_dir) / CHECKPOINTS / BEST


def predictions_file(folder: str | Path, split: str = "val") -> Path:
    """`<folder>/<split>_predictions.csv`: per-image true and predicted classes (PREDICTIONS for val in a run dir)."""
    return Path(folder) / f"{split}_predictions.csv"


def eval_dir(target: str | Path) -> Path:
    """Where eval.py writes by default: `<run>/eval` (`<export folder>/eval` for an export folder)."""
    return run_dir_of(target) / EVAL


def run_dir_of(target: str | Path) -> Path:
    """The run dir of a checkpoint file (<run>/checkpoints[/phase-N]/x.pt -> <run>; a file elsewhere -> its
    folder), or `target` itself when it names a folder (an existing one, or a path not ending in .pt)."""
    path = Path(target)
    if path.is_dir() or (not path.is_file() and path.suffix != ".pt"):
        return path
    for parent in path.resolve().parents:
        if parent.name == CHECKPOINTS:
            return parent.parent
    return path.resolve().parent


def newest_last(run_dir: str | Path) -> Path | None:
    """The most recently written last.pt of a run (any phase), or None."""
    found = sorted((Path(run_dir) / CHECKPOINTS).glob(f"**/{LAST}"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None
