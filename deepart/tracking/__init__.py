"""Experiment loggers: one class per tracker, picked by `logger=` (conf/logger/*.yaml, by `_target_`).

    base     NullLogger (logger=none; the interface every logger implements) and logger_kind
    WandbLogger  Weights & Biases, offline by default
"""
from deepart.tracking.base import NullLogger, WandbLogger, logger_kind

__all__ = ["NullLogger", "WandbLogger", "logger_kind"]
