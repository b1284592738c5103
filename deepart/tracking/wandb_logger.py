"""Weights & Biases (logger=wandb): offline unless told otherwise; a W&B failure never stops training (it
warns once and carries on without it)."""
from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from deepart.tracking.base import NullLogger

log = logging.getLogger(__name__)


class WandbLogger(NullLogger):
    """One W&B run per training run (resumed runs continue the same W&B run id)."""

    def __init__(self, project: str = "deepart", entity: str | None = None, mode: str = "offline",
                 tags: list[str] | None = None, attention_every_n_epochs: int = 1, num_attention_images: int = 8):
        self.project, self.entity, self.mode, self.tags = project, entity, mode, list(tags or [])
        self.attention_every_n_epochs = attention_every_n_epochs
        self.num_attention_images = num_attention_images
        self.run = None

    @property
    def enabled(self) -> bool:
        return self.run is not None

    def _fail(self, what: str, exc: BaseException) -> None:
        log.warning("W&B %s failed (%s: %s); training continues without W&B", what, type(exc).__name__, exc)
        self.run = None

    def start(self, *, config: dict, run_dir: str, name: str | None = None, group: str | None = None,
              run_id: str | None = None, **_: Any) -> None:
        try:
            import wandb

            os.environ.setdefault("WANDB_SILENT", "true")
            self.run = wandb.init(project=self.project, entity=self.entity, mode=self.mode, tags=self.tags,
                                  config=config, dir=run_dir, name=name, group=group, id=run_id,
                                  resume="allow" if run_id else None, reinit="finish_previous")
            self.run_id = self.run.id
            self.run.define_metric("val/*", summary="max")
        except Exception as exc:  # noqa: BLE001 - W&B must never stop training
            self._fail("init", exc)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if self.run is None:
            return
        try:
            self.run.log(dict(metrics), step=step)
        except Exception as exc:  # noqa: BLE001
            self._fail("log", exc)

    def log_images(self, key: str, images: list[np.ndarray], captions: list[str], step: int | None) -> None:
        if self.run is None or not images:
            return
        try:
            import wandb

            self.run.log({key: [wandb.Image(im, caption=c) for im, c in zip(images, captions)]}, step=step)
        except Exception as exc:  # noqa: BLE001
            self._fail("image logging", exc)

    def log_confusion(self, task: str, cm: np.ndarray, class_names: list[str], step: int | None) -> None:
        if self.run is None:
            return
        try:
            import wandb

            y_true = np.repeat(np.arange(len(class_names)), cm.sum(1))
            preds = np.concatenate([np.repeat(np.arange(len(class_names)), row) for row in cm]) \
                if cm.sum() else np.zeros(0, dtype=int)
            plot = wandb.plot.confusion_matrix(y_true=y_true.tolist(), preds=preds.tolist(),
                                               class_names=list(class_names), title=f"{task} confusion")
            self.run.log({f"val/{task}/confusion": plot}, step=step)
        except Exception as exc:  # noqa: BLE001
            self._fail("confusion-matrix logging", exc)

    def abort(self, status: str) -> None:
        self._end({}, 130 if status == "KILLED" else 1)  # a non-zero exit code: W&B shows the run as crashed

    def finish(self, summary: dict[str, float] | None = None) -> None:
        self._end(summary or {}, None)

    def _end(self, summary: dict[str, float], exit_code: int | None) -> None:
        if self.run is None:
            return
        try:
            for k, v in summary.items():
                self.run.summary[k] = v
            self.run.finish(exit_code=exit_code)
        except Exception as exc:  # noqa: BLE001
            self._fail("finish", exc)
        self.run = None
