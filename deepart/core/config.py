"""The config: composing it, checking its values, and turning its nodes into objects."""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from deepart.core.errors import ConfigError, DeepArtError, require, require_choice

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"

#: The metric that compares runs: it picks best.pt, drives early stopping and is a sweep's objective.
OBJECTIVE = "val/mean_top1"
#: Model parts that `phase.freeze` may name (attributes of DeepArtNet).
FREEZABLE = ("backbone", "proj", "encoder", "pooling", "heads")

#: `augment.policy` options (deepart.data.transforms) and `augment.mix_mode` options (deepart.data.mixing).
AUGMENT_POLICIES = ("none", "randaugment", "trivialaugment")
MIX_MODES = ("batch", "pair", "elem")
#: Largest `augment.magnitude` (torchvision's 31 magnitude bins).
MAX_MAGNITUDE = 30

_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")

#: The argument of each `data.source` function that receives `data.root` (where the dataset is).
SOURCE_ROOT_ARGS = ("root", "image_dir", "parquet")

#: Keys that were renamed: an override of the old spelling is refused with the new key.
RENAMED = {
    "data.source.root": "data.root",
    "data.image_dir": "data.root",
    "data.parquet": "data.root",
}


def refuse_renamed(overrides: Iterable[str]) -> None:
    """Raise a ConfigError naming the new key for an override that uses a renamed key (`data.source.root=`)."""
    for arg in overrides:
        key = arg.split("=", 1)[0].lstrip("+~")
        if "=" in arg and key in RENAMED:
            new = RENAMED[key]
            raise ConfigError(f"{key} is now {new} (where the dataset is, one key for every data option): "
                              f"pass {new}={arg.split('=', 1)[1]}")


def quote_numeric_choices(argv: Sequence[str], groups: Iterable[str]) -> list[str]:
    """Quote numeric option names of config groups (`phase=2` -> `phase='2'`).

    Hydra reads `phase=2` as the integer 2 and refuses it as a config-group choice; quoting makes it
    the option name "2". Comma lists for sweeps (`phase=1,2,3`) are quoted element by element.
    """
    groups = set(groups)
    out = []
    for arg in argv:
        m = re.match(r"^([~+]{0,2})([\w/]+)(@[\w.]+)?=(.*)$", arg)
        if m and m.group(2) in groups and m.group(4):
            values = m.group(4).split(",")
            if all(_NUMBER.match(v) for v in values):
                arg = f"{m.group(1)}{m.group(2)}{m.group(3) or ''}=" + ",".join(f"'{v}'" for v in values)
        out.append(arg)
    return out


def config_groups() -> list[str]:
    """Names of the config groups (sub-directories of conf/)."""
    return sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir())


def compose_config(overrides: Sequence[str] = (), config_name: str = "config") -> DictConfig:
    """The project config composed in-process with command-line style `overrides` (for scripts and tests)."""
    from hydra import compose, initialize_config_dir

    refuse_renamed(overrides)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=config_name, overrides=quote_numeric_choices(list(overrides), config_groups()))


def group_options(group: str) -> list[str]:
    """Option names of one config group."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


# `${group_options:hydra/launcher}`: a group's options, for `python train.py --help` (conf/hydra/help/train.yaml)
OmegaConf.register_new_resolver("group_options", lambda group: ", ".join(group_options(group)), replace=True)


def _check_phase(phase: DictConfig, prefix: str) -> None:
    for key in ("epochs", "batch_size"):
        value = phase.get(key)
        require(value is None or (isinstance(value, int) and value >= 1), f"{prefix}.{key}", value,
                "an integer >= 1")
    lr = phase.get("lr")
    require(lr is None or (isinstance(lr, (int, float)) and lr > 0), f"{prefix}.lr", lr, "a number > 0")
    if "freeze" in phase:
        bad = [name for name in phase.freeze if name not in FREEZABLE]
        require(not bad, f"{prefix}.freeze", list(phase.freeze), f"a list of {', '.join(FREEZABLE)}")
    if "freeze_stages" in phase:
        fs = phase.freeze_stages
        require(isinstance(fs, int) and fs >= 0, f"{prefix}.freeze_stages", fs, "an integer >= 0")


def validate(cfg: DictConfig) -> None:
    """Fail early, naming the key, on values that cannot work: the values of every group, the loss's (by building
    it, no data needed) and the runtime's (Runtime.resolve). Unknown keys and unknown group options are already
    refused by Hydra (struct mode). The one check that needs the chosen backbone, `freeze_stages` of every
    phase against its number of stages, is deepart.training.checks.check_config's, which runs this first.
    """
    from deepart.core.runtime import Runtime

    build(cfg.loss, tasks=["task"])
    Runtime.resolve(cfg.trainer)
    if cfg.phase.name == "all":
        _check_phase(cfg.phase, "phase")
        require_choice("phase.best_of", cfg.phase.best_of, ("last_phase", "any_phase"))
        for key, sub in cfg.phase.chain.items():
            _check_phase(sub, f"phase.chain.{key}")
    else:
        _check_phase(cfg.phase, "phase")

    t = cfg.trainer
    require(t.grad_clip is None or t.grad_clip > 0, "trainer.grad_clip", t.grad_clip, "a number > 0 or null")
    ema = t.ema_decay
    require(ema is None or (isinstance(ema, float) and 0 < ema < 1), "trainer.ema_decay", ema,
            "null or a number in (0, 1), e.g. 0.99")
    patience = t.early_stopping.patience
    require(patience is None or (isinstance(patience, int) and patience >= 1),
            "trainer.early_stopping.patience", patience, "an integer >= 1 or null")

    _check_data(cfg.data)
    sched = cfg.scheduler
    require(sched.warmup_epochs >= 0, "scheduler.warmup_epochs", sched.warmup_epochs, "a number >= 0")
    require(0 <= sched.min_lr_ratio <= 1, "scheduler.min_lr_ratio", sched.min_lr_ratio, "a number in [0, 1]")
    power = cfg.sampler.get("power", 1.0)  # only the weighted sampler has it
    require(power >= 0, "sampler.power", power, "a number >= 0")
    lr_scale = cfg.optimizer.backbone_lr_scale
    require(lr_scale > 0, "optimizer.backbone_lr_scale", lr_scale, "a number > 0")
    decay = cfg.optimizer.layer_decay
    require(decay is None or (_is_number(decay) and 0 < decay <= 1), "optimizer.layer_decay", decay,
            "null or a number in (0, 1], e.g. 0.75")
    _check_augment(cfg.augment)
    if cfg.lr_find:
        _check_lr_finder(cfg.lr_finder)


def _check_data(d: DictConfig) -> None:
    require(isinstance(d.image_size, int) and d.image_size >= 32, "data.image_size", d.image_size,
            "an integer >= 32")
    require(d.resize_size is None or d.resize_size >= d.image_size, "data.resize_size", d.resize_size,
            f"null or an integer >= data.image_size ({d.image_size})")
    lo, hi = d.train_crop_scale
    require(0 < lo <= hi <= 1, "data.train_crop_scale", list(d.train_crop_scale),
            "[low, high] with 0 < low <= high <= 1")
    require(d.tasks is None or (len(d.tasks) > 0 and len(set(d.tasks)) == len(d.tasks)), "data.tasks",
            d.tasks, "a non-empty list of distinct task names")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_augment(aug: DictConfig) -> None:
    require_choice("augment.policy", aug.policy, AUGMENT_POLICIES)
    require_choice("augment.mix_mode", aug.mix_mode, MIX_MODES)
    require(isinstance(aug.magnitude, int) and 0 <= aug.magnitude <= MAX_MAGNITUDE, "augment.magnitude",
            aug.magnitude, f"an integer in 0..{MAX_MAGNITUDE}")
    require(isinstance(aug.num_ops, int) and aug.num_ops >= 1, "augment.num_ops", aug.num_ops, "an integer >= 1")
    for key in ("mixup_alpha", "cutmix_alpha"):
        require(_is_number(aug[key]) and aug[key] >= 0, f"augment.{key}", aug[key], "a number >= 0 (0 = off)")
    for key in ("erasing", "mix_prob", "switch_prob"):
        require(_is_number(aug[key]) and 0 <= aug[key] <= 1, f"augment.{key}", aug[key], "a probability in [0, 1]")


def _check_lr_finder(lf: DictConfig) -> None:
    require(lf.min_lr > 0, "lr_finder.min_lr", lf.min_lr, "a number > 0")
    require(lf.max_lr > lf.min_lr, "lr_finder.max_lr", lf.max_lr, f"a number > lr_finder.min_lr ({lf.min_lr})")
    require(isinstance(lf.num_steps, int) and lf.num_steps >= 5, "lr_finder.num_steps", lf.num_steps,
            "an integer >= 5")
    require(0 <= lf.smoothing < 1, "lr_finder.smoothing", lf.smoothing, "a number in [0, 1)")


def phase_keys(cfg: DictConfig) -> list[str]:
    """The config key of each phase of phase_plan(cfg), in order: `phase`, or `phase.chain.<key>` of a chain."""
    return ["phase"] if cfg.phase.name != "all" else [f"phase.chain.{key}" for key in cfg.phase.chain]


def phase_plan(cfg: DictConfig) -> list[DictConfig]:
    """The phases a run trains, in order; `phase=all` values of epochs/lr/batch_size apply to every phase."""
    if cfg.phase.name != "all":
        return [cfg.phase]
    plan = []
    for sub in cfg.phase.chain.values():
        sub = OmegaConf.create(OmegaConf.to_container(sub, resolve=True))
        for key in ("epochs", "lr", "batch_size"):
            if cfg.phase.get(key) is not None:
                sub[key] = cfg.phase[key]
        plan.append(sub)
    return plan


def launch_keys() -> tuple[str, ...]:
    """Overrides that steer how a run is started, not what it computes (resume, resume_sweep, ...): the
    `hydra.job.config.override_dirname.exclude_keys` of conf/config.yaml, so they name no run and no config
    of a sweep."""
    hydra = OmegaConf.load(CONF_DIR / "config.yaml").hydra
    return tuple(hydra.job.config.override_dirname.exclude_keys)


def sweep_group(sweep_dir: str | Path) -> str:
    """The W&B group of a sweep's runs (and of its summary run): its dir (relative to the working dir when it is
    inside it, as Hydra's default multirun/<date>/<time> is), `/` as `_`."""
    path = Path(sweep_dir)
    if path.is_absolute():
        try:
            path = path.relative_to(Path.cwd())
        except ValueError:
            pass
    return path.as_posix().replace("/", "_")


def eval_batch_size(cfg: DictConfig, phase: DictConfig | None = None) -> int:
    """Batch size of evaluation passes: `trainer.eval_batch_size`, else twice the batch size of `phase`
    (default: the run's last phase)."""
    if cfg.trainer.get("eval_batch_size"):
        return int(cfg.trainer.eval_batch_size)
    return 2 * int((phase or phase_plan(cfg)[-1]).batch_size)


def build(node: Any, **kwargs: Any) -> Any:
    """`hydra.utils.instantiate`, but a DeepArtError raised by the target surfaces as itself (Hydra would
    wrap it in an InstantiationException naming the target instead of the problem)."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(node, **kwargs)
    except InstantiationException as exc:
        cause = exc.__cause__
        while cause is not None and not isinstance(cause, DeepArtError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        raise


def to_plain(cfg: DictConfig) -> dict:
    """The resolved config as plain Python containers (safe to store in a weights-only checkpoint)."""
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
