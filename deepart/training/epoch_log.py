"""What a training run shows and sends as it goes (not the sweep report): the per-epoch console line and
tracker metrics, attention overlays of fixed val images, and at the end the per-task table and the
confusion matrices."""
from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from deepart.core.config import OBJECTIVE
from deepart.core.runtime import Runtime
from deepart.objectives.metrics import MetricAccumulator, format_table
from deepart.training.phases import PhaseState
from deepart.vis.plots import attention_overlay

log = logging.getLogger("deepart")


def peak_line(phases: dict[str, PhaseState], best_phase: str) -> str:
    """Where the run peaked and how far its last epoch fell from it, metrics in %: `best val/mean_top1 61.2 at
    epoch 5 of 15; last 57.1, -4.1 points` (a chain of phases names them: `at epoch 5 of 15 of phase 2; last
    (epoch 20 of phase 3) 57.1, -4.1 points`)."""
    best, (last_name, last) = phases[best_phase], list(phases.items())[-1]
    best_value, last_value = 100 * best.best_metric, 100 * last.final.get(OBJECTIVE, float("nan"))
    where = f"at epoch {best.best_epoch} of {best.epoch}"
    if len(phases) > 1:
        where += f" of phase {best_phase}; last (epoch {last.epoch} of phase {last_name})"
    else:
        where += "; last"
    return f"best {OBJECTIVE} {best_value:.1f} {where} {last_value:.1f}, {last_value - best_value:+.1f} points"


class EpochLog:
    """Per-epoch and end-of-run reporting to the console (the `deepart` log) and the tracker (conf/logger)."""

    def __init__(self, logger, tasks: dict[str, list[str]], rt: Runtime):
        self.logger, self.tasks, self.rt = logger, tasks, rt

    def epoch_end(self, phase_name: str, epochs: int, state: PhaseState, record: dict[str, Any], step: int,
                  model, val_dataset) -> None:
        """After an epoch: the record to the tracker, attention overlays (every N epochs), the console line."""
        self.logger.log_metrics(record, step)
        every, n = self.logger.attention_every_n_epochs, self.logger.num_attention_images
        if every and n and state.epoch % every == 0:
            self.log_attention(model, val_dataset, n, step)
        log.info(self.epoch_line(phase_name, epochs, state, record))

    def epoch_line(self, phase_name: str, epochs: int, state: PhaseState, r: dict[str, Any]) -> str:
        """`[phase full] epoch 9/15 ... mean top1 57.1 (best 61.2 @5, -4.1) ...`: the best epoch so far and, when
        this epoch is below it, by how many points."""
        tasks = "  ".join(f"{t} {100 * r[f'val/{t}/top1']:.1f}/{100 * r[f'val/{t}/top5']:.1f}" for t in self.tasks)
        below = 100 * (r[OBJECTIVE] - state.best_metric)
        return (f"[phase {phase_name}] epoch {state.epoch}/{epochs}  train loss {r['train/loss']:.3f}  "
                f"val loss {r['val/loss']:.3f}  {tasks}  mean top1 {100 * r[OBJECTIVE]:.1f} "
                f"(best {100 * state.best_metric:.1f} @{state.best_epoch}{f', {below:+.1f}' if below < 0 else ''})  "
                f"lr {r['lr']:.2e}  "
                f"{r['epoch_time_s']:.0f}s ({r['train/images_per_s']:.0f} img/s)"
                + (f"  skipped {r['skipped_images']}" if r["skipped_images"] else ""))

    def log_attention(self, model, dataset, n: int, step: int) -> None:
        """Attention overlays of `n` fixed val images, captioned with prediction and truth per task."""
        picks = np.linspace(0, len(dataset) - 1, num=min(n, len(dataset))).astype(int)
        items = [it for it in (dataset[int(i)] for i in picks) if "image" in it]
        if not items:
            return
        images = torch.stack([it["image"] for it in items])
        model.eval()
        with torch.no_grad(), self.rt.autocast():
            out = model(images.to(self.rt.device))
        if out["attention"] is None:  # mean pooling: no attention weights
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
        self.logger.log_images("val/attention", overlays, captions, step)

    def run_end(self, phases: dict[str, PhaseState], best_phase: str, skipped: int,
                best_meter: MetricAccumulator | None, step: int) -> None:
        """The final table of the last phase, the best checkpoint's confusion matrices (train() then finishes the
        tracker's run, after metrics.json)."""
        name, last = list(phases.items())[-1]
        log.info("final validation (phase %s, epoch %d): %s\n%s", name, last.epoch,
                 peak_line(phases, best_phase), format_table(last.final, self.tasks))
        if best_meter is not None:
            for task, names in self.tasks.items():
                self.logger.log_confusion(task, best_meter.confusion_matrix(task), names, step)
        if skipped:
            log.warning("%d unreadable images were skipped in this run", skipped)
