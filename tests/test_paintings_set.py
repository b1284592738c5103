"""`python -m deepart paintings`: the set of experiment=paintings built from a WikiArt copy. The copies are made
here with tiny images: the ArtGAN style folders (as a folder, a data/wikiart root, a zip and a tar.gz) and
parquet shards with the schema of huggan/wikiart; no network."""
from __future__ import annotations

import csv
import hashlib
import io
import json
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deepart.core.errors import DataError
from deepart.data.paintings import STYLES, build, selection_sha256, sort_key
from tests.conftest import REPO, TINY, TINY_SEQUENCER, compose_config

PER_STYLE = 9            # images of each style in the copies
TRAIN, VAL = 4, 2        # the set asked for: 6 of each style
SIZE = 32


def painting(i: int, corrupt: bool = False) -> bytes:
    """A tiny JPEG, landscape or portrait (so the set's padding shows), or bytes that are no image."""
    if corrupt:
        return b"not a jpeg"
    rng = np.random.default_rng(i)
    shape = (20, 40, 3) if i % 2 else (40, 20, 3)
    out = io.BytesIO()
    Image.fromarray(rng.integers(80, 255, shape, dtype=np.uint8)).save(out, "JPEG")
    return out.getvalue()


def names() -> list[str]:
    return [f"{style}/artist-{i}_painting-{k}.jpg" for i, style in enumerate(STYLES) for k in range(PER_STYLE)]


def first_of(style: str, seed: int = 0) -> str:
    """The image of `style` the selection tries first."""
    return min((n for n in names() if n.startswith(style + "/")), key=lambda n: sort_key(seed, n))


CORRUPT = first_of("Baroque")   # the first choice of Baroque does not decode: it is passed over


@pytest.fixture(scope="module")
def images() -> dict[str, bytes]:
    return {name: painting(i, corrupt=name == CORRUPT) for i, name in enumerate(names())}


@pytest.fixture(scope="module")
def folder(images, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("copies") / "kaggle"
    for name, data in images.items():   # the Kaggle layout: one top folder holding the style folders
        (root / "wikiart" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "wikiart" / name).write_bytes(data)
    return root


def args(source: Path | str, out: Path) -> dict:
    return {"source_text": str(source), "out": out, "train": TRAIN, "val": VAL, "size": SIZE, "progress": False}


def test_the_set_from_the_style_folders(folder, images, tmp_path):
    out = tmp_path / "paintings-dev"
    manifest = build(**args(folder, out))
    for split, n in (("train", TRAIN), ("val", VAL)):
        assert sorted(p.name for p in (out / split).iterdir()) == sorted(STYLES)
        assert all(len(list((out / split / s).glob("*.jpg"))) == n for s in STYLES)
    # square, padded with black: the paintings are 2:1, so a quarter of each side is padding
    img = Image.open(out / manifest["files"][0]["path"])
    assert img.size == (SIZE, SIZE) and img.mode == "RGB"
    pixels = np.asarray(img, dtype=np.int64)
    corners = pixels[[0, 0, -1, -1], [0, -1, 0, -1]]
    assert corners.max() < 20 and pixels[SIZE // 2, SIZE // 2].min() > 60
    # the manifest: source, seed, every file with its source name and checksum, the selection's checksum
    assert manifest["source"] == {"kind": "folder", "path": str((folder / "wikiart").resolve()),
                                  "images_found": dict.fromkeys(STYLES, PER_STYLE)}
    assert manifest["seed"] == 0 and manifest["image_size"] == SIZE and manifest["styles"] == sorted(STYLES)
    assert json.loads((out / "manifest.json").read_text()) == manifest
    files = manifest["files"]
    assert len(files) == len(STYLES) * (TRAIN + VAL) == len({f["source"] for f in files})
    for f in files:
        assert f["source"].split("/")[0] == f["style"] and f["path"].startswith(f"{f['split']}/{f['style']}/")
        assert hashlib.sha256((out / f["path"]).read_bytes()).hexdigest() == f["sha256"]
    assert manifest["selection_sha256"] == selection_sha256(files)
    # the seeded choice: per style the readable images of smallest key, the first TRAIN of them for train
    assert manifest["skipped"] == {CORRUPT: "cannot identify image file"}
    for style in STYLES:
        readable = sorted((n for n in names() if n.startswith(style + "/") and n != CORRUPT),
                          key=lambda n: sort_key(0, n))
        chosen = [f for f in files if f["style"] == style]
        assert [f["source"] for f in chosen if f["split"] == "train"] == readable[:TRAIN]
        assert [f["source"] for f in chosen if f["split"] == "val"] == readable[TRAIN:TRAIN + VAL]
    # the labels file beside the images
    with open(out / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["path"], r["style"], r["split"]) for r in rows] == [(f["path"], f["style"], f["split"]) for f in files]


def test_every_copy_of_the_images_gives_the_same_set(folder, images, tmp_path):
    """A data/wikiart root (images/), a zip with a top folder and a tar.gz give the folder's selection, byte for
    byte; another seed gives another one."""
    reference = build(**args(folder, tmp_path / "ref"))
    root = tmp_path / "wikiart"          # python -m deepart download wikiart --from <folder> links images/
    root.mkdir()
    (root / "images").symlink_to(folder / "wikiart", target_is_directory=True)
    with zipfile.ZipFile(tmp_path / "wikiart.zip", "w") as zf:
        for name, data in images.items():
            zf.writestr(f"wikiart/{name}", data)
    with tarfile.open(tmp_path / "wikiart.tar.gz", "w:gz") as tf:
        for name, data in images.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    for source, kind in ((root, "folder"), (tmp_path / "wikiart.zip", "zip"), (tmp_path / "wikiart.tar.gz", "tar")):
        out = tmp_path / f"from-{source.name}"
        manifest = build(**args(source, out))
        assert manifest["source"]["kind"] == kind
        assert manifest["selection_sha256"] == reference["selection_sha256"], kind
        assert manifest["files"] == reference["files"] and manifest["skipped"] == reference["skipped"], kind
    other = build(**args(folder, tmp_path / "seed1"), seed=1)
    assert other["seed"] == 1 and other["selection_sha256"] != reference["selection_sha256"]


def test_the_set_from_the_parquet_shards(tmp_path):
    """huggan/wikiart's shards: style class names from the features metadata (Art_Nouveau is written to the
    ArtGAN folder Art_Nouveau_Modern), an unreadable row passed over, rows named <shard>/<row>."""
    pytest.importorskip("pyarrow")
    from tests.wikiart_copies import HF_NAMES, make_parquet

    names = {**HF_NAMES, "style": ["Art_Nouveau", "Baroque", "Cubism", "Impressionism"]}
    folder = tmp_path / "hf" / "data"
    for k, (n, corrupt) in enumerate(((24, (1,)), (16, ()))):
        path = make_parquet(folder / f"train-0000{k}-of-00002.parquet", n=n, corrupt=corrupt)
        rewrite_names(path, names)
    out = tmp_path / "paintings"
    manifest = build(str(tmp_path / "hf"), out, styles=("Art_Nouveau", "Baroque"), train=6, val=3, size=SIZE,
                     progress=False)
    assert manifest["source"]["kind"] == "parquet" and manifest["styles"] == ["Art_Nouveau_Modern", "Baroque"]
    assert manifest["source"]["images_found"] == {"Art_Nouveau_Modern": 10, "Baroque": 10}
    assert sorted(p.name for p in (out / "train").iterdir()) == ["Art_Nouveau_Modern", "Baroque"]
    assert len(list((out / "val" / "Baroque").glob("*.jpg"))) == 3
    sources = {f["source"] for f in manifest["files"]}
    # row i has style i % 4: rows 0, 4, ... are Art_Nouveau, rows 1, 5, ... Baroque (row 1 of shard 0 is no image)
    assert all(int(s.rsplit("/", 1)[1]) % 4 in (0, 1) for s in sources)
    assert manifest["skipped"] == {"train-00000-of-00002.parquet/1": "cannot identify image file"}  # 5th of 10 keys
    again = build(str(folder / "*.parquet"), tmp_path / "again", styles=("Art_Nouveau", "Baroque"), train=6, val=3,
                  size=SIZE, progress=False)
    assert again["selection_sha256"] == manifest["selection_sha256"]


def rewrite_names(path: Path, names: dict) -> None:
    """Give a fixture shard other class names in its features metadata."""
    import pyarrow.parquet as pq

    from tests.wikiart_copies import hf_schema

    table = pq.read_table(path)
    pq.write_table(table.cast(hf_schema(names)), path, row_group_size=8)


def test_clear_errors(folder, tmp_path):
    with pytest.raises(DataError, match=r"^--from .*nowhere: no such file or folder$"):
        build(**args(tmp_path / "nowhere", tmp_path / "a"))
    with pytest.raises(DataError, match=r"^style Baroque: 8 readable images in .* \(9 found, 1 unreadable\), "
                                        r"9 needed \(7 train \+ 2 val\); lower --train / --val or choose other "
                                        r"--styles$"):
        build(**{**args(folder, tmp_path / "b"), "train": 7})
    with pytest.raises(DataError, match=r"^style Romanticism: 9 images .*, 12 needed \(10 train \+ 2 val\)"):
        build(**{**args(folder, tmp_path / "c"), "train": 10, "styles": ("Romanticism",)})
    with pytest.raises(DataError, match=r"^style Cubism: 0 images in .* \(its styles: Art_Nouveau_Modern, Baroque, "):
        build(**{**args(folder, tmp_path / "d"), "styles": ("Cubism", "Baroque")})
    (tmp_path / "e" / "x").mkdir(parents=True)
    with pytest.raises(DataError, match=r"^--out .*e: the folder exists and is not empty"):
        build(**args(folder, tmp_path / "e"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"holds neither WikiArt style folders .* nor \.parquet shards$"):
        build(**args(tmp_path / "empty", tmp_path / "f"))
    assert not any(p.name.endswith(".partial") for p in tmp_path.iterdir())


@pytest.mark.slow
def test_the_command_builds_a_set_that_experiment_paintings_trains_on(folder, tmp_path):
    """As README says: build the set, then train experiment=paintings on it (shrunk: a tiny backbone without the
    weights package, 1 epoch)."""
    out = tmp_path / "paintings-dev"
    proc = subprocess.run([sys.executable, "-m", "deepart", "paintings", "--from", str(folder), "--out", str(out),
                           "--train", str(TRAIN), "--val", str(VAL), "--size", "64", "--no-progress"],
                          cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"wrote {len(STYLES) * (TRAIN + VAL)} paintings (7 styles x {TRAIN} train + {VAL} val, 1 unreadable " \
           f"passed over) to {out}" in proc.stdout
    missing = subprocess.run([sys.executable, "-m", "deepart", "paintings", "--from", str(tmp_path / "none")],
                             cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert missing.returncode == 2
    assert missing.stderr.strip() == f"error: --from {tmp_path / 'none'}: no such file or folder"

    from deepart.training.trainer import train

    cfg = compose_config(["experiment=paintings", f"data.root={out}", *TINY, *TINY_SEQUENCER, "backbone.weights=null",
                          "phase.batch_size=8"])
    train(cfg, run_dir=tmp_path / "run")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["epochs"] == 1 and 0 <= metrics["best"]["val/style/top1"] <= 100
    raw = torch.load(tmp_path / "run" / "checkpoints" / "best.pt", weights_only=True)
    assert raw["tasks"] == {"style": sorted(STYLES)}
