"""Phase freezing freezes exactly what the phase table (docs/training.md) says."""
import torch

from deepart.models import build_model
from deepart.training.freezing import apply_freezing
from deepart.training.optim import build_optimizer
from tests.conftest import TINY_SEQUENCER, compose_config

TASKS = {"style": ["a", "b", "c"], "genre": ["x", "y"]}
BASE = ["backbone=resnet18", "backbone.pretrained=false", "model.dim=32", "model.head_hidden=16", *TINY_SEQUENCER]


def setup(phase: str, *extra: str):
    cfg = compose_config([*BASE, f"phase={phase}", *extra])
    model = build_model(cfg, TASKS)
    apply_freezing(model, list(cfg.phase.freeze), cfg.phase.freeze_stages)
    return cfg, model


def trainable(module) -> set[bool]:
    return {p.requires_grad for p in module.parameters()}


def test_phase1_freezes_encoder_and_attention_pooling_only():
    _, model = setup("1")
    assert trainable(model.encoder) == {False} and trainable(model.pooling) == {False}
    assert trainable(model.backbone) == {True} and trainable(model.proj) == {True} and trainable(model.heads) == {True}


def test_phase2_freezes_backbone_stages_0_to_2():
    _, model = setup("2")
    stage_of = model.backbone.stage_of()
    # resnet18 stages: 0 = stem, 1 = layer1, 2 = layer2, 3 = layer3, 4 = layer4
    frozen = {n.split(".")[1] for n, p in model.backbone.named_parameters() if not p.requires_grad}
    assert frozen == {"conv1", "bn1", "layer1", "layer2"}
    for name, p in model.backbone.named_parameters():
        assert p.requires_grad == (stage_of[name] >= 3), name
    assert trainable(model.encoder) == trainable(model.pooling) == trainable(model.heads) == {True}


def test_phase3_trains_everything():
    _, model = setup("3")
    assert trainable(model) == {True}


def test_freeze_stages_is_data_and_frozen_batchnorm_stays_in_eval():
    cfg, model = setup("2", "phase.freeze_stages=2")
    frozen_bn = [m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)
                 and not any(p.requires_grad for p in m.parameters())]
    assert frozen_bn and model.backbone.body.layer2[0].bn1.weight.requires_grad
    model.train()
    assert all(not m.training for m in frozen_bn)
    assert model.backbone.body.layer2[0].bn1.training
    before = frozen_bn[0].running_mean.clone()
    model(torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8))
    assert torch.equal(before, frozen_bn[0].running_mean)


def test_frozen_parameters_are_not_in_the_optimizer():
    cfg, model = setup("2")
    opt = build_optimizer(cfg.optimizer, [model], cfg.phase.lr, torch.device("cpu"))
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert in_opt == {id(p) for p in model.parameters() if p.requires_grad}
    no_decay = {id(p) for g in opt.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    for name, p in model.named_parameters():
        if p.requires_grad and (name.endswith("bias") or "bn" in name):
            assert id(p) in no_decay, name


def test_too_many_stages_is_a_clear_error_at_start_up():
    """The start-up check names the key and the backbone's stage count, without building the model."""
    import pytest

    from deepart.core.errors import ConfigError
    from deepart.training.checks import check_config

    with pytest.raises(ConfigError, match=r"^phase\.freeze_stages=6 is not allowed: expected 0\.\.5 "
                                          r"\(backbone 'resnet18' has 5 stages\)"):
        check_config(compose_config([*BASE, "phase=2", "phase.freeze_stages=6"]))
    check_config(compose_config([*BASE, "phase=2", "phase.freeze_stages=5"]))  # every stage frozen: allowed
    with pytest.raises(ValueError, match="freeze_stages=6"):  # the component still refuses it when called directly
        setup("2", "phase.freeze_stages=6")
