"""Grad-CAM and guided backpropagation: image-sized, non-constant maps for every backbone option, per
task, and a map that finds a planted feature."""
import numpy as np
import pytest
import torch

from deepart.core.config import group_options
from deepart.models.deepartnet import build_model
from deepart.vis.saliency import grad_cam, gradient_map, guided_activations, guided_backprop
from tests.conftest import TINY, TINY_SEQUENCER, compose_config

TASKS = {"style": ["a", "b", "c"], "artist": ["x", "y", "z", "w"]}
SMALL = [*TINY, *TINY_SEQUENCER]                                          # test_efficientnet backbone
ANY_BACKBONE = [o for o in SMALL if not o.startswith("backbone.name")]   # for backbone=<option>



def _images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)


# One backbone option per activation family (ReLU, SiLU, GELU, ReLU6); the other options share the code path.
FAMILIES = ["resnet18", "efficientnet_b0", "convnext_tiny", "tf_efficientnet_lite0"]


def test_families_are_backbone_options():
    assert set(FAMILIES) <= set(group_options("backbone"))


@pytest.mark.parametrize("backbone", FAMILIES)
def test_maps_have_the_image_size_and_vary(backbone):
    torch.manual_seed(0)
    model = build_model(compose_config([*ANY_BACKBONE, f"backbone={backbone}", "backbone.pretrained=false"]), TASKS)
    images = _images(2, 64)
    with guided_activations(model) as n_swapped:
        pass
    assert n_swapped > 0  # ReLU, ReLU6, SiLU or GELU: every backbone's activations are guided
    cam = grad_cam(model, images, "style")
    assert cam.shape == (2, 64, 64) and np.isfinite(cam).all() and cam.min() >= 0 and cam.max() <= 1 + 1e-6
    style = guided_backprop(model, images, "style")
    artist = guided_backprop(model, images, "artist")
    assert style.shape == (2, 3, 64, 64)
    assert gradient_map(style).shape == (2, 64, 64) and gradient_map(style)[0].std() > 0.01
    assert not np.allclose(gradient_map(style), gradient_map(artist), atol=1e-3)  # each task has its own map
    assert all(p.grad is None for p in model.parameters())


def test_guided_backprop_differs_from_the_plain_gradient():
    torch.manual_seed(0)
    model = build_model(compose_config(SMALL), TASKS).eval()
    images = _images(1, 64)
    guided = guided_backprop(model, images, "style", classes=[0])
    x = (images.float() / 255).requires_grad_(True)
    model(x)["logits"]["style"][0, 0].backward()
    assert not np.allclose(gradient_map(guided), gradient_map(x.grad.numpy()), atol=1e-3)
    model.zero_grad()


def _corner_batch(n: int, size: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Dark noise; label 1 iff a bright square sits in the top-left corner (label 0: no square)."""
    q = size // 4
    x = torch.randint(0, 60, (n, 3, size, size), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 2, (n,), generator=g)
    x[y == 1, :, :q, :q] = 255
    return x, y


def _train_corner_model(overrides: list[str]):
    torch.manual_seed(0)
    model = build_model(compose_config(overrides), {"corner": ["none", "top_left"]})
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(60):
        x, y = _corner_batch(16, 96, g)
        loss = torch.nn.functional.cross_entropy(model(x)["logits"]["corner"], y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    x, y = _corner_batch(32, 96, g)
    model.eval()
    with torch.no_grad():
        assert (model(x)["logits"]["corner"].argmax(-1) == y).float().mean() >= 0.9
    return model, x[y == 1][:6]


def _assert_peaks_top_left(maps: np.ndarray) -> None:
    assert maps.shape[1:] == (96, 96) and maps.std(axis=(1, 2)).min() > 0.05
    for m in maps:  # the top-left quadrant holds the square: it carries the most saliency
        quadrants = [m[:48, :48].mean(), m[:48, 48:].mean(), m[48:, :48].mean(), m[48:, 48:].mean()]
        assert int(np.argmax(quadrants)) == 0, quadrants


def test_grad_cam_peaks_on_a_planted_feature():
    # Mean pooling over the token grid (the CNN baseline). With the BiLSTM sequencer the last stage's
    # Grad-CAM does not localise this feature (docs/interpretability.md); guided backprop does, below.
    model, x = _train_corner_model([o for o in SMALL if not o.startswith("sequencer.")] + ["sequencer=pool"])
    _assert_peaks_top_left(grad_cam(model, x, "corner", classes=[1] * len(x)))


def test_guided_backprop_peaks_on_a_planted_feature():
    model, x = _train_corner_model(SMALL)  # the reference BiLSTM + attention model
    _assert_peaks_top_left(gradient_map(guided_backprop(model, x, "corner", classes=[1] * len(x))))
