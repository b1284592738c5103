"""deepart: multi-attribute fine-art recognition (style, genre, artist), a Hydra-configured experiment repo.

The package, top layer first (each imports only from the layers below it; pyproject.toml's import-linter
contracts check it):
    inference/   a trained model leaving the repo and being used: predict, export, app, index and similar (similar
                 paintings), evaluate (eval.py), loading (a checkpoint, run dir or export folder -> a ready
                 model), pretrained, onnxrt
    training/    train() and what runs it: trainer, sweep (a sweep's jobs and summary.csv), evaluation (one
                 pass over a loader), checks (start-up config check), phases, engine, epoch_log, freezing,
                 optim, ema, lr_find
    report/      the sweep report, `python -m deepart report`: runs, compare, stats, tables, figures, html_page
    models/      DeepArtNet: backbone, encoders and pooling (the `sequencer` group), heads
    data/        datasets, tables of labels, transforms (augmentation policies), mixing (mixup / CutMix),
                 samplers, loaders, the demo generator, downloads
    objectives/  losses (the criteria picked by conf/loss/*.yaml, multi-task weighting, soft targets), metrics,
                 calibration (ECE, temperature scaling, coverage), retrieval (precision@k, mAP)
    tracking/    the experiment loggers (conf/logger/*.yaml): base (NullLogger, the interface), wandb_logger,
                 tensorboard, mlflow_logger, csv_logger, fanout (logger=many)
    vis/         pictures: plots (the one matplotlib set-up), gallery, saliency
    core/        base: config, errors, runtime, distributed, faults, cli (argv before Hydra), rundir (the
                 files of a run dir), checkpoint (the checkpoint schema, written and read there only)

Commands: `python -m deepart <predict|export|app|index|similar|report|download|prepare>` (deepart/__main__.py).

Python API (imported on first use, so `import deepart` stays light):
    Predictor     a trained model ready for images (deepart.inference.loading)
    load_model    the model of a checkpoint, a run dir or an export folder, and its checkpoint
    load_pretrained  the model of an export folder (python -m deepart export) alone
    DeepArtNet    the model (deepart.models)
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"Predictor": "deepart.inference.loading", "load_model": "deepart.inference.loading",
            "load_pretrained": "deepart.inference.loading", "DeepArtNet": "deepart.models"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'deepart' has no attribute {name!r}")
