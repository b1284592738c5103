"""ONNX: export a DeepArtNet to `model.onnx` and run it with onnxruntime, in the model's own interface.

The graph takes the uint8 (B, 3, H, W) batch of the eval transform as input `image` (normalisation is in the
graph, as in the model), with a dynamic batch dimension, and has one output per task, `logits_<task>`
(B, C_task), plus `attention` (B, h, w) where the model has attention weights (every sequencer but pool).
The logits are the model's raw ones: a temperature fitted by `eval.py calibrate=true` is not baked into the
graph. The Predictor divides whatever its runner returns (this one or the PyTorch model) by the per-task T of
config.json's "calibration", so both backends give the same calibrated probabilities; other ONNX users divide
`logits_<task>` by `calibration.temperature[<task>]` before the softmax.

Needs the `onnx` extra (`pip install -e ".[onnx]"`: onnx, onnxscript, onnxruntime). The exporter is
torch.onnx's torch.export-based one (`dynamo=True`); where it fails on a model (recurrent layers have been
its weak spot) the TorchScript-based one (`dynamo=False`) is used instead, and `export_onnx` says which.
"""
from __future__ import annotations

import importlib
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from deepart.core.cli import install_line
from deepart.core.errors import DeepArtError, first_line
from deepart.models import DeepArtNet

log = logging.getLogger("deepart")

INPUT = "image"
ATTENTION = "attention"
OPSET = 18
EXPORTERS = ("dynamo", "torchscript")


def logits_name(task: str) -> str:
    return f"logits_{task}"


class OnnxUnavailable(DeepArtError):
    """onnx / onnxruntime are not installed."""


def require_onnx(packages: tuple[str, ...] = ("onnx", "onnxruntime")) -> None:
    """Raise OnnxUnavailable with the install command unless `packages` import (the export needs onnxscript
    too)."""
    for name in packages:
        try:
            importlib.import_module(name)
        except ImportError:
            raise OnnxUnavailable(f"ONNX needs the packages {', '.join(packages)} ({name} is missing): "
                                  f"{install_line('onnx')}") from None


class _Flat(nn.Module):
    """The model with a flat tuple of outputs (the exporters want tensors, not dicts)."""

    def __init__(self, model: DeepArtNet):
        super().__init__()
        self.model = model
        self.tasks = list(model.tasks)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(image)
        logits = tuple(out["logits"][t] for t in self.tasks)
        return logits if out["attention"] is None else (*logits, out["attention"])


def output_names(model: DeepArtNet) -> list[str]:
    """The graph's outputs in order: logits per task, then attention (absent for mean pooling)."""
    names = [logits_name(t) for t in model.tasks]
    return names + ([ATTENTION] if model.pooling.__class__.__name__ != "MeanPool" else [])


def export_onnx(model: DeepArtNet, path: str | Path, exporter: str = "auto", batch: int = 2) -> str:
    """Write `model` as ONNX to `path`; returns the exporter used: dynamo, or torchscript where dynamo failed
    (`exporter=auto`) or was asked for."""
    require_onnx(("onnx", "onnxscript", "onnxruntime"))
    model = model.eval().cpu()
    size = model.input_cfg["image_size"]
    example = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8)
    names = output_names(model)
    flat = _Flat(model).eval()
    order = EXPORTERS if exporter == "auto" else (exporter,)
    errors = []
    for noisy in ("onnxscript", "onnx_ir", "torch.onnx", "torch.export"):  # per-pass INFO lines of the exporter
        logging.getLogger(noisy).setLevel(logging.WARNING)
    for name in order:
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                _export(flat, example, Path(path), names, dynamo=name == "dynamo")
            return name
        except Exception as exc:  # noqa: BLE001  an exporter's failure is reported, then the other one tried
            first = first_line(exc)
            errors.append(f"{name}: {first}")
            if name != order[-1]:
                log.warning("ONNX: the %s exporter failed (%s); trying the %s exporter", name, first, order[-1])
    raise DeepArtError(f"ONNX export to {path} failed: {'; '.join(errors)}")


def _export(flat: nn.Module, example: torch.Tensor, path: Path, names: list[str], dynamo: bool) -> None:
    kwargs: dict[str, Any] = {"input_names": [INPUT], "output_names": names, "opset_version": OPSET}
    if dynamo:
        kwargs["dynamic_shapes"] = ({0: torch.export.Dim("batch", min=1, max=4096)},)
        program = torch.onnx.export(flat, (example,), dynamo=True, external_data=False, verbose=False, **kwargs)
        program.save(str(path), external_data=False)
    else:
        kwargs["dynamic_axes"] = {INPUT: {0: "batch"}, **{n: {0: "batch"} for n in names}}
        torch.onnx.export(flat, (example,), str(path), dynamo=False, **kwargs)


class OnnxModel:
    """An onnxruntime session that answers like a DeepArtNet: model(uint8 batch) ->
    {"logits": {task: tensor}, "attention": tensor or None} (CPU tensors)."""

    def __init__(self, path: str | Path, tasks: dict[str, list[str]], input_cfg: dict[str, Any],
                 threads: int | None = None):
        require_onnx()
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001  onnxruntime raises its own (non-exported) exception types
            raise DeepArtError(f"{path}: onnxruntime cannot load it: {first_line(exc)}") from None
        self.tasks = {t: list(c) for t, c in tasks.items()}
        self.input_cfg = input_cfg
        self.outputs = [o.name for o in self.session.get_outputs()]
        missing = [logits_name(t) for t in tasks if logits_name(t) not in self.outputs]
        if missing:
            raise DeepArtError(f"{path}: the graph has no outputs {missing} (outputs: {self.outputs}); "
                               f"export it again with onnx=true")
        self.device = torch.device("cpu")

    def __call__(self, images: torch.Tensor) -> dict[str, Any]:
        feed = images.cpu().numpy()
        if feed.dtype != np.uint8:  # the graph takes what the eval transform gives: uint8 pixels
            feed = (feed * 255).round().clip(0, 255) if feed.dtype.kind == "f" else feed
            feed = feed.astype(np.uint8)
        values = dict(zip(self.outputs, self.session.run(self.outputs, {INPUT: feed})))
        attention = values.get(ATTENTION)
        return {"logits": {t: torch.from_numpy(values[logits_name(t)]) for t in self.tasks},
                "attention": None if attention is None else torch.from_numpy(attention)}
