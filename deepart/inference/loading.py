"""From a checkpoint to a ready model, and from images to predictions: the one way eval.py,
`python -m deepart predict`, the saliency maps and the Python API load and run a trained model.

    from PIL import Image
    from deepart import Predictor

    predictor = Predictor.from_checkpoint("outputs/.../checkpoints/best.pt")   # device="auto"
    predictor = Predictor.from_pretrained("exported-model/")                    # a `python -m deepart export` folder
    result = predictor.predict(Image.open("painting.jpg"))
    result["style"]      # {"label": "Impressionism", "confidence": 0.81, "top_k": [("Impressionism", 0.81), ...]}
    result["attention"]  # (7, 7) numpy array: where the model looked (None for sequencer=pool)
    predictor.predict(image, min_confidence=0.5)["style"]["uncertain"]   # True below 50 %

The probabilities are softmax(logits / T) with the per-task temperature T the model was calibrated with
(`eval.py calibrate=true`; T = 1 for a model never calibrated, `predictor.calibration` says which). The
runner (PyTorch or onnxruntime) gives raw logits; the Predictor divides them, so both backends agree.

The model brings its own preprocessing (`DeepArtNet.input_cfg`: the eval transform's sizes and the
backbone's mean / std), its class names and nothing else of the run's config. `load_model` and the
Predictor take a checkpoint file, a run dir (its checkpoints/best.pt) or an export folder alike.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import torch
from omegaconf import OmegaConf
from PIL import Image
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from deepart.core.checkpoint import CHECKPOINTS, Checkpoint
from deepart.core.errors import CheckpointError, require_choice
from deepart.core.rundir import best_checkpoint
from deepart.core.runtime import resolve_device
from deepart.data.dataset import ImageDataset, SkipCounter, collate
from deepart.data.images import to_rgb
from deepart.data.transforms import min_decode_side, transform_from_config
from deepart.inference.pretrained import is_export_dir
from deepart.inference.pretrained import load_pretrained as _load_folder
from deepart.models import DeepArtNet, build_model
from deepart.objectives.calibration import Calibration, min_confidence_per_task

BACKENDS = ("torch", "onnx")
MODEL_ARG = "a checkpoint (<run>/checkpoints/best.pt), a run dir or an export folder (python -m deepart export)"


def resolve_model_path(path: str | Path) -> tuple[str, Path]:
    """("export", folder) for an export folder, ("checkpoint", file) for a checkpoint file or a run dir
    (its checkpoints/best.pt); a path that is neither is a CheckpointError saying what is accepted."""
    path = Path(path)
    if path.is_dir():
        if is_export_dir(path):
            return "export", path
        best = best_checkpoint(path)
        if best.is_file():
            return "checkpoint", best
        raise CheckpointError(f"{path}: a folder that is neither an export folder (no config.json) nor a run dir "
                              f"(no {CHECKPOINTS}/best.pt); pass {MODEL_ARG}")
    if not path.exists():
        raise CheckpointError(f"{path}: not found; pass {MODEL_ARG}")
    return "checkpoint", path


def load_model(path: str | Path) -> tuple[DeepArtNet, Checkpoint | None]:
    """The model of a checkpoint, a run dir or an export folder (built from its own config, no weight
    download), on the CPU in eval mode, and the checkpoint it came from (None for an export folder)."""
    kind, path = resolve_model_path(path)
    if kind == "export":
        return _load_folder(path), None
    ckpt = Checkpoint.load(path)
    model = build_model(OmegaConf.create(ckpt.config), ckpt.tasks, pretrained=False)
    model.load_state_dict(ckpt.weights)
    model.calibration = ckpt.calibration
    return model.eval(), ckpt


def load_pretrained(folder: str | Path) -> DeepArtNet:
    """The model of an export folder (config.json + model.safetensors), on the CPU in eval mode: no Hydra,
    no training config, no weight download."""
    return _load_folder(folder)


def decode_top_k(logits: dict[str, torch.Tensor], tasks: dict[str, list[str]], top_k: int = 5,
                 temperature: Mapping[str, float] | None = None,
                 min_confidence: Mapping[str, float] | None = None) -> list[dict]:
    """Per image, per task: {"label", "confidence", "top_k": [(label, probability), ...], "uncertain"} (k capped
    at C): probabilities of softmax(logits / temperature[task]) (T = 1 for a task without one); "uncertain" is
    true when the confidence is below min_confidence[task] (never for a task without a threshold)."""
    results: list[dict] = [{} for _ in range(len(next(iter(logits.values()))))]
    for task, task_logits in logits.items():
        t = (temperature or {}).get(task, 1.0)
        probs = (task_logits.detach().float() / t).softmax(-1).cpu()
        top_p, top_i = probs.topk(min(top_k, probs.shape[1]), dim=-1)
        names, threshold = tasks[task], (min_confidence or {}).get(task, 0.0)
        for r, p_row, i_row in zip(results, top_p.tolist(), top_i.tolist()):
            r[task] = {"label": names[i_row[0]], "confidence": p_row[0],
                       "top_k": [(names[i], p) for i, p in zip(i_row, p_row)], "uncertain": p_row[0] < threshold}
    return results


class Predictor:
    """A trained DeepArtNet ready for images: eval mode on its device, with its eval transform and classes."""

    def __init__(self, model: DeepArtNet, device: str | torch.device = "cpu", runner=None):
        """`runner`: what runs the batches instead of `model` (an onnxrt.OnnxModel); `model` still supplies
        the transform, the classes and the saliency maps."""
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.runner = runner if runner is not None else self.model
        self.transform = transform_from_config(model.input_cfg, train=False)
        self.min_side = min_decode_side(model.input_cfg)
        self.calibration = Calibration.from_dict(model.calibration)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto", backend: str = "torch",
                        threads: int | None = None) -> Predictor:
        """A checkpoint, a run dir or an export folder. `device`: auto (a GPU when there is one) | cpu | cuda |
        cuda:N. `backend`: torch | onnx (onnxruntime on the CPU; an export folder's model.onnx, else the model
        exported to a temporary file). `threads`: onnxruntime's intra-op threads (None: one per core)."""
        require_choice("backend", backend, BACKENDS)
        model = load_model(path)[0]
        if backend == "onnx":
            return cls(model, "cpu", onnx_runner(model, path, threads))
        return cls(model, resolve_device(device, key="device"))

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str = "auto", backend: str = "torch",
                        threads: int | None = None) -> Predictor:
        """The model of an export folder (see `load_pretrained`)."""
        if not is_export_dir(folder):
            _load_folder(folder)  # raises the ExportError that names what is wrong with the folder
        return cls.from_checkpoint(folder, device=device, backend=backend, threads=threads)

    @property
    def tasks(self) -> dict[str, list[str]]:
        return self.model.tasks

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """PIL images -> the uint8 (B, 3, H, W) batch the model takes (the eval transform), on the device."""
        return torch.stack([self.transform(to_rgb(im)) for im in images]).to(self.device)

    def decode(self, logits: dict[str, torch.Tensor], top_k: int = 5, min_confidence=None) -> list[dict]:
        """`decode_top_k` with the model's temperatures; `min_confidence`: a number in (0, 1), {task: number}
        or None (a bad value is a ConfigError naming min_confidence)."""
        thresholds = min_confidence_per_task(min_confidence, self.tasks)
        return decode_top_k(logits, self.tasks, top_k, self.calibration.temperature, thresholds)

    @torch.no_grad()
    def predict(self, images: Image.Image | Sequence[Image.Image], top_k: int = 5,
                min_confidence=None) -> dict | list[dict]:
        """Per task: label, confidence, the top-k (label, probability) pairs and whether the answer is
        uncertain (confidence below `min_confidence`, see `decode`); plus the attention map.

        Returns one dict for one image, a list for a list: {task: {"label", "confidence", "top_k", "uncertain"},
        "attention": (h, w) numpy array or None}.
        """
        single = isinstance(images, Image.Image)
        out = self.runner(self.preprocess([images] if single else list(images)))
        results = self.decode(out["logits"], top_k, min_confidence)
        for n, r in enumerate(results):
            r["attention"] = None if out["attention"] is None else out["attention"][n].float().cpu().numpy()
        return results[0] if single else results

    def batches(self, paths: Sequence[str | Path], batch_size: int, num_workers: int,
                skips: SkipCounter) -> Iterator[tuple[dict, dict]]:
        """(batch, outputs) over image files in batches of the eval transform (batch["image"] on the device),
        decoded by `num_workers` processes; unreadable files are skipped and counted in `skips`."""
        dataset = ImageDataset([str(p) for p in paths], None, self.transform, self.min_side)
        workers = min(num_workers, len(dataset) - 1) if len(dataset) > 1 else 0
        loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate)
        bar = tqdm(loader, desc="predict", unit="batch", dynamic_ncols=True, disable=len(loader) < 2)
        for batch in skips.readable(bar):
            batch["image"] = batch["image"].to(self.device)
            with torch.inference_mode():
                out = self.runner(batch["image"])
            yield batch, out


def onnx_runner(model: DeepArtNet, path: str | Path, threads: int | None = None):
    """An onnxruntime session for `model`: the export folder's model.onnx when `path` is a folder that has one,
    else `model` exported to a temporary file."""
    import tempfile

    from deepart.inference.onnxrt import OnnxModel, export_onnx
    from deepart.inference.pretrained import ONNX_FILE

    folder = Path(path)
    if folder.is_dir() and (folder / ONNX_FILE).is_file():
        onnx_path = folder / ONNX_FILE
    else:
        onnx_path = Path(tempfile.mkdtemp(prefix="deepart-onnx-")) / ONNX_FILE
        export_onnx(model, onnx_path)
    return OnnxModel(onnx_path, model.tasks, model.input_cfg, threads=threads)
