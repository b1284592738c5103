"""deepart: multi-attribute fine-art recognition (style, genre, artist), a Hydra-configured experiment repo.

The package, top layer first (each imports only from the layers below it; pyproject.toml's import-linter
contracts check it):
    cli          argv fixes applied before Hydra parses train.py's and eval.py's command line
    sweep        a sweep's jobs (failures recorded, resume_sweep=) and its end-of-sweep summary.csv
    predict      `python -m deepart.predict`: a checkpoint's predictions for image files
    report/      the sweep report, `python -m deepart.report`: runs, compare, stats, tables, figures, html_page
    training/    train(): trainer, checks (start-up config check), phases, engine, epoch_log, freezing, optim,
                 ema, lr_find
    evaluation   one evaluation pass (training's validation too) and eval.py's work
    inference    a checkpoint -> a ready model; Predictor
    models/      DeepArtNet: backbone, encoders and pooling (the `sequencer` group), heads
    data/        datasets, tables of labels, transforms, samplers, loaders, the demo generator, downloads
    losses       the loss criteria (classes picked by conf/loss/*.yaml) and the multi-task weighting
    metrics      top-k, macro-F1, balanced accuracy, confusion matrices
    checkpoint   the checkpoint schema, written and read there only
    tracking     W&B (or nothing)
    vis/         pictures: plots (the one matplotlib set-up), gallery, saliency
    core/        base: config, errors, runtime, distributed, faults, rundir (the files of a run dir)

Python API (imported on first use, so `import deepart` stays light):
    Predictor     a trained model ready for images (deepart.inference)
    load_model    the model of a checkpoint, a run dir or an export folder, and its checkpoint (deepart.inference)
    load_pretrained  the model of an export folder (python -m deepart.export) alone (deepart.inference)
    DeepArtNet    the model (deepart.models)
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"Predictor": "deepart.inference", "load_model": "deepart.inference",
            "load_pretrained": "deepart.inference", "DeepArtNet": "deepart.models"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'deepart' has no attribute {name!r}")
