"""The `texture` group: statistics of several backbone stages joined with (or instead of) the sequencer's context,
for a CNN, a hierarchical and a plain-ViT family, and their place in the frozen-feature cache."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from deepart.core.errors import ConfigError
from deepart.core.runtime import Runtime
from deepart.data.loaders import load_table
from deepart.models.deepartnet import build_model
from deepart.training.feature_cache import FEATURES, TEXTURE, FromBackbone, cached_features
from deepart.training.freezing import apply_freezing
from tests.conftest import TINY, compose_config, demo_overrides, tiny_sequencer

TASKS = {"style": ["a", "b", "c"], "genre": ["x", "y"]}
#: one tiny model per family: (overrides, image size); stages of each are those of timm's feature_info
FAMILIES = {
    "cnn": (["backbone.name=test_efficientnet"], 64),
    "hierarchical": (["backbone=swin_tiny", "backbone.name=swin_tiny_patch4_window7_224",
                      "+backbone.model_kwargs={embed_dim:16,depths:[1,1,1,1],num_heads:[1,1,1,1]}"], 64),
    "plain_vit": (["backbone=vit_small", "backbone.name=test_vit"], 64),
}


def tiny(family: str, *extra: str):
    overrides, size = FAMILIES[family]
    sequencer = next((e.split("=", 1)[1] for e in extra if e.startswith("sequencer=")), "bilstm")
    cfg = compose_config([*TINY, *overrides, f"data.image_size={size}", f"data.resize_size={size}",
                          *tiny_sequencer(sequencer), *extra])
    return build_model(cfg, TASKS).eval(), size


def expected_size(channels: list[int], kind: str, k: int) -> int:
    return sum(2 * c + (min(k, c) * (min(k, c) + 1) // 2 if kind == "gram" else 0) for c in channels)


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("kind,sequencer", [("gram", "bilstm"), ("meanstd", "none"), ("gram", "none")])
def test_shapes_and_feature_sizes(family, kind, sequencer):
    model, size = tiny(family, f"texture={kind}", f"sequencer={sequencer}", "texture.gram_channels=20")
    backbone = model.backbone
    stages = [backbone.num_stages - 3, backbone.num_stages - 2, backbone.num_stages - 1]  # the default: last 3
    assert model.texture.stages == stages
    channels = [backbone.stage_channels[s] for s in stages]
    assert model.texture.out_dim == expected_size(channels, kind, 20)
    context = 0 if sequencer == "none" else model.encoder.out_dim
    assert model.heads["style"][0].in_features == context + model.texture.out_dim

    images = torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8)
    out = model.features(images)
    assert out["logits"]["style"].shape == (2, 3) and out["logits"]["genre"].shape == (2, 2)
    assert out["context"].shape == (2, context + model.texture.out_dim)
    if sequencer == "none":
        assert out["attention"] is None
    else:  # the attention map is still there with a sequencer
        h, w = backbone.grid(size)
        assert out["attention"].shape == (2, h, w)

    # the taps are the stages' own maps: the same as the backbone run without taps for the last one, with the
    # channels each stage reports
    taps = dict.fromkeys(stages)
    x = model.normalize(images)
    fmap = backbone(x, taps=taps)
    assert torch.equal(fmap, backbone(x))
    assert [taps[s].shape[1] for s in stages] == channels
    assert torch.equal(taps[stages[-1]], fmap)


def test_statistics_are_the_stage_means_deviations_and_gram():
    model, _ = tiny("cnn", "texture=gram", "texture.gram_channels=5", "texture.stages=[2,4]")
    maps = [torch.randn(2, c, 4, 3) for c in (model.backbone.stage_channels[2], model.backbone.stage_channels[4])]
    raw = model.texture.stats(maps)
    offset = 0
    for fmap in maps:
        c = fmap.shape[1]
        f = fmap.flatten(2)
        mean, std = f.mean(2), f.std(2, unbiased=False)
        gram = torch.einsum("bin,bjn->bij", f[:, :5], f[:, :5]) / f.shape[2]
        rows, cols = torch.triu_indices(5, 5)
        for part in (mean, std, gram[:, rows, cols]):
            assert torch.allclose(raw[:, offset:offset + part.shape[1]], part, atol=1e-3)
            offset += part.shape[1]
        assert c >= 5
    assert offset == raw.shape[1] == model.texture.raw_dim


def test_gradients_reach_the_tapped_stages():
    """With sequencer=none the heads read the statistics alone: the earlier stages get their gradient through
    them (the texture is not a detached side branch)."""
    model, size = tiny("cnn", "texture=gram", "sequencer=none")
    model.train()
    out = model(torch.randint(0, 256, (4, 3, size, size), dtype=torch.uint8))
    out["logits"]["style"].sum().backward()
    stage_of = model.backbone.stage_of()
    first_tapped = model.texture.stages[0]
    grads = [p.grad for name, p in model.backbone.named_parameters() if stage_of[name] == first_tapped]
    assert grads and any(g is not None and g.abs().sum() > 0 for g in grads)
    assert all(p.grad is not None for p in model.texture.parameters())


def test_configuration_errors_name_the_key():
    with pytest.raises(ConfigError, match="texture.stages"):
        tiny("cnn", "texture=meanstd", "texture.stages=[7]")
    with pytest.raises(ConfigError, match="sequencer=none needs texture"):
        tiny("cnn", "sequencer=none")
    with pytest.raises(ConfigError, match="texture.kind"):
        tiny("cnn", "texture=gram", "texture.kind=fourier")


def test_texture_none_is_the_reference_model():
    model, _ = tiny("cnn")
    assert model.texture is None
    assert model.heads["style"][0].in_features == model.encoder.out_dim


# ------------------------------------------------------------------------------------------------ the feature cache
@pytest.mark.parametrize("sequencer", ["none", "bilstm"])
def test_the_cache_holds_and_reuses_the_statistics(demo_root, tmp_path, caplog, sequencer):
    """A frozen backbone's cache keeps the raw statistics (texture.npy: (N, raw_dim), no intermediate map) beside
    the last map only when a sequencer reads it; the model on the cache gives what it gives on the images; a
    second build of the same inputs reuses the folder."""
    cfg = compose_config([*demo_overrides(demo_root), *TINY, "texture=gram", f"sequencer={sequencer}",
                          *tiny_sequencer(sequencer), "texture.gram_channels=8", "phase.freeze=[backbone]",
                          "trainer.feature_cache=true"])
    table = load_table(cfg.data)
    model = build_model(cfg, table.tasks).eval()
    apply_freezing(model, ["backbone"], 0)
    rt = Runtime.from_config(cfg.trainer)
    with caplog.at_level(logging.INFO, logger="deepart"):
        folder = cached_features(cfg, model, table, "val", rt, tmp_path, chunk_size=16, batch_size=8, bar=False)
        again = cached_features(cfg, model, table, "val", rt, tmp_path, chunk_size=16, batch_size=8, bar=False)
    assert again == folder and "feature cache: reusing" in caplog.text
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["complete"] and meta["texture"]["kind"] == "gram"
    stats = np.load(folder / TEXTURE)
    n = len(table.frame("val"))
    assert stats.shape == (n, model.texture.raw_dim) == (n, meta["texture_dim"])
    assert (folder / FEATURES).exists() == (sequencer != "none")

    from deepart.data.loaders import eval_loader
    from deepart.training.feature_cache import FeatureDataset

    dataset = FeatureDataset(folder, table, "val")
    net = FromBackbone(model, dataset.layout)
    images = next(iter(eval_loader(table, cfg.data, n, "cpu", workers=0)))
    with torch.no_grad():
        from_images = model(images["image"])["logits"]
        packed = torch.stack([dataset[i]["image"] for i in range(n)])
        from_cache = net(packed)["logits"]
    for task in table.tasks:
        assert torch.allclose(from_images[task], from_cache[task], atol=1e-4)


def test_a_cache_of_other_texture_options_is_another_folder(tiny_cfg, tmp_path):
    table = None
    folders = []
    for extra in (["texture=none", "sequencer=bilstm"], ["texture=gram"], ["texture=gram", "texture.stages=[-1]"],
                  ["texture=meanstd"]):
        cfg = tiny_cfg(*extra, "phase.freeze=[backbone]")
        table = table or load_table(cfg.data)
        model = build_model(cfg, table.tasks).eval()
        from deepart.training.feature_cache import cache_folder, cache_key

        folders.append(cache_folder(tmp_path, cache_key(cfg, model, table, "val", Runtime.from_config(cfg.trainer))))
    assert len(set(folders)) == len(folders)


def test_learned_gram_reduction_is_never_cached(tiny_cfg, caplog):
    from deepart.training.feature_cache import use_feature_cache

    cfg = tiny_cfg("texture=gram", "texture.gram_reduce=learned", "phase.freeze=[backbone]",
                   "data.hflip=false", "data.train_crop_scale=[1.0,1.0]")
    table = load_table(cfg.data)
    model = build_model(cfg, table.tasks)
    apply_freezing(model, ["backbone"], 0)
    with caplog.at_level(logging.INFO, logger="deepart"):
        assert not use_feature_cache(cfg, model, "3", distributed=False)
    assert "gram_reduce=learned" in caplog.text
    cfg.trainer.feature_cache = True
    with pytest.raises(ConfigError, match="gram_reduce=learned"):
        use_feature_cache(cfg, model, "3", distributed=False)


def test_a_texture_model_exports_to_onnx(tmp_path):
    """The stage taps and the statistics export: onnxruntime gives the model's logits."""
    pytest.importorskip("onnxruntime")
    from deepart.inference.onnxrt import OnnxModel, export_onnx

    model, size = tiny("cnn", "texture=gram", "sequencer=none", "texture.gram_channels=8")
    export_onnx(model, tmp_path / "model.onnx")
    runner = OnnxModel(tmp_path / "model.onnx", model.tasks, model.input_cfg)
    images = torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8)
    with torch.no_grad():
        expected = model(images)["logits"]
    got = runner(images)["logits"]
    for task in TASKS:
        assert np.allclose(np.asarray(got[task]), expected[task].numpy(), atol=1e-4)


@pytest.mark.parametrize("sequencer", ["bilstm", "none"])
def test_saliency_of_a_texture_model(sequencer):
    """Grad-CAM through the texture statistics: the web page's one-pass maps equal pytorch-grad-cam's per task, and
    a model without a projection refuses saliency.layer=proj with one line."""
    from deepart.vis.saliency import grad_cam, predict_with_cams

    model, size = tiny("cnn", "texture=gram", f"sequencer={sequencer}", "texture.gram_channels=8")
    images = torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8)
    out, cams = predict_with_cams(model, images)
    with torch.no_grad():
        reference = model(images)["logits"]
    for task in TASKS:
        torch.testing.assert_close(out["logits"][task], reference[task], rtol=1e-5, atol=1e-5)
        classes = reference[task].argmax(-1).tolist()
        np.testing.assert_allclose(cams[task], grad_cam(model, images, task, classes=classes), atol=1e-4)
    if sequencer == "none":
        with pytest.raises(ConfigError, match="saliency.layer=proj"):
            grad_cam(model, images, "style", layer="proj")
