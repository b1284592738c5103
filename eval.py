"""Evaluate a checkpoint: python eval.py ckpt=<run>/checkpoints/best.pt"""
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from deepart.cli import prepare_argv, run_reporting_errors
from deepart.evaluate import evaluate_checkpoint, require_checkpoint_arg, run_dir_of

OmegaConf.register_new_resolver("run_dir_of", lambda path: run_dir_of(path).as_posix(), replace=True)


@hydra.main(config_path="conf", config_name="eval", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run_reporting_errors(evaluate_checkpoint, cfg)


if __name__ == "__main__":
    sys.argv = prepare_argv(sys.argv)
    run_reporting_errors(require_checkpoint_arg, sys.argv)  # before Hydra makes <run>/eval
    main()
