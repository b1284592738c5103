"""The frozen-feature fast path (trainer.feature_cache): real train.py runs on the demo with the backbone frozen.

The cache is built once and reused (its build line and its files' mtimes), rebuilt under a new key when the
backbone's weights or the eval transform change, refused when damaged, resumed after a build killed mid-way; and
training on it gives the metrics of training on the images (augmentation off in both: the same batches through
the same layers; the backbone's features come from eval batches instead of training batches, so equality is to
float rounding, asserted to 1e-5, and on this CPU it is exact). Two runs at once build it once: the second waits
on the first's lock and reads its cache, or finishes its build when the first is killed mid-way. The key changes
with every input of the features and with nothing else."""
from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import timm
import torch
from torchvision.transforms import v2

from deepart.core.errors import DataError
from deepart.core.runtime import Runtime
from deepart.data.dataset import PaintingDataset, collate
from deepart.data.loaders import load_table
from deepart.data.transforms import transform_from_config
from deepart.models import build_model
from deepart.training.feature_cache import (
    FEATURES,
    META,
    FeatureDataset,
    backbone_pass,
    cache_key,
    cached_features,
    use_feature_cache,
)
from deepart.training.freezing import apply_freezing
from deepart.training.trainer import train as train_in_process
from tests.conftest import REPO, TINY, TINY_SEQUENCER, demo_overrides, hold_env, run_script, wait_until_held

# the backbone frozen for the whole phase, nothing that varies a training image
FROZEN = ["phase.freeze=[backbone]", "phase.epochs=2", "data.hflip=false", "data.train_crop_scale=[1.0,1.0]",
          "trainer.feature_cache_chunk=16"]  # 68 train images: 5 chunks
BUILD, REUSE, WAIT = "feature cache: building", "feature cache: reusing", "feature cache: waiting for"


def args(demo_root: Path, run_dir: Path, cache: Path, *extra: str) -> list[str]:
    return [*demo_overrides(demo_root), *TINY, *TINY_SEQUENCER, *FROZEN, f"trainer.feature_cache_dir={cache}",
            f"hydra.run.dir={run_dir}", *extra]


def train(demo_root: Path, run_dir: Path, cache: Path, *extra: str, env: dict | None = None):
    return run_script("train.py", *args(demo_root, run_dir, cache, *extra), env=env)


def start(demo_root: Path, run_dir: Path, cache: Path, log: Path, env: dict | None = None) -> subprocess.Popen:
    """A real train.py in the background, its output (stdout and stderr) in `log`."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0", **(env or {})}
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, str(REPO / "train.py"), *args(demo_root, run_dir, cache)], cwd=REPO,
                                env=env, stdout=out, stderr=subprocess.STDOUT)


def wait_for_line(proc: subprocess.Popen, log: Path, text: str, timeout: float = 1200) -> None:
    """Block until `proc` has written `text` to `log` (an event); fails if it ends first. `timeout` only catches a
    hang."""
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        assert proc.poll() is None, f"the process ended (exit {proc.returncode}) before logging {text!r}:\n" \
                                    f"{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no {text!r} in {timeout} s"
        time.sleep(0.01)


def ended(proc: subprocess.Popen, log: Path) -> str:
    """The output of `proc` once it has ended with exit status 0."""
    proc.wait(timeout=1200)
    out = log.read_text()
    assert proc.returncode == 0, out[-3000:]
    return out


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
    """The cache folders (not their lock files) with their meta.json."""
    return {p.name: json.loads((p / META).read_text()) for p in sorted(cache.iterdir()) if p.is_dir()}


@pytest.fixture(scope="module")
def images_run(demo_root, tmp_path_factory) -> Path:
    """The run without the cache: its run dir."""
    run_dir = tmp_path_factory.mktemp("images")
    out = ok(train(demo_root, run_dir, run_dir / "unused", "trainer.feature_cache=false"))
    assert BUILD not in out and not (run_dir / "unused").exists()
    return run_dir


@pytest.fixture(scope="module")
def on_images(images_run) -> list[dict]:
    """The run without the cache: its metrics."""
    return history(images_run)


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
    (folder,) = (p for p in cache.iterdir() if p.is_dir())
    assert not json.loads((folder / META).read_text())["complete"] and len(list((folder / "chunks").iterdir())) == 2
    again = train(demo_root, run_dir, cache, env={"DEEPART_KILL_AT": "epoch_end:1"})
    assert again.returncode == -9 and "resuming after 2 of 5 chunks" in again.stdout + again.stderr, \
        (again.stdout + again.stderr)[-2000:]
    out = ok(run_script("train.py", f"resume={run_dir}"))
    assert REUSE in out and BUILD not in out
    assert_same_metrics(history(run_dir), on_images)


@pytest.mark.parametrize("extra, mode, used", [
    ((), "auto", True),
    (("data.hflip=true",), "auto", True),                          # the flip: drawn from the cached mirror images
    (("data.hflip=true", "trainer.feature_cache_hflip=false"), "auto", False),  # no mirror images: on images
    (("data.train_crop_scale=[0.35,1.0]",), "auto", False),        # augmentation: auto trains on images
    (("augment.mixup_alpha=0.2",), "auto", False),
    (("data.train_crop_scale=[0.35,1.0]",), True, True),           # true: used, augmentation off (a warning)
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


def test_with_data_hflip_the_train_cache_holds_each_mirror_image_and_the_seed_picks_the_view(tiny_cfg, tmp_path):
    """data.hflip on the frozen path: the train split's cache keeps the backbone features of each image and of its
    mirror image (the val split's only the image's), and a sampler's (index, seed) key gets one of the two by the
    seed's lowest bit, as data.hflip's coin does on images."""
    cfg = tiny_cfg(*FROZEN, "data.hflip=true")
    table = load_table(cfg.data)
    model = build_model(cfg, table.tasks).eval()
    rt = Runtime.resolve(cfg.trainer)
    train_folder = cached_features(cfg, model, table, "train", rt, tmp_path, 16, 8, False)
    val_folder = cached_features(cfg, model, table, "val", rt, tmp_path, 16, 8, False)
    assert json.loads((train_folder / META).read_text())["views"] == ["hflip"]
    assert (train_folder / "features.hflip.npy").is_file()
    assert "views" not in json.loads((val_folder / META).read_text())
    assert not (val_folder / "features.hflip.npy").exists()
    # without the flip, or with trainer.feature_cache_hflip=false, the train split's key is that of one view
    plain = cache_key(tiny_cfg(*FROZEN), model, table, "train", rt)
    off = tiny_cfg(*FROZEN, "data.hflip=true", "trainer.feature_cache_hflip=false")
    assert cache_key(off, model, table, "train", rt)["key"] == plain["key"] != \
        cache_key(cfg, model, table, "train", rt)["key"]

    images = PaintingDataset(table, "train", transform_from_config(cfg.data, train=False))
    batch = collate([images[i] for i in range(4)])
    with torch.inference_mode():
        x = model.normalize(batch["image"])
        own, _ = backbone_pass(model, x)
        mirror, _ = backbone_pass(model, x.flip(-1))
    assert not torch.allclose(own, mirror, atol=1e-3)  # the demo's paintings are not symmetric
    cached = FeatureDataset(train_folder, table, "train")
    for i in range(4):
        assert torch.allclose(cached[i]["image"], own[i], atol=1e-5)             # a plain index: the image
        assert torch.allclose(cached[(i, 6)]["image"], own[i], atol=1e-5)        # an even seed: the image
        assert torch.allclose(cached[(i, 7)]["image"], mirror[i], atol=1e-5)     # an odd seed: its mirror image
        assert cached[(i, 7)]["labels"].tolist() == cached[i]["labels"].tolist()


def test_the_final_evaluation_of_a_frozen_run_reads_the_cache_and_predicts_what_the_images_give(demo_root, tmp_path,
                                                                                              images_run):
    """best.pt of a run trained on cached features is evaluated on the val split's cache (its backbone built it): the
    per-image predictions (val_predictions.csv) are those of the same run on images."""
    import pandas as pd

    out = ok(train(demo_root, tmp_path / "run", tmp_path / "features"))
    assert "final evaluation on the cached backbone features of" in out, out[-2000:]
    cached = pd.read_csv(tmp_path / "run" / "val_predictions.csv")
    on_images = pd.read_csv(images_run / "val_predictions.csv")
    assert len(cached) == len(on_images) > 0
    pd.testing.assert_frame_equal(cached, on_images, atol=1e-5, check_exact=False)
    # trainer.feature_cache=false: the images, as before
    assert "final evaluation on the cached" not in (images_run / "train.log").read_text()


def test_train_py_with_data_hflip_on_a_frozen_backbone_trains_on_the_cache_with_the_mirror_images(demo_root, tmp_path):
    cache = tmp_path / "features"
    out = ok(train(demo_root, tmp_path / "run", cache, "data.hflip=true"))
    assert "trains and validates on cached backbone features (each image or its mirror image at random" in out, \
        out[-2000:]
    views = {m["split"]: m.get("views") for m in folders(cache).values()}
    assert views == {"train": ["hflip"], "val": None}
    assert len(history(tmp_path / "run")) == 2


@pytest.fixture
def processes():
    """The processes a test starts: any still running when it ends (after a failed assertion) is killed."""
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def a_holds_the_lock_b_waits(demo_root: Path, tmp_path: Path, processes: list):
    """Run A held after the 1st chunk of its build (the lock taken), run B started on the same cache and waiting
    for A (its log says so, naming A's pid): (A, B, their logs, A's hold file)."""
    cache, hold = tmp_path / "features", tmp_path / "a.hold"
    logs = {name: tmp_path / f"{name}.log" for name in "ab"}
    a = start(demo_root, tmp_path / "a", cache, logs["a"], env=hold_env("feature_chunk:1", hold))
    processes.append(a)
    wait_until_held(a, hold)
    b = start(demo_root, tmp_path / "b", cache, logs["b"])
    processes.append(b)
    wait_for_line(b, logs["b"], WAIT)
    assert f"another process is building it (pid {a.pid} on " in logs["b"].read_text()
    return a, b, logs, hold


@pytest.mark.slow
def test_two_runs_at_once_build_the_cache_once(demo_root, tmp_path, on_images, processes):
    """A holds the lock mid-build (held after its 1st chunk); B, started on the same cache, waits for A, then reads
    the split A built: one build of each split across both runs (the val split goes to whichever run reaches it
    first; the other waits and reads it), and both train as on images."""
    a, b, logs, hold = a_holds_the_lock_b_waits(demo_root, tmp_path, processes)
    hold.unlink()
    out_a, out_b = ended(a, logs["a"]), ended(b, logs["b"])
    built = {run: [line for line in out.splitlines() if BUILD in line] for run, out in (("a", out_a), ("b", out_b))}
    every = built["a"] + built["b"]
    assert len(every) == 2 and sum("-train-" in line for line in every) == 1, every  # each split built once
    assert sum("-val-" in line for line in every) == 1 and any("-train-" in line for line in built["a"]), every
    assert out_a.count(REUSE) + out_b.count(REUSE) == 2 and out_b.count(REUSE) >= 1  # the other run read each
    assert "trains and validates on cached backbone features" in out_b
    assert_same_metrics(history(tmp_path / "a"), on_images)
    assert_same_metrics(history(tmp_path / "b"), on_images)


@pytest.mark.slow
def test_a_run_killed_holding_the_lock_leaves_its_build_to_the_waiting_run(demo_root, tmp_path, on_images,
                                                                           processes):
    """A holds the lock after its 1st chunk; B waits for it; A is killed (SIGKILL): the kernel frees the lock, B
    takes it, finishes A's build from its chunk on, and trains as on images."""
    a, b, logs, _ = a_holds_the_lock_b_waits(demo_root, tmp_path, processes)
    a.send_signal(signal.SIGKILL)
    assert a.wait(timeout=1200) == -signal.SIGKILL
    out_b = ended(b, logs["b"])
    assert "resuming after 1 of 5 chunks" in out_b and out_b.count(BUILD) == 2, out_b[-3000:]  # train resumed, val
    cache = tmp_path / "features"
    assert [m["complete"] for m in folders(cache).values()] == [True, True]
    assert not any((cache / name / "chunks").exists() for name in folders(cache))
    assert_same_metrics(history(tmp_path / "b"), on_images)


def test_the_key_covers_every_input_of_the_features_and_nothing_else(tiny_cfg, monkeypatch):
    """Each input of the features gives a new key with the backbone's weights unchanged (the same seed, the same
    tensors); options that act only above the backbone or on the training keep it."""
    table = load_table(tiny_cfg(*FROZEN).data)

    def key(*overrides: str, interpolation: v2.InterpolationMode | None = None) -> str:
        cfg = tiny_cfg(*FROZEN, *overrides)
        torch.manual_seed(0)
        model = build_model(cfg, table.tasks)
        transform = transform_from_config(cfg.data, train=False)
        if interpolation is not None:
            (resize,) = (step for step in transform.transforms if isinstance(step, v2.Resize))
            resize.interpolation = interpolation
        weights.append(model.backbone.state_dict())
        return cache_key(cfg, model, table, "train", Runtime.resolve(cfg.trainer), transform)["key"]

    weights = []
    base = key()
    for irrelevant in [("loss.gamma=0",), ("phase.lr=0.5",), ("backbone.lr_scale=0.3",), ("model.dim=16",),
                       ("sampler=random",)]:
        assert key(*irrelevant) == base, irrelevant
    changed = {
        "output_stride": key("backbone.model_kwargs={output_stride:16}"),
        "interpolation": key(interpolation=v2.InterpolationMode.BICUBIC),
        "image size": key("data.image_size=48", "data.resize_size=48"),
        "resize (crop)": key("data.resize_size=72"),
        "square pad": key("data.square_pad=true"),
        "mirror images (data.hflip)": key("data.hflip=true"),
    }
    monkeypatch.setattr(timm, "__version__", "0.0.1")
    changed["timm version"] = key()
    monkeypatch.undo()
    monkeypatch.setattr(torch, "__version__", "0.0.1")
    changed["torch version"] = key()
    assert all(k != base for k in changed.values()) and len(set(changed.values())) == len(changed), changed
    for state in weights:  # the key did not change through the weights
        assert state.keys() == weights[0].keys() and all(torch.equal(t, weights[0][n]) for n, t in state.items())


def test_without_file_locks_auto_trains_on_images_and_true_stops_in_one_line(tiny_cfg, tmp_path, monkeypatch,
                                                                             caplog):
    """A file system without flock (ENOLCK, as on some cluster file systems): nothing is built unlocked."""
    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    cache = tmp_path / "features"
    cfg = tiny_cfg(*FROZEN, f"trainer.feature_cache_dir={cache}")
    with caplog.at_level(logging.INFO, logger="deepart"):
        metrics = train_in_process(cfg, run_dir=tmp_path / "auto")
    assert "building the feature cache needs a file lock" in caplog.text and "No locks available" in caplog.text
    assert "cached backbone features" not in caplog.text and BUILD not in caplog.text and metrics["history"]
    assert not [p for p in cache.iterdir() if p.is_dir()]
    cfg.trainer.feature_cache = True
    with pytest.raises(DataError, match=r"feature_cache=true: .*\.lock: cannot lock \(No locks available\); put "
                                        r"trainer.feature_cache_dir on a file system with file locks"):
        train_in_process(cfg, run_dir=tmp_path / "true")
