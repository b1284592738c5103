"""Checkpoints: one schema (`Checkpoint`), written and read here only.

A checkpoint is complete (model, optimizer, scheduler, loss weights, progress, RNG states, the resolved
config and the class names), written atomically, and readable with `torch.load(weights_only=True)`:
only tensors and plain containers are stored, so loading a checkpoint from someone else cannot run code.

Where they live in a run dir is deepart.core.rundir's (`phase_dir`, `run_dir_of`, `newest_last`; importable
from here too).
"""
from __future__ import annotations

import dataclasses
import os
import pickle
import random
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deepart.core import faults
from deepart.core.config import SOURCE_ROOT_ARGS
from deepart.core.errors import CheckpointError, first_line
from deepart.core.rundir import CHECKPOINTS, newest_last, phase_dir, run_dir_of

__all__ = ["CHECKPOINTS", "Checkpoint", "atomic_copy", "atomic_save", "capture_rng", "newest_last", "phase_dir",
           "remove_partial_writes", "restore_rng", "run_dir_of"]

FORMAT = "deepart-checkpoint"
VERSION = 2
TMP_SUFFIX = ".tmp"


@dataclass
class Checkpoint:
    """What a run stores after every epoch: enough to continue it exactly, or to use its model."""

    model: dict[str, torch.Tensor]          # DeepArtNet state dict
    config: dict[str, Any]                  # the run's resolved config (plain containers)
    tasks: dict[str, list[str]]             # task -> class names (index = label)
    phase: dict[str, Any]                   # the phase that wrote it: {"name": "2", "index": 1}
    progress: dict[str, Any]                # that phase's progress (training.phases.PhaseState as a dict)
    loss: dict[str, torch.Tensor] | None = None       # MultiTaskLoss state (learned task weights)
    optimizer: dict[str, Any] | None = None
    scheduler: dict[str, Any] | None = None
    rng: dict[str, Any] | None = None       # `capture_rng()` at the time of writing
    global_step: int = 0
    skipped_images: int = 0                 # unreadable images skipped by the run so far
    runtime_s: float = 0.0                  # seconds of training so far, over every process of the run
    wandb_run_id: str | None = None
    ema: dict[str, torch.Tensor] | None = None  # the moving average of the weights (trainer.ema_decay), if any
    calibration: dict[str, Any] | None = None   # per-task temperatures fitted by `eval.py calibrate=true`
                                                # (objectives.calibration.Calibration as a dict); None: T = 1
    path: Path | None = field(default=None, compare=False)  # where it was read from (not stored)

    @property
    def epoch(self) -> int:
        """Epochs completed by the phase that wrote it."""
        return int(self.progress.get("epoch", 0))

    @property
    def weights(self) -> dict[str, torch.Tensor]:
        """The weights the run validated and selected: the moving average when there is one, else the model's."""
        return self.ema if self.ema is not None else self.model

    @property
    def metrics(self) -> dict[str, float]:
        """Val metrics of the phase's last completed epoch."""
        return dict(self.progress.get("final", {}))

    def restore_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Load the saved optimizer state into `optimizer`, built as this run builds it. Parameter groups that
        differ in number or size (a run saved before its backbone's layer / weight decay groups changed) are a
        CheckpointError naming the checkpoint and `init_from=`, which starts a new run from its weights."""
        saved = [len(g["params"]) for g in (self.optimizer or {}).get("param_groups", [])]
        now = [len(g["params"]) for g in optimizer.param_groups]
        if saved != now:
            raise CheckpointError(
                f"{self.path}: its optimizer has {len(saved)} parameter groups ({sum(saved)} tensors), this run's "
                f"{len(now)} ({sum(now)} tensors), so resume= cannot continue it (saved with other groups, e.g. "
                f"before layer and weight decay followed timm's); start a new run from its weights with "
                f"init_from={self.path}")
        optimizer.load_state_dict(self.optimizer)

    def save(self, path: str | Path) -> None:
        """Write atomically: a temporary file in the same folder, fsync, then rename over `path`."""
        payload = {"format": FORMAT, "version": VERSION,
                   **{f.name: getattr(self, f.name) for f in fields(self) if f.name != "path"}}
        atomic_save(payload, Path(path))

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
        """Read a deepart checkpoint (weights only). Raises CheckpointError with a clear message."""
        path = Path(path)
        raw = _read(path, map_location)
        if raw.get("version", 1) == 1:
            raw = _upgrade_v1(raw)
        if isinstance(raw.get("config"), dict):
            raw["config"] = upgrade_config(raw["config"])
        missing = [f.name for f in fields(cls) if f.name not in raw
                   and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        if missing:
            raise CheckpointError(f"{path} lacks {missing}: incomplete deepart checkpoint")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known}, path=path)


def atomic_save(payload: dict[str, Any], path: Path) -> None:
    """Write to a temporary file beside `path` (readable as the umask allows, like any other file), fsync,
    then rename it over `path`: a kill or a failed write at any moment leaves the previous file intact.
    A failed write (disk full, file size limit, permissions) is a CheckpointError naming the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        faults.point("save")
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:  # torch's zip writer reports a failed write as a RuntimeError
        Path(tmp).unlink(missing_ok=True)
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "the file could not be written"
        raise CheckpointError(f"could not write checkpoint {path}: {reason} (disk full or a file size limit?). "
                              f"The previous {path.name} is intact; free some space and continue the run with "
                              f"resume={run_dir_of(path)}") from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_copy(src: Path, dst: Path) -> None:
    """Copy a checkpoint file so that `dst` is always either the old file or the complete new one."""
    tmp = dst.with_name(f".{dst.name}.copy{TMP_SUFFIX}")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def remove_partial_writes(run_dir: str | Path) -> list[Path]:
    """Delete temporary files that a killed write left in a run's checkpoint folders; returns them."""
    stale = sorted((Path(run_dir) / CHECKPOINTS).glob(f"**/.*{TMP_SUFFIX}"))
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return stale


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _read(path: Path, map_location) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}. Pass the path of a .pt file written by "
                              f"train.py, e.g. <run dir>/checkpoints/best.pt.")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path} is not a PyTorch checkpoint archive (truncated or corrupt file?). "
                              f"Use a .pt file written by train.py.")
    try:
        raw = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(f"{path} holds objects other than tensors and plain containers; it is refused "
                              f"because loading it could run code. deepart checkpoints never contain such "
                              f"objects.") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated or corrupt?): {first_line(exc)}") \
            from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a deepart checkpoint (no '{FORMAT}' marker)")
    return raw


#: Version 1 named the model's encoder and pooling modules `sequencer` and `attention`.
_V1_PARTS = {"sequencer": "encoder", "attention": "pooling"}


def _upgrade_v1(raw: dict[str, Any]) -> dict[str, Any]:
    """A version-1 checkpoint in the version-2 schema (same content, renamed parts, no duplicate fields)."""
    out = {k: v for k, v in raw.items() if k not in ("state", "epoch", "completed", "metrics", "scaler")}
    progress = dict(raw.get("state") or {})
    progress.setdefault("epoch", raw.get("epoch", 0))
    progress.setdefault("final", raw.get("metrics") or {})
    out["progress"] = progress
    out.setdefault("phase", {"name": "?", "index": 0})
    out["model"] = {_v2_name(k): v for k, v in raw.get("model", {}).items()}
    phases = [out.get("config", {}).get("phase", {})]
    phases += list(phases[0].get("chain", {}).values())
    for phase in phases:
        if "freeze" in phase:
            phase["freeze"] = [_V1_PARTS.get(p, p) for p in phase["freeze"]]
    return out


def _v2_name(key: str) -> str:
    head, dot, rest = key.partition(".")
    return _V1_PARTS.get(head, head) + dot + rest


#: Classes of the config that moved: old `_target_` -> new one (configs saved in older checkpoints).
_MOVED_TARGETS = {"deepart.models.sequencers.": "deepart.models.encoders.",
                  "deepart.losses.": "deepart.objectives.losses.",
                  "deepart.sweep.": "deepart.training.sweep."}
#: Keys added to the config after checkpoints were first saved, with the value that behaves as before they existed.
ADDED_KEYS = {
    "trainer.device": "auto", "trainer.precision": "auto", "trainer.channels_last": "auto", "trainer.threads": None,
    "trainer.ema_decay": None, "trainer.tta_hflip": False, "data.square_pad": False,
    "data.train_crop_scale": [0.35, 1.0], "data.hflip": True, "data.cache": "auto", "sampler.power": 1.0,
    "optimizer.backbone_lr_scale": 1.0, "optimizer.layer_decay": None,
}
#: Config sections added after checkpoints were first saved, at the values that behave as before (all off).
ADDED_SECTIONS = {
    "augment": {"policy": "none", "magnitude": 9, "num_ops": 2, "erasing": 0.0, "mixup_alpha": 0.0,
                "cutmix_alpha": 0.0, "mix_prob": 1.0, "switch_prob": 0.5, "mix_mode": "batch"},
    "texture": {"kind": "none"},
}
#: The loss criteria that were strings (`loss.criterion`) before they were classes picked by `_target_`.
_CRITERIA = {"focal": "deepart.objectives.losses.FocalLoss", "ce": "deepart.objectives.losses.CrossEntropyLoss"}


def upgrade_config(config: dict[str, Any]) -> dict[str, Any]:
    """A saved config in today's layout: moved `_target_` classes renamed, keys added since (`ADDED_KEYS`) at the
    value that reproduces the old behaviour, `data.root` from the `data.source`
    argument that held it before that key existed, a string `loss.criterion` as the loss class it names. Configs
    already in today's layout are returned as they are."""
    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            node = {k: walk(v) for k, v in node.items()}
            target = node.get("_target_")
            for old, new in _MOVED_TARGETS.items():
                if isinstance(target, str) and target.startswith(old):
                    node["_target_"] = new + target[len(old):]
            return node
        return [walk(v) for v in node] if isinstance(node, list) else node

    config = walk(config)
    for section, values in ADDED_SECTIONS.items():
        if "model" in config:   # a whole run config (not a fragment)
            config.setdefault(section, dict(values))
    for dotted, value in ADDED_KEYS.items():
        section, key = dotted.split(".")
        if isinstance(config.get(section), dict):
            config[section].setdefault(key, value)
    if isinstance(config.get("phase"), dict) and config["phase"].get("name") == "all":
        config["phase"].setdefault("best_of", "last_phase")
    data = config.get("data")
    if isinstance(data, dict) and "root" not in data and isinstance(data.get("source"), dict):
        for key in SOURCE_ROOT_ARGS:
            if key in data["source"]:
                data["root"] = data["source"][key]
                break
    loss = config.get("loss")
    if isinstance(loss, dict) and isinstance(loss.get("criterion"), str) and loss["criterion"] in _CRITERIA:
        criterion = loss.pop("criterion")
        loss["_target_"] = _CRITERIA[criterion]
        if criterion == "ce":
            loss.pop("gamma", None)
    return config


# ---------------------------------------------------------------------------------------------- RNG
def capture_rng() -> dict[str, Any]:
    """RNG states of Python, NumPy and torch (CPU and CUDA) as tensors and plain containers."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(np_state[1].copy()), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate(_as_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy(), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _as_tuple(x):
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x
