"""Similar paintings: `python -m deepart index` and `python -m deepart similar` in real subprocesses on the demo
data (a painting's nearest neighbour is itself; a trained demo model finds same-style paintings far above
chance; a build killed between chunks resumes to the same vectors; bad input is one line), and the retrieval
metrics on a case computed by hand."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from deepart.core.checkpoint import Checkpoint
from deepart.core.errors import ConfigError, DataError
from deepart.inference.index import Index, build_index, parse_args
from deepart.inference.similar import Finder, read_query
from deepart.objectives.retrieval import per_query, retrieval_quality
from tests.conftest import REPO, compose_config

pytestmark = pytest.mark.slow  # end-to-end: real commands and trainings (python -m pytest -m "not slow" skips them)

N_IMAGES = 240  # demo paintings of 64 px: enough for a small CNN to learn style and artist in a minute
DEMO = ["data=demo", f"data.source.n_images={N_IMAGES}", "data.source.image_size=64"]
MODEL = ["experiment=demo", "data.image_size=64", "data.resize_size=64", "data.num_workers=0", "logger=none",
         "trainer.progress_bar=false", "backbone.widths=[16,32,48,64,96]", "model.dim=32", "model.head_hidden=32",
         "model.rnn_hidden=16", "model.attention_hidden=16", "phase.epochs=8", "phase.batch_size=32", "phase.lr=3e-3"]


def deepart(*args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """`python -m deepart <args>` as a user runs it."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "deepart", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def one_line_error(res: subprocess.CompletedProcess) -> str:
    """The command failed with exit status 2 and one error line, no traceback; returns that line."""
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    assert "Traceback" not in res.stderr, res.stderr[-2000:]
    errors = [line for line in res.stderr.splitlines() if line.startswith(("error:", "ERROR:"))]
    assert len(errors) == 1, res.stderr[-2000:]
    return errors[0]


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    from deepart.data.demo import generate_demo

    return generate_demo(tmp_path_factory.mktemp("demo240"), n_images=N_IMAGES, image_size=64, seed=0)


@pytest.fixture(scope="module")
def run(root, tmp_path_factory) -> Path:
    """A small CNN trained for 8 epochs on the demo paintings: its run dir."""
    from deepart.training.trainer import train

    run_dir = tmp_path_factory.mktemp("index_run")
    train(compose_config([*MODEL, *DEMO, f"data.root={root}"]), run_dir=run_dir)
    return run_dir


@pytest.fixture(scope="module")
def other_model(run, tmp_path_factory) -> Path:
    """Another model: the run's checkpoint with one weight changed."""
    ckpt = Checkpoint.load(run / "checkpoints" / "best.pt")
    name = next(k for k, v in ckpt.model.items() if v.is_floating_point())
    ckpt.model[name] = ckpt.model[name] + 0.5
    ckpt.ema = None
    path = tmp_path_factory.mktemp("other") / "other.pt"
    ckpt.save(path)
    return path


@pytest.fixture(scope="module")
def labelled_index(run, root, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("labelled") / "index"
    res = deepart("index", f"model={run}", *DEMO, f"data.root={root}", f"out={out}", "num_workers=0")
    assert res.returncode == 0, res.stderr[-3000:]
    return out, res


@pytest.fixture
def folder(root, tmp_path) -> Path:
    """40 demo paintings and one corrupt .jpg."""
    target = tmp_path / "paintings"
    target.mkdir()
    for path in sorted((root / "images").rglob("*.jpg"))[:40]:
        shutil.copy(path, target / path.name)
    (target / "broken.jpg").write_bytes(b"not a jpeg" * 30)
    return target


# ------------------------------------------------------------------------------------------------ the metrics
def test_precision_and_map_on_a_case_computed_by_hand():
    # 4 labelled queries (one unlabelled, one of a class the gallery lacks); gallery item 4 is unlabelled
    similarity = torch.tensor([[0.9, 0.1, 0.8, 0.3, 1.0],
                               [0.2, 0.4, 0.6, 0.8, 1.0],
                               [0.5, 0.5, 0.5, 0.5, 1.0],
                               [0.1, 0.2, 0.3, 0.4, 1.0]])
    queries, gallery = np.array([0, 1, -1, 2]), np.array([0, 1, 1, 0, -1])
    # query 0 ranks g0 (hit) g2 g3 (hit) g1: AP = (1/1 + 2/3) / 2; query 1 ranks g3 g2 (hit) g1 (hit) g0:
    # AP = (1/2 + 2/3) / 2; query 3 has no relevant item (AP undefined, left out of mAP; precision 0)
    scores = per_query(similarity, queries, gallery, ks=(1, 2, 10))
    assert scores["query"].tolist() == [0, 1, 3]
    assert scores["precision@1"].tolist() == [1.0, 0.0, 0.0]
    assert scores["precision@2"].tolist() == [0.5, 0.5, 0.0]
    assert scores["precision@10"].tolist() == [0.5, 0.5, 0.0]  # k capped at the 4 labelled gallery items
    assert np.allclose(scores["ap"][:2], [(1 + 2 / 3) / 2, (1 / 2 + 2 / 3) / 2]) and np.isnan(scores["ap"][2])
    summary = retrieval_quality(similarity, queries, gallery, ks=(1, 2, 10))
    assert summary["precision@1"] == pytest.approx(1 / 3)
    assert summary["mAP"] == pytest.approx(((1 + 2 / 3) / 2 + (1 / 2 + 2 / 3) / 2) / 2)
    assert summary["chance"] == pytest.approx((0.5 + 0.5 + 0.0) / 3) and summary["queries"] == 3


# ------------------------------------------------------------------------------------------------ the commands
def test_index_of_a_data_option_has_its_labels_and_beats_chance_on_style(labelled_index, root):
    out, res = labelled_index
    meta = json.loads((out / "index.json").read_text())
    assert meta["complete"] and meta["embedding"] == "context" and len(meta["model_id"]) == 16
    files = pd.read_csv(out / "files.csv", keep_default_na=False)
    vectors = np.load(out / "vectors.npy")
    assert len(files) == len(vectors) == meta["n_items"] == N_IMAGES - len(meta["skipped"])
    assert {"path", "split", "style", "genre", "artist"} <= set(files.columns)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert not (out / "chunks").exists() and not (out / "plan.csv").exists()
    assert "retrieval quality" in res.stdout and "same style" in res.stdout
    quality = json.loads((out / "quality.json").read_text())["tasks"]
    style, artist = quality["style"], quality["artist"]
    assert style["precision@5"] >= 2 * style["chance"] and style["mAP"] >= 1.8 * style["chance"], style
    assert artist["precision@5"] >= 2.5 * artist["chance"], artist


def test_similar_finds_the_painting_itself_first_with_its_labels(labelled_index):
    out, _ = labelled_index
    files = pd.read_csv(out / "files.csv", keep_default_na=False)
    query = files.iloc[7]
    res = deepart("similar", f"index={out}", f"image={query['path']}", "k=5")
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [line.split() for line in res.stdout.splitlines() if line.strip()[:1].isdigit()]
    assert len(rows) == 5 and [int(r[0]) for r in rows] == [1, 2, 3, 4, 5]
    assert rows[0][2] == query["path"] and float(rows[0][1]) == pytest.approx(1.0, abs=1e-3)
    assert query["style"] in rows[0]
    similarities = [float(r[1]) for r in rows]
    assert similarities == sorted(similarities, reverse=True)


def test_a_killed_build_resumes_to_the_same_vectors_without_the_unreadable_file(run, folder, tmp_path):
    args = [f"model={run}", f"images={folder}", "embedding=probs", "chunk_size=8", "batch_size=4", "num_workers=0"]
    out = tmp_path / "killed"
    killed = deepart("index", *args, f"out={out}", env={"DEEPART_KILL_AT": "index_chunk:3"})
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert "skipped unreadable image" in killed.stderr and "broken.jpg" in killed.stderr
    assert not json.loads((out / "index.json").read_text())["complete"]
    assert len(list((out / "chunks").glob("*.npz"))) == 3
    with pytest.raises(DataError, match="the index is incomplete .* run the same python -m deepart index command"):
        Finder.open(out)
    resumed = deepart("index", *args, f"out={out}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming after 3 of 6 chunks" in resumed.stderr
    assert "indexed 40 images (probs embedding, 19 dimensions), 1 unreadable skipped" in resumed.stdout
    index = Index.load(out)
    assert index.meta["skipped"][0]["path"].endswith("broken.jpg") and index.tasks == {}
    whole = build_index(parse_args([*args, f"out={tmp_path / 'whole'}"]))  # the same build, never interrupted
    assert whole.files.equals(index.files) and whole.meta["model_id"] == index.meta["model_id"]
    assert torch.allclose(whole.vectors, index.vectors, atol=1e-6)


# ------------------------------------------------------------------------------------------------ bad input
def test_bad_input_is_one_line_naming_the_file_and_the_fix(run, labelled_index, tmp_path):
    out, _ = labelled_index
    n = len(pd.read_csv(out / "files.csv"))
    query = pd.read_csv(out / "files.csv")["path"].iloc[0]
    line = one_line_error(deepart("similar", f"index={out}", f"image={query}", f"k={n + 1}"))
    assert f"k={n + 1} is more than the {n} images in index={out}: pass k={n} or less" in line
    letters = tmp_path / "letters"
    letters.mkdir()
    for name in ("letter0.jpg", "letter1.jpg"):
        (letters / name).write_text("Dear curator, this is a letter, not a painting.")
    line = one_line_error(deepart("index", f"model={run}", f"images={letters}", f"out={tmp_path / 'b'}",
                                  "num_workers=0"))
    assert f"images={letters}: none of the 2 files could be read as an image ({letters / 'letter0.jpg'}" in line
    assert "point it at a folder of paintings" in line


def test_an_empty_folder_a_query_that_is_not_an_image_and_no_index(run, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=f"images={empty}: no image files found"):
        build_index(parse_args([f"model={run}", f"images={empty}", f"out={tmp_path / 'a'}"]))
    letter = tmp_path / "letter.jpg"
    letter.write_text("Dear curator, this is a letter, not a painting.")
    with pytest.raises(DataError, match=f"image={letter}: not an image .* pass a JPEG"):
        read_query(letter, 64)
    with pytest.raises(DataError, match=f"image={tmp_path / 'gone.jpg'}: no such file"):
        read_query(tmp_path / "gone.jpg", 64)
    with pytest.raises(DataError, match=f"index={tmp_path}: not an index folder .* python -m deepart index"):
        Finder.open(tmp_path)


def test_an_index_is_refused_by_another_model(labelled_index, other_model, run, tmp_path):
    out, _ = labelled_index
    with pytest.raises(ConfigError, match=f"index={out} was built with another model .* model="):
        Finder.open(out, other_model)
    files = tmp_path / "some"
    files.mkdir()
    shutil.copy(pd.read_csv(out / "files.csv")["path"].iloc[0], files / "a.jpg")
    with pytest.raises(ConfigError, match=f"out={out} holds an index built with another model .* pass a new out="):
        build_index(parse_args([f"model={other_model}", f"images={files}", f"out={out}"]))
    Finder.open(out, run / "checkpoints" / "best.pt")  # the same model by another path is accepted
