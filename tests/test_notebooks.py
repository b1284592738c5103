"""The notebooks (notebooks/*.ipynb): stored without outputs, and each one runs top to bottom in a Jupyter kernel
(nbclient + ipykernel) against a tiny demo run and a tiny 2-run sweep trained here with train.py, found the way a
user's are (the newest under outputs/ and multirun/), printing what the project's own functions compute."""
from __future__ import annotations

import io
import os
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from deepart.core import rundir
from deepart.core.checkpoint import Checkpoint
from deepart.core.config import FREEZABLE, compose_config
from deepart.data.demo import ARTISTS, GENRES, STYLES
from deepart.data.loaders import load_table
from deepart.data.table import MISSING
from deepart.data.wikiart import load_wikiart
from deepart.models import build_model
from tests.conftest import REPO, SHARED, TINY, TINY_SEQUENCER, demo_overrides, run_script

pytestmark = pytest.mark.slow  # end-to-end: real commands and trainings (python -m pytest -m "not slow" skips them)

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS = REPO / "notebooks"
NAMES = ["01_data.ipynb", "02_model.ipynb", "03_runs.ipynb", "04_attention.ipynb"]
CELL_TIMEOUT = 600  # seconds per cell; a loaded 2-core machine imports torch slowly
WIKIART_LABELS = SHARED / "wikiart" if (SHARED / "wikiart" / "style_train.csv").is_file() \
    else REPO / "tests" / "fixtures" / "wikiart"
RUN, SWEEP = "outputs/2026-01-01/12-00-00", "multirun/2026-01-01/12-05-00"  # as train.py names them


def execute(name: str, root: Path, **env: str):
    """Run notebook `name` in a fresh kernel started in notebooks/ (as `jupyter lab notebooks/` does), with
    DEEPART_ROOT=root and the given DEEPART_* variables; a cell that raises fails the test with its traceback."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    base = {k: v for k, v in os.environ.items() if not k.startswith("DEEPART_")}
    kernel_env = {**base, "PYTHONPATH": str(REPO) + os.pathsep + base.get("PYTHONPATH", ""),
                  "DEEPART_ROOT": str(root), **env}
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOKS)}})
    started = time.perf_counter()
    client.execute(env=kernel_env)
    print(f"{name}: {time.perf_counter() - started:.1f} s")
    return nb


def printed(nb, tag: str) -> str:
    """What the cell tagged `tag` printed."""
    cell = next(c for c in nb.cells if tag in c.metadata.get("tags", []))
    return "".join(o.text for o in cell.outputs if o.output_type == "stream" and o.name == "stdout")


def printed_table(text: str, header: str) -> pd.DataFrame:
    """The whitespace-aligned table (DataFrame.to_string(index=False)) whose header starts with the words `header`."""
    lines, words = text.splitlines(), header.split()
    start = next(i for i, line in enumerate(lines) if line.split()[:len(words)] == words)
    end = next((i for i in range(start + 1, len(lines)) if len(lines[i].split()) != len(lines[start].split())),
               len(lines))
    return pd.read_csv(io.StringIO("\n".join(lines[start:end])), sep=r"\s+", dtype=str, keep_default_na=False)


def pictures(nb) -> int:
    return sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)


def excluded_count(notes: list[str]) -> int:
    return next(int(re.match(r"(\d+) images", n).group(1)) for n in notes if "another task's val split" in n)


@pytest.fixture(scope="module")
def workspace(demo_root, tmp_path_factory) -> Path:
    """A folder laid out as the repository after `python train.py ...` (outputs/<date>/<time>/) and
    `python train.py -m ...` (multirun/<date>/<time>/<n>/), with a tiny run and a tiny 2-run sweep."""
    root = tmp_path_factory.mktemp("workspace")
    tiny = [*demo_overrides(demo_root), *TINY, *TINY_SEQUENCER, "phase.epochs=2"]
    run = run_script("train.py", *tiny, f"hydra.run.dir={root / RUN}")
    assert run.returncode == 0, run.stderr[-3000:]
    sweep = run_script("train.py", "-m", *tiny, "loss.gamma=1,3", f"hydra.sweep.dir={root / SWEEP}")
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    return root


def test_notebooks_are_stored_without_outputs_and_say_how_to_run_them():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == NAMES
    for name in NAMES:
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        nbformat.validate(nb)
        intro = nb.cells[0]
        assert intro.cell_type == "markdown" and 'pip install -e ".[notebooks]"' in intro.source
        assert "jupyter lab notebooks/" in intro.source, name
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), f"{name} carries outputs"
        assert "parameters" in code[0].metadata.get("tags", []), f"{name}: the first code cell is its parameters"


def test_newest_run_and_sweep_are_the_last_finished(tmp_path):
    for name, when in (("outputs/a/1", 100), ("outputs/b/2", 300), ("outputs/c/3", None)):
        run = tmp_path / name
        (run / ".hydra").mkdir(parents=True)
        if when is not None:  # c/3 is still running: no metrics.json
            rundir.write_metrics(run, {})
            os.utime(run / rundir.METRICS, (when, when))
    (tmp_path / "outputs/a/1/eval").mkdir()
    (tmp_path / "outputs/a/1/eval" / rundir.METRICS).write_text("{}")  # eval.py's, not a run's
    assert rundir.newest_run(tmp_path / "outputs") == tmp_path / "outputs/b/2"
    assert rundir.newest_run(tmp_path / "nothing") is None
    for name, when in (("multirun/x", 200), ("multirun/y", 100)):
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / rundir.SUMMARY).write_text("run\n")
        os.utime(tmp_path / name / rundir.SUMMARY, (when, when))
    assert rundir.newest_sweep(tmp_path / "multirun") == tmp_path / "multirun/x"
    assert rundir.newest_sweep(tmp_path / "outputs") is None


@pytest.mark.slow
def test_data_notebook_counts_classes_and_split_overlap(demo_root, tmp_path):
    data = demo_overrides(demo_root)
    nb = execute("01_data.ipynb", tmp_path, DEEPART_DATA=" ".join(data), DEEPART_WIKIART_LABELS=str(WIKIART_LABELS))
    counts = printed_table(printed(nb, "class-counts"), "task").set_index(["task", "class"])
    table = load_table(compose_config(data).data)
    for task, classes in table.tasks.items():
        for split in ("train", "val"):
            labels = table.frame(split)[task].to_numpy()
            expected = np.bincount(labels[labels != MISSING], minlength=len(classes))
            assert counts.loc[task, split].astype(int).tolist() == expected.tolist(), (task, split)
        assert counts.loc[task].index.tolist() == classes
    overlap = printed(nb, "split-overlap")
    found = [int(n) for n in re.findall(r"train images in another task's val split: (\d+)", overlap)]
    assert found == [excluded_count(load_wikiart(root, missing_images="ignore").notes)
                     for root in (WIKIART_LABELS, demo_root)]
    assert found[1] > 0  # the demo reproduces the quirk
    assert pictures(nb) == 1 + len(table.tasks)  # the sampler's class mix, a grid of paintings per task


@pytest.mark.slow
def test_model_notebook_shapes_and_parameter_counts(tmp_path):
    nb = execute("02_model.ipynb", tmp_path)
    model = build_model(compose_config(["experiment=demo"]), {"style": STYLES, "genre": GENRES, "artist": ARTISTS},
                        pretrained=False)
    params = printed_table(printed(nb, "parameters-per-part"), "part").set_index("part")["parameters"].astype(int)
    assert params["total"] == sum(p.numel() for p in model.parameters())
    for part in FREEZABLE:
        assert params[part] == sum(p.numel() for p in getattr(model, part).parameters()), part
    shapes = printed_table(printed(nb, "shapes"), "step").set_index("step")["out"]
    h, w = shapes["backbone"].split("x")[2:]
    assert shapes["proj"] == f"2x{model.proj.out_channels}x{h}x{w}" and shapes["attention"] == f"2x{h}x{w}"
    assert shapes["encoder"] == f"2x{int(h) * int(w)}x{model.encoder.out_dim}"
    assert [shapes[f"logits.{t}"] for t in ("style", "genre", "artist")] == ["2x8", "2x5", "2x6"]
    swaps = printed_table(printed(nb, "swaps"), "option backbone encoder").set_index("option")
    swapped = printed_table(printed(nb, "swaps"), "option backbone proj").set_index("option").astype(int)
    assert swapped.loc["base"].to_dict() == params.to_dict()
    assert (swaps.loc["base", "grid"], swaps.loc["base", "attention"]) == (f"{h}x{w}", shapes["attention"])
    assert tuple(swaps.loc["sequencer=pool", ["encoder", "pooling", "attention"]]) == ("-", "MeanPool", "None")
    assert swapped.loc["sequencer=pool", "encoder"] == swapped.loc["sequencer=pool", "pooling"] == 0
    assert swaps.loc["sequencer=gru", "encoder"] == "RNNEncoder" and swaps.loc["sequencer=transformer", "encoder"] \
        == "TransformerEncoder"
    resnet = compose_config(["experiment=demo", "backbone=resnet18"])
    assert swapped.loc["backbone=resnet18", "backbone"] == sum(
        p.numel() for p in build_model(resnet, model.tasks, pretrained=False).backbone.parameters())


@pytest.mark.slow
def test_runs_notebook_reads_the_newest_run_and_sweep(workspace):
    nb = execute("03_runs.ipynb", workspace)
    run = workspace / RUN
    metrics = rundir.read_metrics(run)
    assert (f"best val/mean_top1 {metrics['best']['val/mean_top1']:.4f} at epoch {metrics['best_epoch']} of 2"
            in printed(nb, "run-summary"))
    summary = printed_table(printed(nb, "run-summary"), "task").set_index(["task", "epoch"])
    assert float(summary.loc[("style", "best"), "top1"]) == round(100 * metrics["best"]["val/style/top1"], 1)
    runs = printed_table(printed(nb, "sweep-runs"), "run").set_index("run")
    sweep = workspace / SWEEP
    assert sorted(runs.index) == ["0", "1"] and set(runs["status"]) == {"done"}
    for name in runs.index:
        best = rundir.read_metrics(sweep / name)["best"]["val/mean_top1"]
        assert float(runs.loc[name, "val/mean_top1"]) == pytest.approx(100 * best, abs=0.05)
        gamma = yaml.safe_load((sweep / name / ".hydra/overrides.yaml").read_text())[-1]
        assert gamma == f"loss.gamma={runs.loc[name, 'loss.gamma']}"
    assert pictures(nb) == 4  # the run's curves; the sweep's objective, bars and curves


@pytest.mark.slow
def test_attention_notebook_predicts_as_training_did(workspace):
    nb = execute("04_attention.ipynb", workspace)
    run = workspace / RUN
    tasks = Checkpoint.load(rundir.best_checkpoint(run)).tasks
    shown = printed_table(printed(nb, "predictions"), "image")
    stored = pd.read_csv(rundir.predictions_file(run)).set_index("path")
    assert len(shown) == min(6, stored.loc[stored["style"] != MISSING, "style"].nunique())
    for task, classes in tasks.items():
        assert shown[f"{task}_pred"].tolist() == [classes[i] for i in stored.loc[shown["image"], f"{task}_pred"]]
        truth = [classes[i] if i != MISSING else "-" for i in stored.loc[shown["image"], task]]
        assert shown[task].tolist() == truth
    assert pictures(nb) == 1
    assert re.search(r"\dx\d grid, sum 1\.0000", "".join(o.get("text", "") for c in nb.cells for o in
                                                         c.get("outputs", [])))


@pytest.mark.slow
def test_a_notebook_without_a_run_says_how_to_make_one(tmp_path):
    with pytest.raises(nbclient.exceptions.CellExecutionError) as failed:
        execute("04_attention.ipynb", tmp_path)
    message = str(failed.value)
    assert "no finished run under" in message and "python train.py experiment=demo" in message

