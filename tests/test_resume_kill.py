"""Resume is exact wherever a real kill lands: a real train.py (default data-loader workers, the 3-phase chain)
is killed with SIGKILL at several points, resumed each time, and ends with the metrics of an uninterrupted run.

The kill points come from deepart.core.faults (DEEPART_KILL_AT=<point>:<n>: the process sends itself SIGKILL
there) and one from outside, as a user would: `kill -9` as soon as a checkpoint appears."""
from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, TINY, TINY_SEQUENCER, demo_overrides, hold_env, wait_until_held

pytestmark = pytest.mark.slow  # end-to-end: real commands and trainings (python -m pytest -m "not slow" skips them)

# the tiny demo config with the default number of data-loader workers and the 3-phase chain
CHAIN = [*TINY, *TINY_SEQUENCER, "data.num_workers=null", "phase=all", "phase.epochs=2"]
KEYS = ["val/style/top1", "val/style/top5", "val/genre/top1", "val/artist/top1", "val/mean_top1", "val/loss"]


def start(args: list[str], kill_at: str | None = None, env: dict[str, str] | None = None,
          **popen) -> subprocess.Popen:
    """A real train.py; `kill_at`: the fault point where it kills itself; `env`: more variables (a hold point)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0", **(env or {})}
    env.pop("DEEPART_KILL_AT", None)
    if kill_at:
        env["DEEPART_KILL_AT"] = kill_at
    return subprocess.Popen([sys.executable, str(REPO / "train.py"), *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def finish(proc: subprocess.Popen, timeout: int = 1200) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


@pytest.fixture(scope="module")
def uninterrupted(demo_root, tmp_path_factory) -> dict:
    run_dir = tmp_path_factory.mktemp("straight")
    code, out = finish(start([*demo_overrides(demo_root), *CHAIN, f"hydra.run.dir={run_dir}"]))
    assert code == 0, out[-3000:]
    return json.loads((run_dir / "metrics.json").read_text())


def assert_same_run(resumed: dict, straight: dict) -> None:
    for section in ("final", "best"):
        for key in KEYS:
            assert resumed[section][key] == pytest.approx(straight[section][key], abs=1e-6), (section, key)
    for name, phase in straight["phases"].items():
        assert resumed["phases"][name]["best_epoch"] == phase["best_epoch"], name
        assert resumed["phases"][name]["final"]["val/mean_top1"] == pytest.approx(
            phase["final"]["val/mean_top1"], abs=1e-6), name


def test_sigkill_anywhere_then_resume_gives_the_uninterrupted_metrics(demo_root, tmp_path, uninterrupted):
    run_dir = tmp_path / "run"
    resume = [f"resume={run_dir}"]
    # (kill point, what it interrupts); each process resumes the run its predecessor left
    lineage = [
        ("step:2", "the first steps of phase 1, before any checkpoint exists"),
        ("eval:2", "the validation of phase 1's second epoch"),
        ("phase_end:1", "the gap between phase 1 and phase 2"),
        ("step:1", "the first step of phase 2"),
        ("save:2", "the write of phase 2's first last.pt (written, not yet renamed)"),
    ]
    for n, (kill_at, what) in enumerate(lineage):
        args = [*demo_overrides(demo_root), *CHAIN, f"hydra.run.dir={run_dir}"] if n == 0 else resume
        code, out = finish(start(args, kill_at))
        assert code == -signal.SIGKILL, f"not killed at {kill_at} ({what}): exit {code}\n{out[-2000:]}"
    assert list((run_dir / "checkpoints" / "phase-2").glob(".last.pt.*.tmp"))  # the write that was cut short

    # a kill from outside, as a user would: kill -9 once phase 2's last.pt is there (the process held at the end
    # of that epoch, so the kill lands at a known moment however busy the machine is)
    target = run_dir / "checkpoints" / "phase-2" / "last.pt"
    hold_file = tmp_path / "held"
    proc = start(resume, env=hold_env("epoch_end:1", hold_file))  # removes that temporary file, runs phase 2 again
    wait_until_held(proc, hold_file)
    assert target.exists()
    proc.send_signal(signal.SIGKILL)
    code, out = finish(proc)
    assert code == -signal.SIGKILL, out[-2000:]
    assert not (run_dir / "metrics.json").exists()

    code, out = finish(start(resume))
    assert code == 0, out[-3000:]
    assert not list((run_dir / "checkpoints").glob("**/*.tmp"))
    assert_same_run(json.loads((run_dir / "metrics.json").read_text()), uninterrupted)


def test_checkpoints_follow_the_umask(demo_root, tmp_path):
    """Like any other file the run writes (a team on a shared cluster reads each other's runs)."""
    from tests.conftest import run_script

    old = os.umask(0o022)
    try:
        res = run_script("train.py", *demo_overrides(demo_root), *TINY, *TINY_SEQUENCER, f"hydra.run.dir={tmp_path}")
    finally:
        os.umask(old)
    assert res.returncode == 0, res.stderr[-3000:]
    for path in (tmp_path / "checkpoints").glob("*.pt"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    assert stat.S_IMODE((tmp_path / "metrics.json").stat().st_mode) == 0o644


def _ignore_file_size_signal() -> None:
    """In the child: a write beyond RLIMIT_FSIZE then fails with EFBIG instead of killing the process."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def test_a_failed_checkpoint_write_stops_the_run_and_keeps_the_previous_checkpoints(demo_root, tmp_path):
    """After epoch 1's checkpoint, the file system starts refusing writes (a file size limit put on the
    running process: the same error path as a full disk). The run stops with an error naming the file,
    epoch 1's last.pt / best.pt are intact, and resuming finishes the run as if nothing had happened."""
    import resource

    from deepart.core.checkpoint import Checkpoint
    from tests.conftest import run_script

    args = [*demo_overrides(demo_root), *TINY, *TINY_SEQUENCER, "phase.epochs=2"]
    straight = run_script("train.py", *args, f"hydra.run.dir={tmp_path / 'straight'}")
    assert straight.returncode == 0, straight.stderr[-3000:]

    run_dir = tmp_path / "run"
    last = run_dir / "checkpoints" / "last.pt"
    hold_file = tmp_path / "held"
    proc = start([*args, f"hydra.run.dir={run_dir}"], env=hold_env("epoch_end:1", hold_file),
                 preexec_fn=_ignore_file_size_signal)
    wait_until_held(proc, hold_file)  # epoch 1's checkpoints written; epoch 2 not started
    limit = last.stat().st_size // 2
    resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (limit, limit))
    hold_file.unlink()  # go on: epoch 2's checkpoint write fails
    code, out = finish(proc)
    assert code == 2, out[-3000:]
    assert f"could not write checkpoint {run_dir / 'checkpoints'}" in out and "Traceback" not in out
    assert Checkpoint.load(last).epoch == 1 and Checkpoint.load(run_dir / "checkpoints" / "best.pt").epoch == 1
    assert not list((run_dir / "checkpoints").glob("*.tmp"))

    done = run_script("train.py", f"resume={run_dir}")
    assert done.returncode == 0, done.stderr[-3000:]
    resumed = json.loads((run_dir / "metrics.json").read_text())
    expected = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    assert resumed["epochs"] == 2
    for key in KEYS:
        assert resumed["final"][key] == pytest.approx(expected["final"][key], abs=1e-6), key


def test_resume_of_a_run_with_nothing_to_resume_is_a_clear_error(tmp_path):
    from tests.conftest import run_script

    res = run_script("train.py", f"resume={tmp_path / 'never_ran'}")
    assert res.returncode == 2
    assert "no checkpoints/last.pt" in res.stdout + res.stderr and "Traceback" not in res.stdout + res.stderr
    assert not Path(tmp_path / "never_ran" / "metrics.json").exists()
