"""An index of a collection of paintings: one L2-normalised embedding per image, searched by exact cosine
similarity (`python -m deepart similar`, the web app's "similar paintings" panel).

    python -m deepart index model=<export folder, run dir or checkpoint> images=paintings/ out=paintings-index/
    python -m deepart index model=<run dir> data=imagefolder data.root=<class folders> out=<dir> embedding=pooled

Options are `key=value` pairs composed onto conf/index.yaml (which lists them). With a data option instead of
images=, the labels of its table go into the index, and when it has labelled train and val splits the command
reports retrieval quality: precision@k and mAP of every val image as a query against the train split (the
gallery), per task (deepart.objectives.retrieval).

The folder: index.json (the model's identity, the embedding, whether the index is complete), files.csv (one
row per vector: path, split and labels), vectors.npy (float32, one row per file). While it is being built,
plan.csv lists every file and chunks/ holds the vectors of each finished chunk of `chunk_size` files, each
written atomically; a killed build run again continues after the last complete chunk, and index.json says
`"complete": false` until the last step of the build.

Search is a matrix product and a top-k in PyTorch (`cosine_top_k`): exact, and on 2 CPU cores one query over
100,000 vectors takes a few milliseconds (BENCHMARKS.md, benchmarks/similar_search.py).
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from deepart.core.builds import CHUNKS, ChunkedBuild, read_record, update_with_tensors
from deepart.core.cli import compose_cli
from deepart.core.errors import ConfigError, DataError, report_errors, require, require_choice
from deepart.core.files import atomic_write, atomic_write_text
from deepart.core.runtime import check_threads, resolve_device
from deepart.data.dataset import ImageDataset, SkipCounter, collate
from deepart.data.loaders import load_table
from deepart.data.table import MISSING
from deepart.inference.loading import Predictor, load_model
from deepart.inference.predict import find_images
from deepart.models import DeepArtNet
from deepart.objectives.retrieval import retrieval_quality

log = logging.getLogger("deepart")

FORMAT, VERSION = "deepart-index", 1
META, FILES, VECTORS, PLAN, QUALITY = "index.json", "files.csv", "vectors.npy", "plan.csv", "quality.json"
EMBEDDINGS = ("context", "pooled", "probs")
USAGE = ("python -m deepart index model=<export folder, run dir or checkpoint> images=<folder or glob> out=<dir> "
         "(or data=<option> data.root=<dir> instead of images=)")


# ------------------------------------------------------------------------------------------------ embeddings
def embed(model: DeepArtNet, images: torch.Tensor, kinds: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """(B, d) L2-normalised embeddings of a batch the model takes, from one forward pass, for each kind asked
    for: "context" (its attention context vector), "pooled" (its backbone features averaged over the grid),
    "probs" (every task's class probabilities, concatenated)."""
    with torch.inference_mode():
        out = model.features(images)
    vectors = {}
    for kind in kinds:
        if kind == "probs":
            vector = torch.cat([logits.float().softmax(-1) for logits in out["logits"].values()], dim=1)
        else:
            vector = out[kind].float()
        vectors[kind] = F.normalize(vector, dim=1).cpu()
    return vectors


def cosine_top_k(gallery: torch.Tensor, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k by cosine similarity of L2-normalised vectors: (scores, gallery rows), each (Q, k), best first."""
    return torch.topk(queries @ gallery.T, k, dim=1)


def model_identity(model: DeepArtNet) -> str:
    """A hash of the model's weights (every tensor of its state dict) and config (tasks, input transform): two
    models answer alike exactly when their identities are equal."""
    digest = hashlib.sha256(json.dumps({"tasks": model.tasks, "input_cfg": model.input_cfg}, sort_keys=True,
                                       default=list).encode())
    update_with_tensors(digest, model.state_dict())
    return digest.hexdigest()[:16]


# ------------------------------------------------------------------------------------------------ the index
@dataclass
class Index:
    """A complete index folder, loaded: `files` (path, split, labels as class names), `vectors` (N, d)."""

    folder: Path
    meta: dict
    files: pd.DataFrame
    vectors: torch.Tensor

    @classmethod
    def load(cls, folder: str | Path) -> Index:
        folder = Path(folder)
        meta = read_meta(folder)
        if meta is None:
            raise DataError(f"index={folder}: not an index folder (no {META}); build one with {USAGE}")
        if not meta["complete"]:
            raise DataError(f"index={folder}: the index is incomplete (its build was interrupted); run the same "
                            f"python -m deepart index command again to finish it")
        files = pd.read_csv(folder / FILES, keep_default_na=False, dtype=str)
        return cls(folder, meta, files, torch.from_numpy(np.load(folder / VECTORS)))

    def __len__(self) -> int:
        return len(self.files)

    @property
    def tasks(self) -> dict[str, list[str]]:
        """The labelled tasks: task -> class names."""
        return self.meta.get("tasks") or {}

    def labels(self, task: str) -> np.ndarray:
        """The items' labels of `task` as class indices (-1 = none)."""
        index = {name: i for i, name in enumerate(self.tasks[task])}
        return np.array([index.get(name, MISSING) for name in self.files[task]], dtype=np.int64)

    def check_model(self, model: DeepArtNet, name: str) -> None:
        """Refuse a model other than the one the index was built with (its vectors would not compare)."""
        if model_identity(model) != self.meta["model_id"]:
            raise ConfigError(f"index={self.folder} was built with another model ({self.meta['model']}), not "
                              f"{name}: search it with model={self.meta['model']}, or build an index of this model "
                              f"with python -m deepart index model={name} out=<new folder>")

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The k nearest items of each query vector: (similarities, rows of `files`), best first."""
        return cosine_top_k(self.vectors, queries.to(self.vectors.dtype), k)


def read_meta(folder: Path) -> dict | None:
    return read_record(folder / META, FORMAT, "delete the folder and build the index again",
                       "not a deepart index; pass another out= / index= folder")


def write_meta(folder: Path, meta: dict) -> None:
    atomic_write_text(folder / META, json.dumps(meta, indent=2))


# ------------------------------------------------------------------------------------------------ building it
def parse_args(argv: list[str]) -> DictConfig:
    """conf/index.yaml composed with `key=value` arguments; images= or data= (one of them) says what to index."""
    cfg = compose_cli("index", argv, required=("model", "out"), usage=USAGE, paths=("model", "images", "out"))
    if (cfg.images is None) == (cfg.get("data") is None):
        raise ConfigError(f"give images=<folder or glob> or data=<option> (not both): {USAGE}")
    require_choice("embedding", cfg.embedding, EMBEDDINGS)
    for key in ("chunk_size", "batch_size"):
        require(isinstance(cfg[key], int) and cfg[key] >= 1, key, cfg[key], "an integer >= 1")
    require(isinstance(cfg.num_workers, int) and cfg.num_workers >= 0, "num_workers", cfg.num_workers,
            "an integer >= 0")
    require(all(isinstance(k, int) and k >= 1 for k in cfg.quality_k), "quality_k", cfg.quality_k,
            "a list of integers >= 1")
    check_threads("threads", cfg.threads)
    return cfg


def catalogue(cfg: DictConfig) -> tuple[pd.DataFrame, dict[str, list[str]], str]:
    """What to index: (files with `path`, and with data= `split` and one column per task holding class names,
    "" when unlabelled; the tasks' classes; a description of the source)."""
    if cfg.images is not None:
        return pd.DataFrame({"path": [str(p) for p in find_images(str(cfg.images))]}), {}, f"images={cfg.images}"
    table = load_table(cfg.data, cached=False)
    frames = []
    for split in list(cfg.splits) if cfg.splits else table.splits:
        frame = table.frame(split)
        columns = {"path": [str(table.resolve(p)) for p in frame["path"]], "split": split}
        columns.update({t: ["" if i == MISSING else c[i] for i in frame[t]] for t, c in table.tasks.items()})
        frames.append(pd.DataFrame(columns))
    files = pd.concat(frames, ignore_index=True)
    if files.empty:
        raise DataError(f"data.root={cfg.data.root}: the data holds no images to index")
    return files, table.tasks, f"data.root={cfg.data.root} ({cfg.data.source._target_.rsplit('.', 1)[-1]})"


def start_or_resume(out: Path, meta: dict, files: pd.DataFrame) -> dict:
    """The index folder's meta: a new folder is started (plan.csv, index.json marked incomplete); an existing
    index of the same model, embedding and files is resumed (or left as it is when complete); anything else
    in `out` is refused."""
    old = read_meta(out) if out.is_dir() else None
    if old is None:
        if out.is_dir() and any(out.iterdir()):
            raise ConfigError(f"out={out}: a folder that holds other files, not an index; pass a new folder")
        out.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(out / CHUNKS, ignore_errors=True)
        atomic_write(out / PLAN, lambda f: files.to_csv(f, index=False))
        write_meta(out, meta)
        return meta
    if old["model_id"] != meta["model_id"]:
        raise ConfigError(f"out={out} holds an index built with another model ({old['model']}); pass a new out= "
                          f"folder, or model={old['model']} to finish that one")
    for key in ("embedding", "source", "chunk_size"):
        if old[key] != meta[key]:
            raise ConfigError(f"out={out} holds an index built with {key}={old[key]}, not {meta[key]}; pass a new "
                              f"out= folder, or {key}={old[key]}")
    if not old["complete"]:
        planned = pd.read_csv(out / PLAN, keep_default_na=False, dtype=str)
        if planned["path"].tolist() != files["path"].tolist():
            raise ConfigError(f"out={out} holds an unfinished index of other files ({len(planned)} planned, "
                              f"{len(files)} now); pass a new out= folder")
    return old


def embed_files(predictor: Predictor, paths: list[str], kinds: tuple[str, ...], batch_size: int, num_workers: int,
                skips: SkipCounter, bar: tqdm) -> dict[str, np.ndarray]:
    """The embeddings of image files: {"rows": the readable files' positions in `paths`, kind: (n, d) vectors for
    each of `kinds`, "bad": the unreadable paths, "errors": why}."""
    dataset = ImageDataset(paths, None, predictor.transform, predictor.min_side)
    workers = max(min(num_workers, len(paths) - 1), 0)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate)
    rows, vectors, bad = [], {kind: [] for kind in kinds}, []
    for batch in loader:
        skips.add(batch["bad"])
        bad += batch["bad"]
        if "image" in batch:
            for kind, vector in embed(predictor.model, batch["image"].to(predictor.device), kinds).items():
                vectors[kind].append(vector)
            rows.append(batch["index"])
        bar.update(len(batch["index"]) + len(batch["bad"]))
    out = {kind: torch.cat(v).numpy() if v else np.zeros((0, 0), np.float32) for kind, v in vectors.items()}
    return {"rows": torch.cat(rows).numpy() if rows else np.zeros(0, np.int64), **out,
            "bad": np.array([p for p, _ in bad], dtype=str), "errors": np.array([e for _, e in bad], dtype=str)}


def embed_all(out: Path, predictor: Predictor, files: pd.DataFrame, cfg: DictConfig) -> None:
    """Every chunk not yet on disk, in order, each written atomically as it completes."""
    build = ChunkedBuild(out, len(files), cfg.chunk_size, "index_chunk")
    done = build.done()
    if done:
        log.info("%s: resuming after %d of %d chunks", out, len(done), build.n_chunks)
    skips = SkipCounter(max_warnings=10)

    def compute(rows: range, bar: tqdm) -> dict[str, np.ndarray]:
        paths = files["path"].iloc[rows.start:rows.stop].tolist()
        found = embed_files(predictor, paths, (cfg.embedding,), cfg.batch_size, cfg.num_workers, skips, bar)
        return {"rows": found["rows"] + rows.start, "vectors": found[cfg.embedding], "bad": found["bad"],
                "errors": found["errors"]}

    build.run(compute, desc="index")


def finish(out: Path, meta: dict) -> dict:
    """The chunks joined into vectors.npy and files.csv, index.json marked complete, the chunks removed."""
    planned = pd.read_csv(out / PLAN, keep_default_na=False, dtype=str)
    chunks = [np.load(path) for path in sorted((out / CHUNKS).glob("*.npz"))]
    rows = np.concatenate([c["rows"] for c in chunks])
    skipped = [{"path": str(p), "error": str(e)} for c in chunks for p, e in zip(c["bad"], c["errors"])]
    if not len(rows):
        first = f" ({skipped[0]['path']}: {skipped[0]['error']})" if skipped else ""
        raise DataError(f"{meta['source']}: none of the {len(planned)} files could be read as an image{first}; "
                        f"point it at a folder of paintings (JPEG, PNG, WebP, ...)")
    vectors = np.concatenate([c["vectors"] for c in chunks if len(c["rows"])]).astype(np.float32)
    atomic_write(out / VECTORS, lambda f: np.save(f, vectors))
    atomic_write(out / FILES, lambda f: planned.iloc[rows].to_csv(f, index=False))
    meta = {**meta, "complete": True, "n_items": int(len(rows)), "dim": int(vectors.shape[1]), "skipped": skipped}
    write_meta(out, meta)
    shutil.rmtree(out / CHUNKS, ignore_errors=True)
    (out / PLAN).unlink(missing_ok=True)
    return meta


def quality(index: Index, ks: tuple[int, ...]) -> dict[str, dict[str, float]]:
    """Per labelled task: precision@k, mAP and chance of the val items as queries against the train items
    (deepart.objectives.retrieval); {} when the index has no labelled train and val items."""
    if not index.tasks or "split" not in index.files:
        return {}
    val = torch.tensor((index.files["split"] == "val").to_numpy())
    train = torch.tensor((index.files["split"] == "train").to_numpy())
    if not val.any() or not train.any():
        return {}
    similarity = index.vectors[val] @ index.vectors[train].T
    out = {}
    for task in index.tasks:
        labels = index.labels(task)
        if (labels[val.numpy()] != MISSING).any() and (labels[train.numpy()] != MISSING).any():
            out[task] = retrieval_quality(similarity, labels[val.numpy()], labels[train.numpy()], ks)
    return out


def format_quality(scores: dict[str, dict[str, float]]) -> str:
    rows = [{"task": f"same {task}", **{k: (v if k == "queries" else round(100 * v, 1)) for k, v in s.items()}}
            for task, s in scores.items()]
    return pd.DataFrame(rows).to_string(index=False)


def build_index(cfg: DictConfig) -> Index:
    """Embed every image of `cfg` into the index folder `cfg.out` (resuming an unfinished one); returns it."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    model = load_model(cfg.model)[0]
    files, tasks, source = catalogue(cfg)
    out = Path(cfg.out)
    meta = {"format": FORMAT, "version": VERSION, "complete": False, "model": str(Path(cfg.model).resolve()),
            "model_id": model_identity(model), "embedding": cfg.embedding, "source": source,
            "n_files": len(files), "chunk_size": cfg.chunk_size, "tasks": tasks}
    meta = start_or_resume(out, meta, files)
    if meta["complete"]:
        print(f"{out} is already a complete index of these {meta['n_items']} images")
    else:
        embed_all(out, Predictor(model, resolve_device(cfg.device, key="device")), files, cfg)
        meta = finish(out, meta)
    index = Index.load(out)
    skipped = len(meta["skipped"])
    print(f"indexed {len(index)} images ({cfg.embedding} embedding, {index.vectors.shape[1]} dimensions)"
          + (f", {skipped} unreadable skipped (listed in {out / META})" if skipped else "") + f"; wrote {out}")
    scores = quality(index, tuple(cfg.quality_k))
    if scores:
        (out / QUALITY).write_text(json.dumps({"queries": "val", "gallery": "train", "tasks": scores}, indent=2))
        print(f"\nretrieval quality, val queries against the train split (%):\n{format_quality(scores)}\n"
              f"wrote {out / QUALITY}")
    return index


def main(argv: list[str] | None = None) -> Index:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    return report_errors(lambda: build_index(parse_args(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    main()
