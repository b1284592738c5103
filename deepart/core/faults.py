"""Fault injection for the project's own tests, at named points of a real process:

- `DEEPART_KILL_AT=<point>:<n>`: the process kills itself with SIGKILL (exactly what `kill -9` does: no
  cleanup, no exception) the n-th time it passes <point>, so a test can kill a real `train.py` at a chosen
  moment.
- `DEEPART_HOLD_AT=<point>:<n>` with `DEEPART_HOLD_FILE=<path>`: the n-th time it passes <point>, the process
  writes its pid to <path> and waits there until <path> is removed. A test waits for the file (an event, not a
  guess at timing), acts on the held process (a real SIGINT or SIGKILL from outside, a file-size limit, ...),
  then removes the file to let it go on. A signal that ends the process ends the wait too (Ctrl-C raises
  KeyboardInterrupt at the point, as it would anywhere else). `{pid}` in the path is replaced by the process id,
  so that several processes (the runs of a parallel sweep) each hold on a file of their own. The n-th pass is
  counted per process: one that runs several jobs one after the other (Hydra's basic launcher, a warm worker of
  the Ray launcher) counts across them.

Points:

    step        after an optimizer step (mid-epoch; `step:1` of a later phase = its first steps)
    eval        after a batch of a validation pass
    save        a checkpoint written to its temporary file, not yet renamed over the old one
    epoch_end   an epoch logged and its checkpoints written (last.pt in place), before the next epoch
    phase_end   a phase completed, before the next one starts
    extract     an archive member written to its temporary file, not yet renamed into the images folder
    index_chunk a chunk of an index's vectors written (python -m deepart index), before the next one starts
    feature_chunk a chunk of the backbone-feature cache written (training with trainer.feature_cache), before
                the next one starts
    trial_asked an Optuna search asked its study for a trial and has not yet given it a run (hparams_search=optuna)
    app_batch   the web app's model thread took a batch of requests and has not run it yet (python -m deepart app)
    job_start   a Ray worker took a job and wrote its placement.json, before Hydra writes the run's .hydra/
    worker_cleanup a Ray worker freeing what its run left (the run's results written), before its next run

- `DEEPART_RAISE_AT=<point>:<n>`: the n-th time it passes <point>, the process raises a RuntimeError whose message
  is `DEEPART_RAISE_MESSAGE` (default "injected fault at <point>"), e.g. "CUDA error: an illegal memory access was
  encountered" for a run whose GPU context is lost for the process's life.

`DEEPART_FAULT_JOB=<n>` (optional) limits all three to the Hydra job number n of a sweep: other jobs pass the points
uncounted, so a test can stop one chosen run of a sweep whose jobs share a process.

Unset (the normal case) a point costs two dictionary lookups.
"""
from __future__ import annotations

import os
import signal
import time

_passed: dict[tuple[str, str], int] = {}


def _reached(variable: str, name: str) -> bool:
    """Whether this pass of point `name` is the one `variable` (<point>:<n>) names."""
    spec = os.environ.get(variable)
    if not spec:
        return False
    target, _, nth = spec.partition(":")
    if name != target or not _in_chosen_job():
        return False
    key = (variable, name)
    _passed[key] = _passed.get(key, 0) + 1
    return _passed[key] == int(nth or 1)


def _in_chosen_job() -> bool:
    job = os.environ.get("DEEPART_FAULT_JOB")
    if not job:
        return True
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.initialized() and str(HydraConfig.get().job.get("num")) == job


def hold(path: str) -> None:
    """Announce this process at `path` (written whole: a reader never sees it half-written), then wait until
    the file is gone."""
    path = path.replace("{pid}", str(os.getpid()))
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(str(os.getpid()))
    os.replace(tmp, path)
    while os.path.exists(path):
        time.sleep(0.005)


def point(name: str) -> None:
    if _reached("DEEPART_KILL_AT", name):
        os.kill(os.getpid(), signal.SIGKILL)
    if _reached("DEEPART_HOLD_AT", name):
        hold(os.environ["DEEPART_HOLD_FILE"])
    if _reached("DEEPART_RAISE_AT", name):
        raise RuntimeError(os.environ.get("DEEPART_RAISE_MESSAGE") or f"injected fault at {name}")
