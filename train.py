"""Train DeepArtNet. Examples:

    python train.py experiment=demo
    python train.py phase=2 loss=focal
    python train.py -m loss.gamma=1,2,3
    python train.py resume=outputs/2026-01-01/12-00-00
"""
import sys

import hydra
from omegaconf import DictConfig

from deepart.cli import prepare_argv, run_reporting_errors
from deepart.training.run import OBJECTIVE, train


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    summary = run_reporting_errors(train, cfg)
    return summary["best"].get(OBJECTIVE, 0.0)


if __name__ == "__main__":
    sys.argv = prepare_argv(sys.argv)
    main()
