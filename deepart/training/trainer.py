"""`train(cfg)`: one training run, from the composed config to checkpoints and metrics.json.

A run is one or more phases (`phase=all` chains 1 -> 2 -> 3, each starting from the previous phase's
best checkpoint). Each phase: freeze, build loaders / optimizer / schedule, then per epoch train,
validate, report, checkpoint (last.pt every epoch, best.pt by val/mean_top1), optionally stop early.
"""
from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from deepart.core import distributed, faults, rundir
from deepart.core.checkpoint import Checkpoint, atomic_copy, capture_rng, remove_partial_writes, restore_rng
from deepart.core.config import OBJECTIVE, build, eval_batch_size, sweep_group, to_plain
from deepart.core.errors import CheckpointError
from deepart.core.rundir import CHECKPOINTS, newest_last, phase_dir, run_dir_of
from deepart.core.runtime import Runtime
from deepart.data.dataset import SkipCounter
from deepart.data.loaders import eval_loader, load_table, train_loader
from deepart.data.mixing import mixer_from_config
from deepart.models import build_model
from deepart.objectives.metrics import MetricAccumulator
from deepart.tracking import NullLogger
from deepart.training import pruning
from deepart.training.checks import RunPlan, check_config
from deepart.training.ema import EMA
from deepart.training.engine import Optimization, Progress, train_epoch
from deepart.training.epoch_log import EpochLog
from deepart.training.evaluation import PredictionRecorder, evaluate_loader
from deepart.training.feature_cache import FeaturePath, cached_val, open_feature_path
from deepart.training.freezing import apply_freezing, log_stages, log_texture
from deepart.training.lr_find import apply_lr, run_lr_finder
from deepart.training.optim import build_optimizer, build_scheduler
from deepart.training.phases import PhaseState

log = logging.getLogger("deepart")


@dataclass
class RunInfo:
    """How the run is named where runs are compared (W&B name and group)."""

    name: str | None = None
    group: str | None = None

    @classmethod
    def from_hydra(cls) -> RunInfo:
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            return cls()
        hc = HydraConfig.get()
        name = hc.job.override_dirname or None
        group = None
        if hc.mode is not None and hc.mode.name == "MULTIRUN":
            group = sweep_group(hc.sweep.dir)
        return cls(name=name, group=group)


@dataclass
class PhaseRun:
    """What one phase trains with: its data, its optimizer and schedule, the model and loss as trained and the
    model as validated. The weights themselves are the Trainer's `model`; these are views of it."""

    train_dl: DataLoader
    val_dl: DataLoader
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    net: torch.nn.Module        # the model as trained: torch.compile'd and / or DistributedDataParallel-wrapped
    loss_fn: torch.nn.Module
    evaluated: torch.nn.Module  # the model as validated, selected and exported: the EMA weights, else the model
    ema: EMA | None = None      # trainer.ema_decay: the moving average of the weights
    features: FeaturePath | None = None  # trainer.feature_cache: training on cached backbone features


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def phase_seed(seed: int, index: int) -> int:
    """The seed every RNG is set to when phase `index` starts (a resumed phase restores its saved states)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def _resume_config(cfg: DictConfig) -> tuple[DictConfig, Path]:
    """Config and run dir of the run named by `resume=` (a run dir or one of its checkpoints): the config of
    its newest checkpoint, or, when it was stopped before writing any, the config Hydra saved at its start."""
    run_dir = run_dir_of(cfg.resume)
    last = newest_last(run_dir)
    if last is not None:
        saved = OmegaConf.create(Checkpoint.load(last).config)
    elif rundir.hydra_config(run_dir).is_file():
        saved = OmegaConf.load(rundir.hydra_config(run_dir))
        log.info("%s has no checkpoint yet: its run starts again from the beginning", run_dir)
    else:
        raise CheckpointError(f"resume={cfg.resume}: no {CHECKPOINTS}/last.pt (and no .hydra/config.yaml) under "
                              f"{run_dir}; pass the run dir of a training run or its {CHECKPOINTS}/last.pt")
    for stale in remove_partial_writes(run_dir):
        log.info("removed %s, left by a write that was interrupted", stale)
    saved.resume = str(run_dir)
    log.info("resuming %s with its saved config", run_dir)
    return saved, run_dir


class Trainer:
    """Holds what lives across phases: config and its plan, data table, model, loss, epoch log, run dir."""

    def __init__(self, cfg: DictConfig, plan: RunPlan, run_dir: Path, info: RunInfo):
        self.cfg, self.plan, self.run_dir, self.info = cfg, plan, run_dir, info
        self.dist = distributed.setup()  # rank 0 alone logs, checkpoints and talks to W&B
        distributed.quiet_workers(self.dist)
        self.rt = Runtime.from_config(cfg.trainer)
        self.table = load_table(cfg.data)
        self.tasks = self.table.tasks
        self.model = self.rt.prepare(build_model(cfg, self.tasks))
        log_stages(self.model.backbone, cfg.data.image_size)
        log_texture(self.model)
        self.loss_fn = build(cfg.loss, tasks=self.tasks).to(self.rt.device)
        self.logger = build(cfg.logger) if self.dist.is_main else NullLogger()
        self.epoch_log = EpochLog(self.logger, self.tasks, self.rt)
        self.skips = SkipCounter()
        self.trained_on_cache = False  # a phase of this process trained on cached backbone features
        self.step = 0
        self.plain_cfg = to_plain(cfg)
        self.started = time.time()
        self.prior_runtime = 0.0  # seconds spent by earlier processes of a resumed run

    def use_config(self, cfg: DictConfig) -> None:
        """Train with `cfg` (e.g. with the LR finder's lr applied); it is what the checkpoints record."""
        self.cfg, self.plan, self.plain_cfg = cfg, check_config(cfg), to_plain(cfg)

    def elapsed_s(self) -> float:
        return self.prior_runtime + time.time() - self.started

    # ------------------------------------------------------------------ phases
    def run(self) -> dict[str, Any]:
        plan = self.plan.phases
        chained = len(plan) > 1
        self.logger.start(config=self.plain_cfg, run_dir=str(self.run_dir), name=self.info.name,
                          group=self.info.group, **self._resumed())
        init_from = self.cfg.init_from
        phases: dict[str, PhaseState] = {}
        for index, phase in enumerate(plan):
            ckpt_dir = phase_dir(self.run_dir, phase.name, chained)
            phases[str(phase.name)] = self.run_phase(phase, index, ckpt_dir, init_from)
            init_from = ckpt_dir / rundir.BEST
            faults.point("phase_end")
        best_phase = self._best_phase(phases)
        if chained and self.dist.is_main:
            run_ckpts = self.run_dir / CHECKPOINTS
            atomic_copy(phase_dir(self.run_dir, best_phase, chained) / rundir.BEST, run_ckpts / rundir.BEST)
            atomic_copy(ckpt_dir / rundir.LAST, run_ckpts / rundir.LAST)
        return self._finish(phases, best_phase)

    def _best_phase(self, phases: dict[str, PhaseState]) -> str:
        """The phase whose best checkpoint is the run's best.pt: the last one, or with phase.best_of=any_phase
        the one with the best val metric (the earliest of equals)."""
        if len(phases) > 1 and self.cfg.phase.best_of == "any_phase":
            return max(phases, key=lambda name: (phases[name].best_metric, -list(phases).index(name)))
        return list(phases)[-1]

    def _resumed(self) -> dict[str, Any]:
        """What the logger continues from in a resumed run: the W&B run id and the global step of the newest
        checkpoint (0 when none was written); nothing for a new run."""
        if not self.cfg.resume:
            return {}
        last = newest_last(self.run_dir)
        if last is None:
            return {"resume_step": 0}
        ckpt = Checkpoint.load(last)
        return {"run_id": ckpt.wandb_run_id, "resume_step": ckpt.global_step}

    def run_phase(self, phase: DictConfig, index: int, ckpt_dir: Path, init_from) -> PhaseState:
        """Train one phase to its end (or its early stop); returns its progress."""
        last = ckpt_dir / rundir.LAST
        resume = Checkpoint.load(last) if self.cfg.resume and last.is_file() else None
        if resume is not None and resume.progress["completed"]:
            log.info("phase %s already completed in %s", phase.name, ckpt_dir)
            self._restore_counters(resume)
            return PhaseState(**resume.progress)
        p = self._start_phase(phase, resume, init_from)
        state = PhaseState(**resume.progress) if resume is not None else PhaseState()
        if resume is not None:
            restore_rng(resume.rng)
            log.info("phase %s: resumed after epoch %d from %s", phase.name, state.epoch, last)
        else:
            seed_everything(phase_seed(self.cfg.seed, index))
        stopping = self.cfg.trainer.early_stopping
        for epoch in range(state.epoch, phase.epochs):
            started, skipped_before = time.time(), self.skips.total
            train_m = self._train_epoch(phase, epoch, p)
            val_m = self._validate(p)
            record = self._record(index, epoch, train_m, val_m, p, self.skips.total - skipped_before, started)
            improved, stop = state.end_epoch(val_m, record, epochs=phase.epochs, min_delta=stopping.min_delta,
                                             patience=stopping.patience)
            self.epoch_log.epoch_end(str(phase.name), phase.epochs, state, record, self.step, p.evaluated,
                                    p.val_dl.dataset)
            self._save(ckpt_dir, phase, index, state, p, best=improved)
            faults.point("epoch_end")
            pruning.after_epoch(self.cfg, self.plan.phases, index, state)  # a search trial reports the epoch
            if stop:
                log.info("early stopping: no %s improvement for %d epochs", OBJECTIVE, stopping.patience)
                break
        return state

    def _start_phase(self, phase: DictConfig, resume: Checkpoint | None, init_from) -> PhaseRun:
        """Freeze, build the phase's loaders, optimizer and schedule; load the resumed or initial state."""
        cfg, rt, d = self.cfg, self.rt, self.dist
        apply_freezing(self.model, list(phase.freeze), phase.freeze_stages)
        train_dl = train_loader(self.table, cfg.data, cfg.sampler, phase.batch_size, cfg.seed, str(rt.device),
                                rank=d.rank, world_size=d.world_size, augment=cfg.augment)
        val_dl = eval_loader(self.table, cfg.data, eval_batch_size(cfg, phase), str(rt.device), rank=d.rank,
                             world_size=d.world_size)
        optimizer = build_optimizer(cfg.optimizer, [self.model, self.loss_fn], phase.lr, rt.device)
        scheduler = build_scheduler(optimizer, cfg.scheduler, len(train_dl), phase.epochs)
        if resume is not None:
            self.model.load_state_dict(resume.model)
            self.loss_fn.load_state_dict(resume.loss)
            resume.restore_optimizer(optimizer)
            scheduler.load_state_dict(resume.scheduler)
            self._restore_counters(resume)
        elif init_from:
            self._load_weights(init_from)
        ema = EMA(self.model, cfg.trainer.ema_decay) if cfg.trainer.ema_decay else None
        if ema is not None and resume is not None:
            ema.load_state_dict(resume.ema)
        net, loss_fn, compiled = self._parallel()
        features = open_feature_path(cfg, self.model, self.table, phase, rt, d.enabled, eval_batch_size(cfg, phase))
        self.trained_on_cache |= features is not None
        n = torch.get_num_threads()
        threads = f", {n} thread{'s' if n > 1 else ''}" if rt.device.type == "cpu" else ""
        log.info("phase %s: %d epochs, lr %g, batch %d, %d steps/epoch on %s%s%s%s", phase.name, phase.epochs,
                 phase.lr, phase.batch_size, len(train_dl), rt.device, " (bf16)" if rt.bf16 else "",
                 f" x {d.world_size} processes" if d.enabled else "", threads)
        return PhaseRun(train_dl, val_dl, optimizer, scheduler, net, loss_fn, ema.model if ema else compiled, ema,
                        features)

    def _restore_counters(self, ckpt: Checkpoint) -> None:
        self.step, self.skips.total, self.prior_runtime = ckpt.global_step, ckpt.skipped_images, ckpt.runtime_s

    def _load_weights(self, path: str | Path) -> None:
        """Initialise from another checkpoint: every tensor whose name and shape match."""
        ckpt = Checkpoint.load(path)
        own = self.model.state_dict()
        usable = {k: v for k, v in ckpt.weights.items() if k in own and own[k].shape == v.shape}
        self.model.load_state_dict(usable, strict=False)
        if ckpt.loss and ckpt.tasks == self.model.tasks:
            self.loss_fn.load_state_dict(ckpt.loss)
        skipped = sorted(set(own) - set(usable))
        log.info("initialised from %s (%d tensors%s)", path, len(usable),
                 f"; kept fresh: {', '.join(skipped[:4])}{'...' if len(skipped) > 4 else ''}" if skipped else "")

    def _parallel(self) -> tuple[torch.nn.Module, torch.nn.Module, torch.nn.Module]:
        """The model and loss as trained this phase (DistributedDataParallel-wrapped when launched in parallel,
        per phase since freezing changes which parameters train), and the model as evaluated; both
        torch.compile'd with trainer.compile=true."""
        compiled = torch.compile(self.model) if self.cfg.trainer.compile else self.model
        if not self.dist.enabled:
            return compiled, self.loss_fn, compiled
        net = distributed.wrap(self.model, self.rt.device)
        net = torch.compile(net) if self.cfg.trainer.compile else net
        return net, distributed.wrap(self.loss_fn, self.rt.device), compiled

    def _train_epoch(self, phase: DictConfig, epoch: int, p: PhaseRun) -> dict[str, float]:
        fast = p.features  # cached backbone features: the same batches, no image augmentation
        loader, net = (fast.train_dl, fast.net) if fast is not None else (p.train_dl, p.net)
        loader.sampler.set_epoch(epoch)
        trainer = self.cfg.trainer
        metrics, self.step = train_epoch(
            Optimization(net, p.loss_fn, p.optimizer, p.scheduler, self.rt, trainer.grad_clip,
                         None if fast else mixer_from_config(self.cfg.augment, self.cfg.seed, self.dist.rank)), loader,
            self.tasks, self.skips, Progress(f"phase {phase.name} epoch {epoch + 1}/{phase.epochs}",
                                             trainer.progress_bar, trainer.log_every_n_steps, self.logger.log_metrics),
            self.step, reduce=distributed.all_reduce_sum_ if self.dist.enabled else None,
            after_step=(lambda: p.ema.update(self.model)) if p.ema is not None else None)
        return metrics

    def _validate(self, p: PhaseRun) -> dict[str, float]:
        distributed.broadcast_buffers_(p.evaluated)  # every rank evaluates rank 0's model
        cached = p.features is not None and p.features.val_dl is not None
        model, loader = (p.features.wrap(p.evaluated), p.features.val_dl) if cached else (p.evaluated, p.val_dl)
        metrics, _ = evaluate_loader(model, self.loss_fn, loader, self.rt, self.tasks,
                                     skips=self.skips, hflip=self.cfg.trainer.tta_hflip and not cached,
                                     reduce=distributed.all_reduce_sum_ if self.dist.enabled else None)
        return metrics

    def _record(self, index: int, epoch: int, train_m: dict, val_m: dict, p: PhaseRun, skipped: int,
                started: float) -> dict[str, Any]:
        """One epoch's line of the history (and of the tracker)."""
        record = {**train_m, **val_m, "epoch": epoch + 1, "phase": index + 1, "lr": p.optimizer.param_groups[0]["lr"],
                  "skipped_images": skipped, "epoch_time_s": time.time() - started,
                  **{f"loss_weight/{t}": w for t, w in self.loss_fn.task_weights().items()}}
        return {k: v for k, v in record.items() if not k.endswith("/count")}

    def _save(self, ckpt_dir: Path, phase: DictConfig, index: int, state: PhaseState, p: PhaseRun,
              best: bool) -> None:
        if not self.dist.is_main:
            distributed.barrier()  # wait until rank 0 has written the checkpoint
            return
        ckpt = Checkpoint(
            model=self.model.state_dict(), config=self.plain_cfg, tasks=self.tasks,
            phase={"name": str(phase.name), "index": index}, progress=state.as_dict(),
            loss=self.loss_fn.state_dict(), optimizer=p.optimizer.state_dict(), scheduler=p.scheduler.state_dict(),
            rng=capture_rng(), global_step=self.step, skipped_images=self.skips.total, runtime_s=self.elapsed_s(),
            wandb_run_id=self.logger.run_id, ema=p.ema.state_dict() if p.ema is not None else None)
        if best:  # best.pt first: last.pt is the record that the epoch is done, so it is written last
            ckpt.save(ckpt_dir / rundir.BEST)
        ckpt.save(ckpt_dir / rundir.LAST)
        distributed.barrier()

    # ------------------------------------------------------------------ end of run
    def _finish(self, phases: dict[str, PhaseState], best_phase: str) -> dict[str, Any]:
        last, best = list(phases.values())[-1], phases[best_phase]
        summary = {
            "final": last.final, "best": best.best, "best_epoch": best.best_epoch, "best_phase": best_phase,
            "epochs": last.epoch, "skipped_images": self.skips.total, "runtime_s": self.elapsed_s(),
            "phases": {name: s.summary() for name, s in phases.items()},
            "history": [{**record, "phase": name} for name, s in phases.items() for record in s.history],
        }
        best_meter = self._evaluate_best() if self.dist.is_main else None
        self.epoch_log.run_end(phases, best_phase, self.skips.total, best_meter, self.step)
        return summary

    def _evaluate_best(self) -> MetricAccumulator:
        """The run's best checkpoint on the val split: its per-image predictions (val_predictions.csv) and
        confusion matrices."""
        self.model.load_state_dict(Checkpoint.load(rundir.best_checkpoint(self.run_dir)).weights)
        batch_size = self.plan.eval_batch_size(self.cfg)
        # a checkpoint whose backbone was frozen on cached features: the same features, read from the cache (looked
        # up only when a phase trained on them: the key hashes every backbone weight)
        cached = cached_val(self.cfg, self.model, self.table, self.rt, batch_size) if self.trained_on_cache else None
        val_dl, net = cached or \
            (eval_loader(self.table, self.cfg.data, batch_size, str(self.rt.device)), self.model)
        recorder = PredictionRecorder(self.tasks, self.table.frame("val")["path"].tolist())
        _, meter = evaluate_loader(net, self.loss_fn, val_dl, self.rt, self.tasks, skips=SkipCounter(),
                                   collect=recorder, hflip=self.cfg.trainer.tta_hflip)
        recorder.save(self.run_dir / rundir.PREDICTIONS)
        return meter


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
    plan = check_config(cfg)
    seed_everything(cfg.seed)
    trainer = Trainer(cfg, plan, run_dir, info or RunInfo.from_hydra())
    if cfg.lr_find:
        result = run_lr_finder(trainer)
        if not cfg.lr_finder.apply:
            return {"lr_find": result, "best": {}, "final": {}}
        trainer.use_config(apply_lr(cfg, result["suggestion"]))
        log.info("lr_finder.apply=true: training phase %s with lr %.2e", trainer.plan.phases[0].name,
                 result["suggestion"])
    try:
        summary = trainer.run()
    except pruning.TrialPruned as pruned:  # a search trial its pruner stopped ended as it should: a finished record
        best = {f"best/{k}": v for k, v in (pruned.reached.get("best") or {}).items()}
        trainer.logger.finish({**best, "pruned_epoch": float(pruned.epoch)})
        raise
    except BaseException as exc:  # the loggers' records end as failed / killed, then the error goes on
        try:
            trainer.logger.abort("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        except Exception as abort_exc:  # noqa: BLE001 - never hide the run's own error
            log.warning("ending the logger's record failed (%s: %s)", type(abort_exc).__name__, abort_exc)
        raise
    if trainer.dist.is_main:
        rundir.write_metrics(run_dir, summary)
    trainer.logger.finish({f"best/{k}": v for k, v in summary["best"].items()})  # after metrics.json: an artifact
    return summary
