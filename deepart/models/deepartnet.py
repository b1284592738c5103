"""DeepArtNet: backbone -> 1x1 projection -> grid tokens -> encoder -> pooling -> one head per task."""
from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from deepart.core.config import build
from deepart.core.errors import ConfigError
from deepart.models.backbone import Backbone
from deepart.models.encoders import Encoder
from deepart.models.pooling import Pooling
from deepart.models.texture import TextureStats, build_texture

#: Keys of `data` that define how an image becomes the model's input at evaluation time.
INPUT_KEYS = ("image_size", "resize_size", "square_pad")


class TaskHead(nn.Sequential):
    """Linear(dim, hidden) -> ReLU -> Dropout -> Linear(hidden, num_classes); hidden=0: Linear(dim, num_classes)."""

    def __init__(self, dim: int, hidden: int, num_classes: int, dropout: float):
        if hidden:
            super().__init__(nn.Linear(dim, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
                             nn.Linear(hidden, num_classes))
        else:
            super().__init__(nn.Linear(dim, num_classes))


class DeepArtNet(nn.Module):
    """Multi-task painting classifier.

    forward(images) takes uint8 (B,3,H,W) batches (or floats in [0,1]); normalisation with the
    backbone's mean/std happens inside, on the model's device. Returns
    {"logits": {task: (B, C_task)}, "attention": (B, h, w) or None} where h x w is the token grid
    (7x7 at 224 px); attention is None when the pooling has no weights (mean pooling) or there is no sequencer.

    `texture` (deepart.models.texture): statistics of several backbone stages, joined with the sequencer's context
    before the heads. With no `pooling` (sequencer=none) the heads read the texture statistics alone.

    `input_cfg` says how an image becomes an input (like timm's `pretrained_cfg`): image_size,
    resize_size and square_pad of the eval transform, and the backbone's mean / std (0..1 scale).
    """

    def __init__(self, backbone: Backbone, encoder: Encoder | None, pooling: Pooling | None,
                 tasks: dict[str, list[str]], dim: int | None = 512, head_hidden: int = 256,
                 head_dropout: float = 0.4, input_cfg: dict[str, Any] | None = None,
                 texture: TextureStats | None = None):
        super().__init__()
        if pooling is None and (encoder is not None or texture is None):
            raise ConfigError("sequencer=none needs texture statistics for the heads to read (texture=meanstd or "
                              "texture=gram), and no sequencer.encoder" if encoder is None else
                              "sequencer.encoder is set but sequencer.pooling is null; set both, or neither")
        self.backbone = backbone
        # dim=None: no projection, the backbone's channels are the tokens (a plain pooled-backbone model)
        self.proj = nn.Conv2d(backbone.out_channels, dim, kernel_size=1) if dim and pooling is not None \
            else nn.Identity()
        dim = dim or backbone.out_channels
        self.encoder = encoder
        self.pooling = pooling
        self.texture = texture
        out_dim = (encoder.out_dim if encoder is not None else dim) if pooling is not None else 0
        out_dim += texture.out_dim if texture is not None else 0
        self.heads = nn.ModuleDict({t: TaskHead(out_dim, head_hidden, len(c), head_dropout)
                                    for t, c in tasks.items()})
        self.tasks = {t: list(c) for t, c in tasks.items()}
        self.input_cfg = {"image_size": 224, "resize_size": None, "square_pad": False, **(input_cfg or {}),
                          "mean": tuple(backbone.mean), "std": tuple(backbone.std)}
        self.register_buffer("mean", torch.tensor(backbone.mean).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(backbone.std).view(1, 3, 1, 1) * 255)
        self.frozen_norms: list[nn.Module] = []
        # per-task temperatures of the checkpoint / export folder it was loaded from (plain containers, not
        # weights: the Predictor divides the logits by them); None = never calibrated
        self.calibration: dict[str, Any] | None = None

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (or [0, 1] float) images -> normalised, in the dtype of the model's weights (fp32, or bf16 for
        a model cast to bf16; under autocast the convolutions then run in bf16 themselves)."""
        x = images.float() if images.dtype == torch.uint8 else images.float() * 255
        return ((x - self.mean) / self.std).to(self.mean.dtype)

    def forward(self, images: torch.Tensor) -> dict[str, Any]:
        out = self.features(images)
        return {"logits": out["logits"], "attention": out["attention"]}

    def features(self, images: torch.Tensor) -> dict[str, Any]:
        """forward's outputs and two vectors computed on the way (the embeddings of deepart.inference.index):
        "pooled" (B, C) the backbone's feature map averaged over the grid, "context" (B, out_dim) what the heads
        read (the attention context vector, joined with the texture statistics where the model has them)."""
        fmap, maps = self.backbone_maps(self.normalize(images))   # keeps the input's memory format
        return self.from_backbone(fmap, None if maps is None else self.texture.stats(maps))

    def backbone_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        """The backbone's last map (B, C, h, w) of normalised images and, for a model with texture statistics,
        the maps of the texture's stages from the same pass (the last stage's is the last map itself)."""
        if self.texture is None:
            return self.backbone(x), None
        taps = dict.fromkeys(self.texture.stages)
        fmap = self.backbone(x, taps=taps)
        return fmap, [taps[k] for k in self.texture.stages]

    def from_backbone(self, fmap: torch.Tensor | None, texture: torch.Tensor | None = None) -> dict[str, Any]:
        """`features` from the backbone's feature map (B, C, h, w) on, and the raw texture statistics (B, raw_dim)
        where the model has them: what runs on features computed once for a frozen backbone
        (deepart.training.feature_cache; `fmap` may be None there for a model without a sequencer)."""
        parts, weights = [], None
        if self.pooling is not None:
            feats = self.proj(fmap)                        # (B, dim, h, w)
            b, _, h, w = feats.shape
            tokens = feats.flatten(2).transpose(1, 2)      # (B, h*w, dim)
            if self.encoder is not None:
                tokens = self.encoder(tokens, (h, w))      # (B, h*w, out_dim)
            context, weights = self.pooling(tokens)        # (B, out_dim), (B, h*w) | None
            parts.append(context)
            if weights is not None:
                weights = weights.view(b, h, w)
        if self.texture is not None:
            parts.append(self.texture(texture).to(parts[0].dtype if parts else self.mean.dtype))
        context = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        logits = {t: head(context) for t, head in self.heads.items()}
        return {"logits": logits, "attention": weights, "context": context,
                "pooled": None if fmap is None else fmap.mean(dim=(2, 3))}

    def train(self, mode: bool = True) -> DeepArtNet:
        super().train(mode)
        for module in self.frozen_norms:  # frozen BatchNorm keeps its running statistics
            module.eval()
        return self


def build_model(cfg: DictConfig, tasks: dict[str, list[str]], pretrained: bool | None = None) -> DeepArtNet:
    """DeepArtNet from the composed config (`backbone`, `sequencer`, `model` and the eval-transform keys
    of `data`) and the task classes.

    `pretrained=False` skips any weight download or weights file (used when a checkpoint supplies them).
    """
    backbone_cfg = cfg.backbone
    if pretrained is False:
        backbone_cfg = OmegaConf.merge(backbone_cfg, {"pretrained": False, "weights": None})
    backbone = build(backbone_cfg, **_image_size_kwarg(backbone_cfg, cfg.data.get("image_size")))
    dim = cfg.model.dim
    tokens = dim or backbone.out_channels
    encoder = build(cfg.sequencer.encoder, dim=tokens) if cfg.sequencer.encoder is not None else None
    _check_contract(encoder, Encoder, "sequencer.encoder", cfg.sequencer.encoder)
    pooling = build(cfg.sequencer.pooling, dim=encoder.out_dim if encoder is not None else tokens) \
        if cfg.sequencer.get("pooling") is not None else None
    _check_contract(pooling, Pooling, "sequencer.pooling", cfg.sequencer.pooling)
    if (cfg.get("texture") or {}).get("kind", "none") != "none" and not hasattr(backbone, "stage_channels"):
        raise ConfigError(f"texture={cfg.texture.get('kind')}: backbone {type(backbone).__name__} does not say its "
                          "stages' channels (deepart.models.backbone.Backbone.stage_channels); use texture=none")
    texture = build_texture(cfg.get("texture"), backbone)
    input_cfg = {key: cfg.data.get(key) for key in INPUT_KEYS if key in cfg.data}
    return DeepArtNet(backbone, encoder, pooling, tasks, dim=dim, head_hidden=cfg.model.head_hidden,
                      head_dropout=cfg.model.head_dropout, input_cfg=input_cfg, texture=texture)


def _image_size_kwarg(node: DictConfig, image_size: int | None) -> dict[str, Any]:
    """`img_size` for a backbone class that takes it (models with a fixed input size are built for the data's
    image size), nothing for one that does not (a user's own `backbone._target_`)."""
    import inspect

    from hydra.utils import get_object

    if not image_size or "img_size" in node:
        return {}
    try:
        accepts = "img_size" in inspect.signature(get_object(node._target_)).parameters
    except (ImportError, AttributeError, ValueError, TypeError):
        return {}  # Hydra's own error names the target when it is built
    return {"img_size": int(image_size)} if accepts else {}


def _check_contract(part: Any, contract: type, key: str, node: Any) -> None:
    """A built encoder / pooling must be an nn.Module with what `contract` (a Protocol) lists."""
    if part is not None and not (isinstance(part, nn.Module) and isinstance(part, contract)):
        raise ConfigError(f"{key}._target_={node._target_}: not an nn.Module with what deepart.models."
                          f"{contract.__module__.rsplit('.', 1)[-1]}.{contract.__name__} lists; point it at "
                          f"such a class")
