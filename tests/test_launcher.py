"""hydra/launcher=ray as users meet it, typed in a fresh folder with Hydra's default sweep dir: a real local Ray
(loopback only) that declares two logical GPUs runs a 4-run sweep two at a time on two warm workers, each with a GPU
of its own, and the sweep's files equal the basic launcher's; the one-line errors of bad launcher options; a search
through it (a killed launcher: tests/test_launcher_resume.py)."""
import json
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent import futures
from pathlib import Path

import pandas as pd
import pytest
import yaml

from deepart.core.errors import ConfigError
from tests.conftest import REPO, TINY, TINY_SEQUENCER, demo_overrides, run_script, the_sweep_dir

pytestmark = pytest.mark.slow  # end-to-end: real commands and trainings (python -m pytest -m "not slow" skips them)

pytest.importorskip("ray")

#: data.num_workers left at null: the launcher sizes it to the run's cores
ARGS = [*(o for o in TINY if not o.startswith("data.num_workers=")), *TINY_SEQUENCER]
RAY = ["hydra/launcher=ray", "hydra.launcher.num_gpus=2", "hydra.launcher.num_cpus=2"]
SEEDS = "seed=0,1,2,3"


def held(folder: Path) -> dict[int, Path]:
    """The runs waiting at their hold point now: {pid: hold file}."""
    return {int(p.name.split("-")[1]): p for p in folder.glob("held-*") if not p.name.endswith(".tmp")}


@pytest.fixture(scope="module")
def ray_sweep(demo_root, tmp_path_factory):
    """The 4-run sweep; the first run of each warm worker waits after its first epoch (fault points count per
    process) until the test lets it go. When two runs wait at once (an event: both hold files exist), the test
    notes which runs had started and where, then releases them."""
    cwd = tmp_path_factory.mktemp("ray")
    holds = cwd / "holds"
    holds.mkdir()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline", "DEEPART_HOLD_AT": "epoch_end:1",
           "DEEPART_HOLD_FILE": str(holds / "held-{pid}"),
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    log = cwd / "sweep.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, str(REPO / "train.py"), "-m", *RAY, *demo_overrides(demo_root),
                                 *ARGS, SEEDS], cwd=cwd, env=env, text=True, stdout=out, stderr=subprocess.STDOUT)
    both, most, deadline = None, 0, time.monotonic() + 1200  # the deadline only catches a hung sweep
    while proc.poll() is None and time.monotonic() < deadline:
        now = held(holds)
        most = max(most, len(now))
        if len(now) == 2 and both is None:
            sweep = the_sweep_dir(cwd)
            both = {"pids": set(now), "placed": {p.parent.name: json.loads(p.read_text())
                                                 for p in sweep.glob("*/placement.json")}}
        if both is not None:  # from then on every run goes on as soon as it arrives
            for path in now.values():
                path.unlink()
        try:
            proc.wait(timeout=0.05)
        except subprocess.TimeoutExpired:
            pass
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    return the_sweep_dir(cwd), proc.returncode, log.read_text(), both, most


@pytest.fixture(scope="module")
def basic_sweep(demo_root, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("basic")
    res = run_script("train.py", "-m", *demo_overrides(demo_root), *ARGS, "data.num_workers=0", SEEDS, cwd=cwd)
    return the_sweep_dir(cwd), res


def test_two_gpus_run_two_runs_at_a_time_each_on_its_own_gpu(ray_sweep):
    sweep, code, out, both, most = ray_sweep
    assert code == 0, out[-3000:]
    assert both is not None, f"two runs never waited at the same time:\n{out[-3000:]}"
    assert most == 2  # never a third run while two held their slots
    running = both["placed"]
    assert len(running) == 2 and {p["pid"] for p in running.values()} == both["pids"]  # only the held two started
    assert {p["CUDA_VISIBLE_DEVICES"] for p in running.values()} == {"0", "1"}  # each on a GPU of its own
    placed = [json.loads((sweep / str(n) / "placement.json").read_text()) for n in range(4)]
    assert all(p["CUDA_VISIBLE_DEVICES"] in ("0", "1") and p["gpu_ids"] == [p["CUDA_VISIBLE_DEVICES"]] for p in placed)
    assert {p["pid"] for p in placed} == both["pids"]  # one warm worker per slot ran all four runs
    for p in placed:  # a worker keeps its GPU from run to run
        assert {q["CUDA_VISIBLE_DEVICES"] for q in placed if q["pid"] == p["pid"]} == {p["CUDA_VISIBLE_DEVICES"]}
    for n in range(4):  # the run saw its GPU, and its data-loading workers fit its one core
        log = (sweep / str(n) / "train.log").read_text()
        assert f"CUDA_VISIBLE_DEVICES={placed[n]['CUDA_VISIBLE_DEVICES']}, 1 CPU" in log
        assert yaml.safe_load((sweep / str(n) / ".hydra" / "config.yaml").read_text())["data"]["num_workers"] == 0
    assert "up to 2 at once" in out


def test_ray_sweep_files_equal_the_basic_launchers(ray_sweep, basic_sweep):
    (ray_dir, ray_code, ray_out, _, _), (basic_dir, basic_res) = ray_sweep, basic_sweep
    assert ray_code == 0 and basic_res.returncode == 0, basic_res.stderr[-3000:]
    ray_table, basic_table = pd.read_csv(ray_dir / "summary.csv"), pd.read_csv(basic_dir / "summary.csv")
    assert len(ray_table) == 4 and ray_table["seed"].tolist() == [0, 1, 2, 3]
    compared = [c for c in basic_table.columns if c != "runtime_s"]
    pd.testing.assert_frame_equal(ray_table[compared], basic_table[compared])
    assert (ray_dir / "report.html").is_file() and "Sweep summary" in ray_out
    assert (ray_dir / "multirun.yaml").is_file() and (basic_dir / "multirun.yaml").is_file()


def test_a_run_whose_worker_dies_fails_alone_and_its_slot_gets_a_new_worker(demo_root, tmp_path):
    """One slot, three runs; run 1's worker process is killed (SIGKILL) after its first epoch: run 1 is a failed run
    of the sweep, listed with the cause, and run 2 trains on a fresh worker of the same slot."""
    res = run_script("train.py", "-m", "hydra/launcher=ray", "hydra.launcher.gpus_per_run=0",
                     "hydra.launcher.cpus_per_run=1", "hydra.launcher.max_concurrent=1", *demo_overrides(demo_root),
                     *ARGS, "seed=0,1,2", cwd=tmp_path,
                     env={"DEEPART_KILL_AT": "epoch_end:1", "DEEPART_FAULT_JOB": "1"})
    out = res.stdout + res.stderr
    assert res.returncode == 1, out[-3000:]
    sweep = the_sweep_dir(tmp_path)
    assert pd.read_csv(sweep / "summary.csv")["status"].tolist() == ["done", "failed", "done"]
    assert "Ray worker running this job died" in json.loads((sweep / "1" / "failure.json").read_text())["message"]
    assert "run 1 failed" in out
    placed = [json.loads((sweep / str(n) / "placement.json").read_text()) for n in range(3)]
    assert placed[0]["pid"] == placed[1]["pid"] != placed[2]["pid"]  # warm for run 1, a new worker for run 2


@pytest.mark.parametrize("address, host_port", [
    ("node01:6390", ("node01", 6390)), ("node01", ("node01", 6379)), ("ray://10.0.0.5:10001", ("10.0.0.5", 10001)),
    ("[::1]:6390", ("::1", 6390)), ("[fe80::2]", ("fe80::2", 6379)), ("fe80::2", ("fe80::2", 6379)),
])
def test_a_head_address_is_split_into_host_and_port(address, host_port):
    from hydra_plugins.deepart_plugins._ray import _host_port

    assert _host_port(address) == host_port


def test_a_head_address_with_a_port_that_is_no_number_is_one_line():
    from hydra_plugins.deepart_plugins._ray import _host_port

    with pytest.raises(ConfigError, match=r"address=node01:http: not host:port; give the head's address"):
        _host_port("node01:http")


@pytest.mark.parametrize("option, message", [
    ("hydra.launcher.address=127.0.0.1:9", "hydra.launcher.address=127.0.0.1:9: no Ray head answers at 127.0.0.1:9"),
    ("hydra.launcher.gpus_per_run=3", "hydra.launcher.gpus_per_run=3 is more GPUs than a run can get"),
])
def test_bad_launcher_options_are_one_line_before_any_run(demo_root, tmp_path, option, message):
    sweep = tmp_path / "sweep"
    res = run_script("train.py", "-m", *RAY, option, *demo_overrides(demo_root), *ARGS, "seed=0,1",
                     f"hydra.sweep.dir={sweep}")
    out = res.stdout + res.stderr
    assert res.returncode == 2, out[-3000:]
    lines = [line for line in out.splitlines() if message in line]
    assert len(lines) == 1 and "Traceback" not in out, out[-3000:]
    assert ("ray start --head" if "address" in option else "gpus_per_run=0 for runs on CPU only") in lines[0]
    assert not any(p.is_dir() for p in sweep.glob("[0-9]*"))  # no run started


def test_address_auto_on_a_port_another_program_holds_is_one_line_within_seconds(demo_root, tmp_path):
    """RAY_ADDRESS names a loopback port where a program that is not Ray accepts connections and says nothing (a
    port reused after the head died): address=auto probes that very address (not this machine's own address, which
    Ray's lookup puts in place of 127.0.0.1) and stops in one line, where ray.init would retry for minutes."""
    held: list[socket.socket] = []
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        port = server.getsockname()[1]

        def accept() -> None:
            try:
                while True:
                    held.append(server.accept()[0])
            except OSError:  # closed at the end of the test
                return
        threading.Thread(target=accept, daemon=True).start()
        res = run_script("train.py", "-m", *RAY, "hydra.launcher.address=auto", *demo_overrides(demo_root), *ARGS,
                         "seed=0,1", cwd=tmp_path, env={"RAY_ADDRESS": f"127.0.0.1:{port}"})
    for conn in held:
        conn.close()
    out = res.stdout + res.stderr
    assert res.returncode == 2, out[-3000:]
    lines = [line for line in out.splitlines() if f"no Ray head answers at 127.0.0.1:{port}" in line]
    assert len(lines) == 1 and "Traceback" not in out and "another program holds it" in lines[0], out[-3000:]
    assert held, "the probe never connected"
    assert not list(tmp_path.glob("multirun/*/*/[0-9]*"))  # no run started


def test_address_where_another_grpc_service_answers_is_one_line(demo_root, tmp_path):
    """hydra.launcher.address names a loopback port where a gRPC server answers that is not a Ray head (another
    service took the port after the head died): it answers HTTP/2 as a head does, but not a head's methods; the
    sweep stops in one line before any run, where ray.init would retry for minutes."""
    grpc = pytest.importorskip("grpc")
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))  # no services: every method UNIMPLEMENTED
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        res = run_script("train.py", "-m", *RAY, f"hydra.launcher.address=127.0.0.1:{port}",
                         *demo_overrides(demo_root), *ARGS, "seed=0,1", cwd=tmp_path)
    finally:
        server.stop(None)
    out = res.stdout + res.stderr
    assert res.returncode == 2, out[-3000:]
    lines = [line for line in out.splitlines() if f"no Ray head answers at 127.0.0.1:{port}" in line]
    assert len(lines) == 1 and "Traceback" not in out, out[-3000:]
    assert "a gRPC server answers there, but not as a Ray head" in lines[0] and "ray start --head" in lines[0]
    assert not list(tmp_path.glob("multirun/*/*/[0-9]*"))  # no run started


def test_a_search_through_ray_prunes_trials_two_at_a_time(demo_root, tmp_path):
    """hparams_search=optuna with the Ray launcher as the preset's comment shows it, CPU-only runs on a machine
    whose CUDA_VISIBLE_DEVICES names a GPU: trials two at a time report every epoch to the study's journal in the
    one sweep dir; the median pruner stops at least one, which ends pruned, not failed; no run sees a GPU."""
    pytest.importorskip("optuna")
    tiny = [o for o in ARGS if not o.startswith("phase.lr=")]
    res = run_script("train.py", "hparams_search=optuna", "hydra/launcher=ray", "hydra.launcher.gpus_per_run=0",
                     "hydra.launcher.cpus_per_run=1", "hydra.launcher.num_cpus=2", *demo_overrides(demo_root), *tiny,
                     "phase.epochs=3", "hydra.sweeper.n_trials=6", "hydra.sweeper.n_jobs=2",
                     "hydra.sweeper.sampler.n_startup_trials=2", "hydra.sweeper.pruner.startup_trials=2",
                     "hydra.sweeper.pruner.warmup_epochs=0", "hydra.sweeper.params.sequencer='choice(bilstm,gru)'",
                     cwd=tmp_path, env={"CUDA_VISIBLE_DEVICES": "0"})
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    sweep = the_sweep_dir(tmp_path)
    trials = pd.read_csv(sweep / "optuna_trials.csv")
    assert len(trials) == 6 and set(trials["state"]) <= {"complete", "pruned"}
    pruned = trials[trials["state"] == "pruned"]
    assert len(pruned) >= 1 and (pruned["epochs_reported"] < 3).all()
    assert (trials[trials["state"] == "complete"]["epochs_reported"] == 3).all()
    for run in pruned["run"]:
        assert (sweep / str(run) / "pruned.json").is_file() and not (sweep / str(run) / "failure.json").exists()
    summary = pd.read_csv(sweep / "summary.csv")
    assert sorted(summary["status"]) == sorted(trials["state"].replace({"complete": "done"}))
    placed = [json.loads((sweep / str(n) / "placement.json").read_text()) for n in range(6)]
    assert {p["CUDA_VISIBLE_DEVICES"] for p in placed} == {""} and len({p["pid"] for p in placed}) <= 2
    best = yaml.safe_load((sweep / "optuna_best.yaml").read_text())
    assert best["best_value"] == pytest.approx(trials["value"][trials["state"] == "complete"].max())
    assert "pruned" in (sweep / "report.md").read_text().split("## Comparison")[0]
