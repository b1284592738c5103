"""Regularisers for small collections: mixup / CutMix with per-task soft targets that respect missing labels,
RandAugment / TrivialAugment and random erasing in the training transform, layer-wise lr decay of the backbone;
each off by default, checked at start-up, and a run with all of them on is repeatable. And how a run that peaked
early says so: its best epoch and how far the last epoch fell from it."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from deepart.core.config import build, validate
from deepart.core.errors import ConfigError
from deepart.data.dataset import ImageDataset
from deepart.data.loaders import load_table, train_loader
from deepart.data.mixing import BatchMixer, mixer_from_config
from deepart.data.transforms import transform_from_config
from deepart.models import build_model
from deepart.training.epoch_log import EpochLog, peak_line
from deepart.training.optim import build_optimizer
from deepart.training.phases import PhaseState
from tests.conftest import TINY, TINY_SEQUENCER, compose_config, demo_overrides, run_script

TASKS = {"style": ["a", "b", "c"], "genre": ["x", "y"]}
ALL_ON = ["augment.policy=trivialaugment", "augment.erasing=0.25", "augment.mixup_alpha=0.2",
          "augment.cutmix_alpha=1.0", "augment.mix_prob=1.0", "augment.switch_prob=0.5", "optimizer.layer_decay=0.75"]


def test_every_option_is_off_by_default():
    cfg = compose_config([])
    assert cfg.augment.policy == "none" and cfg.augment.erasing == 0 and cfg.optimizer.layer_decay is None
    assert mixer_from_config(cfg.augment, seed=0) is None
    steps = [type(t).__name__ for t in transform_from_config(cfg.data, train=True, augment=cfg.augment).transforms]
    assert steps == ["RandomResizedCrop", "RandomHorizontalFlip", "PILToTensor"]


def test_every_new_option_composes_and_instantiates(demo_root):
    for extra in (["augment.policy=randaugment", "augment.magnitude=12", "augment.num_ops=3"],
                  [*ALL_ON, "augment.mix_mode=pair", "optimizer.backbone_lr_scale=0.5"]):
        cfg = compose_config([*demo_overrides(demo_root), *TINY, *TINY_SEQUENCER, *extra])
        validate(cfg)
        table = load_table(cfg.data)
        batch = next(iter(train_loader(table, cfg.data, cfg.sampler, 8, cfg.seed, "cpu", augment=cfg.augment)))
        assert batch["image"].dtype == torch.uint8 and batch["image"].shape == (8, 3, 64, 64)
        steps = {type(t).__name__ for t in transform_from_config(cfg.data, train=True, augment=cfg.augment).transforms}
        assert ("RandAugment" if cfg.augment.policy == "randaugment" else "TrivialAugmentWide") in steps
        assert ("RandomErasing" in steps) == bool(cfg.augment.erasing)
        evaluated = {type(t).__name__ for t in transform_from_config(cfg.data, train=False).transforms}
        assert not evaluated & {"RandAugment", "TrivialAugmentWide", "RandomErasing"}
        model = build_model(cfg, table.tasks)
        opt = build_optimizer(cfg.optimizer, [model, build(cfg.loss, tasks=table.tasks)], 1e-3, torch.device("cpu"))
        assert len({g["lr"] for g in opt.param_groups}) > (2 if cfg.optimizer.layer_decay else 0)
        mixer = mixer_from_config(cfg.augment, cfg.seed)
        assert (mixer is not None) == bool(cfg.augment.mixup_alpha)


@pytest.mark.parametrize("override,key", [
    ("augment.policy=autoaugment", "augment.policy"), ("augment.magnitude=31", "augment.magnitude"),
    ("augment.num_ops=0", "augment.num_ops"), ("augment.erasing=1.5", "augment.erasing"),
    ("augment.mixup_alpha=-0.2", "augment.mixup_alpha"), ("augment.cutmix_alpha=-1", "augment.cutmix_alpha"),
    ("augment.mix_prob=2", "augment.mix_prob"), ("augment.switch_prob=-0.1", "augment.switch_prob"),
    ("augment.mix_mode=row", "augment.mix_mode"), ("optimizer.layer_decay=0", "optimizer.layer_decay"),
    ("optimizer.layer_decay=1.5", "optimizer.layer_decay"),
])
def test_bad_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(compose_config([*TINY, override]))


@pytest.mark.slow
def test_a_bad_value_stops_the_run_with_one_line(tmp_path):
    res = run_script("train.py", "experiment=demo", "logger=none", f"data.root={tmp_path}/never",
                     "augment.policy=autoaugment", f"hydra.run.dir={tmp_path}/run")
    out = res.stdout + res.stderr
    assert res.returncode == 2, out
    lines = [line for line in out.splitlines() if "augment.policy" in line]
    assert len(lines) == 1 and "expected none | randaugment | trivialaugment" in lines[0], out
    assert "Traceback" not in out


def _images(n: int = 4, size: int = 16) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(n), dtype=torch.uint8)


def test_mixup_mixes_each_image_with_its_mirror_by_the_matrix():
    images = _images()
    x, mix = BatchMixer(mixup_alpha=0.4, seed=1)(images, step=3)
    lam = float(mix[0, 0])
    assert 0 < lam < 1 and torch.allclose(mix.sum(1), torch.ones(4))
    assert mix[0, 3] == pytest.approx(1 - lam) and mix[1, 1] == pytest.approx(lam)  # one draw per batch
    expected = (images.float() / 255) * lam + (images.flip(0).float() / 255) * (1 - lam)
    assert torch.allclose(x, expected, atol=1e-6)


def test_cutmix_pastes_a_box_whose_area_is_the_mirror_share():
    images = _images()
    x, mix = BatchMixer(cutmix_alpha=1.0, seed=2)(images, step=0)
    own, other = images.float() / 255, images.flip(0).float() / 255
    from_own = (x == own).all(1) & ~(x == other).all(1)
    from_other = (x == other).all(1) & ~(x == own).all(1)
    assert bool((from_own | from_other).all())
    assert float(from_other[0].float().mean()) == pytest.approx(float(mix[0, 3]), abs=1e-6)
    assert 0 < float(mix[0, 3]) < 1


def test_mixing_is_a_function_of_seed_and_step_and_leaves_numpy_alone():
    images, mixer = _images(6), BatchMixer(mixup_alpha=0.2, cutmix_alpha=1.0, mode="elem", seed=5)
    state = np.random.get_state()[1].copy()
    a, b, c = mixer(images, 7), mixer(images, 7), mixer(images, 8)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[1], c[1])
    assert (np.random.get_state()[1] == state).all()
    odd, mix = mixer(_images(5), 0)
    assert torch.equal(mix[4], torch.eye(5)[4]) and torch.allclose(mix.sum(1), torch.ones(5))


@pytest.mark.parametrize("loss", ["focal", "ce", "label_smoothing"])
def test_mixed_loss_with_a_masked_task_equals_the_hand_computed_soft_target_loss(loss):
    """Image 0 = 0.7 x sample 0 + 0.3 x sample 1 (and image 1 the reverse). Sample 1 has no genre label, so image
    0's genre loss is sample 0's label at weight 0.7 and image 1's genre loss is sample 0's label at weight 0.3;
    the genre mean is over the labelled shares (0.7 + 0.3). Style is labelled for both: plain soft targets."""
    loss_fn = build(compose_config([f"loss={loss}", "loss.weighting=equal"]).loss, tasks=TASKS)
    logits = {"style": torch.tensor([[1.0, -0.5, 0.2], [0.3, 0.9, -1.0]]), "genre": torch.tensor([[0.4, -0.2],
                                                                                                [-0.7, 1.1]])}
    labels = torch.tensor([[0, 0], [2, -1]])
    mix = torch.tensor([[0.7, 0.3], [0.3, 0.7]])
    total, task_losses, counts = loss_fn(logits, labels, mix)

    gamma, eps = getattr(loss_fn, "gamma", 0.0), loss_fn.label_smoothing

    def side(z: torch.Tensor, y: int) -> float:  # the loss of one image's logits against one label
        p = F.softmax(z, -1)
        q = torch.full_like(p, eps / len(p))
        q[y] += 1 - eps
        return float(-(q * (1 - p) ** gamma * torch.log(p)).sum())

    style = [0.7 * side(logits["style"][0], 0) + 0.3 * side(logits["style"][0], 2),
             0.3 * side(logits["style"][1], 0) + 0.7 * side(logits["style"][1], 2)]
    genre = [0.7 * side(logits["genre"][0], 0), 0.3 * side(logits["genre"][1], 0)]
    expected = [sum(style) / 2, sum(genre) / 1.0]
    assert task_losses.tolist() == pytest.approx(expected, rel=1e-5)
    assert float(total) == pytest.approx(sum(expected), rel=1e-5)
    assert counts.tolist() == pytest.approx([2.0, 1.0])
    unmixed = loss_fn(logits, labels)  # the identity mix is the hard-label loss
    assert torch.allclose(loss_fn(logits, labels, torch.eye(2))[1], unmixed[1], atol=1e-6)


def test_a_task_labelled_by_neither_side_adds_nothing():
    loss_fn = build(compose_config(["loss.weighting=uncertainty"]).loss, tasks=TASKS)
    logits = {"style": torch.randn(2, 3), "genre": torch.randn(2, 2)}
    total, task_losses, counts = loss_fn(logits, torch.tensor([[0, -1], [1, -1]]), torch.tensor([[0.6, 0.4],
                                                                                              [0.4, 0.6]]))
    assert counts[1] == 0 and task_losses[1] == 0
    assert float(total.detach()) == pytest.approx(float(task_losses[0]), rel=1e-6)  # s_t = 0: exp(0) x L_style + 0


def test_policy_and_erasing_are_a_function_of_the_items_seed(tmp_path):
    path = tmp_path / "painting.png"
    Image.fromarray(np.random.RandomState(0).randint(0, 256, (80, 96, 3), dtype=np.uint8)).save(path)
    cfg = compose_config([*TINY, "augment.policy=trivialaugment", "augment.erasing=1.0"])
    transform = transform_from_config(cfg.data, train=True, augment=cfg.augment)
    dataset = ImageDataset([str(path)], torch.zeros(1, 1, dtype=torch.long), transform)
    first, again, other = dataset[(0, 11)]["image"], dataset[(0, 11)]["image"], dataset[(0, 12)]["image"]
    assert torch.equal(first, again) and not torch.equal(first, other)
    plain = ImageDataset([str(path)], torch.zeros(1, 1, dtype=torch.long),
                         transform_from_config(cfg.data, train=True))
    assert not torch.equal(first, plain[(0, 11)]["image"])  # the same crop and flip, then policy and erasing


@pytest.mark.slow
def test_a_tiny_run_with_every_option_on_completes_and_repeats(demo_root, tmp_path):
    runs = []
    for name in ("a", "b"):
        res = run_script("train.py", *demo_overrides(demo_root), *TINY, *TINY_SEQUENCER, *ALL_ON,
                         "augment.mix_mode=pair", f"hydra.run.dir={tmp_path / name}")
        assert res.returncode == 0, res.stderr[-3000:]
        runs.append(json.loads((tmp_path / name / "metrics.json").read_text()))
    a, b = runs
    assert a["history"][0]["train/loss"] > 0
    best = 100 * a["best"]["val/mean_top1"]
    assert f"best val/mean_top1 {best:.1f} at epoch 1 of 1; last {best:.1f}, +0.0 points" in res.stdout + res.stderr
    for key in ("train/loss", "train/objective", "val/loss", "val/mean_top1"):
        assert a["history"][0][key] == b["history"][0][key], key


def test_a_resumed_run_with_every_option_on_is_the_same_run(tiny_cfg, tmp_path, monkeypatch):
    """Killed after its first epoch's checkpoint and resumed: the same augmentations and the same mixing as
    the uninterrupted run, so the same numbers."""
    from deepart.training import trainer as trainer_module

    options = [*ALL_ON, "augment.mix_mode=elem", "phase.epochs=2"]
    straight = trainer_module.train(tiny_cfg(*options), run_dir=tmp_path / "straight")
    real_save = trainer_module.Trainer._save

    def save_then_die(self, *args, **kwargs):
        real_save(self, *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer_module.Trainer, "_save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        trainer_module.train(tiny_cfg(*options), run_dir=tmp_path / "killed")
    monkeypatch.setattr(trainer_module.Trainer, "_save", real_save)
    resumed = trainer_module.train(tiny_cfg(f"resume={tmp_path / 'killed'}"))
    assert resumed["epochs"] == 2
    for key in ("train/loss", "val/loss", "val/mean_top1"):
        assert resumed["history"][1][key] == pytest.approx(straight["history"][1][key], abs=1e-6), key


def _phase(curve: list[float]) -> PhaseState:
    state = PhaseState()
    for value in curve:
        state.end_epoch({"val/mean_top1": value}, {}, epochs=len(curve), min_delta=0.0, patience=None)
    return state


def test_the_end_of_run_line_says_where_the_run_peaked_and_how_far_it_fell():
    curve = [0.40, 0.55, 0.58, 0.60, 0.612, 0.60, 0.59, 0.58, 0.571]
    assert peak_line({"full": _phase(curve)}, "full") == \
        "best val/mean_top1 61.2 at epoch 5 of 9; last 57.1, -4.1 points"
    chain = {"1": _phase([0.3, 0.5]), "2": _phase([0.62, 0.6]), "3": _phase([0.58, 0.55, 0.56])}
    assert peak_line(chain, "2") == \
        "best val/mean_top1 62.0 at epoch 1 of 2 of phase 2; last (epoch 3 of phase 3) 56.0, -6.0 points"


def test_the_epoch_line_shows_the_fall_below_the_best_epoch():
    log = EpochLog(None, TASKS, None)
    record = {"train/loss": 1.0, "val/loss": 1.2, "lr": 1e-4, "epoch_time_s": 3.0, "train/images_per_s": 50.0,
              "skipped_images": 0, **{f"val/{t}/{k}": 0.5 for t in TASKS for k in ("top1", "top5")}}
    state = _phase([0.40, 0.612, 0.571])
    line = log.epoch_line("full", 15, state, {**record, "val/mean_top1": 0.571})
    assert "mean top1 57.1 (best 61.2 @2, -4.1)" in line
    line = log.epoch_line("full", 15, _phase([0.4, 0.6]), {**record, "val/mean_top1": 0.6})
    assert "mean top1 60.0 (best 60.0 @2)  lr" in line
