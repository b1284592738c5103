"""W&B: a real offline run (no network) receives the documented metrics, attention images, the learned
task weights and the confusion matrices, named and grouped as given."""
from __future__ import annotations

import pytest

from deepart.training.trainer import RunInfo, train


@pytest.fixture
def recorded(tiny_cfg, tmp_path, monkeypatch):
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    calls: dict = {"init": None, "keys": set()}
    real_init = wandb.init

    def init(**kwargs):
        calls["init"] = kwargs
        run = real_init(**kwargs)
        real_log = run.log

        def log(data, *args, **kw):
            calls["keys"].update(data)
            return real_log(data, *args, **kw)

        monkeypatch.setattr(run, "log", log)
        return run

    monkeypatch.setattr(wandb, "init", init)
    cfg = tiny_cfg("logger=wandb", "logger.num_attention_images=2", "trainer.log_every_n_steps=1")
    summary = train(cfg, run_dir=tmp_path, info=RunInfo(name="loss.gamma=2", group="multirun_sweep"))
    return calls, summary, tmp_path


def test_offline_run_gets_config_name_group_and_metrics(recorded):
    calls, summary, run_dir = recorded
    init = calls["init"]
    assert init["mode"] == "offline" and init["name"] == "loss.gamma=2" and init["group"] == "multirun_sweep"
    assert init["config"]["loss"]["gamma"] == 2.0 and init["config"]["data"]["tasks"] == ["style", "genre", "artist"]
    keys = calls["keys"]
    for task in ("style", "genre", "artist"):
        assert {f"train/{task}/top1", f"val/{task}/top1", f"val/{task}/top5", f"loss_weight/{task}",
                f"val/{task}/confusion"} <= keys, sorted(keys)
    assert {"train/loss", "val/mean_top1", "lr", "val/attention"} <= keys, sorted(keys)
    assert list((run_dir / "wandb").glob("offline-run-*")), "no offline W&B run written"
    assert summary["epochs"] == 1


@pytest.mark.parametrize("fails_at", ["init", "image", "finish"])
def test_wandb_failing_never_stops_training(tiny_cfg, tmp_path, monkeypatch, caplog, fails_at):
    """The W&B client breaks at start, while logging an image, or at finish: the run completes with its
    checkpoints and metrics.json, and says so in a warning."""
    import json
    import logging

    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    real_init = wandb.init

    def init(**kwargs):
        if fails_at == "init":
            raise RuntimeError("network is unreachable")
        run = real_init(**kwargs)
        real_log, real_finish = run.log, run.finish

        def log(data, *args, **kw):
            if fails_at == "image" and "val/attention" in data:
                raise OSError("media upload failed")
            return real_log(data, *args, **kw)

        def finish(*args, **kw):
            real_finish(*args, **kw)
            if fails_at == "finish":
                raise RuntimeError("sync failed at finish")

        monkeypatch.setattr(run, "log", log)
        monkeypatch.setattr(run, "finish", finish)
        return run

    monkeypatch.setattr(wandb, "init", init)
    with caplog.at_level(logging.WARNING):
        summary = train(tiny_cfg("logger=wandb", "logger.num_attention_images=2", "phase.epochs=2"), run_dir=tmp_path)
    assert summary["epochs"] == 2
    assert (tmp_path / "checkpoints" / "best.pt").is_file() and (tmp_path / "checkpoints" / "last.pt").is_file()
    assert json.loads((tmp_path / "metrics.json").read_text())["epochs"] == 2
    what = {"init": "W&B init failed", "image": "W&B image logging failed", "finish": "W&B finish failed"}[fails_at]
    assert any(what in r.getMessage() and "training continues" in r.getMessage() for r in caplog.records)
