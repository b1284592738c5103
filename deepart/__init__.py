"""deepart: multi-attribute fine-art recognition (style, genre, artist), a Hydra-configured experiment repo.

The package, top layer first (each imports only from the layers below it; pyproject.toml's import-linter
contracts check it). Every module is named here (tests/test_docs.py checks this map against the tree):
    inference/   a trained model leaving the repo and being used: predict, export, app, index and similar (similar
                 paintings), evaluate (eval.py), ensemble (several runs as one model), loading (a checkpoint, run
                 dir or export folder -> a ready model), pretrained (the export folder), onnxrt
    training/    train() and what runs it: trainer, sweep (a sweep's jobs and summary.csv), evaluation (one
                 pass over a loader), checks (start-up config check), phases, engine, epoch_log, freezing,
                 optim, ema, lr_find, feature_cache (training a frozen backbone's phase on cached features),
                 pruning (a search trial reporting to its pruner)
    report/      the sweep report, `python -m deepart report`: sweeps (the command), runs, compare, stats,
                 tables, figures, html_page, search (the Optuna search's part)
    models/      DeepArtNet: deepartnet (the model and its heads), backbone, encoders and pooling (the
                 `sequencer` group), texture (statistics of several backbone stages: the `texture` group)
    data/        table (the multi-task table every source gives), the sources: wikiart (ArtGAN splits),
                 hf_wikiart (parquet, its images read through rowstore), folder, tabular (a CSV), demo (the
                 generator), splits; getting data: download, archive (extracting), coverage, paintings (the set of
                 experiment=paintings); reading: images, dataset, transforms (augmentation policies), mixing
                 (mixup / CutMix), samplers, loaders; cache and prepare (the resized preprocessing cache)
    objectives/  losses (the criteria picked by conf/loss/*.yaml, multi-task weighting, soft targets), metrics,
                 calibration (ECE, temperature scaling, coverage), retrieval (precision@k, mAP)
    tracking/    the experiment loggers (conf/logger/*.yaml): base (NullLogger, the interface), wandb_logger,
                 tensorboard, mlflow_logger, csv_logger, fanout (logger=many)
    vis/         pictures: plots (the one matplotlib set-up), gallery, saliency
    core/        base: config, errors, runtime, distributed, faults, cli (argv before Hydra), rundir (the
                 files of a run dir), checkpoint (the checkpoint schema, written and read there only), files
                 (atomic writes), builds (resumable chunked builds), locks (a lock between processes), yamldoc
                 (the comments of conf/ files, for --help and the reference)
    docgen       writes docs/reference/ from conf/ and the commands (`python -m deepart.docgen`)

Commands: `python -m deepart <predict|export|app|index|similar|report|download|prepare|paintings>`
(deepart/__main__.py).

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
