"""data=hf_wikiart: parquet shards written here with the schema of the hub dataset huggan/wikiart (image
{bytes, path}, integer ClassLabel columns, class names in the features metadata); no network anywhere."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("pyarrow")

from deepart.core.errors import ConfigError, DataError  # noqa: E402
from deepart.data.dataset import PaintingDataset, SkipCounter, collate  # noqa: E402
from deepart.data.hf_wikiart import load_hf_wikiart  # noqa: E402
from deepart.data.table import MISSING  # noqa: E402
from tests.conftest import REPO, TINY, TINY_SEQUENCER  # noqa: E402
from tests.wikiart_copies import HF_NAMES, make_parquet  # noqa: E402

pytestmark = pytest.mark.slow  # end-to-end: real commands and trainings (python -m pytest -m "not slow" skips them)


@pytest.fixture
def shards(tmp_path) -> Path:
    folder = tmp_path / "hf" / "data"
    make_parquet(folder / "train-00000-of-00002.parquet", n=36, corrupt=(5,))
    make_parquet(folder / "train-00001-of-00002.parquet", n=20, corrupt=(), unknown_artist=(), unknown_genre=(1,))
    return folder


def test_table_classes_unknowns_and_saved_split(shards):
    table = load_hf_wikiart(str(shards.parent))
    # class names from the features metadata, the "Unknown" classes removed
    assert table.tasks == {"style": HF_NAMES["style"], "genre": HF_NAMES["genre"][:4], "artist": HF_NAMES["artist"][1:]}
    rows = {r.path: r for r in table.train.itertuples()} | {r.path: r for r in table.val.itertuples()}
    assert len(rows) == 56
    assert rows["train-00000-of-00002.parquet/0"].artist == MISSING  # "Unknown Artist"
    assert rows["train-00000-of-00002.parquet/3"].artist == 0  # label 1 = boris-kustodiev, now class 0
    assert rows["train-00000-of-00002.parquet/1"].artist == 1  # label 2 = camille-pissarro, now class 1
    assert rows["train-00000-of-00002.parquet/3"].genre == MISSING  # "Unknown Genre"
    assert rows["train-00001-of-00002.parquet/1"].genre == MISSING
    assert rows["train-00000-of-00002.parquet/6"].style == 2
    split_file = shards / "split-val0.2-seed0.csv"
    assert split_file.is_file() and any(n.startswith(f"split: {split_file} (made now") for n in table.notes)
    # stratified by style: 14 rows of each style -> 3 (or 2) of each in val
    assert sorted(table.val["style"].value_counts().tolist()) in ([2, 3, 3, 3], [3, 3, 3, 3], [3, 3, 3, 2])
    again = load_hf_wikiart(str(shards / "*.parquet"))
    assert any(n == f"split: {split_file} (reused)" for n in again.notes)
    assert list(again.val["path"]) == list(table.val["path"])
    other = load_hf_wikiart(str(shards), val_fraction=0.5, seed=1)
    assert (shards / "split-val0.5-seed1.csv").is_file() and len(other.val) == 28


def test_images_decode_from_the_row_bytes_and_a_corrupt_one_is_skipped(shards):
    table = load_hf_wikiart(str(shards), val_fraction=0.5)
    frame = table.frame("train") if "train-00000-of-00002.parquet/5" in set(table.train["path"]) else table.val
    split = "train" if frame is table.train else "val"
    ds = PaintingDataset(table, split, transform=lambda img: __import__("torch").zeros(3, 4, 4))
    counter = SkipCounter(max_warnings=None, keep_files=True)
    batches = list(counter.readable([collate([ds[i] for i in range(len(ds))])]))
    assert counter.total == 1 and counter.files[0][0].endswith("train-00000-of-00002.parquet/5")
    assert "the image bytes do not decode" in counter.files[0][1]
    assert len(batches[0]["index"]) == len(ds) - 1


def test_bad_input_is_named(tmp_path):
    make_parquet(tmp_path / "a" / "x.parquet", columns=("artist", "style"))
    with pytest.raises(DataError, match=r"x\.parquet: has columns \['image', 'artist', 'style'\]; .*needs "
                                        r"\['image', 'style', 'genre', 'artist'\] \(missing: \['genre'\]\)"):
        load_hf_wikiart(str(tmp_path / "a"))
    make_parquet(tmp_path / "b" / "y.parquet", labels={"style": [i % 4 if i != 9 else 7 for i in range(36)]})
    with pytest.raises(DataError, match=r"y\.parquet: column 'style' has value 7 at row 9, outside the 4 classes"):
        load_hf_wikiart(str(tmp_path / "b"))
    with pytest.raises(DataError, match="no .parquet files there"):
        load_hf_wikiart(str(tmp_path / "nothing-*.parquet"))


def test_local_hub_cache_is_found_without_network(tmp_path, monkeypatch):
    snap = tmp_path / "hub" / "datasets--huggan--wikiart" / "snapshots" / "0123abc" / "data"
    make_parquet(snap / "train-00000-of-00001.parquet")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert len(load_hf_wikiart(None).train) + len(load_hf_wikiart(None).val) == 36
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    with pytest.raises(DataError, match="no parquet shards of huggan/wikiart are in the local Hugging Face cache"):
        load_hf_wikiart(None)


def test_missing_pyarrow_gives_the_install_line(shards, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # what `import pyarrow.parquet` meets when absent
    with pytest.raises(ConfigError, match=r'pip install -e "\.\[parquet\]"'):
        load_hf_wikiart(str(shards))


@pytest.mark.slow
def test_train_and_prepare_on_the_parquet(shards, tmp_path):
    """A real train.py run (2 DataLoader workers; the random sampler draws every train row, the corrupt one
    included), then the preprocessing cache and a run on it with the weighted sampler."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HYDRA_FULL_ERROR": "0"}
    data = ["data=hf_wikiart", f"data.root={shards}", f"data.cache_dir={tmp_path / 'cache'}"]
    args = [*data, *TINY, *TINY_SEQUENCER, "data.num_workers=2"]
    run = subprocess.run([sys.executable, "train.py", *args, f"hydra.run.dir={tmp_path / 'run'}"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-3000:]
    assert f"split: {shards / 'split-val0.2-seed0.csv'} (made now" in out
    assert "artist: 2 rows labelled with an 'Unknown' class are unlabelled" in out
    assert "data: 44 train / 12 val images; style: 4 classes" in out
    assert "skipped unreadable image" in out and "train-00000-of-00002.parquet/5" in out
    assert "split-val0.2-seed0.csv" in (tmp_path / "run" / "train.log").read_text()  # the run records its split
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["epochs"] == 1

    prep = subprocess.run([sys.executable, "-m", "deepart.data.prepare", *data, "data.image_size=64",
                           "data.resize_size=64", "--workers", "2", "--no-progress"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert prep.returncode == 0, prep.stderr[-3000:]
    assert "cached 55 images" in prep.stdout and "(1 unreadable" in prep.stdout
    run2 = subprocess.run([sys.executable, "train.py", *args, "sampler=weighted", f"hydra.run.dir={tmp_path / 'run2'}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert run2.returncode == 0, (run2.stdout + run2.stderr)[-3000:]
    assert "using the preprocessed cache" in run2.stdout + run2.stderr
