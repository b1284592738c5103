"""Reading paintings robustly: any mode becomes RGB, huge JPEGs decode at reduced size, bad files raise
`ImageLoadError` (the dataset turns that into a skipped, counted sample)."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps

# WikiArt has paintings of tens of megapixels: the decompression-bomb guard would refuse them.
# They are decoded at reduced size (JPEG draft mode) instead, so the guard is not needed here.
Image.MAX_IMAGE_PIXELS = None
ImageFile.LOAD_TRUNCATED_IMAGES = False


class ImageLoadError(Exception):
    """An image file could not be decoded."""


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        hi = arr.max() if arr.size else 0
        scale = 255.0 / (65535.0 if hi > 255 else max(hi, 1.0))
        return Image.fromarray(np.clip(arr * scale, 0, 255).astype(np.uint8)).convert("RGB")
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(arr)
        return Image.fromarray(arr.astype(np.uint8)).convert("RGB")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, img).convert("RGB")
    return img.convert("RGB")


def load_rgb(path: str | Path, min_side: int | None = None) -> Image.Image:
    """Decode an image file as RGB.

    `min_side`: the caller needs the shorter side to be at least this many pixels; JPEGs much larger
    than that are decoded at 1/2, 1/4 or 1/8 scale (never below `min_side`), which is fast and light.
    Raises ImageLoadError for missing, empty, truncated or undecodable files.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as img:
                if min_side and img.format == "JPEG":
                    w, h = img.size
                    scale = min(w, h) / min_side
                    if scale >= 2:
                        img.draft("RGB", (max(1, int(w / scale)), max(1, int(h / scale))))
                img.load()
                img = ImageOps.exif_transpose(img) or img
                return _to_rgb(img)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageLoadError(f"{path}: {exc}") from exc
