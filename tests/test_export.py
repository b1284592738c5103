"""The export folder (python -m deepart export): round trip for every sequencer on real images, the model card,
the loaders that take it (Predictor, predict, eval.py), and every bad input as one line with exit status 2."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from deepart.core.checkpoint import Checkpoint
from deepart.core.config import to_plain
from deepart.inference.export import export, parse_args
from deepart.inference.loading import Predictor, load_model, load_pretrained
from deepart.inference.pretrained import CONFIG_FILE, FORMAT_VERSION, WEIGHTS_FILE, ExportError
from deepart.models import build_model
from tests.conftest import REPO, SHARED, TINY, TINY_SEQUENCER, compose_config, demo_overrides, tiny_sequencer

pytestmark = pytest.mark.slow  # end-to-end: real commands and trainings (python -m pytest -m "not slow" skips them)

SEQUENCERS = ("bilstm", "gru", "transformer", "pool")


def save_checkpoint(path: Path, sequencer: str, demo_root: Path, seed: int = 0) -> Path:
    """A checkpoint of a tiny model of `sequencer` with random weights, in the schema train.py writes."""
    cfg = compose_config([*demo_overrides(demo_root), *TINY, f"sequencer={sequencer}", *tiny_sequencer(sequencer)])
    torch.manual_seed(seed)
    from deepart.data.loaders import load_table

    model = build_model(cfg, load_table(cfg.data).tasks, pretrained=False)
    Checkpoint(model=model.state_dict(), config=to_plain(cfg), tasks=model.tasks, phase={"name": "3", "index": 0},
               progress={"epoch": 1}).save(path)
    return path


def cli(module_or_script: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HYDRA_FULL_ERROR": "0"}
    cmd = [sys.executable, *(["-m", *module_or_script.split()] if module_or_script.startswith("deepart")
                             else [str(REPO / module_or_script)]), *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def one_line_error(res: subprocess.CompletedProcess, *needles: str) -> str:
    """The process failed with status 2 and one error line (no traceback) that holds every needle."""
    assert res.returncode == 2, (res.returncode, res.stdout[-2000:], res.stderr[-2000:])
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout, res.stderr[-3000:]
    # stderr, or inside a Hydra job (eval.py) the job's console log on stdout
    errors = [line for line in (res.stderr + res.stdout).splitlines() if "error" in line.lower()]
    assert len(errors) == 1, res.stderr + res.stdout
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def real_images(demo_root: Path, n: int = 8) -> list[Image.Image]:
    """Real files: paintings-sample where the shared data is present, else the demo paintings."""
    sample = sorted((SHARED / "paintings-sample").rglob("*.jpg"))[:n] if SHARED.is_dir() else []
    files = sample or sorted(demo_root.rglob("*.jpg"))[:n]
    return [Image.open(f).convert("RGB") for f in files]


@pytest.mark.parametrize("sequencer", SEQUENCERS)
def test_round_trip_gives_the_checkpoints_logits(sequencer, demo_root, tmp_path):
    ckpt = save_checkpoint(tmp_path / "best.pt", sequencer, demo_root)
    out = export(parse_args([f"ckpt={ckpt}", f"out={tmp_path / 'export'}", "metrics=none"]))
    assert sorted(p.name for p in out.iterdir()) == ["README.md", CONFIG_FILE, WEIGHTS_FILE]
    original = Predictor(load_model(ckpt)[0])
    folder = Predictor.from_pretrained(out, device="cpu")
    batch = original.preprocess(real_images(demo_root))
    with torch.inference_mode():
        want, got = original.model(batch), folder.model(batch)
    for task in original.tasks:
        torch.testing.assert_close(got["logits"][task], want["logits"][task], atol=1e-6, rtol=0)
    assert (want["attention"] is None) == (got["attention"] is None) == (sequencer == "pool")
    assert folder.tasks == original.tasks and folder.model.input_cfg == original.model.input_cfg
    config = json.loads((out / CONFIG_FILE).read_text())
    assert set(config) == {"format", "format_version", "architecture", "backbone", "sequencer", "model", "tasks",
                           "input"}
    assert config["backbone"]["name"] == "test_efficientnet" and "pretrained" not in config["backbone"]
    assert list(config["tasks"]) == list(original.tasks) and config["input"]["image_size"] == 64


def test_load_pretrained_needs_no_hydra_and_no_download(demo_root, tmp_path):
    ckpt = save_checkpoint(tmp_path / "best.pt", "bilstm", demo_root)
    out = export(parse_args([f"ckpt={ckpt}", f"out={tmp_path / 'export'}", "metrics=none"]))
    code = ("import sys, deepart; m = deepart.load_pretrained(sys.argv[1]); "
            "from hydra.core.global_hydra import GlobalHydra; assert not GlobalHydra.instance().is_initialized(); "
            "print(type(m).__name__, sorted(m.tasks))")
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "NO_PROXY": "*",
           "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}
    res = subprocess.run([sys.executable, "-c", code, str(out)], env=env, capture_output=True, text=True,
                         cwd=tmp_path, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.startswith("DeepArtNet")


@pytest.fixture(scope="module")
def trained_run(demo_root, tmp_path_factory):
    """A tiny run trained by train.py's code (best.pt, metrics.json)."""
    from deepart.training.trainer import train

    run_dir = tmp_path_factory.mktemp("export_run")
    train(compose_config([*demo_overrides(demo_root), *TINY, *TINY_SEQUENCER]), run_dir=run_dir)
    return run_dir


def test_cli_export_writes_a_model_card_with_the_runs_metrics(trained_run, tmp_path):
    out = tmp_path / "export"
    res = cli("deepart export", f"ckpt={trained_run / 'checkpoints' / 'best.pt'}", f"out={out}")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "differ from the checkpoint's by at most" in res.stdout
    card = (out / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["library_name"] == "deepart" and "image-classification" in front["tags"]
    assert front["datasets"] == ["deepart-demo-synthetic"] and front["metrics"] == ["accuracy", "f1"]
    stored = json.loads((trained_run / "metrics.json").read_text())["best"]
    for task in ("style", "genre", "artist"):
        cells = [f"{stored[f'val/{task}/{m}']:.4f}" for m in ("top1", "top5", "macro_f1")]
        assert f"| {task} | {' | '.join(cells)} |" in card
    results = {r["task"]["name"]: {m["type"]: m["value"] for m in r["metrics"]}
               for r in front["model-index"][0]["results"]}
    assert results["style"]["accuracy"] == round(stored["val/style/top1"], 4)
    assert results["artist"]["top_5_accuracy"] == round(stored["val/artist/top5"], 4)
    assert "## Intended use" in card and "imbalanced" in card and "photographs" in card
    assert "Seed of this run: 42" in card
    # a run dir is accepted too, and a non-empty folder is refused unless overwrite=true
    again = cli("deepart export", f"ckpt={trained_run}", f"out={out}", "metrics=none")
    one_line_error(again, f"out={out}", "overwrite=true")
    assert cli("deepart export", f"ckpt={trained_run}", f"out={out}", "overwrite=true").returncode == 0


def test_metrics_are_computed_when_the_run_stored_none(trained_run, tmp_path):
    ckpt = Checkpoint.load(trained_run / "checkpoints" / "best.pt")
    ckpt.progress = {"epoch": ckpt.epoch}  # no val metrics inside; the copy is outside the run dir
    ckpt.save(tmp_path / "best.pt")
    out = export(parse_args([f"ckpt={tmp_path / 'best.pt'}", f"out={tmp_path / 'export'}", "num_workers=0"]))
    card = (out / "README.md").read_text()
    assert "computed at export time" in card
    stored = json.loads((trained_run / "metrics.json").read_text())["best"]
    assert f"| style | {stored['val/style/top1']:.4f} |" in card  # the same model on the same split


def test_predict_and_eval_take_the_folder(trained_run, demo_root, tmp_path):
    out = export(parse_args([f"ckpt={trained_run}", f"out={tmp_path / 'export'}", "metrics=none"]))
    images = sorted(demo_root.rglob("*.jpg"))[:3]
    folder = tmp_path / "paintings"
    folder.mkdir()
    for p in images:
        (folder / p.name).write_bytes(p.read_bytes())
    res = cli("deepart predict", f"ckpt={out}", f"images={folder}", "num_workers=0", f"out_dir={tmp_path / 'p'}",
              "visualize=true")
    assert res.returncode == 0, res.stderr[-3000:]
    assert len(json.loads((tmp_path / "p" / "predictions.json").read_text())["predictions"]) == 3
    assert len(list((tmp_path / "p" / "visualize").glob("*.png"))) == 3  # saliency maps from the folder's model
    # the test's demo folder is smaller than the default demo: dataset=demo reads it as it is, never regenerates it
    marker = demo_root / ".complete.json"
    made = (marker.read_text(), marker.stat().st_mtime_ns)
    stored = json.loads((trained_run / "metrics.json").read_text())["best"]
    for dataset in ("demo", "wikiart"):  # the demo is written in WikiArt's on-disk format
        res = cli("eval.py", f"ckpt={out}", f"dataset={dataset}", f"data_root={demo_root}", "num_workers=0",
                  "gallery=0", f"out_dir={tmp_path / dataset}", f"hydra.run.dir={tmp_path / dataset}")
        assert res.returncode == 0, res.stderr[-3000:]
        from_folder = json.loads((tmp_path / dataset / "metrics.json").read_text())["metrics"]
        assert from_folder["val/style/top1"] == pytest.approx(stored["val/style/top1"], abs=1e-6), dataset
    assert (marker.read_text(), marker.stat().st_mtime_ns) == made
    res = cli("eval.py", f"ckpt={out}", f"hydra.run.dir={tmp_path / 'e2'}")
    one_line_error(res, "export folder", "dataset=")


def test_eval_reads_a_collection_table_with_an_export_folder(trained_run, demo_root, tmp_path):
    """dataset=csv with data_table=: the demo's own split written as a CSV gives the run's val metrics."""
    import pandas as pd

    from deepart.data.loaders import load_table

    data = compose_config([*demo_overrides(demo_root), *TINY]).data
    table = load_table(data, cached=False)
    rows = []
    for split in ("train", "val"):
        for rec in table.frame(split).to_dict("records"):
            path = Path(rec["path"])
            labels = {task: names[rec[task]] if rec[task] >= 0 else "" for task, names in table.tasks.items()}
            rows.append({"image": (path.relative_to(table.image_root) if path.is_absolute() else path).as_posix(),
                         "split": split, **labels})
    csv = tmp_path / "collection.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    out = export(parse_args([f"ckpt={trained_run}", f"out={tmp_path / 'export'}", "metrics=none"]))
    res = cli("eval.py", f"ckpt={out}", "dataset=csv", f"data_root={table.image_root}", f"data_table={csv}",
              "num_workers=0", "gallery=0", f"out_dir={tmp_path / 'csv'}", f"hydra.run.dir={tmp_path / 'csv'}")
    assert res.returncode == 0, res.stderr[-3000:]
    stored = json.loads((trained_run / "metrics.json").read_text())["best"]
    metrics = json.loads((tmp_path / "csv" / "metrics.json").read_text())["metrics"]
    for task in table.tasks:
        assert metrics[f"val/{task}/top1"] == pytest.approx(stored[f"val/{task}/top1"], abs=1e-6), task
    # without the table, and a table for a run whose data reads none: one line each, nothing evaluated
    res = cli("eval.py", f"ckpt={out}", "dataset=csv", f"data_root={table.image_root}",
              f"hydra.run.dir={tmp_path / 'e3'}")
    one_line_error(res, "dataset=csv", "data_table=")
    res = cli("eval.py", f"ckpt={trained_run}", f"data_table={csv}", f"hydra.run.dir={tmp_path / 'e4'}")
    one_line_error(res, f"data_table={csv}", "only data=csv")
    assert not (tmp_path / "e3" / "metrics.json").exists() and not (tmp_path / "e4" / "metrics.json").exists()


def test_a_version_1_checkpoint_is_upgraded_and_exported(demo_root, tmp_path):
    ckpt = save_checkpoint(tmp_path / "v2.pt", "bilstm", demo_root)
    raw = torch.load(ckpt, weights_only=True)
    renamed = {"encoder": "sequencer", "pooling": "attention"}
    v1 = {"format": raw["format"], "version": 1, "epoch": 1, "metrics": {}, "tasks": raw["tasks"],
          "config": raw["config"], "phase": raw["phase"], "state": {"epoch": 1},
          "model": {renamed.get(k.split(".")[0], k.split(".")[0]) + k[len(k.split(".")[0]):]: v
                    for k, v in raw["model"].items()}}
    assert any(k.startswith("sequencer.") for k in v1["model"])
    torch.save(v1, tmp_path / "v1.pt")
    out = export(parse_args([f"ckpt={tmp_path / 'v1.pt'}", f"out={tmp_path / 'export'}", "metrics=none"]))
    x = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    with torch.inference_mode():
        torch.testing.assert_close(load_pretrained(out)(x)["logits"]["style"],
                                   load_model(ckpt)[0](x)["logits"]["style"], atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------------------------- bad input
@pytest.fixture(scope="module")
def export_dir(demo_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("good_export")
    ckpt = save_checkpoint(tmp / "best.pt", "bilstm", demo_root)
    return export(parse_args([f"ckpt={ckpt}", f"out={tmp / 'export'}", "metrics=none"]))


def broken_copy(export_dir: Path, tmp_path: Path, damage) -> Path:
    folder = tmp_path / "broken"
    folder.mkdir()
    for f in export_dir.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    damage(folder)
    return folder


def _newer(folder: Path) -> None:
    config = json.loads((folder / CONFIG_FILE).read_text())
    config["format_version"] = FORMAT_VERSION + 1
    (folder / CONFIG_FILE).write_text(json.dumps(config))


def _misfit(folder: Path) -> None:
    config = json.loads((folder / CONFIG_FILE).read_text())
    config["model"]["dim"] = 48
    config["tasks"]["style"] = config["tasks"]["style"][:-1]
    (folder / CONFIG_FILE).write_text(json.dumps(config))


def _truncate(folder: Path) -> None:
    data = (folder / WEIGHTS_FILE).read_bytes()
    (folder / WEIGHTS_FILE).write_bytes(data[: len(data) // 2])


DAMAGES = {
    "missing weights": (lambda f: (f / WEIGHTS_FILE).unlink(), [WEIGHTS_FILE, "file missing"]),
    "truncated weights": (_truncate, [WEIGHTS_FILE, "truncated or corrupt"]),
    "newer format": (_newer, [CONFIG_FILE, f"format_version {FORMAT_VERSION + 1}", "upgrade deepart"]),
    "weights do not fit": (_misfit, [WEIGHTS_FILE, "do not fit", "shape mismatches"]),
    "missing config": (lambda f: (f / CONFIG_FILE).unlink(), ["no config.json"]),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_folder_is_one_line_naming_the_file(damage, export_dir, demo_root, tmp_path):
    fn, needles = DAMAGES[damage]
    folder = broken_copy(export_dir, tmp_path, fn)
    if damage != "missing config":
        with pytest.raises(ExportError, match=needles[0]):
            load_pretrained(folder)
    image = next(demo_root.rglob("*.jpg"))
    res = cli("deepart predict", f"ckpt={folder}", f"images={image}", "num_workers=0", f"out_dir={tmp_path / 'o'}")
    one_line_error(res, str(folder), *needles)


@pytest.mark.parametrize("command", ["eval.py", "deepart export", "deepart predict"])
def test_a_missing_ckpt_argument_is_one_line(command, tmp_path):
    res = cli(command, f"out={tmp_path / 'x'}", f"images={tmp_path}")
    one_line_error(res, "ckpt=... is required")
    assert len(res.stderr.strip().splitlines()) == 1
