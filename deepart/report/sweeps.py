"""Offline report and comparison dashboard of one or more sweeps:
`python -m deepart report <sweep dir> [<sweep dir> ...] [--out DIR] [--baseline KEY=VALUE[,KEY=VALUE]]`.

Reads only the sweeps' files (each run's .hydra/overrides.yaml, metrics.json or failure.json, and
val_predictions.csv when present); the runs of several sweeps are pooled (a run is then `<sweep dir name>/<n>`).
A config is the set of a run's override values other than `seed`; its runs with other seeds are replicates.
Writes into --out (default: the first sweep dir)
  report.csv               every run: swept values, status, the best epoch's val metrics per task (the names in
                           deepart.core.rundir.REPORT_TASK_METRICS), the last minus the best epoch's objective,
                           the run fields (rundir.RUN_FIELDS: best_epoch, epochs, runtime_s), error;
                           sorted by the objective (failed runs last, listed)
  report_seeds.csv         (sweeps over `seed`) mean and std per metric over runs differing only in seed
  report_compare.csv       per config: seeds done; per task and for mean top-1 the seed mean, std and 95 %
                           interval of the mean; macro-F1 mean and std; mean best epoch; the last epoch's mean
                           top-1 and its difference from the best epoch's (last - best: < 0 when runs peaked early)
  report_paired.csv        per config and task (and the mean over tasks) against the baseline config, on the
                           same val images: difference in top-1 (points), paired bootstrap interval and p-value,
                           McNemar test of seed-matched runs, verdict (significant / within noise)
  report.md                the comparison, the paired tests in words, every run, the seed aggregate, failures
  report.png               the objective against each swept value
  report_bars.png          per task: seed mean top-1 of every config with its 95 % interval
  report_curves.png        (runs with a history) val top-1 per cumulative epoch over the phases
  report.html              all of the above on one self-contained page
`log_report_to_wandb` (or --wandb PROJECT) logs the tables, figures and page to one W&B run; `log_report` sends
them to every tracker of a sweep's `logger` (W&B, TensorBoard, MLflow).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from deepart.core.config import OBJECTIVE, build, sweep_group
from deepart.core.errors import DeepArtError
from deepart.report.compare import (
    DOWN,
    SIGNIFICANT,
    UP,
    Config,
    comparison_table,
    config_tasks,
    group_configs,
    paired_table,
    resolve_baseline,
)
from deepart.report.figures import bar_figure, curve_figure, objective_figure
from deepart.report.html_page import html_table, paragraph, report_page
from deepart.report.runs import collect_sweeps, override_keys, swept_keys
from deepart.report.search import search_summary
from deepart.report.tables import (
    EVERY_RUN_NOTE,
    HOW_TO_READ,
    baseline_note,
    compare_display,
    failure_lines,
    markdown,
    paired_display,
    paired_sentences,
    report_table,
    run_notes,
    seed_markdown,
    seed_table,
    significance_marks,
    text_markdown,
)
from deepart.tracking import SweepReport, logger_kind, logger_kinds

log = logging.getLogger(__name__)

FILES = {"csv": "report.csv", "md": "report.md", "png": "report.png", "seeds": "report_seeds.csv",
         "compare": "report_compare.csv", "paired": "report_paired.csv", "bars": "report_bars.png",
         "curves": "report_curves.png", "html": "report.html"}


@dataclass
class Tables:
    """What the report shows, computed once: every run, the configs, the comparison and paired tests (as data
    and as text) and the notes."""

    dirs: list[Path]
    table: pd.DataFrame
    swept: list[str]
    configs: list[Config]
    tasks: list[str]
    compare: pd.DataFrame
    paired: pd.DataFrame
    marks: dict[tuple[str, str], str]
    compare_text: pd.DataFrame
    paired_text: pd.DataFrame
    sentences: list[str]
    note: str
    notes: list[str]
    seeds: pd.DataFrame | None


def build_tables(dirs: list[Path], baseline: str | None) -> Tables:
    """Collect the runs of the sweep dirs, group them into configs and compute every table of the report."""
    if not dirs:
        raise DeepArtError("no sweep dir given; pass the dir of a `train.py -m` run")
    frame = collect_sweeps(dirs)
    if frame.empty:
        raise DeepArtError(f"{', '.join(map(str, dirs))} holds no runs (no <run>/.hydra dirs); "
                           f"pass the dir of a `train.py -m` run")
    configs = group_configs(frame, [k for k in override_keys(frame) if k != "seed"])
    base = resolve_baseline(configs, baseline)
    tasks = config_tasks(configs)
    table = report_table(frame)
    swept = swept_keys(frame, override_keys(frame))
    compare = comparison_table(configs, tasks, base)
    paired = paired_table(configs, base, tasks)
    marks = significance_marks(paired)
    shown = paired if len(tasks) > 1 else paired[paired["metric"] != OBJECTIVE]  # one task: its top-1 is the mean
    return Tables(dirs, table, swept, configs, tasks, compare, paired, marks, compare_display(compare, tasks, marks),
                  paired_display(shown), paired_sentences(shown), baseline_note(base, baseline), run_notes(configs),
                  seed_table(table) if "seed" in swept else None)


def _title_intro(t: Tables) -> tuple[str, str]:
    counts = t.table["status"].value_counts().to_dict()
    title = f"Sweep report: {t.dirs[0]}" if len(t.dirs) == 1 else f"Sweep report: {len(t.dirs)} sweeps"
    pooled = "" if len(t.dirs) == 1 else f"Sweeps: {', '.join(map(str, t.dirs))}. "
    intro = (pooled + f"{len(t.table)} runs: " + ", ".join(f"{n} {s}" for s, n in counts.items()) +
             f"; {len(t.configs)} configs, tasks: {', '.join(t.tasks) or 'none'}.")
    return title, intro


def report_markdown(t: Tables) -> str:
    """report.md: the comparison, the paired tests in words, every run, the seed aggregate, failures, notes."""
    title, intro = _title_intro(t)
    lines = [f"# {title}", "", intro, "", "## Comparison of configs", "", HOW_TO_READ, "",
             f"{UP} / {DOWN}: significantly better / worse than the baseline; metrics in %.", "",
             text_markdown(t.compare_text), "", "## Paired tests against the baseline", "", t.note, ""]
    lines += [text_markdown(t.paired_text), "", *(f"- {s}" for s in t.sentences)] if len(t.paired) else \
        ["There is no other config to compare with."]
    lines += ["", "## Every run", "", EVERY_RUN_NOTE, "",
              markdown(t.table)]
    if t.seeds is not None:
        lines += ["", "## Over seeds (mean ± std of the runs that finished)", "", seed_markdown(t.seeds)]
    failures = failure_lines(t.table)
    if failures:
        lines += ["", "## Runs without results", "", *(f"- {line}" for line in failures)]
    if t.notes:
        lines += ["", "## Missing files", "", *(f"- {line}" for line in t.notes)]
    return "\n".join(lines) + "\n"


def write_report(sweep_dirs: str | Path | Sequence[str | Path], out_dir: str | Path | None = None,
                 baseline: str | None = None) -> dict[str, Path]:
    """Write the report of one or more sweeps (see the module docstring) into `out_dir` (default: the first
    sweep dir); `baseline`: `key=value[,key=value]` of the config the others are tested against (default: the
    first config in job order). Returns the paths written, by kind (csv, md, png, seeds, compare, paired, bars,
    curves, html)."""
    dirs = [Path(d) for d in ([sweep_dirs] if isinstance(sweep_dirs, (str, Path)) else sweep_dirs)]
    t = build_tables(dirs, baseline)
    out = Path(out_dir) if out_dir else dirs[0]
    out.mkdir(parents=True, exist_ok=True)
    paths = {kind: out / FILES[kind] for kind in ("csv", "md", "png", "compare", "paired", "bars", "html")}
    t.table.to_csv(paths["csv"], index=False)
    t.compare.to_csv(paths["compare"], index=False)
    t.paired.to_csv(paths["paired"], index=False)
    if t.seeds is not None:
        paths["seeds"] = out / FILES["seeds"]
        t.seeds.to_csv(paths["seeds"], index=False)
    paths["md"].write_text(report_markdown(t))
    objective_figure(t.table, [k for k in t.swept if k != "seed"] or t.swept, paths["png"])
    bar_figure(t.compare, t.configs, t.tasks, t.marks, paths["bars"])
    if curve_figure(t.configs, t.tasks, out / FILES["curves"]):
        paths["curves"] = out / FILES["curves"]
    title, intro = _title_intro(t)
    paths["html"].write_text(report_page(title, intro, t.note, t.compare_text, t.paired_text, t.sentences, t.table,
                                         paths, t.notes))
    search = search_summary(dirs[0])
    if search is not None:  # hparams_search=optuna: the best trial and every trial, first in both pages
        text, trials = search
        md = paths["md"].read_text().split("\n", 1)
        paths["md"].write_text(f"{md[0]}\n\n## Hyper-parameter search\n\n{text}\n\n{text_markdown(trials)}\n{md[1]}")
        page_html = paths["html"].read_text()
        head, _, rest = page_html.partition("<h2>")
        section = f"<h2>Hyper-parameter search</h2>\n{paragraph(text)}\n{html_table(trials)}\n"
        paths["html"].write_text(head + section + "<h2>" + rest)
    return paths


def headline(compare: pd.DataFrame, paired: pd.DataFrame) -> dict[str, Any]:
    """The numbers for a W&B run summary: configs, finished runs, baseline and best config with their seed mean
    objective, the number of configs significantly different from the baseline on it, each config's difference."""
    done = compare[compare["seeds"] > 0]
    base = compare[compare["baseline"]].iloc[0]
    mean = paired[paired["metric"] == OBJECTIVE]
    out: dict[str, Any] = {"configs": len(compare), "runs_done": int(compare["seeds"].sum()),
                           "baseline": base["config"], f"baseline/{OBJECTIVE}": base[f"{OBJECTIVE} mean"],
                           "significant_vs_baseline": int((mean["verdict"] == SIGNIFICANT).sum())}
    if len(done):
        best = done.loc[done[f"{OBJECTIVE} mean"].idxmax()]
        out.update({"best_config": best["config"], f"best/{OBJECTIVE}": best[f"{OBJECTIVE} mean"]})
    out.update({f"vs_baseline/{r.config}/diff_points": r.diff_points for r in mean.itertuples()
                if not pd.isna(r.diff_points)})
    return {k: v.item() if hasattr(v, "item") else v for k, v in out.items() if not pd.isna(v)}


def log_report_to_wandb(report_dir: str | Path, *, project: str, entity: str | None = None, mode: str = "offline",
                        group: str | None = None, name: str = "sweep-summary") -> str | None:
    """Log a written report to ONE W&B run (job_type `sweep-summary`, in `group`): the comparison and paired
    tables as tables, the figures as images, report.html as HTML, the headline numbers in the run summary.
    Offline by default (files under <report_dir>/wandb). Never raises: a W&B problem is logged as a warning.
    Returns the W&B run id, or None when nothing was logged."""
    report_dir = Path(report_dir)
    try:
        import wandb

        compare = pd.read_csv(report_dir / FILES["compare"])
        paired = pd.read_csv(report_dir / FILES["paired"])
        os.environ.setdefault("WANDB_SILENT", "true")
        run = wandb.init(project=project, entity=entity, mode=mode, group=group, name=name, job_type="sweep-summary",
                         dir=str(report_dir), reinit="finish_previous")
        try:
            data: dict[str, Any] = {"compare": wandb.Table(dataframe=compare), "paired": wandb.Table(dataframe=paired),
                                    "report": wandb.Html((report_dir / FILES["html"]).read_text())}
            for kind in ("png", "bars", "curves"):
                if (report_dir / FILES[kind]).is_file():
                    data[f"figures/{Path(FILES[kind]).stem}"] = wandb.Image(str(report_dir / FILES[kind]))
            run.log(data)
            run.summary.update(headline(compare, paired))
        finally:
            run.finish()
        return run.id
    except Exception as exc:  # noqa: BLE001 - W&B must never break the report
        log.warning("W&B logging of the report in %s failed (%s: %s); the report files are unaffected", report_dir,
                    type(exc).__name__, exc)
        return None


def read_report(report_dir: Path, group: str | None) -> SweepReport:
    """A written report as the loggers take it: tables, figures, files, headline numbers."""
    compare, paired = pd.read_csv(report_dir / FILES["compare"]), pd.read_csv(report_dir / FILES["paired"])
    files = [report_dir / name for name in FILES.values() if (report_dir / name).is_file()]
    figures = {Path(FILES[k]).stem: report_dir / FILES[k] for k in ("png", "bars", "curves")
               if (report_dir / FILES[k]).is_file()}
    return SweepReport(report_dir, group, {"compare": compare, "paired": paired}, figures, files,
                       headline(compare, paired))


def log_report(report_dir: str | Path, logger: Any, group: str | None) -> list[str]:
    """Send a written report to every tracker of a sweep's `logger` config node: W&B as `log_report_to_wandb`
    does, TensorBoard into <sweep>/sweep-summary, MLflow as a `sweep-summary` run of the sweep's experiment (the
    CSV logger's sweep table is summary.csv itself). Never raises: a tracker that fails is a warning. Returns the
    trackers reached."""
    report_dir, reached = Path(report_dir), []
    for kind in logger_kinds(logger):
        node = logger if logger_kind(logger) == kind else logger[kind]
        try:
            if kind == "wandb":
                if log_report_to_wandb(report_dir, project=node.project, entity=node.get("entity"),
                                       mode=node.get("mode", "offline"), group=group):
                    reached.append(kind)
            elif kind != "csv":
                tracker = build(node)
                tracker.log_report(read_report(report_dir, group))
                reached += [kind] if not getattr(tracker, "broken", False) else []
        except Exception as exc:  # noqa: BLE001 - a tracker must never break the report
            log.warning("%s logging of the report in %s failed (%s: %s); the report files are unaffected", kind,
                        report_dir, type(exc).__name__, exc)
    return reached


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m deepart report", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dirs", nargs="+", metavar="sweep_dir",
                        help="sweep dirs written by `python train.py -m ...` (several: their runs are pooled)")
    parser.add_argument("--out", default=None, help="where to write the report (default: the first sweep dir)")
    parser.add_argument("--baseline", default=None, metavar="KEY=VALUE[,KEY=VALUE]",
                        help="the config the others are tested against (default: the first config in job order)")
    parser.add_argument("--wandb", default=None, metavar="PROJECT",
                        help="also log the report to one W&B run in this project, in the first sweep's group")
    parser.add_argument("--wandb-entity", default=None, help="W&B entity (default: yours)")
    parser.add_argument("--wandb-mode", default="offline", choices=("offline", "online"),
                        help="W&B mode (default: offline; sync later with `wandb sync`)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        paths = write_report(args.sweep_dirs, args.out, args.baseline)
    except DeepArtError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(paths["md"].read_text())
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    if args.wandb:
        run_id = log_report_to_wandb(paths["html"].parent, project=args.wandb, entity=args.wandb_entity,
                                     mode=args.wandb_mode, group=sweep_group(args.sweep_dirs[0]))
        print(f"W&B run {run_id} (project {args.wandb})" if run_id else "W&B logging failed; see the warning above")
    return 0
