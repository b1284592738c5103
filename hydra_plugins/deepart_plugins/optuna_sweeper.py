"""hparams_search=optuna: an Optuna (>= 4) study driven through its ask-and-tell interface, asynchronously: `n_jobs`
slots (in parallel with hydra/launcher=ray or slurm; one at a time on the basic launcher) each ask a trial, run it
through the sweep's launcher and tell the study its result, then ask the next as soon as their run ends. Every
trial reports val/mean_top1 after each epoch and its pruner may stop it (deepart.training.pruning). The study lives
in the sweep dir, so a killed or interrupted search continues with resume_sweep= (n_trials in all). The options are
described in conf/hydra/sweeper/deepart_optuna.yaml."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class OptunaSweeper(Sweeper):
    def __init__(self, direction: str = "maximize", study_name: str = "deepart", storage: str | None = None,
                 n_trials: int = 20, n_jobs: int = 1, sampler: dict[str, Any] | None = None,
                 pruner: dict[str, Any] | None = None, params: dict[str, Any] | None = None) -> None:
        self.direction, self.study_name, self.storage = direction, study_name, storage
        self.n_trials, self.n_jobs = n_trials, n_jobs
        self.sampler, self.pruner, self.params = dict(sampler or {}), dict(pruner or {}), params or {}
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.launcher = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(hydra_context=hydra_context,
                                                                task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Sequence[Any]:
        from deepart.core.cli import interrupted
        from deepart.core.errors import report_errors

        from . import _optuna

        try:
            return report_errors(_optuna.sweep, self, arguments)
        except KeyboardInterrupt:
            raise interrupted(sweep_dir=str(self.config.hydra.sweep.dir)) from None
