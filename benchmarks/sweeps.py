"""Sweeps and searches on one machine: how much of the wall time the runs of a sweep spend training.

    python benchmarks/sweeps.py sweep --epochs 4 16            # a 4-run sweep, basic launcher against Ray
    python benchmarks/sweeps.py search --trials 12             # a 12-trial search with the median pruner on 2 slots
    python benchmarks/sweeps.py ablation --data data/paintings-dev --epochs 3   # loss.gamma=0,1,2,3 on a frozen
                                                               # Lite0 (experiment=paintings) through Ray
    python benchmarks/sweeps.py cluster --epochs 8             # a 4-run sweep on a 2-node loopback cluster (token
                                                               # authentication) against the sweep's own Ray
    python benchmarks/sweeps.py resume --trials 6 --epochs 6   # a search stopped by Ctrl-C with 2 trials in flight,
                                                               # resumed, against the same search uninterrupted
    python benchmarks/sweeps.py search --repo /path/to/another/checkout        # the same, with another version

Every command is a real `train.py` typed in a fresh temporary folder with Hydra's default sweep dir; the figures are
read from the files the sweep wrote (summary.csv, each run's metrics.json and placement.json, optuna_trials.csv):

- overhead per run: (wall x slots - the runs' own training time) / runs, where a run's own training time is its
  metrics.json runtime_s (its epochs, validation included) and slots is 1 for the basic launcher and the runs at
  once for Ray: the slot-seconds each run costs beyond its epochs (Python start-up, imports, Ray, building the
  model and the data);
- slot use of a search: busy run-seconds / (seconds x slots), busy run-seconds being the sum over runs of their
  placement.json end - start, over the span from the first run's start to the last run's end (and, second figure,
  over the command's whole wall time, Ray's start-up included).

Runs use the demo data (300 generated paintings at 64 px, made once into the temporary folder) unless --data is
given. The figures depend on the CPU and on what else runs: the load average is printed before and after.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.app_load import free_port  # noqa: E402
from benchmarks.ray_cluster import SINGLE_MACHINE, LoopbackCluster  # noqa: E402

QUIET = ["logger=none", "trainer.progress_bar=false", "trainer.log_every_n_steps=0", "trainer.threads=1",
         "data.num_workers=0"]
FAILED_RUN = re.compile(r"run \d+ failed: [^\n]{0,160}")
RAY_CPU = ["hydra/launcher=ray", "hydra.launcher.gpus_per_run=0", "hydra.launcher.cpus_per_run=1"]


def load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def demo(folder: Path) -> list[str]:
    root = folder / "demo300"
    if not root.is_dir():
        from deepart.data.demo import generate_demo

        generate_demo(root, n_images=300, image_size=64, seed=0)
    return ["experiment=demo", f"data.root={root}", "data.source.n_images=300", "data.source.image_size=64",
            "data.image_size=64", "data.resize_size=64", *QUIET]


def sweep_of(cwd: Path) -> Path:
    (found,) = [p for p in (cwd / "multirun").glob("*/*") if p.is_dir()]
    return found


def run(repo: Path, args: list[str], cwd: Path, absolute: bool = False,
        env: dict[str, str] | None = None) -> tuple[Path, float, str, float]:
    """`python <repo>/train.py <args>` in the folder `cwd` (made unless it exists; `absolute`: with an absolute
    hydra.sweep.dir, for versions whose jobs in other processes need one; `env`: the environment, else this one):
    its sweep dir, wall seconds, output and start time."""
    cwd.mkdir(parents=True, exist_ok=True)
    if absolute:
        args = [*args, f"hydra.sweep.dir={cwd / 'multirun' / 'given' / 'sweep'}"]
    started, at = time.perf_counter(), time.time()
    proc = subprocess.run([sys.executable, str(repo / "train.py"), *args], cwd=cwd, env=train_env(repo, env),
                          capture_output=True, text=True)
    wall = time.perf_counter() - started
    out = proc.stdout + proc.stderr
    if proc.returncode and not (proc.returncode == 1 and list((cwd / "multirun").glob("*/*/summary.csv"))):
        sys.exit(f"train.py {' '.join(args)} failed ({proc.returncode}):\n{out[-3000:]}")
    if proc.returncode:  # a sweep that finished with failed runs: measured, and said
        print(f"  (train.py exited 1: {'; '.join(re.findall(FAILED_RUN, out))})", flush=True)
    return sweep_of(cwd), wall, out, at


def train_env(repo: Path, env: dict[str, str] | None = None) -> dict[str, str]:
    return {**(os.environ if env is None else env), "PYTHONPATH": str(repo), "WANDB_MODE": "offline",
            "OMP_NUM_THREADS": "1"}


def runtimes(sweep: Path) -> list[float]:
    return [json.loads(p.read_text())["runtime_s"] for p in sorted(sweep.glob("*/metrics.json"))]


def placements(sweep: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(sweep.glob("*/placement.json"))]


def warm_overhead(sweep: Path, command_start: float) -> tuple[float, float]:
    """(seconds from the sweep command's start to its first run's start, seconds a run on a warm worker costs beyond
    its runtime_s): its placement.json end - start - runtime_s, plus the gap after the slot's previous run."""
    placed = {int(p.parent.name): json.loads(p.read_text()) for p in sweep.glob("*/placement.json")}
    own = {int(p.parent.name): json.loads(p.read_text())["runtime_s"] for p in sweep.glob("*/metrics.json")}
    inside = [placed[n]["ended"] - placed[n]["started"] - own[n] for n in placed]
    gaps = []
    for pid in {p["pid"] for p in placed.values()}:
        runs = sorted((p for p in placed.values() if p["pid"] == pid), key=lambda p: p["started"])
        gaps += [b["started"] - a["ended"] for a, b in zip(runs, runs[1:])]
    first = min(p["started"] for p in placed.values())
    return first - command_start, sum(inside) / len(inside) + (sum(gaps) / len(gaps) if gaps else 0.0)


def sweep_cmd(opts, repo: Path, folder: Path) -> None:
    base = demo(folder)
    print(f"| epochs a run | a run's own time | basic launcher | overhead / run | Ray, {opts.slots} slots | "
          f"overhead / run | speed-up |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for epochs in opts.epochs:
        args = ["-m", *base, f"phase.epochs={epochs}", "seed=0,1,2,3"]
        basic, basic_wall, _, _ = run(repo, args, folder / f"basic-{epochs}", opts.absolute_sweep_dir)
        ray, ray_wall, _, ray_start = run(repo, [*args, *RAY_CPU], folder / f"ray-{epochs}", opts.absolute_sweep_dir)
        basic_own, ray_own = runtimes(basic), runtimes(ray)
        basic_head = (basic_wall - sum(basic_own)) / len(basic_own)
        ray_head = (ray_wall * opts.slots - sum(ray_own)) / len(ray_own)
        start_up, warm = warm_overhead(ray, ray_start)
        reference, frame = pd.read_csv(basic / "summary.csv"), pd.read_csv(ray / "summary.csv")
        cols = [c for c in frame.columns if c.startswith(("val/", "best/val/"))]
        diff = (frame[cols] - reference[cols]).abs().max().max()
        print(f"| {epochs} | {sum(basic_own) / len(basic_own):.1f} s | {basic_wall:.1f} s | {basic_head:.1f} s | "
              f"{ray_wall:.1f} s | {ray_head:.1f} s | {basic_wall / ray_wall:.2f}x |", flush=True)
        print(f"  (largest difference of a val metric between the launchers: {diff:.2g}; Ray: a run's own time "
              f"{sum(ray_own) / len(ray_own):.1f} s, {start_up:.1f} s from the command to its first run, {warm:.2f} s "
              f"a run on a warm worker beyond its own time)", flush=True)


def search_cmd(opts, repo: Path, folder: Path) -> None:
    base = [o for o in demo(folder) if not o.startswith("phase.lr=")]
    args = ["hparams_search=optuna", *base, *RAY_CPU, f"phase.epochs={opts.epochs[0]}",
            f"hydra.sweeper.n_trials={opts.trials}", f"hydra.sweeper.n_jobs={opts.slots}",
            "hydra.sweeper.pruner.name=median"]
    sweep, wall, _, _ = run(repo, args, folder / "search", opts.absolute_sweep_dir)
    placed = placements(sweep)
    busy = sum(p["ended"] - p["started"] for p in placed if "ended" in p)
    span = max(p.get("ended", p["started"]) for p in placed) - min(p["started"] for p in placed)
    trials = pd.read_csv(sweep / "optuna_trials.csv")
    states = trials["state"].value_counts().to_dict()
    print(f"| {opts.trials} trials, {opts.slots} slots | {states} | {int(trials['epochs_reported'].sum())} epochs | "
          f"{wall:.1f} s | {span:.1f} s | {busy / (span * opts.slots):.2f} | {busy / (wall * opts.slots):.2f} | "
          f"{trials['value'].max():.4f} |", flush=True)


def ablation_cmd(opts, repo: Path, folder: Path) -> None:
    data = Path(opts.data).resolve()
    args = ["-m", "experiment=paintings", f"data.root={data}", "phase.freeze=[backbone]", "data.hflip=false",
            "data.train_crop_scale=[1.0,1.0]", *QUIET, f"phase.epochs={opts.epochs[0]}",
            f"trainer.feature_cache_dir={folder / 'features'}", "loss.gamma=0,1,2,3", *RAY_CPU]
    sweep, wall, out, _ = run(repo, args, folder / "ablation", opts.absolute_sweep_dir)
    builds = len(re.findall(r"feature cache: building", out))
    own = runtimes(sweep)
    status = pd.read_csv(sweep / "summary.csv")["status"].value_counts().to_dict()
    print(f"| loss.gamma=0,1,2,3, {opts.epochs[0]} epochs | {status} | {builds} | {wall:.1f} s | "
          f"{sum(own) / len(own):.1f} s |", flush=True)


def loopback_cluster(nodes: int = 2) -> tuple[LoopbackCluster, dict[str, str]]:
    """A Ray cluster of `nodes` nodes on this machine, on the loopback only (benchmarks/ray_cluster.py), one core a
    node, with token authentication (a token made with `ray get-auth-token --generate`, as docs/scaling.md says), in
    a Ray temp dir and a home (~/.ray/auth_token) of its own; and the environment a sweep joining it runs in."""
    root = Path(tempfile.mkdtemp(prefix="rb", dir="/tmp"))  # short: Ray's sockets live under it
    (root / "home").mkdir()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "RAY_AUTH"))},
           "RAY_TMPDIR": str(root), "HOME": str(root / "home"), **SINGLE_MACHINE}
    subprocess.run(["ray", "get-auth-token", "--generate"], env=env, check=True, capture_output=True)
    try:
        return LoopbackCluster(root, free_port(), nodes, env={**env, "RAY_AUTH_MODE": "token"}), env
    except RuntimeError as exc:
        sys.exit(str(exc))


def cluster_cmd(opts, repo: Path, folder: Path) -> None:
    args = ["-m", *demo(folder), f"phase.epochs={opts.epochs[0]}", "seed=0,1,2,3", *RAY_CPU]
    cluster, joining = loopback_cluster()
    try:
        print("| Ray | nodes the runs ran on | wall | a run's own time | overhead / run |")
        print("|---|---:|---:|---:|---:|")
        cases = [("cluster", "2-node loopback cluster, 1 core a node", f"hydra.launcher.address={cluster.address}",
                  joining), ("own", "the sweep's own, 2 cores", "hydra.launcher.num_cpus=2", None)]
        for short, name, extra, env in cases:
            sweep, wall, _, _ = run(repo, [*args, extra], folder / short, env=env)
            own = runtimes(sweep)
            nodes = len({p["node"] for p in placements(sweep)})
            print(f"| {name} | {nodes} | {wall:.1f} s | {sum(own) / len(own):.1f} s | "
                  f"{(wall * 2 - sum(own)) / len(own):.1f} s |", flush=True)
    finally:
        cluster.close()
        shutil.rmtree(joining["RAY_TMPDIR"], ignore_errors=True)  # the cluster's temp dir and home


def resume_cmd(opts, repo: Path, folder: Path) -> None:
    """The same search twice: once through, and once stopped as a terminal's Ctrl-C stops it (SIGINT to its
    process group) once two trials are in flight with a checkpoint each, then resumed with resume_sweep=."""
    base = [o for o in demo(folder) if not o.startswith("phase.lr=")]
    args = ["hparams_search=optuna", *base, *RAY_CPU, f"phase.epochs={opts.epochs[0]}",
            f"hydra.sweeper.n_trials={opts.trials}", f"hydra.sweeper.n_jobs={opts.slots}",
            "hydra.sweeper.pruner.name=none"]

    def trained(sweep: Path) -> str:
        """trials | epochs of their runs | the runs' own training seconds (a resumed run's include its time
        before the stop)"""
        trials = pd.read_csv(sweep / "optuna_trials.csv")
        runs = [json.loads((sweep / str(run) / "metrics.json").read_text()) for run in trials["run"]]
        return (f"{len(trials)} | {sum(r['epochs'] for r in runs)} | "
                f"{sum(r['runtime_s'] for r in runs):.1f} s")

    print("| search | trials | epochs of their runs | the runs' own time | wall (the commands together) |")
    print("|---|---:|---:|---:|---:|")
    sweep, wall, _, _ = run(repo, args, folder / "through")
    print(f"| uninterrupted | {trained(sweep)} | {wall:.1f} s |", flush=True)

    cwd = folder / "stopped"
    cwd.mkdir()
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(repo / "train.py"), *args], cwd=cwd, env=train_env(repo),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))

    def in_flight() -> int:
        runs = [p for p in cwd.glob("multirun/*/*/[0-9]*") if p.is_dir()]
        return sum((r / "checkpoints" / "last.pt").is_file() and not (r / "metrics.json").is_file() for r in runs)

    while in_flight() < opts.slots:
        if proc.poll() is not None:
            sys.exit(f"the search ended ({proc.returncode}) before {opts.slots} trials were in flight")
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGINT)
    code = proc.wait()
    first = time.perf_counter() - started
    sweep = sweep_of(cwd)
    stopped_at = len(pd.read_csv(sweep / "optuna_trials.csv"))
    _, again, _, _ = run(repo, [*args, f"resume_sweep={sweep.relative_to(cwd)}"], cwd)
    print(f"| Ctrl-C (exit {code}) with {opts.slots} trials in flight after {stopped_at} asked, then resumed | "
          f"{trained(sweep)} | {first + again:.1f} s ({first:.1f} + {again:.1f}) |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["sweep", "search", "ablation", "cluster", "resume"])
    parser.add_argument("--epochs", type=int, nargs="+", default=[4], help="epochs a run (sweep: one row each)")
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--slots", type=int, default=2, help="runs at once (Ray, one core each)")
    parser.add_argument("--data", default="data/paintings-dev", help="ablation: the paintings set")
    parser.add_argument("--repo", default=str(REPO), help="the checkout whose train.py runs")
    parser.add_argument("--absolute-sweep-dir", action="store_true",
                        help="pass an absolute hydra.sweep.dir (for versions that need one)")
    opts = parser.parse_args()
    print(f"{opts.what}: {load()} before", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        commands = {"sweep": sweep_cmd, "search": search_cmd, "ablation": ablation_cmd, "cluster": cluster_cmd,
                    "resume": resume_cmd}
        commands[opts.what](opts, Path(opts.repo), Path(tmp))
    print(f"{opts.what}: {load()} after", flush=True)


if __name__ == "__main__":
    main()
