"""Ensembles of runs (eval.py ckpt=<sweep dir> / [<run>,<run>], predict ckpt=<sweep dir>) and test-time
augmentation (eval.py tta=)."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from deepart.core.checkpoint import Checkpoint
from deepart.core.errors import CheckpointError
from deepart.core.rundir import best_checkpoint
from deepart.data.loaders import eval_loader, load_table
from deepart.inference.ensemble import Ensemble, load_ensemble, member_paths
from deepart.inference.loading import load_model
from deepart.models.deepartnet import build_model
from deepart.training.evaluation import tta_views
from tests.conftest import TINY, TINY_SEQUENCER, compose_config, demo_overrides, run_script, the_sweep_dir

TASKS = {"style": ["a", "b", "c"], "genre": ["x", "y"]}


def tiny_model(seed: int, *extra: str, tasks=TASKS):
    torch.manual_seed(seed)
    sequencer = [] if any(e.startswith("sequencer=") for e in extra) else TINY_SEQUENCER
    return build_model(compose_config([*TINY, *sequencer, *extra]), tasks).eval()


def test_an_ensemble_is_the_mean_of_its_members_probabilities():
    members = [tiny_model(0), tiny_model(1), tiny_model(2, "sequencer=pool", "texture=meanstd")]
    ensemble = Ensemble(members, ["a", "b", "c"]).eval()
    images = torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8)
    with torch.no_grad():
        out = ensemble(images)
        for task in TASKS:
            mean = torch.stack([m(images)["logits"][task].softmax(-1) for m in members]).mean(0)
            assert torch.allclose(out["logits"][task].softmax(-1), mean, atol=1e-6)
            assert torch.allclose(out["logits"][task].exp(), mean, atol=1e-6)


def test_members_that_differ_are_refused_with_their_name():
    base = tiny_model(0)
    with pytest.raises(CheckpointError, match=r"run-b .*tasks"):
        Ensemble([base, tiny_model(1, tasks={"style": TASKS["style"]})], ["run-a", "run-b"])
    with pytest.raises(CheckpointError, match=r"run-b has other genre classes"):
        Ensemble([base, tiny_model(1, tasks={"style": TASKS["style"], "genre": ["y", "x"]})], ["run-a", "run-b"])
    with pytest.raises(CheckpointError, match=r"run-b reads data.image_size=96"):
        Ensemble([base, tiny_model(1, "data.image_size=96")], ["run-a", "run-b"])


def test_tta_views():
    images = torch.randint(0, 256, (2, 3, 16, 20), dtype=torch.uint8)
    assert len(tta_views(images, "none")) == 1 and tta_views(images, "none")[0] is images
    flip = tta_views(images, "hflip")
    assert len(flip) == 2 and torch.equal(flip[1], images.flip(-1))
    crops = tta_views(images, "five_crop", crop=0.5)
    assert len(crops) == 6 and all(v.shape == images.shape for v in crops)
    x = images.float() / 255
    top_left = torch.nn.functional.interpolate(x[..., :8, :10], size=(16, 20), mode="bilinear", align_corners=False)
    assert torch.allclose(crops[1], top_left)
    centre = torch.nn.functional.interpolate(x[..., 4:12, 5:15], size=(16, 20), mode="bilinear", align_corners=False)
    assert torch.allclose(crops[5], centre)
    both = tta_views(images, "five_crop_hflip", crop=0.5)
    assert len(both) == 12 and torch.allclose(both[7], crops[1].flip(-1))
    with pytest.raises(ValueError, match="tta"):
        tta_views(images, "ten_crop")


# ------------------------------------------------------------------------------------------------ the commands
@pytest.fixture(scope="module")
def sweep(demo_root, tmp_path_factory):
    """Two tiny runs of one sweep, typed as a user would (Hydra's default sweep dir)."""
    cwd = tmp_path_factory.mktemp("ensemble")
    res = run_script("train.py", "-m", *demo_overrides(demo_root), *TINY, *TINY_SEQUENCER, "seed=1,2", cwd=cwd)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return the_sweep_dir(cwd)


@pytest.mark.slow
def test_eval_of_a_sweep_dir_prints_the_ensemble_beside_its_members(sweep, tmp_path):
    res = run_script("eval.py", f"ckpt={sweep}", "gallery=0", "wandb=false", cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "ensemble of 2 models" in res.stdout and "ensemble - members' mean" in res.stdout
    record = json.loads((sweep / "eval" / "metrics.json").read_text())
    assert set(record["members"]) == {"0", "1"} and len(record["ensemble"]) == 2
    from deepart.report.runs import run_dirs

    assert [p.name for p in run_dirs(sweep)] == ["0", "1"]  # the ensemble's eval/ is not a run of the sweep
    table = pd.read_csv(sweep / "eval" / "ensemble.csv")
    assert set(table["model"]) == {"0", "1", "ensemble"}
    for line in ("0 ", "1 ", "members mean", "ensemble "):
        assert any(row.startswith(line) for row in res.stdout.splitlines()), line

    # the ensemble's figures are those of the mean of the members' probabilities, computed here from the runs
    models = [load_model(p)[0] for p in member_paths(sweep)]
    cfg = Checkpoint.load(best_checkpoint(sweep / "0")).config
    from omegaconf import OmegaConf

    data_cfg = OmegaConf.create(cfg).data
    table_ = load_table(data_cfg)
    hits, count = {t: 0 for t in table_.tasks}, {t: 0 for t in table_.tasks}
    with torch.no_grad():
        for batch in eval_loader(table_, data_cfg, 64, "cpu", workers=0):
            for i, task in enumerate(table_.tasks):
                mean = torch.stack([m(batch["image"])["logits"][task].softmax(-1) for m in models]).mean(0)
                y = batch["labels"][:, i]
                known = y != -1
                hits[task] += int((mean.argmax(-1) == y)[known].sum())
                count[task] += int(known.sum())
    for task in table_.tasks:
        assert record["metrics"][f"val/{task}/top1"] == pytest.approx(hits[task] / count[task])
        # the paired comparison with the members: the difference of the ensemble's top-1 and the members' mean
        paired = record["ensemble_vs_members"][task]
        members_mean = sum(record["members"][n][f"val/{task}/top1"] for n in ("0", "1")) / 2
        assert paired["diff"] == pytest.approx(100 * (record["metrics"][f"val/{task}/top1"] - members_mean))
        assert paired["low"] <= paired["diff"] <= paired["high"] and 0 <= paired["p_mcnemar"] <= 1
        for name in ("0", "1"):  # each member's own figures beside it
            assert 0.0 <= record["members"][name][f"val/{task}/top1"] <= 1.0

    # the same ensemble as a list, with test-time augmentation on every member, into another folder
    out = tmp_path / "tta"
    res = run_script("eval.py", f"ckpt=[{sweep / '0'},{sweep / '1'}]", "tta=five_crop_hflip", "gallery=0",
                     "wandb=false", f"out_dir={out}", cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "test-time augmentation: five_crop_hflip" in res.stdout
    assert json.loads((out / "metrics.json").read_text())["tta"] == "five_crop_hflip"


@pytest.mark.slow
def test_a_sweep_dir_with_a_failed_and_an_unfinished_run_names_them(sweep, tmp_path):
    """A run without best.pt is left out and named; a member that did not finish enters and is named too."""
    import shutil

    from deepart.core.rundir import METRICS, write_failure

    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy, ignore=shutil.ignore_patterns("eval"))
    (copy / "1" / METRICS).unlink()  # killed after its best epoch: best.pt, no metrics.json
    lost = copy / "2"
    shutil.copytree(copy / "0" / ".hydra", lost / ".hydra")
    write_failure(lost, {"error": "RuntimeError", "message": "worker lost", "overrides": ["seed=3"]})
    res = run_script("eval.py", f"ckpt={copy}", "gallery=0", "wandb=false", cwd=tmp_path)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    assert "ensemble of 2 models" in out
    assert f"ensemble: {lost} left out, no checkpoints/best.pt (failed: RuntimeError: worker lost)" in out
    assert f"ensemble: {copy / '1'} is unfinished; it enters with its best.pt so far" in out
    assert set(json.loads((copy / "eval" / "metrics.json").read_text())["members"]) == {"0", "1"}


@pytest.mark.slow
def test_an_ensemble_with_a_member_of_another_image_size_is_refused(sweep, tmp_path):
    ckpt = Checkpoint.load(best_checkpoint(sweep / "1"))
    ckpt.config["data"]["image_size"] = 96
    other = tmp_path / "other-run" / "checkpoints" / "best.pt"
    other.parent.mkdir(parents=True)
    ckpt.save(other)
    res = run_script("eval.py", f"ckpt=[{sweep / '0'},{other.parent.parent}]", "gallery=0", "wandb=false",
                     cwd=tmp_path)
    assert res.returncode != 0
    assert "other-run reads data.image_size=96" in res.stdout + res.stderr
    assert "Traceback" not in res.stdout + res.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="nor a sweep dir"):
        load_ensemble(empty)


@pytest.mark.slow
def test_predict_takes_a_sweep_dir(sweep, demo_root, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "predict"
    res = subprocess.run([sys.executable, "-m", "deepart", "predict", f"ckpt={sweep}", f"images={demo_root}",
                          f"out_dir={out}", "print_limit=1"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=1200)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "mean of the 2 members' probabilities" in res.stdout
    records = json.loads((out / "predictions.json").read_text())["predictions"]
    models = [load_model(p)[0] for p in member_paths(sweep)]
    from PIL import Image

    from deepart.inference.loading import Predictor

    first = records[0]
    predictor = Predictor(models[0])
    batch = predictor.preprocess([Image.open(first["image"])])
    with torch.no_grad():
        for task, result in first["predictions"].items():
            mean = torch.stack([m(batch)["logits"][task].softmax(-1) for m in models]).mean(0)[0]
            assert result["confidence"] == pytest.approx(float(mean.max()), abs=1e-4)
