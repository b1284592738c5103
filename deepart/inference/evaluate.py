"""What eval.py does from a checkpoint, a run dir or an export folder alone (`evaluate_checkpoint`): the metrics,
the expected calibration error and reliability diagram per task, coverage vs accuracy when answers below a
confidence threshold are withheld, and with calibrate=true per-task temperatures fitted on the val split and
kept in the checkpoint (or the export folder's config.json)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from deepart.core.checkpoint import Checkpoint
from deepart.core.config import build, compose_config, eval_batch_size, group_options
from deepart.core.errors import ConfigError, DataError, require, require_choice
from deepart.core.rundir import METRICS, eval_dir, predictions_file, run_dir_of, write_metrics
from deepart.core.runtime import Runtime, check_threads
from deepart.data import demo as demo_data
from deepart.data.dataset import SkipCounter
from deepart.data.loaders import data_root, eval_loader, load_table, set_data_root
from deepart.inference import pretrained
from deepart.inference.ensemble import ensemble_home, load_ensemble, member_paths
from deepart.inference.loading import load_model
from deepart.objectives.calibration import (
    Calibration,
    bins_of,
    coverage_curve,
    coverage_table,
    ece,
    fit_calibration,
    scaled_probs,
)
from deepart.objectives.metrics import MetricAccumulator, format_table, per_class_table
from deepart.tracking import NullLogger, logger_kind, logger_kinds
from deepart.training.evaluation import TTA_MODES, LogitRecorder, PredictionRecorder, evaluate_loader
from deepart.vis.gallery import MistakeGallery, read_png
from deepart.vis.plots import plot_confusion, plot_coverage, plot_reliability

log = logging.getLogger("deepart")

SPLITS = ("val", "train", "test")


def require_checkpoint_arg(argv: list[str]) -> None:
    """Refuse a `ckpt=` argument that names nothing loadable (a model, a list of them or a sweep dir), before
    anything is written."""
    given = [a.split("=", 1)[1] for a in argv[1:] if a.startswith("ckpt=")]
    if given:
        member_paths(given[-1])


def output_home(spec) -> Path:
    """The folder whose eval/ an evaluation writes to: the run dir of one model, the sweep dir of a sweep, the
    common folder of a list of runs (their sweep dir when they share one)."""
    paths = member_paths(spec)
    return run_dir_of(paths[0]) if len(paths) == 1 else ensemble_home(paths)


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
        for key, given, what in (("root", "data_root", "the labelled images"), ("table", "data_table", "its table")):
            if OmegaConf.is_missing(run_cfg.data, key) and not cfg.get(given):  # False for a key it lacks
                raise ConfigError(f"dataset={data} needs {given}=<{what}>: ckpt={cfg.ckpt} is an export folder, "
                                  f"which does not record where its data was")
    if cfg.get("data_root"):
        set_data_root(run_cfg.data, cfg.data_root)
    if cfg.get("data_table"):
        _set_data_table(run_cfg.data, str(cfg.data_table))
    return run_cfg


def _set_data_table(data_cfg: DictConfig, table: str) -> None:
    """Point a csv data config (also a resolved one, as a checkpoint keeps it) at another table."""
    if "table" not in data_cfg.get("source", {}):
        raise ConfigError(f"data_table={table}: this run's data reads no table (only data=csv does); drop data_table=")
    data_cfg.table = table
    data_cfg.source.table = table


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
    hflip = run_cfg.trainer.tta_hflip
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


def tta_mode(cfg: DictConfig, run_cfg: DictConfig) -> str:
    """eval.py's `tta`, or as the run validated (hflip with trainer.tta_hflip, else none) when it is null."""
    return cfg.tta if cfg.get("tta") is not None else ("hflip" if run_cfg.trainer.get("tta_hflip") else "none")


def evaluate_checkpoint(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate a checkpoint on its run's validation split; write metrics.json, per-class CSV and
    confusion-matrix PNGs to `out_dir` (default <run dir>/eval). Returns the metrics. A sweep dir or a list of
    models is evaluated as their ensemble (the mean of their probabilities) beside each member."""
    check_eval_keys(cfg)
    paths = member_paths(cfg.ckpt)
    members: list[Checkpoint | None] = []
    if len(paths) == 1:
        model, ckpt = load_model(paths[0])
        source = ckpt.path if ckpt is not None else paths[0]
        run_cfg = run_config(cfg, model, ckpt)
        tta = tta_mode(cfg, run_cfg)
    else:
        if cfg.get("calibrate"):
            raise ConfigError("calibrate=true fits the temperatures of one model; calibrate each member (python "
                              "eval.py ckpt=<run> calibrate=true), then evaluate the ensemble: it uses them")
        model, members = load_ensemble(paths)
        run_cfg = run_config(cfg, model.members[0], members[0])
        model.tta, model.tta_crop = tta_mode(cfg, run_cfg), float(cfg.get("tta_crop", 0.875))
        ckpt, source, tta = None, output_home(paths), "none"  # the members apply the test-time augmentation
    tasks = model.tasks
    table, rt, model, loss_fn = _evaluation_setup(
        run_cfg, model, members[0] if members else ckpt, device=cfg.device, threads=cfg.get("threads"),
        precision=cfg.get("precision") or run_cfg.trainer.precision)

    loader = eval_loader(table, run_cfg.data, cfg.batch_size or eval_batch_size(run_cfg), str(rt.device),
                         split=cfg.split, workers=cfg.num_workers)
    skips = SkipCounter()
    gallery = MistakeGallery(tasks, cfg.get("gallery", 16))
    recorder, logits = PredictionRecorder(tasks, table.frame(cfg.split)["path"].tolist()), LogitRecorder(tasks)
    member_meters = [MetricAccumulator(tasks, rt.device) for _ in members]
    member_logits = [LogitRecorder(tasks) for _ in members]

    def collect(batch: dict, out: dict) -> None:
        gallery(batch, out), recorder(batch, out), logits(batch, out)
        for meter_, record_, own in zip(member_meters, member_logits, out.get("members", ())):
            meter_.update(own, rt.labels(batch))
            record_(batch, {"logits": own})

    metrics, meter = evaluate_loader(model, loss_fn, loader, rt, tasks, skips=skips, progress=True, tta=tta,
                                     tta_crop=float(cfg.get("tta_crop", 0.875)), desc=f"eval {cfg.split}",
                                     collect=collect)
    if cfg.split != "val":
        metrics = {k.replace("val/", f"{cfg.split}/", 1): v for k, v in metrics.items()}

    out_dir = Path(cfg.out_dir) if cfg.get("out_dir") else eval_dir(source)
    out_dir.mkdir(parents=True, exist_ok=True)
    calibration = Calibration.from_dict(model.calibration)
    if cfg.get("calibrate"):
        fit_on = logits if cfg.split == "val" else _val_logits(cfg, run_cfg, table, rt, (model, loss_fn), tta)
        calibration = keep_calibration(fit_on, cfg.ece_bins, ckpt, source)
    coverage = calibration_and_coverage(cfg, logits, calibration, metrics, out_dir)
    per_class = _per_class(meter, tasks, cfg.split, out_dir)
    galleries = gallery.save(out_dir, cfg.split, loader.dataset.paths)
    recorder.save(predictions_file(out_dir, cfg.split))
    epoch = ckpt.epoch if ckpt is not None else None
    record = {"checkpoint": str(source), "epoch": epoch, "split": cfg.split, "tta": tta if not members else model.tta,
              "skipped_images": skips.total, "metrics": metrics, "coverage": coverage,
              "calibration": calibration.to_dict() if calibration.calibrated else None}
    if members:
        member_metrics = {name: m.compute(cfg.split) for name, m in zip(model.names, member_meters)}
        paired = ensemble_vs_members(logits, member_logits)
        record.update(checkpoint=None, ensemble=[str(p) for p in paths], members=member_metrics,
                      ensemble_vs_members=paired)
        table_text = format_ensemble(member_metrics, metrics, tasks, cfg.split) + "\n" + format_paired(paired)
        write_ensemble_csv(member_metrics, metrics, tasks, cfg.split, out_dir / "ensemble.csv")
    write_metrics(out_dir, record)
    if members:
        print(f"\nensemble of {len(paths)} models ({source}), {cfg.split} split, test-time augmentation: "
              f"{model.tta}:\n{table_text}\n\nthe ensemble (mean of the members' probabilities):")
    else:
        print(f"\n{source}" + (f" (epoch {epoch})" if epoch is not None else "") + f", {cfg.split} split"
              + (f", test-time augmentation: {tta}" if tta != "none" else "") + ":")
    _print_results(metrics, tasks, cfg.split, format_calibration(calibration, metrics, cfg.split) + "\n"
                   + format_coverage(coverage, calibration), per_class)
    if cfg.split == "val" and ckpt is not None:
        _log_difference(metrics, ckpt)
    if ckpt is not None:
        _log_to_wandb(cfg, ckpt, run_cfg, metrics, {t: meter.confusion_matrix(t) for t in tasks}, galleries)
    predictions = predictions_file(out_dir, cfg.split).name
    print(f"\nwrote {out_dir}/{METRICS}, per_class.csv, {predictions}, confusion_<task>.png, "
          f"reliability_<task>.png, coverage_<task>.png" + (", ensemble.csv" if members else "")
          + (", mistakes_<task>.png" if galleries else ""))
    return metrics


def ensemble_vs_members(ensemble: LogitRecorder, members: list[LogitRecorder], n_boot: int = 2000) -> dict:
    """Per task, the ensemble's top-1 minus its members' mean on the same images, in points: the sweep report's
    paired bootstrap (images resampled, and the members; the ensemble is one model) with its 95 % interval and
    p-value, and McNemar's exact test on the images where the ensemble and a member disagree (pooled over the
    members)."""
    from deepart.report.stats import mcnemar_exact, paired_bootstrap

    out = {}
    for task in ensemble.tasks:
        y = ensemble.labels(task).numpy()
        known = y != -1
        if not known.any():
            continue
        right = (ensemble.logits(task).argmax(-1).numpy() == y)[None]
        own = np.stack([(m.logits(task).argmax(-1).numpy() == y) for m in members])
        result = paired_bootstrap(right, own, known[None], n_boot=n_boot)
        only_ensemble = int(((right & ~own) & known).sum())
        only_member = int(((~right & own) & known).sum())
        out[task] = {"diff": 100 * result.diff, "low": 100 * result.low, "high": 100 * result.high,
                     "p_bootstrap": result.p_value, "mcnemar": [only_ensemble, only_member],
                     "p_mcnemar": mcnemar_exact(only_ensemble, only_member)}
    return out


def format_paired(paired: dict) -> str:
    lines = ["ensemble - members' mean, top-1 (paired on the same images: bootstrap over images and members; "
             "McNemar pooled over the members):"]
    for task, r in paired.items():
        lines.append(f"  {task}: {r['diff']:+.1f} points [95 % CI {r['low']:+.1f}, {r['high']:+.1f}], p "
                     f"{r['p_bootstrap']:.3f}; only the ensemble right {r['mcnemar'][0]}, only a member "
                     f"{r['mcnemar'][1]}, McNemar p {r['p_mcnemar']:.3f}")
    return "\n".join(lines)


ENSEMBLE_COLUMNS = (("top1", "top1"), ("top5", "top5"), ("macro_f1", "mF1"), ("ece", "ECE"))


def _ensemble_rows(members: dict[str, dict], ensemble: dict, tasks: dict, split: str) -> list[tuple[str, str, list]]:
    rows = [*members.items(), ("ensemble", ensemble)]
    return [(name, task, [m[f"{split}/{task}/{key}"] for key, _ in ENSEMBLE_COLUMNS])
            for name, m in rows for task in tasks]


def format_ensemble(members: dict[str, dict], ensemble: dict, tasks: dict, split: str) -> str:
    """Each member's and the ensemble's top-1 / top-5 / macro-F1 / ECE per task (in %), and the members' mean."""
    width = max(len("members' mean"), *(len(n) for n in members)) + 2
    head = f"{'model':<{width}}{'task':<10}" + "".join(f"{label:>8}" for _, label in ENSEMBLE_COLUMNS)
    lines = [head, "-" * len(head)]
    for name, task, values in _ensemble_rows(members, ensemble, tasks, split):
        if name == "ensemble":
            for t in tasks if task == next(iter(tasks)) else ():
                mean = [sum(m[f"{split}/{t}/{key}"] for m in members.values()) / len(members)
                        for key, _ in ENSEMBLE_COLUMNS]
                lines.append(f"{'members mean':<{width}}{t:<10}" + "".join(f"{100 * v:>8.1f}" for v in mean))
        lines.append(f"{name:<{width}}{task:<10}" + "".join(f"{100 * v:>8.1f}" for v in values))
    return "\n".join(lines)


def write_ensemble_csv(members: dict[str, dict], ensemble: dict, tasks: dict, split: str, path: Path) -> None:
    frame = pd.DataFrame([{"model": name, "task": task, **{key: v for (key, _), v in zip(ENSEMBLE_COLUMNS, values)}}
                          for name, task, values in _ensemble_rows(members, ensemble, tasks, split)])
    frame.to_csv(path, index=False)


def _log_difference(metrics: dict[str, Any], ckpt: Checkpoint) -> None:
    """How far the val metrics are from those training recorded in the checkpoint (0 for the same data)."""
    if ckpt.metrics:
        diff = max((abs(metrics[k] - v) for k, v in ckpt.metrics.items() if k in metrics), default=0.0)
        log.info("largest difference to the val metrics recorded in the checkpoint: %.2e", diff)


def _per_class(meter, tasks: dict[str, list[str]], split: str, out_dir: Path) -> pd.DataFrame:
    """Per-class precision / recall / F1 of every task (written to per_class.csv) and confusion_<task>.png."""
    per_class = []
    for task, names in tasks.items():
        cm = meter.confusion_matrix(task)
        plot_confusion(cm, names, out_dir / f"confusion_{task}.png", title=f"{task} ({split}, row-normalised)")
        per_class.append(per_class_table(cm, names).assign(task=task))
    frame = pd.concat(per_class, ignore_index=True)[["task", "class", "support", "predicted", "precision", "recall",
                                                      "f1"]]
    frame.to_csv(out_dir / "per_class.csv", index=False)
    return frame


def _print_results(metrics: dict[str, Any], tasks: dict[str, list[str]], split: str, calibration_text: str,
                   per_class: pd.DataFrame) -> None:
    """The console report: the metrics table, each task's loss, calibration and coverage, per-class figures."""
    print(f"{format_table(metrics, tasks, prefix=split)}\n")
    for task in tasks:
        print(f"{split}/{task}: loss {metrics[f'{split}/{task}/loss']:.4f}")
    print(calibration_text)
    with pd.option_context("display.max_rows", 200, "display.width", 120):
        print("\nper-class precision / recall:\n" + per_class.to_string(index=False, float_format="%.3f"))


def check_eval_keys(cfg: DictConfig) -> None:
    """split, threads, calibrate, ece_bins and coverage_thresholds: one line naming the key when a value is not
    usable."""
    require_choice("split", cfg.split, SPLITS)
    if cfg.get("tta") is not None:
        require_choice("tta", cfg.tta, TTA_MODES)
    crop = cfg.get("tta_crop", 0.875)
    require(isinstance(crop, (int, float)) and not isinstance(crop, bool) and 0 < crop < 1, "tta_crop", crop,
            "a fraction of the side in (0, 1), e.g. 0.875")
    check_threads("threads", cfg.get("threads"))
    require(isinstance(cfg.get("calibrate", False), bool), "calibrate", cfg.get("calibrate"), "true | false")
    bins = cfg.get("ece_bins")
    require(isinstance(bins, int) and not isinstance(bins, bool) and bins >= 1, "ece_bins", bins, "an integer >= 1")
    thresholds = cfg.get("coverage_thresholds")
    ok = OmegaConf.is_list(thresholds) and all(isinstance(t, (int, float)) and not isinstance(t, bool) and 0 < t < 1
                                               for t in thresholds)
    require(ok, "coverage_thresholds", thresholds, "a list of numbers in (0, 1), e.g. [0.5,0.7,0.9]")


def _val_logits(cfg: DictConfig, run_cfg: DictConfig, table, rt: Runtime, model_and_loss, tta: str):
    """The logits of a pass over the val split (to fit the temperatures on when another split is evaluated)."""
    model, loss_fn = model_and_loss
    loader = eval_loader(table, run_cfg.data, cfg.batch_size or eval_batch_size(run_cfg), str(rt.device),
                         split="val", workers=cfg.num_workers)
    recorder = LogitRecorder(table.tasks)
    evaluate_loader(model, loss_fn, loader, rt, table.tasks, skips=SkipCounter(), progress=True, tta=tta,
                    tta_crop=float(cfg.get("tta_crop", 0.875)), desc="calibrate on val", collect=recorder)
    return recorder


def keep_calibration(val: LogitRecorder, bins: int, ckpt: Checkpoint | None, source: Path) -> Calibration:
    """Fit the temperatures on the val logits and store them in the checkpoint (rewritten atomically) or the
    export folder's config.json, where the Predictor, the app, predict and export read them."""
    calibration = fit_calibration({t: val.logits(t) for t in val.tasks}, {t: val.labels(t) for t in val.tasks},
                                  "val", bins)
    if ckpt is not None:
        ckpt.calibration = calibration.to_dict()
        ckpt.save(ckpt.path)
        where = ckpt.path
    else:
        config = pretrained.read_config(source)
        config["calibration"] = calibration.to_dict()
        pretrained.write_config(config, Path(source))
        where = Path(source) / pretrained.CONFIG_FILE
    temps = ", ".join(f"{t} {v:.3f}" for t, v in calibration.temperature.items())
    print(f"calibration: temperatures ({temps}) fitted on the val split, kept in {where}")
    return calibration


def calibration_and_coverage(cfg: DictConfig, logits: LogitRecorder, calibration: Calibration,
                             metrics: dict[str, Any], out_dir: Path) -> dict[str, list[dict]]:
    """Per task: ECE of the softmax (`<split>/<task>/ece`) and, for a calibrated model, of softmax(logits / T)
    (`.../ece_calibrated`, `.../top1_calibrated`), drawn as reliability_<task>.png; coverage and accuracy at
    `coverage_thresholds` of the probabilities predict uses, drawn as coverage_<task>.png. Returns the coverage."""
    coverage = {}
    for task in logits.tasks:
        z, y, key = logits.logits(task), logits.labels(task), f"{cfg.split}/{task}"
        probs = scaled_probs(z)
        metrics[f"{key}/ece"] = ece(probs, y, cfg.ece_bins)
        curves = {f"softmax (ECE {100 * metrics[f'{key}/ece']:.1f} %)": bins_of(probs, y, cfg.ece_bins)}
        if calibration.calibrated:
            t = calibration.of(task)
            probs = scaled_probs(z, t)
            metrics[f"{key}/ece_calibrated"] = ece(probs, y, cfg.ece_bins)
            labelled = y != -1
            metrics[f"{key}/top1_calibrated"] = float((probs.argmax(-1) == y)[labelled].double().mean()) \
                if labelled.any() else 0.0
            if task in calibration.ece_after_crossfit and cfg.split == calibration.split:
                metrics[f"{key}/ece_calibrated_crossfit"] = calibration.ece_after_crossfit[task]
            curves[f"softmax(logits / {t:.2f}) (ECE {100 * metrics[f'{key}/ece_calibrated']:.1f} %)"] = \
                bins_of(probs, y, cfg.ece_bins)
        plot_reliability(curves, out_dir / f"reliability_{task}.png", title=f"{task} ({cfg.split}): reliability")
        coverage[task] = coverage_table(probs, y, list(cfg.coverage_thresholds))
        plot_coverage(*coverage_curve(probs, y)[:2], coverage[task], out_dir / f"coverage_{task}.png",
                      title=f"{task} ({cfg.split}): abstaining below a confidence")
    return coverage


def format_calibration(calibration: Calibration, metrics: dict[str, Any], split: str) -> str:
    """The ECE per task (in %) before and after temperature scaling, and top-1 with and without it."""
    lines = [f"\nexpected calibration error ({split}, %):",
             f"{'task':<12}{'T':>7}{'before':>9}{'after':>9}{'cross-fit':>11}{'top1':>8}{'top1 (T)':>10}"]
    tasks = [k.split("/")[1] for k in metrics if k.startswith(f"{split}/") and k.endswith("/ece")]
    for task in tasks:
        key = f"{split}/{task}"
        cells = [_percent(metrics, f"{key}/{name}", width) for name, width in
                 (("ece", 9), ("ece_calibrated", 9), ("ece_calibrated_crossfit", 11), ("top1", 8),
                  ("top1_calibrated", 10))]
        lines.append(f"{task:<12}{calibration.of(task):>7.3f}" + "".join(cells))
    if calibration.calibrated:
        lines.append(f"(T fitted on the {calibration.split} split, {calibration.images} images; cross-fit: each half "
                     f"of it scaled by the T fitted on the other half)")
    return "\n".join(lines)


def _percent(metrics: dict[str, Any], key: str, width: int) -> str:
    return f"{100 * metrics[key]:>{width}.1f}" if key in metrics else " " * width


def format_coverage(coverage: dict[str, list[dict]], calibration: Calibration) -> str:
    """Coverage and accuracy (in %) of the answers at each confidence threshold, per task."""
    kind = "calibrated probabilities" if calibration.calibrated else "softmax probabilities (not calibrated)"
    lines = [f"\nanswering only at or above a confidence threshold ({kind}, %):",
             f"{'task':<12}{'threshold':>10}{'coverage':>10}{'accuracy':>10}{'answered':>10}"]
    for task, rows in coverage.items():
        for r in rows:
            accuracy = f"{100 * r['accuracy']:>10.1f}" if r["accuracy"] is not None else f"{'-':>10}"
            lines.append(f"{task:<12}{r['threshold']:>10g}{100 * r['coverage']:>10.1f}{accuracy}{r['answered']:>10}")
    return "\n".join(lines)


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
