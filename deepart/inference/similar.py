"""The paintings of an index most like an image: its embedding by the model the index was built with, then the
exact cosine top-k over the index (deepart.inference.index).

    python -m deepart similar index=paintings-index/ image=query.jpg k=8

Options are `key=value` pairs composed onto conf/similar.yaml. Prints one row per neighbour, most similar first:
rank, cosine similarity, path and the neighbour's labels when the index has them. The web app shows the same
neighbours as thumbnails when started with `index=<folder>` (`similar_panel`).
"""
from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig
from PIL import Image

from deepart.core.cli import compose_cli
from deepart.core.errors import ConfigError, DataError, first_line, report_errors, require
from deepart.core.runtime import resolve_device
from deepart.data.images import ImageLoadError, load_rgb
from deepart.inference.index import Index, embed
from deepart.inference.loading import Predictor, load_model

log = logging.getLogger("deepart")

USAGE = "python -m deepart similar index=<index folder> image=<image file> k=8"
THUMB = 160  # pixels, the longer side of a neighbour's thumbnail in the web app


class Finder:
    """An index and the model it was built with: an image -> its nearest paintings in the index. The model runs
    under `lock` (the web app shares its model with its other panels)."""

    def __init__(self, index: Index, predictor: Predictor, lock: Any = None):
        self.index, self.predictor = index, predictor
        self.lock = lock if lock is not None else threading.Lock()

    @classmethod
    def open(cls, folder: str | Path, model: str | Path | None = None, device: str = "cpu") -> Finder:
        """The index in `folder` and its model: `model`, or the one its index.json names; a model other than the
        one the index was built with is refused."""
        index = Index.load(folder)
        path = model if model is not None else index.meta["model"]
        if model is None and not Path(path).exists():
            raise ConfigError(f"index={folder} was built with {path}, which is not there any more: pass "
                              f"model=<that model where it is now>")
        net = load_model(path)[0]
        index.check_model(net, str(path))
        return cls(index, Predictor(net, resolve_device(device, key="device")))

    def check_k(self, k: int) -> None:
        n = len(self.index)
        if k > n:
            raise ConfigError(f"k={k} is more than the {n} images in index={self.index.folder}: pass k={n} or less")

    def neighbours(self, image: Image.Image, k: int) -> list[dict]:
        """The k most similar items, best first: {"path", "similarity", "labels": {task: class}}."""
        x, kind = self.predictor.preprocess([image]), self.index.meta["embedding"]
        with self.lock:
            vector = embed(self.predictor.model, x, (kind,))[kind]
        scores, rows = self.index.search(vector, min(k, len(self.index)))
        files = self.index.files
        return [{"path": files["path"].iloc[r], "similarity": s,
                 "labels": {t: files[t].iloc[r] for t in self.index.tasks if files[t].iloc[r]}}
                for s, r in zip(scores[0].tolist(), rows[0].tolist())]


def read_query(path: str | Path, min_side: int | None) -> Image.Image:
    """The query image as RGB; a missing or undecodable file is a DataError naming it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image={path}: no such file; pass the image file to search with")
    try:
        return load_rgb(path, min_side)
    except ImageLoadError as exc:
        raise DataError(f"image={path}: not an image this command can read ({first_line(exc.__cause__ or exc)}); "
                        f"pass a JPEG, PNG, WebP, TIFF or BMP file") from None


def format_neighbours(found: list[dict]) -> str:
    rows = [{"rank": n, "similarity": f"{f['similarity']:.3f}", "path": f["path"], **f["labels"]}
            for n, f in enumerate(found, start=1)]
    with pd.option_context("display.max_colwidth", 80, "display.width", 200):
        return pd.DataFrame(rows).to_string(index=False)


def parse_args(argv: list[str]) -> DictConfig:
    cfg = compose_cli("similar", argv, required=("index", "image"), usage=USAGE, paths=("index", "image", "model"))
    require(isinstance(cfg.k, int) and not isinstance(cfg.k, bool) and cfg.k >= 1, "k", cfg.k, "an integer >= 1")
    return cfg


def similar(cfg: DictConfig) -> list[dict]:
    finder = Finder.open(cfg.index, cfg.model, cfg.device)
    finder.check_k(cfg.k)
    found = finder.neighbours(read_query(cfg.image, finder.predictor.min_side), cfg.k)
    meta = finder.index.meta
    print(f"the {len(found)} images of {cfg.index} most like {cfg.image} ({meta['embedding']} embedding, cosine "
          f"similarity):\n{format_neighbours(found)}")
    return found


# ------------------------------------------------------------------------------------------------ the web app
def thumbnail(path: str, size: int = THUMB) -> Image.Image | None:
    try:
        image = load_rgb(path, size)
    except (ImageLoadError, OSError) as exc:
        log.warning("similar paintings: %s cannot be shown (%s)", path, first_line(exc))
        return None
    image.thumbnail((size, size))
    return image


def similar_panel(gr: Any, image: Any, finder: Finder, k: int) -> Any:
    """A "similar paintings" gallery (elem_id "similar") filled with the thumbnails of the k nearest paintings
    of the index whenever `image` (a gr.Image handing over file paths) changes. Call inside the gr.Blocks."""
    k = min(k, len(finder.index))
    gallery = gr.Gallery(label=f"similar paintings: the {k} nearest in the index {finder.index.folder.name} "
                               f"(cosine similarity)", columns=min(k, 8), rows=1, height=240,
                         object_fit="contain", elem_id="similar")

    def on_image(path: str | None) -> list:
        if not path:
            return []
        try:
            query = load_rgb(path, finder.predictor.min_side)
        except ImageLoadError:
            return []  # the page's status line says why the upload was not analysed
        shown = []
        for found in finder.neighbours(query, k):
            picture = thumbnail(found["path"])
            if picture is not None:
                labels = ", ".join(found["labels"].values())
                shown.append((picture, f"{found['similarity']:.2f} {Path(found['path']).name}"
                                       + (f" ({labels})" if labels else "")))
        return shown

    image.change(on_image, inputs=image, outputs=gallery, api_name="similar")
    return gallery


def main(argv: list[str] | None = None) -> list[dict]:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    return report_errors(lambda: similar(parse_args(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    main()
