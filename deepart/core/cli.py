"""Command lines: fixes applied to train.py's and eval.py's argv before Hydra parses it, the one check that
required `key=` arguments are given, and the composed config of the `python -m deepart.<command>` tools."""
from __future__ import annotations

import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from deepart.core.config import CONF_DIR, compose_config, config_groups, quote_numeric_choices, refuse_renamed
from deepart.core.errors import ConfigError, first_line
from deepart.core.rundir import run_dir_of

#: Options of Hydra's own groups that a Hydra plugin provides: the plugin's distribution and the extra that
#: installs it, named when the option is chosen and Hydra cannot find it.
PLUGIN_EXTRAS = {
    ("hydra/launcher", "submitit_slurm"): ("hydra-submitit-launcher", "cluster"),
    ("hydra/launcher", "submitit_local"): ("hydra-submitit-launcher", "cluster"),
}
#: Options of Hydra's own groups that deepart's plugins (hydra_plugins/deepart_plugins) provide on top of a package
#: of an extra: the module they import and the extra, named when the option is chosen and the module is missing.
PACKAGE_EXTRAS = {
    ("hydra/launcher", "ray"): ("ray", "cluster"),
    ("hydra/sweeper", "deepart_optuna"): ("optuna", "cluster"),
}


def install_line(extra: str) -> str:
    """What installs an extra into the checkout: `pip install -e ".[cluster]"`."""
    return f'pip install -e ".[{extra}]"'


def _importable(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package that is missing; a module set to None (blocked)
        return False


def _hydra_choices(argv: list[str]) -> list[tuple[str, str, str]]:
    """(Hydra group, option, the argument choosing it) for each option of a hydra/ group the arguments choose,
    directly (`hydra/launcher=slurm`) or through the defaults of a chosen option (an `override /hydra/sweeper: x`
    in an hparams_search option; hydra/launcher/slurm.yaml: `- submitit_slurm`)."""
    from deepart.core.yamldoc import read

    out = []
    for arg in argv:
        m = re.match(r"^\+{0,2}([\w/]+)=([\w.,-]+)$", arg)
        if not m:
            continue
        group = m.group(1)
        for option in m.group(2).split(","):
            if group.startswith("hydra/"):
                out.append((group, option, arg))
            path = CONF_DIR / group / f"{option}.yaml"
            if not path.is_file():
                continue
            for entry in read(path).defaults:
                name = entry.group.removeprefix("override").strip().lstrip("/")
                if entry.option is None and group.startswith("hydra/") and name != "_self_":
                    out.append((group, name, arg))
                elif entry.option is not None and name.startswith("hydra/"):
                    out.append((name, entry.option, arg))
    return out


def require_plugins(argv: list[str]) -> None:
    """Refuse, in one line naming the extra that installs it, an option of a Hydra group (launcher, sweeper)
    that a plugin provides when Hydra cannot find it (the plugin is not installed), or that needs a package that
    is not installed (Ray, Optuna)."""
    choices = _hydra_choices(argv)
    for group, option, arg in choices:
        if (group, option) in PACKAGE_EXTRAS:
            module, extra = PACKAGE_EXTRAS[(group, option)]
            if not _importable(module):
                what = arg if arg == f"{group}={option}" else f"{arg} ({group}={option})"
                raise ConfigError(f"{what} runs on {module}, which is not installed: {install_line(extra)}")
    missing = [(group, option, arg) for group, option, arg in choices if (group, option) in PLUGIN_EXTRAS]
    if not missing:
        return
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        for group, option, arg in missing:
            if option not in loader.get_group_options(group):
                dist, extra = PLUGIN_EXTRAS[(group, option)]
                raise ConfigError(f"{arg} needs {group}={option} from the {dist} plugin, which is not installed: "
                                  f"{install_line(extra)}")


def _last_value(argv: list[str], key: str) -> str | None:
    values = [a.split("=", 1)[1] for a in argv[1:] if a.startswith(f"{key}=")]
    return values[-1] if values and values[-1] not in ("", "null") else None


def prepare_argv(argv: list[str]) -> list[str]:
    """Quote numeric group choices (`phase=2`), send `resume=<run>` back into that run's dir and
    `resume_sweep=<sweep>` back into that sweep's dir (keeping the runs' original .hydra/ files). A renamed key
    (`data.source.root=`) is a ConfigError naming the new one, a launcher or sweeper whose plugin is not installed
    one naming the extra."""
    refuse_renamed(argv[1:])
    require_plugins(argv[1:])
    argv = [argv[0], *quote_numeric_choices(argv[1:], config_groups())]
    resume = _last_value(argv, "resume")
    if resume and not any(a.startswith("hydra.run.dir=") for a in argv):
        argv += [f"hydra.run.dir={run_dir_of(resume).as_posix()}", "hydra.output_subdir=.hydra-resume"]
    sweep = _last_value(argv, "resume_sweep")
    if sweep:
        if not any(a.startswith("hydra.sweep.dir=") for a in argv):
            argv.append(f"hydra.sweep.dir={Path(sweep).as_posix()}")
        argv.append("hydra.output_subdir=.hydra-resume")
    return argv


def require_args(argv: list[str], keys: tuple[str, ...] | list[str], usage: str) -> None:
    """Refuse, in one line, a command line (`key=value` arguments, argv[0] excluded) lacking any of `keys`
    or giving one an empty value: `ckpt=... is required: <usage>`. Entry points call it before Hydra."""
    for key in keys:
        if _last_value(["", *argv], key) is None:
            raise ConfigError(f"{key}=... is required: {usage}")


def compose_cli(config_name: str, argv: list[str], required: tuple[str, ...] = (), usage: str = "",
                paths: tuple[str, ...] = ()) -> DictConfig:
    """conf/<config_name>.yaml composed with Hydra's compose API and the `key=value` arguments of a command
    (no run dir, no logging set-up); unknown keys and malformed arguments are one-line ConfigErrors. Values of
    the `paths` keys are taken literally (commas, brackets, globs in file names), except null. `-h` / `--help`
    prints the usage and every key of the config with its default and comment, and exits."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    if any(a in ("-h", "--help") for a in argv):
        from deepart.core.yamldoc import help_text

        print(help_text(CONF_DIR / f"{config_name}.yaml", usage, "docs/reference/commands.md"))
        raise SystemExit(0)
    require_args(argv, required, usage)
    for arg in argv:
        if "=" not in arg:
            raise ConfigError(f"argument {arg!r} is not key=value; usage: {usage}")
    argv = [quote_path(a) if a.split("=", 1)[0] in paths else a for a in argv]
    try:
        return compose_config(argv, config_name=config_name)
    except (HydraException, OmegaConfBaseException) as exc:
        options = _top_keys(config_name)
        unknown = [a.split("=", 1)[0] for a in argv if a.split("=", 1)[0] not in options]
        if unknown:
            raise ConfigError(f"unknown option {unknown[0]!r}; the options are in conf/{config_name}.yaml: "
                              f"{', '.join(options)}") from None
        raise ConfigError(first_line(exc)) from None


def quote_path(arg: str) -> str:
    """`key=value` with the value single-quoted, so that Hydra's override grammar takes it literally (commas,
    brackets, spaces, quotes in a path); null, an empty value and a value already quoted stay as they are."""
    key, value = arg.split("=", 1)
    if value in ("null", "") or (len(value) > 1 and value[0] == value[-1] and value[0] in "'\""):
        return arg
    return f"{key}='" + value.replace("'", "\\'") + "'"


def _top_keys(config_name: str) -> list[str]:
    return [k for k in OmegaConf.load(CONF_DIR / f"{config_name}.yaml") if k != "hydra"]


def interrupted(sweep_dir: str | None = None, run_dir: str | None = None) -> SystemExit:
    """Ctrl-C of train.py: one line on stderr that says what stopped and how to continue, and exit status 130 (as a
    shell reports an interrupted command); no traceback. `sweep_dir`: a sweep's or search's folder
    (resume_sweep=); `run_dir`: a single run's (resume=); neither: Ctrl-C came before a run started."""
    import sys

    if sweep_dir:
        text = (f"the runs that were running stopped (KILLED in their loggers); continue with the same command plus "
                f"resume_sweep={sweep_dir}")
    elif run_dir:
        text = f"the run stopped (KILLED in its loggers); continue it with python train.py resume={run_dir}"
    else:
        text = "stopped before a run started"
    print(f"\ninterrupted (Ctrl-C): {text}", file=sys.stderr, flush=True)
    return SystemExit(130)
