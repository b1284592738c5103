import pytest
import torch
import torch.nn.functional as F

from deepart.losses import MultiTaskLoss, focal_loss


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
    loss_fn = MultiTaskLoss({"a": ["x", "y"], "b": ["u", "v", "w"]}, criterion="ce", weighting="equal")
    logits = {"a": torch.randn(4, 2), "b": torch.randn(4, 3)}
    labels = torch.tensor([[0, -1], [1, 2], [-1, -1], [1, 0]])
    total, per_task, counts = loss_fn(logits, labels)
    expected_a = F.cross_entropy(logits["a"][[0, 1, 3]], labels[[0, 1, 3], 0])
    expected_b = F.cross_entropy(logits["b"][[1, 3]], labels[[1, 3], 1])
    assert torch.allclose(per_task, torch.stack([expected_a, expected_b]), atol=1e-6)
    assert torch.allclose(total, expected_a + expected_b, atol=1e-6)
    assert counts.tolist() == [3, 2]


def test_task_without_labels_contributes_nothing():
    loss_fn = MultiTaskLoss(["a", "b"], criterion="focal", weighting="uncertainty")
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
    loss_fn = MultiTaskLoss(["easy", "noisy"], criterion="ce", weighting="uncertainty")
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
    loss_fn = MultiTaskLoss(["a"], weighting="equal")
    assert not any(p.requires_grad for p in loss_fn.parameters())


@pytest.mark.parametrize("kwargs,key", [({"criterion": "fcal"}, "loss.criterion"), ({"weighting": "median"},
                                        "loss.weighting"), ({"gamma": -1.0}, "loss.gamma"),
                                       ({"label_smoothing": 1.0}, "loss.label_smoothing")])
def test_impossible_loss_settings_are_refused_by_name(kwargs, key):
    """An unknown criterion is an error, never silently cross-entropy."""
    from deepart.core.errors import ConfigError

    with pytest.raises(ConfigError, match=rf"{key.replace('.', chr(92) + '.')}=.* is not allowed: expected"):
        MultiTaskLoss(["a"], **kwargs)
