"""The inference CLI (python -m deepart predict) and eval's error gallery / W&B reporting."""
import json
import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from deepart.core.errors import ConfigError, DataError
from deepart.inference.evaluate import evaluate_checkpoint
from deepart.inference.predict import parse_args, predict
from deepart.tracking import WandbLogger
from deepart.training.trainer import train
from tests.conftest import REPO


@pytest.fixture(scope="module")
def trained(demo_root, tmp_path_factory):
    from tests.conftest import TINY, TINY_SEQUENCER, compose_config, demo_overrides

    run_dir = tmp_path_factory.mktemp("predict_run")
    train(compose_config([*demo_overrides(demo_root), *TINY, *TINY_SEQUENCER]), run_dir=run_dir)
    return run_dir / "checkpoints" / "best.pt"


@pytest.fixture
def folder(demo_root, tmp_path):
    """Three demo paintings, one corrupt .jpg and a text file."""
    images = sorted(demo_root.rglob("*.jpg"))[:3]
    target = tmp_path / "paintings"
    target.mkdir()
    for p in images:
        shutil.copy(p, target / p.name)
    (target / "broken.jpg").write_bytes(b"not a jpeg at all" * 20)
    (target / "notes.txt").write_text("not an image")
    return target


@pytest.mark.slow
def test_cli_on_a_folder_with_a_bad_file_reports_it_and_goes_on(trained, folder, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    res = subprocess.run([sys.executable, "-m", "deepart", "predict", f"ckpt={trained}", f"images={folder}",
                          "visualize=true", "top_k=3", "batch_size=2", "num_workers=0", f"out_dir={out}"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "broken.jpg" in res.stderr and "skipped unreadable image" in res.stderr
    assert "3 images predicted, 1 unreadable skipped" in res.stdout
    assert "top3" in res.stdout and "artist" in res.stdout  # the console table
    payload = json.loads((out / "predictions.json").read_text())
    assert len(payload["predictions"]) == 3 and payload["skipped"][0]["path"].endswith("broken.jpg")
    first = payload["predictions"][0]["predictions"]
    assert set(first) == {"style", "genre", "artist"} and len(first["style"]["top_k"]) == 3
    assert first["style"]["top_k"][0]["label"] == first["style"]["label"]
    table = pd.read_csv(out / "predictions.csv")
    assert len(table) == 3 and {"style", "style_confidence", "artist_top_k"} <= set(table.columns)
    pngs = sorted((out / "visualize").glob("*.png"))
    assert len(pngs) == 3 and all(p.stat().st_size > 5000 for p in pngs)


def test_single_file_and_glob(trained, folder, tmp_path):
    one = predict(parse_args([f"ckpt={trained}", f"images={next(folder.glob('[!b]*.jpg'))}",
                              f"out_dir={tmp_path / 'a'}", "format=csv", "num_workers=0"]))
    assert len(one["predictions"]) == 1 and not (tmp_path / "a" / "predictions.json").exists()
    many = predict(parse_args([f"ckpt={trained}", f"images={folder}/*.jpg", f"out_dir={tmp_path / 'b'}",
                               "num_workers=0"]))
    assert len(many["predictions"]) == 3 and len(many["skipped"]) == 1


@pytest.mark.parametrize("args,error,message", [
    (["ckpt=x.pt", "images=y", "topk=3"], ConfigError, "unknown option 'topk'"),
    (["images=y"], ConfigError, "ckpt=... is required"),
    (["ckpt=x.pt", "images=y", "format=xml"], ConfigError, "format='xml'"),
])
def test_bad_arguments_are_clear_errors(args, error, message):
    with pytest.raises(error, match=message):
        parse_args(args)


def test_no_images_is_a_clear_error(trained, tmp_path):
    with pytest.raises(DataError, match="no image files found"):
        predict(parse_args([f"ckpt={trained}", f"images={tmp_path}/*.jpg", f"out_dir={tmp_path}"]))


def _eval_cfg(ckpt, out_dir, **extra):
    base = OmegaConf.load(REPO / "conf" / "eval.yaml")
    base.pop("hydra")
    return OmegaConf.merge(base, {"ckpt": str(ckpt), "num_workers": 0, "out_dir": str(out_dir), **extra})


def test_eval_writes_a_gallery_of_confident_mistakes(trained, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(WandbLogger, "start", lambda self, **kw: calls.append("start"))
    evaluate_checkpoint(_eval_cfg(trained, tmp_path, gallery=4))
    for task in ("style", "genre", "artist"):
        assert (tmp_path / f"mistakes_{task}.png").stat().st_size > 5000
    assert calls == []  # the run used logger=none: eval makes no W&B run either


def test_eval_logs_the_gallery_to_the_runs_wandb_run(trained, tmp_path, monkeypatch):
    ckpt = torch.load(trained, weights_only=True)
    ckpt["config"]["logger"] = {"_target_": "deepart.tracking.WandbLogger", "mode": "offline"}
    ckpt["wandb_run_id"] = "abc123"
    wandb_ckpt = tmp_path / "run" / "checkpoints" / "best.pt"
    wandb_ckpt.parent.mkdir(parents=True)
    torch.save(ckpt, wandb_ckpt)
    seen = {}

    def fake_start(self, **kw):
        seen["run_id"] = kw["run_id"]
        self.run = object()

    monkeypatch.setattr(WandbLogger, "start", fake_start)
    monkeypatch.setattr(WandbLogger, "log_images", lambda self, key, images, captions, step: seen.setdefault(
        "images", []).append((key, images[0].shape)))
    monkeypatch.setattr(WandbLogger, "log_confusion", lambda self, task, cm, names, step: seen.setdefault(
        "confusion", []).append(task))
    monkeypatch.setattr(WandbLogger, "finish", lambda self, summary=None: seen.update(summary=summary))
    evaluate_checkpoint(_eval_cfg(wandb_ckpt, tmp_path / "eval", gallery=2))
    assert seen["run_id"] == "abc123"
    assert [k for k, _ in seen["images"]] == [f"eval/val/{t}/mistakes" for t in ("style", "genre", "artist")]
    assert all(len(shape) == 3 for _, shape in seen["images"])
    assert seen["confusion"] == ["style", "genre", "artist"] and "eval/val/mean_top1" in seen["summary"]


def test_eval_survives_a_wandb_failure(trained, tmp_path, monkeypatch):
    import wandb

    ckpt = torch.load(trained, weights_only=True)
    ckpt["config"]["logger"] = {"_target_": "deepart.tracking.WandbLogger", "mode": "offline"}
    path = tmp_path / "run" / "checkpoints" / "best.pt"
    path.parent.mkdir(parents=True)
    torch.save(ckpt, path)
    monkeypatch.setattr(wandb, "init", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("no network")))
    metrics = evaluate_checkpoint(_eval_cfg(path, tmp_path / "eval", gallery=2))
    assert "val/mean_top1" in metrics and (tmp_path / "eval" / "mistakes_style.png").is_file()
