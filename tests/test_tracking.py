"""W&B: a real offline run (no network) receives the documented metrics, attention images, the learned
task weights and the confusion matrices, named and grouped as given."""
from __future__ import annotations

import pytest

from deepart.training.run import RunInfo, train


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
