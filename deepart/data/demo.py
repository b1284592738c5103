"""Built-in demo dataset: deterministic synthetic "paintings" in the on-disk format of WikiArt (ArtGAN).

Each painting has three independent factors, one per task:
    style  (8)  brushwork texture over the whole canvas (dabs, dots, long strokes, hatching, facets, ...);
    genre  (5)  composition (horizon, central head and bust, skyline, objects on a table, scattered shapes);
    artist (6)  palette: each artist paints with a fixed set of four colours.
Only about 40% of the paintings are by one of the six labelled artists (the others use palettes of
their own and have no artist label), as in WikiArt where most paintings have no artist label.

Files written under `root` (the format of the real ArtGAN files, read by `deepart.data.wikiart`):
    images/<StyleFolder>/<artist-slug>_<title-slug>-<n>.jpg
    style_{train,val}.csv, genre_{train,val}.csv   rows `path,label`, CRLF, no header
    artist_{train,val}.csv   LF; header `(Path to image),, (Groundtruth class)` (a trailing space in
                             the train file), a blank line, then rows `path,,label`
    {style,genre,artist}_class.txt   lines `<index> <Name>`, LF
    .complete.json           the generation parameters, written last (see `ensure_demo`)
CSV paths are relative to `images/`. Quirks of the real files reproduced here: class `Art_Nouveau` lives
in folder `Art_Nouveau_Modern/`; the style file lists every image, the genre file most of them and the
artist file about 40%; each task has its own split, so a few images are in one task's train split and
another task's val split; one path is listed twice in genre_val.csv.

Command line: `python -m deepart.data.demo <root> [--n-images N] [--image-size S] [--seed K]`.
"""
from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import multiprocessing
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from deepart.core.errors import DataError, report_errors, require

#: bump when the generator's output changes, so `ensure_demo` regenerates older copies
GENERATOR_VERSION = 2
MARKER = ".complete.json"
IMAGES_DIR = "images"
TASKS = ("style", "genre", "artist")

STYLES = [
    "Art_Nouveau",         # flat colour crossed by flowing decorative curves
    "Cubism",              # faceted flat planes with dark edges
    "Expressionism",       # long, thick, curved strokes in every direction
    "Impressionism",       # short dabs in every direction
    "Minimalism",          # flat colour fields, no texture
    "Pointillism",         # small dots on a light ground
    "Post_Impressionism",  # parallel diagonal hatching strokes
    "Ukiyo_e",             # flat colour with bold outlines on grained paper
]
GENRES = ["abstract_painting", "cityscape", "landscape", "portrait", "still_life"]
ARTISTS = ["Claude_Monet", "Edgar_Degas", "Ivan_Aivazovsky", "Marc_Chagall", "Rembrandt",
           "Vincent_van_Gogh"]
#: style class name -> image folder, for every style (only Art_Nouveau differs, as in WikiArt)
STYLE_FOLDERS = {name: name for name in STYLES} | {"Art_Nouveau": "Art_Nouveau_Modern"}

#: the fixed palette (RGB) of each labelled artist, index = artist label
PALETTES = np.array([
    [(185, 160, 215), (140, 190, 140), (150, 195, 230), (240, 185, 195)],  # Monet: lilac, sage, sky, rose
    [(245, 195, 150), (205, 150, 60), (50, 125, 130), (150, 135, 125)],    # Degas: peach, ochre, teal, grey
    [(20, 40, 90), (50, 165, 175), (240, 235, 215), (95, 105, 120)],       # Aivazovsky: navy, turquoise, foam, slate
    [(30, 50, 165), (185, 25, 60), (20, 135, 90), (120, 50, 150)],         # Chagall: cobalt, crimson, emerald, violet
    [(60, 35, 20), (125, 75, 35), (205, 155, 60), (230, 205, 160)],        # Rembrandt: brown, umber, gold, cream
    [(245, 205, 40), (80, 140, 215), (225, 110, 35), (115, 130, 45)],      # van Gogh: yellow, cerulean, orange, olive
], dtype=np.float32)
#: painters of the unlabelled paintings (random palettes, no artist label)
OTHER_ARTISTS = ["alphonse-mucha", "berthe-morisot", "egon-schiele", "georges-seurat", "henri-matisse",
                 "katsushika-hokusai", "mary-cassatt", "paul-klee", "gustave-courbet", "wassily-kandinsky"]
_TITLE_A = ["quiet", "blue", "old", "red", "morning", "evening", "winter", "summer", "golden", "little",
            "grey", "green", "white", "distant", "last", "first"]
_TITLE_B = ["harbour", "garden", "road", "study", "figure", "bridge", "field", "house", "river", "still",
            "composition", "street", "window", "lady", "vase", "hill"]

#: fraction of the paintings listed in each task's files (style: all, genre: most, artist: about 40%)
LISTED_FRACTION = {"style": 1.0, "genre": 0.85, "artist": 0.4}
#: fraction of each task's listed images whose split differs from the image's common split
SPLIT_LEAK = 0.03


# ----------------------------------------------------------------------------------------------------
# Painting one image
# ----------------------------------------------------------------------------------------------------

def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """(y, x) pixel-centre coordinates in [0, 1), each (size, size) float32."""
    c = (np.arange(size, dtype=np.float32) + 0.5) / size
    return np.meshgrid(c, c, indexing="ij")


def _ellipse(yy, xx, cy, cx, ry, rx) -> np.ndarray:
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def _compose(genre: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """Role map (size, size) uint8 in 0..3 (which palette colour paints each pixel) of a genre's layout."""
    yy, xx = _grid(size)
    lab = np.zeros((size, size), np.uint8)
    u = rng.uniform
    if genre == "landscape":
        h = u(0.3, 0.55)
        horizon = h + u(0.01, 0.04) * np.sin(2 * np.pi * (u(0.5, 2.0) * xx + u()))
        if u() < 0.85:  # distant hills
            hills = h - u(0.06, 0.16) + u(0.03, 0.07) * np.sin(2 * np.pi * (u(1.0, 2.5) * xx + u()))
            lab[yy > hills] = 2
        lab[yy > horizon] = 1
        if u() < 0.5:  # a road or river narrowing towards the horizon
            cx, w = u(0.3, 0.7), u(0.1, 0.25)
            depth = np.clip((yy - horizon) / (1.0 - horizon), 0, 1)
            lab[(yy > horizon) & (np.abs(xx - cx) < w * depth)] = 3
        if u() < 0.6:  # sun or moon
            r = u(0.04, 0.08)
            lab[_ellipse(yy, xx, u(0.08, h - 0.15), u(0.15, 0.85), r, r) & (yy < horizon)] = 3
    elif genre == "portrait":
        if u() < 0.5:  # curtain on one side
            lab[xx < u(0.1, 0.3)] = 1
        cx, cy = u(0.42, 0.58), u(0.33, 0.43)
        ry, rx = u(0.16, 0.21), u(0.12, 0.16)
        lab[_ellipse(yy, xx, 1.05, cx + u(-0.03, 0.03), u(0.3, 0.42), u(0.3, 0.42))] = 2  # bust
        lab[(np.abs(xx - cx) < rx * 0.45) & (yy > cy) & (yy < cy + ry * 1.6)] = 3           # neck
        lab[_ellipse(yy, xx, cy - ry * 0.25, cx, ry * 0.9, rx * 1.15)] = 1                  # hair
        lab[_ellipse(yy, xx, cy, cx, ry, rx)] = 3                                           # face
    elif genre == "cityscape":
        ground = u(0.8, 0.92)
        n = int(rng.integers(4, 8))
        edges = np.sort(np.concatenate([[0.0, 1.0], u(0.05, 0.95, n - 1)]))
        step = u(0.045, 0.07)
        win_y = ((yy / step) % 1.0) < 0.5
        win_x = ((xx / step) % 1.0) < 0.5
        role = int(rng.integers(1, 3))
        for left, right in zip(edges[:-1], edges[1:]):
            top = u(0.15, 0.6)
            inside = (xx >= left) & (xx < right) & (yy > top)
            lab[inside] = role
            lab[inside & win_y & win_x & (yy > top + step) & (xx > left + step * 0.5)
                & (xx < right - step * 0.5) & (yy < ground - step)] = 3
            role = 3 - role
        lab[yy > ground] = 1
    elif genre == "still_life":
        table = u(0.6, 0.72)
        lab[yy > table] = 1
        lab[(yy > table) & (yy < table + 0.04)] = 3  # table edge
        xs = np.sort(u(0.15, 0.85, int(rng.integers(2, 5))))
        for x in xs:
            role = int(rng.integers(2, 4))
            kind = rng.integers(3)
            if kind == 0:    # fruit
                r = u(0.08, 0.13)
                lab[_ellipse(yy, xx, table - r * 0.8, x, r, r)] = role
            elif kind == 1:  # vase: body and neck
                ry, rx = u(0.12, 0.18), u(0.08, 0.12)
                lab[_ellipse(yy, xx, table - ry, x, ry, rx)] = role
                lab[(np.abs(xx - x) < rx * 0.35) & (yy > table - 2.7 * ry) & (yy < table - ry)] = role
            else:            # bottle
                hgt, w = u(0.22, 0.34), u(0.04, 0.06)
                lab[(np.abs(xx - x) < w) & (yy > table - hgt) & (yy < table + 0.01)] = role
                lab[(np.abs(xx - x) < w * 0.4) & (yy > table - hgt - 0.08) & (yy < table)] = role
    elif genre == "abstract_painting":
        for _ in range(int(rng.integers(9, 16))):
            role = int(rng.integers(1, 4))
            cy, cx, r = u(0, 1), u(0, 1), u(0.04, 0.18)
            kind = rng.integers(3)
            if kind == 0:    # disc
                lab[_ellipse(yy, xx, cy, cx, r, r * u(0.6, 1.6))] = role
            elif kind == 1:  # rotated bar
                a = u(0, np.pi)
                along = (yy - cy) * np.sin(a) + (xx - cx) * np.cos(a)
                across = (yy - cy) * np.cos(a) - (xx - cx) * np.sin(a)
                lab[(np.abs(along) < r * 1.8) & (np.abs(across) < r * 0.3)] = role
            else:            # triangle
                ang = u(0, 2 * np.pi) + np.array([0.0, 2.1, 4.2]) + u(-0.3, 0.3, 3)
                pts = (cy + r * 1.5 * np.sin(ang), cx + r * 1.5 * np.cos(ang))
                lab[_triangle(yy, xx, pts)] = role
    else:
        raise ValueError(f"unknown genre {genre!r}")
    return lab


def _triangle(yy, xx, pts) -> np.ndarray:
    (y0, y1, y2), (x0, x1, x2) = pts
    d0 = (xx - x1) * (y0 - y1) - (x0 - x1) * (yy - y1)
    d1 = (xx - x2) * (y1 - y2) - (x1 - x2) * (yy - y2)
    d2 = (xx - x0) * (y2 - y0) - (x2 - x0) * (yy - y0)
    neg = (d0 < 0) | (d1 < 0) | (d2 < 0)
    pos = (d0 > 0) | (d1 > 0) | (d2 > 0)
    return ~(neg & pos)


def _palette(artist: int | None, rng: np.random.Generator) -> np.ndarray:
    """(4, 3) float RGB colours of one painting, one per role of the composition, slightly jittered.

    The background (role 0) gets the lightest colour and the second large area (role 1) the darkest, so
    a genre's layout is also a layout of light and dark; the shapes (roles 2 and 3) get the other two in
    random order. Random palettes (unlabelled painters) are pulled apart in lightness the same way."""
    if artist is None:
        colours = rng.uniform(20, 245, (4, 3)).astype(np.float32)
    else:
        colours = PALETTES[artist].copy()
    by_light = np.argsort((colours * np.array([0.299, 0.587, 0.114], np.float32)).sum(1), kind="stable")
    colours = colours[np.concatenate([by_light[[3, 0]], rng.permutation(by_light[[1, 2]])])]
    if artist is None:
        colours[0] = 0.5 * colours[0] + 0.5 * 235.0
        colours[1] = 0.5 * colours[1] + 0.5 * 25.0
    colours = colours * rng.uniform(0.92, 1.08) + rng.normal(0, 7, (4, 3))
    return colours.astype(np.float32)


def _strokes(canvas: np.ndarray, base: np.ndarray, rng: np.random.Generator, *, count: int, length: float,
             width: float, angles: np.ndarray, bend: float = 0.0, shade: float = 0.06, tint: float = 0.0,
             keep: float = 0.0, edge: float = 0.0) -> None:
    """Paint `count` straight or bent brush strokes onto `canvas` (H, W, 3) in place, later ones on top.

    Each stroke takes its colour from `base` at its centre; `length` and `width` are in pixels,
    `angles` one direction per stroke (radians), `bend` how far (pixels) the ends of a stroke may bend
    off its straight line, `shade` / `tint` the random brightness / RGB spread between strokes, `keep` the
    share of `base` kept under each stroke (so strokes do not blur the composition), `edge` how much
    darker the two long edges of a stroke are. Strokes carry bristle stripes."""
    size = canvas.shape[0]
    cy, cx = rng.uniform(0, size, count), rng.uniform(0, size, count)
    lengths = length * rng.uniform(0.7, 1.3, count)
    bends = bend * rng.uniform(-1, 1, count)
    colour = base[cy.astype(int), cx.astype(int)] * rng.uniform(1 - shade, 1 + shade, (count, 1))
    colour += rng.normal(0, tint, (count, 3)) if tint else 0
    n_l, n_w = max(2, int(np.ceil(length * 1.6))), max(1, int(np.ceil(width * 1.6)))
    t = np.linspace(-0.5, 0.5, n_l, dtype=np.float32)[None, :, None] * lengths[:, None, None]
    s = np.linspace(-0.5, 0.5, n_w, dtype=np.float32)[None, None, :] * width
    ca, sa = np.cos(angles)[:, None, None], np.sin(angles)[:, None, None]
    off = s + bends[:, None, None] * (2 * t / lengths[:, None, None]) ** 2  # bent strokes
    py = np.rint(cy[:, None, None] + t * sa + off * ca).astype(np.int64)
    px = np.rint(cx[:, None, None] + t * ca - off * sa).astype(np.int64)
    key = (np.arange(count)[:, None, None] * n_w + np.arange(n_w)[None, None, :])
    key = np.broadcast_to(key, py.shape)
    ok = (py >= 0) & (py < size) & (px >= 0) & (px < size)
    top = np.full(size * size, -1, np.int64)
    np.maximum.at(top, (py * size + px)[ok], key[ok])
    hit = top >= 0
    bristle = rng.uniform(1 - shade, 1 + shade, (count, n_w))
    if edge and n_w > 2:
        bristle[:, [0, -1]] *= 1 - edge
    bristle = bristle.reshape(-1)
    stroke = top[hit] // n_w
    flat = canvas.reshape(-1, 3)
    paint = colour[stroke] * bristle[top[hit]][:, None]
    flat[hit] = paint * (1 - keep) + base.reshape(-1, 3)[hit] * keep if keep else paint


def _edges(lab: np.ndarray, thickness: int) -> np.ndarray:
    """Pixels within `thickness` of a change of role (outlines of the composition's shapes)."""
    edge = np.zeros(lab.shape, bool)
    for k in range(1, thickness + 1):
        edge[:-k] |= lab[:-k] != lab[k:]
        edge[:, :-k] |= lab[:, :-k] != lab[:, k:]
    return edge


def _paint(style: str, base: np.ndarray, lab: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The painting (H, W, 3) float of a style's brushwork over the flat composition `base`."""
    size = base.shape[0]
    px = size / 128.0  # sizes below are for 128-pixel paintings
    u = rng.uniform
    canvas = base.copy()
    if style == "Impressionism":
        n = int(2800 * px * px)
        _strokes(canvas, base, rng, count=n, length=6 * px, width=2.5 * px, angles=u(0, np.pi, n),
                 shade=0.18, tint=12, keep=0.3)
    elif style == "Expressionism":
        canvas = base * 0.3  # dark underpainting showing between the strokes
        n = int(210 * px * px)
        _strokes(canvas, base, rng, count=n, length=24 * px, width=5.5 * px, angles=u(0, np.pi, n),
                 bend=6 * px, shade=0.12, keep=0.55)
    elif style == "Post_Impressionism":
        n = int(600 * px * px)
        a = u(0.6, 0.95)  # one hatching direction per painting, about 35-55 degrees
        _strokes(canvas, base, rng, count=n, length=20 * px, width=3.5 * px, angles=a + rng.normal(0, 0.06, n),
                 shade=0.15, keep=0.3, edge=0.45)
    elif style == "Pointillism":
        canvas = base * 0.55 + 0.45 * np.float32(238)  # light ground between the dots
        step = 3.0 * px
        g = np.arange(step / 2, size, step)
        cy, cx = [a.ravel() + rng.normal(0, 0.6 * px, a.size) for a in np.meshgrid(g, g, indexing="ij")]
        r = 1.1 * px
        d = np.arange(-int(np.ceil(r)), int(np.ceil(r)) + 1)
        dy, dx = [a.ravel() for a in np.meshgrid(d, d, indexing="ij")]
        disc = dy * dy + dx * dx <= r * r + 0.5
        dy, dx = dy[disc], dx[disc]
        colour = base[np.clip(cy, 0, size - 1).astype(int), np.clip(cx, 0, size - 1).astype(int)]
        colour = colour * u(0.8, 1.15, (len(cy), 1)) + rng.normal(0, 14, (len(cy), 3))
        yy = np.rint(cy[:, None] + dy[None]).astype(int)
        xx = np.rint(cx[:, None] + dx[None]).astype(int)
        ok = (yy >= 0) & (yy < size) & (xx >= 0) & (xx < size)
        idx = np.broadcast_to(np.arange(len(cy))[:, None], yy.shape)
        canvas[yy[ok], xx[ok]] = colour[idx[ok]]
    elif style == "Cubism":
        n = int(rng.integers(60, 100))
        sy, sx = u(0, 1, n).astype(np.float32), u(0, 1, n).astype(np.float32)
        yy, xx = _grid(size)
        dist = (yy[..., None] - sy) ** 2 + (xx[..., None] - sx) ** 2
        cell = np.argmin(dist, axis=-1)
        colour = base[(sy * size).astype(int), (sx * size).astype(int)]
        a = u(0, 2 * np.pi, n)
        ramp = (yy - sy[cell]) * np.sin(a)[cell] + (xx - sx[cell]) * np.cos(a)[cell]
        canvas = (colour[cell] * 0.5 + base * 0.5) * (1.0 + 2.5 * ramp)[..., None]
        canvas[_edges(cell, max(1, int(round(px))))] *= 0.35
    elif style == "Art_Nouveau":
        yy, xx = _grid(size)
        field = np.zeros_like(yy)
        for _ in range(3):
            f, ph = u(0.6, 1.6, 2), u(0, 2 * np.pi, 2)
            field += np.sin(2 * np.pi * f[0] * yy + ph[0] + 2.0 * np.sin(2 * np.pi * f[1] * xx + ph[1]))
        waves = np.abs(((field * u(2.0, 3.0)) % 1.0) - 0.5) < 0.08
        canvas[waves] *= 0.45
    elif style == "Ukiyo_e":
        grain = rng.normal(0, 1, (size, 1)).astype(np.float32) * 6 + rng.normal(0, 4, (size, size)).astype(np.float32)
        canvas = canvas * 0.9 + 0.1 * np.float32(235) + grain[..., None]
        canvas[_edges(lab, max(1, int(round(1.6 * px))))] = np.float32(35)
    elif style == "Minimalism":
        pass
    else:
        raise ValueError(f"unknown style {style!r}")
    return canvas


def render(style: int, genre: int, artist: int | None, size: int, rng: np.random.Generator) -> np.ndarray:
    """One synthetic painting, (size, size, 3) uint8: `style`/`genre` class indices, `artist` a labelled
    artist's index or None (a random palette)."""
    lab = _compose(GENRES[genre], rng, size)
    base = _palette(artist, rng)[lab]
    yy, xx = _grid(size)
    a = rng.uniform(0, 2 * np.pi)
    base *= (1.0 + rng.uniform(0.0, 0.18) * ((yy - 0.5) * np.sin(a) + (xx - 0.5) * np.cos(a)))[..., None]
    canvas = _paint(STYLES[style], base, lab, rng)
    canvas += rng.normal(0, 3.0, canvas.shape).astype(np.float32)
    return np.clip(canvas, 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------------
# The dataset
# ----------------------------------------------------------------------------------------------------

def _plan(n: int, val_fraction: float, seed: int) -> dict:
    """Labels, file names, listings and splits of every image (deterministic in n, val_fraction, seed)."""
    rng = np.random.default_rng([seed, 0x0DE40])
    style = rng.permutation(np.arange(n) % len(STYLES))
    genre = rng.permutation(np.arange(n) % len(GENRES))
    listed = {}
    for task in TASKS:
        k = max(2, int(round(LISTED_FRACTION[task] * n)))
        mask = np.zeros(n, bool)
        mask[rng.permutation(n)[:k]] = True
        listed[task] = mask
    artist = np.full(n, -1)
    artist[listed["artist"]] = rng.permutation(np.arange(int(listed["artist"].sum())) % len(ARTISTS))
    common = np.zeros(n, bool)
    common[rng.permutation(n)[:max(1, int(round(val_fraction * n)))]] = True
    val = {}
    for task in TASKS:
        ids = np.flatnonzero(listed[task])
        v = common.copy()
        flip = rng.choice(ids, max(1, int(round(SPLIT_LEAK * len(ids)))), replace=False)
        v[flip] = ~v[flip]
        for want in (True, False):  # each task needs at least one train and one val image
            if not (v[ids] == want).any():
                v[ids[0 if want else -1]] = want
        val[task] = v
    names = []
    for i in range(n):
        who = (ARTISTS[artist[i]].lower().replace("_", "-") if artist[i] >= 0
               else OTHER_ARTISTS[rng.integers(len(OTHER_ARTISTS))])
        title = f"{_TITLE_A[rng.integers(len(_TITLE_A))]}-{_TITLE_B[rng.integers(len(_TITLE_B))]}"
        names.append(f"{STYLE_FOLDERS[STYLES[style[i]]]}/{who}_{title}-{i}.jpg")
    rows = {}
    for task, labels in (("style", style), ("genre", genre), ("artist", artist)):
        for split in ("train", "val"):
            ids = np.flatnonzero(listed[task] & (val[task] == (split == "val")))
            rows[task, split] = [(names[i], int(labels[i])) for i in rng.permutation(ids)]
    dup = rows["genre", "val"]
    pick = int(rng.integers(len(dup)))
    dup.insert(int(rng.integers(pick + 1, len(dup) + 1)), dup[pick])  # one path listed twice
    return {"style": style, "genre": genre, "artist": artist, "names": names, "rows": rows}


def _write_files(root: Path, plan: dict) -> None:
    for task, classes in (("style", STYLES), ("genre", GENRES), ("artist", ARTISTS)):
        (root / f"{task}_class.txt").write_bytes("".join(f"{i} {c}\n" for i, c in enumerate(classes)).encode())
    for split in ("train", "val"):
        for task in ("style", "genre"):
            text = "".join(f"{p},{y}\r\n" for p, y in plan["rows"][task, split])
            (root / f"{task}_{split}.csv").write_bytes(text.encode())
        header = "(Path to image),, (Groundtruth class)" + (" " if split == "train" else "")
        text = header + "\n\n" + "".join(f"{p},,{y}\n" for p, y in plan["rows"]["artist", split])
        (root / f"artist_{split}.csv").write_bytes(text.encode())


def _render_chunk(args: tuple) -> None:
    image_root, seed, size, quality, items = args
    for i, name, style, genre, artist in items:
        rng = np.random.default_rng([seed, 1, i])
        pixels = render(style, genre, artist if artist >= 0 else None, size, rng)
        Image.fromarray(pixels).save(Path(image_root) / name, quality=quality)


def _workers(n: int) -> int:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if n < 400 or cpus < 2 or "fork" not in multiprocessing.get_all_start_methods():
        return 1
    return min(cpus, 8)


def generate_demo(root: str | os.PathLike, *, n_images: int = 3000, image_size: int = 128,
                  val_fraction: float = 0.25, seed: int = 0, jpeg_quality: int = 90) -> Path:
    """Write the demo dataset (images, split CSVs, class lists, then the `.complete.json` marker)
    under `root` and return `root` as a Path. Same parameters give identical files."""
    require(isinstance(n_images, int) and n_images >= 30, "data.source.n_images", n_images, "an integer >= 30")
    require(isinstance(image_size, int) and image_size >= 32, "data.source.image_size", image_size,
            "an integer >= 32")
    require(0.05 <= val_fraction <= 0.5, "data.source.val_fraction", val_fraction, "a number in [0.05, 0.5]")
    root = Path(root)
    plan = _plan(n_images, val_fraction, seed)
    image_root = root / IMAGES_DIR
    for folder in STYLE_FOLDERS.values():
        (image_root / folder).mkdir(parents=True, exist_ok=True)
    items = [(i, plan["names"][i], int(plan["style"][i]), int(plan["genre"][i]), int(plan["artist"][i]))
             for i in range(n_images)]
    workers = _workers(n_images)
    chunks = [(str(image_root), seed, image_size, jpeg_quality, items[k::workers * 4])
              for k in range(workers * 4)]
    if workers == 1:
        for chunk in chunks:
            _render_chunk(chunk)
    else:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            list(pool.map(_render_chunk, chunks))
    _write_files(root, plan)
    params = _params(n_images, image_size, val_fraction, seed, jpeg_quality)
    (root / MARKER).write_text(json.dumps(params, indent=1, sort_keys=True) + "\n")
    return root


def _params(n_images, image_size, val_fraction, seed, jpeg_quality) -> dict:
    return {"generator_version": GENERATOR_VERSION, "n_images": int(n_images), "image_size": int(image_size),
            "val_fraction": float(val_fraction), "seed": int(seed), "jpeg_quality": int(jpeg_quality)}


def is_complete(root: str | os.PathLike, **kwargs) -> bool:
    """Whether `root` holds a finished demo dataset generated with these parameters (the marker says so)."""
    params = _params(**{**_DEFAULTS, **kwargs})
    try:
        return json.loads((Path(root) / MARKER).read_text()) == params
    except (OSError, ValueError):
        return False


def recorded_params(root: str | os.PathLike) -> dict | None:
    """The `generate_demo` parameters of the finished demo dataset at `root` (from its marker), or None when
    `root` holds none. Passing them back (`load_demo(root, **params)`) reads that dataset as it is."""
    try:
        params = json.loads((Path(root) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(params, dict) or params.get("generator_version") != GENERATOR_VERSION:
        return None
    return {key: params[key] for key in _DEFAULTS if key in params}


_DEFAULTS = {name: p.default for name, p in inspect.signature(generate_demo).parameters.items()
             if p.kind is inspect.Parameter.KEYWORD_ONLY}
_OURS = {IMAGES_DIR, MARKER} | {f"{t}_{s}.csv" for t in TASKS for s in ("train", "val")} \
    | {f"{t}_class.txt" for t in TASKS}


def ensure_demo(root: str | os.PathLike, **kwargs) -> Path:
    """Generate the demo dataset under `root` unless a complete one with the same parameters is there.

    Keyword arguments are those of `generate_demo`. A new copy is written to a temporary sibling folder
    and moved into place only when finished, so an interrupted run never leaves a dataset that looks
    complete. A folder at `root` holding anything other than demo files is never removed (error)."""
    root = Path(root)
    if is_complete(root, **kwargs):
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with _lock(root.parent / f".{root.name}.lock"):  # one generator at a time (e.g. several DDP ranks)
        if is_complete(root, **kwargs):
            return root
        return _regenerate(root, kwargs)


@contextlib.contextmanager
def _lock(path: Path):
    try:
        import fcntl
    except ImportError:  # not POSIX: no locking
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _regenerate(root: Path, kwargs: dict) -> Path:
    if root.exists():
        foreign = sorted(p.name for p in root.iterdir() if p.name not in _OURS) if root.is_dir() else [root.name]
        if foreign:
            raise DataError(f"{root} exists and holds files that are not part of the demo dataset "
                                  f"({', '.join(foreign[:5])}); choose another demo root or remove them")
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        generate_demo(tmp, **kwargs)
        if root.exists():
            shutil.rmtree(root)
        tmp.rename(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


def load_demo(root: str | os.PathLike = "data/demo", tasks: list[str] | None = None,
              missing_images: str = "error", **kwargs):
    """The demo dataset as a TaskTable (generated first if needed), read by the WikiArt parser.
    Keyword arguments are those of `generate_demo`."""
    from deepart.data.wikiart import load_wikiart

    root = ensure_demo(root, **kwargs)
    return load_wikiart(root, tasks=tasks, missing_images=missing_images)


def main(argv: list[str] | None = None) -> int:
    """`python -m deepart.data.demo ROOT [--n-images N] [--image-size S] [--seed K]`: generate and
    print a one-line summary."""
    parser = argparse.ArgumentParser(prog="python -m deepart.data.demo", description=main.__doc__)
    parser.add_argument("root", help="folder to write the demo dataset to")
    parser.add_argument("--n-images", type=int, default=_DEFAULTS["n_images"])
    parser.add_argument("--image-size", type=int, default=_DEFAULTS["image_size"])
    parser.add_argument("--seed", type=int, default=_DEFAULTS["seed"])
    args = parser.parse_args(argv)
    start = time.perf_counter()
    root = report_errors(ensure_demo, args.root, n_images=args.n_images, image_size=args.image_size, seed=args.seed)
    counts = []
    for task in TASKS:
        rows = [sum(1 for line in (root / f"{task}_{s}.csv").read_text().splitlines()
                    if line.strip() and not line.startswith("(")) for s in ("train", "val")]
        counts.append(f"{task} {rows[0]}/{rows[1]}")
    print(f"demo dataset at {root}: {args.n_images} paintings of {args.image_size}px, "
          f"train/val rows: {', '.join(counts)} ({time.perf_counter() - start:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
