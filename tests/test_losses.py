import pytest
import torch
import torch.nn.functional as F

from deepart.core.config import CONF_DIR, build, group_options
from deepart.objectives.losses import CrossEntropyLoss, FocalLoss, MultiTaskLoss, focal_loss


def test_focal_gamma0_equals_cross_entropy():
    torch.manual_seed(0)
    logits, target = torch.randn(32, 7), torch.randint(0, 7, (32,))
    assert torch.allclose(focal_loss(logits, target, gamma=0.0), F.cross_entropy(logits, target), atol=1e-6)
    assert torch.allclose(focal_loss(logits, target, gamma=0.0, label_smoothing=0.1),
                          F.cross_entropy(logits, target, label_smoothing=0.1), atol=1e-6)


def test_focal_downweights_easy_examples():
    logits = torch.tensor([[4.0, 0.0, 0.0], [0.2, 0.0, 0.0]])
    target = torch.tensor([0, 0])
    ce = F.cross_entropy(logits, target, reduction="none")
    fl = focal_loss(logits, target, gamma=2.0, reduction="none")
    assert (fl < ce).all()
    # the confident example loses a far larger share of its loss than the uncertain one
    assert fl[0] / ce[0] < 0.01 < fl[1] / ce[1]


def test_missing_labels_are_masked():
    loss_fn = CrossEntropyLoss({"a": ["x", "y"], "b": ["u", "v", "w"]}, weighting="equal")
    logits = {"a": torch.randn(4, 2), "b": torch.randn(4, 3)}
    labels = torch.tensor([[0, -1], [1, 2], [-1, -1], [1, 0]])
    total, per_task, counts = loss_fn(logits, labels)
    expected_a = F.cross_entropy(logits["a"][[0, 1, 3]], labels[[0, 1, 3], 0])
    expected_b = F.cross_entropy(logits["b"][[1, 3]], labels[[1, 3], 1])
    assert torch.allclose(per_task, torch.stack([expected_a, expected_b]), atol=1e-6)
    assert torch.allclose(total, expected_a + expected_b, atol=1e-6)
    assert counts.tolist() == [3, 2]


def test_task_without_labels_contributes_nothing():
    loss_fn = FocalLoss(["a", "b"], weighting="uncertainty")
    logits = {"a": torch.randn(3, 2, requires_grad=True), "b": torch.randn(3, 2, requires_grad=True)}
    labels = torch.tensor([[0, -1], [1, -1], [0, -1]])
    total, _, _ = loss_fn(logits, labels)
    total.backward()
    assert logits["b"].grad.abs().sum() == 0
    assert loss_fn.log_vars.grad[1] == 0


def test_uncertainty_weighting_moves_toward_easier_task():
    """Toy problem: task 'easy' is learnable from the input, task 'noisy' has random labels.
    Learned weights exp(-s) must end up larger for the easy task."""
    torch.manual_seed(0)
    n = 512
    x = torch.randn(n, 8)
    easy = (x[:, 0] > 0).long()
    noisy = torch.randint(0, 2, (n,))
    labels = torch.stack([easy, noisy], 1)
    model = torch.nn.Linear(8, 4)
    loss_fn = CrossEntropyLoss(["easy", "noisy"], weighting="uncertainty")
    opt = torch.optim.Adam([*model.parameters(), *loss_fn.parameters()], lr=0.05)
    for _ in range(300):
        out = model(x)
        total, _, _ = loss_fn({"easy": out[:, :2], "noisy": out[:, 2:]}, labels)
        opt.zero_grad()
        total.backward()
        opt.step()
    w = loss_fn.task_weights()
    assert w["easy"] > 2 * w["noisy"], w
    assert w["noisy"] == pytest.approx(1 / 0.69, rel=0.15)  # exp(-s) -> 1 / L for L ~ log 2


def test_equal_weighting_has_no_trainable_weights():
    loss_fn = FocalLoss(["a"], weighting="equal")
    assert not any(p.requires_grad for p in loss_fn.parameters())


@pytest.mark.parametrize("cls,kwargs,key", [(FocalLoss, {"weighting": "median"}, "loss.weighting"),
                                           (FocalLoss, {"gamma": -1.0}, "loss.gamma"),
                                           (FocalLoss, {"label_smoothing": 1.0}, "loss.label_smoothing"),
                                           (CrossEntropyLoss, {"label_smoothing": -0.1}, "loss.label_smoothing")])
def test_impossible_loss_settings_are_refused_by_name(cls, kwargs, key):
    from deepart.core.errors import ConfigError

    with pytest.raises(ConfigError, match=rf"{key.replace('.', chr(92) + '.')}=.* is not allowed: expected"):
        cls(["a"], **kwargs)


@pytest.mark.parametrize("option", group_options("loss"))
def test_every_loss_option_is_a_criterion_class(option):
    """Each conf/loss option builds a MultiTaskLoss subclass with its own criterion: a finite per-sample loss
    that is lower for the right class than for a wrong one."""
    from omegaconf import OmegaConf

    loss_fn = build(OmegaConf.load(CONF_DIR / "loss" / f"{option}.yaml"), tasks=["a"])
    assert isinstance(loss_fn, MultiTaskLoss) and type(loss_fn) is not MultiTaskLoss
    logits = torch.tensor([[3.0, 0.0, 0.0], [3.0, 0.0, 0.0]])
    per_sample = loss_fn.criterion(logits, torch.tensor([0, 1]))
    assert per_sample.shape == (2,) and torch.isfinite(per_sample).all() and per_sample[0] < per_sample[1]


def test_cross_entropy_is_focal_with_gamma_0():
    torch.manual_seed(0)
    logits, target = torch.randn(16, 5), torch.randint(0, 5, (16,))
    ce = CrossEntropyLoss(["a"], label_smoothing=0.1).criterion(logits, target)
    focal = FocalLoss(["a"], gamma=0.0, label_smoothing=0.1).criterion(logits, target)
    assert torch.allclose(ce, focal, atol=1e-6)


def test_old_checkpoint_configs_name_todays_classes():
    """Configs saved before criteria were classes (and before sequencers.py became encoders.py and losses.py
    moved into objectives/) still build."""
    from deepart.core.checkpoint import upgrade_config

    old = {"loss": {"_target_": "deepart.losses.MultiTaskLoss", "criterion": "ce", "gamma": 2.0,
                    "label_smoothing": 0.1, "weighting": "equal"},
           "sequencer": {"encoder": {"_target_": "deepart.models.sequencers.RNNEncoder", "cell": "gru"}}}
    new = upgrade_config(old)
    assert new["loss"] == {"_target_": "deepart.objectives.losses.CrossEntropyLoss", "label_smoothing": 0.1,
                           "weighting": "equal"}
    assert new["sequencer"]["encoder"]["_target_"] == "deepart.models.encoders.RNNEncoder"
    assert isinstance(build(new["loss"], tasks=["a"]), CrossEntropyLoss)
    assert upgrade_config(new) == new


def test_configs_saved_before_the_move_to_objectives_build():
    from deepart.core.checkpoint import upgrade_config

    new = upgrade_config({"loss": {"_target_": "deepart.losses.FocalLoss", "gamma": 1.0, "label_smoothing": 0.0,
                                   "weighting": "uncertainty"}})
    assert new["loss"]["_target_"] == "deepart.objectives.losses.FocalLoss"
    assert build(new["loss"], tasks=["a"]).gamma == 1.0
