"""Command-line fixes applied to train.py's and eval.py's argv before Hydra parses it."""
from __future__ import annotations

from pathlib import Path

from deepart.core.config import config_groups, quote_numeric_choices
from deepart.core.rundir import run_dir_of


def _last_value(argv: list[str], key: str) -> str | None:
    values = [a.split("=", 1)[1] for a in argv[1:] if a.startswith(f"{key}=")]
    return values[-1] if values and values[-1] not in ("", "null") else None


def prepare_argv(argv: list[str]) -> list[str]:
    """Quote numeric group choices (`phase=2`), send `resume=<run>` back into that run's dir and
    `resume_sweep=<sweep>` back into that sweep's dir (keeping the runs' original .hydra/ files)."""
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
