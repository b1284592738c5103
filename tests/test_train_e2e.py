"""End to end on the demo data: train.py, eval.py, a multirun with its summary, resume, bad input."""
import json
import sys
import types

import pandas as pd
import pytest
import torch

from deepart.training import trainer as trainer_module
from deepart.training.trainer import train
from tests.conftest import TINY, TINY_SEQUENCER, demo_overrides, run_script

pytestmark = pytest.mark.slow  # end-to-end: real commands and trainings (python -m pytest -m "not slow" skips them)

KEYS = ["val/style/top1", "val/style/top5", "val/genre/top1", "val/genre/top5", "val/artist/top1",
        "val/artist/top5", "val/mean_top1"]


@pytest.fixture(scope="module")
def trained_run(demo_root, tmp_path_factory):
    """train.py for one epoch on the demo data, as a user runs it."""
    run_dir = tmp_path_factory.mktemp("run")
    res = run_script("train.py", *demo_overrides(demo_root), *TINY, *TINY_SEQUENCER, f"hydra.run.dir={run_dir}")
    assert res.returncode == 0, res.stderr[-3000:]
    return run_dir, res


def test_train_writes_checkpoints_metrics_and_prints_a_table(trained_run):
    run_dir, res = trained_run
    assert (run_dir / "checkpoints" / "last.pt").is_file() and (run_dir / "checkpoints" / "best.pt").is_file()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for section in ("final", "best"):
        assert all(k in metrics[section] for k in KEYS)
    assert metrics["epochs"] == 1 and metrics["best_epoch"] == 1
    log = (run_dir / "train.log").read_text()
    assert "epoch 1/1" in log and "x chance" in log and "mean top1" in log
    raw = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)
    assert set(raw["tasks"]) == {"style", "genre", "artist"}
    assert raw["config"]["loss"]["_target_"] == "deepart.objectives.losses.FocalLoss"


def test_eval_reproduces_the_training_numbers(trained_run):
    run_dir, _ = trained_run
    res = run_script("eval.py", f"ckpt={run_dir}/checkpoints/best.pt", "num_workers=0")
    assert res.returncode == 0, res.stderr[-3000:]
    trained = json.loads((run_dir / "metrics.json").read_text())["best"]
    evaluated = json.loads((run_dir / "eval" / "metrics.json").read_text())["metrics"]
    for key, value in trained.items():
        assert evaluated[key] == pytest.approx(value, abs=1e-6), key
    for task in ("style", "genre", "artist"):
        assert (run_dir / "eval" / f"confusion_{task}.png").stat().st_size > 1000
        assert f"val/{task}/macro_f1" in evaluated and f"val/{task}/balanced_acc" in evaluated
    per_class = pd.read_csv(run_dir / "eval" / "per_class.csv")
    assert set(per_class["task"]) == {"style", "genre", "artist"}
    assert {"precision", "recall", "support"} <= set(per_class.columns)
    assert "per-class precision / recall" in res.stdout and "x chance" in res.stdout


def test_multirun_writes_a_summary(demo_root, tmp_path):
    sweep = tmp_path / "sweep"
    res = run_script("train.py", "-m", *demo_overrides(demo_root), *TINY, *TINY_SEQUENCER, "loss.gamma=1,3",
                     f"hydra.sweep.dir={sweep}")
    assert res.returncode == 0, res.stderr[-3000:]
    assert (sweep / "0" / "metrics.json").is_file() and (sweep / "1" / "metrics.json").is_file()
    summary = pd.read_csv(sweep / "summary.csv")
    assert summary["loss.gamma"].tolist() == [1, 3]
    assert summary["status"].tolist() == ["done", "done"]
    for run in (0, 1):
        final = json.loads((sweep / str(run) / "metrics.json").read_text())["final"]
        assert summary.loc[run, "val/mean_top1"] == pytest.approx(final["val/mean_top1"])
    assert "Sweep summary" in res.stdout and "loss.gamma" in res.stdout


def test_resume_equals_an_uninterrupted_run(tiny_cfg, tmp_path, monkeypatch):
    straight = train(tiny_cfg("phase.epochs=2", "sampler=weighted"), run_dir=tmp_path / "straight")

    real_save = trainer_module.Trainer._save

    def save_then_die(self, *args, **kwargs):
        real_save(self, *args, **kwargs)
        raise KeyboardInterrupt  # killed right after the first epoch's checkpoint

    monkeypatch.setattr(trainer_module.Trainer, "_save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_cfg("phase.epochs=2", "sampler=weighted"), run_dir=tmp_path / "killed")
    monkeypatch.setattr(trainer_module.Trainer, "_save", real_save)
    assert torch.load(tmp_path / "killed/checkpoints/last.pt", weights_only=True)["progress"]["epoch"] == 1

    resumed = train(tiny_cfg(f"resume={tmp_path / 'killed'}"))
    assert resumed["epochs"] == 2
    for key in KEYS + ["val/loss"]:
        assert resumed["final"][key] == pytest.approx(straight["final"][key], abs=1e-6), key
    assert json.loads((tmp_path / "killed/metrics.json").read_text())["epochs"] == 2


def test_phase_all_chains_from_each_best_checkpoint(tiny_cfg, tmp_path):
    summary = train(tiny_cfg("phase=all", "phase.epochs=1", "phase.batch_size=16"), run_dir=tmp_path)
    assert list(summary["phases"]) == ["1", "2", "3"]
    for name in ("1", "2", "3"):
        assert (tmp_path / "checkpoints" / f"phase-{name}" / "best.pt").is_file()
    assert (tmp_path / "checkpoints" / "best.pt").is_file()
    p3 = torch.load(tmp_path / "checkpoints" / "best.pt", weights_only=True)
    assert p3["phase"] == {"name": "3", "index": 2}


def test_seed_makes_cpu_runs_repeatable(tiny_cfg, tmp_path):
    a = train(tiny_cfg("seed=7"), run_dir=tmp_path / "a")
    b = train(tiny_cfg("seed=7"), run_dir=tmp_path / "b")
    assert a["final"] == b["final"]


def test_threads_sets_pytorch_cpu_threads_and_the_log_says_so(tiny_cfg, tmp_path, caplog):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with caplog.at_level("INFO", logger="deepart"):
            train(tiny_cfg("trainer.threads=1"), run_dir=tmp_path)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert "steps/epoch on cpu, 1 thread" in caplog.text


def test_logger_none_makes_no_wandb_call(tiny_cfg, tmp_path, monkeypatch):
    class Trap(types.ModuleType):
        def __getattr__(self, name):
            raise AssertionError(f"wandb.{name} used with logger=none")

    monkeypatch.setitem(sys.modules, "wandb", Trap("wandb"))
    summary = train(tiny_cfg("logger=none"), run_dir=tmp_path)
    assert summary["epochs"] == 1


def test_wandb_failure_never_stops_training(tiny_cfg, tmp_path, monkeypatch):
    import wandb

    def broken_init(*args, **kwargs):
        raise RuntimeError("network is unreachable")

    monkeypatch.setattr(wandb, "init", broken_init)
    summary = train(tiny_cfg("logger=wandb"), run_dir=tmp_path)
    assert summary["epochs"] == 1 and (tmp_path / "checkpoints" / "best.pt").is_file()


@pytest.mark.parametrize("args,message", [
    (["ckpt=/nonexistent/best.pt"], "/nonexistent/best.pt: not found; pass a checkpoint"),
    (["ckpt={corrupt}"], "is not a PyTorch checkpoint archive"),
    (["ckpt={corrupt}", "threads=0"], "threads=0 is not allowed: expected an integer >= 1 or null"),
])
def test_eval_bad_checkpoint_is_a_clear_error(tmp_path, args, message):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00" * 100)
    res = run_script("eval.py", *[a.format(corrupt=corrupt) for a in args])
    assert res.returncode == 2
    assert message in res.stderr + res.stdout
    assert "Traceback" not in res.stderr + res.stdout


def test_unknown_backbone_is_a_clear_error(demo_root, tmp_path):
    res = run_script("train.py", *demo_overrides(demo_root), *TINY, "backbone.name=efficientnet_b99",
                     f"hydra.run.dir={tmp_path}")
    assert res.returncode == 2
    assert "backbone.name='efficientnet_b99' is not a timm model" in res.stderr + res.stdout
    assert "Traceback" not in res.stderr + res.stdout
