"""The feature cache where file locks do not keep builders apart (flock per host on NFS, Lustre's localflock, many
FUSE mounts): each build writes a folder of its own and publishes it with one rename, so two builders of one cache
folder at once both finish and train on one complete cache (the lock, switched off here, only saves work)."""
import pytest

from tests.conftest import hold_env, wait_until_held
from tests.test_feature_cache import BUILD, REUSE, WAIT, ended, folders, history, start, train
from tests.test_feature_cache import assert_same_metrics as same_metrics
from tests.test_feature_cache import ok as succeeded

pytestmark = pytest.mark.slow  # end-to-end: real trainings

NO_LOCK = {"DEEPART_TEST_NO_LOCK": "1"}  # the builders are not kept apart, as on a file system with per-host locks


@pytest.fixture
def started():
    """The processes the test starts: any still running when it ends (a failed assertion) is killed."""
    procs = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_two_builders_the_lock_does_not_keep_apart_both_finish_on_one_complete_cache(demo_root, tmp_path, started):
    """A is held right after the first chunk of its train build; B, on the same cache and not kept apart by the
    lock, builds both splits on its own, publishes them and trains. Let go, A finishes its build, finds the folder
    published meanwhile, drops its copy, reads B's val split. Both train as on images; no build folder is left."""
    cache, hold = tmp_path / "features", tmp_path / "a.hold"
    logs = {name: tmp_path / f"{name}.log" for name in "ab"}
    a = start(demo_root, tmp_path / "a", cache, logs["a"], env={**NO_LOCK, **hold_env("feature_chunk:1", hold)})
    started.append(a)
    wait_until_held(a, hold)
    b = start(demo_root, tmp_path / "b", cache, logs["b"], env=NO_LOCK)
    started.append(b)
    out_b = ended(b, logs["b"])
    assert out_b.count(BUILD) == 2 and WAIT not in out_b, out_b[-3000:]
    hold.unlink()
    out_a = ended(a, logs["a"])
    assert out_a.count(BUILD) == 1 and "published by another process meanwhile" in out_a, out_a[-3000:]
    assert out_a.count(REUSE) == 1  # the val split B published
    built = folders(cache)
    assert len(built) == 2 and all(m["complete"] for m in built.values()), built
    assert not [p for p in cache.iterdir() if p.name.endswith((".build", ".old"))]
    images = tmp_path / "images"
    succeeded(train(demo_root, images, images / "unused", "trainer.feature_cache=false"))
    same_metrics(history(tmp_path / "a"), history(images))
    same_metrics(history(tmp_path / "b"), history(images))
