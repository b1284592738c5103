"""hydra/launcher=ray on a machine where a Ray cluster was started before (`ray start --head`, with the token
authentication Ray sets up where a token exists): a sweep with `address: null` starts a Ray of its own whether that
cluster is alive or long dead, and one given the cluster's address joins it with the token, or stops in one line.
Each cluster lives in a temp dir and home of its own (RAY_TMPDIR, HOME), so the machine's Ray is never touched, and
in Ray's single-machine mode, so that it listens on the loopback only (benchmarks/ray_cluster.py)."""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

from benchmarks.app_load import free_port, kill_group
from benchmarks.ray_cluster import SINGLE_MACHINE, LoopbackCluster, listening
from tests.conftest import REPO, demo_overrides, the_sweep_dir
from tests.test_launcher import ARGS, held

pytestmark = pytest.mark.slow  # end-to-end: real clusters, commands and trainings

pytest.importorskip("ray")

CPU_RUNS = ["hydra/launcher=ray", "hydra.launcher.gpus_per_run=0", "hydra.launcher.cpus_per_run=1"]


class Machine:
    """A machine's Ray state in miniature: Ray's temp dir (where `ray start` records its cluster in
    ray_current_cluster) and a home (~/.ray/auth_token), short paths (Ray's sockets live there)."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="rc", dir="/tmp"))
        (self.root / "home").mkdir()
        self.heads: list[subprocess.Popen] = []

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "RAY_AUTH"))}
        return {**env, "RAY_TMPDIR": str(self.root), "HOME": str(self.root / "home"), "PYTHONUNBUFFERED": "1",
                "WANDB_MODE": "offline", "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                **SINGLE_MACHINE, **extra}

    @property
    def recorded(self) -> Path:
        return self.root / "ray" / "ray_current_cluster"

    def generate_token(self) -> str:
        subprocess.run(["ray", "get-auth-token", "--generate"], env=self.env(), check=True, capture_output=True)
        return (self.root / "home" / ".ray" / "auth_token").read_text().strip()

    def start_head(self, port: int, *extra: str) -> str:
        """`ray start --head` on the loopback, in a process group of its own; returns its node id once its address
        is recorded and its port answers."""
        log = open(self.root / f"head-{port}.log", "w")
        proc = subprocess.Popen(["ray", "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
                                 "--num-cpus=1", "--num-gpus=0", "--include-dashboard=false", *extra],
                                env=self.env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.heads.append(proc)
        deadline = time.monotonic() + 300  # only catches a head that never comes up
        while not (self.recorded.is_file() and self.recorded.read_text().strip().endswith(f":{port}")):
            assert proc.poll() is None and time.monotonic() < deadline, (self.root / f"head-{port}.log").read_text()
            time.sleep(0.1)
        session = (self.root / "ray" / "session_latest").resolve()
        (node,) = [p.name.rsplit("_", 1)[1] for p in session.glob("gcs_server_port_*")]
        return node

    def crash(self, head: subprocess.Popen) -> None:
        """Every process of the head's cluster killed at once (an OOM kill, a container restart): its address
        stays recorded."""
        os.killpg(head.pid, signal.SIGKILL)
        head.wait(timeout=60)

    def close(self) -> None:
        for head in self.heads:
            kill_group(head)
        shutil.rmtree(self.root, ignore_errors=True)


def beyond_loopback(proc: subprocess.Popen) -> set[str]:
    """The addresses that the processes of `proc`'s group listen on other than the loopback (none is wanted)."""
    found = listening(proc.pid)
    assert found, "no listening socket found: the check reads nothing"
    return {a for a in found if not a.startswith(("127.0.0.1:", "::1:"))}


@pytest.fixture
def machine():
    m = Machine()
    yield m
    m.close()


def sweep(machine: Machine, cwd: Path, demo_root: Path, *extra: str, **env: str) -> tuple[subprocess.CompletedProcess,
                                                                                            float]:
    """The sweep typed in `cwd` as a user types it; (the finished process, its wall time)."""
    cwd.mkdir(exist_ok=True)
    started = time.monotonic()
    res = subprocess.run([sys.executable, str(REPO / "train.py"), "-m", *CPU_RUNS, *demo_overrides(demo_root), *ARGS,
                          *extra], cwd=cwd, env=machine.env(**env), capture_output=True, text=True, timeout=900)
    return res, time.monotonic() - started


def placements(cwd: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(the_sweep_dir(cwd).glob("*/placement.json"))]


def test_own_ray_beside_a_live_then_dead_recorded_cluster_and_joining_it_with_its_token(machine, demo_root, tmp_path):
    """A token-authenticated head is recorded in Ray's temp dir. A sweep with address null runs on a Ray of its
    own beside it; one given its address joins it with the token in ~/.ray (RAY_AUTH_MODE unset), and with a wrong
    token stops in one line naming the address and the fix. Then the head dies: address null still runs, and
    address=auto (the recorded, dead cluster) is one line."""
    machine.generate_token()
    port = free_port()
    head = machine.start_head(port)
    assert "Token authentication is enabled" in (machine.root / f"head-{port}.log").read_text()

    own, _ = sweep(machine, tmp_path / "own", demo_root, "seed=0")
    out = own.stdout + own.stderr
    assert own.returncode == 0, out[-3000:]
    assert "Connecting to existing Ray cluster" not in out
    assert [p["node"] != head for p in placements(tmp_path / "own")] == [True]

    joined, _ = sweep(machine, tmp_path / "joined", demo_root, f"hydra.launcher.address=127.0.0.1:{port}", "seed=0,1")
    out = joined.stdout + joined.stderr
    assert joined.returncode == 0, out[-3000:]
    assert [p["node"] for p in placements(tmp_path / "joined")] == [head, head]
    assert not beyond_loopback(machine.heads[0])

    refused, wall = sweep(machine, tmp_path / "refused", demo_root, f"hydra.launcher.address=127.0.0.1:{port}",
                          "seed=0", RAY_AUTH_TOKEN="not-the-heads-token")
    out = refused.stdout + refused.stderr
    lines = [line for line in out.splitlines() if f"hydra.launcher.address=127.0.0.1:{port}:" in line]
    assert refused.returncode == 2 and len(lines) == 1 and "Traceback" not in out, out[-3000:]
    assert "RAY_AUTH_TOKEN=<output of `ray get-auth-token` on the head>" in lines[0]
    assert "the token sent is not the head's" in lines[0]  # asked of the head's GCS, before ray.init's retries
    print(f"a refused join stopped after {wall:.1f} s (the command's whole wall time)")
    unsent, _ = sweep(machine, tmp_path / "unsent", demo_root, f"hydra.launcher.address=127.0.0.1:{port}", "seed=0",
                      RAY_AUTH_MODE="disabled")  # the token at hand, but authentication turned off for the sweep
    out = unsent.stdout + unsent.stderr
    lines = [line for line in out.splitlines() if f"hydra.launcher.address=127.0.0.1:{port}:" in line]
    assert unsent.returncode == 2 and len(lines) == 1 and "Traceback" not in out, out[-3000:]
    assert "no token sent; authentication disabled)" in lines[0]

    machine.crash(machine.heads[0])
    assert machine.recorded.read_text().strip().endswith(f":{port}")  # stale: recorded, nobody answers

    after, _ = sweep(machine, tmp_path / "after", demo_root, "seed=0")
    out = after.stdout + after.stderr
    assert after.returncode == 0, out[-3000:]
    assert "Connecting to existing Ray cluster" not in out

    auto, _ = sweep(machine, tmp_path / "auto", demo_root, "hydra.launcher.address=auto", "seed=0")
    out = auto.stdout + auto.stderr
    lines = [line for line in out.splitlines() if "no Ray head answers at" in line]
    assert auto.returncode == 2 and len(lines) == 1 and "Traceback" not in out, out[-3000:]
    assert f":{port}" in lines[0] and "ray start --head" in lines[0]


def test_a_two_node_sweep_on_both_nodes_and_a_lost_node_fails_only_its_run(machine, demo_root, tmp_path):
    """A 2-node cluster on the loopback (a head and a second node, one core each, token authentication:
    benchmarks/ray_cluster.py): a 4-run sweep given the head's address runs its first two runs one on each node.
    The second node is killed while both runs wait after their first epoch: its run fails alone and is listed
    failed, the other three finish on the head, the sweep exits 1, and resume_sweep= reruns just the lost run."""
    machine.generate_token()
    port = free_port()
    cluster = LoopbackCluster(machine.root, port, 2, env=machine.env(RAY_AUTH_MODE="token"))
    machine.heads.append(cluster.proc)
    head_node = cluster.nodes[0]["node_id"]
    holds = tmp_path / "holds"
    holds.mkdir()
    cwd = tmp_path / "sweep"
    cwd.mkdir()
    args = [sys.executable, str(REPO / "train.py"), "-m", *CPU_RUNS, f"hydra.launcher.address=127.0.0.1:{port}",
            *demo_overrides(demo_root), *ARGS, "phase.epochs=2", "seed=0,1,2,3"]
    # workers of a running cluster get their environment from its nodes, plus the sweep's runtime_env
    hold = [f"+hydra.launcher.init.runtime_env.env_vars.{key}='{value}'"
            for key, value in (("DEEPART_HOLD_AT", "epoch_end:1"), ("DEEPART_HOLD_FILE", holds / "held-{pid}"))]
    started = time.monotonic()
    with open(cwd / "sweep.log", "w") as out:
        proc = subprocess.Popen([*args, *hold], cwd=cwd, env=machine.env(), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 1200  # only catches a hung sweep
        while len(held(holds)) < 2:  # both slots' runs wait after their first epoch: one on each node
            assert proc.poll() is None and time.monotonic() < deadline, (cwd / "sweep.log").read_text()[-3000:]
            time.sleep(0.05)
        sweep_dir = the_sweep_dir(cwd)
        placed = {p.parent.name: json.loads(p.read_text()) for p in sweep_dir.glob("*/placement.json")}
        assert len(placed) == 2 and len({p["node"] for p in placed.values()}) == 2 and head_node in \
            {p["node"] for p in placed.values()}, placed
        (lost,) = [run for run, p in placed.items() if p["node"] != head_node]
        assert not beyond_loopback(cluster.proc)
        killed_at = time.time()
        cluster.kill_node(1)  # the second node's Ray processes, as a crash does
        os.kill(placed[lost]["pid"], signal.SIGKILL)  # and its worker
        for path in held(holds).values():  # the head's run goes on
            path.unlink()
        code = proc.wait(timeout=1200)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    out = (cwd / "sweep.log").read_text()
    assert code == 1, out[-3000:]
    table = pd.read_csv(sweep_dir / "summary.csv")
    assert table["status"].tolist() == ["failed" if str(n) == lost else "done" for n in range(4)], table
    assert "Ray worker running this job died" in table.loc[int(lost), "error"]
    assert "1 of 4 runs have no results" in out
    marked = (sweep_dir / lost / "failure.json").stat().st_mtime - killed_at
    print(f"4-run sweep on 2 nodes: {time.monotonic() - started:.1f} s; run {lost} marked failed {marked:.1f} s "
          f"after its node was killed")

    again = subprocess.run([*args[:2], *args[2:], f"resume_sweep={sweep_dir.relative_to(cwd)}"], cwd=cwd,
                           env=machine.env(), capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert pd.read_csv(sweep_dir / "summary.csv")["status"].tolist() == ["done"] * 4
    assert json.loads((sweep_dir / lost / "placement.json").read_text())["node"] == head_node
