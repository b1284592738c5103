"""The training pass: one optimizer step, and one epoch over the training loader."""
from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from deepart.data.dataset import SkipCounter
from deepart.losses import MultiTaskLoss
from deepart.metrics import MetricAccumulator
from deepart.runtime import Runtime


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


def train_epoch(model, loss_fn: MultiTaskLoss, loader, optimizer, scheduler, rt: Runtime, *,
                grad_clip: float | None, tasks: dict, skips: SkipCounter, desc: str, progress: bool,
                log_every: int, on_log: Callable[[dict, int], None] | None = None, step: int = 0,
                reduce: Callable[[list[torch.Tensor]], None] | None = None) -> tuple[dict[str, float], int]:
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
    for batch in skips.readable(bar):
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
