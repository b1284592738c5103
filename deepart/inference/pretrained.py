"""The export folder: a trained model that stands alone, in the layout of timm / Hugging Face models.

    <folder>/config.json         how to rebuild the network (backbone, encoder, pooling and the model keys
                                 that shape it), the tasks with their class names in order, the input config
                                 (image size, resize, padding, mean, std) and the format version; optional
                                 "calibration": per-task temperatures T (divide the logits by them before the
                                 softmax) and the ECEs they were fitted with (objectives.calibration)
    <folder>/model.safetensors   the weights (no pickle: reading them runs no code)
    <folder>/README.md           the model card (written by `python -m deepart export`)
    <folder>/model.onnx          optional: the ONNX graph (deepart.inference.onnxrt)

Reading a folder needs neither Hydra, nor the training config, nor any weight download. Every problem with
a folder (a file missing, truncated weights, a newer format, weights that do not fit the config) is an
ExportError naming the file.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from deepart.core.errors import DeepArtError, first_line
from deepart.models import DeepArtNet, build_model
from deepart.objectives.calibration import Calibration

FORMAT = "deepart-pretrained"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "README.md"
ONNX_FILE = "model.onnx"
#: Model keys (of the training config's `model` node) that shape the network.
MODEL_KEYS = ("dim", "head_hidden", "head_dropout")
#: Modules a config.json may name as `_target_`: the model's own parts, nothing else.
TARGET_PREFIX = "deepart.models."


class ExportError(DeepArtError):
    """An export folder (or the target of an export) is missing, incomplete or unreadable."""


def is_export_dir(path: str | Path) -> bool:
    """True for a folder holding a config.json of this format (however broken the rest of it is)."""
    config = Path(path) / CONFIG_FILE
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text()).get("format") == FORMAT
    except (ValueError, OSError, AttributeError):
        return True  # a damaged config.json in a folder otherwise laid out as an export: read_config names it


def model_config(model: DeepArtNet, run_config: dict[str, Any]) -> dict[str, Any]:
    """config.json of `model` (trained with `run_config`, the run's resolved config)."""
    backbone = {k: v for k, v in run_config["backbone"].items() if k not in ("pretrained", "weights")}
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": "DeepArtNet",
        "backbone": backbone,
        "sequencer": run_config["sequencer"],
        **({"texture": run_config["texture"]} if model.texture is not None else {}),
        "model": {k: run_config["model"][k] for k in MODEL_KEYS},
        "tasks": {t: list(c) for t, c in model.tasks.items()},
        "input": {k: (list(v) if isinstance(v, tuple) else v) for k, v in model.input_cfg.items()},
        **({"calibration": model.calibration} if model.calibration else {}),
    }


def save_pretrained(model: DeepArtNet, config: dict[str, Any], folder: str | Path) -> None:
    """Write config.json and model.safetensors of `model` into `folder`."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS_FILE), metadata={"format": FORMAT, "format_version": str(FORMAT_VERSION)})
    write_config(config, folder)


def write_config(config: dict[str, Any], folder: Path) -> None:
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")


def read_config(folder: str | Path) -> dict[str, Any]:
    """config.json of an export folder, checked: format, version, the keys a rebuild needs."""
    path = Path(folder) / CONFIG_FILE
    if not Path(folder).is_dir():
        raise ExportError(f"{folder}: no such folder. Pass an export folder written by `python -m deepart export`.")
    if not path.is_file():
        raise ExportError(f"{path}: file missing; an export folder holds {CONFIG_FILE} and {WEIGHTS_FILE} "
                          f"(export the model again with `python -m deepart export`)")
    try:
        config = json.loads(path.read_text())
    except (ValueError, OSError) as exc:
        raise ExportError(f"{path}: not readable JSON ({first_line(exc)})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ExportError(f"{path}: not a deepart export config (no \"format\": \"{FORMAT}\")")
    version = config.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ExportError(f"{path}: format_version {version!r} is newer than this deepart reads ({FORMAT_VERSION}); "
                          f"upgrade deepart (pip install -U deepart) to load it")
    missing = [k for k in ("backbone", "sequencer", "model", "tasks", "input") if k not in config]
    if missing:
        raise ExportError(f"{path}: lacks the keys {missing}")
    for node in (config["backbone"], config["sequencer"].get("encoder"), config["sequencer"].get("pooling")):
        target = node.get("_target_", "") if isinstance(node, dict) else ""
        if node is not None and not str(target).startswith(TARGET_PREFIX):
            raise ExportError(f"{path}: refers to {target!r}; only modules of {TARGET_PREFIX[:-1]} may be named")
    try:
        Calibration.from_dict(config.get("calibration"))
    except (ValueError, TypeError, AttributeError) as exc:
        raise ExportError(f"{path}: \"calibration\" is not readable ({first_line(exc)}); fit it again with "
                          f"eval.py calibrate=true, or delete the key") from None
    return config


def build_from_config(config: dict[str, Any]) -> DeepArtNet:
    """The network config.json describes, with freshly initialised weights (no download)."""
    cfg = OmegaConf.create({"backbone": {**config["backbone"], "pretrained": False, "weights": None},
                            "sequencer": config["sequencer"], "texture": config.get("texture"),
                            "model": config["model"],
                            "data": {k: config["input"].get(k) for k in ("image_size", "resize_size", "square_pad")}})
    return build_model(cfg, config["tasks"], pretrained=False)


def read_weights(folder: str | Path) -> dict[str, torch.Tensor]:
    """model.safetensors of an export folder (a missing or truncated file is an ExportError naming it)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(folder) / WEIGHTS_FILE
    if not path.is_file():
        raise ExportError(f"{path}: file missing; the folder has {CONFIG_FILE} but no weights "
                          f"(export the model again, or download the whole folder)")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ExportError(f"{path}: not a readable safetensors file (truncated or corrupt?): {first_line(exc)}") \
            from None


def check_fit(state: dict[str, torch.Tensor], model: DeepArtNet, path: Path) -> None:
    """Refuse weights whose names or shapes differ from the network config.json builds, naming the first few."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
              if k in state and state[k].shape != v.shape]
    problems = []
    if missing:
        problems.append(f"{len(missing)} tensors missing (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensors (e.g. {', '.join(unexpected[:3])})")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches (file vs config: {'; '.join(shapes[:3])})")
    if problems:
        raise ExportError(f"{path}: the weights do not fit the network of {CONFIG_FILE}: {', '.join(problems)}")


def load_pretrained(folder: str | Path) -> DeepArtNet:
    """The model of an export folder, on the CPU in eval mode."""
    folder = Path(folder)
    config = read_config(folder)
    try:
        model = build_from_config(config)
    except Exception as exc:  # a hand-edited config.json: any failure to build is reported as one line
        raise ExportError(f"{folder / CONFIG_FILE}: cannot rebuild the network: {first_line(exc)}") from None
    state = read_weights(folder)
    check_fit(state, model, folder / WEIGHTS_FILE)
    model.load_state_dict(state)
    model.calibration = config.get("calibration")
    return model.eval()
