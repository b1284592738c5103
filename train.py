"""Train DeepArtNet. Examples:

    python train.py experiment=demo
    python train.py phase=2 loss=focal
    python train.py -m loss.gamma=1,2,3
    python train.py -m loss.gamma=1,2,3 resume_sweep=multirun/2026-01-01/12-00-00   # continue that sweep
    python train.py hparams_search=optuna                 # Optuna search (val/mean_top1)
    python train.py resume=outputs/2026-01-01/12-00-00
    torchrun --nproc_per_node=4 train.py phase=2          # data-parallel on 4 GPUs
"""
import sys

import hydra
from omegaconf import DictConfig

from deepart.core import distributed
from deepart.core.cli import prepare_argv
from deepart.core.errors import report_errors
from deepart.training.sweep import run_job
from deepart.training.trainer import train


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    return run_job(cfg, train)  # the objective: best val/mean_top1


if __name__ == "__main__":
    sys.argv = distributed.worker_argv(report_errors(prepare_argv, sys.argv))
    main()
