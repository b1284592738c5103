import collections
import os

import pytest
import torch

from deepart.core.checkpoint import Checkpoint, capture_rng, restore_rng, run_dir_of
from deepart.core.errors import CheckpointError

STATE = dict(model={"w": torch.ones(3)}, config={"a": 1, "b": [1, 2]}, tasks={"t": ["x", "y"]},
             phase={"name": "1", "index": 0}, progress={"epoch": 2, "final": {"val/mean_top1": 0.5}})


def test_roundtrip_is_weights_only(tmp_path):
    path = tmp_path / "c.pt"
    Checkpoint(**STATE, rng=capture_rng()).save(path)
    raw = torch.load(path, weights_only=True)
    assert raw["progress"]["epoch"] == 2 and raw["tasks"] == {"t": ["x", "y"]}
    loaded = Checkpoint.load(path)
    assert loaded.config == {"a": 1, "b": [1, 2]} and loaded.epoch == 2 and loaded.path == path
    assert loaded.metrics == {"val/mean_top1": 0.5}


def test_no_field_is_stored_twice(tmp_path):
    Checkpoint(**STATE).save(tmp_path / "c.pt")
    raw = torch.load(tmp_path / "c.pt", weights_only=True)
    assert not {"epoch", "completed", "metrics", "scaler", "path"} & set(raw)


def test_version_1_checkpoints_still_load(tmp_path):
    """Checkpoints written before the model's parts were renamed (sequencer -> encoder, attention -> pooling)."""
    v1 = {"format": "deepart-checkpoint", "version": 1, "epoch": 3, "completed": True, "metrics": {"m": 1.0},
          "scaler": None, "tasks": {"t": ["x"]}, "phase": {"name": "1", "index": 0},
          "state": {"epoch": 3, "completed": True, "final": {"m": 1.0}, "best_epoch": 2},
          "model": {"sequencer.rnn.w": torch.ones(1), "attention.proj.w": torch.ones(1), "heads.t.0.w": torch.ones(1)},
          "config": {"phase": {"name": "1", "freeze": ["sequencer", "attention"]}}}
    torch.save(v1, tmp_path / "v1.pt")
    ckpt = Checkpoint.load(tmp_path / "v1.pt")
    assert ckpt.epoch == 3 and ckpt.metrics == {"m": 1.0} and ckpt.progress["best_epoch"] == 2
    assert set(ckpt.model) == {"encoder.rnn.w", "pooling.proj.w", "heads.t.0.w"}
    assert ckpt.config["phase"]["freeze"] == ["encoder", "pooling"]


def test_rng_state_roundtrip(tmp_path):
    import random

    import numpy as np

    torch.manual_seed(1)
    Checkpoint(**STATE, rng=capture_rng()).save(tmp_path / "c.pt")
    expected = (torch.rand(3), np.random.rand(), random.random())
    restore_rng(Checkpoint.load(tmp_path / "c.pt").rng)
    again = (torch.rand(3), np.random.rand(), random.random())
    assert torch.equal(expected[0], again[0]) and expected[1:] == again[1:]


def test_failed_save_leaves_previous_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    Checkpoint(**STATE).save(path)
    before = path.read_bytes()

    def dying_save(obj, f, *a, **k):
        f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        Checkpoint(**{**STATE, "progress": {"epoch": 3}}).save(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["last.pt"]


def test_missing_and_corrupt_files_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        Checkpoint.load(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        Checkpoint.load(bad)
    good = tmp_path / "good.pt"
    Checkpoint(**STATE).save(good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        Checkpoint.load(truncated)


class Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_checkpoint_that_could_run_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "deepart-checkpoint", "model": Payload(), "config": {}, "tasks": {}, "epoch": 0}, path)
    with pytest.raises(CheckpointError, match="could run code"):
        Checkpoint.load(path)


def test_foreign_checkpoint_is_named(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"state_dict": collections.OrderedDict(w=torch.ones(1))}, path)
    with pytest.raises(CheckpointError, match="not a deepart checkpoint"):
        Checkpoint.load(path)


def test_incomplete_checkpoint_is_named(tmp_path):
    path = tmp_path / "partial.pt"
    torch.save({"format": "deepart-checkpoint", "version": 2, "model": {}, "config": {}}, path)
    with pytest.raises(CheckpointError, match="lacks .*tasks"):
        Checkpoint.load(path)


def test_run_dir_of_every_kind_of_target(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints" / "phase-2").mkdir(parents=True)
    for name in ("checkpoints/best.pt", "checkpoints/phase-2/last.pt"):
        (run / name).write_bytes(b"x")
        assert run_dir_of(run / name) == run.resolve()
    assert run_dir_of(run) == run                                     # a run dir
    assert run_dir_of(tmp_path / "elsewhere.pt") == tmp_path.resolve()  # a checkpoint outside a run


def test_an_optimizer_saved_with_other_groups_is_a_clear_error_naming_init_from(tmp_path):
    """A run saved before its optimizer's groups changed (one group then, one per layer now) cannot be resumed:
    one CheckpointError naming the checkpoint and init_from=, not torch's ValueError. The same groups resume."""
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    old = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(5, 4)).sum().backward()
    old.step()
    path = tmp_path / "last.pt"
    Checkpoint(**STATE, optimizer=old.state_dict()).save(path)
    ckpt = Checkpoint.load(path)
    per_layer = torch.optim.AdamW([{"params": m.parameters(), "lr": 1e-3 * 0.75 ** (1 - k)}
                                   for k, m in enumerate(model)], lr=1e-3)
    with pytest.raises(CheckpointError) as err:
        ckpt.restore_optimizer(per_layer)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}: its optimizer has 1 parameter groups (4 tensors)")
    assert "this run's 2 (4 tensors)" in message and message.endswith(f"init_from={path}")
    same = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ckpt.restore_optimizer(same)
    assert all(torch.equal(same.state[p]["exp_avg"], old.state[p]["exp_avg"]) for p in model.parameters())
