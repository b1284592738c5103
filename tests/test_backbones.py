"""Every backbone family a researcher compares works, at the data's image size, with stages that mean the same on
every family: CNNs (EfficientNet, ResNet, RegNet, ConvNeXt / ConvNeXt-V2), hierarchical transformers (Swin) and
plain ViTs (ViT, DeiT, BEiT, EVA-02, DINOv2 with and without registers, CLIP and SigLIP image towers), each as a
tiny random timm model; every shipped option of conf/backbone/ on the meta device (shapes only, no weights)."""
from __future__ import annotations

import math

import pytest
import timm
import torch
from torch import nn

from deepart.core.config import CONF_DIR
from deepart.core.errors import ConfigError
from deepart.models import build_model
from deepart.models.backbone import TimmBackbone
from deepart.training.checks import check_config
from deepart.training.freezing import apply_freezing
from deepart.training.optim import backbone_lr_scales
from tests.conftest import TINY_SEQUENCER, compose_config

VIT = {"embed_dim": 32, "depth": 4, "num_heads": 2}
#: one tiny model of each family: (timm name, create_model keywords that shrink it)
FAMILIES = {
    "efficientnet": ("test_efficientnet", {}),
    "resnet": ("test_resnet", {}),
    "regnet": ("regnetx_002", {}),
    "convnext": ("test_convnext", {}),
    "convnextv2": ("convnextv2_atto", {}),
    "swin": ("swin_tiny_patch4_window7_224", {"embed_dim": 16, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1]}),
    "vit": ("test_vit", {}),
    "deit": ("deit_tiny_patch16_224", VIT),
    "beit": ("beit_base_patch16_224", VIT),
    "eva02": ("eva02_tiny_patch14_224", VIT),
    "dinov2": ("vit_small_patch14_dinov2", VIT),
    "dinov2_registers": ("vit_small_patch14_reg4_dinov2", VIT),
    "clip": ("vit_base_patch16_clip_224.openai", VIT),
    "siglip2": ("vit_base_patch16_siglip_224.v2_webli", VIT),
}
TASKS = {"style": ["a", "b", "c"], "genre": ["x", "y"]}
SHIPPED = sorted(p.stem for p in (CONF_DIR / "backbone").glob("*.yaml"))


def model_of(name: str, kwargs: dict, image_size: int, *extra: str):
    overrides = [f"backbone.name={name}", "backbone.pretrained=false", f"data.image_size={image_size}",
                 "model.dim=16", "model.head_hidden=8", *TINY_SEQUENCER, *extra]
    if kwargs:
        overrides.append("backbone.model_kwargs={" + ",".join(
            f"{k}:{list(v) if isinstance(v, list | tuple) else v}" for k, v in kwargs.items()) + "}")
    cfg = compose_config(overrides)
    return cfg, build_model(cfg, TASKS)


def forward_order(backbone: nn.Module, image_size: int) -> list[int]:
    """The stage of each parameterised module, in the order the forward pass first runs it."""
    stage_of, order, handles = backbone.stage_of(), [], []
    for name, module in backbone.named_modules():
        own = [f"{name}.{p}" for p, _ in module.named_parameters(recurse=False)]
        if own:
            handles.append(module.register_forward_hook(
                lambda m, i, o, s=stage_of[own[0]]: order.append(s)))
    backbone(torch.zeros(1, 3, image_size, image_size, device=next(backbone.parameters()).device))
    for h in handles:
        h.remove()
    return order


def assert_stages(backbone, image_size: int) -> None:
    stage_of = backbone.stage_of()
    assert set(stage_of) == {n for n, _ in backbone.named_parameters()}
    assert sorted(set(stage_of.values())) == list(range(backbone.num_stages)), "every stage holds parameters"
    order = forward_order(backbone, image_size)
    assert order == sorted(order), f"stages out of forward order: {order}"


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_gives_a_token_grid_at_160_and_224_px(family):
    name, kwargs = FAMILIES[family]
    for size in (160, 224):
        cfg, model = model_of(name, kwargs, size)
        backbone = model.backbone
        fmap = backbone(torch.randn(2, 3, size, size))
        side = math.ceil(size / backbone.reduction)  # class / register tokens dropped: a square grid of patches
        assert fmap.shape == (2, backbone.out_channels, side, side), (family, size)
        check_config(cfg)  # the start-up check accepts it
        out = model(torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8))
        assert out["attention"].shape == (2, side, side)
        sum(o.float().sum() for o in out["logits"].values()).backward()
        unused = [n for n, p in backbone.named_parameters() if p.grad is None]
        assert not unused, f"{family}: parameters outside the forward pass: {unused[:3]}"
    assert model.input_cfg["mean"] == tuple(timm.get_pretrained_cfg(name).mean)  # the weights' own normalisation


@pytest.mark.parametrize("family", FAMILIES)
def test_stages_are_non_empty_in_forward_order_and_freezing_freezes_exactly_them(family):
    name, kwargs = FAMILIES[family]
    _, model = model_of(name, kwargs, 64)
    backbone = model.backbone
    assert_stages(backbone, 64)
    plain_vit = family not in ("efficientnet", "resnet", "regnet", "convnext", "convnextv2", "swin")
    assert backbone.num_stages == (4 if plain_vit else len(backbone.body.feature_info))
    first = {n.split(".")[1] for n, s in backbone.stage_of().items() if s == 0}
    stem = {"efficientnet": "conv_stem", "resnet": "conv1", "regnet": "stem", "convnext": "stem",
            "convnextv2": "stem", "swin": "patch_embed"}.get(family, "patch_embed")
    assert stem in first, f"{family}: the stem is not in stage 0 ({first})"
    for k in range(backbone.num_stages + 1):
        apply_freezing(model, [], k)
        for n, p in backbone.named_parameters():
            assert p.requires_grad == (backbone.stage_of()[n] >= k), (family, k, n)
    scales, layers = backbone_lr_scales(backbone, 0.5, 0.8), backbone.layer_of()
    last = backbone.num_layers - 1
    assert backbone.num_layers >= backbone.num_stages  # layer decay is as fine as the stages freezing counts or finer
    for n, p in backbone.named_parameters():
        assert scales[id(p)] == pytest.approx(0.5 * 0.8 ** (last - layers[n]))
    stage_of = backbone.stage_of()  # an earlier stage never holds a later layer
    assert all(layers[a] <= layers[b] for a in layers for b in layers if stage_of[a] < stage_of[b]), family


@pytest.mark.parametrize("option", SHIPPED)
def test_every_shipped_backbone_option_builds_with_sensible_stages(option):
    """Built on the meta device (no weights, no compute): the stages of the real architecture, the start-up
    check at the default image size and at 160 px."""
    for size in (224, 160):
        cfg = compose_config([f"backbone={option}", "backbone.pretrained=false", "backbone.weights=null",
                              f"data.image_size={size}", *TINY_SEQUENCER])
        plan = check_config(cfg)
        with torch.device("meta"):
            backbone = build_model(cfg, TASKS, pretrained=False).backbone
        assert plan.stages == backbone.num_stages >= 3
        assert_stages(backbone, size)
    if option != "small_cnn":
        assert cfg.optimizer.backbone_lr_scale == cfg.backbone.lr_scale  # the option's recipe is the default
        assert cfg.optimizer.layer_decay == cfg.backbone.layer_decay


def test_a_model_without_a_feature_grid_stops_at_start_up_naming_the_key():
    cfg = compose_config(["backbone.name=crossvit_tiny_240", "backbone.pretrained=false", "data.image_size=160"])
    with pytest.raises(ConfigError, match=r"^backbone\.name=crossvit_tiny_240: no feature grid at "
                                          r"data\.image_size=160") as err:
        check_config(cfg)
    assert len(str(err.value).splitlines()) == 1


def test_weights_of_another_image_size_are_resampled_and_old_checkpoint_names_load(tmp_path):
    """A ViT's weights file saved at 224 px loads into the same model built for 160 px (timm's own checkpoint
    filter resamples the position embeddings); a state dict with the names of timm's features_only wrapper
    (checkpoints of earlier versions: "stages_0." for "stages.0.") loads into a ConvNeXt."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    at_224 = TimmBackbone("test_vit", img_size=224)
    file = tmp_path / "vit.safetensors"
    save_file({k: v.contiguous() for k, v in at_224.body.state_dict().items()}, str(file))
    at_160 = TimmBackbone("test_vit", img_size=160, weights=str(file))
    assert at_160.body.pos_embed.shape != at_224.body.pos_embed.shape
    torch.testing.assert_close(at_160.body.blocks[0].attn.qkv.weight, at_224.body.blocks[0].attn.qkv.weight)

    convnext = TimmBackbone("test_convnext")
    old = timm.create_model("test_convnext", features_only=True, out_indices=(-1,))
    state = {"body." + k: v for k, v in old.state_dict().items()}
    assert any(k.startswith("body.stages_0.") for k in state)
    convnext.load_state_dict(state)
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(convnext(x), old(x)[-1])


SWIN_TINY = ["backbone.name=swin_tiny_patch4_window7_224",
             "backbone.model_kwargs={embed_dim:16,depths:[1,1,1,1],num_heads:[1,1,1,1]}"]


@pytest.fixture(scope="module")
def vit_run(demo_root, tmp_path_factory):
    """One epoch of the demo through a real train.py, with a tiny ViT: the backbone's stages in its log."""
    from tests.conftest import TINY, demo_overrides, run_script

    run_dir = tmp_path_factory.mktemp("vit_run")
    res = run_script("train.py", *demo_overrides(demo_root), *TINY, *TINY_SEQUENCER, "backbone.name=test_vit",
                     "optimizer.layer_decay=0.75", f"hydra.run.dir={run_dir}")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return run_dir, res.stdout + res.stderr


@pytest.mark.slow
def test_a_tiny_vit_and_a_tiny_swin_train_one_demo_epoch_through_train_py(vit_run, demo_root, tmp_path):
    import json

    from tests.conftest import TINY, demo_overrides, run_script

    run_dir, log = vit_run
    assert "backbone test_vit: 4 stages (0: cls_token..blocks.1" in log and "4x4 tokens at 64 px" in log
    assert json.loads((run_dir / "metrics.json").read_text())["epochs"] == 1
    res = run_script("train.py", *demo_overrides(demo_root), *TINY, *TINY_SEQUENCER, *SWIN_TINY,
                     "data.image_size=72", "data.resize_size=72", f"hydra.run.dir={tmp_path}")  # 72: padded windows
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "backbone swin_tiny_patch4_window7_224: 4 stages (0: patch_embed..layers.0" in res.stdout + res.stderr
    assert json.loads((tmp_path / "metrics.json").read_text())["epochs"] == 1


@pytest.mark.slow
def test_a_vit_run_exports_to_onnx_and_is_evaluated_from_the_folder(vit_run, demo_root, tmp_path):
    """Export (safetensors + ONNX, onnxruntime checked against PyTorch by the command itself), then predict with
    both backends agrees, and eval.py from the folder gives the run's own val metrics."""
    import json

    pytest.importorskip("onnxruntime")
    from tests.test_export import cli

    run_dir, _ = vit_run
    out = tmp_path / "export"
    res = cli("deepart export", f"ckpt={run_dir}", f"out={out}", "onnx=true")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    diff = float(res.stdout.split("onnxruntime's logits differ from PyTorch's by at most ")[1].split()[0])
    assert diff <= 1e-4
    images = sorted(demo_root.rglob("*.jpg"))[:5]
    folder = tmp_path / "paintings"
    folder.mkdir()
    for p in images:
        (folder / p.name).write_bytes(p.read_bytes())
    from deepart.inference.predict import parse_args, predict

    predictions = {backend: predict(parse_args([f"ckpt={out}", f"images={folder}", "num_workers=0",
                                                f"backend={backend}", f"out_dir={tmp_path / backend}"]))["predictions"]
                   for backend in ("torch", "onnx")}
    assert len(predictions["torch"]) == len(predictions["onnx"]) > 0
    for a, b in zip(predictions["torch"], predictions["onnx"]):
        for task, p in a["predictions"].items():
            assert p["label"] == b["predictions"][task]["label"], task
            assert p["confidence"] == pytest.approx(b["predictions"][task]["confidence"], abs=1e-4), task
    res = cli("eval.py", f"ckpt={out}", "dataset=demo", f"data_root={demo_root}", "num_workers=0", "gallery=0",
              f"out_dir={tmp_path / 'eval'}", f"hydra.run.dir={tmp_path / 'eval'}")
    assert res.returncode == 0, res.stderr[-3000:]
    stored = json.loads((run_dir / "metrics.json").read_text())["best"]
    got = json.loads((tmp_path / "eval" / "metrics.json").read_text())["metrics"]
    assert got["val/style/top1"] == pytest.approx(stored["val/style/top1"], abs=1e-6)
