"""Data-parallel training under torchrun: 2 CPU processes with gloo on the demo data."""
import json
import os
import subprocess
import sys

import pytest
import torch

from deepart.core.checkpoint import Checkpoint
from deepart.data.samplers import ShardSampler
from deepart.inference.evaluate import evaluate_checkpoint
from deepart.training.trainer import train
from tests.conftest import REPO, TINY, TINY_SEQUENCER, compose_config, demo_overrides

pytestmark = pytest.mark.slow  # end-to-end: real commands and trainings (python -m pytest -m "not slow" skips them)

KEYS = ["val/style/top1", "val/style/top5", "val/genre/top1", "val/genre/top5", "val/artist/top1",
        "val/artist/top5", "val/mean_top1", "val/loss"]


def torchrun(*args: str, cwd) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node=2 train.py <args>` as a user runs it."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(REPO / "train.py"), *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def single_process_eval(ckpt, out_dir) -> dict:
    cfg = compose_config([f"ckpt={ckpt}", "num_workers=0", "device=cpu", f"out_dir={out_dir}"], "eval")
    return evaluate_checkpoint(cfg)


def interrupt_after(fn, marker: str):
    """`fn`, then KeyboardInterrupt when its last argument (the path written) names `marker`."""
    def wrapped(*args, **kwargs):
        fn(*args, **kwargs)
        if str(args[-1]).endswith(marker):
            raise KeyboardInterrupt
    return wrapped


def test_shards_cover_every_item_once():
    shards = [list(ShardSampler(11, rank, 3)) for rank in range(3)]
    assert sorted(sum(shards, [])) == list(range(11))
    assert [len(s) for s in shards] == [4, 4, 3]


def test_torchrun_two_processes_one_run_dir_and_exact_metrics(demo_root, tmp_path):
    res = torchrun(*demo_overrides(demo_root), *TINY, *TINY_SEQUENCER, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    run_dirs = [p for p in (tmp_path / "outputs").glob("*/*") if p.is_dir()]
    assert len(run_dirs) == 1, run_dirs  # one dir for the job, not one per rank
    run_dir = run_dirs[0]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    log = (run_dir / "train.log").read_text()
    assert log.count("epoch 1/1") == 1 and "x 2 processes" in log  # rank 0 alone logs

    trained = json.loads((run_dir / "metrics.json").read_text())["best"]
    evaluated = single_process_eval(run_dir / "checkpoints" / "best.pt", tmp_path / "eval")
    for key in KEYS:  # val metrics summed over the two shards == one process over all of val
        assert trained[key] == pytest.approx(evaluated[key], abs=1e-6), key
    assert trained["val/style/count"] == evaluated["val/style/count"]  # every val image counted once


def test_resume_under_torchrun(tiny_cfg, demo_root, tmp_path, monkeypatch):
    with monkeypatch.context() as patch:  # the single-process run is killed after epoch 1's checkpoint
        patch.setattr(Checkpoint, "save", interrupt_after(Checkpoint.save, "last.pt"))
        with pytest.raises(KeyboardInterrupt):
            train(tiny_cfg("phase.epochs=2"), run_dir=tmp_path / "run")
    assert torch.load(tmp_path / "run/checkpoints/last.pt", weights_only=True)["progress"]["epoch"] == 1

    res = torchrun(f"resume={tmp_path / 'run'}", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "resumed after epoch 1" in res.stderr + res.stdout
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["epochs"] == 2
    evaluated = single_process_eval(tmp_path / "run/checkpoints/last.pt", tmp_path / "eval")
    for key in KEYS:
        assert metrics["final"][key] == pytest.approx(evaluated[key], abs=1e-6), key


def test_slurm_tasks_become_torchrun_ranks(monkeypatch):
    pytest.importorskip("submitit")
    from deepart.core import distributed

    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.setenv(key, "")  # restored (removed) after the test
        monkeypatch.delenv(key)
    slurm = {"SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "4242", "SLURM_NTASKS": "8", "SLURM_PROCID": "5",
             "SLURM_LOCALID": "1", "SLURM_NODEID": "1", "SLURM_JOB_NUM_NODES": "2",
             "SLURM_JOB_NODELIST": "gpu[07-08]"}
    for key, value in slurm.items():
        monkeypatch.setenv(key, value)
    d = distributed.current()
    assert (d.rank, d.world_size, d.local_rank, d.is_main) == (5, 8, 1, False)
    assert os.environ["MASTER_ADDR"] == "gpu07" and int(os.environ["MASTER_PORT"]) > 0


def test_slurm_launcher_config_has_one_task_per_gpu():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from deepart.core.config import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm", "hydra.launcher.gpus_per_node=8"],
                      return_hydra_config=True)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=False)
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert cfg.hydra.launcher.tasks_per_node == 8 and cfg.hydra.launcher.nodes == 1
