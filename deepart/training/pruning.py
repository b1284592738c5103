"""A trial of an Optuna search (hparams_search=optuna) reports its val/mean_top1 after every epoch to the study
and stops when the study's pruner says so.

The trainer calls `after_epoch` once per epoch. Outside a search (no deepart Optuna sweeper in the job's Hydra
config) it does nothing. In a trial it finds the study in the sweep's storage (the one the sweeper uses, see
`storage_url`) and its trial (the one whose user attribute `run` is this job's number), reports the epoch's
objective at step = epochs trained so far over all phases, and raises `TrialPruned` when the pruner prunes.
sweep.run_job turns that into `<run>/pruned.json` (not a failure); the sweeper then marks the trial pruned.
Under torchrun rank 0 reports and decides, and every rank stops with it.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from deepart.core import distributed
from deepart.core.config import OBJECTIVE
from deepart.core.errors import ConfigError

log = logging.getLogger("deepart")

#: The `_target_` of the sweeper whose trials report (hydra_plugins/deepart_plugins/optuna_sweeper.py).
SWEEPER = "hydra_plugins.deepart_plugins.optuna_sweeper.OptunaSweeper"
#: The study's file under the sweep dir when `hydra.sweeper.storage` is null: an Optuna journal (append-only,
#: with a file lock), which trials in several processes, or on several nodes of a shared file system, can share.
JOURNAL = "optuna.journal"
#: The trial's user attribute that names its run dir (= the Hydra job number).
RUN_ATTR = "run"


class TrialPruned(Exception):
    """The study's pruner stopped this trial after `epoch` epochs (step), at objective `value`; `reached`: the
    final / best metrics of the trial so far (as metrics.json names them)."""

    def __init__(self, epoch: int, value: float, reached: dict[str, Any]):
        super().__init__(f"pruned after epoch {epoch} ({OBJECTIVE} {value:.4f})")
        self.epoch, self.value, self.reached = epoch, value, reached

    def info(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "value": self.value, **self.reached}


def open_storage(storage: str | None, sweep_dir: str | Path):
    """The Optuna storage of a search: `storage` (an RDB URL such as sqlite:///path/optuna.db) or, when None,
    the journal file `<sweep dir>/optuna.journal`."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if storage:
        return str(storage)
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    Path(sweep_dir).mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(Path(sweep_dir) / JOURNAL)))


def make_pruner(cfg: dict[str, Any]):
    """The Optuna pruner of `hydra.sweeper.pruner` (the sweeper's study and every trial build the same)."""
    import optuna

    name = str(cfg.get("name", "none"))
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=int(cfg.get("startup_trials", 3)),
                                           n_warmup_steps=int(cfg.get("warmup_epochs", 1)))
    if name == "hyperband":
        top = cfg.get("max_epochs")
        return optuna.pruners.HyperbandPruner(min_resource=int(cfg.get("min_epochs", 1)),
                                              max_resource="auto" if top is None else int(top),
                                              reduction_factor=int(cfg.get("reduction_factor", 3)))
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(f"hydra.sweeper.pruner.name={name!r} is not allowed: expected median | hyperband | none.")


class Reporter:
    """The trial of this job in its study: report(value, step), should_prune()."""

    def __init__(self, trial):
        self.trial = trial

    @classmethod
    def of_job(cls) -> Reporter | None:
        """The reporter of the running Hydra job, or None when it is no trial of a search with a pruner."""
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            return None
        hc = HydraConfig.get()
        sweeper = hc.get("sweeper") or {}
        if sweeper.get("_target_") != SWEEPER or str((sweeper.get("pruner") or {}).get("name", "none")) == "none":
            return None
        import optuna

        study = optuna.load_study(study_name=sweeper.study_name, pruner=make_pruner(dict(sweeper.pruner)),
                                  storage=open_storage(sweeper.get("storage"), hc.sweep.dir))
        number = int(hc.job.num)
        for frozen in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            if frozen.user_attrs.get(RUN_ATTR) == number:
                return cls(optuna.trial.Trial(study, frozen._trial_id))  # as Optuna's own integrations do
        log.warning("pruning: no running trial of study %s for run %d; this run is not pruned",
                    sweeper.study_name, number)
        return None

    def report(self, value: float, step: int) -> None:
        self.trial.report(value, step)  # a step reported before (a resumed trial) is kept as it was

    def should_prune(self) -> bool:
        return self.trial.should_prune()


_reporters: dict[tuple[str, int], Reporter | None] = {}


def _reporter() -> Reporter | None:
    """This job's reporter, looked up once per job (several jobs share a process under the basic launcher)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    key = (str(hc.runtime.output_dir), int(hc.job.num) if hc.job.get("num") is not None else -1)
    if key not in _reporters:
        _reporters[key] = Reporter.of_job()
    return _reporters[key]


def after_epoch(cfg: DictConfig, phases: list[DictConfig], index: int, state) -> None:
    """Report the epoch that `state` (the phase's PhaseState) just finished; raise TrialPruned when the study's
    pruner stops the trial. `phases`: the run's phases (steps count the epochs of all of them)."""
    dist = distributed.current()
    prune = False
    if dist.is_main:
        reporter = _reporter()
        if reporter is None and not dist.enabled:
            return
        if reporter is not None:
            step = sum(int(p.epochs) for p in phases[:index]) + state.epoch
            value = float(state.final[OBJECTIVE])
            reporter.report(value, step)
            prune = reporter.should_prune()
    if dist.enabled:
        import torch.distributed

        decision = [prune]
        torch.distributed.broadcast_object_list(decision, src=0)
        prune = decision[0]
    if prune:
        epoch = sum(int(p.epochs) for p in phases[:index]) + state.epoch
        value = float(state.final[OBJECTIVE])
        log.info("pruning: the study's pruner stops this trial after epoch %d (%s %.4f)", epoch, OBJECTIVE, value)
        raise TrialPruned(epoch, value, {"final": state.final, "best": state.best, "best_epoch": state.best_epoch,
                                         "epochs": epoch})
