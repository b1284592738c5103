"""The Optuna sweeper's work: the search space from Hydra's sweep syntax (each key checked against the config
before any trial), the study in the sweep dir, batches of trials asked, launched and told, and at the end the
trials' table (optuna_trials.csv) and the best trial (optuna_best.yaml) in the sweep dir."""
from __future__ import annotations

import difflib
import logging
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
from hydra.core.utils import JobStatus
from omegaconf import DictConfig, OmegaConf

from deepart.core.errors import ConfigError
from deepart.report.runs import run_status
from deepart.training.pruning import RUN_ATTR, make_pruner, open_storage

log = logging.getLogger("deepart")

TRIALS = "optuna_trials.csv"
BEST = "optuna_best.yaml"
_ABSENT = object()


def flat_params(params: Any, prefix: str = "") -> dict[str, str]:
    """`hydra.sweeper.params` as `dotted.key: expression` (a key given on the command line as
    hydra.sweeper.params.loss.gamma=... nests; one in the yaml is `loss.gamma:` already)."""
    out: dict[str, str] = {}
    for key, value in (params or {}).items():
        if isinstance(value, dict | DictConfig):
            out.update(flat_params(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = str(value)
    return out


def _leaf_keys(node: Any, prefix: str = "") -> list[str]:
    if not isinstance(node, DictConfig):
        return []
    keys = []
    for key in node.keys():
        path = f"{prefix}{key}"
        keys.append(path)
        child = OmegaConf.select(node, str(key), throw_on_missing=False, throw_on_resolution_failure=False)
        keys += _leaf_keys(child, f"{path}.")
    return keys


def check_keys(config: DictConfig, keys: list[str]) -> None:
    """Every searched key must be a key of the config (or a config group, e.g. sequencer): else one line with the
    key, the nearest keys and the fix."""
    task = OmegaConf.masked_copy(config, [k for k in config.keys() if k != "hydra"])
    known = None
    for key in keys:
        name = key.lstrip("~+")
        if key.startswith("+") or name in config.hydra.runtime.choices:
            continue
        if OmegaConf.select(task, name, default=_ABSENT, throw_on_missing=False) is _ABSENT:
            known = known or _leaf_keys(task)
            near = difflib.get_close_matches(name, known, n=2, cutoff=0.6)
            hint = f" (did you mean {' or '.join(near)}?)" if near else ""
            raise ConfigError(f"hydra.sweeper.params.{name}: {name!r} is no key of the config{hint}; search a key "
                              f"that conf/config.yaml or one of its groups has")


def search_space(sweeper, arguments: list[str]) -> tuple[list[str], dict[str, Any]]:
    """(fixed overrides, {key: Optuna distribution}): the sweeper's params and the command line's sweeps; a key
    given a plain value on the command line is fixed and leaves the search."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    parser = OverridesParser.create()
    params = flat_params(OmegaConf.to_container(sweeper.params, resolve=True)
                         if isinstance(sweeper.params, DictConfig) else sweeper.params)
    searched = parser.parse_overrides([f"{k}={v}" for k, v in params.items()])
    given = parser.parse_overrides(arguments)
    fixed_keys = {o.get_key_element() for o in given if not o.is_sweep_override()}
    fixed = [o.input_line for o in given if not o.is_sweep_override()]
    space: dict[str, Any] = {}
    for override in [*searched, *(o for o in given if o.is_sweep_override())]:
        key = override.get_key_element()
        if key in fixed_keys:
            continue
        value = override.value()
        if isinstance(value, ChoiceSweep):
            space[key] = CategoricalDistribution([v for v in value.list])
        elif isinstance(value, RangeSweep):
            values = list(override.sweep_iterator())
            space[key] = CategoricalDistribution(values)
        elif isinstance(value, IntervalSweep):
            log_scale = "log" in value.tags
            if isinstance(value.start, int) and isinstance(value.end, int):
                space[key] = IntDistribution(value.start, value.end, log=log_scale)
            else:
                space[key] = FloatDistribution(float(value.start), float(value.end), log=log_scale)
        else:
            fixed.append(override.input_line)
    check_keys(sweeper.config, [*space, *(line.split("=", 1)[0] for line in fixed)])
    return fixed, space


def make_sampler(cfg: dict[str, Any]):
    import optuna

    name = str(cfg.get("name", "tpe"))
    seed = cfg.get("seed")
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=int(cfg.get("n_startup_trials", 10)))
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ConfigError(f"hydra.sweeper.sampler.name={name!r} is not allowed: expected tpe | random.")


def _value(v: Any) -> str:
    return repr(v) if isinstance(v, float) else str(v)


def overrides_of(fixed: list[str], params: dict[str, Any], space: dict[str, Any]) -> list[str]:
    """The job's overrides: the fixed ones, then the trial's values in the order of the search space."""
    return [*fixed, *(f"{k}={_value(params[k])}" for k in space if k in params)]


def sweep(sweeper, arguments: list[str]) -> list[Any]:
    import optuna
    from optuna.trial import TrialState

    config = sweeper.config
    sweep_dir = Path(str(config.hydra.sweep.dir))
    fixed, space = search_space(sweeper, arguments)
    if not space:
        raise ConfigError("hydra.sweeper.params is empty: nothing to search; give it keys, e.g. "
                          "'hydra.sweeper.params.loss.gamma=interval(0,4)'")
    sampler, pruner = make_sampler(dict(sweeper.sampler)), make_pruner(dict(sweeper.pruner))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(config, sweep_dir / "multirun.yaml")
    study = optuna.create_study(study_name=sweeper.study_name, storage=open_storage(sweeper.storage, sweep_dir),
                                sampler=sampler, pruner=pruner, direction=sweeper.direction, load_if_exists=True)
    finished = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    stale = sorted(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)),
                   key=lambda t: t.user_attrs.get(RUN_ATTR, t.number))
    done = len(study.get_trials(deepcopy=False, states=finished))
    if done or stale:
        log.info("Optuna: study %s in %s has %d finished trials; %d left running are run again", sweeper.study_name,
                 sweep_dir, done, len(stale))
    log.info("Optuna: %d trials of %s over %s, %d at a time", sweeper.n_trials, sweeper.direction,
             ", ".join(space), sweeper.n_jobs)
    returns = []
    while True:
        done = len(study.get_trials(deepcopy=False, states=finished))
        if stale:  # a killed search's trials: the same runs (same dirs, same values) again, contiguous runs together
            batch = [stale.pop(0)]
            while stale and len(batch) < sweeper.n_jobs and \
                    stale[0].user_attrs.get(RUN_ATTR) == batch[-1].user_attrs.get(RUN_ATTR) + 1:
                batch.append(stale.pop(0))
            jobs = [(t.number, t.user_attrs[RUN_ATTR], t.params) for t in batch]
        else:
            todo = min(sweeper.n_jobs, sweeper.n_trials - done)
            if todo <= 0:
                break
            runs = [t.user_attrs.get(RUN_ATTR, -1) for t in study.get_trials(deepcopy=False)]
            first = max(runs, default=-1) + 1
            jobs = []
            for i in range(todo):
                trial = study.ask(space)
                trial.set_user_attr(RUN_ATTR, first + i)
                jobs.append((trial.number, first + i, trial.params))
        results = sweeper.launcher.launch([overrides_of(fixed, p, space) for _, _, p in jobs],
                                          initial_job_idx=jobs[0][1])
        for (number, run, _), result in zip(jobs, results):
            tell(study, number, sweep_dir / str(run), result)
        returns.append(results)
    write_results(study, sweep_dir, space)
    return returns


def tell(study, number: int, run_dir: Path, result) -> None:
    """Tell the study how trial `number` ended: its objective (done), pruned, or failed."""
    from optuna.trial import TrialState

    output = OmegaConf.select(result.hydra_cfg or {}, "hydra.runtime.output_dir", default=None)
    status = "failed" if result.status == JobStatus.FAILED else run_status(Path(output or run_dir))[0]
    if status == "done":
        study.tell(number, float(result.return_value))
    elif status == "pruned":
        study.tell(number, state=TrialState.PRUNED)
    else:
        study.tell(number, state=TrialState.FAIL)
    log.info("Optuna: trial %d (run %s) %s%s", number, run_dir.name, status,
             f", {float(result.return_value):.4f}" if status == "done" else "")


def write_results(study, sweep_dir: Path, space: dict[str, Any]) -> None:
    """optuna_trials.csv (every trial: number, run, state, value, epochs reported, its values) and
    optuna_best.yaml (the best trial, its run and overrides; the count of trials by state)."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        rows.append({"trial": t.number, "run": t.user_attrs.get(RUN_ATTR), "state": t.state.name.lower(),
                     "value": t.value, "epochs_reported": len(t.intermediate_values),
                     **{k: t.params.get(k) for k in space}})
    table = pd.DataFrame(rows)
    table.to_csv(sweep_dir / TRIALS, index=False)
    counts = {str(k): int(v) for k, v in table["state"].value_counts().items()} if len(table) else {}
    best: dict[str, Any] = {"study": study.study_name, "direction": study.direction.name.lower(), "trials": counts}
    try:
        top = study.best_trial
    except ValueError:  # no trial finished
        top = None
    if top is not None:
        best.update({"best_trial": top.number, "best_run": top.user_attrs.get(RUN_ATTR), "best_value": top.value,
                     "best_params": {k: top.params[k] for k in space if k in top.params}})
        log.info("Optuna: best trial %d (run %s): %.4f with %s", top.number, top.user_attrs.get(RUN_ATTR),
                 top.value, best["best_params"])
    (sweep_dir / BEST).write_text(yaml.safe_dump(best, sort_keys=False))
