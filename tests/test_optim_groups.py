"""The optimizer's groups agree with timm's for every shipped backbone option: the parameters without weight decay
and each parameter's lr multiplier are what `timm.optim.param_groups_layer_decay` gives for the same model, weight
decay and layer decay (built on the meta device: names and shapes are all that matter). The norm BEiT and EVA-02
apply after pooling is kept, applied per token and trained; the grid the start-up log names is the forward's."""
from __future__ import annotations

import logging
import re

import pytest
import timm
import torch
from timm.optim import param_groups_layer_decay

from deepart.core.errors import ConfigError
from deepart.models import backbone as backbone_module
from deepart.models import build_model
from deepart.models.backbone import TimmBackbone
from deepart.training.freezing import apply_freezing, log_stages
from deepart.training.optim import build_optimizer
from tests.conftest import TINY_SEQUENCER, compose_config
from tests.test_backbones import SHIPPED, TASKS, VIT

LR, WEIGHT_DECAY, LAYER_DECAY = 1e-3, 0.05, 0.75


def shipped_model(option: str, *extra: str):
    cfg = compose_config([f"backbone={option}", "backbone.pretrained=false", "backbone.weights=null",
                          "data.image_size=224", f"optimizer.weight_decay={WEIGHT_DECAY}", *TINY_SEQUENCER, *extra])
    with torch.device("meta"):
        model = build_model(cfg, TASKS, pretrained=False)
    return cfg, model


def ours(cfg, model) -> dict[int, tuple[float, float]]:
    """id(parameter) -> (lr multiplier, weight decay) in the optimizer deepart builds."""
    opt = build_optimizer(cfg.optimizer, [model], LR, torch.device("cpu"))
    return {id(p): (g["lr"] / LR, g["weight_decay"]) for g in opt.param_groups for p in g["params"]}


def timms(body: torch.nn.Module, layer_decay: float) -> dict[int, tuple[float, float]]:
    """The same for timm's own param_groups_layer_decay on the backbone's model, as create_optimizer_v2 calls it."""
    groups = param_groups_layer_decay(body, weight_decay=WEIGHT_DECAY, layer_decay=layer_decay,
                                      no_weight_decay_list=getattr(body, "no_weight_decay", set)())
    return {id(p): (g["lr_scale"], g["weight_decay"]) for g in groups for p in g["params"]}


@pytest.mark.parametrize("option", SHIPPED)
def test_decay_and_lr_multipliers_equal_timms_param_groups_layer_decay(option):
    cfg, model = shipped_model(option, "optimizer.backbone_lr_scale=1.0", f"optimizer.layer_decay={LAYER_DECAY}")
    apply_freezing(model, [], 0)
    body = model.backbone.body
    got, want = ours(cfg, model), timms(body, LAYER_DECAY)
    names = {id(p): n for n, p in body.named_parameters()}
    assert set(want) == set(names) <= set(got)
    for key, (scale, decay) in want.items():
        assert got[key][0] == pytest.approx(scale, rel=1e-9), (option, names[key])
        assert got[key][1] == decay, (option, names[key])
    listed = model.backbone.no_weight_decay()
    tokens = {n for n in names.values() if re.search(r"pos_embed|cls_token|reg_token|relative_position_bias", n)}
    assert {n[len("body."):] for n in listed} == tokens  # exactly the weight-shaped tensors timm leaves alone
    if tokens:
        assert all(got[id(p)][1] == 0 for n, p in body.named_parameters() if n in tokens)
    if body.__class__.__module__.startswith("timm.models.vision_transformer") or option in ("beit_base",
                                                                                               "eva02_small"):
        assert model.backbone.num_layers >= len(body.blocks) + 1 > model.backbone.num_stages  # per block
    # the rest of the model trains at lr, decayed unless a bias or a norm
    rest = [p for n, p in model.named_parameters() if not n.startswith("backbone.")]
    assert all(got[id(p)] == (1.0, WEIGHT_DECAY if p.ndim >= 2 else 0.0) for p in rest)


@pytest.mark.parametrize("option", ["vit_small", "swin_tiny", "convnextv2_tiny"])
def test_layers_do_not_depend_on_frozen_stages_and_compose_with_the_backbone_scale(option, caplog):
    """Phase 2 freezes coarse stages; the trainable parameters keep their per-layer multipliers (timm's too),
    times optimizer.backbone_lr_scale, while the sequencer and heads train at the full lr; the log names the number
    of learning rates."""
    cfg, model = shipped_model(option, "optimizer.backbone_lr_scale=0.1", "optimizer.layer_decay=0.8")
    apply_freezing(model, [], 2)
    with caplog.at_level(logging.INFO, logger="deepart.training.optim"):
        got = ours(cfg, model)
    want = timms(model.backbone.body, 0.8)
    assert set(want) == {id(p) for p in model.backbone.parameters() if p.requires_grad}
    assert all(got[k][0] == pytest.approx(0.1 * scale) and got[k][1] == decay for k, (scale, decay) in want.items())
    rest = [p for n, p in model.named_parameters() if not n.startswith("backbone.")]
    assert rest and all(got[id(p)][0] == 1.0 for p in rest)
    rates = len({round(m, 12) for m, _ in got.values()})
    assert f"learning rates: {rates}, backbone layer_decay 0.8 over {model.backbone.num_layers} layers" in caplog.text
    assert 3 < rates < model.backbone.num_layers + 1  # the frozen early layers have no group


def tiny(name: str, size: int = 64, **kwargs) -> TimmBackbone:
    return TimmBackbone(name, img_size=size, model_kwargs={**VIT, **kwargs})


@pytest.mark.parametrize("name,size", [("beit_base_patch16_224", 64), ("eva02_tiny_patch14_224", 56)])
def test_the_norm_after_pooling_is_kept_applied_per_token_and_trained(name, size, tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    full = timm.create_model(name, pretrained=False, img_size=size, **VIT).eval()
    assert isinstance(full.norm, torch.nn.Identity) and isinstance(full.fc_norm, torch.nn.LayerNorm)
    with torch.no_grad():  # a "pretrained" norm that is not the identity
        full.fc_norm.weight.uniform_(0.5, 1.5)
        full.fc_norm.bias.uniform_(-0.5, 0.5)
    file = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in full.state_dict().items()}, str(file))
    backbone = TimmBackbone(name, img_size=size, model_kwargs=VIT, weights=str(file)).eval()
    assert backbone.head_norm == "fc_norm"
    torch.testing.assert_close(backbone.body.fc_norm.weight, full.fc_norm.weight)
    x = torch.randn(2, 3, size, size)
    raw = full.forward_intermediates(x, indices=[len(full.blocks) - 1], intermediates_only=True, norm=True)[-1]
    fmap = backbone(x)  # (B, C, h, w): fc_norm over each token's channels
    expected = torch.nn.functional.layer_norm(raw.permute(0, 2, 3, 1), (raw.shape[1],), full.fc_norm.weight,
                                              full.fc_norm.bias, full.fc_norm.eps).permute(0, 3, 1, 2)
    torch.testing.assert_close(fmap, expected)
    assert not torch.allclose(fmap, raw)
    cfg = compose_config([f"backbone.name={name}", "backbone.pretrained=false", f"data.image_size={size}",
                          "model.dim=16", "model.head_hidden=8",
                          "backbone.model_kwargs={embed_dim:32,depth:4,num_heads:2}",
                          *TINY_SEQUENCER])
    model = build_model(cfg, TASKS)
    opt = build_optimizer(cfg.optimizer, [model], LR, torch.device("cpu"))
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    norm = model.backbone.body.fc_norm
    assert {id(norm.weight), id(norm.bias)} <= in_opt
    before = norm.weight.detach().clone()
    out = model(torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8))
    sum(o.float().sum() for o in out["logits"].values()).backward()
    assert norm.weight.grad is not None and norm.weight.grad.abs().sum() > 0
    opt.step()
    assert not torch.equal(norm.weight, before)


def test_convnext_keeps_its_head_norm_and_a_checkpoint_without_the_norm_loads_as_it_was_trained():
    torch.manual_seed(0)
    backbone = TimmBackbone("test_convnext").eval()
    assert backbone.head_norm == "head.norm"
    x = torch.randn(2, 3, 64, 64)
    raw = backbone.body.forward_intermediates(x, indices=[backbone.last_index], intermediates_only=True,
                                              norm=True)[-1]
    torch.testing.assert_close(backbone(x), backbone.body.head.norm(raw))
    old = {k: v for k, v in backbone.state_dict().items() if not k.startswith("body.head.")}
    again = TimmBackbone("test_convnext").eval()
    again.load_state_dict(old)  # a checkpoint of the time when the norm was dropped
    assert again.head_norm is None
    torch.testing.assert_close(again(x), raw)


@pytest.mark.parametrize("name,size,grid", [("beit_base_patch16_224", 72, 5), ("test_vit", 72, 5),
                                            ("eva02_tiny_patch14_224", 72, 6), ("test_convnext", 72, 2),
                                            ("test_efficientnet", 72, 3)])
def test_the_logged_grid_is_the_forwards_and_beit_pads_to_whole_patches(name, size, grid, caplog):
    backbone = tiny(name, size) if "test_" not in name else TimmBackbone(name, img_size=size)
    fmap = backbone.eval()(torch.randn(1, 3, size, size))
    with caplog.at_level(logging.INFO, logger="deepart.training.freezing"):
        log_stages(backbone, size)
    assert tuple(fmap.shape[2:]) == (grid, grid)
    assert f"; {grid}x{grid} tokens at {size} px" in caplog.text
    if name.startswith("beit"):  # 72 px is 4.5 patches: padded to 5, as timm's dynamic_img_pad does elsewhere
        assert backbone.pad_multiple == 16 and "(padded to whole 16-px patches)" in caplog.text


@pytest.mark.parametrize("option", SHIPPED)
def test_every_shipped_option_logs_the_grid_it_gives_at_232_px(option, caplog):
    cfg, model = shipped_model(option, "data.image_size=232")
    with caplog.at_level(logging.INFO, logger="deepart.training.freezing"):
        log_stages(model.backbone, 232)
    h, w = model.backbone(torch.empty(1, 3, 232, 232, device="meta")).shape[2:]
    assert f"; {h}x{w} tokens at 232 px" in caplog.text
    if option == "beit_base":
        assert (h, w) == (15, 15)


def test_a_model_that_cannot_pad_refuses_in_one_line(monkeypatch):
    real = backbone_module._create_timm

    def only_once(name, pretrained, img_size, kwargs):
        if img_size % 16 == 0 and img_size != 224:
            raise TypeError("img_size")
        return real(name, pretrained, img_size, kwargs)

    monkeypatch.setattr(backbone_module, "_create_timm", only_once)
    with pytest.raises(ConfigError, match=r"^data\.image_size=72: backbone 'beit_base_patch16_224' takes whole "
                                          r"16-px patches .* use 64 or 80$") as err:
        tiny("beit_base_patch16_224", 72)
    assert len(str(err.value).splitlines()) == 1
