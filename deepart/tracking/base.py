"""The logger interface (`NullLogger`, logger=none), what every logger shares (a failure warns once and the
run goes on without that logger; the run's parameters, flattened) and `logger_kinds` (what a `logger` config
node writes to, read from its `_target_`)."""
from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from deepart.core import rundir
from deepart.core.config import launch_keys

log = logging.getLogger(__name__)

#: The kind of each logger class (by class name: configs saved in checkpoints name the class).
KINDS = {"NullLogger": "none", "WandbLogger": "wandb", "TensorBoardLogger": "tensorboard", "MLflowLogger": "mlflow",
         "CSVLogger": "csv", "FanoutLogger": "many"}


def logger_kind(node: Any) -> str:
    """What a `logger` config node is, from its `_target_`: none | wandb | tensorboard | mlflow | csv | many."""
    target = str((node or {}).get("_target_", ""))
    return KINDS.get(target.rsplit(".", 1)[-1], "none")


def logger_kinds(node: Any) -> list[str]:
    """The trackers a `logger` config node writes to: its kind, or for logger=many the kinds it fans out to."""
    kind = logger_kind(node)
    if kind == "many":
        return [str(name) for name in node.get("loggers", [])]
    return [] if kind == "none" else [kind]


@dataclass
class SweepReport:
    """A written sweep report as the loggers receive it (deepart.report.sweeps.log_report)."""

    folder: Path                                       # the sweep dir (where report.html is)
    group: str | None                                  # the sweep's name where runs are compared
    tables: dict[str, Any] = field(default_factory=dict)   # name -> pandas DataFrame
    figures: dict[str, Path] = field(default_factory=dict)  # name -> PNG
    files: list[Path] = field(default_factory=list)    # every report file (html, md, csv, png)
    headline: dict[str, Any] = field(default_factory=dict)  # the headline numbers (and names)


class NullLogger:
    """Logs nothing beyond the console / metrics.json (logger=none); the interface every logger implements.

    `start` may raise a ConfigError when the logger asked for cannot work at all (package missing, folder not
    writable, tracking server unreachable); any later failure is a warning and the run goes on without it."""

    run_id: str | None = None
    enabled = False
    attention_every_n_epochs = 0
    num_attention_images = 0

    def start(self, *, config: dict, run_dir: str, name: str | None = None, group: str | None = None,
              run_id: str | None = None, resume_step: int | None = None, **_: Any) -> None:
        """Begin (or, with `resume_step`, continue) the run's record. `resume_step`: the global step of the
        resumed checkpoint (0: none was written); records after it came from the stopped process."""

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        pass

    def log_images(self, key: str, images: list[np.ndarray], captions: list[str], step: int | None) -> None:
        pass

    def log_confusion(self, task: str, cm: np.ndarray, class_names: list[str], step: int | None) -> None:
        pass

    def finish(self, summary: dict[str, float] | None = None) -> None:
        """End the run's record (after metrics.json is written): `summary` holds the best/... metrics."""

    def abort(self, status: str) -> None:
        """End the record of a run that stopped early: `status` FAILED (an exception) or KILLED (interrupted,
        e.g. Ctrl-C). What was logged stays; `resume=<run dir>` continues the same record."""

    def log_report(self, report: SweepReport) -> None:
        """The sweep's report, once, after every run of the sweep (a `sweep-summary` record)."""


class GuardedLogger(NullLogger):
    """A logger whose failures after start warn once and switch it off: `self.guard(what, fn, *args)`."""

    label = "logger"
    active = False  # started
    broken = False  # failed since
    goes_on = "training continues without it"  # what the warning says happens next

    @property
    def enabled(self) -> bool:
        return self.active and not self.broken

    def guard(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not self.enabled:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - a logger must never stop training
            log.warning("%s %s failed (%s: %s); %s", self.label, what, type(exc).__name__, exc, self.goes_on)
            self.broken = True
            return None


def scalars(metrics: dict[str, Any]) -> dict[str, int | float]:
    """The finite numbers of a metrics dict (integers stay integers: epoch, phase, counts)."""
    out: dict[str, int | float] = {}
    for key, value in metrics.items():
        if isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and math.isfinite(value):
            out[key] = int(value) if isinstance(value, (int, np.integer)) else float(value)
    return out


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as `a.b.c -> value` (lists and None as their YAML text, so every value is a scalar)."""
    if isinstance(config, dict):
        out: dict[str, Any] = {}
        for key, value in config.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    key = prefix[:-1]
    if config is None or isinstance(config, (list, tuple)):
        return {key: yaml.safe_dump(config, default_flow_style=True, width=10**6).strip().removesuffix("...").strip()}
    return {key: config}


def run_overrides(run_dir: str | Path) -> dict[str, Any]:
    """`key -> value` of the command-line overrides a run was launched with (.hydra/overrides.yaml), the keys
    that name no config (resume, ...) and Hydra's own left out; values parsed as YAML (numbers stay numbers)."""
    out: dict[str, Any] = {}
    skipped = launch_keys()
    for item in rundir.read_overrides(run_dir) or []:
        key, _, value = item.partition("=")
        key = key.lstrip("+~")
        if key in skipped or key.startswith("hydra."):
            continue
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            parsed = value
        out[key] = parsed if isinstance(parsed, (int, float, str, bool)) else value
    return out


def confusion_png(cm: np.ndarray, class_names: list[str], task: str, folder: Path) -> Path:
    """The confusion matrix drawn as eval.py draws it (normalised per true class), saved in `folder`."""
    from deepart.vis.plots import plot_confusion

    return plot_confusion(cm, list(class_names), folder / f"confusion_{task}.png", title=f"{task} confusion")


def fix_hint(key: str) -> str:
    """How to go on when the logger under `key` cannot start."""
    return f"fix {key}, or pick another logger (logger=none trains without one)"
