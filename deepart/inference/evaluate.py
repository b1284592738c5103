"""What eval.py does from a checkpoint, a run dir or an export folder alone (`evaluate_checkpoint`)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from deepart.core.checkpoint import Checkpoint
from deepart.core.config import build, compose_config, eval_batch_size, group_options
from deepart.core.errors import ConfigError, DataError, require_choice
from deepart.core.rundir import METRICS, eval_dir, predictions_file, run_dir_of, write_metrics
from deepart.core.runtime import Runtime, check_threads
from deepart.data import demo as demo_data
from deepart.data.dataset import SkipCounter
from deepart.data.loaders import data_root, eval_loader, load_table, set_data_root
from deepart.inference.loading import load_model, resolve_model_path
from deepart.objectives.metrics import format_table, per_class_table
from deepart.tracking import NullLogger, logger_kind, logger_kinds
from deepart.training.evaluation import PredictionRecorder, evaluate_loader
from deepart.vis.gallery import MistakeGallery, read_png
from deepart.vis.plots import plot_confusion

log = logging.getLogger("deepart")

SPLITS = ("val", "train", "test")


def require_checkpoint_arg(argv: list[str]) -> None:
    """Refuse a `ckpt=` argument that names nothing loadable, before anything is written."""
    given = [a.split("=", 1)[1] for a in argv[1:] if a.startswith("ckpt=")]
    if given:
        resolve_model_path(given[-1])


def run_config(cfg: DictConfig, model, ckpt: Checkpoint | None) -> DictConfig:
    """The config an evaluation runs under: the checkpoint's run config, or for an export folder (which keeps
    no training config) the project defaults with `dataset=<data option>` and the model's own input config."""
    if ckpt is not None:
        run_cfg = OmegaConf.create(ckpt.config)
    else:
        data = cfg.get("dataset")
        if not data:
            raise ConfigError(f"ckpt={cfg.ckpt} is an export folder, which does not record the training data: pass "
                              f"dataset=<{' | '.join(group_options('data'))}> and data_root=<the labelled images>")
        require_choice("dataset", data, group_options("data"))
        run_cfg = _project_config([f"data={data}", "logger=none"])
        OmegaConf.set_struct(run_cfg, False)
        for key in ("image_size", "resize_size", "square_pad"):
            run_cfg.data[key] = model.input_cfg[key]
        if data == "demo" and cfg.get("data_root"):  # read the demo folder given as it is, never regenerate it
            run_cfg.data.source.update(demo_data.recorded_params(cfg.data_root) or {})
    if cfg.get("data_root"):
        set_data_root(run_cfg.data, cfg.data_root)
    return run_cfg


def _project_config(overrides: list[str]) -> DictConfig:
    """conf/config.yaml with `overrides`, also from inside eval.py's Hydra job (which already holds conf/)."""
    from hydra import compose
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        return compose(config_name="config", overrides=overrides)
    return compose_config(overrides)


def compute_val_metrics(model, ckpt: Checkpoint, data_root: str | None = None, batch_size: int | None = None,
                        workers: int = 2, device: str = "auto") -> dict[str, float]:
    """Val metrics (`val/<task>/{top1,top5,macro_f1,...}`) of `model` on the val split of `ckpt`'s run data."""
    run_cfg = run_config(OmegaConf.create({"ckpt": str(ckpt.path), "data_root": data_root}), model, ckpt)
    table, rt, model, loss_fn = _evaluation_setup(run_cfg, model, ckpt, device=device, precision="fp32", threads=None)
    loader = eval_loader(table, run_cfg.data, batch_size or eval_batch_size(run_cfg), str(rt.device), workers=workers)
    hflip = run_cfg.trainer.get("tta_hflip", False)
    metrics, _ = evaluate_loader(model, loss_fn, loader, rt, model.tasks,
                                 skips=SkipCounter(), progress=True, desc="val metrics", hflip=hflip)
    return metrics


def _evaluation_setup(run_cfg: DictConfig, model, ckpt: Checkpoint | None, **trainer: Any):
    """The data table (checked against the model's tasks), the runtime (the run's `trainer` settings with
    `trainer` overriding them), the model on its device and the run's loss (with its learned weights)."""
    table = load_table(run_cfg.data)
    if table.tasks != model.tasks:
        raise DataError(f"the data ({data_root(run_cfg.data)}) defines tasks/classes that differ from those "
                        f"the model was trained on ({list(model.tasks)}); pass data_root=<the run's data>")
    rt = Runtime.from_config({**run_cfg.trainer, **trainer})
    loss_fn = build(run_cfg.loss, tasks=model.tasks)
    if ckpt is not None and ckpt.loss is not None:
        loss_fn.load_state_dict(ckpt.loss)
    return table, rt, rt.prepare(model), loss_fn.to(rt.device)


def evaluate_checkpoint(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate a checkpoint on its run's validation split; write metrics.json, per-class CSV and
    confusion-matrix PNGs to `out_dir` (default <run dir>/eval). Returns the metrics."""
    require_choice("split", cfg.split, SPLITS)
    check_threads("threads", cfg.get("threads"))
    model, ckpt = load_model(cfg.ckpt)
    source = ckpt.path if ckpt is not None else resolve_model_path(cfg.ckpt)[1]
    run_cfg = run_config(cfg, model, ckpt)
    tasks = model.tasks
    table, rt, model, loss_fn = _evaluation_setup(
        run_cfg, model, ckpt, device=cfg.device, threads=cfg.get("threads"),
        precision=cfg.get("precision") or run_cfg.trainer.get("precision", "auto"))

    loader = eval_loader(table, run_cfg.data, cfg.batch_size or eval_batch_size(run_cfg), str(rt.device),
                         split=cfg.split, workers=cfg.num_workers)
    skips = SkipCounter()
    gallery = MistakeGallery(tasks, cfg.get("gallery", 16))
    recorder = PredictionRecorder(tasks, table.frame(cfg.split)["path"].tolist())
    hflip = cfg.tta_hflip if cfg.get("tta_hflip") is not None else run_cfg.trainer.get("tta_hflip", False)
    metrics, meter = evaluate_loader(model, loss_fn, loader, rt, tasks, skips=skips, progress=True, hflip=hflip,
                                     desc=f"eval {cfg.split}", collect=lambda b, o: (gallery(b, o), recorder(b, o)))
    if cfg.split != "val":
        metrics = {k.replace("val/", f"{cfg.split}/", 1): v for k, v in metrics.items()}

    out_dir = Path(cfg.out_dir) if cfg.get("out_dir") else eval_dir(source)
    out_dir.mkdir(parents=True, exist_ok=True)
    per_class = []
    for task, names in tasks.items():
        cm = meter.confusion_matrix(task)
        plot_confusion(cm, names, out_dir / f"confusion_{task}.png", title=f"{task} ({cfg.split}, row-normalised)")
        per_class.append(per_class_table(cm, names).assign(task=task))
    galleries = gallery.save(out_dir, cfg.split, loader.dataset.paths)
    per_class_df = pd.concat(per_class, ignore_index=True)[["task", "class", "support", "predicted", "precision",
                                                             "recall", "f1"]]
    per_class_df.to_csv(out_dir / "per_class.csv", index=False)
    recorder.save(predictions_file(out_dir, cfg.split))
    epoch = ckpt.epoch if ckpt is not None else None
    result = {"checkpoint": str(source), "epoch": epoch, "split": cfg.split,
              "skipped_images": skips.total, "metrics": metrics}
    write_metrics(out_dir, result)

    print(f"\n{source}" + (f" (epoch {epoch})" if epoch is not None else "") + f", {cfg.split} split:\n"
          f"{format_table(metrics, tasks, prefix=cfg.split)}\n")
    for task in tasks:
        print(f"{cfg.split}/{task}: loss {metrics[f'{cfg.split}/{task}/loss']:.4f}")
    with pd.option_context("display.max_rows", 200, "display.width", 120):
        print("\nper-class precision / recall:\n" + per_class_df.to_string(index=False, float_format="%.3f"))
    if cfg.split == "val" and ckpt is not None and ckpt.metrics:
        diff = max((abs(metrics[k] - v) for k, v in ckpt.metrics.items() if k in metrics), default=0.0)
        log.info("largest difference to the val metrics recorded in the checkpoint: %.2e", diff)
    if ckpt is not None:
        _log_to_wandb(cfg, ckpt, run_cfg, metrics, {t: meter.confusion_matrix(t) for t in tasks}, galleries)
    predictions = predictions_file(out_dir, cfg.split).name
    print(f"\nwrote {out_dir}/{METRICS}, per_class.csv, {predictions}, confusion_<task>.png"
          + (", mistakes_<task>.png" if galleries else ""))
    return metrics


def eval_logger(cfg: DictConfig, ckpt: Checkpoint, run_cfg: DictConfig):
    """The tracker eval reports to: the training run's W&B run (resumed by its id, in the mode the run used,
    offline by default) or a new one if the id is unknown; none when the run logged to no W&B run (logger=none,
    or a logger=many without wandb: the other loggers record training only) or wandb=false."""
    if not cfg.get("wandb", "auto") or "wandb" not in logger_kinds(run_cfg.logger):
        return NullLogger()
    logger = build(run_cfg.logger if logger_kind(run_cfg.logger) == "wandb" else run_cfg.logger.wandb)
    logger.start(config=OmegaConf.to_container(run_cfg, resolve=True), run_dir=str(run_dir_of(ckpt.path)),
                 run_id=ckpt.wandb_run_id)
    return logger


def _log_to_wandb(cfg, ckpt, run_cfg, metrics: dict, confusions: dict, galleries: dict) -> None:
    """Mistake grids and confusion matrices as media, the metrics into the run summary (eval/<split>/...)."""
    logger = eval_logger(cfg, ckpt, run_cfg)
    if not logger.enabled:
        return
    for task, path in galleries.items():
        logger.log_images(f"eval/{cfg.split}/{task}/mistakes", [read_png(path)], [path.name], step=None)
    for task, cm in confusions.items():
        logger.log_confusion(task, cm, ckpt.tasks[task], step=None)
    logger.finish({f"eval/{k}": v for k, v in metrics.items()})
    log.info("logged the mistake galleries and confusion matrices to W&B run %s", logger.run_id)
