"""The sweep report as a comparison dashboard, on synthetic sweeps: 300 val images, 2 tasks, configs x 3 seeds, one
config truly better on the same images, one that differs only by noise; plus the statistics it rests on."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pandas as pd
import pytest
import yaml

from deepart.report.stats import mcnemar_exact, paired_bootstrap, t_critical, t_interval, wilson_interval
from deepart.report.sweeps import log_report_to_wandb, write_report
from deepart.report.sweeps import main as report_main

N_IMAGES, CLASSES, SEEDS = 300, {"style": 5, "genre": 4}, (1, 2, 3)
THRESHOLD, NOISE = 0.6, 0.05  # an image is right when its difficulty plus run noise is below the threshold


def make_data(rng: np.random.Generator) -> dict:
    """The val split: true labels (genre unlabelled on ~15 % of the images), per-image difficulty, and the
    images (~10 %) a better config gets right whatever the run."""
    data = {}
    for task, n_classes in CLASSES.items():
        truth = rng.integers(0, n_classes, N_IMAGES)
        if task == "genre":
            truth[rng.random(N_IMAGES) < 0.15] = -1
        data[task] = {"truth": truth, "difficulty": rng.random(N_IMAGES), "fixed": rng.random(N_IMAGES) < 0.1}
    return data


def true_gain(data: dict, task: str) -> float:
    """The expected top-1 gain of the better config: the fixed images the baseline process gets wrong."""
    task_data = data[task]
    labelled = task_data["truth"] >= 0
    p_wrong = np.array([1 - NormalDist().cdf((THRESHOLD - d) / NOISE) for d in task_data["difficulty"]])
    return float((task_data["fixed"] * p_wrong)[labelled].mean())


def write_run(run_dir: Path, overrides: list[str], data: dict | None, rng: np.random.Generator, better: bool = False,
              history: bool = True, predictions: bool = True) -> dict:
    """A finished run: overrides.yaml, metrics.json (with `history` if asked) and val_predictions.csv (if asked).
    Its top-1 per task is that of its predictions; returns its metrics.json."""
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    frame = pd.DataFrame({"index": np.arange(N_IMAGES), "path": [f"val/{i:04d}.jpg" for i in range(N_IMAGES)]})
    best: dict[str, float] = {}
    for task, n_classes in CLASSES.items():
        task_data = data[task]
        truth = task_data["truth"]
        correct = task_data["difficulty"] + NOISE * rng.standard_normal(N_IMAGES) < THRESHOLD
        if better:
            correct |= task_data["fixed"]
        frame[task], frame[f"{task}_pred"] = truth, np.where(correct, truth, (truth + 1) % n_classes)
        labelled = truth >= 0
        top1 = float(correct[labelled].mean())
        best.update({f"val/{task}/top1": top1, f"val/{task}/top5": min(1.0, top1 + 0.2),
                     f"val/{task}/macro_f1": top1 - 0.05 * rng.random(), f"val/{task}/balanced_acc": top1,
                     f"val/{task}/count": int(labelled.sum())})
    best["val/mean_top1"] = float(np.mean([best[f"val/{t}/top1"] for t in CLASSES]))
    metrics = {"final": best, "best": best, "best_epoch": int(rng.integers(3, 6)), "epochs": 5, "runtime_s": 60.0,
               "phases": {"1": {"best": {"val/mean_top1": 0.9 * best["val/mean_top1"]}}, "2": {"best": best}}}
    if history:
        epochs = [("1", 1), ("1", 2), ("2", 1), ("2", 2), ("2", 3)]
        metrics["history"] = [{"phase": phase, "epoch": epoch, "lr": 1e-3, "train/loss": 1.0 / k,
                               **{key: value * (0.6 + 0.08 * k) for key, value in best.items() if key.endswith("top1")}}
                              for k, (phase, epoch) in enumerate(epochs, start=1)]
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    if predictions:
        frame.to_csv(run_dir / "val_predictions.csv", index=False)
    return metrics


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    """Sweep `a`: phase.lr=0.001 (the baseline, first in job order) and 0.01 (truly better) x 3 seeds; sweep `b`:
    phase.lr=0.1 (the same process as the baseline, other noise) x 3 seeds and a failed run."""
    root = tmp_path_factory.mktemp("sweeps")
    data = make_data(np.random.default_rng(0))
    metrics: dict[str, list[dict]] = {}
    job = {"a": 0, "b": 0}
    for sweep, lr, better in (("a", "0.001", False), ("a", "0.01", True), ("b", "0.1", False)):
        for seed in SEEDS:
            rng = np.random.default_rng([int(float(lr) * 1000), seed])
            run = write_run(root / sweep / str(job[sweep]), [f"phase.lr={lr}", f"seed={seed}"], data, rng, better)
            metrics.setdefault(lr, []).append(run)
            job[sweep] += 1
    failed = root / "b" / "3"
    (failed / ".hydra").mkdir(parents=True)
    (failed / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["phase.lr=0.1", "seed=4"]))
    (failed / "failure.json").write_text(json.dumps({"error": "ValueError", "message": "loss is nan", "oom": False}))
    out = root / "report"
    paths = write_report([root / "a", root / "b"], out)
    return {"root": root, "out": out, "paths": paths, "data": data, "metrics": metrics}


def paired_row(paired: pd.DataFrame, config: str, metric: str) -> pd.Series:
    return paired[(paired["config"] == config) & (paired["metric"] == metric)].iloc[0]


def test_true_gain_is_significant_and_noise_is_within_noise(sweeps):
    paired = pd.read_csv(sweeps["paths"]["paired"])
    assert set(paired["baseline"]) == {"phase.lr=0.001"}
    gains = {f"val/{t}/top1": 100 * true_gain(sweeps["data"], t) for t in CLASSES}
    gains["val/mean_top1"] = float(np.mean(list(gains.values())))
    for metric, gain in gains.items():
        better = paired_row(paired, "phase.lr=0.01", metric)
        assert better["verdict"] == "significant", better.to_dict()
        assert better["ci_low_points"] <= gain <= better["ci_high_points"], (gain, better.to_dict())
        assert 2 < gain < 6
        noise = paired_row(paired, "phase.lr=0.1", metric)
        assert noise["verdict"] == "within noise", noise.to_dict()
        assert noise["ci_low_points"] < 0 < noise["ci_high_points"]
    style = paired_row(paired, "phase.lr=0.01", "val/style/top1")
    assert style["images"] == N_IMAGES and style["matched_seeds"] == 3 and style["p_mcnemar"] < 0.001
    assert style["mcnemar_b"] > style["mcnemar_c"] and style["p_bootstrap"] < 0.01
    genre = paired_row(paired, "phase.lr=0.01", "val/genre/top1")
    assert genre["images"] == (sweeps["data"]["genre"]["truth"] >= 0).sum()
    md = (sweeps["out"] / "report.md").read_text()
    assert re.search(r"phase\.lr=0\.01 vs baseline, mean top-1: \+\d\.\d points \[\d\.\d, \d\.\d\], significant", md)
    assert re.search(r"phase\.lr=0\.1 vs baseline, mean top-1: [+-]\d\.\d points \[-\d\.\d, \d\.\d\], within noise",
                     md)
    assert "Baseline: phase.lr=0.001 (the first config in job order" in md


def test_comparison_numbers_are_the_seed_statistics(sweeps):
    compare = pd.read_csv(sweeps["paths"]["compare"]).set_index("config")
    assert compare.index.tolist() == ["phase.lr=0.001", "phase.lr=0.01", "phase.lr=0.1"]
    assert compare["baseline"].tolist() == [True, False, False]
    assert compare["seeds"].tolist() == [3, 3, 3] and compare["runs"].tolist() == [3, 3, 4]
    for lr, runs in sweeps["metrics"].items():
        row = compare.loc[f"phase.lr={lr}"]
        for key in ("val/style/top1", "val/genre/top1", "val/mean_top1", "val/genre/macro_f1"):
            values = np.array([r["best"][key] for r in runs])
            assert row[f"{key} mean"] == pytest.approx(values.mean())
            assert row[f"{key} std"] == pytest.approx(values.std(ddof=1))
        values = np.array([r["best"]["val/style/top1"] for r in runs])
        half = 4.303 * values.std(ddof=1) / math.sqrt(3)
        assert row["val/style/top1 ci_low"] == pytest.approx(values.mean() - half, abs=1e-4)
        assert row["val/style/top1 ci_high"] == pytest.approx(values.mean() + half, abs=1e-4)
        assert row["best_epoch mean"] == pytest.approx(np.mean([r["best_epoch"] for r in runs]))
    md = (sweeps["out"] / "report.md").read_text()
    mean, std = 100 * compare.loc["phase.lr=0.01", "val/mean_top1 mean"], 100 * compare.loc["phase.lr=0.01",
                                                                                              "val/mean_top1 std"]
    assert f"| phase.lr=0.01 | 3 | {mean:.1f} ± {std:.1f} ▲ |" in md


def test_pooled_sweeps_keep_the_old_outputs(sweeps):
    out = sweeps["out"]
    table = pd.read_csv(out / "report.csv")
    assert set(table["run"]) == {"a/0", "a/1", "a/2", "a/3", "a/4", "a/5", "b/0", "b/1", "b/2", "b/3"}
    assert table["status"].tolist()[-1] == "failed"
    assert (out / "report_seeds.csv").is_file() and (out / "report.png").stat().st_size > 5000
    text = (out / "report.md").read_text()
    assert "run b/3: failed (ValueError: loss is nan)" in text
    # pooled sweeps: a short title, the sweep dirs listed once under it
    root = sweeps["root"]
    assert text.startswith("# Sweep report: 2 sweeps\n") and f"Sweeps: {root / 'a'}, {root / 'b'}. 10 runs" in text


def test_html_is_one_self_contained_page(sweeps):
    page = (sweeps["out"] / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "<script" not in page and "@import" not in page and "url(" not in page
    assert len(re.findall(r'<img [^>]*src="data:image/png;base64,', page)) >= 3
    assert "Comparison of configs" in page and "Paired tests against the baseline" in page
    assert "Baseline: phase.lr=0.001" in page and "How to read this" in page
    assert '<td class="up">' in page and "phase.lr=0.001 (baseline)" in page
    assert "a/0" in page and "run b/3: failed" in page
    for kind in ("bars", "curves"):
        assert sweeps["paths"][kind].stat().st_size > 5000


def test_old_runs_without_history_or_predictions_are_reported(tmp_path):
    sweep = tmp_path / "old"
    data = make_data(np.random.default_rng(1))
    for n, (lr, seed, new) in enumerate([("0.001", 1, True), ("0.001", 2, True), ("0.01", 1, False),
                                         ("0.01", 2, False), ("0.1", 1, False)]):
        write_run(sweep / str(n), [f"phase.lr={lr}", f"seed={seed}"], data, np.random.default_rng(n),
                  history=new, predictions=new)
    metrics = json.loads((sweep / "4" / "metrics.json").read_text())
    metrics["best"] = {k: v for k, v in metrics["best"].items() if not k.endswith("/count")}
    (sweep / "4" / "metrics.json").write_text(json.dumps(metrics))
    paths = write_report(sweep)
    paired = pd.read_csv(paths["paired"])
    assert set(paired["verdict"]) == {"no paired test: no val_predictions.csv"}
    compare = pd.read_csv(paths["compare"]).set_index("config")
    assert compare.loc["phase.lr=0.01", "interval"] == "t over seeds"
    assert pd.isna(compare.loc["phase.lr=0.1", "interval"])  # one run without image counts: no interval
    assert compare.loc["phase.lr=0.1", ["val/style/top1 ci_low", "val/style/top1 std"]].isna().all()
    md = (sweep / "report.md").read_text()
    assert "phase.lr=0.01 vs baseline: no paired test: no val_predictions.csv" in md
    assert "no val_predictions.csv, so no paired test: run 2, 3, 4" in md
    assert "no learning curve: run 2, 3, 4" in md
    assert "curves" in paths  # the runs that have a history


def test_one_run_gets_a_wilson_interval_over_its_val_images(tmp_path):
    sweep = tmp_path / "single"
    data = make_data(np.random.default_rng(2))
    run = write_run(sweep / "0", ["phase.lr=0.001"], data, np.random.default_rng(0))
    paths = write_report(sweep)
    row = pd.read_csv(paths["compare"]).iloc[0]
    count = run["best"]["val/style/count"]
    expected = wilson_interval(round(run["best"]["val/style/top1"] * count), count)
    assert (row["val/style/top1 ci_low"], row["val/style/top1 ci_high"]) == pytest.approx(expected)
    assert len(pd.read_csv(paths["paired"])) == 0
    assert "There is no other config to compare with." in (sweep / "report.md").read_text()
    assert "curves" in paths and (sweep / "report.html").is_file()


def test_baseline_option_picks_the_named_config(sweeps, capsys):
    root, out = sweeps["root"], sweeps["root"] / "by-lr"
    assert report_main([str(root / "a"), str(root / "b"), "--out", str(out), "--baseline", "phase.lr=1e-2"]) == 0
    paired = pd.read_csv(out / "report_paired.csv")
    assert set(paired["baseline"]) == {"phase.lr=0.01"}
    assert set(paired["config"]) == {"phase.lr=0.001", "phase.lr=0.1"}
    worse = paired_row(paired, "phase.lr=0.001", "val/mean_top1")
    assert worse["verdict"] == "significant" and worse["ci_high_points"] < 0
    assert "Baseline: phase.lr=0.01 (given by --baseline)" in capsys.readouterr().out
    assert pd.read_csv(out / "report_compare.csv")["baseline"].tolist() == [False, True, False]

    assert report_main([str(root / "a"), "--baseline", "phase.lr=0.5"]) == 2
    assert "--baseline phase.lr=0.5 matches no config; the configs are: phase.lr=0.001, phase.lr=0.01" in \
        capsys.readouterr().err
    assert report_main([str(root / "a"), "--baseline", "loss.gamma=2"]) == 2
    assert "loss.gamma is not an override of these runs; their config keys are phase.lr" in capsys.readouterr().err


@pytest.fixture
def recorded_wandb(monkeypatch):
    """wandb.init, run.log and run.summary.update intercepted: the init arguments, the logged data, the summary."""
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    calls: dict = {"init": None, "data": {}, "summary": {}}
    real_init = wandb.init

    def init(**kwargs):
        calls["init"] = kwargs
        run = real_init(**kwargs)
        real_log, summary_type = run.log, type(run.summary)
        real_update = summary_type.update

        def log(data, *args, **kw):
            calls["data"].update(data)
            return real_log(data, *args, **kw)

        def update(self, data):
            calls["summary"].update(data)
            return real_update(self, data)

        monkeypatch.setattr(run, "log", log)
        monkeypatch.setattr(summary_type, "update", update)
        return run

    monkeypatch.setattr(wandb, "init", init)
    return calls


def test_report_is_logged_to_one_offline_wandb_run(sweeps, recorded_wandb):
    out = sweeps["out"]
    run_id = log_report_to_wandb(out, project="deepart-test", group="multirun_sweep")
    init = recorded_wandb["init"]
    assert run_id and init["job_type"] == "sweep-summary" and init["group"] == "multirun_sweep"
    assert init["mode"] == "offline" and init["name"] == "sweep-summary"
    data = recorded_wandb["data"]
    assert set(data) == {"compare", "paired", "report", "figures/report", "figures/report_bars",
                         "figures/report_curves"}
    assert len(data["compare"].data) == 3 and len(data["paired"].data) == 6
    offline = list((out / "wandb").glob("offline-run-*"))
    assert offline, "no offline W&B run written"
    summary = recorded_wandb["summary"]
    assert summary["baseline"] == "phase.lr=0.001" and summary["best_config"] == "phase.lr=0.01"
    assert summary["significant_vs_baseline"] == 1 and summary["configs"] == 3 and summary["runs_done"] == 9


def test_a_wandb_failure_is_a_warning(sweeps, monkeypatch, caplog):
    import wandb

    def broken(**_):
        raise RuntimeError("no W&B today")

    monkeypatch.setattr(wandb, "init", broken)
    assert log_report_to_wandb(sweeps["out"], project="deepart-test") is None
    assert "no W&B today" in caplog.text


def test_t_critical_and_interval():
    assert t_critical(1) == pytest.approx(12.706, abs=1e-3)
    assert t_critical(2) == pytest.approx(4.303, abs=1e-3)
    assert t_critical(10) == pytest.approx(2.228, abs=1e-3)
    assert t_critical(30) == pytest.approx(2.042, abs=1e-3)
    assert t_critical(4, confidence=0.99) == pytest.approx(4.604, abs=1e-3)
    low, high = t_interval([0.5, 0.6, 0.7])
    assert (low, high) == pytest.approx((0.6 - 4.303 * 0.1 / math.sqrt(3), 0.6 + 4.303 * 0.1 / math.sqrt(3)), abs=1e-4)
    assert all(math.isnan(v) for v in t_interval([0.5]))


def test_wilson_interval():
    assert wilson_interval(50, 100) == pytest.approx((0.4038, 0.5962), abs=1e-4)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def test_mcnemar_exact():
    assert mcnemar_exact(10, 2) == pytest.approx(0.03857, abs=1e-5)  # 2 * (1 + 12 + 66) / 2**12
    assert mcnemar_exact(2, 10) == mcnemar_exact(10, 2)
    assert mcnemar_exact(5, 5) == 1.0 and mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(0, 7) == pytest.approx(2 / 2**7)
    exact = 2 * sum(math.comb(1060, i) for i in range(501)) / 2**1060  # exact at any size (integer arithmetic)
    assert mcnemar_exact(560, 500) == pytest.approx(exact, rel=1e-9)
    assert exact == pytest.approx(math.erfc(59 / math.sqrt(1060) / math.sqrt(2)), rel=0.02)  # near the normal approx


def test_paired_bootstrap():
    rng = np.random.default_rng(0)
    base = rng.random((3, 400)) < 0.6
    better = base | (rng.random(400) < 0.2)
    result = paired_bootstrap(better, base, seed=1)
    assert result.diff == pytest.approx(better.mean() - base.mean())
    assert result.low < result.diff < result.high and result.significant and result.p_value < 0.01
    assert paired_bootstrap(better, base, seed=1) == result  # repeatable
    same = paired_bootstrap(base, base)
    assert same.diff == 0 and not same.significant and same.p_value == 1.0
    labelled = np.ones((2, 400), dtype=bool)
    labelled[1, :100] = False
    two_tasks = paired_bootstrap(np.stack([better, better], 1), np.stack([base, base], 1), labelled, seed=1)
    expected = np.mean([better.mean() - base.mean(), better[:, 100:].mean() - base[:, 100:].mean()])
    assert two_tasks.diff == pytest.approx(expected)


def test_last_epoch_and_each_phase_best_are_compared(sweeps):
    """Per config: the mean top-1 of the last epoch (no selection) and of each phase's best epoch."""
    compare = pd.read_csv(sweeps["paths"]["compare"]).set_index("config")
    runs = sweeps["metrics"]["0.01"]
    mean_top1 = [m["best"]["val/mean_top1"] for m in runs]
    row = compare.loc["phase.lr=0.01"]
    assert row["phase 1 best mean"] == pytest.approx(0.9 * np.mean(mean_top1))
    assert row["phase 2 best mean"] == pytest.approx(np.mean(mean_top1))
    assert row["final std"] == pytest.approx(np.std(mean_top1, ddof=1))
    assert "mean top-1, phase 1 best" in (sweeps["out"] / "report.md").read_text()



def test_runs_that_peaked_early_show_their_best_epoch_and_last_minus_best(tmp_path):
    """A run whose last epoch fell below its best shows it in report.csv, report.md, the comparison and
    summary.csv: last - best in points (the last epoch's mean top-1 minus the best epoch's), best epoch."""
    from deepart.training.sweep import format_summary, summarize

    data, drops = make_data(np.random.default_rng(0)), {}
    for job, (lr, seed, drop, best_epoch) in enumerate([("0.001", 1, 0.041, 5), ("0.001", 2, 0.02, 7),
                                                         ("0.01", 1, 0.0, 15), ("0.01", 2, 0.0, 15)]):
        run_dir = tmp_path / str(job)
        metrics = write_run(run_dir, [f"phase.lr={lr}", f"seed={seed}"], data, np.random.default_rng(job))
        metrics["final"] = {**metrics["best"], "val/mean_top1": metrics["best"]["val/mean_top1"] - drop}
        metrics.update(best_epoch=best_epoch, epochs=15)
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
        drops[str(job)] = -drop
    paths = write_report(tmp_path)
    table = pd.read_csv(paths["csv"]).set_index("run")
    for run, drop in drops.items():
        assert table.loc[int(run), "last_minus_best/val/mean_top1"] == pytest.approx(drop)
    assert table.loc[0, "best_epoch"] == 5
    compare = pd.read_csv(paths["compare"]).set_index("config")
    assert compare.loc["phase.lr=0.001", "last_minus_best mean"] == pytest.approx(-0.0305)
    assert compare.loc["phase.lr=0.001", "best_epoch mean"] == pytest.approx(6)
    md = (tmp_path / "report.md").read_text()
    assert "| best epoch | mean top-1, last epoch | last - best (points) |" in md
    assert re.search(r"\| 6\.0 \| [\d.]+ ± [\d.]+ \| -3\.[01] ± 1\.5 \|", md), md
    assert "| -4.1 |" in md and "the run peaked early" in md
    assert "last - best (points)" in (tmp_path / "report.html").read_text()
    summary = format_summary(summarize(tmp_path))
    assert "last - best" in summary.splitlines()[0] and "-4.1" in summary and "best_epoch" in summary


def test_prediction_files_pair_up_whether_paths_are_absolute_or_relative():
    from deepart.report.compare import _same_image

    assert _same_image("/data/paintings-dev/val/Baroque/1.jpg", "val/Baroque/1.jpg")
    assert _same_image("val/Baroque/1.jpg", "val/Baroque/1.jpg")
    assert not _same_image("/data/val/Baroque/11.jpg", "val/Baroque/1.jpg")
    assert not _same_image("val/Baroque/1.jpg", "val/Cubism/1.jpg")


def test_a_config_without_the_swept_overrides_is_named_defaults(tmp_path):
    """Runs of the command's own defaults (e.g. a first sweep without the key a second sweep varies)."""
    data = make_data(np.random.default_rng(0))
    for n, seed in enumerate(SEEDS):
        write_run(tmp_path / "plain" / str(n), [f"seed={seed}"], data, np.random.default_rng([1, seed]))
        write_run(tmp_path / "varied" / str(n), ["phase.lr=0.01", f"seed={seed}"], data,
                  np.random.default_rng([2, seed]), better=True)
    paths = write_report([tmp_path / "varied", tmp_path / "plain"], tmp_path / "out", baseline="defaults")
    compare = pd.read_csv(paths["compare"])
    assert compare["config"].tolist() == ["phase.lr=0.01", "defaults"]
    assert compare.set_index("config").loc["defaults", "baseline"]
    assert set(pd.read_csv(paths["paired"])["baseline"]) == {"defaults"}
    # the per-run and over-seeds tables keep the two configs apart too (the key is unset in one sweep)
    runs = pd.read_csv(paths["csv"])
    assert "phase.lr" in runs.columns and runs["phase.lr"].isna().sum() == len(SEEDS)
    seeds = pd.read_csv(paths["seeds"])
    assert sorted(seeds["runs"]) == [len(SEEDS), len(SEEDS)]


def test_many_configs_keep_distinct_colours_and_a_bounded_figure(tmp_path):
    """Twelve configs pooled from six one-key sweeps (the shape of an ablation table): every config gets its own
    colour, and report.png wraps its one-panel-per-key layout instead of growing a panel wider per key."""
    from PIL import Image

    from deepart.report.figures import PLOT_COLUMNS, config_colors

    data = make_data(np.random.default_rng(0))
    keys = ["phase.lr", "loss.gamma", "sampler.power", "model.dim", "data.image_size", "trainer.ema_decay"]
    sweeps = []
    for k, key in enumerate(keys):
        for v, value in enumerate(("1", "2")):
            for seed in SEEDS:
                run = tmp_path / key / str(v * len(SEEDS) + seed - 1)
                write_run(run, [f"{key}={value}", f"seed={seed}"], data, np.random.default_rng([k, v, seed]))
        sweeps.append(tmp_path / key)
    paths = write_report(sweeps, tmp_path / "out")
    assert len(pd.read_csv(paths["compare"])) == 12
    colours = config_colors(12)
    assert len(set(colours)) == 12 and len(set(config_colors(25))) == 25
    width, height = Image.open(paths["png"]).size
    assert width <= PLOT_COLUMNS * 4.2 * 100 + 10 and height > 2 * 3.6 * 100 - 10  # 6 keys: two rows of panels
    assert Image.open(paths["curves"]).size[0] > Image.open(paths["curves"]).size[1]  # the legend sits beside
