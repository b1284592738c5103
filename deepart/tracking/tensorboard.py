"""TensorBoard (logger=tensorboard): one event folder per run, `<run>/tensorboard` (so `tensorboard --logdir
multirun/<sweep>` shows a sweep's runs side by side): scalars under the names W&B uses, attention overlays and
confusion matrices as images, and at the end the run's hyperparameters with its metrics for the HParams view."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from deepart.core import rundir
from deepart.core.cli import install_line
from deepart.core.errors import ConfigError, first_line
from deepart.tracking.base import (
    GuardedLogger,
    SweepReport,
    confusion_png,
    fix_hint,
    flatten,
    run_overrides,
    scalars,
)
from deepart.vis.gallery import read_png

#: The metrics the HParams view compares (beside every best/... of the summary).
HPARAM_METRICS = ("top1", "top5", "/loss")


def summary_writer(key: str) -> type:
    """torch's SummaryWriter; a ConfigError naming `key` when the tensorboard package is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise ConfigError(f"{key}: TensorBoard logging needs the tensorboard package ({first_line(exc)}); "
                          f"{install_line('tracking')}, or {fix_hint(key)}") from None
    return SummaryWriter


class TensorBoardLogger(GuardedLogger):
    """Event files of one run; a resumed run continues its folder, and TensorBoard hides what the stopped
    process wrote after the resumed checkpoint (SummaryWriter's purge_step), so no step appears twice."""

    label = "TensorBoard"

    def __init__(self, log_dir: str | None = None, flush_secs: int = 30, attention_every_n_epochs: int = 1,
                 num_attention_images: int = 8, key: str = "logger"):
        self.key, self.log_dir, self.flush_secs = key, log_dir, flush_secs
        self.attention_every_n_epochs = attention_every_n_epochs
        self.num_attention_images = num_attention_images
        self.writer_type = summary_writer(key)
        self.writer: Any = None
        self.hparams: dict[str, Any] = {}
        self.metric_tags: set[str] = set()
        self.step = 0

    def open(self, folder: Path, purge_step: int | None = None) -> Any:
        """A SummaryWriter on `folder`; a ConfigError naming logger.log_dir when it cannot write there."""
        try:
            return self.writer_type(str(folder), purge_step=purge_step, flush_secs=self.flush_secs)
        except OSError as exc:
            raise ConfigError(f"{self.key}.log_dir={self.log_dir}: cannot write TensorBoard events to {folder} "
                              f"({first_line(exc)}); {fix_hint(f'{self.key}.log_dir')}") from None

    def start(self, *, config: dict, run_dir: str, resume_step: int | None = None, **_: Any) -> None:
        folder = Path(self.log_dir) if self.log_dir else Path(run_dir) / rundir.TENSORBOARD
        self.writer = self.open(folder, None if resume_step is None else resume_step + 1)
        self.hparams = run_overrides(run_dir) or flatten(config)
        self.step, self.active, self.broken = resume_step or 0, True, False

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.guard("logging", self._scalars, scalars(metrics), step)

    def _scalars(self, values: dict[str, float], step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)
        self.metric_tags.update(k for k in values if k.startswith("val/") and k.endswith(HPARAM_METRICS))
        self.step = max(self.step, step)

    def log_images(self, key: str, images: list[np.ndarray], captions: list[str], step: int | None) -> None:
        if images:
            self.guard("image logging", self._images, key, images, captions, self.step if step is None else step)

    def _images(self, key: str, images: list[np.ndarray], captions: list[str], step: int) -> None:
        for i, image in enumerate(images):
            self.writer.add_image(f"{key}/{i}", np.asarray(image), step, dataformats="HWC")
        self.writer.add_text(f"{key}/captions", "\n\n".join(f"{i}: {c}" for i, c in enumerate(captions)), step)

    def log_confusion(self, task: str, cm: np.ndarray, class_names: list[str], step: int | None) -> None:
        self.guard("confusion-matrix logging", self._confusion, task, cm, class_names,
                   self.step if step is None else step)

    def _confusion(self, task: str, cm: np.ndarray, class_names: list[str], step: int) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            image = read_png(confusion_png(cm, class_names, task, Path(tmp)))
        self.writer.add_image(f"val/{task}/confusion", image, step, dataformats="HWC")

    def finish(self, summary: dict[str, float] | None = None) -> None:
        self.guard("finish", self._finish, scalars(summary or {}))
        if self.writer is not None:
            self.writer.close()
        self.active = False

    def abort(self, status: str) -> None:
        if self.writer is not None:  # what was logged reaches the event file
            self.writer.close()
        self.active = False

    def _finish(self, summary: dict[str, float]) -> None:
        """The summary as scalars at the last step, and the HParams record of the run: its hyperparameters
        (the run's overrides, else its whole config) and the metric tags it compares."""
        from torch.utils.tensorboard.summary import hparams

        self._scalars(summary, self.step)
        values = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in self.hparams.items()}
        for record in hparams(values, dict.fromkeys(sorted(self.metric_tags | set(summary)), 0.0)):
            self.writer.file_writer.add_summary(record)

    def log_report(self, report: SweepReport) -> None:
        """The report in `<sweep>/sweep-summary`: its tables and page as text, figures as images, headline
        numbers as scalars."""
        self.active, self.broken, self.goes_on = True, False, "the report files are unaffected"
        self.writer = self.open(report.folder / rundir.SWEEP_SUMMARY)
        self.guard("report logging", self._report, report)
        self.writer.close()
        self.active = False

    def _report(self, report: SweepReport) -> None:
        for name, table in report.tables.items():
            self.writer.add_text(f"sweep-summary/{name}", "    " + table.to_string(index=False).replace("\n", "\n    "))
        for name, path in report.figures.items():
            self.writer.add_image(f"sweep-summary/{name}", read_png(path), 0, dataformats="HWC")
        for key, value in scalars(report.headline).items():
            self.writer.add_scalar(f"sweep-summary/{key}", value, 0)
        names = {k: v for k, v in report.headline.items() if isinstance(v, str)}
        self.writer.add_text("sweep-summary/headline", "\n\n".join(f"{k}: {v}" for k, v in names.items()))
