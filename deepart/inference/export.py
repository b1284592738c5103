"""Export a trained model to a folder that stands alone (see deepart.inference.pretrained for the layout).

    python -m deepart export ckpt=<run>/checkpoints/best.pt out=exported-model/ [onnx=true] [overwrite=true]

Writes model.safetensors, config.json, README.md (a Hugging Face style model card with the run's val
metrics) and, with onnx=true, model.onnx; then reloads the folder and checks that it gives the checkpoint's
logits (and onnxruntime those of PyTorch). Options: conf/export.yaml.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from pathlib import Path

import torch
import yaml
from omegaconf import DictConfig

from deepart.core.checkpoint import Checkpoint
from deepart.core.cli import compose_cli
from deepart.core.errors import ConfigError, report_errors, require_choice
from deepart.core.rundir import BEST, CHECKPOINTS, METRICS, eval_dir, read_overrides, run_dir_of
from deepart.data.loaders import data_root, load_table
from deepart.inference import pretrained
from deepart.inference.evaluate import compute_val_metrics
from deepart.inference.loading import load_model, resolve_model_path
from deepart.inference.onnxrt import EXPORTERS, OPSET, OnnxModel, export_onnx, output_names
from deepart.models import DeepArtNet
from deepart.objectives.calibration import Calibration

log = logging.getLogger("deepart")

USAGE = "python -m deepart export ckpt=<run>/checkpoints/best.pt out=<folder> [onnx=true]"
METRIC_SOURCES = ("auto", "compute", "none")
CARD_METRICS = (("top1", "top-1"), ("top5", "top-5"), ("macro_f1", "macro-F1"))
FILES = (pretrained.CONFIG_FILE, pretrained.WEIGHTS_FILE, pretrained.CARD_FILE, pretrained.ONNX_FILE)


def parse_args(argv: list[str]) -> DictConfig:
    cfg = compose_cli("export", argv, required=("ckpt", "out"), usage=USAGE, paths=("ckpt", "out", "data_root"))
    require_choice("metrics", cfg.metrics, METRIC_SOURCES)
    require_choice("exporter", cfg.exporter, ("auto", *EXPORTERS))
    return cfg


def check_out_dir(out: Path, overwrite: bool) -> None:
    """An existing non-empty `out` is refused unless overwrite=true; a file there is refused always."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out={out} is a file; pass a folder to write the export into")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"out={out} exists and is not empty; pass overwrite=true to replace its model files, "
                          f"or choose another folder")


def export(cfg: DictConfig) -> Path:
    """Write the export folder `cfg.out` from checkpoint `cfg.ckpt`; returns the folder."""
    out = Path(cfg.out)
    check_out_dir(out, cfg.overwrite)
    kind, ckpt_path = resolve_model_path(cfg.ckpt)
    if kind == "export":
        raise ConfigError(f"ckpt={cfg.ckpt} is already an export folder; copy it, or export from its checkpoint")
    model, ckpt = load_model(ckpt_path)
    metrics, metrics_source = val_metrics(cfg, model, ckpt)
    config = pretrained.model_config(model, ckpt.config)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=_existing_parent(out)) as tmp:
        staging = Path(tmp)
        pretrained.save_pretrained(model, config, staging)
        if cfg.onnx:
            exporter = export_onnx(model, staging / pretrained.ONNX_FILE, exporter=cfg.exporter)
            config["onnx"] = {"file": pretrained.ONNX_FILE, "exporter": exporter, "opset": OPSET,
                              "input": "image (uint8, B x 3 x H x W)", "outputs": output_names(model),
                              "dynamic_axes": {"batch": 0}}
            pretrained.write_config(config, staging)
            print(f"ONNX: exported with the {exporter} exporter (torch.onnx.export(dynamo="
                  f"{exporter == 'dynamo'}))")
        card = model_card(model, ckpt, config, metrics, metrics_source)
        (staging / pretrained.CARD_FILE).write_text(card)
        _move_into(staging, out)
    check_export(model, out, onnx=bool(cfg.onnx))
    files = sorted(p.name for p in out.iterdir() if p.name in FILES)
    print(f"wrote {out}/: {', '.join(files)}")
    return out


def _existing_parent(out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    return out.parent


def _move_into(staging: Path, out: Path) -> None:
    """Replace the model files of `out` by those of `staging` (other files there are left alone; a model.onnx
    of an earlier export goes, as it no longer matches)."""
    out.mkdir(parents=True, exist_ok=True)
    mask = os.umask(0)
    os.umask(mask)
    for name in FILES:
        src, dst = staging / name, out / name
        if src.exists():
            src.chmod(0o666 & ~mask)  # readable as any other file the user writes
            os.replace(src, dst)
        elif dst.exists():
            dst.unlink()


def check_export(model: DeepArtNet, out: Path, onnx: bool, batch: int = 2) -> None:
    """Reload the folder and compare its logits (and onnxruntime's) to the model's on a random batch."""
    size = model.input_cfg["image_size"]
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=generator)
    with torch.inference_mode():
        want = model(images)["logits"]
        got = pretrained.load_pretrained(out)(images)["logits"]
    diff = max(float((want[t] - got[t]).abs().max()) for t in want)
    print(f"check: the folder's logits differ from the checkpoint's by at most {diff:.1e}")
    if onnx:
        runner = OnnxModel(out / pretrained.ONNX_FILE, model.tasks, model.input_cfg)
        onnx_out = runner(images)["logits"]
        diff = max(float((want[t] - onnx_out[t]).abs().max()) for t in want)
        print(f"check: onnxruntime's logits differ from PyTorch's by at most {diff:.1e}")


# ---------------------------------------------------------------------------------------------- metrics
def val_metrics(cfg: DictConfig, model: DeepArtNet, ckpt: Checkpoint) -> tuple[dict[str, float], str]:
    """The val metrics for the card and where they come from."""
    if cfg.metrics == "none":
        return {}, "none"
    if cfg.metrics == "auto":
        for source, metrics in stored_metrics(ckpt):
            if _complete(metrics, model.tasks):
                return metrics, source
        log.info("the run stored no complete val metrics for this checkpoint: computing them on its val split")
    metrics = compute_val_metrics(model, ckpt, data_root=cfg.data_root, batch_size=cfg.batch_size,
                                  workers=cfg.num_workers, device="cpu")
    return metrics, "computed at export time on the run's val split"


def stored_metrics(ckpt: Checkpoint) -> list[tuple[str, dict[str, float]]]:
    """Val metrics the run stored for this checkpoint, best source first."""
    run_dir = run_dir_of(ckpt.path)
    found = []
    evaluation = _read_json(eval_dir(run_dir) / METRICS)
    if evaluation.get("split") == "val" and _same_file(evaluation.get("checkpoint"), ckpt.path):
        found.append(("eval.py (eval/metrics.json)", evaluation.get("metrics", {})))
    summary = _read_json(run_dir / METRICS)
    if ckpt.path is not None and ckpt.path.name == BEST and ckpt.path.parent.name == CHECKPOINTS:
        found.append(("the run's metrics.json (best epoch)", summary.get("best", {})))
    found.append(("the checkpoint's val metrics", ckpt.metrics))
    return found


def _complete(metrics: dict, tasks: dict) -> bool:
    return bool(metrics) and all(f"val/{t}/{m}" in metrics for t in tasks for m, _ in CARD_METRICS)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _same_file(a: str | None, b: Path | None) -> bool:
    try:
        return a is not None and b is not None and Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------- model card
def _overrides(run_dir: Path) -> list[str] | None:
    """The run's command-line overrides (rundir.read_overrides), None when missing or unreadable."""
    try:
        return read_overrides(run_dir)
    except (OSError, yaml.YAMLError):
        return None


def training_command(run_dir: Path) -> str:
    args = _overrides(run_dir)
    if args is None:
        return "(not recorded: the run dir has no .hydra/overrides.yaml)"
    return " ".join(["python train.py", *args])


def sweep_seeds(run_dir: Path) -> list[int] | None:
    """Seeds of the runs of the same sweep whose overrides equal this run's but for `seed`, when the run is one
    of a sweep's (its parent has Hydra's multirun.yaml); None otherwise."""
    if not (run_dir.parent / "multirun.yaml").is_file():
        return None

    def key(folder: Path) -> tuple[tuple[str, ...], int | None] | None:
        args = _overrides(folder)
        if args is None:
            return None
        seeds = [a.split("=", 1)[1] for a in args if a.startswith("seed=")]
        rest = tuple(sorted(a for a in args if not a.startswith(("seed=", "hydra."))))
        return rest, int(seeds[-1]) if seeds and seeds[-1].lstrip("-").isdigit() else None

    own = key(run_dir)
    if own is None:
        return None
    seeds = {k[1] for d in run_dir.parent.iterdir() if d.is_dir() and (k := key(d)) and k[0] == own[0]}
    return sorted(s for s in seeds if s is not None)


def split_sizes(config: dict) -> dict[str, int]:
    """Images per split of the run's data where it is still there ({} otherwise)."""
    from omegaconf import OmegaConf


    root = data_root(config.get("data", {}))
    if not root or not Path(root).exists():
        return {}
    try:
        table = load_table(OmegaConf.create(config["data"]), cached=False)
        return {split: len(table.frame(split)) for split in table.splits}
    except Exception as exc:  # noqa: BLE001  the card says less rather than failing the export
        log.warning("model card: could not read the run's data for the split sizes (%s)", exc)
        return {}


def _data_summary(config: dict) -> tuple[str, str]:
    """(dataset id for the front matter, a sentence on the data and its split)."""
    data = config.get("data", {})
    target = str(data.get("source", {}).get("_target_", ""))
    name = target.rsplit(".", 1)[-1].removeprefix("load_") or "unknown"
    root = data_root(data) or "?"
    split = data.get("source", {}).get("split") or data.get("split")
    ids = {"wikiart": "wikiart", "demo": "deepart-demo-synthetic"}
    text = f"`{name}` data from `{root}`"
    if name == "demo":
        text += " (the built-in synthetic paintings, not real art)"
    sizes = split_sizes(config)
    counts = f" ({', '.join(f'{n} {s}' for s, n in sizes.items())} images)" if sizes else ""
    text += f"; trained on its train split, evaluated on its val split{counts}"
    if split:
        text += f"; split settings: {split}"
    tasks = data.get("tasks")
    return ids.get(name, name), text + "." + (f" Tasks trained: {', '.join(tasks)}." if tasks else "")


def _card_result(task: str, dataset: str, metrics: dict) -> dict:
    """One task's val metrics as a Hugging Face `model-index` result (the web app reads its top-1 from here)."""
    kinds = {"top1": ("accuracy", "top-1 accuracy"), "top5": ("top_5_accuracy", "top-5 accuracy"),
             "macro_f1": ("f1", "macro-F1")}
    found = [(kinds[m], metrics[f"val/{task}/{m}"]) for m in kinds if f"val/{task}/{m}" in metrics]
    return {"task": {"type": "image-classification", "name": task},
            "dataset": {"name": dataset, "type": dataset, "split": "validation"},
            "metrics": [{"type": kind, "name": name, "value": round(float(value), 4)}
                        for (kind, name), value in found]}


def calibration_text(calibration: dict | None) -> str:
    """The card's sentence on the probabilities: calibrated (temperatures, ECE before / cross-fitted after) or not."""
    if not calibration:
        return ("Probabilities: the model's softmax, not calibrated (`python eval.py ckpt=<run> calibrate=true` "
                "fits a temperature per task).")
    c = Calibration.from_dict(calibration)
    per_task = "; ".join(f"{t}: T = {c.of(t):.2f}, ECE {100 * c.ece_before.get(t, float('nan')):.1f} % -> "
                         f"{100 * (c.honest_ece(t) or float('nan')):.1f} %" for t in c.temperature)
    return (f"Probabilities: calibrated by temperature scaling on the {c.split} split (config.json `calibration`: "
            f"divide each task's logits by its T before the softmax; {per_task}, the ECE after cross-fitted).")


def model_card(model: DeepArtNet, ckpt: Checkpoint, config: dict, metrics: dict, source: str) -> str:
    """README.md of the export folder: YAML front matter, then the card in Markdown."""
    run_cfg, run_dir = ckpt.config, run_dir_of(ckpt.path)
    dataset, data_text = _data_summary(run_cfg)
    backbone, sequencer = config["backbone"]["name"], _sequencer_name(config)
    front = {"library_name": "deepart", "license": "mit", "pipeline_tag": "image-classification",
             "tags": ["deepart", "image-classification", "art", "paintings", "multi-task", "pytorch", "safetensors",
                      backbone, sequencer] + (["onnx"] if "onnx" in config else []),
             "datasets": [dataset], "metrics": ["accuracy", "f1"]}
    if metrics:
        front["model-index"] = [{"name": f"deepart-{backbone}-{sequencer}",
                                 "results": [_card_result(task, dataset, metrics) for task in model.tasks]}]
    lines = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "",
             f"# deepart: {', '.join(model.tasks)} of paintings ({backbone} + {sequencer})", "",
             f"A multi-task painting classifier trained with deepart: a `{backbone}` backbone, its feature grid read "
             f"as tokens by a `{sequencer}` encoder with attention pooling, one head per task. Input: "
             f"{model.input_cfg['image_size']} px (resize {model.input_cfg['resize_size']}, square pad "
             f"{model.input_cfg['square_pad']}), normalised inside the model.", "",
             "## Tasks and classes", ""]
    for task, names in model.tasks.items():
        lines.append(f"- **{task}** ({len(names)} classes): {', '.join(names)}")
    lines += ["", "## Training data", "", data_text, "", "## Evaluation", "",
              *_card_metrics(model.tasks, metrics, source), "", calibration_text(config.get("calibration"))]
    seeds = sweep_seeds(run_dir)
    lines += ["", f"Seed of this run: {run_cfg.get('seed')}."]
    if seeds:
        lines[-1] += (f" It is one run of the sweep `{run_dir.parent}`, whose runs of this configuration used "
                      f"seeds {seeds}: compare them with `python -m deepart report {run_dir.parent}`.")
    lines += ["", "## Training", "", "```", training_command(run_dir), "```", "",
              f"Checkpoint: `{ckpt.path}` (phase {ckpt.phase.get('name')}, epoch {ckpt.epoch}).", "",
              "## Use", "", "```python", "from deepart import Predictor", "from PIL import Image", "",
              'predictor = Predictor.from_pretrained("path/to/this/folder")',
              'result = predictor.predict(Image.open("painting.jpg"))', "```", "",
              "Command line: `python -m deepart predict ckpt=<this folder> images=<folder> [backend=onnx]`.", "",
              "## Intended use", "",
              "Labelling and exploring digitised paintings (style, genre, artist) in collections and research, "
              "with a person checking the labels that matter. Not for attributing, authenticating or valuing works.",
              "", "## Limits", "",
              "- WikiArt is strongly imbalanced: a few styles, genres and artists hold most images, so the model "
              "favours them and rare classes get low recall (compare macro-F1 with top-1 above; per-class "
              "figures: `python eval.py`).",
              "- It saw only images of paintings (scans and photographs of artworks from the dataset), no "
              "photographs of the world; for photos, sculptures or drawings its labels mean little.",
              "- Class names are the dataset's; artist covers only the artists the dataset labels.", ""]
    return "\n".join(lines)


def _card_metrics(tasks: dict[str, list[str]], metrics: dict, source: str) -> list[str]:
    """The card's evaluation table (val split, per task), or the line saying there is none."""
    if not metrics:
        return ["No metrics included (exported with metrics=none)."]
    lines = [f"Val split, per task (source: {source}):", "",
             "| task | " + " | ".join(label for _, label in CARD_METRICS) + " |", "|---|" + "---:|" * len(CARD_METRICS)]
    for task in tasks:
        cells = [f"{metrics.get(f'val/{task}/{m}', float('nan')):.4f}" for m, _ in CARD_METRICS]
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    return lines


def _sequencer_name(config: dict) -> str:
    encoder = config["sequencer"].get("encoder")
    if encoder is None:
        return "pool" if config["sequencer"].get("pooling") is not None else "none"
    target = encoder.get("_target_", "")
    if target.endswith("RNNEncoder"):
        return {"lstm": "bilstm", "gru": "gru"}.get(encoder.get("cell"), "rnn")
    return "transformer" if target.endswith("TransformerEncoder") else target.rsplit(".", 1)[-1]


def main(argv: list[str] | None = None) -> Path:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    return report_errors(lambda: export(parse_args(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    main()
