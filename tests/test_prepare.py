"""The preprocessing cache: resized copies, resumable, bad files reported, used only when up to date."""
import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from deepart.core.errors import ConfigError
from deepart.data.cache import cache_dir, prepare_cache
from deepart.data.images import load_rgb
from deepart.data.loaders import load_table
from tests.conftest import REPO, compose_config
from tests.test_images import make_bad_images


def collection(tmp_path):
    root = tmp_path / "paintings"
    rng = np.random.default_rng(0)
    for cls in ("A", "B"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            arr = rng.integers(0, 256, (300, 400 + 100 * i, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / cls / f"{i}.jpg")
    Image.fromarray(rng.integers(0, 256, (500, 200), dtype=np.uint8)).save(root / "B" / "tall.png")
    make_bad_images(root / "A")
    return root


def config(tmp_path, root, *extra):
    return compose_config(["data=imagefolder", f"data.root={root}", f"data.cache_dir={tmp_path / 'cache'}",
                           "data.image_size=64", "data.resize_size=80", "data.source.val_fraction=0.3", *extra])


def test_cache_is_written_and_used(tmp_path, caplog):
    root = collection(tmp_path)
    cfg = config(tmp_path, root)
    table = load_table(cfg.data, cached=False)
    summary = prepare_cache(table, cfg.data, workers=1, progress=False)
    assert (summary["images"], summary["bad"]) == (7, 3)
    out = cache_dir(table, cfg.data)
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(manifest["bad"]) == ["A/text.jpg", "A/truncated.jpg", "A/zero.jpg"]
    assert min(Image.open(out / "A" / "2.jpg").size) == 80 and Image.open(out / "A" / "2.jpg").size == (160, 80)
    assert Image.open(out / "B" / "tall.png.jpg").size == (80, 200)

    with caplog.at_level(logging.INFO):
        cached = load_table(cfg.data)
    assert cached.image_root == out and "using the preprocessed cache" in caplog.text
    good = [p for p in cached.train["path"] if not os.path.isabs(p)]
    assert good and all(cached.resolve(p).is_file() and str(cached.resolve(p)).startswith(str(out)) for p in good)
    assert sum(os.path.isabs(p) for p in [*cached.train["path"], *cached.val["path"]]) == 3  # bad: originals


def test_cache_is_resumable_and_ignored_when_stale_or_different(tmp_path, caplog):
    root = collection(tmp_path)
    cfg = config(tmp_path, root)
    table = load_table(cfg.data, cached=False)
    prepare_cache(table, cfg.data, workers=1, progress=False)
    out = cache_dir(table, cfg.data)
    kept = (out / "A" / "0.jpg").stat().st_mtime_ns
    (out / "B" / "1.jpg").unlink()  # as if interrupted before this one
    prepare_cache(table, cfg.data, workers=1, progress=False)
    assert (out / "A" / "0.jpg").stat().st_mtime_ns == kept and (out / "B" / "1.jpg").is_file()

    Image.new("RGB", (120, 90)).save(root / "B" / "0.jpg")  # a source changes
    with caplog.at_level(logging.INFO):
        assert load_table(cfg.data).image_root == root.absolute()
    assert "out of date (1 source images changed)" in caplog.text
    with pytest.raises(ConfigError, match="data.cache=require.*out of date"):
        load_table(config(tmp_path, root, "data.cache=require").data)
    square = config(tmp_path, root, "data.square_pad=true")
    assert load_table(square.data).image_root == root.absolute()  # another variant: not built yet
    prepare_cache(load_table(square.data, cached=False), square.data, workers=1, progress=False)
    sq = load_table(square.data)
    assert sq.image_root.name == "sq80" and Image.open(sq.image_root / "A" / "2.jpg").size == (80, 80)
    assert load_table(config(tmp_path, root, "data.cache=off").data).image_root == root.absolute()


@pytest.mark.slow
def test_prepare_command_in_parallel(tmp_path):
    root = collection(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "deepart.data.prepare", "data=imagefolder", f"data.root={root}",
                           f"data.cache_dir={tmp_path / 'cache'}", "data.resize_size=256", "--workers", "2",
                           "--no-progress"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "cached 7 images" in proc.stdout and "3 unreadable" in proc.stdout
    copies = sorted((tmp_path / "cache").rglob("*.jpg"))
    assert len(copies) == 7 and {min(load_rgb(p).size) for p in copies} == {256, 200}


def test_a_cache_no_larger_than_the_training_crop_is_used_with_a_warning(tmp_path, caplog):
    root = collection(tmp_path)
    cfg = config(tmp_path, root, "data.resize_size=64")  # copies as small as the 64-px crops
    prepare_cache(load_table(cfg.data, cached=False), cfg.data, workers=1, progress=False)
    with caplog.at_level(logging.INFO):
        assert load_table(cfg.data).image_root == cache_dir(load_table(cfg.data, cached=False), cfg.data)
    assert "the cached copies are 64 px, no larger than the 64-px training crops" in caplog.text
    caplog.clear()
    larger = config(tmp_path, root)  # the 80-px cache of the test's settings: no warning
    prepare_cache(load_table(larger.data, cached=False), larger.data, workers=1, progress=False)
    with caplog.at_level(logging.INFO):
        load_table(larger.data)
    assert "using the preprocessed cache" in caplog.text and "no larger than" not in caplog.text
