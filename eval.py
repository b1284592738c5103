"""Evaluate a model: python eval.py ckpt=<run>/checkpoints/best.pt (or a run dir, or an export folder with
dataset=<option> data_root=<labelled images>); an ensemble: ckpt=<sweep dir> or ckpt=[<run>,<run>,...]"""
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from deepart.core.cli import prepare_argv, require_args
from deepart.core.errors import report_errors
from deepart.inference.evaluate import evaluate_checkpoint, output_home, require_checkpoint_arg

# where eval/ goes: the run dir of one model, the sweep dir (or the runs' common folder) of an ensemble
OmegaConf.register_new_resolver("output_home", lambda spec: output_home(spec).as_posix(), replace=True)


@hydra.main(config_path="conf", config_name="eval", version_base="1.3")
def main(cfg: DictConfig) -> None:
    report_errors(evaluate_checkpoint, cfg)


if __name__ == "__main__":
    sys.argv = report_errors(prepare_argv, sys.argv)
    if not {"-h", "--help", "--hydra-help"} & set(sys.argv[1:]):
        # before Hydra resolves its run dir from ckpt= and makes <run>/eval
        report_errors(require_args, sys.argv[1:], ["ckpt"], "python eval.py ckpt=<run>/checkpoints/best.pt "
                      "(or a run dir, or an export folder with dataset=<option> data_root=<labelled images>; "
                      "an ensemble: a sweep dir or [<run>,<run>])")
        report_errors(require_checkpoint_arg, sys.argv)
    main()
