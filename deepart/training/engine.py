"""The training pass: one optimizer step, and one epoch over the training loader."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from deepart.core import faults
from deepart.core.runtime import Runtime
from deepart.data.dataset import SkipCounter
from deepart.data.mixing import BatchMixer
from deepart.objectives.losses import MultiTaskLoss, mean_task_loss
from deepart.objectives.metrics import MetricAccumulator


def train_step(model, loss_fn: MultiTaskLoss, images: torch.Tensor, labels: torch.Tensor, optimizer, rt: Runtime,
               *, grad_clip: float | None, params: list[torch.Tensor],
               mix: torch.Tensor | None = None) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """Forward, loss, backward, clipping and one optimizer step; no host sync. Returns (outputs, the objective
    that was minimised (task-weighted), the mean task loss (detached)). `mix`: the mixing matrix of mixed images
    (deepart.data.mixing), which turns the labels into per-task soft targets."""
    with rt.autocast():
        out = model(images)
        objective, task_losses, counts = loss_fn(out["logits"], labels, mix)
    optimizer.zero_grad(set_to_none=True)
    objective.backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()
    faults.point("step")
    return out, objective.detach(), mean_task_loss(task_losses, counts)


@dataclass
class Optimization:
    """What a training step updates and how: the model and loss as trained (compiled / DDP-wrapped as the phase
    runs them), the optimizer, its per-step schedule, the runtime, the gradient clipping norm (None: off) and the
    batch mixer (mixup / CutMix; None: off), which mixes training batches only."""

    model: torch.nn.Module
    loss_fn: MultiTaskLoss
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    rt: Runtime
    grad_clip: float | None = None
    mixer: BatchMixer | None = None


@dataclass
class Progress:
    """How an epoch shows itself: the progress bar's text (and whether there is a bar), and every `log_every`
    steps (0: never) the step's loss, objective and lr passed to `on_log(metrics, step)`."""

    desc: str
    bar: bool = True
    log_every: int = 0
    on_log: Callable[[dict, int], None] | None = None


def train_epoch(opt: Optimization, loader, tasks: dict, skips: SkipCounter, progress: Progress, step: int = 0, *,
                reduce: Callable[[list[torch.Tensor]], None] | None = None,
                after_step: Callable[[], None] | None = None) -> tuple[dict[str, float], int]:
    """One pass over the training loader. Returns (train metrics, global step after the epoch).

    `reduce(tensors)` sums the epoch's counts over processes (data-parallel runs) before metrics are computed;
    `after_step()` runs after every optimizer step (e.g. the moving average of the weights).
    """
    model, loss_fn, optimizer, scheduler, rt = opt.model, opt.loss_fn, opt.optimizer, opt.scheduler, opt.rt
    grad_clip, log_every, on_log = opt.grad_clip, progress.log_every, progress.on_log
    model.train()
    meter = MetricAccumulator(tasks, rt.device)
    sums = torch.zeros(2, device=rt.device, dtype=torch.float64)  # mean task loss, objective
    n_steps = n_images = 0
    started = time.perf_counter()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    bar = tqdm(loader, total=len(loader), desc=progress.desc, disable=not progress.bar, leave=False, dynamic_ncols=True,
               mininterval=1.0)
    for batch in skips.readable(bar):
        images, labels = rt.images(batch), rt.labels(batch)
        images, mix = opt.mixer(images, step) if opt.mixer is not None else (images, None)
        out, objective, loss = train_step(model, loss_fn, images, labels, optimizer, rt, grad_clip=grad_clip,
                                          params=params, mix=mix)
        scheduler.step()
        if after_step is not None:
            after_step()
        meter.update(out["logits"], labels)
        sums += torch.stack([loss, objective])
        n_steps += 1
        n_images += len(images)
        step += 1
        if log_every and step % log_every == 0:  # the only host syncs of the loop
            current, weighted = float(loss), float(objective)
            bar.set_postfix(loss=f"{current:.3f}")
            if on_log is not None:
                on_log({"train/loss": current, "train/objective": weighted, "lr": optimizer.param_groups[0]["lr"]},
                       step)
    bar.close()
    steps = torch.tensor(float(n_steps), device=rt.device, dtype=torch.float64)
    images_done = torch.tensor(float(n_images), device=rt.device, dtype=torch.float64)
    if reduce is not None:
        reduce([*meter.tensors(), sums, steps, images_done])
    metrics = {k: v for k, v in meter.compute("train").items() if k.endswith("/top1")}
    metrics["train/loss"], metrics["train/objective"] = (sums / steps.clamp(min=1)).tolist()
    # images per second of the whole pass (loading included; all processes of a data-parallel run)
    metrics["train/images_per_s"] = float(images_done) / max(time.perf_counter() - started, 1e-9)
    return metrics, step
