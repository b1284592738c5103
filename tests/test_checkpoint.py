import collections
import os

import pytest
import torch

from deepart.errors import CheckpointError
from deepart.training.checkpoint import capture_rng, load_checkpoint, restore_rng, save_checkpoint

STATE = {"model": {"w": torch.ones(3)}, "config": {"a": 1, "b": [1, 2]}, "tasks": {"t": ["x", "y"]}, "epoch": 2}


def test_roundtrip_is_weights_only(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {**STATE, "rng": capture_rng()})
    raw = torch.load(path, weights_only=True)
    assert raw["epoch"] == 2 and raw["tasks"] == {"t": ["x", "y"]}
    assert load_checkpoint(path)["config"] == {"a": 1, "b": [1, 2]}


def test_rng_state_roundtrip(tmp_path):
    import random
    import numpy as np

    torch.manual_seed(1)
    save_checkpoint(tmp_path / "c.pt", {**STATE, "rng": capture_rng()})
    expected = (torch.rand(3), np.random.rand(), random.random())
    restore_rng(load_checkpoint(tmp_path / "c.pt")["rng"])
    again = (torch.rand(3), np.random.rand(), random.random())
    assert torch.equal(expected[0], again[0]) and expected[1:] == again[1:]


def test_failed_save_leaves_previous_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, STATE)
    before = path.read_bytes()

    def dying_save(obj, f, *a, **k):
        f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {**STATE, "epoch": 3})
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["last.pt"]


def test_missing_and_corrupt_files_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(bad)
    good = tmp_path / "good.pt"
    save_checkpoint(good, STATE)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(truncated)


class Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_checkpoint_that_could_run_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "deepart-checkpoint", "model": Payload(), "config": {}, "tasks": {}, "epoch": 0}, path)
    with pytest.raises(CheckpointError, match="could run code"):
        load_checkpoint(path)


def test_foreign_checkpoint_is_named(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"state_dict": collections.OrderedDict(w=torch.ones(1))}, path)
    with pytest.raises(CheckpointError, match="not a deepart checkpoint"):
        load_checkpoint(path)
