"""Shared test helpers: compose the real config and shrink it (tiny timm backbone, small images,
1 epoch, no W&B), plus a small demo dataset generated once per session."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import DictConfig

from deepart.core.config import compose_config  # noqa: F401  (re-exported for the tests)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

# A model small enough to train in seconds on 2 CPU cores, built from the real config groups.
TINY = [
    "backbone.name=test_efficientnet", "backbone.pretrained=false",
    "model.dim=32", "model.head_hidden=16",
    "logger=none", "trainer.progress_bar=false", "trainer.log_every_n_steps=0",
    "data.image_size=64", "data.resize_size=64", "data.num_workers=0",
    "phase=3", "phase.epochs=1", "phase.batch_size=16", "phase.lr=3e-3",
]
#: Small values for the size keys a sequencer option may have (conf/sequencer/<name>.yaml, encoder or pooling).
TINY_SIZES = {"hidden_size": 16, "hidden_dim": 16, "ff_dim": 32, "num_heads": 4}


def tiny_sequencer(name: str) -> list[str]:
    """Overrides that shrink sequencer option `name`: every size key its encoder and pooling have (read from
    its conf file, so a new option needs no entry here)."""
    from omegaconf import OmegaConf

    from deepart.core.config import CONF_DIR

    node = OmegaConf.load(CONF_DIR / "sequencer" / f"{name}.yaml")
    return [f"sequencer.{part}.{key}={value}" for part in ("encoder", "pooling") if node.get(part) is not None
            for key, value in TINY_SIZES.items() if key in node[part]]


TINY_SEQUENCER = tiny_sequencer("bilstm")  # the default sequencer, shrunk
DEMO_N, DEMO_SIZE = 96, 64


def demo_overrides(root: Path) -> list[str]:
    return ["data=demo", f"data.root={root}", f"data.source.n_images={DEMO_N}",
            f"data.source.image_size={DEMO_SIZE}"]


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    from deepart.data.demo import generate_demo

    root = tmp_path_factory.mktemp("demo")
    return generate_demo(root, n_images=DEMO_N, image_size=DEMO_SIZE, seed=0)


@pytest.fixture
def tiny_cfg(demo_root):
    """Factory: the tiny demo config plus extra overrides."""

    def make(*extra: str) -> DictConfig:
        return compose_config([*demo_overrides(demo_root), *TINY, *TINY_SEQUENCER, *extra])

    return make


@pytest.fixture(scope="session")
def app_run(demo_root, tmp_path_factory) -> Path:
    """A tiny three-task model trained for one epoch on the demo data: its run dir (the web app's tests)."""
    from deepart.training.trainer import train

    run_dir = tmp_path_factory.mktemp("app_run")
    train(compose_config([*demo_overrides(demo_root), *TINY, *TINY_SEQUENCER]), run_dir=run_dir)
    return run_dir


def run_script(script: str, *args: str, cwd: Path | None = None, timeout: int = 1200,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run train.py / eval.py in a subprocess (as a user would) and return the finished process; `env`: variables
    set on top of the usual ones. `timeout` only catches a hung process: a Ray search takes a minute on idle cores
    and several times that beside another CPU-heavy job."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0", "WANDB_MODE": "offline",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), **(env or {})}
    return subprocess.run([sys.executable, str(REPO / script), *args], cwd=cwd or REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def the_sweep_dir(cwd: Path) -> Path:
    """The one sweep dir that a `train.py -m` typed in `cwd` with Hydra's default sweep dir made
    (multirun/<date>/<time>): a sweep whose jobs scattered into several dirs fails here."""
    found = sorted(p for p in (cwd / "multirun").glob("*/*") if p.is_dir())
    assert len(found) == 1, f"expected one sweep dir under {cwd / 'multirun'}, found {found}"
    return found[0]


def pytest_collection_modifyitems(config, items):
    """Files with end-to-end (slow) tests run first: with the suite spread over the cores one file per worker
    (pyproject's addopts), the long files start at once and the short ones fill in behind them, instead of a long
    file starting last and running alone. Tests marked `gpu` need CUDA: skipped (with the reason) where there is
    none."""
    import torch

    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: each file keeps its own order
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def pytest_configure(config):
    """One intra-op thread for the whole suite and its subprocesses: the tests train tiny models, for
    which OpenMP threads cost more than they give, most of all on a small shared CPU machine."""
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


def hold_env(point: str, hold_file: Path) -> dict[str, str]:
    """Environment that makes a real process stop at fault point `point` (`<name>:<n>`, deepart.core.faults)
    and wait there, announced by `hold_file`, until the test removes the file."""
    return {"DEEPART_HOLD_AT": point, "DEEPART_HOLD_FILE": str(hold_file)}


def wait_until_held(proc: subprocess.Popen, hold_file: Path, timeout: float = 1200) -> None:
    """Block until `proc` has reached its hold point (its `hold_file` exists): an event, so the test acts on the
    process at a known moment however busy the machine is. Fails if the process ends first."""
    import time

    deadline = time.monotonic() + timeout
    while not hold_file.exists():
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"the process ended (exit {proc.returncode}) before its hold point:\n{out[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"the process did not reach its hold point in {timeout} s")
        time.sleep(0.01)
