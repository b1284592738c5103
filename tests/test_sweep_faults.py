"""What one run of a sweep leaves for the next run of the same process (the basic launcher's jobs, a Ray slot's warm
worker), and the sweep's faults: a killed search resumed, Ctrl-C, a run lost with its worker, a poisoned worker."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from deepart.training.trainer import train
from tests.conftest import (
    REPO,
    TINY,
    TINY_SEQUENCER,
    demo_overrides,
    hold_env,
    run_script,
    the_sweep_dir,
    wait_until_held,
)

#: data.num_workers left at null on Ray: the launcher sizes it to the run's cores
LAUNCHER_ARGS = [*(o for o in TINY if not o.startswith("data.num_workers=")), *TINY_SEQUENCER]


def test_threads_null_after_a_run_with_one_thread_gives_back_the_default(tiny_cfg, tmp_path, monkeypatch, caplog):
    """Two runs of one process, as the basic launcher runs `-m trainer.threads=1,null`: the second has the default
    thread count (OMP_NUM_THREADS here), not the 1 the first set."""
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    before = torch.get_num_threads()
    try:
        with caplog.at_level("INFO", logger="deepart"):
            train(tiny_cfg("trainer.threads=1"), run_dir=tmp_path / "0")
            assert torch.get_num_threads() == 1
            train(tiny_cfg("trainer.threads=null"), run_dir=tmp_path / "1")
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    lines = [r.getMessage() for r in caplog.records if "steps/epoch on cpu" in r.getMessage()]
    assert len(lines) == 2 and lines[0].endswith("1 thread") and lines[1].endswith("2 threads"), lines


# --- end-to-end: real sweeps and searches, typed in a fresh folder with Hydra's default sweep dir ---------------

def popen(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    """train.py started as from a terminal: a process group of its own (Ctrl-C goes to the group) and Python's
    default SIGINT handling (a shell's background job would start with SIGINT ignored)."""
    full = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline",
            "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), **env}
    log = open(cwd / "command.log", "w")
    return subprocess.Popen([sys.executable, str(REPO / "train.py"), *args], cwd=cwd, env=full, text=True,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def ctrl_c(proc: subprocess.Popen, cwd: Path) -> tuple[int, str]:
    """SIGINT to the command's process group, as a terminal's Ctrl-C; (its exit status, its output)."""
    os.killpg(proc.pid, signal.SIGINT)
    try:
        code = proc.wait(timeout=600)  # a safety net: an interrupted search ends in seconds
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return code, (cwd / "command.log").read_text()


def listening(session: int) -> list[tuple[str, str, bool]]:
    """(process name, local address, on the loopback) of every TCP socket listening in a process of `session`
    (read from /proc: the sockets in /proc/net/tcp and tcp6 in state LISTEN, matched to the processes' fds)."""
    sockets = {}
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                address, port = fields[1].split(":")
                # the address in 32-bit words, each little-endian: 127.x.x.x ends its (last) word in 7F;
                # ::1 is 0...0 then the word 01000000
                loopback = address[-2:] == "7F" or address == "0" * 24 + "01000000"
                sockets[fields[9]] = (f"{address}:{int(port, 16)}", loopback)
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if not proc.name.isdigit() or os.getsid(int(proc.name)) != session:
                continue
            name = (proc / "comm").read_text().strip()
            for fd in (proc / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:[") and target[8:-1] in sockets:
                    found.append((name, *sockets[target[8:-1]]))
        except OSError:  # a process that ended meanwhile
            continue
    return found


def wait_for(predicate, proc: subprocess.Popen, cwd: Path, timeout: float = 1200) -> None:
    """Block until `predicate()` holds (an event: files the runs write); fails if the command ends first."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError(f"exit {proc.poll()} before the event:\n{(cwd / 'command.log').read_text()[-3000:]}")
        time.sleep(0.05)


def statuses(folder: Path) -> list[str]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")
    ids = [e.experiment_id for e in client.search_experiments()]
    runs = [r for r in client.search_runs(ids) if r.data.tags.get("job_type") != "sweep-summary"]
    return sorted(r.info.status for r in runs)


#: after TINY (its phase.epochs=1 would win)
SEARCH = ["hparams_search=optuna", "logger=mlflow", "phase.epochs=2", "hydra.sweeper.pruner.name=none",
          "hydra.sweeper.params.sequencer='choice(bilstm,gru)'"]


@pytest.mark.slow
def test_ctrl_c_during_a_search_ends_its_trial_killed_and_resume_finishes_n_trials(demo_root, tmp_path):
    """`python train.py hparams_search=optuna logger=mlflow ...` (one slot, the basic launcher) gets Ctrl-C after its
    first trial's first epoch: the trial's MLflow run ends KILLED, the command exits 130 with one line and no
    traceback, the study keeps the trial RUNNING; resume_sweep= continues it from its checkpoint, and the search
    ends with n_trials trials."""
    pytest.importorskip("optuna")
    pytest.importorskip("mlflow")
    hold = tmp_path / "held"
    tiny = [o for o in TINY if not o.startswith(("phase.lr=", "logger="))]
    args = [*demo_overrides(demo_root), *tiny, *TINY_SEQUENCER, *SEARCH, "hydra.sweeper.n_trials=2"]
    proc = popen(args, tmp_path, hold_env("epoch_end:1", hold))
    wait_until_held(proc, hold)
    code, out = ctrl_c(proc, tmp_path)
    assert code == 130 and "Traceback" not in out, out[-3000:]
    assert "interrupted (Ctrl-C)" in out and "resume_sweep=" in out
    sweep = the_sweep_dir(tmp_path)
    assert statuses(sweep) == ["KILLED"]
    assert pd.read_csv(sweep / "optuna_trials.csv")["state"].tolist() == ["running"]

    res = run_script("train.py", *args, f"resume_sweep={sweep.relative_to(tmp_path)}", cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    trials = pd.read_csv(sweep / "optuna_trials.csv")
    assert trials["state"].tolist() == ["complete", "complete"] and trials["run"].tolist() == [0, 1]
    assert "resumed after epoch 1" in (sweep / "0" / "train.log").read_text()
    assert statuses(sweep) == ["FINISHED", "FINISHED"]  # the killed trial's MLflow run continued


def test_ctrl_c_during_a_basic_sweep_ends_its_run_killed_and_resume_sweep_finishes_it(demo_root, tmp_path):
    """`python train.py -m seed=0,1 logger=mlflow ...` (the basic launcher: the runs in the command's own process)
    gets Ctrl-C in its first run's second epoch: the run's MLflow run ends KILLED, the command exits 130 with one
    line that names resume_sweep= and no traceback; the sweep's own command plus resume_sweep= then finishes both
    runs, the first from its checkpoint."""
    pytest.importorskip("mlflow")
    hold = tmp_path / "held"
    tiny = [o for o in TINY if not o.startswith(("logger=", "phase.epochs="))]
    args = ["-m", *demo_overrides(demo_root), *tiny, *TINY_SEQUENCER, "logger=mlflow", "phase.epochs=2", "seed=0,1"]
    proc = popen(args, tmp_path, hold_env("epoch_end:1", hold))
    wait_until_held(proc, hold)
    code, out = ctrl_c(proc, tmp_path)
    assert code == 130 and "Traceback" not in out, out[-3000:]
    sweep = the_sweep_dir(tmp_path)
    assert "interrupted (Ctrl-C)" in out and f"resume_sweep={sweep}" in out, out[-3000:]
    assert statuses(sweep) == ["KILLED"]

    res = run_script("train.py", *args, f"resume_sweep={sweep.relative_to(tmp_path)}", cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "resumed after epoch 1" in (sweep / "0" / "train.log").read_text()
    assert all((sweep / str(n) / "metrics.json").is_file() for n in (0, 1))
    assert statuses(sweep) == ["FINISHED", "FINISHED"]


def test_ctrl_c_during_a_single_run_says_how_to_resume_it_without_a_traceback(demo_root, tmp_path):
    """`python train.py ...` (one run) gets Ctrl-C in its second epoch: exit 130, one line naming resume=<its run
    dir>, no traceback; that command then continues the run from its checkpoint to the end."""
    hold = tmp_path / "held"
    tiny = [o for o in TINY if not o.startswith("phase.epochs=")]
    proc = popen([*demo_overrides(demo_root), *tiny, *TINY_SEQUENCER, "phase.epochs=2"], tmp_path,
                 hold_env("epoch_end:1", hold))
    wait_until_held(proc, hold)
    code, out = ctrl_c(proc, tmp_path)
    assert code == 130 and "Traceback" not in out, out[-3000:]
    (run_dir,) = [p.parent for p in (tmp_path / "outputs").glob("*/*/train.log")]
    line = next(line for line in out.splitlines() if line.startswith("interrupted (Ctrl-C)"))
    assert line.endswith(f"python train.py resume={run_dir.relative_to(tmp_path)}") or \
        line.endswith(f"python train.py resume={run_dir}"), line

    res = run_script("train.py", f"resume={line.rsplit('resume=', 1)[1]}", cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "resumed after epoch 1" in (run_dir / "train.log").read_text()
    assert len(json.loads((run_dir / "metrics.json").read_text())["history"]) == 2


@pytest.mark.slow
def test_ctrl_c_with_two_ray_slots_busy_then_resume_runs_exactly_n_trials(demo_root, tmp_path):
    """A search on Ray, two trials at a time, gets Ctrl-C while both wait after their first epoch: both MLflow
    runs end KILLED, exit 130, no traceback; resumed, the two trials continue from their checkpoints and one new
    trial is asked: n_trials=3 trials in all, not 3 more."""
    pytest.importorskip("ray")
    pytest.importorskip("optuna")
    pytest.importorskip("mlflow")
    holds = tmp_path / "holds"
    holds.mkdir()
    tiny = [o for o in TINY if not o.startswith(("phase.lr=", "logger="))]
    args = [*demo_overrides(demo_root), *tiny, *TINY_SEQUENCER, *SEARCH, "hydra/launcher=ray",
            "hydra.launcher.gpus_per_run=0", "hydra.launcher.cpus_per_run=1", "hydra.launcher.num_cpus=2",
            "hydra.sweeper.n_jobs=2", "hydra.sweeper.n_trials=3"]
    proc = popen(args, tmp_path, hold_env("epoch_end:1", holds / "held-{pid}"))
    wait_for(lambda: len([p for p in holds.glob("held-*") if not p.name.endswith(".tmp")]) == 2, proc, tmp_path)
    code, out = ctrl_c(proc, tmp_path)
    assert code == 130 and "Traceback" not in out, out[-3000:]
    sweep = the_sweep_dir(tmp_path)
    assert statuses(sweep) == ["KILLED", "KILLED"]
    assert pd.read_csv(sweep / "optuna_trials.csv")["state"].tolist() == ["running", "running"]

    res = run_script("train.py", *args, f"resume_sweep={sweep.relative_to(tmp_path)}", cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    trials = pd.read_csv(sweep / "optuna_trials.csv")
    assert len(trials) == 3 and set(trials["state"]) == {"complete"}
    assert sorted(trials["run"]) == [0, 1, 2] and not (sweep / "3").exists()
    for run in (0, 1):
        assert "resumed after epoch 1" in (sweep / str(run) / "train.log").read_text()
    assert statuses(sweep) == ["FINISHED", "FINISHED", "FINISHED"]


RAY_ONE_SLOT = ["-m", "hydra/launcher=ray", "hydra.launcher.gpus_per_run=0", "hydra.launcher.cpus_per_run=1",
                "hydra.launcher.max_concurrent=1"]


@pytest.mark.slow
def test_a_run_lost_before_hydra_wrote_its_folder_is_listed_failed_and_resume_reruns_it(demo_root, tmp_path):
    """Run 1's worker dies (SIGKILL) after taking the job, before Hydra writes the run's .hydra/: the summary lists
    it as failed with its seed, counts it, the sweep exits 1; resume_sweep= reruns just it."""
    pytest.importorskip("ray")
    args = [*RAY_ONE_SLOT, *demo_overrides(demo_root), *LAUNCHER_ARGS, "seed=0,1,2"]
    res = run_script("train.py", *args, cwd=tmp_path, env={"DEEPART_KILL_AT": "job_start:1", "DEEPART_FAULT_JOB": "1"})
    out = res.stdout + res.stderr
    assert res.returncode == 1, out[-3000:]
    sweep = the_sweep_dir(tmp_path)
    assert not (sweep / "1" / ".hydra").exists()
    table = pd.read_csv(sweep / "summary.csv")
    assert table["status"].tolist() == ["done", "failed", "done"] and table["seed"].tolist() == [0, 1, 2]
    assert "Ray worker running this job died" in table.loc[1, "error"]
    assert "1 of 3 runs have no results" in out
    finished = {n: (sweep / str(n) / "metrics.json").stat().st_mtime_ns for n in (0, 2)}

    again = run_script("train.py", *args, f"resume_sweep={sweep.relative_to(tmp_path)}", cwd=tmp_path)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert pd.read_csv(sweep / "summary.csv")["status"].tolist() == ["done", "done", "done"]
    assert {n: (sweep / str(n) / "metrics.json").stat().st_mtime_ns for n in (0, 2)} == finished


@pytest.mark.slow
@pytest.mark.parametrize("fault, run1", [
    ({"DEEPART_RAISE_AT": "step:1", "DEEPART_RAISE_MESSAGE": "CUDA error: an illegal memory access was encountered"},
     "failed"),
    ({"DEEPART_RAISE_AT": "worker_cleanup:1"}, "done"),
], ids=["cuda-error-in-the-run", "cleanup-failed"])
def test_a_poisoned_worker_is_replaced_for_the_next_run_of_its_slot(demo_root, tmp_path, fault, run1):
    """One slot, three runs; run 1 leaves its worker unusable (a CUDA error in the run, or a failed cleanup after
    it): run 1 keeps its own result and error, and run 2 runs on a fresh worker, not on the poisoned one."""
    pytest.importorskip("ray")
    res = run_script("train.py", *RAY_ONE_SLOT, *demo_overrides(demo_root), *LAUNCHER_ARGS, "seed=0,1,2",
                     cwd=tmp_path, env={**fault, "DEEPART_FAULT_JOB": "1"})
    out = res.stdout + res.stderr
    assert res.returncode == (1 if run1 == "failed" else 0), out[-3000:]
    sweep = the_sweep_dir(tmp_path)
    assert pd.read_csv(sweep / "summary.csv")["status"].tolist() == ["done", run1, "done"]
    if run1 == "failed":  # the run's own error, not overwritten
        assert "illegal memory access" in json.loads((sweep / "1" / "failure.json").read_text())["message"]
    placed = [json.loads((sweep / str(n) / "placement.json").read_text()) for n in range(3)]
    assert placed[0]["pid"] == placed[1]["pid"] != placed[2]["pid"]
    assert "its slot gets a new worker" in out


@pytest.mark.slow
def test_ctrl_c_during_a_ray_sweep_ends_its_runs_killed_and_resume_sweep_finishes_them(demo_root, tmp_path):
    """A grid sweep on Ray, both runs waiting after their first epoch (every server of its own Ray listening on the
    loopback only), gets Ctrl-C: both MLflow runs end KILLED, exit 130 with one line and no traceback;
    resume_sweep= continues both from their checkpoints."""
    pytest.importorskip("ray")
    pytest.importorskip("mlflow")
    holds = tmp_path / "holds"
    holds.mkdir()
    args = ["-m", "hydra/launcher=ray", "hydra.launcher.gpus_per_run=0", "hydra.launcher.cpus_per_run=1",
            "hydra.launcher.num_cpus=2", *demo_overrides(demo_root), *LAUNCHER_ARGS, "logger=mlflow",
            "phase.epochs=2", "seed=0,1"]
    proc = popen(args, tmp_path, hold_env("epoch_end:1", holds / "held-{pid}"))
    wait_for(lambda: len([p for p in holds.glob("held-*") if not p.name.endswith(".tmp")]) == 2, proc, tmp_path)
    servers = listening(proc.pid)  # the sweep's own Ray: its servers on the loopback only
    if not ("gcs_server" in {name for name, _, _ in servers} and all(lo for _, _, lo in servers)):
        os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its Ray, which would wait on the holds
        raise AssertionError(f"not every server of the sweep's Ray listens on the loopback: {servers}")
    code, out = ctrl_c(proc, tmp_path)
    assert code == 130 and "Traceback" not in out, out[-3000:]
    assert len([line for line in out.splitlines() if "interrupted (Ctrl-C)" in line]) == 1
    sweep = the_sweep_dir(tmp_path)
    assert statuses(sweep) == ["KILLED", "KILLED"]

    res = run_script("train.py", *args, f"resume_sweep={sweep.relative_to(tmp_path)}", cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert pd.read_csv(sweep / "summary.csv")["status"].tolist() == ["done", "done"]
    for run in (0, 1):
        assert "resumed after epoch 1" in (sweep / str(run) / "train.log").read_text()
    assert statuses(sweep) == ["FINISHED", "FINISHED"]


def test_a_slot_lends_its_worker_to_the_jobs_in_job_order_whichever_thread_asks_first():
    """One slot, one warm worker, jobs 0-3 asking from threads started in reverse order: the worker goes to job 0,
    then 1, 2, 3 (a one-slot sweep runs its runs in order, as the basic launcher does). No Ray is started."""
    pytest.importorskip("ray")
    import threading

    from hydra_plugins.deepart_plugins._ray import Slots

    pool = Slots(gpus=0, cpus=1, at_once=1)
    worker = object()
    pool.workers.add(worker)
    pool.idle.append(worker)
    order: list[int] = []
    gate = threading.Event()

    def job(n: int) -> None:
        gate.wait()
        got = pool.acquire(n)
        order.append(n)
        pool.release(got)

    pool.expect(range(4))
    threads = [threading.Thread(target=job, args=(n,)) for n in reversed(range(4))]
    for thread in threads:
        thread.start()
    gate.set()
    for thread in threads:
        thread.join(timeout=60)
    assert order == [0, 1, 2, 3]
