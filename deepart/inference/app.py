"""A web page for a trained model: drop a painting, see the top classes per task and where the model looked.

    python -m deepart app model=<run>/checkpoints/best.pt          # http://127.0.0.1:7860
    python -m deepart app model=<run> index=<index folder>          # + the similar paintings of the index

Options are `key=value` pairs composed with conf/app.yaml (the keys are documented there). The page runs on
the CPU with Gradio (`pip install -e ".[app]"`), loads the model once and queues requests. The same page as an
`app.py` of a Hugging Face Space, next to the model:

    from deepart.inference.app import build_app, load_predictor
    build_app(*load_predictor(".")).launch()
"""
from __future__ import annotations

import collections
import contextlib
import gc
import json
import logging
import os
import queue
import sys
import tempfile
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from omegaconf import DictConfig
from PIL import Image

from deepart.core import faults
from deepart.core.cli import compose_cli, install_line
from deepart.core.errors import ConfigError, first_line, report_errors, require, require_choice
from deepart.core.files import atomic_write
from deepart.core.rundir import BEST
from deepart.data import demo
from deepart.data.images import ImageLoadError, load_rgb
from deepart.inference.index import Index
from deepart.inference.loading import Predictor, load_model
from deepart.inference.pretrained import is_export_dir
from deepart.inference.similar import Finder, similar_panel
from deepart.objectives.calibration import Calibration, min_confidence_per_task
from deepart.vis.plots import overlay, upsample_map
from deepart.vis.saliency import CAM_LAYERS, predict_with_cams

log = logging.getLogger("deepart")

CARD = "README.md"  # the model card: YAML front matter (Hugging Face `model-index`) with the val metrics
DEBUG_ENV = "DEEPART_APP_DEBUG"  # =1: the page also answers /debug_memory (memory_report)
IMAGE_HINT = "upload a painting as JPEG, PNG, WebP, GIF, TIFF or BMP"


class BadImage(ValueError):
    """An upload that cannot be analysed; the message is shown on the page as it is."""


# ------------------------------------------------------------------------------------------------ the model
@dataclass
class ModelInfo:
    """What the page says about the model."""

    source: str
    backbone: str
    encoder: str
    image_size: int
    tasks: dict[str, list[str]]
    val_top1: dict[str, float] = field(default_factory=dict)  # task -> val top-1 in %, when known
    top1_source: str = ""                                        # "model card" | "checkpoint"
    calibration: Calibration = field(default_factory=Calibration)  # the temperatures the probabilities use

    def markdown(self) -> str:
        tasks = ", ".join(f"{t} ({len(c)} classes)" for t, c in self.tasks.items())
        lines = [f"**Model** `{self.source}`: {self.backbone} backbone, {self.encoder}, {self.image_size} px input",
                 f"**Tasks** {tasks}"]
        if self.val_top1:
            scores = ", ".join(f"{t} {v:.1f} %" for t, v in self.val_top1.items())
            lines.append(f"**Val top-1** ({self.top1_source}) {scores}")
        lines.append(calibration_note(self.calibration))
        return "  \n".join(lines)


def calibration_note(calibration: Calibration) -> str:
    """Whether the page's probabilities are calibrated, and how well (ECE on images the temperature was not
    fitted on where measured)."""
    if not calibration.calibrated:
        return "**Probabilities** the model's softmax, not calibrated"
    eces = ", ".join(f"{t} {100 * e:.1f} %" for t in calibration.temperature
                     if (e := calibration.honest_ece(t)) is not None)
    return (f"**Probabilities** calibrated by temperature scaling on the {calibration.split} split"
            + (f" (ECE {eces})" if eces else ""))


def load_predictor(path: str | Path) -> tuple[Predictor, ModelInfo]:
    """The one way the page loads its model, on the CPU: an export folder (python -m deepart export), a run dir,
    a checkpoint file, or a folder holding best.pt (a Space's files).

    The val top-1 comes from the model card (README.md with YAML front matter next to the model) when there
    is one, else from the checkpoint's own val metrics.
    """
    model, ckpt = load_model(checkpoint_file(path))
    predictor = Predictor(model, "cpu")
    top1, source = card_top1(card_path(path)), "model card"
    if not top1 and ckpt is not None:
        top1, source = checkpoint_top1(ckpt.metrics, model.tasks), "checkpoint"
    encoder = "pool" if model.encoder is None else type(model.encoder).__name__
    info = ModelInfo(str(path), model.backbone.name, f"{encoder} + {type(model.pooling).__name__}",
                     int(model.input_cfg["image_size"]), model.tasks, top1, source if top1 else "",
                     predictor.calibration)
    return predictor, info


def checkpoint_file(path: str | Path) -> Path:
    """A folder holding best.pt (and no config.json) -> that file; anything else as it is, for load_model
    (an export folder, a run dir, a checkpoint file), which names what it accepts when the path is none."""
    path = Path(path)
    if path.is_dir() and (path / BEST).is_file() and not is_export_dir(path):
        return path / BEST
    return path


def card_path(path: str | Path) -> Path:
    """Where the model card sits: in the model's folder, or next to the model file."""
    path = Path(path)
    return (path if path.is_dir() else path.parent) / CARD


def card_top1(card: Path) -> dict[str, float]:
    """Val top-1 per task (in %) from a model card's front matter (`model-index` results whose metric type
    is accuracy / top-1, named by task); {} when there is no card, no front matter or no such metric."""
    if not card.is_file():
        return {}
    text = card.read_text(encoding="utf-8", errors="replace")
    if not text.startswith("---"):
        return {}
    try:
        meta = yaml.safe_load(text.split("---", 2)[1]) or {}
    except (yaml.YAMLError, IndexError):
        log.warning("%s: unreadable YAML front matter, val top-1 not shown", card)
        return {}
    found: dict[str, float] = {}
    for entry in meta.get("model-index", []) if isinstance(meta, dict) else []:
        for result in entry.get("results", []) if isinstance(entry, dict) else []:
            task = (result.get("task") or {}).get("name") if isinstance(result, dict) else None
            for metric in result.get("metrics", []) if isinstance(result, dict) else []:
                kind = f"{metric.get('type', '')} {metric.get('name', '')}".lower()
                top1 = any(k in kind for k in ("accuracy", "top-1", "top1")) and not any(
                    k in kind for k in ("top-5", "top5", "top_5"))
                if isinstance(metric.get("value"), (int, float)) and top1:
                    value = float(metric["value"])
                    found[str(task or metric.get("name"))] = value * 100 if value <= 1 else value
    return found


def checkpoint_top1(metrics: dict[str, float], tasks: dict[str, list[str]]) -> dict[str, float]:
    """Val top-1 per task (in %) from a checkpoint's metrics (`val/<task>/top1`, stored as fractions)."""
    out = {}
    for task in tasks:
        value = metrics.get(f"val/{task}/top1")
        if isinstance(value, (int, float)):
            out[task] = float(value) * 100 if value <= 1 else float(value)
    return out


# ------------------------------------------------------------------------------------------------ one image
def read_painting(path: str | Path, min_side: int, max_megapixels: float = 100) -> tuple[Image.Image, str]:
    """Decode an upload as RGB (16-bit, CMYK, alpha, palette and GIF included; an animated GIF's first
    frame). Returns the image and a note for the page; raises BadImage with a message for the user."""
    path = Path(path)
    name = path.name
    if not path.is_file() or path.stat().st_size == 0:
        raise BadImage(f"{name} is an empty file: {IMAGE_HINT}.")
    try:  # the header: what the file is, and whether the page decodes one that large
        with Image.open(path) as img:
            w, h, fmt = *img.size, img.format
            frames = getattr(img, "n_frames", 1)
    except Image.UnidentifiedImageError:
        raise BadImage(f"{name} is not an image (or a format Pillow cannot read): {IMAGE_HINT}.") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise BadImage(_undecodable(name, exc)) from None
    limit = max_megapixels * 1e6 * (64 if fmt == "JPEG" else 1)
    if w * h > limit:
        raise BadImage(f"{name} is {w}x{h} pixels ({w * h / 1e6:.0f} megapixels), more than this page "
                       f"decodes ({limit / 1e6:.0f} megapixels for {fmt}): shrink it"
                       + ("" if fmt == "JPEG" else " or save it as JPEG (JPEGs decode at reduced size)") + ".")
    try:  # decoded as the Predictor decodes files (JPEGs at reduced size, the first frame, EXIF, RGB)
        rgb = load_rgb(path, min_side, max_pixels=limit)
    except ImageLoadError as exc:
        raise BadImage(_undecodable(name, exc.__cause__ or exc)) from None
    note = f"{fmt} {w}x{h}" + (f", {frames} frames: the first one is analysed" if frames > 1 else "")
    return rgb, note


def _undecodable(name: str, exc: BaseException) -> str:
    return f"{name} could not be decoded ({first_line(exc)}); the file may be truncated or corrupt: {IMAGE_HINT}."


@dataclass
class Analysis:
    """Everything the page shows for one painting."""

    probabilities: dict[str, dict[str, float]]   # task -> class -> probability (every class; sums to 1)
    top: dict[str, list[tuple[str, float]]]        # task -> top-k (class, probability), best first
    panels: list[tuple[np.ndarray, str]]           # (H, W, 3) uint8 pictures with captions
    seconds: float
    note: str = ""
    uncertain: list[str] = field(default_factory=list)  # tasks whose top class is below min_confidence


class ModelWorker:
    """The model's own thread: requests hand it their preprocessed image and wait; it takes every image waiting
    (up to `max_batch`) and runs them as one batch, the prediction and each task's Grad-CAM from one forward
    pass (`predict_with_cams`). One thread does all the model's work, so its memory comes and goes in one
    place whatever thread Gradio answers a request on; `lock` is held while the model runs (the similar
    paintings share the model)."""

    def __init__(self, model: Any, layer: str, lock: threading.Lock, max_batch: int = 8):
        self.model, self.layer, self.lock, self.max_batch = model, layer, lock, max_batch
        self.waiting: queue.SimpleQueue = queue.SimpleQueue()
        self.batches = self.taken = 0  # batches run so far, images taken into them
        self.thread = threading.Thread(target=self._run, name="deepart-model", daemon=True)
        self.thread.start()

    def __call__(self, x: torch.Tensor) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """One image (1, 3, H, W) -> ({"logits": {task: (1, C)}, "attention": (1, h, w) | None}, {task: (H, W)})."""
        answer: Future = Future()
        self.waiting.put((x, answer))
        return answer.result()

    def _run(self) -> None:
        while True:
            jobs = [self.waiting.get()]
            while len(jobs) < self.max_batch:
                try:
                    jobs.append(self.waiting.get_nowait())
                except queue.Empty:
                    break
            self.taken += len(jobs)
            by_shape: dict[tuple, list] = {}
            for job in jobs:  # one batch per input size (the eval transform gives one size; a safeguard)
                by_shape.setdefault(tuple(job[0].shape[1:]), []).append(job)
            for group in by_shape.values():
                self._batch(group)

    def _batch(self, jobs: list[tuple[torch.Tensor, Future]]) -> None:
        faults.point("app_batch")
        try:
            with self.lock:
                out, cams = predict_with_cams(self.model, torch.cat([x for x, _ in jobs]), self.layer)
            self.batches += 1
        except Exception as exc:  # noqa: BLE001  each waiting request gets the error, the thread goes on
            for _, answer in jobs:
                answer.set_exception(exc)
            return
        for n, (_, answer) in enumerate(jobs):
            attention = out["attention"]
            answer.set_result(({"logits": {t: v[n:n + 1] for t, v in out["logits"].items()},
                                "attention": None if attention is None else attention[n:n + 1]},
                               {t: c[n] for t, c in cams.items()}))


class Analyser:
    """The page's work for one upload: decode, predict (the Predictor's answer), attention and Grad-CAM
    overlays. Thread-safe: decoding and drawing run in the calling threads, the model in its own thread
    (`ModelWorker`), which batches the images of requests that arrive together."""

    def __init__(self, predictor: Predictor, top_k: int = 5, saliency_layer: str = "backbone",
                 max_megapixels: float = 100, min_confidence=None, max_batch: int = 8):
        require_choice("saliency_layer", saliency_layer, CAM_LAYERS)
        self.predictor, self.top_k, self.layer, self.max_megapixels = predictor, top_k, saliency_layer, max_megapixels
        self.min_confidence = min_confidence_per_task(min_confidence, predictor.tasks)
        self.lock = threading.Lock()  # the model runs one batch at a time (shared with the similar paintings)
        self.worker = ModelWorker(predictor.model, saliency_layer, self.lock, max_batch)

    def __call__(self, path: str | Path) -> Analysis:
        start = time.perf_counter()
        image, note = read_painting(path, self.predictor.min_side, self.max_megapixels)
        p = self.predictor
        x = p.preprocess([image])
        out, cams = self.worker(x)
        result = p.decode(out["logits"], top_k=max(len(c) for c in p.tasks.values()),
                          min_confidence=self.min_confidence)[0]
        attention = None if out["attention"] is None else out["attention"][0].float().numpy()
        picture = x[0].permute(1, 2, 0).cpu().numpy()
        panels = [(picture, "the painting as the model sees it")]
        if attention is not None:
            panels.append((overlay(picture, upsample_map(attention, picture.shape[:2])), "attention"))
        for t, cam in cams.items():
            panels.append((overlay(picture, cam), f"Grad-CAM {t}: {result[t]['label']}"))
        probabilities = {t: dict(result[t]["top_k"]) for t in p.tasks}
        top = {t: result[t]["top_k"][:self.top_k] for t in p.tasks}
        uncertain = [f"{t} ({result[t]['label']} {result[t]['confidence']:.2f} < {self.min_confidence[t]:g})"
                     for t in p.tasks if result[t]["uncertain"]]
        return Analysis(probabilities, top, panels, time.perf_counter() - start, note, uncertain)


# ------------------------------------------------------------------------------------------------ the page
def example_paintings(folder: str | Path | None = None) -> list[Path]:
    """Images offered as examples: those of `folder`, or four synthetic demo paintings (rendered once into
    the temp dir by the demo data generator)."""
    if folder is not None:
        files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp"))
        if not files:
            raise ConfigError(f"examples={folder}: no .jpg/.png/.webp images in that folder")
        return files
    out = Path(tempfile.gettempdir()) / f"deepart-app-examples-v{demo.GENERATOR_VERSION}"
    out.mkdir(parents=True, exist_ok=True)
    picks = [("Impressionism", "landscape", 0), ("Pointillism", "cityscape", 1),
             ("Ukiyo_e", "portrait", 2), ("Cubism", "still_life", 3)]
    files = []
    for n, (style, genre, artist) in enumerate(picks):
        path = out / f"{style}_{genre}.jpg"
        if not path.is_file():
            pixels = demo.render(demo.STYLES.index(style), demo.GENRES.index(genre), artist, 256,
                                 np.random.default_rng(n))
            image = Image.fromarray(pixels)  # other processes may render the same file: each its own temporary
            atomic_write(path, lambda f, image=image: image.save(f, "JPEG", quality=92))
        files.append(path)
    return files


def build_app(predictor: Predictor, info: ModelInfo, *, top_k: int = 5, saliency_layer: str = "backbone",
              max_megapixels: float = 100, examples: str | Path | None = None, title: str = "deepart",
              concurrency: int = 2, max_queue: int = 16, min_confidence=None, index: Index | None = None,
              similar_k: int = 8, cache_age_s: int | None = 3600) -> Any:
    """The page (a queued gr.Blocks): upload / paste / example -> labels per task, overlays, timing; answers
    below `min_confidence` (a number or {task: number}) are called uncertain in the status line; with an
    `index` of the same model, the thumbnails of its `similar_k` paintings most like the upload. Uploads and
    output images are deleted from Gradio's cache `cache_age_s` seconds after they were written (None: kept
    until the page stops). With DEEPART_APP_DEBUG=1 in the environment the page also answers /debug_memory
    (`memory_report`)."""
    gr = import_gradio()
    analyse = Analyser(predictor, top_k, saliency_layer, max_megapixels, min_confidence, max_batch=concurrency)
    tasks = list(predictor.tasks)

    def on_image(path: str | None):
        empty = [None] * len(tasks) + [None]
        if not path:
            return [*empty, ""]
        try:
            result = analyse(path)
        except BadImage as exc:
            gr.Warning(str(exc), title="Not a painting this page can read")
            return [*empty, f"**Not analysed:** {exc}"]
        except Exception as exc:  # a bug must not kill the page: say so, log the trace, keep serving
            log.exception("analysing %s failed", path)
            return [*empty, f"**Not analysed:** {Path(path).name}: {type(exc).__name__}: {exc}"]
        status = f"Predicted in {result.seconds:.2f} s on the CPU ({result.note})"
        if result.uncertain:
            status += f"  \n**Uncertain** (below the confidence threshold): {', '.join(result.uncertain)}"
        return [result.probabilities[t] for t in tasks] + [result.panels, status]

    delete_cache = None if cache_age_s is None else (cache_check_s(cache_age_s), cache_age_s)
    with gr.Blocks(title=title, analytics_enabled=False, delete_cache=delete_cache) as page:
        gr.Markdown(f"# {title}\nDrop a painting (or paste one, or click an example): the model names its "
                    f"{', '.join(tasks)}, and shows where it looked.")
        gr.Markdown(info.markdown(), elem_id="model-info")
        with gr.Row():
            with gr.Column(scale=1):
                image = hand_over_undecoded(gr.Image(type="filepath", image_mode=None, label="painting",
                                                     sources=["upload", "clipboard"], elem_id="painting", height=320))
                gr.Examples([[str(p)] for p in example_paintings(examples)], inputs=image, label="examples",
                            elem_id="examples")
            with gr.Column(scale=1):
                labels = [gr.Label(num_top_classes=top_k, label=t, elem_id=f"label-{t}") for t in tasks]
        status = gr.Markdown("", elem_id="status")
        maps = gr.Gallery(label="where the model looked: attention and Grad-CAM of each task's top class",
                          columns=len(tasks) + 2, rows=1, height=300, object_fit="contain", elem_id="maps")
        image.change(on_image, inputs=image, outputs=[*labels, maps, status], api_name="predict",
                     concurrency_limit=concurrency)
        if index is not None:
            similar_panel(gr, image, Finder(index, predictor, analyse.lock), similar_k)
    folders = None if cache_age_s is None else CacheFolders(page, cache_check_s(cache_age_s), cache_age_s)
    if os.environ.get(DEBUG_ENV) == "1":
        def debug_memory() -> str:
            return json.dumps(memory_report(page, analyse.worker, folders))

        with page:
            gr.api(debug_memory, api_name="debug_memory", concurrency_limit=None)
    if folders is not None:
        folders.start()
    return page.queue(max_size=max_queue, default_concurrency_limit=concurrency)


def cache_check_s(age_s: int) -> int:
    """How often the cache is checked for files past `age_s`: a quarter of the age, at least every second and
    at most every minute."""
    return max(1, min(60, age_s // 4))


class CacheFolders(threading.Thread):
    """What Gradio's `delete_cache` leaves behind: the folder each upload or output image sits in (one per file,
    named by its hash), and a file written again into its folder just as Gradio deleted it (it is then in none
    of Gradio's lists). Every `every_s` seconds, in each folder that held one of the page's files, the files
    older than `age_s` are deleted and the folder is removed once it has been empty for a whole period (a
    folder Gradio is writing into is not empty). The files Gradio keeps (the examples) are left alone."""

    def __init__(self, page: Any, every_s: float, age_s: float):
        super().__init__(name="deepart-cache-folders", daemon=True)
        self.page, self.every_s, self.age_s = page, every_s, age_s
        self.root = Path(page.GRADIO_CACHE).resolve()
        self.candidates: set[Path] = set()
        self.lock = threading.Lock()  # held by a sweep (a memory reading waits for it to finish)

    def run(self) -> None:
        while True:
            time.sleep(self.every_s)
            with self.lock:
                self.sweep()

    def sweep(self) -> int:
        """Delete the old files and the empty folders among those that held the page's files; returns how many
        folders were removed."""
        kept = set().union(*(getattr(b, "keep_in_cache", set()) for b in list(self.page.blocks.values())))
        for files in list(self.page.temp_file_sets):
            for file in list(files - kept):
                parent = Path(file).parent
                if parent != self.root and self.root in parent.parents:
                    self.candidates.add(parent)
        removed, now = 0, time.time()
        for folder in list(self.candidates):
            try:
                for file in folder.iterdir():
                    if str(file) not in kept and now - file.lstat().st_ctime > self.age_s:
                        file.unlink(missing_ok=True)
                if now - folder.stat().st_mtime <= self.every_s or any(folder.iterdir()):
                    continue  # in use, or emptied only just now
                folder.rmdir()
                removed += 1
            except FileNotFoundError:
                pass
            except OSError:  # a file appeared in it meanwhile: kept
                continue
            self.candidates.discard(folder)
        return removed


def memory_report(page: Any, worker: ModelWorker | None = None, folders: CacheFolders | None = None) -> dict[str, Any]:
    """What the page's process holds, for tests and load checks (the /debug_memory endpoint): its resident
    memory, the Python objects alive after a full garbage collection (in all and per type), the
    threads, the files the page has in Gradio's cache and the batches the model ran."""
    with folders.lock if folders is not None else contextlib.nullcontext():  # not in the middle of a sweep
        gc.collect()
        kinds = collections.Counter(type(o).__name__ for o in gc.get_objects())
    rss = next((int(line.split()[1]) / 1024 for line in Path("/proc/self/status").read_text().splitlines()
                if line.startswith("VmRSS:")), None) if Path("/proc/self/status").is_file() else None
    return {"rss_mb": rss, "objects": sum(kinds.values()), "types": dict(kinds),
            "threads": threading.active_count(), "cache_files": sum(len(s) for s in page.temp_file_sets),
            "cache_folders": None if folders is None else len(folders.candidates),
            "batches": None if worker is None else worker.batches}


def hand_over_undecoded(image: Any) -> Any:
    """Make a gr.Image hand an upload to the app undecoded: Gradio would open it first and answer a bad
    file with its own stack-trace message; the app decodes it with its own checks (`read_painting`).
    (Done on the instance: a gr.Image subclass would make Gradio write a .pyi stub next to this module.)"""
    decode = image.preprocess

    def preprocess(payload):
        if payload is not None and payload.path and not (payload.url or "").startswith("data:"):
            return str(payload.path)
        return decode(payload)

    image.preprocess = preprocess
    return image


def import_gradio():
    try:
        import gradio as gr
    except ImportError:
        raise ConfigError(f"the web app needs Gradio, which is not installed: {install_line('app')}") from None
    return gr


# ------------------------------------------------------------------------------------------------ the command
def parse_args(argv: list[str]) -> DictConfig:
    """conf/app.yaml composed with `key=value` overrides (Hydra); bad keys and a missing model= are one line."""
    cfg = compose_cli("app", argv, required=("model",), paths=("model", "examples", "index"),
                      usage="python -m deepart app model=<export folder, run dir or checkpoint .pt> [host= port= ...]")
    require(cfg.port is None or (isinstance(cfg.port, int) and 0 < cfg.port < 65536), "port", cfg.port,
            "a port number (1-65535) or null")
    for key in ("concurrency", "max_queue", "top_k"):
        require(isinstance(cfg[key], int) and cfg[key] >= 1, key, cfg[key], "an integer >= 1")
    require(isinstance(cfg.share, bool), "share", cfg.share, "true | false")
    min_confidence_per_task(cfg.min_confidence)
    require(isinstance(cfg.similar_k, int) and cfg.similar_k >= 1, "similar_k", cfg.similar_k, "an integer >= 1")
    require(cfg.cache_age_s is None or (isinstance(cfg.cache_age_s, int) and not isinstance(cfg.cache_age_s, bool)
                                        and cfg.cache_age_s >= 1), "cache_age_s", cfg.cache_age_s,
            "a number of seconds >= 1, or null")
    return cfg


def serve(cfg: DictConfig) -> None:
    """Load the model once, build the page and serve it until interrupted."""
    import_gradio()
    predictor, info = load_predictor(cfg.model)
    index = Index.load(cfg.index) if cfg.index else None
    if index is not None:
        index.check_model(predictor.model, str(cfg.model))
    log.info("%s", info.markdown().replace("**", "").replace("  \n", "; "))
    page = build_app(predictor, info, top_k=cfg.top_k, saliency_layer=cfg.saliency_layer,
                     max_megapixels=cfg.max_megapixels, examples=cfg.examples, title=cfg.title,
                     concurrency=cfg.concurrency, max_queue=cfg.max_queue, min_confidence=cfg.min_confidence,
                     index=index, similar_k=cfg.similar_k, cache_age_s=cfg.cache_age_s)
    page.launch(server_name=cfg.host, server_port=cfg.port, share=cfg.share,
                max_file_size=f"{cfg.max_file_mb}mb", show_error=True)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's start-up probes of its own page
    report_errors(lambda: serve(parse_args(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    main()

