"""Every kind of awkward image file, made here: bad ones raise ImageLoadError, odd modes become RGB,
huge ones decode at reduced size."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepart.data import images
from deepart.data.images import ImageLoadError, load_rgb
from tests.conftest import REPO


def noise(size=(64, 48), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)


def make_bad_images(folder: Path) -> dict[str, Path]:
    """Three files that cannot be read: empty, not an image, a JPEG cut in half."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "text.jpg").write_bytes(b"this is not an image at all" * 10)
    Image.fromarray(noise((200, 200))).save(folder / "full.jpg", quality=95)
    data = (folder / "full.jpg").read_bytes()
    (folder / "full.jpg").unlink()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    return {p.stem: p for p in folder.iterdir()}


def make_odd_images(folder: Path) -> dict[str, Path]:
    """Readable files in every mode WikiArt-like collections contain."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    Image.new("L", (40, 30), 77).save(out.setdefault("gray", folder / "gray.jpg"))
    Image.new("CMYK", (40, 30), (0, 255, 255, 0)).save(out.setdefault("cmyk", folder / "cmyk.jpg"))  # red
    pal = Image.new("P", (40, 30), 0)
    pal.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    pal.paste(1, (0, 0, 20, 30))
    pal.save(out.setdefault("palette", folder / "palette.png"), transparency=0)  # right half transparent
    rgba = Image.new("RGBA", (40, 30), (0, 0, 255, 255))
    rgba.paste((0, 0, 0, 0), (20, 0, 40, 30))
    rgba.save(out.setdefault("rgba", folder / "rgba.png"))
    gray16 = np.full((30, 40), 65535 // 2, dtype=np.uint16)
    Image.fromarray(gray16).save(out.setdefault("gray16", folder / "gray16.png"))
    Image.fromarray(noise()).save(out.setdefault("rgb_tiff", folder / "rgb.tiff"))
    return out


@pytest.mark.parametrize("kind", ["zero", "text", "truncated"])
def test_bad_files_raise_image_load_error(tmp_path, kind):
    path = make_bad_images(tmp_path)[kind]
    with pytest.raises(ImageLoadError, match=path.name):
        load_rgb(path, 32)


def test_missing_file_raises_image_load_error(tmp_path):
    with pytest.raises(ImageLoadError):
        load_rgb(tmp_path / "nope.jpg")


def test_every_mode_becomes_rgb(tmp_path):
    files = make_odd_images(tmp_path)
    got = {k: load_rgb(p) for k, p in files.items()}
    assert all(img.mode == "RGB" and img.size == (40, 30) or k == "rgb_tiff" for k, img in got.items())
    px = {k: np.asarray(img) for k, img in got.items()}
    assert (px["gray"] == 77).all()
    assert px["cmyk"][0, 0, 0] > 200 and px["cmyk"][0, 0, 1:].max() < 50
    assert px["palette"][0, 0].tolist() == [10, 200, 30] and px["palette"][0, 39].tolist() == [255, 255, 255]
    assert px["rgba"][0, 0].tolist() == [0, 0, 255] and px["rgba"][0, 39].tolist() == [255, 255, 255]
    assert abs(int(px["gray16"][0, 0, 0]) - 127) <= 1  # 16-bit scaled to 8-bit, not clipped to white
    assert (px["rgb_tiff"] == noise()).all()


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="peak memory is read from /proc")
def test_huge_jpeg_beyond_bomb_limit_decodes_small_and_light(tmp_path):
    """9500 x 9500 = 90.25 Mpx is beyond Pillow's 89.5 Mpx decompression-bomb limit; a full RGB decode
    would take 270 MB. With draft mode it decodes at 1/8 scale in a fresh process well below that."""
    path = tmp_path / "huge.jpg"
    Image.new("L", (9500, 9500), 128).save(path, quality=50)
    code = ("from deepart.data.images import load_rgb; "
            f"img = load_rgb({str(path)!r}, 256); "
            "peak = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0]; "
            "print(img.size[0], img.size[1], img.mode, peak)")  # VmHWM: this process's peak RSS in kB
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    w, h, mode, peak_kb = out.split()
    assert (int(w), int(h), mode) == (1188, 1188, "RGB")
    assert int(peak_kb) < 200_000, f"peak RSS {int(peak_kb) // 1024} MB"


def test_large_png_is_reduced_and_oversized_png_refused(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.fromarray(noise((1024, 768))).save(path)
    assert load_rgb(path, 256).size == (342, 256)  # reduced by 3, shorter side kept >= 256
    monkeypatch.setattr(images, "MAX_DECODE_PIXELS", 500_000)
    with pytest.raises(ImageLoadError, match="too large to decode.*convert it to JPEG"):
        load_rgb(path, 256)


def test_large_jpeg_keeps_at_least_min_side(tmp_path):
    path = tmp_path / "big.jpg"
    Image.fromarray(noise((1600, 1200))).save(path)
    img = load_rgb(path, 256)
    assert img.size == (400, 300) and min(img.size) >= 256  # 1/4 scale; 1/8 would go below 256
