"""The start-up check of a training run: every config value, before anything is built or any data is read, and
what the config amounts to (`RunPlan`), worked out once there."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from deepart.core.config import eval_batch_size, phase_keys, phase_plan, validate
from deepart.core.errors import ConfigError, require, require_choice
from deepart.data.cache import CACHE_MODES
from deepart.data.table import MISSING_IMAGES
from deepart.models import build_model
from deepart.models.backbone import weights_path


@dataclass(frozen=True)
class RunPlan:
    """A checked config's derived values, computed once at start-up and handed to what trains: the phases in
    order (a chain's `phase.epochs` / `lr` / `batch_size` applied to each), each phase's config key, and the
    backbone's name and number of stages."""

    phases: tuple[DictConfig, ...]
    keys: tuple[str, ...]
    backbone: str
    stages: int

    def eval_batch_size(self, cfg: DictConfig, phase: DictConfig | None = None) -> int:
        """Batch size of validation in `phase` (default: the last phase)."""
        return eval_batch_size(cfg, phase if phase is not None else self.phases[-1])


def check_config(cfg: DictConfig) -> RunPlan:
    """Raise a ConfigError naming the key of the first value that cannot work, then return the run's plan: the
    values of every group (core.config.validate); the model's parts (backbone, sequencer, heads) built weightless
    on the meta device and `backbone.weights` found, so a bad `backbone.*` or `sequencer.*` fails here and not after
    the data is read; the
    data keys the loaders would refuse later (`data.cache`, `data.source.missing_images`, `sampler.tasks`
    against `data.tasks`); `freeze_stages` of every phase against the backbone's number of stages."""
    validate(cfg)
    _check_data(cfg)
    if cfg.backbone.get("weights"):
        weights_path(cfg.backbone.weights)   # the file (or package) is there; it is read when the model is built
    with torch.device("meta"):
        backbone = build_model(cfg, {"task": ["a", "b"]}, pretrained=False).backbone
        _check_grid(backbone, cfg.backbone.get("name", backbone.name), cfg.data.image_size)
    plan = RunPlan(tuple(phase_plan(cfg)), tuple(phase_keys(cfg)), backbone.name, backbone.num_stages)
    for key, phase in zip(plan.keys, plan.phases):
        require(phase.freeze_stages <= plan.stages, f"{key}.freeze_stages", phase.freeze_stages,
                f"0..{plan.stages} (backbone '{plan.backbone}' has {plan.stages} stages)")
    return plan


def _check_grid(backbone, name: str, image_size: int) -> None:
    """The backbone gives a feature grid at the data's image size: one forward pass on the meta device (shapes
    only, no compute), so a model that cannot fails here in one line and not at the first step."""
    try:
        fmap = backbone(torch.empty(1, 3, image_size, image_size))
        ok = fmap.ndim == 4 and fmap.shape[1] == backbone.out_channels and min(fmap.shape[2:]) >= 1
        detail = f"it gives {tuple(fmap.shape)}, not (1, {backbone.out_channels}, h, w)"
    except Exception as exc:  # whatever the model raises, the user needs the key that chose it
        ok, detail = False, f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200] if str(exc) else ''}"
    if not ok:
        raise ConfigError(f"backbone.name={name}: no feature grid at data.image_size={image_size} ({detail}); pick "
                          "another backbone or image size (conf/backbone/ lists the tested ones)")


def _check_data(cfg: DictConfig) -> None:
    require_choice("data.cache", cfg.data.cache, CACHE_MODES)
    if "missing_images" in cfg.data.source:
        require_choice("data.source.missing_images", cfg.data.source.missing_images, MISSING_IMAGES)
    balanced = cfg.sampler.get("tasks")
    if balanced is not None:
        require(len(balanced) > 0 and all(isinstance(t, str) for t in balanced), "sampler.tasks", balanced,
                "null (every task) or a non-empty list of task names")
        if cfg.data.tasks:
            require(set(balanced) <= set(cfg.data.tasks), "sampler.tasks", list(balanced),
                    f"null or a subset of data.tasks {list(cfg.data.tasks)}")
