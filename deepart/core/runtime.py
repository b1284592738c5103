"""Where and how tensors are computed: the device, bf16 autocast and channels_last, from `trainer.*`."""
from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from deepart.core import distributed
from deepart.core.errors import ConfigError, require, require_choice

PRECISIONS = ("auto", "bf16", "fp32")
_STARTING_THREADS = torch.get_num_threads()


def default_threads() -> int:
    """The thread count of threads=null: OMP_NUM_THREADS when set, else PyTorch's own as this process started (one
    per core), whatever an earlier run of the process (the basic launcher's last job, a warm worker's last run)
    set."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) >= 1 else _STARTING_THREADS


def resolve_device(name: str, key: str = "trainer.device") -> torch.device:
    """`auto` -> this process's GPU when there is one, else the CPU; `cuda` without a GPU is an error."""
    require(isinstance(name, str) and re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", name) is not None, key, name,
            "auto | cpu | cuda | cuda:N")
    device = torch.device(distributed.device_for(name, distributed.current()))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{key}={name!r}: no CUDA device is available here; use {key}=cpu")
    return device


def check_threads(key: str, value: Any) -> None:
    """A thread count option: null (the library's default, one per core) or an integer >= 1."""
    require(value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 1), key, value,
            "an integer >= 1 or null (the default: one per core)")


@dataclass
class Runtime:
    """The device and the numeric settings every pass over data uses."""

    device: torch.device
    bf16: bool
    channels_last: bool
    threads: int | None = None  # PyTorch's CPU threads (intra-op); None = its default, one per core

    @classmethod
    def resolve(cls, trainer_cfg: Mapping[str, Any]) -> Runtime:
        """From `device`, `precision`, `channels_last` (keys of `trainer`; each defaults to auto) and `threads`
        (default null), checked. Auto means bf16 autocast and channels_last on CUDA, fp32 on the CPU."""
        precision = trainer_cfg.get("precision", "auto")
        channels_last = trainer_cfg.get("channels_last", "auto")
        threads = trainer_cfg.get("threads")
        require_choice("trainer.precision", precision, PRECISIONS)
        require(channels_last in ("auto", True, False), "trainer.channels_last", channels_last, "auto | true | false")
        check_threads("trainer.threads", threads)
        device = resolve_device(trainer_cfg.get("device", "auto"))
        cuda = device.type == "cuda"
        return cls(device, cuda if precision == "auto" else precision == "bf16",
                   cuda if channels_last == "auto" else bool(channels_last), threads)

    @classmethod
    def from_config(cls, trainer_cfg: Mapping[str, Any]) -> Runtime:
        """`resolve`, then PyTorch's thread count (`threads`, or the process's default for null, whatever an
        earlier run of the process set), and on CUDA the fast math settings (cuDNN autotuning, TF32 matmuls)."""
        rt = cls.resolve(trainer_cfg)
        wanted = rt.threads if rt.threads is not None else default_threads()
        if torch.get_num_threads() != wanted:
            torch.set_num_threads(wanted)
        if rt.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        return rt

    def autocast(self):
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """Move a model to the device (in channels_last memory format when that is on)."""
        model = model.to(self.device)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def images(self, batch: dict) -> torch.Tensor:
        x = batch["image"].to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def labels(self, batch: dict) -> torch.Tensor:
        return batch["labels"].to(self.device, non_blocking=True)
