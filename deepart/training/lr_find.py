"""LR range test (`train.py lr_find=true`): exponentially increasing lr over a few steps of the chosen
phase (its freezing, batch size and optimizer), smoothed loss vs lr, a suggested lr.

The model, loss weights and RNG states are restored afterwards, so training with `lr_finder.apply=true`
starts from exactly the state a run without the test would have. With `phase=all` the test runs for the
first phase of the chain and `apply` sets that phase's lr only: later phases start from trained weights,
so their range test needs those weights (`python train.py phase=2 init_from=<phase-1 best.pt> lr_find=true`).
"""
from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from deepart.core.checkpoint import capture_rng, restore_rng
from deepart.core.rundir import LR_FIND
from deepart.data.dataset import SkipCounter
from deepart.data.loaders import train_loader
from deepart.training.engine import train_step
from deepart.training.freezing import apply_freezing
from deepart.training.optim import build_optimizer
from deepart.vis.plots import pyplot, save_figure

log = logging.getLogger("deepart")


def suggest_lr(lrs: np.ndarray, losses: np.ndarray) -> tuple[float, str]:
    """Steepest descent of the smoothed loss (per log-lr) before its minimum; else the minimum's lr / 10."""
    best = int(np.argmin(losses))
    if best >= 2:
        slope = np.gradient(losses[: best + 1], np.log(lrs[: best + 1]))
        return float(lrs[int(np.argmin(slope))]), "steepest descent"
    return float(lrs[best] / 10), "loss minimum / 10"


def range_test(trainer, phase: DictConfig, cfg: DictConfig) -> dict:
    """Run the test on `trainer`'s model; returns {lrs, losses, suggestion, rule}. State is restored."""
    lf = cfg.lr_finder  # its values were checked at start-up (core.config.validate)
    model, loss_fn, rt = trainer.model, trainer.loss_fn, trainer.rt
    saved = (copy.deepcopy(model.state_dict()), copy.deepcopy(loss_fn.state_dict()), capture_rng())
    apply_freezing(model, list(phase.freeze), phase.freeze_stages)
    loader = train_loader(trainer.table, cfg.data, cfg.sampler, phase.batch_size, cfg.seed, str(rt.device))
    optimizer = build_optimizer(cfg.optimizer, [model, loss_fn], lf.min_lr, rt.device)
    schedule = lf.min_lr * (lf.max_lr / lf.min_lr) ** (np.arange(lf.num_steps) / (lf.num_steps - 1))
    lrs, losses, avg, best = [], [], 0.0, float("inf")
    model.train()
    batches = _cycle(loader, SkipCounter())
    for i, lr in enumerate(schedule):
        for group in optimizer.param_groups:
            group["lr"] = float(lr)
        batch = next(batches)
        _, _, loss = train_step(model, loss_fn, rt.images(batch), rt.labels(batch), optimizer, rt, grad_clip=None,
                                params=[])
        avg = lf.smoothing * avg + (1 - lf.smoothing) * float(loss.detach())
        smoothed = avg / (1 - lf.smoothing ** (i + 1))           # bias-corrected moving average
        lrs.append(float(lr))
        losses.append(smoothed)
        best = min(best, smoothed)
        if not np.isfinite(smoothed) or smoothed > 4 * best:   # diverged: the rest says nothing
            break
    model.load_state_dict(saved[0])
    loss_fn.load_state_dict(saved[1])
    restore_rng(saved[2])
    suggestion, rule = suggest_lr(np.array(lrs), np.array(losses))
    return {"phase": str(phase.name), "lrs": lrs, "losses": losses, "suggestion": suggestion, "rule": rule}


def _cycle(loader, skips: SkipCounter):
    """The loader's readable batches, epoch after epoch (each epoch its own draw)."""
    epoch = 0
    while True:
        loader.sampler.set_epoch(epoch)
        yield from skips.readable(loader)
        epoch += 1


def plot_range_test(result: dict, path: Path) -> Path:
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(result["lrs"], result["losses"])
    ax.axvline(result["suggestion"], color="red", linestyle="--",
               label=f"suggested {result['suggestion']:.2e} ({result['rule']})")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss (smoothed)")
    ax.set_title(f"LR range test, phase {result['phase']}")
    ax.legend()
    return save_figure(fig, path)


def run_lr_finder(trainer) -> dict:
    """lr_find=true: test the first phase of the plan, save <run>/lr_find.png + lr_find.json, print the
    suggestion. The trainer's model, loss weights and RNG states are as before."""
    phase = trainer.plan.phases[0]
    result = range_test(trainer, phase, trainer.cfg)
    trainer.run_dir.mkdir(parents=True, exist_ok=True)
    (trainer.run_dir / f"{LR_FIND}.json").write_text(json.dumps(result, indent=2))
    plot_range_test(result, trainer.run_dir / f"{LR_FIND}.png")
    print(f"LR range test (phase {phase.name}): suggested lr {result['suggestion']:.2e} ({result['rule']}); "
          f"plot: {trainer.run_dir / 'lr_find.png'}", flush=True)
    return result


def apply_lr(cfg: DictConfig, lr: float) -> DictConfig:
    """A copy of `cfg` whose first phase trains with `lr` (lr_finder.apply=true) and that does not test again
    when resumed. With phase=all, a chain-wide phase.lr becomes each later phase's own lr."""
    cfg = copy.deepcopy(cfg)
    if cfg.phase.name != "all":
        cfg.phase.lr = lr
    else:
        chain = cfg.phase.chain
        if cfg.phase.lr is not None:
            for key in chain:
                chain[key].lr = cfg.phase.lr
            cfg.phase.lr = None
        chain[next(iter(chain))].lr = lr
    cfg.lr_find = False
    return cfg
