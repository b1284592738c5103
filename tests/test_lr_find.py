"""LR range test: plot + JSON + suggestion, state restored, and apply=true trains with the suggestion."""
import json

import numpy as np
import pytest
import torch

from deepart.training.lr_find import suggest_lr
from deepart.training.trainer import train


def test_suggestion_is_the_steepest_descent_before_the_minimum():
    lrs = np.logspace(-6, 0, 7)
    losses = np.array([2.0, 1.98, 1.9, 1.2, 1.0, 1.1, 5.0])
    assert suggest_lr(lrs, losses) == (pytest.approx(1e-3), "steepest descent")
    assert suggest_lr(lrs[:3], np.array([1.0, 2.0, 3.0]))[0] == pytest.approx(1e-7)


def test_lr_find_writes_plot_and_json_and_trains_nothing(tiny_cfg, tmp_path):
    result = train(tiny_cfg("lr_find=true", "lr_finder.num_steps=12", "lr_finder.max_lr=10"), run_dir=tmp_path)
    saved = json.loads((tmp_path / "lr_find.json").read_text())
    assert saved["suggestion"] == result["lr_find"]["suggestion"]
    assert 0 < saved["suggestion"] <= 10 and len(saved["lrs"]) == len(saved["losses"]) >= 5
    assert np.all(np.diff(saved["lrs"]) > 0)
    assert (tmp_path / "lr_find.png").stat().st_size > 5000
    assert not (tmp_path / "checkpoints").exists()


def test_apply_trains_with_the_suggested_lr_from_the_untouched_model(tiny_cfg, tmp_path):
    summary = train(tiny_cfg("lr_find=true", "lr_finder.num_steps=8", "lr_finder.apply=true", "seed=3"),
                    run_dir=tmp_path / "a")
    suggestion = json.loads((tmp_path / "a" / "lr_find.json").read_text())["suggestion"]
    ckpt = torch.load(tmp_path / "a" / "checkpoints" / "best.pt", weights_only=True)
    assert ckpt["config"]["phase"]["lr"] == pytest.approx(suggestion) and ckpt["config"]["lr_find"] is False
    plain = train(tiny_cfg(f"phase.lr={suggestion}", "seed=3"), run_dir=tmp_path / "b")
    assert summary["final"] == pytest.approx(plain["final"])  # the range test left no trace
