"""Sweeps: each job of a multirun (a crash is recorded, not fatal; `resume_sweep=` skips finished runs and
resumes unfinished ones) and the end-of-sweep summary (summary.csv and a printed table)."""
from __future__ import annotations

import gc
import logging
import os
import shutil
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from deepart.core import rundir
from deepart.core.config import OBJECTIVE, sweep_group
from deepart.core.errors import ConfigError, DeepArtError, report_errors
from deepart.report.runs import NOT_SWEPT, collect_runs, override_keys, swept_keys
from deepart.report.sweeps import log_report, write_report
from deepart.training.pruning import TrialPruned

log = logging.getLogger("deepart")

#: What a failed run returns to the sweeper: the worst accuracy, so a search steers away from settings
#: that crash (Optuna refuses NaN). The run is reported as failed, not as a run that scored 0.
FAILED_OBJECTIVE = 0.0


def is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def record_failure(run_dir: Path, exc: BaseException, overrides: list[str] | None = None) -> dict[str, Any]:
    """Write `<run>/failure.json`: the error, whether it was an out-of-memory, the traceback; for a run lost
    before Hydra wrote its .hydra/ (its worker died first), the job's `overrides`, which the summary lists."""
    message = str(exc).strip()
    info = {"error": type(exc).__name__, "message": message.splitlines()[0][:500] if message else "",
            "oom": is_out_of_memory(exc), "traceback": "".join(traceback.format_exception(exc))}
    if overrides is not None:
        info["overrides"] = list(overrides)
    if info["oom"]:
        info["hint"] = "out of memory: lower phase.batch_size, or use a smaller backbone / data.image_size"
    rundir.write_failure(run_dir, info)
    return info


def _task_overrides(items) -> list[str]:
    return sorted(str(o) for o in items if str(o).split("=", 1)[0].lstrip("+~") not in NOT_SWEPT)


def _prepare_resumed_job(cfg: DictConfig, run_dir: Path, overrides: list[str] | None) -> float | None:
    """For `resume_sweep=` (and a SLURM requeue): the objective of a finished run (to skip it), else point
    `resume` at an unfinished run's checkpoints. The job must have the overrides it was first run with."""
    hydra_dir, fresh = run_dir / rundir.HYDRA, run_dir / f"{rundir.HYDRA}-resume"
    if hydra_dir.is_dir() and overrides is not None:
        before = _task_overrides(rundir.read_overrides(run_dir) or [])
        if before != _task_overrides(overrides):
            raise ConfigError(f"resume_sweep: {run_dir} was run with overrides {before}, this job has "
                              f"{_task_overrides(overrides)}; re-run the sweep's own command (same values in "
                              f"the same order) with resume_sweep=<its sweep dir>")
    elif fresh.is_dir():  # a job the interrupted sweep never started
        shutil.copytree(fresh, hydra_dir)
    metrics = rundir.read_metrics(run_dir)
    if metrics is not None:
        log.info("resume_sweep: %s already finished; skipped", run_dir)
        return metrics["best"].get(OBJECTIVE, FAILED_OBJECTIVE)
    pruned = rundir.read_pruned(run_dir)
    if pruned is not None:  # a search trial its pruner stopped stays stopped
        log.info("resume_sweep: %s was pruned after epoch %s; skipped", run_dir, pruned.get("epoch"))
        return float(pruned.get("value", FAILED_OBJECTIVE))
    if rundir.newest_last(run_dir) is not None:
        cfg.resume = str(run_dir)
    return None


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C reached a run of train.py: the KeyboardInterrupt, with the folder that continues it (`sweep_dir` for
    resume_sweep=, a multirun's; else `run_dir` for resume=)."""

    def __init__(self, sweep_dir: str | None, run_dir: str):
        super().__init__(sweep_dir, run_dir)  # its args: a copy (pickle) is made with the same folders
        self.sweep_dir, self.run_dir = sweep_dir, run_dir


def run_job(cfg: DictConfig, train_fn: Callable[[DictConfig], dict]) -> float:
    """train.py's Hydra job: train and return the objective (best val/mean_top1).

    In a multirun an exception (or out-of-memory) is written to <run>/failure.json and logged, and the
    sweep goes on with its other runs. A single run reports it and exits (status 2 for user errors).
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from deepart.core import distributed

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    main_rank = distributed.current().is_main
    requeued = int(os.environ.get("SLURM_RESTART_COUNT", "0")) > 0  # hit the time limit, back in the queue
    if cfg.get("resume_sweep") and not multirun:
        report_errors(_raise, ConfigError("resume_sweep=<sweep dir> continues a sweep: add -m and the "
                                                 "sweep's own overrides"))
    if cfg.get("resume_sweep") or requeued:
        overrides = None if requeued else list(hc.overrides.task)
        done = report_errors(_prepare_resumed_job, cfg, run_dir, overrides)
        if done is not None:
            return done
    if main_rank:
        rundir.clear_failure(run_dir)
        (run_dir / rundir.PRUNED).unlink(missing_ok=True)
    try:
        summary = train_fn(cfg)
    except KeyboardInterrupt as exc:  # Ctrl-C: the run ended as interrupted; train.py says how to continue
        raise RunInterrupted(str(hc.sweep.dir) if multirun else None, str(run_dir)) from exc
    except TrialPruned as pruned:  # a search trial its pruner stopped: pruned.json, not a failure
        if main_rank:
            rundir.write_pruned(run_dir, pruned.info())
        log.info("run %s: %s; recorded in %s/%s", run_dir.name, pruned, run_dir, rundir.PRUNED)
        return pruned.value
    except Exception as exc:  # noqa: BLE001 - one run's crash must not end the sweep
        info = record_failure(run_dir, exc) if main_rank else {}
        if not multirun:
            return report_errors(_raise, exc)
        log.error("run %s failed (%s: %s)%s; recorded in %s/%s, the sweep goes on", run_dir.name,
                  type(exc).__name__, exc, " - out of memory" if info.get("oom") else "", run_dir, rundir.FAILURE)
        summary = None
    if summary is None:  # outside the except block: the traceback (and the run's model) is released now
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return FAILED_OBJECTIVE
    return summary["best"].get(OBJECTIVE, FAILED_OBJECTIVE)


def _raise(exc: BaseException):
    raise exc


def summarize(sweep_dir: str | Path) -> pd.DataFrame | None:
    """Write `<sweep_dir>/summary.csv` and return the table (None when the sweep has no runs)."""
    frame = collect_runs(sweep_dir)
    if frame.empty:
        return None
    swept = swept_keys(frame, override_keys(frame))
    metric_cols = [c for c in frame.columns if "/" in c]
    fields = [c for c in rundir.RUN_FIELDS if c in frame.columns]
    frame = frame[["run", *swept, "status", *metric_cols, *fields, "error"]]
    frame.to_csv(Path(sweep_dir) / rundir.SUMMARY, index=False)
    return frame


def format_summary(frame: pd.DataFrame) -> str:
    """The summary as text: swept values, status, final top-1 per task, final and best mean top-1, last minus
    best, best epoch."""
    drop = rundir.LAST_MINUS_BEST + OBJECTIVE
    keep = [c for c in frame.columns if c != "error" and ("/" not in c or c in (f"best/{OBJECTIVE}", drop)
                                                          or (c.startswith("val/") and c.endswith("top1")))]
    shown = frame[keep].copy()
    for col in shown.columns:
        if "/" in col:
            shown[col] = shown[col].map(lambda v: "" if pd.isna(v) else f"{100 * v:.1f}")
    shown.columns = ["last - best" if c == drop else c.replace("val/", "").replace("/top1", " top1")
                     for c in shown.columns]
    return shown.to_string(index=False)


def pin_sweep_dir(config: DictConfig) -> Path:
    """Resolve the sweep dir once, in the process that starts the sweep, and give every job that absolute path.

    Hydra composes each job's config again from the command line's overrides (`hydra.overrides.hydra`), and a
    job that runs in another process (a Ray worker, a SLURM job) would resolve `${launch_time:...}` at its own
    start: its run dir would land in another sweep dir than multirun.yaml and the summary. Appending
    `hydra.sweep.dir=<absolute path>` to those overrides makes every job, on every launcher, use the driver's
    dir (the Optuna journal lives there too)."""
    from omegaconf import flag_override

    from deepart.core.cli import quote_path

    sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()
    line = quote_path(f"hydra.sweep.dir={sweep_dir.as_posix()}")
    with flag_override(config, ["readonly", "struct"], [False, False]):
        config.hydra.sweep.dir = sweep_dir.as_posix()
        overrides = [str(o) for o in config.hydra.overrides.hydra]
        config.hydra.overrides.hydra = [*(o for o in overrides if not o.startswith("hydra.sweep.dir=")), line]
    return sweep_dir


def is_search(config: DictConfig) -> bool:
    """Whether this multirun is an Optuna search (hparams_search=optuna) rather than a grid sweep."""
    from deepart.training.pruning import SWEEPER

    return str(OmegaConf.select(config, "hydra.sweeper._target_", default="")) == SWEEPER


class SweepSummary(Callback):
    """Hydra callback: at the start of a multirun, one sweep dir for every job (`pin_sweep_dir`); at its end,
    compare its runs (summary.csv and a printed table), write the report (report.html, ...; to the sweep's trackers
    too), and exit with status 1 when runs failed, when no run wrote into the sweep dir, or when a search has no
    completed trial (whatever `fail_on_run_error` says: a search without a result has nothing to give)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        pin_sweep_dir(config)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from deepart.core import distributed

        sweep_dir = Path(config.hydra.sweep.dir)
        if not distributed.current().is_main:
            return
        frame = summarize(sweep_dir) if sweep_dir.is_dir() else None
        if frame is None:
            print(f"no run of this sweep wrote into {sweep_dir}: nothing to summarize", flush=True)
            raise SystemExit(1)
        print(f"\nSweep summary ({sweep_dir / rundir.SUMMARY}):\n{format_summary(frame)}", flush=True)
        self._report(config, sweep_dir)
        failed = frame[~frame["status"].isin(["done", "pruned"])]  # a pruned search trial ended as it should
        for row in failed.itertuples():
            print(f"run {row.run} {row.status}: {row.error or 'no ' + rundir.METRICS}", flush=True)
        if len(failed):
            print(f"{len(failed)} of {len(frame)} runs have no results; continue the sweep with the same command "
                  f"plus resume_sweep={sweep_dir}", flush=True)
        if is_search(config) and not (frame["status"] == "done").any():
            print(f"the search has no completed trial (of {len(frame)}): no best value", flush=True)
            raise SystemExit(1)
        if len(failed) and config.get("fail_on_run_error", True):
            raise SystemExit(1)  # so that scripts and SLURM notice (fail_on_run_error=false: exit 0)

    @staticmethod
    def _report(config: DictConfig, sweep_dir: Path) -> None:
        """report.html and the other report files, and the report to every tracker of the sweep's logger."""
        try:
            paths = write_report(sweep_dir)
        except DeepArtError as exc:
            log.warning("no sweep report: %s", exc)
            return
        print(f"report: {paths['html']} (and report.md, report.csv; python -m deepart report {sweep_dir} "
              f"--baseline key=value compares against another config)", flush=True)
        log_report(sweep_dir, config.get("logger") or {}, sweep_group(config.hydra.sweep.dir))
