"""Calibrated confidence: ECE and temperature fitting on hand-computed cases, eval.py calibrate=true on a trained
demo run (temperatures kept in the checkpoint and the export, top-1 unchanged), predict's min_confidence, and
bad values of the new keys as one line naming the key."""
import json
import math

import pytest
import torch
from PIL import Image

from deepart.core.checkpoint import Checkpoint
from deepart.core.errors import ConfigError
from deepart.core.rundir import summary_row
from deepart.inference.loading import Predictor, decode_top_k
from deepart.objectives.calibration import (
    Calibration,
    coverage_table,
    crossfit_ece,
    ece,
    fit_temperature,
    min_confidence_per_task,
    nll,
    scaled_probs,
)
from deepart.objectives.metrics import MetricAccumulator
from tests.test_export import cli, one_line_error

pytestmark = pytest.mark.slow  # end-to-end: real commands and trainings (python -m pytest -m "not slow" skips them)

# top probabilities 0.95 (right), 0.55 (wrong), 0.75 (right); the fourth row has no label
PROBS = torch.tensor([[0.95, 0.05], [0.55, 0.45], [0.25, 0.75], [0.8, 0.2]])
LABELS = torch.tensor([0, 1, 1, -1])


def test_ece_of_a_hand_computed_case():
    # 10 bins: each answer alone in its bin -> (|1 - 0.95| + |0 - 0.55| + |1 - 0.75|) / 3
    assert ece(PROBS, LABELS, n_bins=10) == pytest.approx(0.85 / 3)
    # 2 bins: 0.55 and 0.75 share (0.5, 1] with 0.95: |2/3 - 0.75| over all three
    assert ece(PROBS, LABELS, n_bins=2) == pytest.approx(abs(2 / 3 - 2.25 / 3))
    # two answers in one bin of five, (0.6, 0.8]: mean confidence 0.65, accuracy 0.5
    assert ece(torch.tensor([[0.62, 0.38], [0.68, 0.32]]), torch.tensor([0, 1]), n_bins=5) == pytest.approx(0.15)
    assert ece(PROBS, torch.full((4,), -1)) == 0.0  # nothing labelled


def test_the_accumulator_reports_the_same_ece_as_the_function_over_batches():
    logits = torch.randn(40, 4, generator=torch.Generator().manual_seed(0)) * 3
    labels = torch.randint(0, 4, (40,), generator=torch.Generator().manual_seed(1))
    labels[::7] = -1
    meter = MetricAccumulator({"style": list("abcd")})
    for part in range(0, 40, 16):
        meter.update({"style": logits[part:part + 16]}, labels[part:part + 16, None])
    assert meter.compute()["val/style/ece"] == pytest.approx(ece(logits.softmax(-1), labels), abs=1e-6)
    row = summary_row({"final": meter.compute(), "best": meter.compute()}, "val/mean_top1")
    assert "val/style/ece" in row and "best/val/style/ece" in row  # summary.csv and the report take it


def test_fitted_temperature_of_a_hand_computed_case():
    # every row has logits (1, 0) and 3 of 4 are class 0: the NLL is lowest where sigmoid(1 / T) = 3/4
    logits = torch.tensor([[1.0, 0.0]] * 4)
    t = fit_temperature(logits, torch.tensor([0, 0, 0, 1]))
    assert t == pytest.approx(1 / math.log(3), rel=1e-4)
    assert fit_temperature(logits, torch.full((4,), -1)) == 1.0


@pytest.mark.parametrize("scale", [3.0, 0.4])
def test_temperature_scaling_undoes_over_and_under_confidence_on_held_out_logits(scale):
    """Labels drawn from softmax(z); a model reporting scale * z is over- (or under-) confident."""
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(4000, 5, generator=gen) * 2
    labels = torch.multinomial(z.softmax(-1), 1, generator=gen)[:, 0]
    logits = scale * z
    t = fit_temperature(logits[:2000], labels[:2000])
    assert t == pytest.approx(scale, rel=0.1)
    before, after = ece(scaled_probs(logits[2000:]), labels[2000:]), ece(scaled_probs(logits[2000:], t), labels[2000:])
    assert after < 0.03 < before and after < before / 3
    assert nll(logits[2000:], labels[2000:], t) < nll(logits[2000:], labels[2000:])
    assert torch.equal(scaled_probs(logits, t).argmax(-1), logits.argmax(-1))  # top-1 unchanged
    crossfit, temps = crossfit_ece(logits, labels)
    assert len(temps) == 2 and crossfit < before / 3


def test_coverage_table_of_a_hand_computed_case():
    rows = coverage_table(PROBS, LABELS, [0.5, 0.7, 0.9, 0.99])
    assert [r["coverage"] for r in rows] == pytest.approx([1, 2 / 3, 1 / 3, 0])
    assert [r["answered"] for r in rows] == [3, 2, 1, 0]
    assert [r["accuracy"] for r in rows[:3]] == pytest.approx([2 / 3, 1, 1]) and rows[3]["accuracy"] is None


def test_decoding_with_a_temperature_keeps_the_labels_and_marks_low_confidence_uncertain():
    tasks = {"style": ["a", "b", "c"], "genre": ["x", "y"]}
    logits = {"style": torch.tensor([[3.0, 1.0, 0.0], [0.2, 0.1, 0.0]]), "genre": torch.tensor([[2.0, 0.0]] * 2)}
    raw = decode_top_k(logits, tasks)
    scaled = decode_top_k(logits, tasks, temperature={"style": 2.0}, min_confidence={"style": 0.5})
    assert [r["style"]["label"] for r in raw] == [r["style"]["label"] for r in scaled] == ["a", "a"]
    assert scaled[0]["style"]["confidence"] == pytest.approx(float(scaled_probs(logits["style"][0], 2.0).max()))
    assert scaled[0]["style"]["confidence"] < raw[0]["style"]["confidence"]
    assert scaled[0]["genre"]["confidence"] == raw[0]["genre"]["confidence"]  # no temperature: T = 1
    assert [r["style"]["uncertain"] for r in scaled] == [False, True]
    assert not any(r["genre"]["uncertain"] for r in scaled + raw)


@pytest.mark.parametrize("value, needle", [(1.5, "min_confidence=1.5"), (0, "min_confidence=0"),
                                           ("high", "min_confidence='high'"), ({"style": 2}, "min_confidence.style=2"),
                                           ({"nope": 0.5}, "unknown task 'nope'")])
def test_bad_min_confidence_is_one_error_naming_the_key(value, needle):
    with pytest.raises(ConfigError, match="min_confidence") as err:
        min_confidence_per_task(value, {"style": [], "genre": []})
    assert needle in str(err.value) and "\n" not in str(err.value)
    assert min_confidence_per_task(0.4, {"style": [], "genre": []}) == {"style": 0.4, "genre": 0.4}


def test_a_checkpoint_without_calibration_loads_with_t_1(tmp_path, demo_root):
    from tests.test_export import save_checkpoint

    path = save_checkpoint(tmp_path / "old.pt", "pool", demo_root)
    raw = torch.load(path, weights_only=True)
    assert "calibration" in raw
    del raw["calibration"]  # as written before the key existed
    torch.save(raw, path)
    assert Checkpoint.load(path).calibration is None
    predictor = Predictor.from_checkpoint(path, device="cpu")
    assert not predictor.calibration.calibrated and predictor.calibration.of("style") == 1.0
    with pytest.raises(ValueError, match="not a number > 0"):
        Calibration.from_dict({"temperature": {"style": -1.0}})


def test_the_predictor_divides_what_any_runner_returns(tmp_path, demo_root):
    """The onnxruntime runner gives raw logits like the model; the Predictor applies the temperatures to both."""
    from tests.test_export import save_checkpoint

    model = Predictor.from_checkpoint(save_checkpoint(tmp_path / "m.pt", "pool", demo_root), device="cpu").model
    model.calibration = {"temperature": {"style": 2.0}}
    logits = {t: torch.linspace(-2, 2, len(c))[None] for t, c in model.tasks.items()}
    runner = lambda images: {"logits": logits, "attention": None}  # noqa: E731  stands in for an OnnxModel
    image = Image.new("RGB", (64, 64))
    got = Predictor(model, "cpu", runner).predict(image, min_confidence=0.5)
    want = scaled_probs(logits["style"][0], 2.0).max()
    assert got["style"]["confidence"] == pytest.approx(float(want)) and got["style"]["uncertain"] == (want < 0.5)
    assert got["genre"]["confidence"] == pytest.approx(float(logits["genre"][0].softmax(-1).max()))


# ------------------------------------------------------------------------------------ the commands, end to end
@pytest.fixture(scope="module")
def run_dir(demo_root, tmp_path_factory):
    from deepart.training.trainer import train
    from tests.conftest import TINY, TINY_SEQUENCER, compose_config, demo_overrides

    run = tmp_path_factory.mktemp("calibration_run")
    train(compose_config([*demo_overrides(demo_root), *TINY, *TINY_SEQUENCER]), run_dir=run)
    return run


@pytest.fixture(scope="module")
def calibrated(run_dir, tmp_path_factory):
    """eval.py calibrate=true on the run, then the run exported: (the eval metrics.json, the export folder)."""
    out = tmp_path_factory.mktemp("calibrated_eval")
    res = cli("eval.py", f"ckpt={run_dir}", "calibrate=true", f"out_dir={out}", "num_workers=0", "gallery=0",
              "wandb=false")
    assert res.returncode == 0, res.stderr[-3000:] + res.stdout[-3000:]
    assert "expected calibration error" in res.stdout and "answering only at or above" in res.stdout
    export = tmp_path_factory.mktemp("calibrated_export") / "model"
    res = cli("deepart export", f"ckpt={run_dir}", f"out={export}", "metrics=none")
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads((out / "metrics.json").read_text()), out, export


def test_eval_calibrate_fits_keeps_and_reports_temperatures(calibrated, run_dir):
    metrics, out, _ = calibrated
    calibration, values = metrics["calibration"], metrics["metrics"]
    tasks = list(calibration["temperature"])
    assert tasks == ["style", "genre", "artist"] and all(t > 0 for t in calibration["temperature"].values())
    stored = Checkpoint.load(run_dir / "checkpoints" / "best.pt").calibration
    assert stored["temperature"] == calibration["temperature"]
    for task in tasks:
        assert values[f"val/{task}/top1_calibrated"] == values[f"val/{task}/top1"]     # top-1 unchanged
        assert calibration["nll_after"][task] <= calibration["nll_before"][task] + 1e-9  # what T minimises
        assert values[f"val/{task}/ece"] == pytest.approx(calibration["ece_before"][task])
        assert values[f"val/{task}/ece_calibrated"] == pytest.approx(calibration["ece_after"][task])
        assert 0 <= values[f"val/{task}/ece_calibrated_crossfit"] <= 1
        assert (out / f"reliability_{task}.png").stat().st_size > 0 and (out / f"coverage_{task}.png").is_file()
        rows = metrics["coverage"][task]
        assert [r["threshold"] for r in rows] == [0.3, 0.5, 0.7, 0.9]
        assert all(a["coverage"] >= b["coverage"] for a, b in zip(rows, rows[1:]))


def test_an_evaluation_after_calibrating_uses_the_kept_temperatures(calibrated, run_dir, tmp_path):
    metrics, _, export = calibrated
    res = cli("eval.py", f"ckpt={run_dir}", f"out_dir={tmp_path}", "num_workers=0", "gallery=0", "wandb=false")
    assert res.returncode == 0, res.stderr[-3000:]
    again = json.loads((tmp_path / "metrics.json").read_text())
    for task, value in metrics["calibration"]["ece_after"].items():
        assert again["metrics"][f"val/{task}/ece_calibrated"] == pytest.approx(value)
    config = json.loads((export / "config.json").read_text())
    assert config["calibration"]["temperature"] == metrics["calibration"]["temperature"]
    assert "calibrated by temperature scaling on the val split" in (export / "README.md").read_text()  # the card


def test_predict_marks_answers_below_min_confidence_uncertain(calibrated, run_dir, demo_root, tmp_path):
    _, _, export = calibrated
    images = sorted(demo_root.rglob("*.jpg"))[:6]
    folder = tmp_path / "paintings"
    folder.mkdir()
    for p in images:
        (folder / p.name).write_bytes(p.read_bytes())
    plain = _predict(run_dir, folder, tmp_path / "plain")
    conf = sorted(r["predictions"]["style"]["confidence"] for r in plain["predictions"])
    threshold = round((conf[1] + conf[-2]) / 2, 6)
    assert conf[0] < threshold < conf[-1]
    marked = _predict(export, folder, tmp_path / "marked", f"min_confidence={{style:{threshold}}}")
    assert marked["temperature"] == json.loads((export / "config.json").read_text())["calibration"]["temperature"]
    for a, b in zip(plain["predictions"], marked["predictions"]):
        for task, p in b["predictions"].items():
            assert p["label"] == a["predictions"][task]["label"]
            assert p["confidence"] == pytest.approx(a["predictions"][task]["confidence"], abs=1e-5)  # export = ckpt
            assert p["uncertain"] == (task == "style" and p["confidence"] < threshold)
    assert any(r["predictions"]["style"]["uncertain"] for r in marked["predictions"])


def _predict(model, folder, out, *extra) -> dict:
    res = cli("deepart predict", f"ckpt={model}", f"images={folder}", f"out_dir={out}", "num_workers=0", *extra)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "probabilities calibrated by temperature scaling" in res.stdout
    if extra:
        assert "uncertain: " in res.stdout and "marked uncertain" in res.stdout
    return json.loads((out / "predictions.json").read_text())


@pytest.mark.parametrize("command, args, needle", [
    ("eval.py", ["calibrate=maybe"], "calibrate='maybe'"),
    ("eval.py", ["coverage_thresholds=[0.5,1.5]"], "coverage_thresholds=[0.5, 1.5]"),
    ("deepart predict", ["images=.", "min_confidence=1.5"], "min_confidence=1.5"),
    ("deepart app", ["min_confidence=-0.2"], "min_confidence=-0.2"),
])
def test_bad_values_of_the_new_keys_are_one_line_naming_the_key(run_dir, tmp_path, command, args, needle):
    key = "model" if command == "deepart app" else "ckpt"
    extra = [f"out_dir={tmp_path}"] if command == "eval.py" else []
    one_line_error(cli(command, f"{key}={run_dir}", *args, *extra), needle)
