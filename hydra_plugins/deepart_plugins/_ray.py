"""The Ray launcher's work: connect to (or start) Ray, check that a run fits on its nodes, run every job on a warm
worker of its own slot (a Ray actor with the run's GPUs and cores, reused from run to run), and give the sweep one
JobReturn per job in job order (a worker that died is a failed run of the sweep, not the end of it, and its slot
gets a new worker)."""
from __future__ import annotations

import json
import logging
import math
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from omegaconf import DictConfig, OmegaConf, open_dict

from deepart.core import faults
from deepart.core.errors import ConfigError

from ._threads import run_all

log = logging.getLogger("deepart")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")  # each run's own log lines, not "[repeated 3x]" (read at Ray's import)

#: Written into each run dir by the task: where the run ran (node, pid, the GPUs Ray gave it) and when.
PLACEMENT = "placement.json"
KEY = "hydra.launcher"
DEFAULT_PORT = 6379


#: What an HTTP/2 client sends first (RFC 9113, 3.4): the preface and an empty SETTINGS frame. A gRPC server (a
#: Ray head's GCS) answers with a SETTINGS frame of its own before anything else.
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
_H2_SETTINGS = 4


def _speaks_grpc(sock: socket.socket, timeout_s: float) -> bool:
    """Whether the peer on `sock` answers the HTTP/2 preface with a SETTINGS frame within `timeout_s`."""
    sock.settimeout(timeout_s)
    try:
        sock.sendall(_H2_PREFACE)
        head = b""
        while len(head) < 9:
            chunk = sock.recv(9 - len(head))
            if not chunk:
                return False
            head += chunk
    except OSError:
        return False
    return head[3] == _H2_SETTINGS


#: A method every Ray head's GCS serves (an empty request): another gRPC service answers it UNIMPLEMENTED.
_GCS_METHOD = "/ray.rpc.NodeInfoGcsService/GetClusterId"


def _gcs_status(host: str, port: int, timeout_s: float, metadata: list[tuple[str, str]] | None = None) -> Any:
    """The gRPC status code with which the server at host:port answers _GCS_METHOD (None: it answered OK)."""
    import grpc

    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    with grpc.insecure_channel(target) as channel:
        try:
            channel.unary_unary(_GCS_METHOD)(b"", timeout=timeout_s, metadata=metadata)
        except grpc.RpcError as exc:
            return exc.code()
    return None


def _serves_gcs(host: str, port: int, timeout_s: float) -> bool:
    """Whether the gRPC server at host:port serves a Ray GCS's methods: any answer to _GCS_METHOD but
    UNIMPLEMENTED (a head with token authentication refuses a caller without its token: UNAUTHENTICATED, still a
    head)."""
    import grpc

    return _gcs_status(host, port, timeout_s) != grpc.StatusCode.UNIMPLEMENTED


def _host_port(address: str) -> tuple[str, int]:
    """(host, port) of host[:port], [ipv6]:port or ray://host:port; a ConfigError when the port is not a number."""
    hostport = address.split("://", 1)[-1].rstrip("/")
    no_port = ":" not in hostport or hostport.endswith("]") or (hostport.count(":") > 1 and hostport[0] != "[")
    host, _, port = (hostport, "", str(DEFAULT_PORT)) if no_port else hostport.rpartition(":")
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        raise ConfigError(f"{KEY}.address={address}: not host:port; give the head's address, e.g. "
                          f"{KEY}.address=node01:{DEFAULT_PORT}") from None


def _tls() -> bool:
    return os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true")


def probe(address: str, timeout_s: float = 5.0) -> None:
    """A ConfigError in one line unless a Ray head answers at `address` (host[:port], or ray://host:port of a Ray
    client server): something must accept a connection there and, for a head's GCS, answer as a gRPC server does
    and serve a GCS's methods (a port held by another program would keep ray.init retrying for minutes). With
    RAY_USE_TLS the gRPC checks are left to Ray."""
    host, number = _host_port(address)
    fix = (f"start one there (`ray start --head --port={number}`) or leave {KEY}.address=null for a Ray of this "
           f"sweep's own")
    try:
        sock = socket.create_connection((host, number), timeout=timeout_s)
    except OSError as exc:
        raise ConfigError(f"{KEY}.address={address}: no Ray head answers at {host}:{number} "
                          f"({exc.strerror or exc}); {fix}") from None
    with sock:
        grpc = "://" not in address and not _tls()
        if grpc and not _speaks_grpc(sock, timeout_s):
            raise ConfigError(f"{KEY}.address={address}: no Ray head answers at {host}:{number} (the port accepts "
                              f"connections but does not answer as a Ray head's gRPC server within {timeout_s:g} s: "
                              f"another program holds it); {fix}")
    if grpc and not _serves_gcs(host, number, timeout_s):
        raise ConfigError(f"{KEY}.address={address}: no Ray head answers at {host}:{number} (a gRPC server answers "
                          f"there, but not as a Ray head: another program holds it); {fix}")


def _local(num_cpus: int | None, num_gpus: int | None) -> dict[str, Any]:
    """ray.init's arguments for a Ray of the sweep's own: always a new one (address="local": neither RAY_ADDRESS
    nor the cluster a `ray start` left in Ray's temp dir, live or long dead, is joined), loopback only, no
    dashboard. Start it with init_local."""
    return {"address": "local", "num_cpus": num_cpus, "num_gpus": num_gpus, "_node_ip_address": "127.0.0.1",
            "include_dashboard": False, "log_to_driver": True}


def init_local(**init: Any) -> None:
    """ray.init of a Ray of this process's own that listens on the loopback only. ray.init swaps a node address of
    127.0.0.1 for this machine's routable one (and its servers then listen on every interface) unless Ray is in
    its single-machine mode (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, read from ray_constants at the call): that mode
    holds while Ray starts its processes, which get their address as an argument."""
    import ray
    from ray._private import ray_constants

    before = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        ray.init(**init)
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before


AUTH_MODE, AUTH_TOKEN, AUTH_TOKEN_PATH = "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"


def token() -> str | None:
    """This process's Ray authentication token: RAY_AUTH_TOKEN, the file RAY_AUTH_TOKEN_PATH names, or
    ~/.ray/auth_token (where `ray start --head` and `ray get-auth-token --generate` keep it); None without one."""
    if os.environ.get(AUTH_TOKEN, "").strip():
        return os.environ[AUTH_TOKEN].strip()
    path = os.environ.get(AUTH_TOKEN_PATH) or str(Path.home() / ".ray" / "auth_token")
    try:
        return Path(path).read_text().strip() or None
    except OSError:
        return None


def token_at_hand() -> bool:
    """Whether this process has a Ray authentication token (`token`)."""
    return token() is not None


def use_token() -> None:
    """Joining a cluster: send the token this process has (a head started by `ray start --head` where a token
    exists requires it; one without authentication ignores it), unless RAY_AUTH_MODE says otherwise. Ray itself
    sends none to an address it was given unless RAY_AUTH_MODE=token."""
    if os.environ.get(AUTH_MODE) is None and token_at_hand():
        os.environ[AUTH_MODE] = "token"
        try:  # Ray reads its settings once: read them again with this one
            from ray._raylet import Config

            Config.initialize("")
        except (ImportError, AttributeError):  # a Ray without token authentication
            pass


def resolve(address: str) -> str:
    """The head's host:port for `address`: itself, or for `auto` the cluster in RAY_ADDRESS or the one the last
    `ray start` on this machine recorded, as written there (Ray's own lookup would swap a loopback host for this
    machine's routable address, so the probe would knock elsewhere than the address named); a ConfigError when
    there is none."""
    if address != "auto":
        return address
    from ray._private import services

    env = os.environ.get("RAY_ADDRESS", "").strip()
    found = env if env and env not in ("auto", "local") else services.find_bootstrap_address(None)
    if not found:
        raise ConfigError(f"{KEY}.address=auto: no Ray cluster is recorded on this machine (no RAY_ADDRESS, no "
                          f"`ray start`); give the head's address ({KEY}.address=node01:{DEFAULT_PORT}) or leave "
                          f"{KEY}.address=null for a Ray of this sweep's own")
    return found


def _refused(address: str, target: str, why: str) -> ConfigError:
    mode = os.environ.get(AUTH_MODE)
    return ConfigError(
        f"{KEY}.address={address}: the Ray head at {target} answers but did not let this process join ({why}; "
        f"authentication {'token' if mode == 'token' else mode or 'off'}); if the cluster uses token "
        f"authentication, give this process the head's token: export RAY_AUTH_TOKEN=<output of `ray get-auth-token` "
        f"on the head> (or copy its ~/.ray/auth_token here), see docs/scaling.md")


def check_admitted(address: str, target: str, timeout_s: float = 5.0) -> None:
    """The refused-join ConfigError at once when the head at `target` refuses what this process would present (its
    token under RAY_AUTH_MODE=token, else none): its GCS answers UNAUTHENTICATED, where ray.init would retry ~20 s
    before giving up. With RAY_USE_TLS the check is left to Ray."""
    import grpc

    if _tls():
        return
    key = token() if os.environ.get(AUTH_MODE) == "token" else None
    metadata = [("authorization", f"Bearer {key}")] if key else None
    if _gcs_status(*_host_port(target), timeout_s, metadata) == grpc.StatusCode.UNAUTHENTICATED:
        raise _refused(address, target, "its GCS answers UNAUTHENTICATED: "
                       + ("the token sent is not the head's" if key else "no token sent"))


def join(address: str, init: dict[str, Any]) -> None:
    """ray.init on the cluster at `address` (probed first: a dead address is one line within seconds); a head that
    does not let this process in (most often a token missing or not the head's: asked of its GCS before ray.init,
    which would retry ~20 s) is a ConfigError in one line naming the address and the fix."""
    import ray

    target = resolve(address)
    if not target.startswith("ray://"):
        probe(target)
        use_token()
        check_admitted(address, target)
    log.info("Ray launcher: joining the Ray cluster at %s", target)
    try:
        ray.init(address=target, **init)
    except ConnectionError as exc:
        raise _refused(address, target, str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None


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
            logging.getLogger("ray._private.worker").addFilter(_NotMainThread())
            init_local(**_local(*resources))
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
        join(str(launcher.address), init)
    else:
        init_local(**{**_local(launcher.num_cpus, launcher.num_gpus), **launcher.init})
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
    faults.point("job_start")

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


#: A run failure after which its worker process cannot run another: the CUDA context of the process is lost for
#: the process's life (a device-side assert, an illegal memory access, ...).
CUDA_LOST = re.compile(r"CUDA error|device-side assert|illegal memory access|CUDA_ERROR|CUBLAS_STATUS|cuDNN error|"
                       r"AcceleratorError", re.IGNORECASE)


class SlotWorker:
    """A warm worker process of one slot (a Ray actor holding `gpus_per_run` GPUs and `cpus_per_run` cores): it
    runs the slot's jobs one after the other, so Python, torch and timm are imported once per slot rather than
    once per run. Between runs it frees what the run left (its model, CUDA's cached memory) and says whether it can
    take another run: not after a cleanup that failed or a run that failed with a CUDA error (the slot then gets a
    fresh worker). Its jobs run in a thread of their own (a threaded actor), so that `interrupt` can stop the
    running one as Ctrl-C stops a run: KeyboardInterrupt in its thread, the run's loggers end it KILLED."""

    def __init__(self, cwd: str, cpu_only: bool) -> None:
        if cpu_only:  # newer Ray leaves CUDA_VISIBLE_DEVICES alone for a 0-GPU actor: hide the GPUs ourselves
            os.environ["CUDA_VISIBLE_DEVICES"] = ""
        if os.path.isdir(cwd):  # relative paths of the config (data.root=data/...) as in the launching shell
            os.chdir(cwd)
        self.lock = threading.Lock()
        self.running: int | None = None  # the thread running a job, while it runs one

    def run(self, *args: Any) -> tuple[Any, str | None]:
        """(the job's result, or ("interrupted",) ; why this worker must take no other run, or None)."""
        with self.lock:
            self.running = threading.get_ident()
        try:
            result = run(*args)
        except KeyboardInterrupt:
            result = ("interrupted",)
        finally:
            with self.lock:
                self.running = None
        return result, self.cleanup(run_dir_of(args[1]))

    def ready(self) -> bool:
        return True

    def interrupt(self) -> bool:
        """Raise KeyboardInterrupt in the thread running a job (none: nothing to do); whether one was running."""
        import ctypes

        with self.lock:
            if self.running is None:
                return False
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self.running),
                                                       ctypes.py_object(KeyboardInterrupt))
            return True

    @staticmethod
    def cleanup(run_dir: Path) -> str | None:
        """Free what the run left; why this process must take no other run, or None when it may."""
        import gc

        from deepart.core import faults, rundir

        try:
            faults.point("worker_cleanup")
            gc.collect()
            import torch

            if torch.cuda.is_available() and torch.cuda.is_initialized():
                torch.cuda.synchronize()  # a lost CUDA context raises here
                torch.cuda.empty_cache()
        except Exception as exc:  # noqa: BLE001 - the run's results stand; its worker does not
            return f"freeing what the run left failed ({type(exc).__name__}: {exc})"
        error = rundir.read_failure(run_dir)
        if error is not None and CUDA_LOST.search(error):
            return f"the run failed with a CUDA error ({error[:200]})"
        return None


class Slots:
    """The sweep's warm workers: at most `at_once` of them, each lent to one job at a time. Shared by every
    launch() of the sweep (an Optuna search launches each trial on its own as a slot frees), so workers stay
    warm from run to run; a worker that died (killed for memory, a crash of the process) is replaced."""

    def __init__(self, gpus: float, cpus: float, at_once: int, capacity: Callable[[], int] | None = None) -> None:
        import ray

        self.gpus, self.cpus, self.at_once = gpus, cpus, at_once
        self.capacity = capacity  # how many runs the live cluster holds now (it shrinks when a node is lost)
        self.actor = ray.remote(num_gpus=gpus, num_cpus=cpus, max_restarts=0, max_task_retries=0,
                                max_concurrency=2)(SlotWorker)  # a job, and interrupt() beside it
        self.idle: list[Any] = []
        self.workers: set[Any] = set()  # every live worker, idle or running a job
        self.busy: set[Any] = set()  # the workers running a job
        self.failed_starts = 0  # new workers in a row that died as they started
        self.waiting: set[int] = set()  # the numbers of the jobs waiting for a worker
        self.closed = False
        self.cond = threading.Condition()

    def expect(self, jobs: Sequence[int]) -> None:
        """Jobs about to ask for a worker: they get one in job order, whichever thread asks first."""
        with self.cond:
            self.waiting.update(jobs)

    def acquire(self, job: int) -> Any | None:
        """For job number `job`, once no job of a lower number waits: an idle worker, a new one (placed:
        `placed`) while fewer than `at_once` live, else wait for one; None once closed."""
        while True:
            with self.cond:
                self.waiting.add(job)
                while not self.closed and (job != min(self.waiting) or
                                           (not self.idle and len(self.workers) >= self.at_once)):
                    self.cond.wait()
                self.waiting.discard(job)
                self.cond.notify_all()
                if self.closed:
                    return None
                if self.idle:
                    worker = self.idle.pop()
                    self.busy.add(worker)
                    return worker
                worker = self.actor.remote(os.getcwd(), self.gpus == 0)
                self.workers.add(worker)
                self.busy.add(worker)
            if self.placed(worker):
                return worker

    def placed(self, worker: Any) -> bool:
        """Wait until a new worker runs on a node. False (the worker dropped) when it died starting, or when the
        live cluster no longer holds this many workers (a node was lost: `at_once` shrinks, and the job waits for
        a worker of the nodes left instead of for a node that will not come back)."""
        import ray

        ready = worker.ready.remote()
        while True:
            done, _ = ray.wait([ready], timeout=2.0)
            if done:
                try:
                    ray.get(ready)
                    self.failed_starts = 0
                    return True
                except ray.exceptions.RayError as exc:
                    self.release(worker, dead=True)
                    self.failed_starts += 1
                    if self.failed_starts >= 3:
                        raise ConfigError(f"{KEY}: {self.failed_starts} Ray workers in a row died as they started "
                                          f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); see the "
                                          f"raylet's log of their node (ray's session_latest/logs)") from None
                    return False
            if self.closed:
                self.release(worker, dead=True)
                return False
            fits = self.fits()
            if fits == 0 and len(self.workers) <= 1:
                self.release(worker, dead=True)
                raise ConfigError(f"{KEY}: no node of the Ray cluster can hold a run any more (nodes were lost); "
                                  f"start nodes again, then continue with the same command plus resume_sweep=")
            if fits < len(self.workers):
                with self.cond:
                    self.at_once = max(1, min(self.at_once, fits))
                log.warning("Ray launcher: the cluster now holds %d run(s) at once (a node was lost); the runs left "
                            "wait for its other workers", fits)
                self.release(worker, dead=True)
                return False

    def fits(self) -> int:
        """How many runs the live cluster holds now (0: none fits any more)."""
        if self.capacity is None:
            return self.at_once
        try:
            return self.capacity()
        except ConfigError:
            return 0

    def release(self, worker: Any, dead: bool = False) -> None:
        with self.cond:
            self.busy.discard(worker)
            if dead or self.closed:
                self.workers.discard(worker)
            else:
                self.idle.append(worker)
            self.cond.notify_all()
        if dead or self.closed:
            _kill(worker)

    def interrupt(self) -> None:
        """Ctrl-C: no further job starts, and each running one is interrupted in its worker (it ends as an
        interrupted run does, KILLED in its loggers, and comes back as ("interrupted",))."""
        with self.cond:
            self.closed = True
            busy = list(self.busy)
            self.cond.notify_all()
        for worker in busy:
            try:
                worker.interrupt.remote()
            except Exception:  # noqa: BLE001 - already gone
                pass

    def close(self) -> None:
        """Stop every worker (the end of an interrupted sweep, a second Ctrl-C, or a job that refused to start):
        the runs still running stop with them."""
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


def lost_job(sweep_config: DictConfig, overrides: Sequence[str], exc: BaseException, since: float,
             died: bool = True) -> JobReturn:
    """The JobReturn of a job whose worker died (killed for memory, a crash of the process, a lost node) or whose
    Ray task failed outside the run: its failure.json is written as for a run that raised (with the job's
    overrides, so that a run lost before Hydra wrote its .hydra/ is listed with its values), unless the run wrote
    its own since `since` (its real error stays), and the sweep goes on."""
    from deepart.core import rundir
    from deepart.training.sweep import FAILED_OBJECTIVE, record_failure

    run_dir = run_dir_of(sweep_config)
    own = run_dir / rundir.FAILURE
    what = "its Ray worker died" if died else "its Ray task failed"
    if own.is_file() and own.stat().st_mtime >= since:
        log.error("run %s failed, then %s (%s); its failure is in %s, the sweep goes on", run_dir.name, what,
                  type(exc).__name__, own)
    else:
        cause = "the Ray worker running this job died" if died else "the Ray task of this job failed"
        record_failure(run_dir, RuntimeError(f"{cause}: {type(exc).__name__}: {exc}"), overrides=list(overrides))
        log.error("run %s failed: %s (%s); recorded in %s, the sweep goes on", run_dir.name, what,
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
            launcher.slots = Slots(gpus, cpus, at_once,
                                   capacity=lambda: plan_resources(launcher, cluster_nodes())[2])
        return launcher.slots


def started(sweep_config: DictConfig) -> bool:
    """Whether the job began on its worker: it writes placement.json first thing (removed before each attempt)."""
    return (run_dir_of(sweep_config) / PLACEMENT).is_file()


def run_on_slot(launcher, pool: Slots, idx: int, overrides: list[str], sweep_config: DictConfig) -> Any:
    """Run one job on a worker of `pool` (waiting for a free one); a worker that dies is a failed run, and one
    that cannot take another run (a failed cleanup, a CUDA error) is replaced. None: the job never ran or was
    interrupted (the sweep was stopped)."""
    import ray

    for attempt in range(3):
        worker = pool.acquire(idx)
        if worker is None:
            return None
        if attempt == 0:
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
        since = time.time()
        (run_dir_of(sweep_config) / PLACEMENT).unlink(missing_ok=True)  # an earlier attempt's: not this one's
        try:
            result, unusable = ray.get(worker.run.remote(launcher.hydra_context, sweep_config,
                                                         launcher.task_function, Singleton.get_state(), pool.cpus))
            break
        except ray.exceptions.RayActorError as exc:  # the worker process died: replace it
            pool.release(worker, dead=True)
            if pool.closed:
                return None
            if started(sweep_config) or attempt == 2:
                return lost_job(sweep_config, overrides, exc, since)
            log.warning("run %s: its worker was lost before the run started (%s); it starts on another worker",
                        run_dir_of(sweep_config).name, type(exc).__name__)
            continue
        except ray.exceptions.RayError as exc:  # raised outside the run: a worker not to trust with another
            pool.release(worker, dead=True)
            return None if pool.closed else lost_job(sweep_config, overrides, exc, since, died=False)
    if unusable:
        log.warning("run %s: %s; its slot gets a new worker", run_dir_of(sweep_config).name, unusable)
    pool.release(worker, dead=unusable is not None)
    return None if result == ("interrupted",) else result


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
    try:  # each waits for a slot of its own; at most `at_once` run at a time
        pool.expect([job[0] for job in jobs])
        run_all(threads, pool.interrupt, stop_now=pool.close)
    except KeyboardInterrupt:
        pool.close()
        raise
    for result in results:
        if isinstance(result, tuple) and result[:1] == ("exit",):
            raise SystemExit(result[1])
    if errors:
        raise errors[0]
    return results  # None for a job that never ran because the sweep was stopped
