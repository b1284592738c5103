"""MLflow (logger=mlflow): one MLflow run per training run. By default a local store in the run dir, or for a
sweep in the sweep dir (`sqlite:///<dir>/mlflow.db`, artifacts in `<dir>/mlartifacts`), a sweep's runs in one
experiment named after the sweep; `logger.tracking_uri` names another store or a tracking server. Params: the
run's overrides and its resolved config, flattened; metrics per step; at the end metrics.json, the val
predictions and the config as artifacts. A resumed run continues the same MLflow run (found by the run-dir tag)
and logs no step twice."""
from __future__ import annotations

import os
import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
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

RUN_DIR_TAG = "deepart.run_dir"
#: How many params or metrics one log_batch call carries (MLflow's limit for params is 100).
BATCH = 100


def metric_name(key: str) -> str:
    """`key` in the characters MLflow allows in a metric name (`=` and `,` of a config's name become `-`)."""
    return re.sub(r"[^\w\-. :/]", "-", key)


@contextmanager
def quick_failure() -> Iterator[None]:
    """While probing the store: one try of at most 10 s per HTTP request instead of MLflow's minutes of retries."""
    saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ.update(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="10")
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def _creating(lock: Path | None) -> Iterator[None]:
    """Hold `lock` (deepart.core.locks) for the block; no lock (None, or a file system without flock): no wait."""
    from contextlib import ExitStack

    from deepart.core.locks import LockError, exclusive

    with ExitStack() as stack:
        if lock is not None:
            try:
                stack.enter_context(exclusive(lock, lambda holder: None))
            except LockError:
                pass
        yield


class MLflowLogger(GuardedLogger):
    label = "MLflow"

    def __init__(self, tracking_uri: str | None = None, experiment: str | None = None,
                 attention_every_n_epochs: int = 1, num_attention_images: int = 8, key: str = "logger"):
        self.key, self.tracking_uri, self.experiment = key, tracking_uri, experiment
        self.attention_every_n_epochs = attention_every_n_epochs
        self.num_attention_images = num_attention_images
        try:
            from mlflow import MlflowClient
        except ImportError as exc:
            raise ConfigError(f"{key}: MLflow logging needs the mlflow package ({first_line(exc)}); "
                              f"{install_line('tracking')}, or {fix_hint(key)}") from None
        self.client_type = MlflowClient
        self.client: Any = None
        self.mlflow_run_id: str | None = None
        self.run_dir = Path(".")
        self.logged: dict[str, set[int]] = {}  # key -> steps already in the run (a resumed run)
        self.step = 0

    # ------------------------------------------------------------------ store, experiment, run
    def connect(self, folder: Path) -> tuple[Any, str | None]:
        """A client of the store (the default: `folder`/mlflow.db) and the artifact location of new experiments;
        a ConfigError naming logger.tracking_uri when the store cannot be opened or reached."""
        uri = self.tracking_uri or f"sqlite:///{folder / rundir.MLFLOW_DB}"
        artifacts = None if self.tracking_uri else (folder / rundir.MLFLOW_ARTIFACTS).as_uri()
        try:
            if not self.tracking_uri:
                folder.mkdir(parents=True, exist_ok=True)
            # the runs of a parallel sweep open the sweep's new mlflow.db at once: one creates its tables while the
            # others wait (two at once fail MLflow's schema migration)
            with _creating(None if self.tracking_uri else folder / f".{rundir.MLFLOW_DB}.lock"):
                client = self.client_type(tracking_uri=uri)
                with quick_failure():
                    client.search_experiments(max_results=1)
        except Exception as exc:  # noqa: BLE001 - whatever the store raises, the run cannot log to it
            raise ConfigError(f"{self.key}.tracking_uri={self.tracking_uri}: cannot open the MLflow store {uri} "
                              f"({first_line(exc)}); {fix_hint(f'{self.key}.tracking_uri')}") from None
        return client, artifacts

    def experiment_id(self, name: str, artifacts: str | None) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is None:
            try:
                return self.client.create_experiment(name, artifact_location=artifacts)
            except Exception:  # noqa: BLE001 - created meanwhile by another run of the sweep
                found = self.client.get_experiment_by_name(name)
                if found is None:
                    raise
        return found.experiment_id

    def existing_run(self, run_dir: Path) -> Any:
        """The MLflow run recorded for `run_dir` (its tag), or None."""
        if "'" in str(run_dir):
            return None
        ids = [e.experiment_id for e in self.client.search_experiments()]
        runs = self.client.search_runs(ids, filter_string=f"tags.`{RUN_DIR_TAG}` = '{run_dir}'", max_results=1)
        return runs[0] if runs else None

    def start(self, *, config: dict, run_dir: str, name: str | None = None, group: str | None = None,
              resume_step: int | None = None, **_: Any) -> None:
        self.run_dir = Path(run_dir).resolve()
        self.client, artifacts = self.connect(rundir.sweep_dir_of(self.run_dir) or self.run_dir)
        run = self.existing_run(self.run_dir) if resume_step is not None else None
        if run is not None:
            self.mlflow_run_id = run.info.run_id
            self.client.update_run(self.mlflow_run_id, status="RUNNING")
            self.logged = {k: {m.step for m in self.client.get_metric_history(self.mlflow_run_id, k)}
                           for k in run.data.metrics}
        else:
            exp = self.experiment_id(self.experiment or group or "deepart", artifacts)
            self.mlflow_run_id = self.client.create_run(exp, run_name=name or self.run_dir.name,
                                                        tags={RUN_DIR_TAG: str(self.run_dir)}).info.run_id
            self.log_params({**run_overrides(run_dir), **flatten(config)})  # the resolved value wins
        self.step, self.active, self.broken = resume_step or 0, True, False

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), BATCH):
            self.client.log_batch(self.mlflow_run_id, params=items[i:i + BATCH])

    # ------------------------------------------------------------------ records
    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.guard("logging", self._metrics, scalars(metrics), step)

    def _metrics(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(metric_name(k), v, now, step) for k, v in values.items()
                 if step not in self.logged.get(metric_name(k), ())]
        for i in range(0, len(items), BATCH):
            self.client.log_batch(self.mlflow_run_id, metrics=items[i:i + BATCH])
        self.step = max(self.step, step)

    def log_images(self, key: str, images: list[np.ndarray], captions: list[str], step: int | None) -> None:
        if images:
            self.guard("image logging", self._images, key, images, captions, self.step if step is None else step)

    def _images(self, key: str, images: list[np.ndarray], captions: list[str], step: int) -> None:
        folder = f"{key}/step-{step:07d}"
        for i, image in enumerate(images):
            self.client.log_image(self.mlflow_run_id, np.asarray(image), artifact_file=f"{folder}/{i:02d}.png")
        self.client.log_text(self.mlflow_run_id, "\n".join(f"{i:02d}: {c}" for i, c in enumerate(captions)),
                             f"{folder}/captions.txt")

    def log_confusion(self, task: str, cm: np.ndarray, class_names: list[str], step: int | None) -> None:
        self.guard("confusion-matrix logging", self._confusion, task, cm, class_names)

    def _confusion(self, task: str, cm: np.ndarray, class_names: list[str]) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            self.client.log_artifact(self.mlflow_run_id, str(confusion_png(cm, class_names, task, Path(tmp))),
                                     "confusion")

    def finish(self, summary: dict[str, float] | None = None) -> None:
        self.guard("finish", self._finish, scalars(summary or {}))
        self.active = False

    def abort(self, status: str) -> None:
        # a lambda: a logger that never started (its server did not answer) has no client, and guard skips it
        self.guard("abort", lambda: self.client.set_terminated(self.mlflow_run_id, status))
        self.active = False

    def _finish(self, summary: dict[str, float]) -> None:
        """The summary metrics at the last step, the run's files as artifacts, the run marked finished."""
        self._metrics(summary, self.step)
        for path in (self.run_dir / rundir.METRICS, self.run_dir / rundir.PREDICTIONS):
            if path.is_file():
                self.client.log_artifact(self.mlflow_run_id, str(path))
        if (self.run_dir / rundir.HYDRA).is_dir():
            self.client.log_artifacts(self.mlflow_run_id, str(self.run_dir / rundir.HYDRA), "hydra")
        self.client.set_terminated(self.mlflow_run_id, "FINISHED")

    def log_report(self, report: SweepReport) -> None:
        """One `sweep-summary` run in the sweep's experiment: the report files as artifacts, the headline
        numbers as metrics and its names (baseline, best config) as tags."""
        self.client, artifacts = self.connect(report.folder.resolve())
        exp = self.experiment_id(self.experiment or report.group or "deepart", artifacts)
        names = {k: str(v) for k, v in report.headline.items() if isinstance(v, str)}
        run = self.client.create_run(exp, run_name=rundir.SWEEP_SUMMARY,
                                     tags={"job_type": rundir.SWEEP_SUMMARY, **names})
        self.mlflow_run_id, self.active, self.broken, self.logged = run.info.run_id, True, False, {}
        self.goes_on = "the report files are unaffected"
        self.guard("report logging", self._report, report)
        self.active = False

    def _report(self, report: SweepReport) -> None:
        self._metrics(scalars(report.headline), 0)
        for path in report.files:
            self.client.log_artifact(self.mlflow_run_id, str(path))
        self.client.set_terminated(self.mlflow_run_id, "FINISHED")
