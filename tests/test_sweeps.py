"""Sweeps beyond the basic launcher: a crashing run, resume_sweep=, Optuna, submitit_local, the report."""
import json
import os
import runpy
import subprocess
import sys

import pandas as pd
import pytest
import yaml
from hydra.core.global_hydra import GlobalHydra

from deepart.report.sweeps import main as report_main
from deepart.report.sweeps import write_report
from deepart.training import trainer as trainer_module
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

pytestmark = pytest.mark.slow  # end-to-end: real commands and trainings (python -m pytest -m "not slow" skips them)

pytest.importorskip("hydra_plugins.hydra_submitit_launcher")

def train_in_process(monkeypatch, *args: str) -> None:
    """`python train.py <args>` in this process (so a test can inject a fault into one run)."""
    monkeypatch.setattr(sys, "argv", [str(REPO / "train.py"), *args])
    try:
        runpy.run_path(str(REPO / "train.py"), run_name="__main__")
    finally:
        GlobalHydra.instance().clear()


def test_a_crashing_run_is_reported_and_resume_sweep_finishes_it(demo_root, tmp_path, monkeypatch):
    sweep = tmp_path / "sweep"
    args = ["-m", *demo_overrides(demo_root), *TINY, *TINY_SEQUENCER, "phase.epochs=2", "loss.gamma=1,3"]
    real_save = trainer_module.Trainer._save

    def out_of_memory_in_gamma_3(self, *a, **kw):
        real_save(self, *a, **kw)
        if self.cfg.loss.gamma == 3:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(trainer_module.Trainer, "_save", out_of_memory_in_gamma_3)
    with pytest.raises(SystemExit) as stopped:  # the sweep finishes, then reports the failure by its exit status
        train_in_process(monkeypatch, *args, f"hydra.sweep.dir={sweep}")
    assert stopped.value.code == 1
    assert json.loads((sweep / "0" / "metrics.json").read_text())["epochs"] == 2  # the other run finished
    failure = json.loads((sweep / "1" / "failure.json").read_text())
    assert failure["oom"] and "Tried to allocate" in failure["message"] and "lower phase.batch_size" in failure["hint"]
    assert not (sweep / "1" / "metrics.json").exists()
    table = pd.read_csv(write_report(sweep)["csv"])
    assert table["status"].tolist() == ["done", "failed"]  # listed, not dropped
    assert "out of memory" in table.loc[1, "error"]
    assert "run 1: failed (out of memory: RuntimeError" in (sweep / "report.md").read_text()

    monkeypatch.setattr(trainer_module.Trainer, "_save", real_save)
    finished = (sweep / "0" / "metrics.json").stat().st_mtime_ns
    train_in_process(monkeypatch, *args, f"resume_sweep={sweep}")
    assert (sweep / "0" / "metrics.json").stat().st_mtime_ns == finished  # skipped
    resumed = json.loads((sweep / "1" / "metrics.json").read_text())
    assert resumed["epochs"] == 2 and not (sweep / "1" / "failure.json").exists()
    assert "phase 3: resumed after epoch 1" in (sweep / "1" / "train.log").read_text()
    assert yaml.safe_load((sweep / "1" / ".hydra" / "overrides.yaml").read_text())[-1] == "loss.gamma=3"
    table = pd.read_csv(write_report(sweep)["csv"])
    assert table["status"].tolist() == ["done", "done"]
    assert table["val/mean_top1"].is_monotonic_decreasing

    with pytest.raises(SystemExit):  # a different command cannot continue this sweep
        train_in_process(monkeypatch, *args[:-1], "loss.gamma=2,3", f"resume_sweep={sweep}")


def test_optuna_search_runs_three_trials(demo_root, tmp_path, monkeypatch):
    """The search typed in a fresh folder with Hydra's default sweep dir: its trials, study and tables in one dir."""
    pytest.importorskip("optuna")
    monkeypatch.chdir(tmp_path)
    tiny = [o for o in TINY if not o.startswith("phase.lr=")]  # a fixed value would take lr out of the search
    train_in_process(monkeypatch, "hparams_search=optuna", *demo_overrides(demo_root), *tiny, *TINY_SEQUENCER,
                     "hydra.sweeper.n_trials=3", "hydra.sweeper.params.sequencer='choice(bilstm,gru)'")
    sweep = the_sweep_dir(tmp_path)
    scores = [json.loads((sweep / str(i) / "metrics.json").read_text())["best"]["val/mean_top1"] for i in range(3)]
    best = yaml.safe_load((sweep / "optuna_best.yaml").read_text())
    assert best["best_value"] == pytest.approx(max(scores)) and best["trials"] == {"complete": 3}
    assert best["best_params"]["sequencer"] in ("bilstm", "gru")
    trials = pd.read_csv(sweep / "optuna_trials.csv")
    assert trials["run"].tolist() == [0, 1, 2] and trials["value"].tolist() == pytest.approx(scores)
    assert (sweep / "optuna.journal").is_file()  # the study, in the sweep dir
    table = pd.read_csv(write_report(sweep)["csv"])
    assert {"phase.lr", "loss.gamma"} <= set(table.columns) and len(table) == 3
    assert len(set(table["phase.lr"])) == 3
    assert "## Hyper-parameter search" in (sweep / "report.md").read_text()


def test_a_killed_search_resumed_from_its_study_repeats_no_finished_trial(demo_root, tmp_path):
    """A real search, typed in a fresh folder, is killed (SIGKILL) during its third trial's first epoch; the same
    command with resume_sweep=multirun/<date>/<time> continues that trial from its checkpoint and runs trials 1-2
    not again, and is killed in turn right after asking its next trial, before giving it a run; resumed once more,
    it fails that half-asked trial cleanly and asks a new one for the fourth run."""
    pytest.importorskip("optuna")
    hold = tmp_path / "held"
    tiny = [o for o in TINY if not o.startswith("phase.lr=")]
    args = ["hparams_search=optuna", *demo_overrides(demo_root), *tiny, *TINY_SEQUENCER, "phase.epochs=2",
            "hydra.sweeper.n_trials=4", "hydra.sweeper.pruner.name=none",
            "hydra.sweeper.params.sequencer='choice(bilstm,gru)'"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **hold_env("epoch_end:5", hold),  # 2 trials x 2 epochs, then 1
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with open(tmp_path / "search.log", "w") as out:
        proc = subprocess.Popen([sys.executable, str(REPO / "train.py"), *args], cwd=tmp_path, env=env, text=True,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until_held(proc, hold)
        proc.kill()
        proc.wait(timeout=60)
    finally:
        hold.unlink(missing_ok=True)
    sweep = the_sweep_dir(tmp_path)
    assert [(sweep / str(n) / "metrics.json").is_file() for n in range(3)] == [True, True, False]
    finished = {n: (sweep / str(n) / "metrics.json").stat().st_mtime_ns for n in (0, 1)}
    resume = f"resume_sweep={sweep.relative_to(tmp_path)}"

    killed = run_script("train.py", *args, resume, cwd=tmp_path, env={"DEEPART_KILL_AT": "trial_asked:1"})
    assert killed.returncode == -9, killed.stdout[-3000:] + killed.stderr[-3000:]
    assert (sweep / "2" / "metrics.json").is_file() and not (sweep / "3").exists()
    assert "phase 3: resumed after epoch 1" in (sweep / "2" / "train.log").read_text()

    res = run_script("train.py", *args, resume, cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert {n: (sweep / str(n) / "metrics.json").stat().st_mtime_ns for n in (0, 1)} == finished  # not run again
    assert "trial 3 was asked but never launched" in res.stdout + res.stderr
    trials = pd.read_csv(sweep / "optuna_trials.csv")
    assert trials["trial"].tolist() == [0, 1, 2, 3, 4]
    assert trials["state"].tolist() == ["complete", "complete", "complete", "fail", "complete"]
    assert trials["run"].fillna(-1).astype(int).tolist() == [0, 1, 2, -1, 3]
    assert (sweep / "3" / "metrics.json").is_file() and not (sweep / "4").exists()
    assert the_sweep_dir(tmp_path) == sweep


def test_an_unknown_search_key_is_one_line_before_any_trial(demo_root, tmp_path):
    pytest.importorskip("optuna")
    sweep = tmp_path / "search"
    res = run_script("train.py", "hparams_search=optuna", *demo_overrides(demo_root), *TINY, *TINY_SEQUENCER,
                     "+hydra.sweeper.params.loss.gama='interval(0,4)'", f"hydra.sweep.dir={sweep}")
    assert res.returncode == 2, res.stdout[-3000:] + res.stderr[-3000:]
    out = res.stdout + res.stderr
    line = [x for x in out.splitlines() if "hydra.sweeper.params.loss.gama" in x]
    assert len(line) == 1 and "did you mean loss.gamma" in line[0] and "Traceback" not in out
    assert not any(p.is_dir() for p in sweep.glob("[0-9]*"))


def test_submitit_local_launcher_runs_a_two_job_sweep(demo_root, tmp_path):
    """Typed in a fresh folder with Hydra's default sweep dir: the jobs (other processes) land in the sweep dir of
    multirun.yaml, which gets the summary and the report."""
    res = run_script("train.py", "-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5",
                     *demo_overrides(demo_root), *TINY, *TINY_SEQUENCER, "loss.gamma=1,3", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    sweep = the_sweep_dir(tmp_path)
    for run in ("0", "1"):
        assert json.loads((sweep / run / "metrics.json").read_text())["epochs"] == 1
    assert (sweep / ".submitit").is_dir() and (sweep / "multirun.yaml").is_file()
    assert pd.read_csv(sweep / "summary.csv")["loss.gamma"].tolist() == [1, 3]
    assert (sweep / "report.html").is_file() and "Sweep summary" in res.stdout


def test_a_search_through_submitit_runs_its_trials_two_at_a_time_in_one_sweep_dir(demo_root, tmp_path):
    pytest.importorskip("optuna")
    tiny = [o for o in TINY if not o.startswith("phase.lr=")]
    res = run_script("train.py", "hparams_search=optuna", "hydra/launcher=submitit_local",
                     "hydra.launcher.timeout_min=5", *demo_overrides(demo_root), *tiny, *TINY_SEQUENCER,
                     "hydra.sweeper.n_trials=3", "hydra.sweeper.n_jobs=2", "hydra.sweeper.pruner.name=none",
                     "hydra.sweeper.params.sequencer='choice(bilstm,gru)'", cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    sweep = the_sweep_dir(tmp_path)
    trials = pd.read_csv(sweep / "optuna_trials.csv")
    assert trials["state"].tolist() == ["complete"] * 3 and sorted(trials["run"]) == [0, 1, 2]
    assert (sweep / "optuna.journal").is_file() and len(pd.read_csv(sweep / "summary.csv")) == 3


def test_a_search_without_a_completed_trial_exits_non_zero_and_lists_its_trials(demo_root, tmp_path):
    """Every trial fails (batch size 0): the search lists them and exits 1, even with fail_on_run_error=false."""
    pytest.importorskip("optuna")
    res = run_script("train.py", "hparams_search=optuna", *demo_overrides(demo_root), *TINY, *TINY_SEQUENCER,
                     "phase.batch_size=0", "hydra.sweeper.n_trials=2", "fail_on_run_error=false", cwd=tmp_path)
    out = res.stdout + res.stderr
    assert res.returncode == 1, out[-3000:]
    assert "run 0 failed" in out and "run 1 failed" in out and "the search has no completed trial (of 2)" in out
    trials = pd.read_csv(the_sweep_dir(tmp_path) / "optuna_trials.csv")
    assert trials["state"].tolist() == ["fail", "fail"]


def fake_run(sweep, name, overrides, best=None, failure=None, runtime=10.0):
    run = sweep / name
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if best is not None:
        metrics = {"val/style/top1": best, "val/style/top5": min(1.0, best + 0.3), "val/mean_top1": best}
        (run / "metrics.json").write_text(json.dumps({"final": metrics, "best": metrics, "best_epoch": 3,
                                                      "epochs": 4, "runtime_s": runtime}))
    if failure is not None:
        (run / "failure.json").write_text(json.dumps({"error": "ValueError", "message": failure, "oom": False}))


def test_report_sorts_lists_failures_and_aggregates_seeds(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    fake_run(sweep, "0", ["phase.lr=0.001", "seed=1"], best=0.50)
    fake_run(sweep, "1", ["phase.lr=0.001", "seed=2"], best=0.60)
    fake_run(sweep, "2", ["phase.lr=0.01", "seed=1"], best=0.70)
    fake_run(sweep, "3", ["phase.lr=0.01", "seed=2"], failure="loss is nan")
    fake_run(sweep, "4", ["phase.lr=0.1", "seed=1"])  # killed: neither metrics nor failure
    assert report_main([str(sweep)]) == 0
    table = pd.read_csv(sweep / "report.csv")
    assert table["run"].tolist() == [2, 1, 0, 3, 4]
    assert table["status"].tolist() == ["done", "done", "done", "failed", "unfinished"]
    assert list(table.columns[:4]) == ["run", "phase.lr", "seed", "status"]
    assert {"val/style/top1", "val/style/top5", "best_epoch", "runtime_s"} <= set(table.columns)
    seeds = pd.read_csv(sweep / "report_seeds.csv").set_index("phase.lr")
    assert seeds.loc[0.001, "val/mean_top1 mean"] == pytest.approx(0.55)
    assert seeds.loc[0.001, "val/mean_top1 std"] == pytest.approx(0.0707107, abs=1e-6)
    assert seeds.loc[0.01, "runs"] == 2 and seeds.loc[0.01, "done"] == 1
    md = (sweep / "report.md").read_text()
    assert "55.0 ± 7.1" in md and "| 70.0 |" in md  # one finished seed: no std
    assert "run 3: failed (ValueError: loss is nan)" in md and "- run 4: unfinished\n" in md
    assert (sweep / "report.png").stat().st_size > 5000
    assert "| run | phase.lr | seed | status |" in capsys.readouterr().out


def test_report_of_a_missing_dir_is_a_clear_error(tmp_path, capsys):
    assert report_main([str(tmp_path / "nope")]) == 2
    assert "sweep dir not found" in capsys.readouterr().err


def test_a_sweep_with_failed_runs_finishes_the_others_then_exits_non_zero(demo_root, tmp_path):
    """As SLURM jobs and scripts see it: a real `train.py -m` whose second run fails (an unknown backbone)."""
    sweep = tmp_path / "sweep"
    args = ["-m", *demo_overrides(demo_root), *TINY, *TINY_SEQUENCER, "backbone.name=test_efficientnet,nope_b99",
            f"hydra.sweep.dir={sweep}"]
    res = run_script("train.py", *args)
    assert res.returncode == 1, res.stderr[-3000:]
    assert (sweep / "0" / "metrics.json").is_file() and (sweep / "1" / "failure.json").is_file()
    assert (sweep / "summary.csv").is_file() and (sweep / "report.html").is_file()
    assert "1 of 2 runs have no results" in res.stdout
    again = run_script("train.py", *args, f"resume_sweep={sweep}", "fail_on_run_error=false")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already finished; skipped" in again.stdout + again.stderr
    assert "1 of 2 runs have no results" in again.stdout



def test_sweep_report_and_its_wandb_summary_run(demo_root, tmp_path):
    """With logger=wandb the sweep's report also goes to one W&B run of the sweep's group (offline here)."""
    sweep = tmp_path / "sweep"
    tiny = [a for a in TINY if not a.startswith("logger=")]
    res = run_script("train.py", "-m", *demo_overrides(demo_root), *tiny, *TINY_SEQUENCER, "logger=wandb",
                     "logger.num_attention_images=0", "seed=1,2", f"hydra.sweep.dir={sweep}")
    assert res.returncode == 0, res.stderr[-3000:]
    html = (sweep / "report.html").read_text()
    assert "<table" in html and "data:image/png;base64," in html
    summary_runs = list((sweep / "wandb").glob("offline-run-*"))
    assert len(summary_runs) == 1  # one summary run, beside the two training runs' own
    assert all(list((sweep / str(n) / "wandb").glob("offline-run-*")) for n in (0, 1))
