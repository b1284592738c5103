"""Evaluate a checkpoint: python eval.py ckpt=<run>/checkpoints/best.pt"""
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from deepart.checkpoint import run_dir_of
from deepart.cli import prepare_argv
from deepart.core.errors import report_errors
from deepart.evaluation import evaluate_checkpoint, require_checkpoint_arg

OmegaConf.register_new_resolver("run_dir_of", lambda path: run_dir_of(path).as_posix(), replace=True)


@hydra.main(config_path="conf", config_name="eval", version_base="1.3")
def main(cfg: DictConfig) -> None:
    report_errors(evaluate_checkpoint, cfg)


if __name__ == "__main__":
    sys.argv = prepare_argv(sys.argv)
    report_errors(require_checkpoint_arg, sys.argv)  # before Hydra makes <run>/eval
    main()
