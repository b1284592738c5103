"""hydra/launcher=ray when the launcher dies: a failing run, a killed launcher and resume_sweep= (its own file so
that the test runner can run it beside tests/test_launcher.py)."""
import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from benchmarks.app_load import kill_group
from tests.conftest import REPO, demo_overrides, hold_env, run_script, wait_until_held
from tests.test_launcher import ARGS, RAY

pytestmark = pytest.mark.slow  # end-to-end: real commands and trainings (python -m pytest -m "not slow" skips them)

pytest.importorskip("ray")


def test_killed_launcher_then_resume_sweep_finishes_and_a_failing_run_is_listed(demo_root, tmp_path):
    """Run 0 trains 2 epochs, run 1 raises (batch size 0). The launcher is killed while run 0 waits after its
    first epoch and once run 1 has failed; resume_sweep= continues run 0 from its checkpoint, runs run 1 again,
    lists it, exits 1."""
    sweep, hold = tmp_path / "sweep", tmp_path / "held"
    args = ["-m", *RAY, *demo_overrides(demo_root), *ARGS, "phase.epochs=2", "phase.batch_size=16,0",
            f"hydra.sweep.dir={sweep}"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline", **hold_env("epoch_end:1", hold),
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with open(tmp_path / "launcher.log", "w") as out:
        proc = subprocess.Popen([sys.executable, str(REPO / "train.py"), *args], cwd=REPO, env=env, text=True,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until_held(proc, hold)
        worker = int(hold.read_text())
        wait_for_file(sweep / "1" / "failure.json", proc)  # run 1, on the other slot, failed meanwhile
        os.kill(proc.pid, signal.SIGKILL)  # the launcher dies; its Ray and the held run with it
        proc.wait(timeout=60)
        wait_until_gone(worker)
    except AssertionError:
        print((tmp_path / "launcher.log").read_text()[-3000:])
        raise
    finally:
        hold.unlink(missing_ok=True)
        kill_group(proc)
    assert (sweep / "0" / "checkpoints" / "last.pt").is_file() and not (sweep / "0" / "metrics.json").exists()
    assert (sweep / "1" / "failure.json").is_file()

    again = run_script("train.py", *args, f"resume_sweep={sweep}")
    assert again.returncode == 1, again.stdout[-3000:] + again.stderr[-3000:]
    assert json.loads((sweep / "0" / "metrics.json").read_text())["epochs"] == 2
    assert "resumed after epoch 1" in (sweep / "0" / "train.log").read_text()
    table = pd.read_csv(sweep / "summary.csv")
    assert table["status"].tolist() == ["done", "failed"] and "batch" in table.loc[1, "error"]
    assert "1 of 2 runs have no results" in again.stdout


def wait_for_file(path, proc: subprocess.Popen, timeout: float = 600) -> None:
    """Block until `path` exists (an event: a file a run writes); fails if the command ends first."""
    deadline = time.monotonic() + timeout
    while not path.is_file():
        assert proc.poll() is None, f"the command ended ({proc.returncode}) before {path} was written"
        assert time.monotonic() < deadline, f"{path} not written within {timeout} s"
        time.sleep(0.05)


def wait_until_gone(pid: int, timeout: float = 120) -> None:
    """Block until process `pid` has ended (gone, or a zombie nobody reaped yet)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return
        except FileNotFoundError:
            return
        time.sleep(0.05)
    raise AssertionError(f"the held run (pid {pid}) outlived its launcher by {timeout} s")
