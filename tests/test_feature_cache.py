"""The frozen-feature fast path (trainer.feature_cache): real train.py runs on the demo with the backbone frozen.

The cache is built once and reused (its build line and its files' mtimes), rebuilt under a new key when the
backbone's weights or the eval transform change, refused when damaged, resumed after a build killed mid-way; and
training on it gives the metrics of training on the images (augmentation off in both: the same batches through
the same layers; the backbone's features come from eval batches instead of training batches, so equality is to
float rounding, asserted to 1e-5, and on this CPU it is exact)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from deepart.models import build_model
from deepart.training.feature_cache import FEATURES, META, use_feature_cache
from deepart.training.freezing import apply_freezing
from tests.conftest import TINY, TINY_SEQUENCER, demo_overrides, run_script

# the backbone frozen for the whole phase, nothing that varies a training image
FROZEN = ["phase.freeze=[backbone]", "phase.epochs=2", "data.hflip=false", "data.train_crop_scale=[1.0,1.0]",
          "trainer.feature_cache_chunk=16"]  # 68 train images: 5 chunks
BUILD, REUSE = "feature cache: building", "feature cache: reusing"


def train(demo_root: Path, run_dir: Path, cache: Path, *extra: str, env: dict | None = None):
    return run_script("train.py", *demo_overrides(demo_root), *TINY, *TINY_SEQUENCER, *FROZEN,
                      f"trainer.feature_cache_dir={cache}", f"hydra.run.dir={run_dir}", *extra, env=env)


def ok(proc) -> str:
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    return out


def history(run_dir: Path) -> list[dict]:
    """Every epoch's metrics, without the timings."""
    records = json.loads((run_dir / "metrics.json").read_text())["history"]
    return [{k: v for k, v in r.items() if k != "epoch_time_s" and not k.endswith("per_s")} for r in records]


def assert_same_metrics(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b) and a
    for ra, rb in zip(a, b):
        assert ra.keys() == rb.keys()
        for key, value in ra.items():
            assert rb[key] == pytest.approx(value, abs=1e-5), key


def folders(cache: Path) -> dict[str, dict]:
    return {p.name: json.loads((p / META).read_text()) for p in sorted(cache.iterdir())}


@pytest.fixture(scope="module")
def on_images(demo_root, tmp_path_factory) -> list[dict]:
    """The run without the cache."""
    run_dir = tmp_path_factory.mktemp("images")
    out = ok(train(demo_root, run_dir, run_dir / "unused", "trainer.feature_cache=false"))
    assert BUILD not in out and not (run_dir / "unused").exists()
    return history(run_dir)


@pytest.mark.slow
def test_built_once_reused_rebuilt_under_a_new_key_and_equal_to_images(demo_root, tmp_path, on_images):
    cache = tmp_path / "features"
    out = ok(train(demo_root, tmp_path / "first", cache))
    assert out.count(BUILD) == 2 and "trains and validates on cached backbone features" in out  # train + val
    built = folders(cache)
    assert sorted(m["split"] for m in built.values()) == ["train", "val"]
    assert all(m["complete"] and not (cache / name / "chunks").exists() for name, m in built.items())
    assert_same_metrics(history(tmp_path / "first"), on_images)

    stamps = {name: (cache / name / FEATURES).stat().st_mtime_ns for name in built}
    out = ok(train(demo_root, tmp_path / "second", cache))
    assert BUILD not in out and out.count(REUSE) == 2
    assert {name: (cache / name / FEATURES).stat().st_mtime_ns for name in built} == stamps
    assert_same_metrics(history(tmp_path / "second"), on_images)

    # other backbone weights (another seed's random init; data and transform unchanged): a new key, built anew
    out = ok(train(demo_root, tmp_path / "weights", cache, "seed=1"))
    assert out.count(BUILD) == 2
    now = folders(cache)
    new = {m["split"]: m for name, m in now.items() if name not in built}
    old = {m["split"]: m for m in built.values()}
    assert sorted(new) == ["train", "val"]
    for split, meta in new.items():  # the same images, transform and runtime: the key differs by the weights alone
        assert meta["key"] != old[split]["key"]
        assert {k: meta[k] for k in ("transform", "runtime", "n_items")} == \
            {k: old[split][k] for k in ("transform", "runtime", "n_items")}

    # another eval transform (image size): a new key again; the older folders stay as they were
    out = ok(train(demo_root, tmp_path / "size", cache, "data.image_size=48", "data.resize_size=48"))
    assert out.count(BUILD) == 2
    latest = {name: m for name, m in folders(cache).items() if name not in now}
    assert len(latest) == 2 and {m["transform"]["image_size"] for m in latest.values()} == {48}
    assert {name: (cache / name / FEATURES).stat().st_mtime_ns for name in built} == stamps

    # a damaged cache is refused in one line that says what to do
    (cache / next(iter(built)) / FEATURES).unlink()
    proc = train(demo_root, tmp_path / "damaged", cache)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "the feature cache is damaged" in out and "delete the folder" in out, out[-2000:]


@pytest.mark.slow
def test_a_build_killed_mid_way_resumes_and_trains_as_without_the_cache(demo_root, tmp_path, on_images):
    """A build killed after its 2nd chunk continues from there; that run killed after its 1st epoch and resumed
    (resume=) ends with the metrics of the uninterrupted run on images."""
    cache, run_dir = tmp_path / "features", tmp_path / "run"
    killed = train(demo_root, tmp_path / "killed", cache, env={"DEEPART_KILL_AT": "feature_chunk:2"})
    assert killed.returncode == -9, (killed.stdout + killed.stderr)[-2000:]
    (folder,) = cache.iterdir()
    assert not json.loads((folder / META).read_text())["complete"] and len(list((folder / "chunks").iterdir())) == 2
    again = train(demo_root, run_dir, cache, env={"DEEPART_KILL_AT": "epoch_end:1"})
    assert again.returncode == -9 and "resuming after 2 of 5 chunks" in again.stdout + again.stderr, \
        (again.stdout + again.stderr)[-2000:]
    out = ok(run_script("train.py", f"resume={run_dir}"))
    assert REUSE in out and BUILD not in out
    assert_same_metrics(history(run_dir), on_images)


@pytest.mark.parametrize("extra, mode, used", [
    ((), "auto", True),
    (("data.hflip=true",), "auto", False),                         # augmentation: auto trains on images
    (("augment.mixup_alpha=0.2",), "auto", False),
    (("data.hflip=true",), True, True),                            # true: used, augmentation off (a warning)
    (("phase.freeze=[encoder]",), True, False),                    # the backbone trains: never
    (("phase.freeze=[]", "all stages"), "auto", True),            # every stage frozen = the backbone frozen
    ((), False, False),
])
def test_when_the_cache_is_used(tiny_cfg, extra, mode, used):
    cfg = tiny_cfg(*FROZEN, *(e for e in extra if "=" in e))
    cfg.trainer.feature_cache = mode
    model = build_model(cfg, {"style": ["a", "b"]})
    stages = model.backbone.num_stages if "all stages" in extra else cfg.phase.freeze_stages
    apply_freezing(model, list(cfg.phase.freeze), stages)
    assert use_feature_cache(cfg, model, "1", distributed=False) is used
