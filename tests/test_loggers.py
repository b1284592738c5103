"""The experiment loggers as users meet them: a real `train.py -m ... logger=many` sweep, then what each logger
wrote read back with its own tools (TensorBoard's EventAccumulator, MlflowClient / mlflow.search_runs on the
sqlite store, pandas for metrics.csv; W&B's offline run is there); a run killed with SIGKILL and resumed
continues the same MLflow run and TensorBoard folder with no step twice; a logger that cannot start stops the
run with one line; one that fails later warns once and the run finishes."""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from benchmarks.app_load import free_port
from tests.conftest import TINY, TINY_SEQUENCER, demo_overrides, hold_env, run_script, wait_until_held
from tests.test_resume_kill import finish, start

pytestmark = pytest.mark.slow  # end-to-end: real commands and trainings (python -m pytest -m "not slow" skips them)

pytest.importorskip("tensorboard")
pytest.importorskip("mlflow")

TASKS = ("style", "genre", "artist")
FINAL = [f"val/{t}/top1" for t in TASKS] + ["val/mean_top1"]
# train/loss every 5 steps (4 steps an epoch: never the step of an epoch's record, which has the epoch's mean
# train/loss): step 5 is logged by the process killed in epoch 2, and again after its resume
QUIET = ["trainer.log_every_n_steps=5"]


def events(folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def mlflow_client(folder: Path):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")


def training_runs(client) -> list:
    ids = [e.experiment_id for e in client.search_experiments()]
    return [r for r in client.search_runs(ids) if r.data.tags.get("job_type") != "sweep-summary"]


@pytest.fixture(scope="module")
def sweep(demo_root, tmp_path_factory) -> Path:
    """Two runs (loss.gamma=1,2) of two epochs, logged to TensorBoard, MLflow, CSV and W&B (offline)."""
    out = tmp_path_factory.mktemp("sweep") / "sweep"
    res = run_script("train.py", "-m", *demo_overrides(demo_root), *TINY, *TINY_SEQUENCER, *QUIET, "phase.epochs=2",
                     "loss.gamma=1,2", "logger=many", "logger.loggers=[tensorboard,mlflow,csv,wandb]",
                     f"hydra.sweep.dir={out}", timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return out


def test_every_logger_records_the_final_val_top1_of_metrics_json(sweep):
    client = mlflow_client(sweep)
    by_dir = {Path(r.data.tags["deepart.run_dir"]): r for r in training_runs(client)}
    assert set(by_dir) == {(sweep / n).resolve() for n in ("0", "1")}
    for n, gamma in (("0", 1), ("1", 2)):
        run_dir = sweep / n
        metrics = json.loads((run_dir / "metrics.json").read_text())
        acc, csv = events(run_dir / "tensorboard"), pd.read_csv(run_dir / "metrics.csv")
        run = by_dir[run_dir.resolve()]
        assert csv["epoch"].tolist() == [1, 2] and run.info.status == "FINISHED"
        for key in FINAL:
            final = metrics["final"][key]
            assert acc.Scalars(key)[-1].value == pytest.approx(final, abs=1e-6), key
            assert csv[key].iloc[-1] == pytest.approx(final, abs=1e-9), key
            assert run.data.metrics[key] == pytest.approx(final, abs=1e-9), key
        (offline,) = (run_dir / "wandb").glob("offline-run-*")  # W&B's own record (its binary file): there
        assert list((offline / "files" / "media" / "images").glob("**/attention_*.png"))
        params = run.data.params  # the overrides (a group's option too) and the resolved config
        assert float(params["loss.gamma"]) == gamma and params["data"] == "demo"
        assert params["backbone.name"] == "test_efficientnet" and params["model.dim"] == "32"
        assert {"metrics.json", "val_predictions.csv", "confusion", "val", "hydra"} <= {
            Path(a.path).name for a in client.list_artifacts(run.info.run_id)}


def test_tensorboard_shows_images_and_the_hparams_of_each_run(sweep):
    from tensorboard.plugins.hparams import plugin_data_pb2

    acc = events(sweep / "1" / "tensorboard")
    assert {"val/attention/0", *(f"val/{t}/confusion" for t in TASKS)} <= set(acc.Tags()["images"])
    content = acc.PluginTagToContent("hparams")
    start_info = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    assert start_info.session_start_info.hparams["loss.gamma"].number_value == 2
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert {"val/mean_top1", "best/val/mean_top1"} <= {m.name.tag for m in experiment.metric_infos}


def test_the_sweep_report_reaches_every_logger(sweep):
    import mlflow

    client = mlflow_client(sweep)
    (experiment,) = [e for e in client.search_experiments() if e.name != "Default"]
    assert experiment.name == str(sweep).replace("/", "_")  # named after the sweep, like the W&B group
    assert Path(experiment.artifact_location.removeprefix("file://")) == (sweep / "mlartifacts").resolve()
    mlflow.set_tracking_uri(f"sqlite:///{sweep / 'mlflow.db'}")
    try:
        frame = mlflow.search_runs(experiment_names=[experiment.name])
    finally:
        mlflow.set_tracking_uri(None)
    summary = frame[frame["tags.job_type"] == "sweep-summary"]
    assert len(frame) == 3 and len(summary) == 1
    assert summary["metrics.runs_done"].iloc[0] == 2
    files = {a.path for a in client.list_artifacts(summary["run_id"].iloc[0])}
    assert {"report.html", "report.md", "report.csv", "report_bars.png"} <= files
    acc = events(sweep / "sweep-summary")
    assert "sweep-summary/report_bars" in acc.Tags()["images"]
    assert acc.Scalars("sweep-summary/runs_done")[-1].value == 2
    assert list((sweep / "wandb").glob("offline-run-*"))  # and W&B's sweep-summary run, as before


def test_a_killed_and_resumed_run_continues_its_mlflow_run_and_tensorboard_folder(demo_root, tmp_path):
    """Killed (SIGKILL) while epoch 2's checkpoint is written, after its metrics went to every logger: the
    resumed process starts again after epoch 1, and no logger shows a step or an epoch twice."""
    run_dir = tmp_path / "run"
    args = [*demo_overrides(demo_root), *TINY, *TINY_SEQUENCER, *QUIET, "phase.epochs=3", "logger=many",
            "logger.loggers=[tensorboard,mlflow,csv]", f"hydra.run.dir={run_dir}"]
    code, out = finish(start(args, kill_at="save:3"))  # epoch 1 writes best.pt and last.pt; epoch 2's first save
    assert code == -signal.SIGKILL, out[-2000:]
    assert pd.read_csv(run_dir / "metrics.csv")["epoch"].tolist() == [1, 2]  # epoch 2 logged, not checkpointed
    code, out = finish(start([f"resume={run_dir}"]))
    assert code == 0, out[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    acc = events(run_dir / "tensorboard")
    steps_per_epoch = acc.Scalars("val/mean_top1")[0].step
    assert [e.step for e in acc.Scalars("val/mean_top1")] == [steps_per_epoch * k for k in (1, 2, 3)]
    epoch_ends = [steps_per_epoch * k for k in (1, 2, 3)]
    assert steps_per_epoch == 4 and [e.step for e in acc.Scalars("train/loss")] == sorted([*epoch_ends, 5, 10])
    assert len(list((run_dir / "tensorboard").glob("events.out.tfevents.*"))) == 2  # one folder, two processes

    client = mlflow_client(run_dir)
    (run,) = training_runs(client)
    assert run.info.status == "FINISHED"
    for key in ("val/mean_top1", "train/loss"):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        assert len(steps) == len(set(steps)), (key, steps)
    history = client.get_metric_history(run.info.run_id, "val/mean_top1")
    assert [m.step for m in sorted(history, key=lambda m: m.step)] == [steps_per_epoch * k for k in (1, 2, 3)]

    csv = pd.read_csv(run_dir / "metrics.csv")
    assert csv["epoch"].tolist() == [1, 2, 3]
    for key in FINAL:
        assert csv[key].iloc[-1] == pytest.approx(metrics["final"][key], abs=1e-9)
        assert acc.Scalars(key)[-1].value == pytest.approx(metrics["final"][key], abs=1e-6)
        assert run.data.metrics[key] == pytest.approx(metrics["final"][key], abs=1e-9)


def test_an_interrupted_run_is_marked_killed_and_a_crashed_one_failed(demo_root, tiny_cfg, tmp_path, monkeypatch):
    """Ctrl-C (a real SIGINT to train.py) after epoch 1: the MLflow run ends KILLED, not RUNNING for ever, and
    TensorBoard's file holds epoch 1; resuming turns the same MLflow run FINISHED. An exception: FAILED."""
    run_dir = tmp_path / "run"
    hold_file = tmp_path / "held"
    proc = start([*demo_overrides(demo_root), *TINY, *TINY_SEQUENCER, *QUIET, "phase.epochs=3", "logger=many",
                  "logger.loggers=[tensorboard,mlflow,csv]", f"hydra.run.dir={run_dir}"],
                 env=hold_env("epoch_end:1", hold_file),
                 # Python turns SIGINT into KeyboardInterrupt unless it starts with SIGINT ignored (a background job)
                 preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    wait_until_held(proc, hold_file)  # epoch 1 logged and checkpointed; the process waits before epoch 2
    proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
    code, out = finish(proc)
    assert code != 0 and "epoch 1/3" in out, out[-3000:]
    (run,) = training_runs(mlflow_client(run_dir))
    assert run.info.status == "KILLED"
    assert [e.step for e in events(run_dir / "tensorboard").Scalars("val/mean_top1")] == [4]
    code, out = finish(start([f"resume={run_dir}"]))
    assert code == 0, out[-3000:]
    (run,) = training_runs(mlflow_client(run_dir))
    assert run.info.status == "FINISHED"

    from deepart.training import trainer as trainer_module

    def broken(self, *a, **kw):
        raise RuntimeError("loss is nan")

    monkeypatch.setattr(trainer_module.Trainer, "_save", broken)
    crashed = tmp_path / "crashed"
    with pytest.raises(RuntimeError, match="loss is nan"):
        trainer_module.train(tiny_cfg("logger=many", "logger.loggers=[mlflow,wandb,tensorboard]", "phase.epochs=2"),
                             run_dir=crashed)  # every logger's abort runs; the error reaches the caller unchanged
    (run,) = training_runs(mlflow_client(crashed))
    assert run.info.status == "FAILED"
    assert [e.step for e in events(crashed / "tensorboard").Scalars("val/mean_top1")] == [4]


def test_a_pruned_search_trial_ends_its_records_finished_not_failed(tiny_cfg, tmp_path, monkeypatch):
    """A trial its pruner stops after epoch 1 ended as it should: its MLflow run is FINISHED (not FAILED), with the
    epoch it was pruned at and its best metrics; the pruned exception still reaches the sweep."""
    from deepart.training import pruning
    from deepart.training import trainer as trainer_module

    def prune_after_the_first_epoch(cfg, phases, index, state):
        raise pruning.TrialPruned(state.epoch, float(state.final["val/mean_top1"]),
                                  {"final": state.final, "best": state.best, "best_epoch": state.best_epoch,
                                   "epochs": state.epoch})

    monkeypatch.setattr(pruning, "after_epoch", prune_after_the_first_epoch)
    run_dir = tmp_path / "pruned"
    with pytest.raises(pruning.TrialPruned):
        trainer_module.train(tiny_cfg("logger=many", "logger.loggers=[mlflow,tensorboard]", "phase.epochs=2"),
                             run_dir=run_dir)
    (run,) = training_runs(mlflow_client(run_dir))
    assert run.info.status == "FINISHED"
    assert run.data.metrics["pruned_epoch"] == 1 and "best/val/mean_top1" in run.data.metrics


def test_an_unknown_logger_name_is_one_line(demo_root, tmp_path):
    res = run_script("train.py", *demo_overrides(demo_root), *TINY, *TINY_SEQUENCER, "logger=many",
                     "logger.loggers=[tensorboard,mlfow]", f"hydra.run.dir={tmp_path}")
    errors = [line for line in (res.stdout + res.stderr).splitlines() if "ERROR" in line or "Error" in line]
    assert res.returncode == 2 and len(errors) == 1, res.stdout[-2000:] + res.stderr[-2000:]
    assert "logger.loggers=['tensorboard', 'mlfow'] is not allowed" in errors[0]
    assert "tensorboard | mlflow | csv | wandb" in errors[0] and "Traceback" not in res.stderr


@pytest.mark.parametrize("case", ["unwritable log dir", "unreachable server", "no mlflow", "no tensorboard"])
def test_a_logger_that_cannot_start_stops_the_run_before_training(tiny_cfg, tmp_path, monkeypatch, case):
    """What the user asked for cannot work: the run stops at start-up with the error naming the key and the fix
    (train.py prints it as one line, as for the unknown name above), before any epoch."""
    from deepart.core.errors import ConfigError
    from deepart.training.trainer import train

    not_a_folder = tmp_path / "a-file"
    not_a_folder.write_text("")
    overrides, missing, expected = {
        "unwritable log dir": (["logger=tensorboard", f"logger.log_dir={not_a_folder}/tb"], None,
                               ["logger.log_dir=", "cannot write TensorBoard events", "fix logger.log_dir"]),
        "unreachable server": (["logger=many", "logger.loggers=[csv,mlflow]",
                                f"logger.mlflow.tracking_uri=http://127.0.0.1:{free_port()}"], None,
                               ["logger.mlflow.tracking_uri=http://127.0.0.1", "cannot open the MLflow store",
                                "fix logger.mlflow.tracking_uri"]),
        "no mlflow": (["logger=mlflow"], "mlflow", ["logger: MLflow logging needs the mlflow package",
                                                    'pip install -e ".[tracking]"', "logger=none"]),
        "no tensorboard": (["logger=many", "logger.loggers=[tensorboard]"], "torch.utils.tensorboard",
                           ["logger.tensorboard: TensorBoard logging needs", 'pip install -e ".[tracking]"']),
    }[case]
    if missing:
        monkeypatch.setitem(sys.modules, missing, None)  # `import <missing>` raises ImportError, as if not installed
    with pytest.raises(ConfigError) as stopped:
        train(tiny_cfg(*overrides), run_dir=tmp_path / "run")
    assert all(part in str(stopped.value) for part in expected), str(stopped.value)
    assert len(str(stopped.value).splitlines()) == 1 and not (tmp_path / "run" / "checkpoints").exists()


def test_a_logger_failing_mid_run_warns_once_and_the_run_finishes(tiny_cfg, tmp_path, monkeypatch, caplog):
    """The MLflow store starts refusing writes after the first epoch: one warning, the other loggers and the
    run go on."""
    from mlflow import MlflowClient

    from deepart.training.trainer import train

    real, calls = MlflowClient.log_batch, []

    def failing(self, run_id, metrics=(), params=(), tags=()):
        calls.append(1)
        if metrics and len(calls) > 2:
            raise OSError("database is locked")
        return real(self, run_id, metrics=metrics, params=params, tags=tags)

    monkeypatch.setattr(MlflowClient, "log_batch", failing)
    cfg = tiny_cfg("logger=many", "logger.loggers=[mlflow,csv]", "phase.epochs=2", "logger.num_attention_images=2")
    with caplog.at_level(logging.WARNING):
        summary = train(cfg, run_dir=tmp_path)
    assert summary["epochs"] == 2 and (tmp_path / "metrics.json").is_file()
    warnings = [r.getMessage() for r in caplog.records if "MLflow" in r.getMessage()]
    assert len(warnings) == 1 and "database is locked" in warnings[0] and "training continues" in warnings[0]
    assert pd.read_csv(tmp_path / "metrics.csv")["epoch"].tolist() == [1, 2]


def wait_until_up(url: str, server: subprocess.Popen, seconds: float) -> None:
    import urllib.request

    deadline = time.time() + seconds
    while time.time() < deadline and server.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(2)
    pytest.fail(f"mlflow ui did not answer {url} within {seconds:.0f} s (exit code {server.poll()})")


@pytest.mark.slow
def test_mlflow_ui_lists_the_sweeps_runs_with_their_metrics(sweep, tmp_path):
    """A real `mlflow ui` on the sweep's store, opened in headless Chromium: the experiment lists the sweep's runs
    (and the sweep-summary run), and each run's page shows its val/mean_top1. DEEPART_MLFLOW_SWEEP=<sweep dir>
    opens another sweep; DEEPART_MLFLOW_SCREENSHOT=docs/img/mlflow.png keeps docs/tracking.md's picture."""
    from tests.test_app_browser import CHROMIUM, FLAGS

    if not CHROMIUM.is_file():
        pytest.skip("needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    folder = Path(os.environ.get("DEEPART_MLFLOW_SWEEP") or sweep)
    client = mlflow_client(folder)
    (experiment,) = [e for e in client.search_experiments() if e.name != "Default"]
    runs = training_runs(client)
    port = free_port()
    with (tmp_path / "mlflow-ui.log").open("w") as out:
        server = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri",
                                   f"sqlite:///{folder / 'mlflow.db'}", "--host", "127.0.0.1", "--port", str(port),
                                   "--workers", "1"], stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_up(f"{base}/health", server, 300)
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS, headless=True)
            page = browser.new_page(viewport={"width": 1500, "height": 900})
            page.goto(f"{base}/#/experiments/{experiment.experiment_id}/runs", timeout=300_000)
            page.get_by_text("sweep-summary", exact=True).first.wait_for(timeout=300_000)
            for run in runs:
                assert page.get_by_text(run.info.run_name, exact=True).count() == 1, run.info.run_name
            page.screenshot(path=os.environ.get("DEEPART_MLFLOW_SCREENSHOT") or str(tmp_path / "mlflow.png"))
            for run in runs:   # each run's page lists its metrics with their values
                page.goto(f"{base}/#/experiments/{experiment.experiment_id}/runs/{run.info.run_id}")
                page.get_by_text("val/mean_top1", exact=True).first.wait_for(timeout=300_000)
                shown = page.inner_text("body")
                assert f"val/mean_top1\n{run.data.metrics['val/mean_top1']}" in shown, shown[:2000]
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=60)
