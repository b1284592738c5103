"""hydra/launcher=ray: the runs of a sweep on warm Ray workers, one per slot, each slot with `gpus_per_run` GPUs
(its own CUDA_VISIBLE_DEVICES, set by Ray; none at all with gpus_per_run=0) and `cpus_per_run` CPU cores, as many
slots as the resources allow; on a Ray of the sweep's own (started on this machine) or on a running cluster
(`address=<head>`). launch() may be called from several threads at once (the Optuna search starts each trial as
a slot frees). The options are
described in conf/hydra/launcher/ray.yaml."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf


class RayLauncher(Launcher):
    def __init__(self, address: str | None = None, gpus_per_run: float = 1, cpus_per_run: float | None = None,
                 num_gpus: int | None = None, num_cpus: int | None = None, max_concurrent: int | None = None,
                 init: dict[str, Any] | None = None) -> None:
        self.address, self.gpus_per_run, self.cpus_per_run = address, gpus_per_run, cpus_per_run
        self.num_gpus, self.num_cpus, self.max_concurrent = num_gpus, num_cpus, max_concurrent
        # plain dicts all the way down: Ray checks types (runtime_env.env_vars must be a dict of str)
        self.init = OmegaConf.to_container(init, resolve=True) if isinstance(init, DictConfig) else dict(init or {})
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None
        self.slots = None  # the sweep's warm workers (_ray.Slots), made at the first launch

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def warm_up(self) -> None:
        """Join or start Ray and plan the slots now (the Optuna search calls it before its threads start)."""
        from deepart.core.errors import report_errors

        from . import _ray

        report_errors(_ray.slots, self)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from deepart.core.cli import interrupted
        from deepart.core.errors import report_errors

        from . import _ray

        try:
            return report_errors(_ray.launch, self, job_overrides, initial_job_idx)
        except KeyboardInterrupt:
            raise interrupted(sweep_dir=str(self.config.hydra.sweep.dir)) from None

    def interrupt(self) -> None:
        """Ctrl-C of a search whose slots call launch() from threads: the running jobs are interrupted (each ends
        as an interrupted run, KILLED in its loggers) and no other starts."""
        if self.slots is not None:
            self.slots.interrupt()

    def close(self) -> None:
        """Stop every worker (the end of an interrupted search)."""
        if self.slots is not None:
            self.slots.close()
