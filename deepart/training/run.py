"""`train(cfg)`: one training run, from the composed config to checkpoints and metrics.json.

A run is one or more phases (`phase=all` chains 1 -> 2 -> 3, each starting from the previous phase's
best checkpoint). Each phase: freeze, build loaders / optimizer / schedule, then per epoch train,
evaluate, log, checkpoint (last.pt every epoch, best.pt by val/mean_top1), optionally stop early.
"""
from __future__ import annotations

import json
import logging
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from deepart import distributed
from deepart.config import build, to_plain, validate
from deepart.data.loaders import eval_loader, load_table, train_loader
from deepart.errors import CheckpointError
from deepart.metrics import format_table
from deepart.tracking import NullLogger
from deepart.models.deepartnet import build_model
from deepart.training.checkpoint import capture_rng, load_checkpoint, restore_rng, save_checkpoint
from deepart.training.engine import Runtime, SkipCounter, evaluate, train_one_epoch
from deepart.training.freezing import apply_freezing
from deepart.training.optim import build_optimizer, build_scheduler
from deepart.viz import attention_overlay

log = logging.getLogger("deepart")

OBJECTIVE = "val/mean_top1"


@dataclass
class RunInfo:
    """How the run is named where runs are compared (W&B name and group)."""

    name: str | None = None
    group: str | None = None

    @classmethod
    def from_hydra(cls) -> "RunInfo":
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            return cls()
        hc = HydraConfig.get()
        name = hc.job.override_dirname or None
        group = None
        if hc.mode is not None and hc.mode.name == "MULTIRUN":
            group = Path(hc.sweep.dir).as_posix().replace("/", "_")
        return cls(name=name, group=group)


@dataclass
class PhaseState:
    """Progress of one phase; stored in its checkpoints."""

    epoch: int = 0                      # completed epochs
    best_metric: float = -1.0
    best_epoch: int = 0
    bad_epochs: int = 0                 # epochs since the last improvement (early stopping)
    completed: bool = False
    final: dict[str, float] = field(default_factory=dict)
    best: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def phase_plan(cfg: DictConfig) -> list[DictConfig]:
    """The phases to run, in order; `phase=all` values of epochs/lr/batch_size apply to every phase."""
    if cfg.phase.name != "all":
        return [cfg.phase]
    plan = []
    for sub in cfg.phase.chain.values():
        sub = OmegaConf.create(OmegaConf.to_container(sub, resolve=True))
        for key in ("epochs", "lr", "batch_size"):
            if cfg.phase.get(key) is not None:
                sub[key] = cfg.phase[key]
        plan.append(sub)
    return plan


def _checkpoint_dir(run_dir: Path, phase: DictConfig, chained: bool) -> Path:
    return run_dir / "checkpoints" / (f"phase-{phase.name}" if chained else "")


def _resume_config(cfg: DictConfig) -> tuple[DictConfig, Path]:
    """Config and run dir of the run named by `resume=` (a run dir or one of its checkpoints)."""
    target = Path(cfg.resume)
    if target.is_file():
        run_dir = target.parent.parent
        if target.parent.name.startswith("phase-"):
            run_dir = run_dir.parent
    else:
        run_dir = target
    candidates = sorted((run_dir / "checkpoints").glob("**/last.pt"), key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise CheckpointError(f"resume={cfg.resume}: no checkpoints/last.pt under {run_dir}; pass the run "
                              f"dir of a training run or its checkpoints/last.pt")
    saved = OmegaConf.create(load_checkpoint(candidates[-1])["config"])
    saved.resume = str(run_dir)
    log.info("resuming %s with its saved config", run_dir)
    return saved, run_dir


def _load_weights(model, loss_fn, path: str | Path) -> None:
    """Initialise from another checkpoint: every tensor whose name and shape match."""
    ckpt = load_checkpoint(path)
    own = model.state_dict()
    usable = {k: v for k, v in ckpt["model"].items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(usable, strict=False)
    if ckpt.get("loss") and ckpt.get("tasks") == model.tasks:
        loss_fn.load_state_dict(ckpt["loss"])
    skipped = sorted(set(own) - set(usable))
    log.info("initialised from %s (%d tensors%s)", path, len(usable),
             f"; kept fresh: {', '.join(skipped[:4])}{'...' if len(skipped) > 4 else ''}" if skipped else "")


class Trainer:
    """Holds what lives across phases: config, data table, model, loss, logger, run dir."""

    def __init__(self, cfg: DictConfig, run_dir: Path, info: RunInfo):
        self.cfg, self.run_dir, self.info = cfg, run_dir, info
        self.dist = distributed.setup()  # rank 0 alone logs, checkpoints and talks to W&B
        distributed.quiet_workers(self.dist)
        self.rt = Runtime.from_config(cfg.trainer)
        self.table = load_table(cfg.data)
        self.tasks = self.table.tasks
        self.model = build_model(cfg, self.tasks).to(self.rt.device)
        if self.rt.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.net = torch.compile(self.model) if cfg.trainer.compile else self.model
        self.loss_fn = build(cfg.loss, tasks=self.tasks).to(self.rt.device)
        self.logger = build(cfg.logger) if self.dist.is_main else NullLogger()
        self.skips = SkipCounter()
        self.step = 0
        self.plain_cfg = to_plain(cfg)
        self.started = time.time()
        self.prior_runtime = 0.0  # seconds spent by earlier processes of a resumed run

    def runtime(self) -> float:
        return self.prior_runtime + time.time() - self.started

    # ------------------------------------------------------------------ phases
    def run(self) -> dict[str, Any]:
        plan = phase_plan(self.cfg)
        chained = len(plan) > 1
        wandb_id = self._saved_wandb_id()
        self.logger.start(config=self.plain_cfg, run_dir=str(self.run_dir), name=self.info.name,
                          group=self.info.group, run_id=wandb_id)
        init_from = self.cfg.init_from
        phases: dict[str, PhaseState] = {}
        for index, phase in enumerate(plan):
            ckpt_dir = _checkpoint_dir(self.run_dir, phase, chained)
            phases[str(phase.name)] = self.run_phase(phase, index, ckpt_dir, init_from)
            init_from = ckpt_dir / "best.pt"
        if chained and self.dist.is_main:
            for name in ("best.pt", "last.pt"):
                shutil.copy2(ckpt_dir / name, self.run_dir / "checkpoints" / name)
        return self._finish(phases)

    def _saved_wandb_id(self) -> str | None:
        if not self.cfg.resume:
            return None
        for path in sorted((self.run_dir / "checkpoints").glob("**/last.pt")):
            run_id = load_checkpoint(path).get("wandb_run_id")
            if run_id:
                return run_id
        return None

    def run_phase(self, phase: DictConfig, index: int, ckpt_dir: Path, init_from) -> PhaseState:
        cfg, rt = self.cfg, self.rt
        last = ckpt_dir / "last.pt"
        resume = load_checkpoint(last) if cfg.resume and last.is_file() else None
        if resume is not None and resume.get("completed"):
            log.info("phase %s already completed in %s", phase.name, ckpt_dir)
            self.step = resume["global_step"]
            self.prior_runtime = resume.get("runtime_s", 0.0)
            return PhaseState(**resume["state"])

        apply_freezing(self.model, list(phase.freeze), phase.freeze_stages)
        d = self.dist
        train_dl = train_loader(self.table, cfg.data, cfg.sampler, phase.batch_size, cfg.seed, str(rt.device),
                                rank=d.rank, world_size=d.world_size)
        val_dl = eval_loader(self.table, cfg.data, cfg.trainer.eval_batch_size or 2 * phase.batch_size,
                             str(rt.device), rank=d.rank, world_size=d.world_size)
        optimizer = build_optimizer(cfg.optimizer, [self.model, self.loss_fn], phase.lr, rt.device)
        scheduler = build_scheduler(optimizer, cfg.scheduler, len(train_dl), phase.epochs)
        state = PhaseState()
        if resume is not None:
            self.model.load_state_dict(resume["model"])
            self.loss_fn.load_state_dict(resume["loss"])
            optimizer.load_state_dict(resume["optimizer"])
            scheduler.load_state_dict(resume["scheduler"])
            state = PhaseState(**resume["state"])
            self.step = resume["global_step"]
            self.skips.total = resume.get("skipped_images", 0)
            self.prior_runtime = resume.get("runtime_s", 0.0)
            restore_rng(resume["rng"])
            log.info("phase %s: resumed after epoch %d from %s", phase.name, state.epoch, last)
        elif init_from:
            _load_weights(self.model, self.loss_fn, init_from)

        net, loss_fn = self._parallel()
        reduce = distributed.all_reduce_sum_ if d.enabled else None
        log.info("phase %s: %d epochs, lr %g, batch %d, %d steps/epoch on %s%s%s", phase.name, phase.epochs,
                 phase.lr, phase.batch_size, len(train_dl), rt.device, " (bf16)" if rt.bf16 else "",
                 f" x {d.world_size} processes" if d.enabled else "")
        patience = cfg.trainer.early_stopping.patience
        for epoch in range(state.epoch, phase.epochs):
            started, skipped_before = time.time(), self.skips.total
            train_dl.sampler.set_epoch(epoch)
            train_m, self.step = train_one_epoch(
                net, loss_fn, train_dl, optimizer, scheduler, rt, grad_clip=cfg.trainer.grad_clip,
                tasks=self.tasks, skips=self.skips, desc=f"phase {phase.name} epoch {epoch + 1}/{phase.epochs}",
                progress=cfg.trainer.progress_bar, log_every=cfg.trainer.log_every_n_steps,
                on_log=self.logger.log_metrics, step=self.step, reduce=reduce)
            distributed.broadcast_buffers_(self.model)  # every rank evaluates rank 0's model
            val_m, _ = evaluate(self.net, self.loss_fn, val_dl, rt, self.tasks, skips=self.skips, reduce=reduce)
            state.epoch = epoch + 1
            state.final = val_m
            metric, first = val_m[OBJECTIVE], state.best_epoch == 0
            significant = first or metric > state.best_metric + cfg.trainer.early_stopping.min_delta
            improved = first or metric > state.best_metric
            state.bad_epochs = 0 if significant else state.bad_epochs + 1
            if improved:
                state.best_metric, state.best_epoch, state.best = metric, state.epoch, val_m
            stop = patience is not None and state.bad_epochs >= patience
            state.completed = state.epoch == phase.epochs or stop
            skipped = self.skips.total - skipped_before
            record = {**train_m, **val_m, "epoch": state.epoch, "phase": index + 1, "lr": optimizer.param_groups[0]["lr"],
                      "skipped_images": skipped, "epoch_time_s": time.time() - started,
                      **{f"loss_weight/{t}": w for t, w in self.loss_fn.task_weights().items()}}
            state.history.append({k: v for k, v in record.items() if not k.endswith("/count")})
            self.logger.log_metrics({k: v for k, v in record.items() if not k.endswith("/count")}, self.step)
            self._log_attention(val_dl, epoch)
            log.info(self._epoch_line(phase, state, record))
            self._save(ckpt_dir, phase, index, state, optimizer, scheduler, best=improved)
            if stop:
                log.info("early stopping: no %s improvement for %d epochs", OBJECTIVE, patience)
                break
        if not state.completed:  # zero epochs requested
            state.completed = True
            self._save(ckpt_dir, phase, index, state, optimizer, scheduler, best=not (ckpt_dir / "best.pt").exists())
        return state

    def _parallel(self):
        """The model and loss as trained this phase: DistributedDataParallel-wrapped when launched in
        parallel (wrapped per phase, since freezing changes which parameters train)."""
        if not self.dist.enabled:
            return self.net, self.loss_fn
        net = distributed.wrap(self.model, self.rt.device)
        return (torch.compile(net) if self.cfg.trainer.compile else net), distributed.wrap(self.loss_fn, self.rt.device)

    def _save(self, ckpt_dir: Path, phase, index: int, state: PhaseState, optimizer, scheduler, best: bool) -> None:
        if not self.dist.is_main:
            distributed.barrier()  # wait until rank 0 has written the checkpoint
            return
        payload = {
            "model": self.model.state_dict(), "loss": self.loss_fn.state_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "scaler": None,
            "epoch": state.epoch, "global_step": self.step, "state": asdict(state), "completed": state.completed,
            "metrics": state.final, "phase": {"name": str(phase.name), "index": index},
            "rng": capture_rng(), "config": self.plain_cfg, "tasks": self.tasks,
            "wandb_run_id": self.logger.run_id, "skipped_images": self.skips.total,
            "runtime_s": self.runtime(),
        }
        save_checkpoint(ckpt_dir / "last.pt", payload)
        if best:
            save_checkpoint(ckpt_dir / "best.pt", payload)
        distributed.barrier()

    def _epoch_line(self, phase, state: PhaseState, r: dict) -> str:
        tasks = "  ".join(f"{t} {100 * r[f'val/{t}/top1']:.1f}/{100 * r[f'val/{t}/top5']:.1f}" for t in self.tasks)
        return (f"[phase {phase.name}] epoch {state.epoch}/{phase.epochs}  train loss {r['train/loss']:.3f}  "
                f"val loss {r['val/loss']:.3f}  {tasks}  mean top1 {100 * r[OBJECTIVE]:.1f} "
                f"(best {100 * state.best_metric:.1f} @{state.best_epoch})  lr {r['lr']:.2e}  "
                f"{r['epoch_time_s']:.0f}s" + (f"  skipped {r['skipped_images']}" if r["skipped_images"] else ""))

    def _log_attention(self, val_dl, epoch: int) -> None:
        every, n = self.logger.attention_every_n_epochs, self.logger.num_attention_images
        if not every or not n or (epoch + 1) % every or self.model.attention is None:
            return
        dataset = val_dl.dataset
        picks = np.linspace(0, len(dataset) - 1, num=min(n, len(dataset))).astype(int)
        items = [it for it in (dataset[int(i)] for i in picks) if "image" in it]
        if not items:
            return
        images = torch.stack([it["image"] for it in items])
        self.model.eval()
        with torch.no_grad(), self.rt.autocast():
            out = self.model(images.to(self.rt.device))
        if out["attention"] is None:
            return
        overlays, captions = [], []
        for j, it in enumerate(items):
            overlays.append(attention_overlay(images[j], out["attention"][j].float()))
            parts = []
            for t, (task, names) in enumerate(self.tasks.items()):
                pred = names[int(out["logits"][task][j].argmax())]
                true = names[int(it["labels"][t])] if it["labels"][t] >= 0 else "-"
                parts.append(f"{task}: {pred} (true {true})")
            captions.append("; ".join(parts))
        self.logger.log_images("val/attention", overlays, captions, self.step)

    # ------------------------------------------------------------------ end of run
    def _finish(self, phases: dict[str, PhaseState]) -> dict[str, Any]:
        last = list(phases.values())[-1]
        summary = {
            "final": last.final, "best": last.best, "best_epoch": last.best_epoch, "epochs": last.epoch,
            "skipped_images": self.skips.total, "runtime_s": self.runtime(),
            "phases": {name: {"final": s.final, "best": s.best, "best_epoch": s.best_epoch, "epochs": s.epoch}
                       for name, s in phases.items()},
        }
        if last.final:
            log.info("final validation (phase %s, epoch %d; best %s %.1f at epoch %d):\n%s",
                     list(phases)[-1], last.epoch, OBJECTIVE, 100 * last.best_metric, last.best_epoch,
                     format_table(last.final, self.tasks))
            self._log_confusions()
        if self.skips.total:
            log.warning("%d unreadable images were skipped in this run", self.skips.total)
        self.logger.finish({f"best/{k}": v for k, v in last.best.items()})
        return summary

    def _log_confusions(self) -> None:
        """Confusion matrices of the best checkpoint, to the tracker."""
        if not self.logger.enabled:
            return
        self.model.load_state_dict(load_checkpoint(self.run_dir / "checkpoints" / "best.pt")["model"])
        val_dl = eval_loader(self.table, self.cfg.data, self.cfg.trainer.eval_batch_size or 64, str(self.rt.device))
        _, meter = evaluate(self.model, self.loss_fn, val_dl, self.rt, self.tasks)
        for task, names in self.tasks.items():
            self.logger.log_confusion(task, meter.confusion_matrix(task), names, self.step)


def train(cfg: DictConfig, run_dir: str | Path | None = None, info: RunInfo | None = None) -> dict[str, Any]:
    """Run a training job described by the composed config; returns the metrics written to metrics.json.

    `run_dir` defaults to Hydra's output dir; with `resume=...` the resumed run's dir is used instead.
    """
    if cfg.resume:
        cfg, run_dir = _resume_config(cfg)
    elif run_dir is None:
        from hydra.core.hydra_config import HydraConfig

        run_dir = HydraConfig.get().runtime.output_dir
    run_dir = Path(run_dir)
    validate(cfg)
    seed_everything(cfg.seed)
    trainer = Trainer(cfg, run_dir, info or RunInfo.from_hydra())
    if cfg.get("lr_find"):
        from deepart.training.lr_find import run_lr_finder

        result = run_lr_finder(trainer)
        if not cfg.lr_finder.apply:
            return {"lr_find": result, "best": {}, "final": {}}
    summary = trainer.run()
    if trainer.dist.is_main:
        (run_dir / "metrics.json").write_text(json.dumps(summary, indent=2))
    return summary

