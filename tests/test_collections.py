"""Own collections: data=imagefolder and data=csv (synthetic, and on ../shared/paintings-sample when
present), the stratified split, and short training runs through them with unreadable images inside."""
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from deepart.core.checkpoint import Checkpoint
from deepart.core.errors import ConfigError, DataError
from deepart.data.folder import load_image_folder
from deepart.data.loaders import load_table
from deepart.data.splits import stratified_split
from deepart.data.tabular import load_csv
from tests.conftest import SHARED, TINY, TINY_SEQUENCER, compose_config, run_script
from tests.test_images import make_bad_images, make_odd_images

SAMPLE = SHARED / "paintings-sample"
needs_sample = pytest.mark.skipif(not SAMPLE.is_dir(), reason="../shared/paintings-sample not present")


def make_folder(root, counts: dict[str, int], size=40, seed=0):
    rng = np.random.default_rng(seed)
    for cls, n in counts.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            colour = rng.integers(0, 256, 3, dtype=np.uint8)
            Image.fromarray(np.broadcast_to(colour, (size, size, 3)).copy()).save(root / cls / f"{i}.jpg")
    return root


def test_stratified_split_is_proportional_seeded_and_keeps_train():
    labels = ["a"] * 50 + ["b"] * 10 + ["c"] * 1 + ["d"] * 2
    split = stratified_split(labels, [0.8, 0.1, 0.1], seed=3)
    per = pd.crosstab(pd.Series(labels), split)
    assert per.loc["a"].tolist() == [40, 5, 5] and per.loc["b"].tolist() == [8, 1, 1]
    assert per.loc["c", 0] == 1 and per.loc["d", 0] >= 1  # a class too small to split stays in train
    assert (stratified_split(labels, [0.8, 0.1, 0.1], seed=3) == split).all()
    assert not (stratified_split(labels, [0.8, 0.1, 0.1], seed=4) == split).all()


def test_image_folder_split_by_seed(tmp_path):
    make_folder(tmp_path, {"Baroque": 10, "Cubism": 5})
    (tmp_path / "Cubism" / "notes.txt").write_text("not an image")
    (tmp_path / ".thumbs").mkdir()
    (tmp_path / ".thumbs" / "x.jpg").write_bytes(b"")
    table = load_image_folder(tmp_path, task_name="style", seed=1)
    assert table.tasks == {"style": ["Baroque", "Cubism"]}
    assert len(table.train) + len(table.val) == 15
    assert table.val["style"].value_counts().to_dict() == {0: 2, 1: 1}
    assert not set(table.train["path"]) & set(table.val["path"])
    assert all(table.resolve(p).is_file() for p in table.train["path"])


def test_image_folder_with_val_folder(tmp_path):
    make_folder(tmp_path / "train", {"A": 3, "B": 3})
    make_folder(tmp_path / "val", {"A": 1, "C": 1})
    table = load_image_folder(tmp_path)
    assert table.tasks == {"label": ["A", "B", "C"]}
    assert (len(table.train), len(table.val)) == (6, 2)
    assert sorted(table.val["path"]) == ["val/A/0.jpg", "val/C/0.jpg"]
    assert any("no training images: C" in n for n in table.notes)


def test_image_folder_errors(tmp_path):
    with pytest.raises(DataError, match="folder not found"):
        load_image_folder(tmp_path / "nope")
    with pytest.raises(DataError, match="no class folders with images"):
        load_image_folder(tmp_path)
    make_folder(tmp_path, {"A": 2})
    with pytest.raises(ConfigError, match="single task 'label'"):
        load_image_folder(tmp_path, tasks=["style"])
    with pytest.raises(ConfigError, match=r"data\.root is not set"):
        load_table(compose_config(["data=imagefolder"]).data)


def museum(tmp_path, rows: str, n_images: int = 12):
    images = tmp_path / "img"
    images.mkdir(parents=True)
    for i in range(n_images):
        Image.new("RGB", (20, 20), (i, 0, 0)).save(images / f"{1000 + i}.jpg")
    (tmp_path / "export.csv").write_text(rows, encoding="utf-8")
    return tmp_path / "export.csv", images


def test_csv_museum_export(tmp_path):
    rows = "ID, period, artist\n" + "".join(
        f"{1000 + i}, {'Baroque' if i % 2 else 'Gothic'}, {'Rembrandt' if i % 3 == 0 else ''}\n" for i in range(12))
    table_file, images = museum(tmp_path, rows)
    table = load_csv(table_file, images, fractions=[0.5, 0.25, 0.25], seed=0)
    assert table.tasks == {"period": ["Baroque", "Gothic"], "artist": ["Rembrandt"]}
    every = pd.concat([table.train, table.val, table.test])
    assert len(every) == 12 and every["path"].str.endswith(".jpg").all()  # ids matched to <id>.jpg
    labels = every.set_index("path")
    assert labels.loc["1003.jpg"].tolist() == [0, 0] and labels.loc["1001.jpg"].tolist() == [0, -1]
    assert [len(table.train), len(table.val), len(table.test)] == [6, 3, 3]
    assert table.val["period"].value_counts().tolist() in ([2, 1], [1, 2])  # both periods present


def test_csv_split_column_task_selection_and_errors(tmp_path):
    rows = "file,period,artist,split\n1000.jpg,A,x,train\n1001.jpg,B,,val\n1002.jpg,A,y,test\n1003.jpg,,,train\n"
    table_file, images = museum(tmp_path, rows)
    table = load_csv(table_file, images, tasks=["period"])
    assert table.tasks == {"period": ["A", "B"]}
    assert table.train["path"].tolist() == ["1000.jpg"]  # 1003 has no label at all
    assert table.val["path"].tolist() == ["1001.jpg"] and table.test["path"].tolist() == ["1002.jpg"]
    cfg = compose_config(["data=csv", f"data.table={table_file}", f"data.root={images}", "data.tasks=[artist]"])
    assert load_table(cfg.data).tasks == {"artist": ["x", "y"]}

    with pytest.raises(ConfigError, match=r"\['style'\].*available: \['period', 'artist'\]"):
        load_csv(table_file, images, tasks=["style"])
    (tmp_path / "bad.csv").write_text("file,period,split\n1000.jpg,A,train\n1001.jpg,B,holdout\n")
    with pytest.raises(DataError, match=r"bad\.csv:3: column 'split' is 'holdout'"):
        load_csv(tmp_path / "bad.csv", images)
    (tmp_path / "dup.csv").write_text("file,period\n1000.jpg,A\n1001.jpg,B\n1000.jpg,B\n")
    with pytest.raises(DataError, match=r"listed more than once, e\.g\. '1000\.jpg' on lines \[2, 4\]"):
        load_csv(tmp_path / "dup.csv", images)
    (tmp_path / "gone.csv").write_text("file,period\n1000.jpg,A\n9999.jpg,B\n1001.jpg,B\n")
    with pytest.raises(DataError, match=r"1 of 3 listed images are missing.*9999\.jpg"):
        load_csv(tmp_path / "gone.csv", images, fractions=[0.5, 0.5])
    kept = load_csv(tmp_path / "gone.csv", images, fractions=[0.5, 0.5], missing_images="skip")
    assert "9999.jpg" not in set(kept.train["path"]) | set(kept.val["path"])


@needs_sample
def test_paintings_sample_as_image_folder():
    cfg = compose_config(["data=imagefolder", f"data.root={SAMPLE}", "data.task_name=style"])
    table = load_table(cfg.data)
    assert list(table.tasks) == ["style"] and len(table.tasks["style"]) == 7
    assert (len(table.train), len(table.val)) == (224, 56)
    assert table.val["style"].value_counts().tolist() == [8] * 7


@needs_sample
def test_paintings_sample_as_csv(tmp_path):
    files = sorted(p.relative_to(SAMPLE).as_posix() for p in SAMPLE.glob("*/*.jpg"))
    rows = ["ID,period,artist"] + [f"{f[:-4]},{f.split('/')[0]},{'A' if i % 4 == 0 else ''}"
                                   for i, f in enumerate(files)]
    (tmp_path / "sample.csv").write_text("\n".join(rows) + "\n")
    cfg = compose_config(["data=csv", f"data.table={tmp_path / 'sample.csv'}", f"data.root={SAMPLE}",
                          "data.tasks=[period,artist]"])
    table = load_table(cfg.data)
    assert len(table.tasks["period"]) == 7 and table.tasks["artist"] == ["A"]
    assert len(table.train) + len(table.val) + len(table.test) == 280
    assert table.val["period"].value_counts().tolist() == [4] * 7  # 10% of 40 per style


@pytest.mark.slow
def test_train_script_on_image_folder_with_bad_images(tmp_path):
    """`train.py data=imagefolder data.root=<dir>` as written; unreadable files are skipped and counted per
    epoch (in the epoch line) and in total (end of run, metrics.json); odd modes train normally."""
    root = make_folder(tmp_path / "data", {"A": 8, "B": 8}, size=48)
    make_bad_images(root / "A")
    make_odd_images(root / "B")
    run_dir = tmp_path / "run"
    proc = run_script("train.py", "data=imagefolder", f"data.root={root}", *TINY, *TINY_SEQUENCER, "sampler=random",
                      "phase.batch_size=64", "phase.epochs=2", f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["skipped_images"] == 2 * 3  # 3 bad files, each read once per epoch (train or val)
    history = Checkpoint.load(run_dir / "checkpoints" / "last.pt").progress["history"]
    assert [h["skipped_images"] for h in history] == [3, 3]
    log = proc.stdout + proc.stderr
    assert log.count("  skipped 3") == 2 and "6 unreadable images were skipped in this run" in log
    assert 0 <= metrics["final"]["val/label/top1"] <= 1


@pytest.mark.parametrize("workers", [0, 2])
def test_unreadable_images_count_only_when_drawn_into_a_batch_that_trains(tmp_path, workers):
    """The last, incomplete batch of an epoch is dropped (BatchNorm cannot train on a batch of one): its
    unreadable images are never read, so they are not in that epoch's skip count."""
    import pandas as pd
    from omegaconf import OmegaConf

    from deepart.data.dataset import SkipCounter
    from deepart.data.loaders import train_loader
    from deepart.data.table import TaskTable

    make_folder(tmp_path, {"A": 7})
    bad = {7, 8, 9}
    for i in bad:
        (tmp_path / "A" / f"{i}.jpg").write_bytes(b"not a jpeg")
    frame = pd.DataFrame({"path": [f"A/{i}.jpg" for i in range(10)], "label": [0] * 10})
    table = TaskTable(frame, frame.iloc[:1], {"label": ["A"]}, tmp_path)
    data_cfg = OmegaConf.create({"image_size": 32, "resize_size": 32, "square_pad": False,
                                 "train_crop_scale": [0.35, 1.0], "hflip": True, "num_workers": workers})
    sampler_cfg = OmegaConf.create({"_target_": "deepart.data.samplers.RandomEpochSampler"})
    loader = train_loader(table, data_cfg, sampler_cfg, batch_size=4, seed=0, device="cpu")
    dropped_bad_seen = False
    for epoch in range(4):
        loader.sampler.set_epoch(epoch)
        order = [index for index, _ in loader.sampler]
        used, dropped = order[:8], order[8:]  # two batches of 4 train, the last 2 are dropped
        skips = SkipCounter()
        batches = list(skips.readable(loader))
        assert skips.total == len(bad & set(used)), epoch
        assert sum(len(b["index"]) for b in batches) == len(set(used) - bad)
        dropped_bad_seen |= bool(bad & set(dropped))
    assert dropped_bad_seen  # some epoch did drop an unreadable image
