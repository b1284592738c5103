"""Several loggers at once (logger=many): `logger.loggers=[tensorboard,mlflow,csv,wandb]`, each configured
under its own name (`logger.mlflow.tracking_uri=...`), every record sent to each of them."""
from __future__ import annotations

from typing import Any

import numpy as np

from deepart.core.config import build
from deepart.core.errors import bad_value
from deepart.tracking.base import NullLogger, SweepReport


class FanoutLogger(NullLogger):
    """Sends every record to each logger of `loggers`; attention overlays every `attention_every_n_epochs`
    epochs (`num_attention_images` of them) go to those that take images."""

    def __init__(self, loggers: list[str], attention_every_n_epochs: int = 1, num_attention_images: int = 8,
                 **settings: Any):
        names = [str(name) for name in loggers]
        if not names or any(name not in settings for name in names):
            raise bad_value("logger.loggers", names, f"a non-empty list of {' | '.join(settings)}")
        self.names = list(dict.fromkeys(names))
        self.loggers = [build(settings[name], **self.own_key(settings[name], name)) for name in self.names]
        self.attention_every_n_epochs = attention_every_n_epochs
        self.num_attention_images = num_attention_images

    @staticmethod
    def own_key(node: Any, name: str) -> dict[str, str]:
        """Where that logger's settings are, for its error messages (`logger.<name>`)."""
        return {"key": f"logger.{name}"} if name != "wandb" else {}

    @property
    def run_id(self) -> str | None:  # the id a checkpoint keeps: W&B's
        return next((lg.run_id for lg in self.loggers if lg.run_id), None)

    @property
    def enabled(self) -> bool:
        return any(lg.enabled for lg in self.loggers)

    def start(self, **kwargs: Any) -> None:
        for lg in self.loggers:
            lg.start(**kwargs)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        for lg in self.loggers:
            lg.log_metrics(metrics, step)

    def log_images(self, key: str, images: list[np.ndarray], captions: list[str], step: int | None) -> None:
        for lg in self.loggers:
            lg.log_images(key, images, captions, step)

    def log_confusion(self, task: str, cm: np.ndarray, class_names: list[str], step: int | None) -> None:
        for lg in self.loggers:
            lg.log_confusion(task, cm, class_names, step)

    def finish(self, summary: dict[str, float] | None = None) -> None:
        for lg in self.loggers:
            lg.finish(summary)

    def abort(self, status: str) -> None:
        for lg in self.loggers:
            lg.abort(status)

    def log_report(self, report: SweepReport) -> None:
        for lg in self.loggers:
            lg.log_report(report)
