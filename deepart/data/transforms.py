"""Image transforms. Everything here works on PIL images and ends in a uint8 CHW tensor: normalisation
(and float conversion) happens inside the model, on the device."""
from __future__ import annotations

from PIL import Image
from torchvision.transforms import v2


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


def build_transform(train: bool, image_size: int, resize: int | None = None, square_pad: bool = False,
                    crop_scale: tuple[float, float] = (0.35, 1.0), hflip: bool = True) -> v2.Compose:
    """Train: (SquarePad) -> RandomResizedCrop -> flip. Eval: (SquarePad) -> Resize -> CenterCrop."""
    steps: list = [SquarePad()] if square_pad else []
    if train:
        steps.append(v2.RandomResizedCrop(image_size, scale=tuple(crop_scale), antialias=True))
        if hflip:
            steps.append(v2.RandomHorizontalFlip())
    else:
        steps += [v2.Resize(resize_size(image_size, resize), antialias=True), v2.CenterCrop(image_size)]
    steps.append(v2.PILToTensor())
    return v2.Compose(steps)


def transform_from_config(data_cfg, train: bool) -> v2.Compose:
    return build_transform(train, data_cfg["image_size"], data_cfg.get("resize_size"),
                           bool(data_cfg.get("square_pad", False)),
                           tuple(data_cfg.get("train_crop_scale", (0.35, 1.0))), bool(data_cfg.get("hflip", True)))


def min_decode_side(data_cfg) -> int:
    """Smallest shorter side an input must keep for the transforms to lose nothing."""
    return resize_size(data_cfg["image_size"], data_cfg.get("resize_size"))

