"""Entry-point helpers: argv fixes before Hydra parses it, and user errors without a traceback."""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Callable

from deepart.config import config_groups, quote_numeric_choices
from deepart.errors import DeepArtError

log = logging.getLogger("deepart")


def prepare_argv(argv: list[str]) -> list[str]:
    """Quote numeric group choices (`phase=2`), send `resume=<run>` back into that run's dir and
    `resume_sweep=<sweep>` back into that sweep's dir (keeping the runs' original .hydra/ files)."""
    argv = [argv[0], *quote_numeric_choices(argv[1:], config_groups())]
    resume = [a.split("=", 1)[1] for a in argv[1:] if a.startswith("resume=")]
    if resume and resume[-1] not in ("", "null") and not any(a.startswith("hydra.run.dir=") for a in argv):
        target = Path(resume[-1])
        run_dir = target
        if target.suffix == ".pt":
            run_dir = target.parent.parent.parent if target.parent.name.startswith("phase-") else target.parent.parent
        argv += [f"hydra.run.dir={run_dir.as_posix()}", "hydra.output_subdir=.hydra-resume"]
    sweep = [a.split("=", 1)[1] for a in argv[1:] if a.startswith("resume_sweep=")]
    if sweep and sweep[-1] not in ("", "null"):
        if not any(a.startswith("hydra.sweep.dir=") for a in argv):
            argv.append(f"hydra.sweep.dir={Path(sweep[-1]).as_posix()}")
        argv.append("hydra.output_subdir=.hydra-resume")
    return argv


def run_reporting_errors(fn: Callable, *args, **kwargs):
    """Call `fn`; a DeepArtError becomes one clear line on stderr and exit status 2."""
    try:
        return fn(*args, **kwargs)
    except DeepArtError as exc:
        if logging.getLogger().handlers:  # inside a Hydra job: console and the job's log file
            log.error("%s", exc)
        else:
            print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
