"""deepart's Hydra plugins, found by Hydra's plugin scan of the `hydra_plugins` namespace package:

    ray_launcher.RayLauncher        hydra/launcher=ray: each run of a sweep a Ray task with its own GPUs and CPUs
    optuna_sweeper.OptunaSweeper    hparams_search=optuna: an Optuna (>= 4) study, ask-and-tell, with pruning

The public modules import only Hydra (every `train.py` start scans them); Ray and Optuna are imported by the
private modules (`_ray`, `_optuna`) when a sweep uses them.
"""
