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

from deepart.core.cli import prepare_argv
from deepart.core.errors import report_errors


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    from deepart.training.sweep import run_job
    from deepart.training.trainer import train

    return run_job(cfg, train)  # the objective: best val/mean_top1


if __name__ == "__main__":
    argv = report_errors(prepare_argv, sys.argv)
    from hydra_plugins.deepart_plugins._ray import start_early

    start_early(argv)  # a sweep on a Ray of its own: Ray boots while torch and timm are imported below
    from deepart.core import distributed

    sys.argv = distributed.worker_argv(argv)
    try:
        main()
    except KeyboardInterrupt as exc:  # Ctrl-C of a single run or of the basic launcher's sweep: one line
        from deepart.core.cli import interrupted

        raise interrupted(getattr(exc, "sweep_dir", None), getattr(exc, "run_dir", None)) from None
