"""Data-parallel training across processes (torchrun, or one SLURM task per GPU).

Every process runs the same train.py. `setup()` joins the process group from the torchrun environment
(RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) or, inside a SLURM job with several tasks,
from SLURM's variables; rank 0 is the *main* process: it alone writes logs, checkpoints, metrics.json
and W&B. `launch_time` is rank 0's start time on every rank, so `${launch_time:...}` in Hydra's run
dir names one dir for the whole job rather than one per rank.
"""
from __future__ import annotations

import atexit
import logging
import os
from dataclasses import dataclass
from datetime import datetime

import torch
import torch.distributed as dist
from omegaconf import OmegaConf

log = logging.getLogger(__name__)

_LAUNCH_TIME = [datetime.now()]


def launch_time(pattern: str) -> str:
    """The job's start time (rank 0's under torchrun) formatted with strftime `pattern`."""
    return _LAUNCH_TIME[0].strftime(pattern)


OmegaConf.register_new_resolver("launch_time", launch_time, replace=True)


@dataclass(frozen=True)
class Dist:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _slurm_to_torchrun_env() -> None:
    """In a SLURM job started by submitit with one task per GPU (hydra/launcher=slurm), export the
    variables torchrun would set. (A plain sbatch script runs `srun torchrun ...` instead.)"""
    env = os.environ
    if "RANK" in env or env.get("SUBMITIT_EXECUTOR") != "slurm" or int(env.get("SLURM_NTASKS", "1")) <= 1:
        return
    try:
        from submitit.helpers import TorchDistributedEnvironment
    except ImportError:  # pragma: no cover - submitit is in the `cluster` extra
        return
    TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def current() -> Dist:
    """Rank, world size and local rank from the environment (1 process when not launched in parallel)."""
    _slurm_to_torchrun_env()
    env = os.environ
    return Dist(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))


def setup() -> Dist:
    """Join the process group when launched in parallel (idempotent); agree on the launch time."""
    d = current()
    if not d.enabled or dist.is_initialized():
        return d
    if torch.cuda.is_available():
        torch.cuda.set_device(d.local_rank)
    # gloo carries CPU tensors (and the CPU test), NCCL the CUDA ones
    dist.init_process_group(backend="cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo")
    atexit.register(teardown)
    when = [_LAUNCH_TIME[0]]
    dist.broadcast_object_list(when, src=0)
    _LAUNCH_TIME[0] = when[0]
    return d


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def worker_argv(argv: list[str]) -> list[str]:
    """Hydra overrides for ranks other than 0: they share rank 0's run dir but write no .hydra/ files."""
    d = setup()
    if d.is_main:
        return argv
    return [*argv, "hydra.output_subdir=null"]


def quiet_workers(d: Dist) -> None:
    """Only rank 0 logs; the other ranks report warnings and errors only."""
    if not d.is_main:
        logging.getLogger().setLevel(logging.WARNING)
        logging.getLogger("deepart").setLevel(logging.WARNING)


def device_for(name: str, d: Dist) -> str:
    """`auto` / `cuda` -> this rank's GPU (cuda:LOCAL_RANK) when launched in parallel."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and d.enabled:
        return f"cuda:{d.local_rank}"
    return name


def all_reduce_sum_(tensors: list[torch.Tensor]) -> None:
    """Sum tensors over all ranks in place (no-op in a single process)."""
    if not dist.is_initialized():
        return
    for t in tensors:
        dist.all_reduce(t)


def broadcast_buffers_(module: torch.nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm running stats) to every rank, so all evaluate the same model."""
    if not dist.is_initialized():
        return
    for b in module.buffers():
        dist.broadcast(b, src=0)


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def wrap(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel around `module` when launched in parallel and it has trainable parameters."""
    if not dist.is_initialized() or not any(p.requires_grad for p in module.parameters()):
        return module
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids)
