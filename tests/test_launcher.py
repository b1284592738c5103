"""hydra/launcher=ray as users meet it: a real local Ray (loopback only) that declares two logical GPUs runs a
4-run sweep two at a time, each run with a GPU of its own, and the sweep's files equal the basic launcher's; the
one-line errors of bad launcher options; a search through it (a killed launcher: tests/test_launcher_resume.py)."""
import json

import pandas as pd
import pytest
import yaml

from tests.conftest import TINY, TINY_SEQUENCER, demo_overrides, run_script

pytestmark = pytest.mark.slow  # end-to-end: real commands and trainings (python -m pytest -m "not slow" skips them)

pytest.importorskip("ray")

#: data.num_workers left at null: the launcher sizes it to the run's cores
ARGS = [*(o for o in TINY if not o.startswith("data.num_workers=")), *TINY_SEQUENCER]
RAY = ["hydra/launcher=ray", "hydra.launcher.num_gpus=2", "hydra.launcher.num_cpus=2"]
SEEDS = "seed=0,1,2,3"


@pytest.fixture(scope="module")
def ray_sweep(demo_root, tmp_path_factory):
    sweep = tmp_path_factory.mktemp("ray") / "sweep"
    res = run_script("train.py", "-m", *RAY, *demo_overrides(demo_root), *ARGS, SEEDS, f"hydra.sweep.dir={sweep}")
    return sweep, res


@pytest.fixture(scope="module")
def basic_sweep(demo_root, tmp_path_factory):
    sweep = tmp_path_factory.mktemp("basic") / "sweep"
    res = run_script("train.py", "-m", *demo_overrides(demo_root), *ARGS, "data.num_workers=0", SEEDS,
                     f"hydra.sweep.dir={sweep}")
    return sweep, res


def test_two_gpus_run_two_runs_at_a_time_each_on_its_own_gpu(ray_sweep):
    sweep, res = ray_sweep
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    placed = [json.loads((sweep / str(n) / "placement.json").read_text()) for n in range(4)]
    assert all(p["CUDA_VISIBLE_DEVICES"] in ("0", "1") and p["gpu_ids"] == [p["CUDA_VISIBLE_DEVICES"]] for p in placed)
    assert len({p["pid"] for p in placed}) == 4  # a fresh worker process per run
    overlapping = [(a, b) for i, a in enumerate(placed) for b in placed[i + 1:]
                   if a["started"] < b["ended"] and b["started"] < a["ended"]]
    assert overlapping, "no two runs ran at the same time"
    assert all(a["CUDA_VISIBLE_DEVICES"] != b["CUDA_VISIBLE_DEVICES"] for a, b in overlapping)
    for p in placed:  # at most 2 at once: no moment inside a run has 3 runs running
        assert sum(q["started"] <= p["started"] < q["ended"] for q in placed) <= 2
    for n in range(4):  # the run saw its GPU, and its data-loading workers fit its one core
        log = (sweep / str(n) / "train.log").read_text()
        assert f"CUDA_VISIBLE_DEVICES={placed[n]['CUDA_VISIBLE_DEVICES']}, 1 CPU" in log
        assert yaml.safe_load((sweep / str(n) / ".hydra" / "config.yaml").read_text())["data"]["num_workers"] == 0
    assert "up to 2 at once" in res.stdout + res.stderr


def test_ray_sweep_files_equal_the_basic_launchers(ray_sweep, basic_sweep):
    (ray_dir, ray_res), (basic_dir, basic_res) = ray_sweep, basic_sweep
    assert ray_res.returncode == 0 and basic_res.returncode == 0, basic_res.stderr[-3000:]
    ray_table, basic_table = pd.read_csv(ray_dir / "summary.csv"), pd.read_csv(basic_dir / "summary.csv")
    assert len(ray_table) == 4 and ray_table["seed"].tolist() == [0, 1, 2, 3]
    compared = [c for c in basic_table.columns if c != "runtime_s"]
    pd.testing.assert_frame_equal(ray_table[compared], basic_table[compared])
    assert (ray_dir / "report.html").is_file() and "Sweep summary" in ray_res.stdout


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


def test_a_search_through_ray_prunes_trials_two_at_a_time(demo_root, tmp_path):
    """hparams_search=optuna with the Ray launcher: trials two at a time (one logical GPU each) report every
    epoch to the study's journal; the median pruner stops at least one, which ends pruned, not failed."""
    pytest.importorskip("optuna")
    sweep = tmp_path / "search"
    tiny = [o for o in ARGS if not o.startswith("phase.lr=")]
    res = run_script("train.py", "hparams_search=optuna", *RAY, *demo_overrides(demo_root), *tiny, "phase.epochs=3",
                     "hydra.sweeper.n_trials=6", "hydra.sweeper.n_jobs=2", "hydra.sweeper.sampler.n_startup_trials=2",
                     "hydra.sweeper.pruner.startup_trials=2", "hydra.sweeper.pruner.warmup_epochs=0",
                     "hydra.sweeper.params.sequencer='choice(bilstm,gru)'", f"hydra.sweep.dir={sweep}")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    trials = pd.read_csv(sweep / "optuna_trials.csv")
    assert len(trials) == 6 and set(trials["state"]) <= {"complete", "pruned"}
    pruned = trials[trials["state"] == "pruned"]
    assert len(pruned) >= 1 and (pruned["epochs_reported"] < 3).all()
    assert (trials[trials["state"] == "complete"]["epochs_reported"] == 3).all()
    for run in pruned["run"]:
        assert (sweep / str(run) / "pruned.json").is_file() and not (sweep / str(run) / "failure.json").exists()
    summary = pd.read_csv(sweep / "summary.csv")
    assert sorted(summary["status"]) == sorted(trials["state"].replace({"complete": "done"}))
    placed = [json.loads((sweep / str(n) / "placement.json").read_text()) for n in (0, 1)]
    assert {p["CUDA_VISIBLE_DEVICES"] for p in placed} == {"0", "1"}  # the first two trials side by side
    best = yaml.safe_load((sweep / "optuna_best.yaml").read_text())
    assert best["best_value"] == pytest.approx(trials["value"][trials["state"] == "complete"].max())
    assert "pruned" in (sweep / "report.md").read_text().split("## Comparison")[0]
