"""The frozen-feature fast path (`trainer.feature_cache`, docs/feature_cache.md): when a phase trains with its
backbone wholly frozen, the backbone's feature map of every train and val image is computed once, kept on disk,
and every epoch trains and validates the rest of the model (projection, sequencer, pooling, heads) on it.

One cache is one folder `<trainer.feature_cache_dir>/<backbone name>-<split>-<key>/`. The key is a hash of all
that the features depend on: the backbone's name, its constructor's options (backbone.*: model_kwargs such as
output_stride, drop_path_rate, ...; not the optimizer's lr_scale / layer_decay, the stage grouping vit_stages, nor
pretrained / weights, whose tensors are hashed instead) and weights (every tensor of its state dict, BatchNorm
statistics included), the split's images (the path, size and mtime of each file, in the table's order), the eval
transform (data.image_size, data.resize_size, data.square_pad, the decode size, the backbone's mean / std, and
each step of the transform as built: resize interpolation and antialiasing, crop, pad), how the backbone runs
(device type, bf16 autocast, channels_last) and the versions of torch, torchvision, timm and Pillow. Inputs that
differ in any of these give another key, hence another folder, built on first use: a stale cache is never read
(older folders stay on disk until deleted; the build's log line names the folder). A folder whose meta.json
names another key, or a complete one without its features, is refused with a line that says to delete it.

The folder: meta.json (what it was built from; "complete": false until the build's last step), features.npy
(float32 (N, C, h, w), one row per image of the split, read memory-mapped), valid.npy (which rows were readable;
an unreadable image is skipped and counted each epoch, as when training on images). A model with `texture`
statistics (deepart.models.texture) also gets texture.npy (float32 (N, D): each image's raw statistics of the
chosen stages, a few thousand floats, never the intermediate maps), and the texture's options join the key; a model
without a sequencer (sequencer=none) reads the statistics alone, so its folder has no features.npy. Statistics
that train with the model (texture.gram_reduce=learned) cannot be cached: such a phase trains on images.
With data.hflip (and trainer.feature_cache_hflip, on by default) the train split's folder also holds each array of
the images' mirror images (features.hflip.npy, texture.hflip.npy; `views` in meta.json and the key), and training
reads an image or its mirror image by a coin of the sampler's per-image seed: the flip kept on the frozen path.

While it is being built, chunks/ holds the features of each finished chunk of `trainer.feature_cache_chunk`
images, each written atomically (deepart.core.builds, as the vector index does): a killed build continues after
its last complete chunk when training starts again.

A build writes into a folder of its own beside the cache's, `.<folder name>.<host>.<pid>.build`, and publishes it
with one rename when it is complete; a build a killed process of the same host left is taken over (by a rename)
and continued. Runs at the same time (the runs of a parallel sweep) build a folder once: the build holds an
exclusive lock on `.<folder name>.lock` beside it (deepart.core.locks); another run that needs the folder logs that
it waits for the holder (its pid and host), then reads the finished cache, or, when the holder died mid-way (the
kernel frees its lock), continues its build from the chunks on disk. The lock only saves work: builders it does not
keep apart (flock per host on NFS, Lustre's localflock, many FUSE mounts) each build privately, the first rename
publishes, the others drop their copy. A complete folder is never written again, so it is read without the lock.
"""
from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import logging
import os
import re
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL
import timm
import torch
import torchvision
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision.transforms import v2
from tqdm.auto import tqdm

from deepart.core.builds import CHUNKS, ChunkedBuild, read_record, update_with_tensors
from deepart.core.errors import ConfigError, DataError, require
from deepart.core.files import atomic_write, atomic_write_text
from deepart.core.locks import LockError, exclusive
from deepart.core.runtime import Runtime
from deepart.data.dataset import PaintingDataset, collate
from deepart.data.images import source_file
from deepart.data.loaders import eval_loader, num_workers, train_loader
from deepart.data.table import TaskTable
from deepart.data.transforms import min_decode_side, resize_size, transform_from_config
from deepart.models.deepartnet import DeepArtNet

log = logging.getLogger("deepart")

FORMAT, VERSION = "deepart-features", 1
META, FEATURES, VALID, TEXTURE = "meta.json", "features.npy", "valid.npy", "texture.npy"
#: a view's arrays beside the image's own: "features.hflip.npy" holds the features of each image's mirror image
HFLIP = "hflip"


def view_array(name: str, view: str | None) -> str:
    """The file of array `name` (features.npy, texture.npy) for `view` (None: the image as the eval transform
    gives it)."""
    return name if view is None else f"{name[:-len('.npy')]}.{view}.npy"


def cache_hflip(cfg: DictConfig) -> bool:
    """Whether the train split's cache holds each image's mirror image too, for data.hflip to draw from
    (trainer.feature_cache_hflip with data.hflip)."""
    value = cfg.trainer.get("feature_cache_hflip", True)
    require(isinstance(value, bool), "trainer.feature_cache_hflip", value, "true | false")
    return bool(cfg.data.get("hflip")) and value


# ------------------------------------------------------------------------------------------------ when it is used
def train_augmentation(cfg: DictConfig) -> list[str]:
    """The options by which the training pass sees another input than the eval transform of each image (random
    crop, augment.policy, erasing, mixup / CutMix; the flip unless the cache holds the mirror images,
    trainer.feature_cache_hflip): with any of them the cached features cannot stand in."""
    data, augment = cfg.data, cfg.augment
    found = []
    if data.get("hflip") and not cache_hflip(cfg):
        found.append("data.hflip=true (with trainer.feature_cache_hflip=false)")
    scale = [float(s) for s in data.get("train_crop_scale") or (1.0, 1.0)]
    if scale != [1.0, 1.0]:
        found.append(f"data.train_crop_scale={scale}")
    if augment.get("policy", "none") != "none":
        found.append(f"augment.policy={augment.policy}")
    for key in ("erasing", "mixup_alpha", "cutmix_alpha"):
        if augment.get(key):
            found.append(f"augment.{key}={augment[key]}")
    return found


def stochastic_layers(backbone: nn.Module) -> list[str]:
    """The backbone's layers that draw at random in training mode (dropout, drop path): a frozen backbone with
    them still gives other features at every step."""
    return [name for name, m in backbone.named_modules()
            if (isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0) or float(getattr(m, "drop_prob", 0) or 0) > 0]


def backbone_frozen(model: DeepArtNet) -> bool:
    """Whether the phase's freezing leaves the backbone unchanged by training: no trainable parameter, every
    BatchNorm kept in eval mode."""
    backbone = model.backbone
    norms = [m for m in backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    return (not any(p.requires_grad for p in backbone.parameters())
            and all(any(m is f for f in model.frozen_norms) for m in norms))


def use_feature_cache(cfg: DictConfig, model: DeepArtNet, phase: str, distributed: bool) -> bool:
    """Whether phase `phase` (frozen as it will train) trains on cached backbone features.

    false: never. auto: when the backbone is wholly frozen and nothing makes the training pass differ from the
    eval transform's features (train_augmentation, stochastic_layers); otherwise not, with the reason logged.
    true: whenever the backbone is wholly frozen, with the augmentation off (each training image is its eval
    transform's view: no random crop or flip, no policy, erasing or mixing), said in a warning. A phase that trains
    the backbone runs on images under every mode. Data-parallel runs: auto does not use it, true is refused."""
    mode = cfg.trainer.get("feature_cache", False)
    require(mode == "auto" or isinstance(mode, bool), "trainer.feature_cache", mode, "auto | true | false")
    if mode is False or not backbone_frozen(model):
        if mode is True:
            log.info("phase %s trains the backbone: it trains on images (trainer.feature_cache applies to phases "
                     "whose backbone is frozen)", phase)
        return False
    if distributed:
        if mode is True:
            raise ConfigError("trainer.feature_cache=true is not supported in a data-parallel (torchrun) run; set "
                              "trainer.feature_cache=auto or false")
        log.info("phase %s: backbone frozen; no feature cache in a data-parallel run", phase)
        return False
    if model.texture is not None and not model.texture.cacheable:
        if mode is True:
            raise ConfigError("trainer.feature_cache=true: texture.gram_reduce=learned trains with the model, so "
                              "its statistics cannot be cached; set texture.gram_reduce=first or "
                              "trainer.feature_cache=auto")
        log.info("phase %s: backbone frozen, but the texture statistics train with the model "
                 "(texture.gram_reduce=learned), so it trains on images", phase)
        return False
    conflicts = train_augmentation(cfg) + [f"backbone dropout / drop path ({name})"
                                           for name in stochastic_layers(model.backbone)[:1]]
    if conflicts and mode == "auto":
        log.info("phase %s: backbone frozen, but training varies its input (%s), so it trains on images; without "
                 "them (or with trainer.feature_cache=true, which turns them off) it trains on cached backbone "
                 "features", phase, ", ".join(conflicts))
        return False
    if conflicts:
        log.warning("trainer.feature_cache=true: phase %s trains on the cached features of each image's eval "
                    "transform, so %s do not apply", phase, ", ".join(conflicts))
    return True


# ------------------------------------------------------------------------------------------------ the cache
#: backbone.* keys that leave the features as they are: the optimizer's (lr_scale, layer_decay), the grouping of
#: blocks into stages (vit_stages), and where the weights come from (pretrained, weights: the tensors are hashed).
NOT_FEATURES = ("lr_scale", "layer_decay", "vit_stages", "pretrained", "weights")


def versions() -> dict[str, str]:
    """The libraries whose code computes the features: the backbone's layers, the decoding and the resizing."""
    return {"torch": str(torch.__version__), "torchvision": str(torchvision.__version__),
            "timm": str(timm.__version__), "Pillow": str(PIL.__version__)}


def cache_key(cfg: DictConfig, model: DeepArtNet, table: TaskTable, split: str, rt: Runtime,
              transform: v2.Compose | None = None) -> dict:
    """What a split's features are computed from, and its `key` (see the module docstring); `transform`: the eval
    transform the build applies (default: the one of cfg.data). The train split's cache holds the mirror images
    too when data.hflip draws from them (`cache_hflip`)."""
    backbone, data_cfg = model.backbone, cfg.data
    transform = transform or transform_from_config(data_cfg, train=False)
    options = OmegaConf.to_container(cfg.backbone, resolve=True)
    image_size = int(data_cfg.image_size)
    inputs = {
        "backbone": str(getattr(backbone, "name", type(backbone).__name__)), "split": split,
        "backbone_options": {k: v for k, v in sorted(options.items()) if k not in NOT_FEATURES},
        "transform": {"image_size": image_size, "resize_size": resize_size(image_size, data_cfg.get("resize_size")),
                      "square_pad": bool(data_cfg.get("square_pad")), "decode_side": min_decode_side(data_cfg),
                      "mean": list(backbone.mean), "std": list(backbone.std),
                      "steps": [repr(step) for step in transform.transforms]},
        "runtime": {"device": rt.device.type, "bf16": rt.bf16, "channels_last": rt.channels_last},
        "versions": versions(),
    }
    texture = model.texture
    if texture is not None:  # only then: a model without texture keeps the keys of folders built before it existed
        inputs["texture"] = {"stages": texture.stages, "kind": texture.kind, "gram_channels": texture.gram_k}
        inputs["arrays"] = ([FEATURES] if model.pooling is not None else []) + [TEXTURE]
    if split == "train" and cache_hflip(cfg):  # likewise: one view keeps the keys of folders built before views
        inputs["views"] = [HFLIP]
        inputs["arrays"] = [view_array(name, view) for view in (None, HFLIP) for name in arrays(inputs)]
    digest = hashlib.sha256(json.dumps({"format": FORMAT, "version": VERSION, **inputs}, sort_keys=True).encode())
    update_with_tensors(digest, backbone.state_dict())
    for path in table.frame(split)["path"]:
        resolved = table.resolve(path)
        try:
            st = source_file(resolved).stat()
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        digest.update(f"{resolved}\0{stamp}\n".encode())
    return {**inputs, "key": digest.hexdigest()[:16], "n_items": len(table.frame(split))}


def cache_folder(root: Path, inputs: dict) -> Path:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", inputs["backbone"])
    return root / f"{name}-{inputs['split']}-{inputs['key']}"


def lock_file(folder: Path) -> Path:
    return folder.with_name(f".{folder.name}.lock")


def read_meta(folder: Path) -> dict | None:
    return read_record(folder / META, FORMAT, f"delete {folder} to build the cache again",
                       f"not a deepart feature cache; delete {folder} or set trainer.feature_cache_dir")


def complete_meta(folder: Path, inputs: dict) -> dict | None:
    """The folder's meta.json (None when there is none), checked: of these inputs, and when complete, whole."""
    meta = read_meta(folder)
    if meta is not None and meta.get("key") != inputs["key"]:
        raise DataError(f"{folder}: holds a feature cache of other inputs (key {meta.get('key')}, not "
                        f"{inputs['key']}); delete the folder to build it again")
    wanted = [*arrays(meta or inputs), VALID]
    if meta is not None and meta["complete"] and not all((folder / name).is_file() for name in wanted):
        raise DataError(f"{folder}: the feature cache is damaged ({' or '.join(wanted)} missing); delete the "
                        f"folder to build it again")
    return meta


def arrays(meta: dict) -> list[str]:
    """The per-image arrays of a cache: the last feature map and / or the texture statistics (and the same of the
    mirror images, with a `views` entry)."""
    return list(meta.get("arrays", [FEATURES]))


def cached_features(cfg: DictConfig, model: DeepArtNet, table: TaskTable, split: str, rt: Runtime, root: Path,
                    chunk_size: int, batch_size: int, bar: bool) -> Path:
    """The folder of the split's complete feature cache: reused when there, else built under its lock (or its
    interrupted build finished); while another process holds the lock, this one waits for it."""
    transform = transform_from_config(cfg.data, train=False)
    inputs = cache_key(cfg, model, table, split, rt, transform)
    folder = cache_folder(root, inputs)

    def waiting(holder: str) -> None:
        log.info("feature cache: waiting for %s: another process is building it (%s)", folder, holder or "pid unknown")

    meta = complete_meta(folder, inputs)
    if meta is None or not meta["complete"]:
        root.mkdir(parents=True, exist_ok=True)
        # the lock only saves work: each build writes into a folder of its own and publishes it by one rename, so
        # builders the lock does not keep apart (flock per host on NFS, Lustre localflock, FUSE) stay correct
        no_lock = os.environ.get("DEEPART_TEST_NO_LOCK") == "1"  # the project's tests: builders not kept apart
        with contextlib.nullcontext() if no_lock else exclusive(lock_file(folder), waiting):
            meta = complete_meta(folder, inputs)  # what the process this one waited for left
            if meta is None or not meta["complete"]:
                staging = build_folder(folder)
                meta = complete_meta(staging, inputs) or {"format": FORMAT, "version": VERSION, "complete": False,
                                                          "chunk_size": chunk_size, **inputs}
                dataset = PaintingDataset(table, split, transform, min_decode_side(cfg.data))
                _build(model, dataset, rt, staging, meta, batch_size, num_workers(cfg.data), bar)
                publish(staging, folder, inputs)
                return folder
    log.info("feature cache: reusing %s (%d %s images)", folder, meta["n_items"], split)
    return folder


def build_folder(folder: Path) -> Path:
    """This process's private build folder for `folder` (`.<name>.<host>.<pid>.build` beside it): the one a dead
    build of this host left, taken over by a rename (its chunks are kept: the build continues after them; of two
    takers only one rename succeeds), else a new one. A build folder of another host is never taken: whether its
    builder lives is not known here."""
    host = socket.gethostname()
    own = folder.with_name(f".{folder.name}.{host}.{os.getpid()}.build")
    for left in sorted(folder.parent.glob(f".{glob.escape(folder.name)}.{glob.escape(host)}.*.build")):
        pid = left.name[:-len(".build")].rsplit(".", 1)[-1]
        if left != own and pid.isdigit() and not _alive(int(pid)):
            try:
                left.rename(own)
                return own
            except OSError:  # taken by another process first
                continue
    return own


def _alive(pid: int) -> bool:
    """Whether process `pid` of this host runs (a killed one not yet reaped, a zombie, does not)."""
    if os.path.isdir("/proc/self"):
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
        except OSError:
            return False
    try:  # no /proc here
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def publish(staging: Path, folder: Path, inputs: dict) -> None:
    """Move a finished build into place with one rename. When another build published `folder` first, this copy
    is dropped (both hold the same features); an unfinished `folder` (a build of an older release, built in place)
    is set aside first."""
    for _ in range(2):
        try:
            staging.rename(folder)  # atomic; refused while `folder` exists and is not empty
            return
        except OSError:
            meta = complete_meta(folder, inputs)
            if meta is not None and meta["complete"]:
                shutil.rmtree(staging, ignore_errors=True)
                log.info("feature cache: %s was published by another process meanwhile; this build's copy is "
                         "dropped", folder)
                return
            aside = folder.with_name(f".{folder.name}.{socket.gethostname()}.{os.getpid()}.old")
            try:
                folder.rename(aside)
            except OSError:  # gone meanwhile: published, or set aside by another process
                continue
            shutil.rmtree(aside, ignore_errors=True)
    staging.rename(folder)


def _build(model: DeepArtNet, dataset: PaintingDataset, rt: Runtime, folder: Path, meta: dict, batch_size: int,
           workers: int, bar: bool) -> None:
    """Build the folder (its lock held) after the chunks already on disk; half-written files that a killed build
    left (.*.tmp) are removed first."""
    if not (folder / META).is_file():
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / META, json.dumps(meta, indent=2))
    for partial in [*folder.glob(".*.tmp"), *(folder / CHUNKS).glob(".*.tmp")]:
        partial.unlink(missing_ok=True)
    build = ChunkedBuild(folder, meta["n_items"], meta["chunk_size"], "feature_chunk")
    done = build.done()
    log.info("feature cache: building %s (%d %s images%s)", folder, meta["n_items"], meta["split"],
             f"; resuming after {len(done)} of {build.n_chunks} chunks" if done else "")

    def compute(rows: range, progress: tqdm) -> dict[str, np.ndarray]:
        loader = DataLoader(Subset(dataset, list(rows)), batch_size=batch_size, collate_fn=collate,
                            num_workers=max(min(workers, len(rows) - 1), 0))
        found, bad = [], []
        values: dict[str, list[np.ndarray]] = {name: [] for name in names}
        for batch in loader:
            bad += batch["bad"]
            if "image" in batch:
                x = model.normalize(rt.images(batch))
                for view in views:
                    with torch.inference_mode(), rt.autocast():  # exactly the backbone pass of DeepArtNet.features
                        fmap, raw = backbone_pass(model, x if view is None else x.flip(-1))
                    for name, value in ((FEATURES, fmap), (TEXTURE, raw)):
                        if view_array(name, view) in values:
                            values[view_array(name, view)].append(value.float().cpu().contiguous().numpy())
                found.append(batch["index"].numpy())
            progress.update(len(batch["index"]) + len(batch["bad"]))
        out = {"rows": np.concatenate(found) if found else np.zeros(0, np.int64),
               "bad": np.array([p for p, _ in bad], dtype=str), "errors": np.array([e for _, e in bad], dtype=str)}
        for name, parts in values.items():
            empty = np.zeros((0, 0, 0, 0) if name.startswith("features") else (0, 0), np.float32)
            out[chunk_key(name)] = np.concatenate(parts) if parts else empty
        return out

    names = arrays(meta)
    views = [None, *meta.get("views", [])]

    training = model.training
    model.eval()
    try:
        build.run(compute, desc=f"features {meta['split']}", bar=bar)
    finally:
        model.train(training)
    _finish(folder, build, meta)


def backbone_pass(model: DeepArtNet, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The backbone's last map and, for a model with texture statistics, their raw values (B, raw_dim), from one
    pass over normalised images: what DeepArtNet.features gives DeepArtNet.from_backbone."""
    fmap, maps = model.backbone_maps(x)
    return fmap, None if maps is None else model.texture.stats(maps)


def chunk_key(name: str) -> str:
    """The key of per-image array `name` in a chunk file (features.npy: features, texture.hflip.npy:
    texture.hflip)."""
    return name[:-len(".npy")]


def _finish(folder: Path, build: ChunkedBuild, meta: dict) -> None:
    """The chunks joined into features.npy / texture.npy (each written through a memory map, then renamed into
    place) and valid.npy, meta.json marked complete, the chunks removed."""
    n = meta["n_items"]
    skipped = [{"path": str(p), "error": str(e)} for c in build.load() for p, e in zip(c["bad"], c["errors"])]
    shapes = {}
    for name in arrays(meta):
        key = chunk_key(name)
        shapes[name] = next((c[key].shape[1:] for c in build.load() if len(c["rows"])), None)
        if shapes[name] is None and n:
            first = f" ({skipped[0]['path']}: {skipped[0]['error']})" if skipped else ""
            raise DataError(f"the {meta['split']} split: none of its {n} images could be read{first}")
        default = (0, 0, 0) if name.startswith("features") else (0,)
        partial = folder / f".{name}.{os.getpid()}.tmp"
        values = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float32, shape=(n, *(shapes[name] or default)))
        for chunk in build.load():
            if len(chunk["rows"]):
                values[chunk["rows"]] = chunk[key]
        values.flush()
        del values
        with open(partial, "rb+") as f:
            os.fsync(f.fileno())
        partial.replace(folder / name)
    valid = np.zeros(n, dtype=bool)
    for chunk in build.load():
        valid[chunk["rows"]] = True
    atomic_write(folder / VALID, lambda f: np.save(f, valid))
    meta = {**meta, "complete": True, "shape": list(shapes.get(FEATURES) or ()), "skipped": skipped}
    if TEXTURE in shapes:
        meta["texture_dim"] = int((shapes[TEXTURE] or (0,))[0])
    atomic_write_text(folder / META, json.dumps(meta, indent=2))
    build.clear()


class FeatureDataset(Dataset):
    """A split's cached features as the items a loader of its images would give: {image: float32 (C, h, w)
    feature map, labels, index}, or a `bad` marker for an image that could not be read. Keys may be `(index,
    seed)` pairs (the project's samplers); in a cache with the mirror images (`views`), the seed's lowest bit picks
    the image or its mirror image, as data.hflip's coin does on images (a plain index: the image).

    With texture statistics, `image` is the feature map (if cached) and the statistics packed in one float32
    (D, 1, 1) tensor, which `FromBackbone` unpacks (`layout`: the map's shape or None, the statistics' size)."""

    def __init__(self, folder: Path, table: TaskTable, split: str):
        meta = read_meta(folder)
        names = arrays(meta)
        self.views: list[str | None] = [None, *meta.get("views", [])]

        def load(name: str) -> list[np.ndarray] | None:  # the array of each view
            return [np.load(folder / view_array(name, v), mmap_mode="r") for v in self.views] if name in names \
                else None

        self.features, self.texture = load(FEATURES), load(TEXTURE)
        self.layout = (tuple(self.features[0].shape[1:]) if self.features is not None else None,
                       int(self.texture[0].shape[1]) if self.texture is not None else 0)
        self.valid = np.load(folder / VALID)
        self.labels = torch.from_numpy(table.labels(split))
        self.paths = [str(table.resolve(p)) for p in table.frame(split)["path"]]
        self.errors = {s["path"]: s["error"] for s in meta["skipped"]}

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        plain = isinstance(key, (int, np.integer))
        index = int(key) if plain else int(key[0])
        if not self.valid[index]:
            return {"bad": self.paths[index], "error": self.errors.get(self.paths[index], "unreadable")}
        view = 0 if plain or len(self.views) == 1 else int(key[1]) % len(self.views)
        if self.texture is None:
            image = torch.from_numpy(np.array(self.features[view][index]))
        else:
            parts = [np.asarray(self.features[view][index]).reshape(-1)] if self.features is not None else []
            image = torch.from_numpy(np.concatenate([*parts, np.asarray(self.texture[view][index])])).view(-1, 1, 1)
        return {"image": image, "labels": self.labels[index], "index": index}


# ------------------------------------------------------------------------------------------------ training on it
class FromBackbone(nn.Module):
    """The model from its backbone's feature map on: forward(features) gives what forward(images) gives. With
    texture statistics, the input is FeatureDataset's packed (B, D, 1, 1) tensor of `layout` (map shape or None,
    statistics size)."""

    def __init__(self, model: DeepArtNet, layout: tuple[tuple[int, ...] | None, int] = (None, 0)):
        super().__init__()
        self.model = model
        self.layout = layout

    def forward(self, fmap: torch.Tensor) -> dict:
        shape, size = self.layout
        if size:  # unpack the map (if any) and the raw texture statistics
            flat = fmap.flatten(1)
            split = flat.shape[1] - size
            maps = flat[:, :split].reshape(len(flat), *shape) if shape is not None else None
            out = self.model.from_backbone(maps, flat[:, split:])
        else:
            out = self.model.from_backbone(fmap)
        return {"logits": out["logits"], "attention": out["attention"]}


def cached_val(cfg: DictConfig, model: DeepArtNet, table: TaskTable, rt: Runtime,
               batch_size: int) -> tuple[DataLoader, nn.Module] | None:
    """The val split's complete feature cache of `model` as it is now (the key holds its backbone's weights: a
    checkpoint whose backbone was frozen finds the folder its training built), as a loader and the model that reads
    it: the run's final evaluation of best.pt without a backbone pass. None when there is none, or with
    trainer.feature_cache=false, trainer.tta_hflip (the cache has no mirror images of val) or a texture that trains
    with the model; nothing is built here."""
    trainer = cfg.trainer
    if trainer.get("feature_cache", False) is False or trainer.tta_hflip or \
            (model.texture is not None and not model.texture.cacheable):
        return None
    inputs = cache_key(cfg, model, table, "val", rt)
    folder = cache_folder(Path(trainer.get("feature_cache_dir") or "data/features"), inputs)
    try:
        meta = complete_meta(folder, inputs)
    except DataError:  # a damaged folder: the images say the same
        return None
    if meta is None or not meta["complete"]:
        return None
    dataset = FeatureDataset(folder, table, "val")
    log.info("final evaluation on the cached backbone features of %s (the checkpoint's backbone built them)", folder)
    return (eval_loader(table, cfg.data, batch_size, str(rt.device), workers=0, dataset=dataset),
            FromBackbone(model, dataset.layout))


@dataclass
class FeaturePath:
    """A phase's training on cached features: its train loader (the image loader's sampler: the same batches),
    its val loader (None: validation runs on images, as trainer.tta_hflip needs) and the model as trained."""

    train_dl: DataLoader
    val_dl: DataLoader | None
    net: nn.Module
    layout: tuple[tuple[int, ...] | None, int] = (None, 0)

    def wrap(self, model: DeepArtNet) -> nn.Module:
        return FromBackbone(model, self.layout)


def open_feature_path(cfg: DictConfig, model: DeepArtNet, table: TaskTable, phase: DictConfig, rt: Runtime,
                      distributed: bool, eval_batch_size: int) -> FeaturePath | None:
    """The phase's FeaturePath, its caches built or reused, when `use_feature_cache` says so; else None."""
    if not use_feature_cache(cfg, model, str(phase.name), distributed):
        return None
    trainer = cfg.trainer
    chunk = trainer.get("feature_cache_chunk", 256)
    require(isinstance(chunk, int) and not isinstance(chunk, bool) and chunk >= 1, "trainer.feature_cache_chunk",
            chunk, "an integer >= 1")
    root = Path(trainer.get("feature_cache_dir") or "data/features")
    splits = ["train"] if trainer.tta_hflip else ["train", "val"]
    try:
        folders = {split: cached_features(cfg, model, table, split, rt, root, chunk, eval_batch_size,
                                          bool(trainer.progress_bar)) for split in splits}
    except LockError as exc:
        where = "put trainer.feature_cache_dir on a file system with file locks (flock), e.g. a local disk"
        if trainer.feature_cache is True:
            raise DataError(f"trainer.feature_cache=true: {exc}; {where}, or set trainer.feature_cache=false") from None
        log.warning("phase %s trains on images: building the feature cache needs a file lock (%s); %s to use it",
                    phase.name, exc, where)
        return None
    device = str(rt.device)
    train_dl = train_loader(table, cfg.data, cfg.sampler, phase.batch_size, cfg.seed, device,
                            dataset=FeatureDataset(folders["train"], table, "train"), workers=0)
    val_dl = eval_loader(table, cfg.data, eval_batch_size, device, workers=0,
                         dataset=FeatureDataset(folders["val"], table, "val")) if "val" in folders else None
    layout = train_dl.dataset.layout
    net = FromBackbone(model, layout)
    log.info("phase %s: trains%s on cached backbone features%s%s%s", phase.name, "" if val_dl is None else
             " and validates", f" and texture statistics ({layout[1]} per image)" if layout[1] else "",
             " (each image or its mirror image at random: data.hflip)" if len(train_dl.dataset.views) > 1 else "",
             " (validation on images: trainer.tta_hflip)" if val_dl is None else "")
    return FeaturePath(train_dl, val_dl, torch.compile(net) if trainer.compile else net, layout)
