"""The settings of the GPU path (bf16 autocast, channels_last, fused AdamW, torch.compile), run on the CPU in
every CI run, and the tests that need CUDA (marked `gpu`, skipped without it: `pytest -m gpu` on a GPU)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from deepart.core.config import build
from deepart.core.runtime import Runtime
from deepart.data.dataset import SkipCounter
from deepart.data.loaders import eval_loader, load_table
from deepart.models import build_model
from deepart.training.engine import train_step
from deepart.training.evaluation import evaluate_loader
from deepart.training.optim import build_optimizer
from deepart.vis.saliency import grad_cam, guided_backprop
from tests.conftest import REPO, TINY, TINY_SEQUENCER, compose_config, demo_overrides, run_script

pytestmark = pytest.mark.slow  # end-to-end: real commands and trainings (python -m pytest -m "not slow" skips them)

CPU_FP32 = Runtime.resolve({"device": "cpu", "precision": "fp32", "channels_last": False})
CPU_BF16 = Runtime.resolve({"device": "cpu", "precision": "bf16", "channels_last": False})
#: bf16 keeps 8 bits of mantissa: losses of the same batch agree to about 1 %
BF16_RTOL = 2e-2
GPU_SETTINGS = ["trainer.precision=bf16", "trainer.channels_last=true", "optimizer.fused=true"]


def tiny(demo_root, *extra: str):
    cfg = compose_config([*demo_overrides(demo_root), *TINY, *TINY_SEQUENCER, *extra])
    table = load_table(cfg.data)
    torch.manual_seed(0)
    model = build_model(cfg, table.tasks)
    return cfg, table, model, build(cfg.loss, tasks=table.tasks)


def a_batch(table, n: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 64, 64), dtype=torch.uint8, generator=g)
    return images, torch.as_tensor(table.labels("train")[:n])


def test_bf16_and_fp32_losses_of_the_same_batch_agree(demo_root):
    _, table, model, loss_fn = tiny(demo_root)
    images, labels = a_batch(table)
    model.eval()  # no dropout: the same function in both precisions
    losses = {}
    for rt in (CPU_FP32, CPU_BF16):
        with torch.no_grad(), rt.autocast():
            objective, task_losses, _ = loss_fn(model(images)["logits"], labels)
        losses[rt.bf16] = (float(objective), task_losses.float())
    assert losses[True][0] == pytest.approx(losses[False][0], rel=BF16_RTOL)
    assert torch.allclose(losses[True][1], losses[False][1], rtol=BF16_RTOL)


def test_bf16_channels_last_fused_train_step_on_cpu(demo_root):
    cfg, table, model, loss_fn = tiny(demo_root, "optimizer.fused=true")
    rt = Runtime.resolve({"device": "cpu", "precision": "bf16", "channels_last": True})
    model = rt.prepare(model)
    opt = build_optimizer(cfg.optimizer, [model, loss_fn], 1e-3, rt.device)
    assert opt.defaults["fused"] is True
    images, labels = a_batch(table)
    before = [p.detach().clone() for p in model.parameters()]
    params = [p for g in opt.param_groups for p in g["params"]]
    out, objective, loss = train_step(model, loss_fn, rt.images({"image": images}), labels, opt, rt,
                                      grad_clip=1.0, params=params)
    assert out["logits"]["style"].dtype == torch.bfloat16 and torch.isfinite(objective) and loss > 0
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the weights stay fp32 (autocast)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_channels_last_and_fused_adamw_match_the_plain_step(demo_root):
    """Memory format and the fused optimizer kernel change how, not what, is computed."""
    results = []
    for extra, rt in (([], CPU_FP32), (["optimizer.fused=true"],
                                       Runtime.resolve({"device": "cpu", "precision": "fp32", "channels_last": True}))):
        cfg, table, model, loss_fn = tiny(demo_root, *extra)
        model = rt.prepare(model).eval()
        opt = build_optimizer(cfg.optimizer, [model, loss_fn], 1e-3, rt.device)
        images, labels = a_batch(table)
        params = [p for g in opt.param_groups for p in g["params"]]
        _, objective, _ = train_step(model, loss_fn, rt.images({"image": images}), labels, opt, rt, grad_clip=1.0,
                                     params=params)
        results.append((float(objective), [p.detach().clone() for p in model.parameters()]))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-5)
    for a, b in zip(results[0][1], results[1][1]):
        assert torch.allclose(a, b, atol=1e-5), "weights after one step"


def test_eval_metrics_in_bf16_equal_fp32_within_tolerance(demo_root, tmp_path):
    from deepart.training.trainer import train

    cfg = compose_config([*demo_overrides(demo_root), *TINY, *TINY_SEQUENCER, "phase.epochs=2"])
    train(cfg, run_dir=tmp_path)
    from deepart.inference.loading import load_model

    model, ckpt = load_model(tmp_path / "checkpoints" / "best.pt")
    table = load_table(cfg.data)
    loss_fn = build(cfg.loss, tasks=ckpt.tasks)
    loss_fn.load_state_dict(ckpt.loss)
    loader = eval_loader(table, cfg.data, 32, "cpu", workers=0)
    fp32, _ = evaluate_loader(model, loss_fn, loader, CPU_FP32, ckpt.tasks, skips=SkipCounter())
    bf16, _ = evaluate_loader(model, loss_fn, loader, CPU_BF16, ckpt.tasks, skips=SkipCounter())
    assert bf16["val/loss"] == pytest.approx(fp32["val/loss"], rel=BF16_RTOL)
    for task in ckpt.tasks:  # at most one image per task changes its top-1 class
        one_image = 1 / fp32[f"val/{task}/count"]
        assert abs(bf16[f"val/{task}/top1"] - fp32[f"val/{task}/top1"]) <= one_image + 1e-9, task


@pytest.fixture(scope="module")
def bf16_run(demo_root, tmp_path_factory):
    """train.py on the CPU with the GPU path's settings: bf16 autocast, channels_last, fused AdamW."""
    run_dir = tmp_path_factory.mktemp("bf16_run")
    res = run_script("train.py", *demo_overrides(demo_root), *TINY, *TINY_SEQUENCER, *GPU_SETTINGS,
                     f"hydra.run.dir={run_dir}")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "on cpu (bf16)" in res.stdout + res.stderr
    return run_dir


def test_bf16_run_checkpoint_evaluates_in_bf16_and_in_fp32(bf16_run):
    trained = json.loads((bf16_run / "metrics.json").read_text())["best"]
    for precision, tolerance in (("null", 1e-6), ("fp32", None)):
        res = run_script("eval.py", f"ckpt={bf16_run}/checkpoints/best.pt", "num_workers=0", f"precision={precision}",
                         f"out_dir={bf16_run}/eval-{precision}", "gallery=0")
        assert res.returncode == 0, res.stderr[-3000:]
        metrics = json.loads((bf16_run / f"eval-{precision}" / "metrics.json").read_text())["metrics"]
        if tolerance:  # the run's own precision reproduces its numbers
            assert metrics["val/mean_top1"] == pytest.approx(trained["val/mean_top1"], abs=tolerance)
            assert metrics["val/loss"] == pytest.approx(trained["val/loss"], abs=tolerance)
        else:
            assert metrics["val/loss"] == pytest.approx(trained["val/loss"], rel=BF16_RTOL)


def test_saliency_on_a_bf16_model(bf16_run):
    from deepart.inference.loading import Predictor

    predictor = Predictor.from_checkpoint(bf16_run / "checkpoints" / "best.pt", device="cpu")
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    reference = grad_cam(predictor.model, images, "style")
    model = predictor.model.to(torch.bfloat16)  # a model cast to bf16 as a whole
    cam = grad_cam(model, images, "style")
    grads = guided_backprop(model, images, "genre")
    assert cam.shape == (2, 64, 64) and np.isfinite(cam).all() and np.isfinite(grads).all()
    assert np.abs(cam - reference).mean() < 0.1  # bf16 weights: nearly the fp32 map
    assert model.mean.dtype == torch.bfloat16 and next(model.parameters()).dtype == torch.bfloat16  # cast back


@pytest.mark.slow
def test_compiled_model_trains_through_train_py(demo_root, tmp_path):
    """trainer.compile=true (TorchInductor's CPU code generation) on a tiny model, with the GPU path's settings."""
    res = run_script("train.py", *demo_overrides(demo_root), *TINY, "sequencer=pool", *GPU_SETTINGS,
                     "trainer.compile=true", f"hydra.run.dir={tmp_path}", timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["epochs"] == 1 and np.isfinite(metrics["final"]["val/loss"])


# ------------------------------------------------------------------------------------------- needs CUDA
@pytest.mark.gpu
def test_gpu_bf16_train_step_and_eval(demo_root):
    cfg, table, model, loss_fn = tiny(demo_root)
    rt = Runtime.from_config({"device": "cuda"})
    assert rt.bf16 and rt.channels_last
    model, loss_fn = rt.prepare(model), loss_fn.to(rt.device)
    opt = build_optimizer(cfg.optimizer, [model, loss_fn], 1e-3, rt.device)
    assert opt.defaults["fused"] is True
    images, labels = a_batch(table)
    params = [p for g in opt.param_groups for p in g["params"]]
    _, objective, _ = train_step(model, loss_fn, rt.images({"image": images}), labels.to(rt.device), opt, rt,
                                 grad_clip=1.0, params=params)
    assert torch.isfinite(objective)
    loader = eval_loader(table, cfg.data, 32, str(rt.device), workers=2)
    bf16, _ = evaluate_loader(model, loss_fn, loader, rt, table.tasks, skips=SkipCounter())
    fp32, _ = evaluate_loader(model, loss_fn, loader, Runtime.from_config({"device": "cuda", "precision": "fp32"}),
                              table.tasks, skips=SkipCounter())
    assert bf16["val/loss"] == pytest.approx(fp32["val/loss"], rel=BF16_RTOL)


@pytest.mark.gpu
def test_gpu_saliency_through_the_bilstm(demo_root):
    """cuDNN cannot backpropagate an RNN in eval mode: saliency switches it off for the pass."""
    _, _, model, _ = tiny(demo_root)
    model = model.cuda()
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8, device="cuda")
    cam = grad_cam(model, images, "style")
    grads = guided_backprop(model, images, "artist")
    assert cam.shape == (2, 64, 64) and np.isfinite(cam).all() and np.isfinite(grads).all()
    assert torch.backends.cudnn.enabled  # switched back on


@pytest.mark.gpu
def test_gpu_ddp_with_nccl_in_one_process(demo_root, tmp_path):
    code = (
        "import torch, torch.distributed as dist\n"
        "from deepart import distributed\n"
        "d = distributed.setup(); assert d.world_size == 1\n"
        "dist.init_process_group('nccl')\n"
        "m = distributed.wrap(torch.nn.Linear(4, 2).cuda(), torch.device('cuda'))\n"
        "m(torch.ones(3, 4, device='cuda')).sum().backward()\n"
        "t = torch.ones(1, device='cuda'); dist.all_reduce(t); assert t.item() == 1\n"
        "print('nccl ok', type(m).__name__)\n")
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29533", "RANK": "0", "WORLD_SIZE": "1",
           "LOCAL_RANK": "0"}
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "nccl ok DistributedDataParallel" in res.stdout


@pytest.mark.gpu
def test_gpu_throughput_quick_mode(tmp_path):
    out = tmp_path / "bench.json"
    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / "throughput.py"), "--tiny", "--device", "cuda",
                          "--json", str(out)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["gpu"] and report["results"]["train model-only"]["images_per_s"] > 0
