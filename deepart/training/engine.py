"""Device, precision and the two passes over data: one training epoch and one evaluation."""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from deepart.losses import MultiTaskLoss
from deepart.metrics import MetricAccumulator

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """Where and how tensors are computed."""

    device: torch.device
    bf16: bool
    channels_last: bool

    @classmethod
    def from_config(cls, trainer_cfg) -> "Runtime":
        from deepart import distributed

        device = torch.device(distributed.device_for(trainer_cfg.device, distributed.current()))
        if device.type == "cuda" and not torch.cuda.is_available():
            from deepart.errors import ConfigError
            raise ConfigError("trainer.device=cuda but no CUDA device is available; use trainer.device=cpu")
        precision = trainer_cfg.precision
        bf16 = device.type == "cuda" if precision == "auto" else precision == "bf16"
        cl = trainer_cfg.channels_last
        channels_last = device.type == "cuda" if cl == "auto" else bool(cl)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        return cls(device, bf16, channels_last)

    def autocast(self):
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def images(self, batch: dict) -> torch.Tensor:
        x = batch["image"].to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def labels(self, batch: dict) -> torch.Tensor:
        return batch["labels"].to(self.device, non_blocking=True)


class SkipCounter:
    """Counts unreadable images reported by the collate function, warning for the first few."""

    def __init__(self, max_warnings: int = 10):
        self.total = 0
        self.max_warnings = max_warnings

    def add(self, bad: list[tuple[str, str]]) -> None:
        for path, error in bad:
            self.total += 1
            if self.total <= self.max_warnings:
                log.warning("skipped unreadable image %s (%s)", path, error)
            elif self.total == self.max_warnings + 1:
                log.warning("more unreadable images are skipped; the count is reported per epoch")


def train_step(model, loss_fn: MultiTaskLoss, images: torch.Tensor, labels: torch.Tensor, optimizer, rt: Runtime,
               *, grad_clip: float | None, params: list[torch.Tensor]) -> tuple[dict, torch.Tensor]:
    """Forward, loss, backward, clipping and one optimizer step; no host sync. Returns (outputs, loss)."""
    with rt.autocast():
        out = model(images)
        loss, _, _ = loss_fn(out["logits"], labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()
    return out, loss


def train_one_epoch(model, loss_fn: MultiTaskLoss, loader, optimizer, scheduler, rt: Runtime, *,
                    grad_clip: float | None, tasks: dict, skips: SkipCounter, desc: str, progress: bool,
                    log_every: int, on_log=None, step: int = 0, reduce=None) -> tuple[dict[str, float], int]:
    """One pass over the training loader. Returns (train metrics, global step after the epoch).

    `reduce(tensors)` sums the epoch's counts over processes (data-parallel runs) before metrics are computed.
    """
    model.train()
    meter = MetricAccumulator(tasks, rt.device)
    loss_sum = torch.zeros((), device=rt.device, dtype=torch.float64)
    n_steps = 0
    params = [p for group in optimizer.param_groups for p in group["params"]]
    bar = tqdm(loader, total=len(loader), desc=desc, disable=not progress, leave=False, dynamic_ncols=True,
               mininterval=1.0)
    for batch in bar:
        skips.add(batch["bad"])
        if "image" not in batch:
            continue
        images, labels = rt.images(batch), rt.labels(batch)
        out, loss = train_step(model, loss_fn, images, labels, optimizer, rt, grad_clip=grad_clip, params=params)
        scheduler.step()
        meter.update(out["logits"], labels)
        loss_sum += loss.detach()
        n_steps += 1
        step += 1
        if log_every and step % log_every == 0:  # the only host syncs of the loop
            current = float(loss.detach())
            bar.set_postfix(loss=f"{current:.3f}")
            if on_log is not None:
                on_log({"train/loss": current, "lr": optimizer.param_groups[0]["lr"]}, step)
    bar.close()
    steps = torch.tensor(float(n_steps), device=rt.device, dtype=torch.float64)
    if reduce is not None:
        reduce([*meter.tensors(), loss_sum, steps])
    metrics = {k: v for k, v in meter.compute("train").items() if k.endswith("/top1")}
    metrics["train/loss"] = float(loss_sum / steps.clamp(min=1))
    return metrics, step


@torch.no_grad()
def evaluate(model, loss_fn: MultiTaskLoss, loader, rt: Runtime, tasks: dict, *, skips: SkipCounter | None = None,
             desc: str = "val", progress: bool = False, collect=None,
             reduce=None) -> tuple[dict[str, float], MetricAccumulator]:
    """Metrics of the model on a loader (eval mode, deterministic). `collect(batch, out)` sees every batch;
    `reduce(tensors)` sums the counts over processes when each evaluates a disjoint shard."""
    model.eval()
    meter = MetricAccumulator(tasks, rt.device)
    bar = tqdm(loader, total=len(loader), desc=desc, disable=not progress, leave=False, dynamic_ncols=True,
               mininterval=1.0)
    for batch in bar:
        if skips is not None:
            skips.add(batch["bad"])
        if "image" not in batch:
            continue
        images, labels = rt.images(batch), rt.labels(batch)
        with rt.autocast():
            out = model(images)
        sums = torch.stack([loss_fn.per_sample(out["logits"][t], labels[:, i])[0].sum()
                            for i, t in enumerate(loss_fn.task_names)])
        meter.update(out["logits"], labels, sums)
        if collect is not None:
            collect(batch, out)
    bar.close()
    if reduce is not None:
        reduce(meter.tensors())
    return meter.compute("val"), meter
