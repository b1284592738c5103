"""The Ray launcher's work: connect to (or start) Ray, check that a run fits on its nodes, run every job on a warm
worker of its own slot (a Ray actor with the run's GPUs and cores, reused from run to run), and give the sweep one
JobReturn per job in job order (a worker that died is a failed run of the sweep, not the end of it, and its slot
gets a new worker)."""
from __future__ import annotations

import json
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from omegaconf import DictConfig, OmegaConf, open_dict

from deepart.core.errors import ConfigError

from ._threads import run_all

log = logging.getLogger("deepart")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")  # each run's own log lines, not "[repeated 3x]" (read at Ray's import)

#: Written into each run dir by the task: where the run ran (node, pid, the GPUs Ray gave it) and when.
PLACEMENT = "placement.json"
KEY = "hydra.launcher"
DEFAULT_PORT = 6379


def probe(address: str, timeout_s: float = 5.0) -> None:
    """A ConfigError in one line unless something accepts a connection at `address` (host[:port], or
    ray://host:port of a Ray client server)."""
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":") if ":" in hostport else (hostport, "", str(DEFAULT_PORT))
    try:
        number = int(port)
    except ValueError:
        raise ConfigError(f"{KEY}.address={address}: not host:port; give the head's address, e.g. "
                          f"{KEY}.address=node01:{DEFAULT_PORT}") from None
    try:
        socket.create_connection((host, number), timeout=timeout_s).close()
    except OSError as exc:
        raise ConfigError(f"{KEY}.address={address}: no Ray head answers at {host}:{number} ({exc.strerror or exc}); "
                          f"start one there (`ray start --head --port={number}`) or leave {KEY}.address=null for a "
                          f"Ray of this sweep's own") from None


def _local(num_cpus: int | None, num_gpus: int | None) -> dict[str, Any]:
    """ray.init's arguments for a Ray of the sweep's own: loopback only, no dashboard."""
    return {"num_cpus": num_cpus, "num_gpus": num_gpus, "_node_ip_address": "127.0.0.1", "include_dashboard": False,
            "log_to_driver": True}


class _NotMainThread(logging.Filter):
    """Ray started from a thread warns that it sets no SIGTERM handler there; the launching process has its own."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "SIGTERM handler is not set" not in record.getMessage()


_early: dict[str, Any] = {}


def _int_or_none(value: str | None) -> int | None:
    return None if value in (None, "", "null") else int(value)


def start_early(argv: list[str]) -> None:
    """Start a Ray of the sweep's own in a background thread, so that it boots while the launching process imports
    torch and composes the config: train.py calls this first, and only a sweep on a Ray of its own
    (`hydra/launcher=ray` with `-m` or `hparams_search=`, no `hydra.launcher.address` or `init`) starts one. The
    launcher's `connect` uses it when the config asks for the same cores and GPUs, else starts Ray anew."""
    args = argv[1:]
    if "hydra/launcher=ray" not in args or any(a in ("-h", "--help", "--hydra-help", "--info", "-c", "--cfg")
                                               for a in args):
        return
    values = dict(a.split("=", 1) for a in args if "=" in a and not a.startswith(("+", "~")))
    searching = values.get("hparams_search", "null") != "null"
    if not ("-m" in args or "--multirun" in args or searching):
        return
    if values.get("hydra.launcher.address", "null") != "null" or any(k.startswith("hydra.launcher.init")
                                                                     for k in values):
        return
    try:
        resources = (_int_or_none(values.get("hydra.launcher.num_cpus")),
                     _int_or_none(values.get("hydra.launcher.num_gpus")))
    except ValueError:  # the launcher reports a bad value in one line later
        return

    ready = threading.Event()

    def boot() -> None:
        try:
            import ray

            logging.getLogger("ray._private.worker").addFilter(_NotMainThread())
            ray.init(**_local(*resources))
        except BaseException as exc:  # noqa: BLE001 - the launcher starts Ray itself then
            _early["error"] = exc
            return
        finally:
            ready.set()
        # Ray's own processes die with the thread that started them (they are tied to it, not to the process):
        # this thread stays until the process ends
        threading.Event().wait()

    _early.update(ready=ready, resources=resources)
    threading.Thread(target=boot, daemon=True, name="ray-start").start()


def _use_early(launcher) -> bool:
    """Whether the Ray that start_early booted serves this sweep (stopped again when it does not)."""
    import ray

    ready = _early.pop("ready", None)
    if ready is None:
        return False
    ready.wait()
    if not ray.is_initialized():
        return False
    if launcher.address is None and not launcher.init and \
            (launcher.num_cpus, launcher.num_gpus) == _early.get("resources"):
        return True
    ray.shutdown()
    return False


def connect(launcher) -> bool:
    """Join the cluster at `address`, or start a Ray of this process's own (bound to the loopback, stopped when
    the sweep ends), or use the one start_early booted. Returns whether this call started or joined it."""
    import ray

    if launcher.address is None and launcher.num_gpus is not None:  # a Ray of our own: check the plan first
        own = {"GPU": float(launcher.num_gpus), "CPU": float(launcher.num_cpus or os.cpu_count() or 1)}
        plan_resources(launcher, [own])
    if _use_early(launcher):
        log.info("Ray launcher: a Ray of this sweep's own on this machine (started beside Hydra's start-up)")
        return True
    if ray.is_initialized():
        return False
    init = {"include_dashboard": False, "log_to_driver": True, **launcher.init}
    if launcher.address:
        if launcher.address != "auto":
            probe(launcher.address)
        log.info("Ray launcher: joining the Ray cluster at %s", launcher.address)
        ray.init(address=launcher.address, **init)
    else:
        ray.init(**{**_local(launcher.num_cpus, launcher.num_gpus), **launcher.init})
    return True


def _positive(value: Any, key: str, zero_ok: bool) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (value >= 0 if zero_ok else value > 0)
    if not ok:
        raise ConfigError(f"{KEY}.{key}={value!r} is not allowed: expected a number {'>= 0' if zero_ok else '> 0'}")
    return float(value)


def cluster_nodes() -> list[dict[str, float]]:
    """The resources of the Ray cluster's live nodes."""
    import ray

    return [n["Resources"] for n in ray.nodes() if n.get("Alive")]


def plan_resources(launcher, nodes: list[dict[str, float]]) -> tuple[float, float, int]:
    """(GPUs, CPUs) per run and how many runs fit at once on `nodes`; a run that fits on no node is a
    ConfigError naming the key."""
    most_gpus = max((n.get("GPU", 0.0) for n in nodes), default=0.0)
    most_cpus = max((n.get("CPU", 0.0) for n in nodes), default=0.0)
    gpus = _positive(launcher.gpus_per_run, "gpus_per_run", zero_ok=True)
    if gpus > most_gpus:
        where = "this machine has no GPU" if not most_gpus else f"the largest node of the Ray cluster has {most_gpus:g}"
        raise ConfigError(f"{KEY}.gpus_per_run={launcher.gpus_per_run} is more GPUs than a run can get ({where}); "
                          f"lower it" + (f" (at most {most_gpus:g})" if most_gpus else "")
                          + f", or {KEY}.gpus_per_run=0 for runs on CPU only")
    if launcher.cpus_per_run is None:  # GPU runs share a node's cores in proportion; CPU runs take one each
        gpu_nodes = [n for n in nodes if n.get("GPU", 0) >= gpus > 0]
        share = min(n["CPU"] / n["GPU"] * gpus for n in gpu_nodes) if gpu_nodes else 1.0
        cpus = float(max(1, math.floor(share)))
    else:
        cpus = _positive(launcher.cpus_per_run, "cpus_per_run", zero_ok=False)
    if cpus > most_cpus:
        raise ConfigError(f"{KEY}.cpus_per_run={launcher.cpus_per_run} is more CPU cores than a run can get (the "
                          f"largest node has {most_cpus:g}); lower it to at most {most_cpus:g}")
    at_once = sum(int(min(n.get("CPU", 0) // cpus, n.get("GPU", 0) // gpus if gpus else math.inf)) for n in nodes)
    if launcher.max_concurrent is not None:
        at_once = min(at_once, int(_positive(launcher.max_concurrent, "max_concurrent", zero_ok=False)))
    return gpus, cpus, max(at_once, 1)


def run_dir_of(sweep_config: DictConfig) -> Path:
    return Path(str(sweep_config.hydra.sweep.dir)) / str(sweep_config.hydra.sweep.subdir)


def size_workers(sweep_config: DictConfig, cpus: float) -> None:
    """data.num_workers=null (one per core of the machine) becomes the run's own cores less the one that trains."""
    if OmegaConf.select(sweep_config, "data.num_workers", default=0) is None:
        with open_dict(sweep_config):
            sweep_config.data.num_workers = max(0, int(cpus) - 1)


def run(hydra_context, sweep_config: DictConfig, task_function, singleton_state: dict, cpus: float) -> Any:
    """One job in a slot's worker process: Hydra's globals as in the launching process, then Hydra's run_job; what
    Ray gave the run is logged and written to <run>/placement.json. A SystemExit (a job refusing to start, e.g.
    resume_sweep= with other overrides) comes back as ("exit", code) for the launcher to raise."""
    import ray

    setup_globals()
    Singleton.set_state(singleton_state)
    HydraConfig.instance().set_config(sweep_config)
    size_workers(sweep_config, cpus)
    run_dir = run_dir_of(sweep_config)
    run_dir.mkdir(parents=True, exist_ok=True)
    placed = {"launcher": "ray", "host": socket.gethostname(), "node": ray.get_runtime_context().get_node_id(),
              "pid": os.getpid(),
              "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
              "gpu_ids": [str(g) for g in ray.get_gpu_ids()], "cpus": cpus,
              "data.num_workers": OmegaConf.select(sweep_config, "data.num_workers"), "started": time.time()}
    (run_dir / PLACEMENT).write_text(json.dumps(placed, indent=2))

    def task(cfg: DictConfig) -> Any:
        log.info("ray: run %s on %s, CUDA_VISIBLE_DEVICES=%s, %g CPU%s", sweep_config.hydra.job.num,
                 placed["host"], placed["CUDA_VISIBLE_DEVICES"], cpus, "s" if cpus != 1 else "")
        return task_function(cfg)

    try:
        result = run_job(hydra_context=hydra_context, task_function=task, config=sweep_config,
                         job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
    except SystemExit as exc:
        return ("exit", exc.code)
    placed["ended"] = time.time()
    (run_dir / PLACEMENT).write_text(json.dumps(placed, indent=2))
    return result


class SlotWorker:
    """A warm worker process of one slot (a Ray actor holding `gpus_per_run` GPUs and `cpus_per_run` cores): it
    runs the slot's jobs one after the other, so Python, torch and timm are imported once per slot rather than
    once per run. Between runs it frees what the run left (its model, CUDA's cached memory)."""

    def __init__(self, cwd: str, cpu_only: bool) -> None:
        if cpu_only:  # newer Ray leaves CUDA_VISIBLE_DEVICES alone for a 0-GPU actor: hide the GPUs ourselves
            os.environ["CUDA_VISIBLE_DEVICES"] = ""
        if os.path.isdir(cwd):  # relative paths of the config (data.root=data/...) as in the launching shell
            os.chdir(cwd)

    def run(self, *args: Any) -> Any:
        import gc

        try:
            return run(*args)
        finally:
            gc.collect()
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()


class Slots:
    """The sweep's warm workers: at most `at_once` of them, each lent to one job at a time. Shared by every
    launch() of the sweep (an Optuna search launches each trial on its own as a slot frees), so workers stay
    warm from run to run; a worker that died (killed for memory, a crash of the process) is replaced."""

    def __init__(self, gpus: float, cpus: float, at_once: int) -> None:
        import ray

        self.gpus, self.cpus, self.at_once = gpus, cpus, at_once
        self.actor = ray.remote(num_gpus=gpus, num_cpus=cpus, max_restarts=0, max_task_retries=0)(SlotWorker)
        self.idle: list[Any] = []
        self.workers: set[Any] = set()  # every live worker, idle or running a job
        self.closed = False
        self.cond = threading.Condition()

    def acquire(self) -> Any | None:
        """An idle worker, a new one while fewer than `at_once` live, else wait for one; None once closed."""
        with self.cond:
            while not self.closed and not self.idle and len(self.workers) >= self.at_once:
                self.cond.wait()
            if self.closed:
                return None
            if self.idle:
                return self.idle.pop()
            worker = self.actor.remote(os.getcwd(), self.gpus == 0)
            self.workers.add(worker)
        return worker

    def release(self, worker: Any, dead: bool = False) -> None:
        with self.cond:
            if dead or self.closed:
                self.workers.discard(worker)
            else:
                self.idle.append(worker)
            self.cond.notify()
        if dead or self.closed:
            _kill(worker)

    def close(self) -> None:
        """Stop every worker (Ctrl-C, or a job that refused to start): the runs still running stop with them."""
        with self.cond:
            self.closed = True
            workers, self.idle = list(self.workers), []
            self.cond.notify_all()
        for worker in workers:
            _kill(worker)


def _kill(worker: Any) -> None:
    import ray

    try:
        ray.kill(worker, no_restart=True)
    except Exception:  # noqa: BLE001 - already gone
        pass


def lost_job(sweep_config: DictConfig, overrides: Sequence[str], exc: BaseException) -> JobReturn:
    """The JobReturn of a job whose worker died (killed for memory, a crash of the process, a lost node): its
    failure.json is written as for a run that raised, and the sweep goes on."""
    from deepart.training.sweep import FAILED_OBJECTIVE, record_failure

    run_dir = run_dir_of(sweep_config)
    record_failure(run_dir, RuntimeError(f"the Ray worker running this job died: {type(exc).__name__}: {exc}"))
    log.error("run %s: its Ray worker died (%s); recorded in %s, the sweep goes on", run_dir.name,
              type(exc).__name__, run_dir)
    return JobReturn(overrides=list(overrides), cfg=sweep_config, hydra_cfg=sweep_config, working_dir=str(run_dir),
                     task_name=sweep_config.hydra.job.name, status=JobStatus.COMPLETED, _return_value=FAILED_OBJECTIVE)


_start_lock = threading.Lock()
_compose_lock = threading.Lock()


def slots(launcher) -> Slots:
    """The launcher's slots, made at its first launch: Ray joined or started, the runs' resources planned."""
    with _start_lock:
        if getattr(launcher, "slots", None) is None:
            setup_globals()
            configure_log(launcher.config.hydra.hydra_logging, launcher.config.hydra.verbose)
            Path(str(launcher.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
            connect(launcher)
            gpus, cpus, at_once = plan_resources(launcher, cluster_nodes())
            log.info("Ray launcher: runs into %s, %g GPU(s) and %g CPU(s) each, up to %d at once (one warm worker "
                     "per slot)", launcher.config.hydra.sweep.dir, gpus, cpus, at_once)
            launcher.slots = Slots(gpus, cpus, at_once)
        return launcher.slots


def run_on_slot(launcher, pool: Slots, idx: int, overrides: list[str], sweep_config: DictConfig) -> Any:
    """Run one job on a worker of `pool` (waiting for a free one); a worker that dies is a failed run."""
    import ray

    worker = pool.acquire()
    if worker is None:
        return None
    log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
    try:
        result = ray.get(worker.run.remote(launcher.hydra_context, sweep_config, launcher.task_function,
                                           Singleton.get_state(), pool.cpus))
    except ray.exceptions.RayActorError as exc:  # the worker process died: replace it
        pool.release(worker, dead=True)
        return None if pool.closed else lost_job(sweep_config, overrides, exc)
    except ray.exceptions.RayError as exc:
        pool.release(worker)
        return lost_job(sweep_config, overrides, exc)
    pool.release(worker)
    return result


def launch(launcher, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
    pool = slots(launcher)
    jobs = []
    for offset, overrides in enumerate(job_overrides):
        idx = initial_job_idx + offset
        with _compose_lock:  # launch() may run in several threads at once; Hydra's config loading is not shared
            sweep_config = launcher.hydra_context.config_loader.load_sweep_config(launcher.config, list(overrides))
        with open_dict(sweep_config):
            sweep_config.hydra.job.id = f"ray_{idx}"
            sweep_config.hydra.job.num = idx
        jobs.append((idx, list(overrides), sweep_config))
    results: list[Any] = [None] * len(jobs)
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            results[i] = run_on_slot(launcher, pool, *jobs[i])
            if isinstance(results[i], tuple) and results[i][:1] == ("exit",):
                pool.close()  # a job refused to start: the others stop too
        except BaseException as exc:  # noqa: BLE001 - raised again in the launching thread
            errors.append(exc)
            pool.close()

    threads = [threading.Thread(target=one, args=(i,), daemon=True, name=f"ray-run-{jobs[i][0]}")
               for i in range(len(jobs))]
    run_all(threads, pool.close)  # each waits for a slot of its own; at most `at_once` run at a time
    for result in results:
        if isinstance(result, tuple) and result[:1] == ("exit",):
            raise SystemExit(result[1])
    if errors:
        raise errors[0]
    return results  # None for a job that never ran because the sweep was stopped
