"""Saliency per task: Grad-CAM (pytorch-grad-cam) and guided backpropagation, for any timm backbone.

Both explain one task's logit at a time: the map for "style" differs from the map for "artist".
Images are uint8 (B, 3, H, W) batches as the data pipeline produces them; maps come back at the
image's size, (B, H, W) float32 in [0, 1].
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import timm.layers.activations as timm_acts
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.image import scale_cam_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from deepart.core.errors import ConfigError, require_choice
from deepart.models.deepartnet import DeepArtNet

#: Where Grad-CAM reads activations and gradients: the last backbone stage (the backbone's output,
#: B x C x H/32 x W/32) or the 1x1 projection after it.
CAM_LAYERS = ("backbone", "proj")


class TaskLogits(nn.Module):
    """DeepArtNet seen as a single-output classifier: float images in [0, 1] -> one task's logits (B, C).

    pytorch-grad-cam expects a model that returns one tensor; DeepArtNet returns a dict of logits per
    task plus attention, so this wrapper selects the task whose decision is explained.
    """

    def __init__(self, model: DeepArtNet, task: str):
        super().__init__()
        require_choice("task", task, list(model.heads))
        self.model, self.task = model, task

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if not images.requires_grad:  # gradients must reach the backbone even when its weights are frozen
            images = images.detach().requires_grad_(True)
        return self.model(images)["logits"][self.task].float()


@contextlib.contextmanager
def _saliency_mode(model: DeepArtNet) -> Iterator[None]:
    """Eval mode, gradients on, fp32 (a bf16 model is computed in fp32 for the pass and cast back, which is
    exact), and (on CUDA) no cuDNN: cuDNN cannot backpropagate an RNN in eval mode."""
    was_training, dtype = model.training, model.mean.dtype
    model.eval().float()
    cudnn = torch.backends.cudnn.flags(enabled=False) if model.mean.is_cuda else contextlib.nullcontext()
    try:
        with torch.enable_grad(), cudnn:
            yield
    finally:
        model.to(dtype).train(was_training)
        model.zero_grad(set_to_none=True)


def _as_float(images: torch.Tensor, model: DeepArtNet) -> torch.Tensor:
    x = images.to(model.mean.device)
    return x.float() / 255 if x.dtype == torch.uint8 else x.float()


def _targets(classes: Sequence[int] | None) -> list | None:
    return None if classes is None else [ClassifierOutputTarget(int(c)) for c in classes]


def cam_layer(model: DeepArtNet, layer: str) -> nn.Module:
    require_choice("saliency.layer", layer, CAM_LAYERS)
    if layer == "proj" and model.pooling is None:
        raise ConfigError("saliency.layer=proj: this model has no projection (sequencer=none: the heads read "
                          "texture statistics); use saliency.layer=backbone")
    return getattr(model, layer)


def grad_cam(model: DeepArtNet, images: torch.Tensor, task: str, classes: Sequence[int] | None = None,
             layer: str = "backbone") -> np.ndarray:
    """Grad-CAM of `task` for each image: (B, H, W) in [0, 1].

    `classes`: the class index explained per image (default: the predicted class).
    """
    x = _as_float(images, model)
    with _saliency_mode(model), GradCAM(TaskLogits(model, task), [cam_layer(model, layer)]) as cam:
        return cam(x, targets=_targets(classes)).astype(np.float32)  # (B, H, W)


def _cam_maps(activations: np.ndarray, grads: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """pytorch-grad-cam's GradCAM arithmetic for one target layer, step by step: channel weights = the gradients
    averaged over the grid, the weighted activations summed over channels, ReLU, each map scaled to [0, 1]
    and resized to `size` (W, H), then (its one-layer aggregation) ReLU and scaled again."""
    weights = np.mean(grads, axis=(2, 3))
    cam = np.maximum((weights[:, :, None, None] * activations).sum(axis=1), 0)
    scaled = scale_cam_image(cam, size)[:, None, :]
    return scale_cam_image(np.mean(np.maximum(scaled, 0), axis=1)).astype(np.float32)


def predict_with_cams(model: DeepArtNet, images: torch.Tensor, layer: str = "backbone",
                      pick: Callable[[str, torch.Tensor], Sequence[int]] | None = None,
                      ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The model's outputs for a batch and the Grad-CAM of every task, from one forward pass: the layers
    before `layer` run without autograd, and each task's gradients flow back only to `layer` (the maps
    need nothing deeper), one backward per task over the whole batch (the images of a batch in eval mode do
    not mix, so each image's map is the one `grad_cam` gives it alone).

    `pick(task, logits)`: the class index explained per image (default: the predicted class). Returns
    ({"logits": {task: (B, C)}, "attention": (B, h, w) | None}, detached) and {task: (B, H, W) maps in
    [0, 1]}, the maps of `grad_cam` (same arithmetic, same post-processing)."""
    x = _as_float(images, model)
    size = (x.shape[-1], x.shape[-2])
    captured: list[torch.Tensor] = []
    with _saliency_mode(model):
        with torch.no_grad():
            fmap, maps = model.backbone_maps(model.normalize(x))   # maps: the texture's stages, if any
        if layer == "backbone":
            fixed, fmap = fmap, fmap.detach().requires_grad_(True)
            maps = None if maps is None else [fmap if m is fixed else m for m in maps]  # the last stage's is fmap
            captured.append(fmap)
            handle = None
        else:
            handle = cam_layer(model, layer).register_forward_hook(lambda m, i, out: captured.append(out))
        try:
            out = model.from_backbone(fmap, None if maps is None else model.texture.stats(maps))
        finally:
            if handle is not None:
                handle.remove()
        acts = captured[0]
        activations = acts.detach().cpu().numpy()
        cams = {}
        for task, logits in out["logits"].items():
            logits = logits.float()
            classes = logits.argmax(-1).tolist() if pick is None else [int(c) for c in pick(task, logits.detach())]
            score = logits.gather(1, torch.as_tensor(classes, device=logits.device).view(-1, 1)).sum()
            (grads,) = torch.autograd.grad(score, acts, retain_graph=True)
            cams[task] = _cam_maps(activations, grads.cpu().numpy(), size)
    answer = {"logits": {t: v.detach() for t, v in out["logits"].items()},
              "attention": None if out["attention"] is None else out["attention"].detach()}
    return answer, cams


# ---------------------------------------------------------------------------------------- guided backprop
# pytorch-grad-cam's GuidedBackpropReLUModel swaps only nn.ReLU modules (timm's EfficientNets use SiLU,
# ConvNeXt GELU, the Lite models ReLU6: their gradients would pass unguided), explains one image at a
# time and one output tensor. So guided backpropagation is done here, for every elementwise activation.

def _activation_types() -> tuple[type, ...]:
    torch_acts = (nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU, nn.Hardswish, nn.Mish, nn.LeakyReLU, nn.ELU, nn.SELU,
                  nn.CELU, nn.PReLU, nn.Softplus)
    timm_extra = tuple(c for c in vars(timm_acts).values() if isinstance(c, type) and issubclass(c, nn.Module)
                       and c.__module__ == timm_acts.__name__ and "igmoid" not in c.__name__
                       and c.__name__ != "Tanh")
    return torch_acts + timm_extra  # gates (sigmoid in squeeze-excitation) keep their plain gradient


class _GuidedFn(torch.autograd.Function):
    """y = act(x); backward passes only positive gradient where the activation's slope is positive:
    grad_in = relu(act'(x) * relu(grad_out)). For ReLU this is the rule of Springenberg et al. (2015)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, act: nn.Module) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.act = act
        return act(x.clone())  # clone: timm activations may run in place

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (x,) = ctx.saved_tensors
        with torch.enable_grad():
            xr = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(ctx.act(xr.clone()), xr, grad_out.clamp(min=0))
        return grad.clamp(min=0), None


class _Guided(nn.Module):
    def __init__(self, act: nn.Module):
        super().__init__()
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _GuidedFn.apply(x, self.act)


@contextlib.contextmanager
def guided_activations(model: nn.Module) -> Iterator[int]:
    """Temporarily wrap every activation module of `model` in the guided rule; yields how many."""
    kinds = _activation_types()
    swapped: list[tuple[nn.Module, str, nn.Module]] = []
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, kinds):
                swapped.append((parent, name, child))
                setattr(parent, name, _Guided(child))
    try:
        yield len(swapped)
    finally:
        for parent, name, child in swapped:
            setattr(parent, name, child)


def guided_backprop(model: DeepArtNet, images: torch.Tensor, task: str,
                    classes: Sequence[int] | None = None) -> np.ndarray:
    """Guided-backpropagation gradients of `task`'s class score w.r.t. the image: (B, 3, H, W) float32."""
    x = _as_float(images, model).requires_grad_(True)
    with _saliency_mode(model), guided_activations(model):
        logits = model(x)["logits"][task].float()                       # (B, C)
        picked = logits.argmax(-1) if classes is None else torch.as_tensor(list(classes), device=x.device)
        logits.gather(1, picked.view(-1, 1)).sum().backward()
    return x.grad.detach().cpu().numpy().astype(np.float32)


def gradient_map(grads: np.ndarray) -> np.ndarray:
    """(B, 3, H, W) input gradients -> (B, H, W) magnitude maps in [0, 1] (max |grad| over channels)."""
    mag = np.abs(grads).max(axis=1)
    lo = mag.min(axis=(1, 2), keepdims=True)
    span = mag.max(axis=(1, 2), keepdims=True) - lo
    return np.where(span > 0, (mag - lo) / np.maximum(span, 1e-12), 0.0).astype(np.float32)


def gradient_image(grads: np.ndarray) -> np.ndarray:
    """(3, H, W) gradients -> a viewable uint8 (H, W, 3) picture (zero = grey, spread by 3 std)."""
    g = grads.transpose(1, 2, 0)
    g = (g - g.mean()) / (g.std() + 1e-12) * 0.15 + 0.5
    return (np.clip(g, 0, 1) * 255).astype(np.uint8)
