"""The Optuna sweeper's work: the search space from Hydra's sweep syntax (each key checked against the config
before any trial), the study in the sweep dir, trials asked, launched and told asynchronously (`n_jobs` slots,
each asking its next trial as soon as its run ends), and at the end the trials' table (optuna_trials.csv) and the
best trial (optuna_best.yaml) in the sweep dir."""
from __future__ import annotations

import difflib
import logging
import re
import threading
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
from hydra.core.utils import JobStatus
from omegaconf import DictConfig, OmegaConf

from deepart.core import faults, rundir
from deepart.core.config import OBJECTIVE
from deepart.core.errors import ConfigError
from deepart.report.runs import run_status
from deepart.training.pruning import RUN_ATTR, make_pruner, open_storage

from ._threads import deferred_interrupt, run_all

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
    """(fixed overrides, {key: Optuna distribution}) of the sweeper's params and the command line (`parse_space`),
    every key checked against the config."""
    params = OmegaConf.to_container(sweeper.params, resolve=True) if isinstance(sweeper.params, DictConfig) \
        else sweeper.params
    fixed, space = parse_space(params, arguments)
    check_keys(sweeper.config, [*space, *(line.split("=", 1)[0] for line in fixed)])
    return fixed, space


def parse_space(params: Any, arguments: list[str]) -> tuple[list[str], dict[str, Any]]:
    """(fixed overrides, {key: Optuna distribution}): `hydra.sweeper.params` and the command line's sweeps, read
    as Hydra's own Optuna sweeper reads them: choice() a categorical, interval() a float range (an integer one
    when tagged int: `tag(int, interval(1, 8))`; `tag(log, ...)` log-uniform), range(lo, hi[, step]) the
    integers lo, lo + step, ... below hi. A key given a plain value on the command line is fixed and leaves the
    search."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    parser = OverridesParser.create()
    params = flat_params(params)
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
            space[key] = CategoricalDistribution(list(value.list))
        elif isinstance(value, RangeSweep):  # range(lo, hi[, step]): Python's range, hi excluded
            values = list(override.sweep_iterator())
            if not values:
                raise ConfigError(f"hydra.sweeper.params.{key}={override.input_line.split('=', 1)[1]}: an empty "
                                  f"range; give range(lo, hi[, step]) with lo < hi")
            if all(isinstance(v, int) for v in values):
                step = int(value.step or 1)
                space[key] = IntDistribution(min(values), max(values), step=abs(step))
            else:
                space[key] = CategoricalDistribution(values)
        elif isinstance(value, IntervalSweep):  # floats, unless tagged int: tag(int, interval(1, 8))
            log_scale = "log" in value.tags
            if "int" in value.tags:
                space[key] = IntDistribution(int(value.start), int(value.end), log=log_scale)
            else:
                space[key] = FloatDistribution(float(value.start), float(value.end), log=log_scale)
        else:
            fixed.append(override.input_line)
    return fixed, space


def make_sampler(cfg: dict[str, Any], trials_so_far: int = 0):
    """The sampler of `hydra.sweeper.sampler`. A resumed study (`trials_so_far` trials in it) seeds it with
    seed + trials_so_far, so it does not replay the values of the first trials."""
    import optuna

    name = str(cfg.get("name", "tpe"))
    seed = cfg.get("seed")
    if seed is not None:
        seed = int(seed) + int(trials_so_far)
    if name == "tpe":  # constant_liar: trials running at once are told apart, so a slot asks no near-duplicate
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=int(cfg.get("n_startup_trials", 10)),
                                          constant_liar=True)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ConfigError(f"hydra.sweeper.sampler.name={name!r} is not allowed: expected tpe | random.")


_BARE = re.compile(r"[A-Za-z_][\w\-./]*")
_WORDS = {"true", "false", "null", "nan", "inf", "-inf", "+inf"}


def _value(v: Any) -> str:
    """A value as Hydra's override grammar reads it back unchanged: floats in full, null and booleans as Hydra
    writes them, a string quoted when it holds spaces, commas, quotes or brackets or would read as another type."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, str) and not (_BARE.fullmatch(v) and v.lower() not in _WORDS):
        return "'" + v.replace("'", "\\'") + "'"
    return str(v)


def overrides_of(fixed: list[str], params: dict[str, Any], space: dict[str, Any]) -> list[str]:
    """The job's overrides: the fixed ones, then the trial's values in the order of the search space."""
    return [*fixed, *(f"{k}={_value(params[k])}" for k in space if k in params)]


def _slots(sweeper) -> int:
    """Trials that can run at once: `n_jobs`, except on Hydra's basic launcher, which runs jobs one at a time in
    this process."""
    from hydra._internal.core_plugins.basic_launcher import BasicLauncher

    n_jobs = int(sweeper.n_jobs)
    if n_jobs < 1:
        raise ConfigError(f"hydra.sweeper.n_jobs={sweeper.n_jobs} is not allowed: expected a number >= 1")
    if n_jobs > 1 and isinstance(sweeper.launcher, BasicLauncher):
        log.warning("Optuna: hydra.sweeper.n_jobs=%d, but the basic launcher runs one job at a time in this "
                    "process: trials run one after the other (hydra/launcher=ray runs them at once)", n_jobs)
        return 1
    return n_jobs


def recover(study, sweep_dir: Path) -> list[Any]:
    """A resumed study's trials that a killed search left RUNNING: one asked but never given a run is failed; one
    whose run finished or was pruned is told so (pruned stays pruned); the others are returned, to run again in
    their own run dirs (resuming from their last.pt)."""
    from optuna.trial import TrialState

    again = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        run = trial.user_attrs.get(RUN_ATTR)
        if run is None:
            study.tell(trial.number, state=TrialState.FAIL)
            log.info("Optuna: trial %d was asked but never launched (the search was stopped); marked failed",
                     trial.number)
            continue
        status = run_status(sweep_dir / str(run))[0]
        if status in ("done", "pruned"):
            tell_status(study, trial.number, sweep_dir / str(run), status)
        else:
            again.append(trial)
    return sorted(again, key=lambda t: t.user_attrs[RUN_ATTR])


class Search:
    """The asynchronous search: `slots` threads, each asking a trial (or taking one a killed search left), running
    it through the sweep's launcher and telling the study, then asking the next as soon as its run ends, so that a
    slot whose trial finished early or was pruned never waits for the others."""

    def __init__(self, sweeper, study, fixed: list[str], space: dict[str, Any], sweep_dir: Path,
                 again: list[Any]) -> None:
        self.sweeper, self.study, self.fixed, self.space, self.sweep_dir = sweeper, study, fixed, space, sweep_dir
        self.again = list(again)
        trials = study.get_trials(deepcopy=False)
        runs = [t.user_attrs[RUN_ATTR] for t in trials if RUN_ATTR in t.user_attrs]
        self.next_run = max(runs, default=-1) + 1
        # every trial given a run counts towards n_trials once, those run again (`again`) included: a resumed
        # search asks only the trials that n_trials has left
        self.launched = len(runs)
        self.lock = threading.Lock()
        self.returns: list[Any] = []
        self.errors: list[BaseException] = []
        self.stop = threading.Event()

    def next_job(self) -> tuple[int, int, dict[str, Any]] | None:
        with self.lock:
            if self.stop.is_set():
                return None
            if self.again:
                trial = self.again.pop(0)
                return trial.number, trial.user_attrs[RUN_ATTR], trial.params
            if self.launched >= int(self.sweeper.n_trials):
                return None
            trial = self.study.ask(self.space)
            faults.point("trial_asked")  # asked, not yet given its run (a kill here: failed on resume)
            run, self.next_run = self.next_run, self.next_run + 1
            trial.set_user_attr(RUN_ATTR, run)
            self.launched += 1
            return trial.number, run, trial.params

    def slot(self) -> None:
        try:
            while (job := self.next_job()) is not None:
                number, run, params = job
                results = self.sweeper.launcher.launch([overrides_of(self.fixed, params, self.space)],
                                                       initial_job_idx=run)
                if results[0] is None:  # the launcher was stopped (Ctrl-C, another slot's run refused to start)
                    return
                with self.lock, deferred_interrupt():  # the journal gets the whole record or none
                    tell(self.study, number, self.sweep_dir / str(run), results[0])
                    self.returns.append(results)
        except BaseException as exc:  # noqa: BLE001 - raised again in the searching thread
            self.errors.append(exc)
            self.stop.set()

    def run(self, slots: int) -> list[Any]:
        """Run the search. One slot runs in this (the main) thread, so that Ctrl-C reaches its run as it reaches a
        single training (the trial ends KILLED in its loggers); several slots run in threads of their own, and
        Ctrl-C has the launcher interrupt their runs (hydra/launcher=ray) and waits for them to end."""
        warm_up = getattr(self.sweeper.launcher, "warm_up", None)
        if warm_up is not None:  # e.g. Ray started in this (the main) thread, before the slots' threads
            warm_up()
        if slots == 1:
            self.slot()
        else:
            threads = [threading.Thread(target=self.slot, daemon=True, name=f"optuna-slot-{i}")
                       for i in range(slots)]
            try:
                run_all(threads, self.interrupt, stop_now=self.close)
            except KeyboardInterrupt:
                self.close()
                raise
        if self.errors:
            raise self.errors[0]
        return self.returns

    def interrupt(self) -> None:
        """Ctrl-C: no further trial is asked, and the launcher interrupts the runs it is running."""
        self.stop.set()
        interrupt = getattr(self.sweeper.launcher, "interrupt", None)
        if interrupt is not None:
            interrupt()

    def close(self) -> None:
        close = getattr(self.sweeper.launcher, "close", None)
        if close is not None:
            close()


def sweep(sweeper, arguments: list[str]) -> list[Any]:
    import optuna

    config = sweeper.config
    sweep_dir = Path(str(config.hydra.sweep.dir))
    fixed, space = search_space(sweeper, arguments)
    if not space:
        raise ConfigError("hydra.sweeper.params is empty: nothing to search; give it keys, e.g. "
                          "'hydra.sweeper.params.loss.gamma=interval(0,4)'")
    slots = _slots(sweeper)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(config, sweep_dir / "multirun.yaml")
    storage = open_storage(sweeper.storage, sweep_dir)
    study = optuna.create_study(study_name=sweeper.study_name, storage=storage, direction=sweeper.direction,
                                pruner=make_pruner(dict(sweeper.pruner)), load_if_exists=True)
    before = len(study.get_trials(deepcopy=False))
    study.sampler = make_sampler(dict(sweeper.sampler), trials_so_far=before)
    again = recover(study, sweep_dir) if before else []
    if before:
        log.info("Optuna: study %s in %s has %d trials; %d left unfinished are run again", sweeper.study_name,
                 sweep_dir, before, len(again))
    log.info("Optuna: %d trials of %s over %s, %d at a time (a new trial as soon as one ends)", sweeper.n_trials,
             sweeper.direction, ", ".join(space), slots)
    search = Search(sweeper, study, fixed, space, sweep_dir, again)
    try:
        returns = search.run(slots)
    finally:
        write_results(study, sweep_dir, space)
    return returns


def tell(study, number: int, run_dir: Path, result) -> None:
    """Tell the study how trial `number` ended: its objective (done), pruned, or failed."""
    output = OmegaConf.select(result.hydra_cfg or {}, "hydra.runtime.output_dir", default=None)
    status = "failed" if result.status == JobStatus.FAILED else run_status(Path(output or run_dir))[0]
    tell_status(study, number, run_dir, status, result.return_value if status == "done" else None)


def tell_status(study, number: int, run_dir: Path, status: str, value: Any = None) -> None:
    """Tell the study that trial `number` (run `run_dir`) ended `status`; a done run's value is `value`, or the
    objective in its metrics.json."""
    from optuna.trial import TrialState

    if status == "done":
        if value is None:
            value = (rundir.read_metrics(run_dir) or {}).get("best", {}).get(OBJECTIVE)
        study.tell(number, float(value))
    elif status == "pruned":
        study.tell(number, state=TrialState.PRUNED)
    else:
        study.tell(number, state=TrialState.FAIL)
    log.info("Optuna: trial %d (run %s) %s%s", number, run_dir.name, status,
             f", {float(value):.4f}" if status == "done" else "")


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
