"""Reading paintings robustly: any mode becomes RGB, huge JPEGs decode at reduced size, bad files raise
`ImageLoadError` (the dataset turns that into a skipped, counted sample)."""
from __future__ import annotations

import io
import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps

from deepart.data.rowstore import parse_row_ref, read_image_bytes

# WikiArt has paintings of tens of megapixels: the decompression-bomb guard would refuse them.
# JPEGs are decoded at reduced size (draft mode) instead, so the guard is not needed for them; other
# formats cannot be decoded partially and are refused above MAX_DECODE_PIXELS (see `load_rgb`).
Image.MAX_IMAGE_PIXELS = None
ImageFile.LOAD_TRUNCATED_IMAGES = False
#: largest non-JPEG image decoded in full (Pillow's own refusal threshold: 2 x 89,478,485 pixels)
MAX_DECODE_PIXELS = 2 * 89_478_485


class ImageLoadError(Exception):
    """An image file could not be decoded."""


def to_rgb(img: Image.Image) -> Image.Image:
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


def load_rgb(path: str | Path, min_side: int | None = None, max_pixels: float | None = None) -> Image.Image:
    """Decode an image file as RGB.

    `min_side`: the caller needs the shorter side to be at least this many pixels; JPEGs much larger
    than that are decoded at 1/2, 1/4 or 1/8 scale (never below `min_side`), which is fast and light.
    Other formats (PNG, TIFF, ...) are decoded in full, then reduced by an integer factor; above
    `max_pixels` (default MAX_DECODE_PIXELS) they are refused (a full decode would need gigabytes).
    Raises ImageLoadError for missing, empty, truncated, oversized non-JPEG or undecodable files.
    """
    max_pixels = MAX_DECODE_PIXELS if max_pixels is None else max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as img:
                w, h = img.size
                scale = min(w, h) / min_side if min_side else 1.0
                if img.format == "JPEG":
                    if scale >= 2:
                        img.draft("RGB", (max(1, int(w / scale)), max(1, int(h / scale))))
                elif w * h > max_pixels:
                    raise ImageLoadError(f"{path}: {w}x{h} {img.format} image is too large to decode "
                                         f"(> {max_pixels:.0f} pixels; only JPEGs decode at reduced size): "
                                         f"convert it to JPEG or shrink it")
                img.load()
                fmt = img.format
                img = to_rgb(ImageOps.exif_transpose(img) or img)
                return img.reduce(int(scale)) if fmt != "JPEG" and scale >= 2 else img
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageLoadError(f"{path}: {exc}") from exc


def load_image(path: str | Path, min_side: int | None = None) -> Image.Image:
    """`load_rgb` for an image file or for a parquet row (`<shard>.parquet/<row>`, deepart.data.rowstore)."""
    ref = parse_row_ref(path)
    if ref is None:
        return load_rgb(path, min_side)
    try:
        data = read_image_bytes(*ref)
    except (OSError, IndexError, ValueError) as exc:
        raise ImageLoadError(f"{path}: {exc}") from exc
    if not data:
        raise ImageLoadError(f"{path}: the row has no image bytes")
    try:
        return load_rgb(io.BytesIO(data), min_side)
    except ImageLoadError as exc:
        cause = re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "", str(exc.__cause__ or exc))
        raise ImageLoadError(f"{path}: the image bytes do not decode ({cause})") from exc


def source_file(path: str | Path) -> Path:
    """The file that holds an image: the image file itself, or the parquet shard of a row."""
    ref = parse_row_ref(path)
    return Path(ref[0]) if ref else Path(path)
