"""The built-in demo dataset: on-disk format of the WikiArt ArtGAN files, its quirks, determinism,
generate-once behaviour, and that each task's label is visible in the pixels and in nothing else."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from deepart.core.errors import DataError
from deepart.data import demo
from deepart.data.demo import ARTISTS, GENRES, STYLE_FOLDERS, STYLES, ensure_demo, generate_demo, load_demo
from deepart.data.wikiart import load_wikiart

REPO = Path(__file__).resolve().parents[1]
N, SIZE = 480, 96  # large enough for the learnability checks, about a second to generate
NAME = re.compile(r"^(?P<folder>[A-Za-z_]+)/(?P<artist>[a-z]+(-[a-z]+)*)_(?P<title>[a-z]+(-[a-z]+)*)-(?P<n>\d+)\.jpg$")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return generate_demo(tmp_path_factory.mktemp("demo") / "demo", n_images=N, image_size=SIZE, seed=0)


def rows(path: Path) -> list[tuple[str, int]]:
    """(path, label) rows of a split file, header and blank lines skipped."""
    out = []
    for line in path.read_bytes().decode().splitlines():
        if line and not line.startswith("("):
            image, _, label = line.rpartition(",")
            out.append((image.rstrip(","), int(label)))
    return out


def split_paths(root: Path, task: str, split: str) -> set[str]:
    return {p for p, _ in rows(root / f"{task}_{split}.csv")}


def image_files(root: Path) -> set[str]:
    return {p.relative_to(root / "images").as_posix() for p in (root / "images").rglob("*.jpg")}


# ---------------------------------------------------------------------------------------------- format

def test_class_files(root):
    for task, names in (("style", STYLES), ("genre", GENRES), ("artist", ARTISTS)):
        data = (root / f"{task}_class.txt").read_bytes()
        assert b"\r" not in data and data.endswith(b"\n")
        assert data.decode().splitlines() == [f"{i} {name}" for i, name in enumerate(names)]
    assert (len(STYLES), len(GENRES), len(ARTISTS)) == (8, 5, 6)
    assert "Art_Nouveau" in STYLES


@pytest.mark.parametrize("task", ["style", "genre"])
@pytest.mark.parametrize("split", ["train", "val"])
def test_style_genre_rows_are_crlf_path_label(root, task, split):
    data = (root / f"{task}_{split}.csv").read_bytes()
    assert data.endswith(b"\r\n")
    assert data.count(b"\n") == data.count(b"\r\n") > 0  # every line ends in CRLF
    classes = STYLES if task == "style" else GENRES
    for line in data.decode().split("\r\n")[:-1]:
        path, label = line.split(",")  # exactly one comma, no header
        assert NAME.match(path), path
        assert 0 <= int(label) < len(classes)


@pytest.mark.parametrize("split", ["train", "val"])
def test_artist_files_have_header_blank_line_and_double_commas(root, split):
    data = (root / f"artist_{split}.csv").read_bytes()
    assert b"\r" not in data and data.endswith(b"\n")
    lines = data.decode().split("\n")[:-1]
    # the real train file has a trailing space after the header, the val file does not
    assert lines[0] == "(Path to image),, (Groundtruth class)" + (" " if split == "train" else "")
    assert lines[1] == ""
    assert len(lines) > 2
    for line in lines[2:]:
        path, empty, label = line.split(",")
        assert empty == "" and NAME.match(path) and 0 <= int(label) < len(ARTISTS), line


def test_files_live_in_their_style_folder_and_art_nouveau_uses_the_modern_folder(root):
    assert STYLE_FOLDERS["Art_Nouveau"] == "Art_Nouveau_Modern"
    assert all(folder == name for name, folder in STYLE_FOLDERS.items() if name != "Art_Nouveau")
    assert not (root / "images" / "Art_Nouveau").exists()
    nouveau = STYLES.index("Art_Nouveau")
    seen_nouveau = 0
    for split in ("train", "val"):
        for path, label in rows(root / f"style_{split}.csv"):
            assert path.split("/")[0] == STYLE_FOLDERS[STYLES[label]], path
            seen_nouveau += label == nouveau
    assert seen_nouveau > 0
    assert len(list((root / "images" / "Art_Nouveau_Modern").glob("*.jpg"))) == seen_nouveau
    names = [Path(p).name for p in image_files(root)]
    assert len(set(names)) == len(names) == N


def test_style_lists_every_image_genre_most_and_artist_about_forty_percent(root):
    on_disk = image_files(root)
    listed = {t: split_paths(root, t, "train") | split_paths(root, t, "val") for t in demo.TASKS}
    assert listed["style"] == on_disk
    assert listed["genre"] < on_disk and 0.75 <= len(listed["genre"]) / N <= 0.95
    assert listed["artist"] < on_disk and 0.3 <= len(listed["artist"]) / N <= 0.5
    # paintings by an unlabelled artist are named after painters outside the artist class list
    slugs = {a.lower().replace("_", "-") for a in ARTISTS}
    for path in on_disk - listed["artist"]:
        assert NAME.match(path)["artist"] not in slugs, path
    for path in listed["artist"]:
        assert NAME.match(path)["artist"] in slugs, path


def test_artist_label_matches_the_artist_in_the_file_name(root):
    for split in ("train", "val"):
        for path, label in rows(root / f"artist_{split}.csv"):
            assert NAME.match(path)["artist"] == ARTISTS[label].lower().replace("_", "-")


def test_one_path_is_listed_twice_in_genre_val_only(root):
    for task in demo.TASKS:
        for split in ("train", "val"):
            counts = Counter(rows(root / f"{task}_{split}.csv"))
            repeated = {row: c for row, c in counts.items() if c > 1}
            if (task, split) == ("genre", "val"):
                assert len(repeated) == 1 and list(repeated.values()) == [2]  # same path, same label
                assert len({p for p, _ in counts}) == len(counts)             # never two labels
            else:
                assert not repeated, (task, split)


def test_splits_are_per_task_and_some_images_cross_train_and_val(root):
    train = {t: split_paths(root, t, "train") for t in demo.TASKS}
    val = {t: split_paths(root, t, "val") for t in demo.TASKS}
    for task in demo.TASKS:
        assert not train[task] & val[task], task
        assert 0.15 <= len(val[task]) / (len(train[task]) + len(val[task])) <= 0.35, task
    crossing = {(a, b): len(train[a] & val[b]) for a in demo.TASKS for b in demo.TASKS if a != b}
    assert crossing[("style", "genre")] + crossing[("genre", "style")] > 0
    assert sum(crossing.values()) < 0.2 * N  # a few images, as in the real files


def test_the_wikiart_parser_reads_the_demo(root):
    table = load_wikiart(root)
    assert table.tasks == {"style": STYLES, "genre": GENRES, "artist": ARTISTS}
    assert not set(table.train["path"]) & set(table.val["path"])
    assert len(table.train) + len(table.val) == N
    crossing = split_paths(root, "style", "train") & split_paths(root, "genre", "val")
    assert crossing and crossing <= set(table.val["path"])  # kept out of multi-task train
    val = table.val.set_index("path")
    for path, label in rows(root / "genre_val.csv"):
        assert val.loc[path, "genre"] == label
    assert all(table.resolve(p).is_file() for p in table.val["path"])


def test_images_are_rgb_jpegs_of_the_requested_size(root):
    for rel in sorted(image_files(root))[:: N // 40]:
        with Image.open(root / "images" / rel) as img:
            assert img.format == "JPEG" and img.mode == "RGB" and img.size == (SIZE, SIZE)
            assert np.asarray(img).std() > 5  # a painting, not a blank canvas


# ------------------------------------------------------------------------------------- determinism

def snapshot(root: Path) -> dict:
    files = {p.name: p.read_bytes() for p in root.iterdir() if p.is_file()}
    pixels = {rel: np.asarray(Image.open(root / "images" / rel)) for rel in sorted(image_files(root))}
    return {"files": files, "pixels": pixels}


def assert_same(a: dict, b: dict) -> None:
    assert a["files"] == b["files"]
    assert a["pixels"].keys() == b["pixels"].keys()
    for rel in a["pixels"]:
        np.testing.assert_array_equal(a["pixels"][rel], b["pixels"][rel], err_msg=rel)


def test_same_parameters_give_identical_files_and_pixels(tmp_path, monkeypatch):
    first = snapshot(generate_demo(tmp_path / "a", n_images=40, image_size=40, seed=3))
    assert_same(first, snapshot(generate_demo(tmp_path / "b", n_images=40, image_size=40, seed=3)))
    # rendering in worker processes gives the same paintings as rendering in this process
    monkeypatch.setattr(demo, "_workers", lambda n: 2)
    assert_same(first, snapshot(generate_demo(tmp_path / "c", n_images=40, image_size=40, seed=3)))
    other = snapshot(generate_demo(tmp_path / "d", n_images=40, image_size=40, seed=4))
    assert other["files"]["style_train.csv"] != first["files"]["style_train.csv"]


def test_bad_parameters_are_refused(tmp_path):
    from deepart.core.errors import ConfigError

    for key, value in (("n_images", 10), ("image_size", 16), ("val_fraction", 0.9)):
        with pytest.raises(ConfigError, match=rf"data\.source\.{key}={value} is not allowed: expected"):
            generate_demo(tmp_path / "x", **{key: value})


@pytest.mark.slow
def test_bad_demo_size_is_one_line_from_train_py(tmp_path):
    from tests.conftest import run_script

    res = run_script("train.py", "experiment=demo", "logger=none", f"data.root={tmp_path / 'demo'}",
                     "data.source.n_images=10", f"hydra.run.dir={tmp_path / 'run'}")
    assert res.returncode == 2
    assert "data.source.n_images=10 is not allowed: expected an integer >= 30" in res.stdout + res.stderr
    assert "Traceback" not in res.stdout + res.stderr


# ------------------------------------------------------------------------------------ ensure_demo

SMALL = {"n_images": 30, "image_size": 32}


def test_ensure_demo_generates_once_then_reuses(tmp_path, monkeypatch):
    root = ensure_demo(tmp_path / "demo", **SMALL)
    marker = json.loads((root / ".complete.json").read_text())
    assert marker["n_images"] == 30 and marker["image_size"] == 32 and marker["seed"] == 0
    assert len(image_files(root)) == 30

    def fail(*args, **kwargs):
        raise AssertionError("regenerated a complete dataset")

    monkeypatch.setattr(demo, "generate_demo", fail)
    assert ensure_demo(tmp_path / "demo", **SMALL) == root
    assert len(image_files(root)) == 30


def test_ensure_demo_regenerates_on_changed_parameters_or_missing_marker(tmp_path):
    root = ensure_demo(tmp_path / "demo", **SMALL)
    first = (root / "style_train.csv").read_bytes()
    ensure_demo(root, **{**SMALL, "n_images": 36})
    assert len(image_files(root)) == 36  # replaced, not added to
    assert json.loads((root / ".complete.json").read_text())["n_images"] == 36
    ensure_demo(root, **{**SMALL, "seed": 1})
    assert (root / "style_train.csv").read_bytes() != first
    (root / ".complete.json").unlink()
    (root / "style_train.csv").write_text("half written")
    ensure_demo(root, **{**SMALL, "seed": 1})
    assert demo.is_complete(root, **{**SMALL, "seed": 1})
    assert len(rows(root / "style_train.csv")) > 10


def test_interrupted_generation_leaves_the_previous_dataset_and_no_temporary_folder(tmp_path, monkeypatch):
    root = ensure_demo(tmp_path / "demo", **SMALL)
    before = snapshot(root)

    def crash(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "_render_chunk", crash)
    with pytest.raises(KeyboardInterrupt):
        ensure_demo(root, **{**SMALL, "seed": 5})
    assert demo.is_complete(root, **SMALL) and not demo.is_complete(root, **{**SMALL, "seed": 5})
    assert_same(before, snapshot(root))
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["demo"]


def test_ensure_demo_never_deletes_a_folder_with_other_files(tmp_path):
    root = tmp_path / "mine"
    root.mkdir()
    (root / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="notes.txt"):
        ensure_demo(root, **SMALL)
    assert (root / "notes.txt").read_text() == "keep me"


def test_load_demo_generates_and_returns_the_table(tmp_path):
    table = load_demo(tmp_path / "demo", tasks=["style", "genre"], **SMALL)
    assert list(table.tasks) == ["style", "genre"]
    assert demo.is_complete(tmp_path / "demo", **SMALL)
    assert len(table.train) > 0 and len(table.val) > 0


def test_command_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "deepart.data.demo", str(tmp_path / "cli"), "--n-images", "30",
                          "--image-size", "32", "--seed", "2"], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1 and "30 paintings" in lines[0] and "style" in lines[0]
    assert demo.is_complete(tmp_path / "cli", n_images=30, image_size=32, seed=2)


# ---------------------------------------------------------------------------------- learnability

def _pool(a: np.ndarray, k: int) -> np.ndarray:
    n, h, w = a.shape[:3]
    return a[:, :h // k * k, :w // k * k].reshape(n, h // k, k, w // k, k, *a.shape[3:]).mean((2, 4))


def palette_features(x: np.ndarray) -> np.ndarray:
    """Share of pixels in each cell of a 4x4x4 RGB histogram."""
    q = np.minimum(x.astype(int) // 64, 3)
    codes = (q[..., 0] * 16 + q[..., 1] * 4 + q[..., 2]).reshape(len(x), -1)
    return np.stack([np.bincount(c, minlength=64) for c in codes]) / codes.shape[1]


def texture_features(x: np.ndarray) -> np.ndarray:
    """Statistics of grey-level differences at 1, 2 and 4 pixels in four directions (position-free)."""
    g = x.mean(-1)
    feats = []
    for d in (1, 2, 4):
        for dy, dx in ((0, d), (d, 0), (d, d), (d, -d)):
            diff = np.abs(g - np.roll(g, (dy, dx), (1, 2)))[:, 4:-4, 4:-4].reshape(len(x), -1)
            feats += [diff.mean(1), (diff > 20).mean(1), np.median(diff, 1)]
    feats += [(g < 50).mean((1, 2)), (g > 215).mean((1, 2))]
    return np.stack(feats, 1)


def layout_features(x: np.ndarray) -> np.ndarray:
    """Where the colour changes on an 8x8 grid of block means (texture averaged away)."""
    small = _pool(x, x.shape[1] // 8)
    n = len(x)
    gy, gx = np.abs(np.diff(small, axis=1)).sum(-1), np.abs(np.diff(small, axis=2)).sum(-1)
    dev = np.abs(small - small.mean((1, 2), keepdims=True)).sum(-1)
    return np.concatenate([dev.reshape(n, -1), gy.reshape(n, -1), gx.reshape(n, -1), gy.mean(2), gx.mean(1)], 1)


def held_out_accuracy(features: np.ndarray, labels: np.ndarray, train: np.ndarray) -> float:
    """Ridge-regression classifier fitted on `train` rows, top-1 on the others (unlabelled rows ignored)."""
    known = labels >= 0
    tr, te = train & known, ~train & known
    mu, sd = features[tr].mean(0), features[tr].std(0) + 1e-6
    f = np.concatenate([(features - mu) / sd, np.ones((len(features), 1))], 1)
    targets = np.eye(labels.max() + 1)[labels[tr]]
    w = np.linalg.solve(f[tr].T @ f[tr] + 3.0 * np.eye(f.shape[1]), f[tr].T @ targets)
    return float(((f[te] @ w).argmax(1) == labels[te]).mean())


def lookup_accuracy(source: np.ndarray, target: np.ndarray, train: np.ndarray) -> float:
    """Predict `target` as its most frequent value (in `train`) for each value of `source`."""
    known = (source >= 0) & (target >= 0)
    tr, te = train & known, ~train & known
    best = {s: Counter(target[tr & (source == s)]).most_common(1)[0][0] for s in np.unique(source[tr])}
    fallback = Counter(target[tr]).most_common(1)[0][0]
    return float(np.mean([best.get(s, fallback) == t for s, t in zip(source[te], target[te])]))


@pytest.fixture(scope="module")
def pixels_and_labels(root):
    table = load_wikiart(root)
    frame = pd.concat([table.train, table.val], ignore_index=True)
    x = np.stack([np.asarray(Image.open(table.resolve(p)), np.float32) for p in frame["path"]])
    labels = {t: frame[t].to_numpy() for t in demo.TASKS}
    train = np.random.default_rng(0).random(len(frame)) < 0.7
    return x, labels, train


def test_each_task_is_learnable_from_its_own_visual_cue(pixels_and_labels):
    x, labels, train = pixels_and_labels
    families = {"style": texture_features(x), "genre": layout_features(x), "artist": palette_features(x)}
    classes = {"style": len(STYLES), "genre": len(GENRES), "artist": len(ARTISTS)}
    scores = {(task, cue): held_out_accuracy(f, labels[task], train)
              for task in demo.TASKS for cue, f in families.items()}
    for task in demo.TASKS:
        chance = 1 / classes[task]
        own = scores[task, task]
        assert own >= max(0.5, 2.5 * chance), (task, scores)
        # the cue of another task is a much weaker predictor: the factors are drawn independently
        for cue in demo.TASKS:
            if cue != task:
                assert scores[task, cue] < own - 0.2, (task, cue, scores)


def test_no_task_label_is_predictable_from_another_tasks_label(pixels_and_labels):
    _, labels, train = pixels_and_labels
    classes = {"style": len(STYLES), "genre": len(GENRES), "artist": len(ARTISTS)}
    for task in demo.TASKS:
        for other in demo.TASKS:
            if other != task:
                acc = lookup_accuracy(labels[other], labels[task], train)
                assert acc < 1 / classes[task] + 0.12, (task, other, acc)
