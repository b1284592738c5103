"""Experiment loggers: one class per tracker, picked by `logger=` (conf/logger/*.yaml, by `_target_`).

    base          NullLogger (logger=none; the interface every logger implements), logger_kind(s), SweepReport
    wandb_logger  WandbLogger: Weights & Biases, offline by default
    tensorboard   TensorBoardLogger: event files in <run>/tensorboard
    mlflow_logger MLflowLogger: a local sqlite store in the run (or sweep) dir, or a tracking server
    csv_logger    CSVLogger: <run>/metrics.csv, one row per epoch
    fanout        FanoutLogger: several of them at once (logger=many)

The classes are importable from here (`deepart.tracking.WandbLogger`): the configs saved in checkpoints name them.
"""
from deepart.tracking.base import NullLogger, SweepReport, logger_kind, logger_kinds
from deepart.tracking.csv_logger import CSVLogger
from deepart.tracking.fanout import FanoutLogger
from deepart.tracking.mlflow_logger import MLflowLogger
from deepart.tracking.tensorboard import TensorBoardLogger
from deepart.tracking.wandb_logger import WandbLogger

__all__ = ["CSVLogger", "FanoutLogger", "MLflowLogger", "NullLogger", "SweepReport", "TensorBoardLogger",
           "WandbLogger", "logger_kind", "logger_kinds"]
