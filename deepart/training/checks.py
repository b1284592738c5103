"""The start-up check of a training run: every config value, before anything is built or any data is read."""
from __future__ import annotations

from omegaconf import DictConfig

from deepart.core.config import phase_keys, phase_plan, validate
from deepart.core.errors import require
from deepart.models.backbone import stage_count


def check_config(cfg: DictConfig) -> None:
    """Raise a ConfigError naming the key of the first value that cannot work: the values of every group
    (core.config.validate), then `freeze_stages` of every phase of the plan (each phase of a chain) against the
    number of stages of the chosen backbone (counted on a weightless copy, deepart.models.backbone.stage_count)."""
    validate(cfg)
    name, stages = stage_count(cfg.backbone)
    for key, phase in zip(phase_keys(cfg), phase_plan(cfg)):
        require(phase.freeze_stages <= stages, f"{key}.freeze_stages", phase.freeze_stages,
                f"0..{stages} (backbone '{name}' has {stages} stages)")
