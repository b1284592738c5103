"""Fault injection for the project's own tests: with `DEEPART_KILL_AT=<point>:<n>` in the environment, the
process kills itself with SIGKILL (exactly what `kill -9` does: no cleanup, no exception) the n-th time it
passes <point>, so a test can kill a real `train.py` at a chosen moment. Points:

    step        after an optimizer step (mid-epoch; `step:1` of a later phase = its first steps)
    eval        after a batch of a validation pass
    save        a checkpoint written to its temporary file, not yet renamed over the old one
    phase_end   a phase completed, before the next one starts
    extract     an archive member written to its temporary file, not yet renamed into the images folder
    index_chunk a chunk of an index's vectors written (python -m deepart index), before the next one starts

Unset (the normal case) a point costs one dictionary lookup.
"""
from __future__ import annotations

import os
import signal

_passed: dict[str, int] = {}


def point(name: str) -> None:
    spec = os.environ.get("DEEPART_KILL_AT")
    if not spec:
        return
    target, _, nth = spec.partition(":")
    if name != target:
        return
    _passed[name] = _passed.get(name, 0) + 1
    if _passed[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
