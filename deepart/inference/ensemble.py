"""Ensembles of trained runs: `python eval.py ckpt=<sweep dir>` (or ckpt=[<run>,<run>,...]) and `python -m deepart
predict ckpt=<sweep dir>` evaluate / predict with the mean of the members' probabilities, per task.

The members must agree on what they predict and what they read: the same tasks with the same classes in the same
order, and the same input (image size, resize size, square padding), since one loader feeds them all. A member
that differs is refused with one line naming it and the difference. Each member keeps its own normalisation and
its own test-time augmentation pass; a member with temperatures (eval.py calibrate=true) enters with its
calibrated probabilities.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from deepart.core.checkpoint import Checkpoint
from deepart.core.errors import CheckpointError
from deepart.core.rundir import best_checkpoint, run_dir_of
from deepart.inference.loading import MODEL_ARG, is_export_dir, load_model, resolve_model_path
from deepart.models.deepartnet import INPUT_KEYS, DeepArtNet
from deepart.report.runs import run_dirs, run_status
from deepart.training.evaluation import tta_forward

log = logging.getLogger("deepart")


def sweep_runs(folder: Path) -> list[Path]:
    """The run dirs of a sweep dir with a checkpoints/best.pt, in job order (the sweep report's run_dirs). A run
    left out (no best.pt: it failed before its first epoch ended) and a member that did not finish (killed, still
    running, or pruned: it enters with its best.pt so far) are each named in a warning, so that an ensemble is
    never smaller or older than the user expects without a word."""
    runs = []
    for run in run_dirs(folder):
        status, error = run_status(run)
        if not best_checkpoint(run).is_file():
            why = f"failed: {error.splitlines()[0]}" if status == "failed" and error else status
            log.warning("ensemble: %s left out, no checkpoints/best.pt (%s)", run, why)
            continue
        if status != "done":
            log.warning("ensemble: %s is %s; it enters with its best.pt so far", run, status)
        runs.append(run)
    return runs


def member_paths(spec: Any) -> list[Path]:
    """The models `ckpt=` names: a list of runs / checkpoints / export folders (also as the text "[<run>,<run>]"),
    a sweep dir (every run in it with a best.pt), or one model (a list of one). Anything else is a CheckpointError
    saying what is accepted."""
    if isinstance(spec, (list, tuple)) or (hasattr(spec, "__iter__") and not isinstance(spec, (str, Path))):
        paths = [resolve_model_path(str(p))[1] for p in spec]
        if not paths:
            raise CheckpointError(f"ckpt=[]: name at least one model, {MODEL_ARG}")
        return paths
    text = str(spec).strip()
    if text.startswith("[") and text.endswith("]") and not Path(text).exists():  # a list as typed: [<run>,<run>]
        return member_paths([p.strip().strip("'\"") for p in text[1:-1].split(",") if p.strip()])
    path = Path(text)
    if path.is_dir() and not is_export_dir(path) and not best_checkpoint(path).is_file():
        runs = sweep_runs(path)
        if runs:
            return runs
        raise CheckpointError(f"{path}: a folder that is neither an export folder (no config.json), a run dir (no "
                              f"checkpoints/best.pt) nor a sweep dir (no run dir with checkpoints/best.pt in it); "
                              f"pass {MODEL_ARG}, a sweep dir or a list [<run>,<run>]")
    return [resolve_model_path(path)[1]]


def ensemble_home(paths: Sequence[Path]) -> Path:
    """The folder the members' run dirs (or export folders) share: their sweep dir when they are runs of one."""
    return Path(os.path.commonpath([run_dir_of(p).resolve() for p in paths]))


def member_names(paths: Sequence[Path]) -> list[str]:
    """The members' names in tables: their run dirs (or export folders) relative to the folder they share (a
    sweep dir's runs: "0", "1", ...)."""
    runs = [run_dir_of(p).resolve() for p in paths]
    home = ensemble_home(paths)
    names = [str(run.relative_to(home)) for run in runs]
    return names if all(n != "." for n in names) and len(set(names)) == len(names) else [str(p) for p in paths]


def check_members(models: Sequence[DeepArtNet], names: Sequence[str]) -> None:
    """One CheckpointError naming the first member that differs from the first one in its tasks, classes or input."""
    first, base = models[0], names[0]
    for model, name in zip(models[1:], names[1:]):
        if list(model.tasks) != list(first.tasks):
            raise CheckpointError(f"ensemble: {name} predicts the tasks {list(model.tasks)}, {base} "
                                  f"{list(first.tasks)}; members must predict the same tasks")
        for task, classes in first.tasks.items():
            if model.tasks[task] != classes:
                raise CheckpointError(f"ensemble: {name} has other {task} classes than {base} "
                                      f"({len(model.tasks[task])} vs {len(classes)}: "
                                      f"{_first_difference(model.tasks[task], classes)}); members must share the "
                                      f"class list")
        for key in INPUT_KEYS:
            if model.input_cfg.get(key) != first.input_cfg.get(key):
                raise CheckpointError(f"ensemble: {name} reads data.{key}={model.input_cfg.get(key)}, {base} "
                                      f"data.{key}={first.input_cfg.get(key)}; members must read the same input")


def _first_difference(a: list[str], b: list[str]) -> str:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"class {i} is {x!r} vs {y!r}"
    return "one list is longer"


class Ensemble(nn.Module):
    """Members evaluated as one model: forward(images) gives per task the log of the mean of the members'
    probabilities (softmax of their logits, each with its test-time augmentation `tta` and its temperature where
    it has one) as "logits" (so softmax gives the mean probabilities back), the first member's attention, and each
    member's own logits under "members"."""

    def __init__(self, models: Sequence[DeepArtNet], names: Sequence[str], tta: str = "none", tta_crop: float = 0.875):
        super().__init__()
        check_members(models, names)
        self.members = nn.ModuleList(models)
        self.names = list(names)
        self.tta, self.tta_crop = tta, tta_crop
        self.tasks = models[0].tasks
        self.input_cfg = models[0].input_cfg
        self.calibration = None

    def forward(self, images: torch.Tensor) -> dict[str, Any]:
        outs = [tta_forward(m, images, self.tta, self.tta_crop) for m in self.members]
        temperature = [(m.calibration or {}).get("temperature", {}) for m in self.members]
        logits = {}
        for task in self.tasks:
            probs = torch.stack([(o["logits"][task].float() / float(t.get(task, 1.0))).softmax(-1)
                                 for o, t in zip(outs, temperature)]).mean(0)
            logits[task] = probs.clamp_min(1e-12).log()
        return {"logits": logits, "attention": outs[0]["attention"], "members": [o["logits"] for o in outs]}


def load_ensemble(spec: Any, tta: str = "none", tta_crop: float = 0.875) -> tuple[Ensemble, list[Checkpoint | None]]:
    """The Ensemble of the models `ckpt=` names (on the CPU, eval mode) and their checkpoints (None for export
    folders)."""
    paths = member_paths(spec)
    loaded = [load_model(p) for p in paths]
    return Ensemble([m for m, _ in loaded], member_names(paths), tta, tta_crop), [c for _, c in loaded]
