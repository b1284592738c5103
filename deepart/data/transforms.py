"""Image transforms. Everything here works on PIL images and ends in a uint8 CHW tensor: normalisation
(and float conversion) happens inside the model, on the device."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from PIL import Image
from torchvision.transforms import v2

from deepart.core.config import MAX_MAGNITUDE


class SquarePad:
    """Pad the shorter side with a constant colour so the image becomes square (aspect ratio kept)."""

    def __init__(self, fill: int = 0):
        self.fill = fill

    def __call__(self, img: Image.Image) -> Image.Image:
        w, h = img.size
        if w == h:
            return img
        side = max(w, h)
        canvas = Image.new(img.mode, (side, side), (self.fill,) * len(img.getbands()))
        canvas.paste(img, ((side - w) // 2, (side - h) // 2))
        return canvas

    def __repr__(self) -> str:
        return f"SquarePad(fill={self.fill})"


def resize_size(image_size: int, resize: int | None) -> int:
    """Shorter side before the center crop (ImageNet convention 256 -> 224 when not given)."""
    return resize or int(round(image_size / 0.875))


#: What random erasing fills a box with: the ImageNet mean colour (uint8), what a 0 fill is after normalisation.
ERASE_FILL = [124, 116, 104]


def policy_transform(policy: str, magnitude: int = 9, num_ops: int = 2) -> list:
    """The steps of an `augment.policy` (core.config.AUGMENT_POLICIES): none (no step), RandAugment (`num_ops`
    operations of strength `magnitude`) or TrivialAugment (one operation of random strength per image)."""
    if policy == "randaugment":
        return [v2.RandAugment(num_ops=num_ops, magnitude=magnitude, num_magnitude_bins=MAX_MAGNITUDE + 1)]
    if policy == "trivialaugment":
        return [v2.TrivialAugmentWide(num_magnitude_bins=MAX_MAGNITUDE + 1)]
    return []


def build_transform(train: bool, image_size: int, resize: int | None = None, square_pad: bool = False,
                    crop_scale: tuple[float, float] = (0.35, 1.0), hflip: bool = True,
                    augment: Mapping[str, Any] | None = None) -> v2.Compose:
    """Train: (SquarePad) -> RandomResizedCrop -> flip -> (policy) -> (random erasing). Eval: (SquarePad) ->
    Resize -> CenterCrop. `augment` holds the training-only keys of the `augment` config (policy, magnitude,
    num_ops, erasing); every random draw comes from torch's RNG, which the dataset seeds per sampled item."""
    steps: list = [SquarePad()] if square_pad else []
    if train:
        steps.append(v2.RandomResizedCrop(image_size, scale=tuple(crop_scale), antialias=True))
        if hflip:
            steps.append(v2.RandomHorizontalFlip())
        if augment is not None:
            steps += policy_transform(augment["policy"], augment["magnitude"], augment["num_ops"])
    else:
        steps += [v2.Resize(resize_size(image_size, resize), antialias=True), v2.CenterCrop(image_size)]
    steps.append(v2.PILToTensor())
    erasing = augment["erasing"] if train and augment is not None else 0.0
    if erasing:
        steps.append(v2.RandomErasing(p=erasing, value=ERASE_FILL))
    return v2.Compose(steps)


def transform_from_config(data_cfg, train: bool, augment: Mapping[str, Any] | None = None) -> v2.Compose:
    """The transform of `data_cfg` (a data config, or for evaluation a model's input config: image_size,
    resize_size, square_pad); a training transform also applies the `augment` config (None: none)."""
    if not train:
        return build_transform(False, data_cfg["image_size"], data_cfg.get("resize_size"),
                               bool(data_cfg.get("square_pad")))
    return build_transform(True, data_cfg["image_size"], data_cfg["resize_size"], bool(data_cfg["square_pad"]),
                           tuple(data_cfg["train_crop_scale"]), bool(data_cfg["hflip"]), augment)


def min_decode_side(data_cfg) -> int:
    """Smallest shorter side an input must keep for the transforms to lose nothing."""
    return resize_size(data_cfg["image_size"], data_cfg.get("resize_size"))

