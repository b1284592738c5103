"""The web app under load: the real page (`python -m deepart app`) in a subprocess, driven by gradio_client
clients sending real images, as a museum page or a class would use it for hours.

    python benchmarks/app_load.py --model <run dir | export folder | .pt> --images <folder of paintings>
    python benchmarks/app_load.py --model <run> --images <folder> --clients 8 --requests 5 --rounds 3
    python benchmarks/app_load.py --model <run> --images <folder> --clients 8 --requests 125 --rounds 2 \
        --repo <another checkout>          # the same load on another checkout's app (e.g. an older commit)

Each round: `--clients` threads, each with its own gradio_client Client, send `--requests` images one after
the other (round robin over the images) to the page's /predict endpoint. Printed per round: answered /
refused ("queue full") / errors, p50 / p95 / max latency of the answered requests, answers per second over
the round, and after it the server's resident memory (VmRSS of the app's process) and the size of its
Gradio file cache (uploads and output images: the server's GRADIO_TEMP_DIR, a fresh folder per run). While
the rounds run, the RSS and the cache are sampled every `--sample` seconds (the series is in the --json
output). The load average of the machine is printed at the start and after each round: the figures of a
busy machine are only comparable with others measured beside them.

With `--unique` every request uploads a painting the page has not seen: the image with one pixel set to the
request's number, re-encoded (a new file for Gradio, which keeps one copy per content hash), as a page open to
the public gets new photos all day; with the default, the images come back round robin and the cache holds one
copy of each. `--app cache_age_s=60` then shows the cache bounded by its age within minutes:

    python benchmarks/app_load.py --model <run> --images <paintings> --clients 8 --requests 25 --rounds 10 \
        --unique --app cache_age_s=60

The script talks to the page only over HTTP (gradio_client), so it drives any version of the app; `app=`
options (e.g. `--app concurrency=4`) are passed to `python -m deepart app` as they are.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


# ------------------------------------------------------------------------------------------------ the server
def free_port() -> int:
    """A TCP port free on 127.0.0.1 just now (the benchmarks' and the tests' servers and clusters take one)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kill_group(proc: subprocess.Popen) -> None:
    """Every process of `proc`'s process group (started with start_new_session=True: a Ray node, a sweep and its
    workers) killed with SIGKILL, then `proc` reaped; a group that is gone already is left as it is."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


class AppServer:
    """`python -m deepart app` of checkout `repo` on a free localhost port until stopped; with `own_cache`, a
    Gradio cache of its own (a fresh temp folder, `cache`), else the environment's (GRADIO_TEMP_DIR or Gradio's
    default). A page that exits or does not answer within `start_timeout_s` raises `failure` with the end of its
    log (SystemExit here: the benchmark's one message; the tests' Server raises AssertionError)."""

    start_timeout_s, stop_timeout_s = 300, 30
    failure: type[BaseException] = SystemExit

    def __init__(self, model: Path, repo: Path, log: Path, app_args: list[str], own_cache: bool = True):
        self.port, self.log = free_port(), log
        self.url = f"http://127.0.0.1:{self.port}/"
        self.cache = Path(tempfile.mkdtemp(prefix="deepart-app-cache-")) if own_cache else None
        env = {**os.environ, "PYTHONPATH": str(repo), "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1",
               **({"GRADIO_TEMP_DIR": str(self.cache)} if self.cache else {})}
        self.proc = subprocess.Popen([sys.executable, "-m", "deepart", "app", f"model={model}",
                                      f"port={self.port}", *app_args], cwd=repo, env=env,
                                     stdout=log.open("w"), stderr=subprocess.STDOUT)

    def wait(self) -> AppServer:
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise self.failure(f"the app exited ({self.proc.returncode}):\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url, timeout=5) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        raise self.failure(f"the app did not answer within {self.start_timeout_s} s:\n"
                           f"{self.log.read_text()[-3000:]}")

    def rss_mb(self) -> float:
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return float("nan")

    def cache_size(self) -> tuple[float, int]:
        """(MB, files) under the server's Gradio cache."""
        total, files = 0, 0
        for root, _, names in os.walk(self.cache):
            for name in names:
                try:
                    total += os.lstat(os.path.join(root, name)).st_size
                    files += 1
                except OSError:
                    pass
        return total / 2**20, files

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=self.stop_timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# ------------------------------------------------------------------------------------------------ the load
def load_avg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = int(pos), min(int(pos) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


class NewPaintings:
    """Uploads the page has not seen: image `path` with its top-left pixel set to the next number of a counter
    (its three bytes), re-encoded as JPEG into `folder`; the caller deletes the file once sent."""

    def __init__(self, folder: Path):
        self.folder, self.counter, self.lock = folder, itertools.count(1), threading.Lock()

    def __call__(self, path: Path) -> Path:
        from PIL import Image

        with self.lock:
            n = next(self.counter)
        with Image.open(path) as im:
            image = im.convert("RGB")
        image.putpixel((0, 0), (n & 255, (n >> 8) & 255, (n >> 16) & 255))
        out = self.folder / f"upload-{n}.jpg"
        image.save(out, quality=92)
        return out


def one_round(url: str, images: list[Path], clients: int, requests: int, offset: int,
              fresh: NewPaintings | None = None) -> dict[str, Any]:
    """`clients` threads x `requests` each; latencies of the answered ones, counts of the others. `fresh`: each
    request uploads a new painting made from the image (`--unique`)."""
    from gradio_client import Client, handle_file

    latencies: list[float] = []
    counts = {"answered": 0, "refused": 0, "errors": 0}
    messages: dict[str, int] = {}
    lock = threading.Lock()
    ready = threading.Barrier(clients + 1)

    def client(n: int) -> None:
        c = Client(url, verbose=False, download_files=False)
        ready.wait()
        for i in range(requests):
            image = images[(offset + n * requests + i) % len(images)]
            if fresh is not None:
                image = fresh(image)
            start = time.perf_counter()
            try:
                status = c.predict(handle_file(str(image)), api_name="/predict")[-1]
                kind = "answered" if str(status).startswith("Predicted in") else "errors"
                text = "" if kind == "answered" else str(status)[:120]
            except Exception as exc:  # noqa: BLE001  a refusal or a failure: counted, the client goes on
                text = f"{type(exc).__name__}: {exc}"[:120]
                kind = "refused" if "queue is full" in text.lower() else "errors"
            seconds = time.perf_counter() - start
            if fresh is not None:
                image.unlink()
            with lock:
                counts[kind] += 1
                if kind == "answered":
                    latencies.append(seconds)
                else:
                    messages[text] = messages.get(text, 0) + 1

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(clients)]
    for t in threads:
        t.start()
    ready.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    return {**counts, "wall_s": wall, "answers_per_s": counts["answered"] / wall,
            "p50_s": percentile(latencies, 50), "p95_s": percentile(latencies, 95),
            "max_s": max(latencies, default=float("nan")), "messages": messages}


def sampler(server: AppServer, stop: threading.Event, every: float, series: list[dict]) -> None:
    start = time.monotonic()
    while not stop.wait(every):
        mb, files = server.cache_size()
        series.append({"t_s": round(time.monotonic() - start, 1), "rss_mb": round(server.rss_mb(), 1),
                       "cache_mb": round(mb, 2), "cache_files": files})


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, type=Path, help="run dir, export folder or checkpoint .pt")
    ap.add_argument("--images", required=True, type=Path, help="a folder of images (searched recursively)")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=5, help="requests per client and round")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=4, help="requests sent one by one before the rounds")
    ap.add_argument("--repo", type=Path, default=REPO, help="the checkout whose app is started")
    ap.add_argument("--app", nargs="*", default=[], metavar="KEY=VALUE", help="options of python -m deepart app")
    ap.add_argument("--sample", type=float, default=5.0, help="seconds between RSS / cache samples")
    ap.add_argument("--unique", action="store_true",
                    help="every request uploads a painting not seen before (the image with one pixel changed)")
    ap.add_argument("--label", default="", help="a name for this run in the printout")
    ap.add_argument("--json", type=Path, help="write every figure (and the RSS / cache series) here")
    args = ap.parse_args(argv)

    images = sorted(p for p in args.images.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise SystemExit(f"--images {args.images}: no images")
    log = Path(tempfile.mkdtemp(prefix="deepart-app-load-")) / "app.log"
    label = args.label or str(args.repo)
    print(f"[{label}] app of {args.repo} on {args.model}, {len(images)} images of {args.images}; "
          f"load average {load_avg()}; app log {log}", flush=True)
    server = AppServer(args.model.resolve(), args.repo.resolve(), log, args.app).wait()
    from gradio_client import Client, handle_file

    warm = Client(server.url, verbose=False, download_files=False)
    for i in range(args.warmup):
        warm.predict(handle_file(str(images[i % len(images)])), api_name="/predict")
    mb, files = server.cache_size()
    result: dict[str, Any] = {"label": label, "repo": str(args.repo), "model": str(args.model),
                              "app": args.app, "start": {"rss_mb": server.rss_mb(), "cache_mb": mb,
                                                         "cache_files": files, "loadavg": load_avg()},
                              "rounds": [], "series": []}
    print(f"[{label}] after {args.warmup} warm-up requests: RSS {server.rss_mb():.0f} MB, cache {mb:.1f} MB "
          f"in {files} files", flush=True)
    fresh = NewPaintings(log.parent) if args.unique else None
    stop = threading.Event()
    watcher = threading.Thread(target=sampler, args=(server, stop, args.sample, result["series"]), daemon=True)
    watcher.start()
    print(f"{'round':>5} {'clients x req':>13} {'answered':>8} {'refused':>7} {'errors':>6} {'p50 s':>6} "
          f"{'p95 s':>6} {'max s':>6} {'ans/s':>6} {'RSS MB':>7} {'cache MB':>8} {'files':>6} {'load':>15}")
    try:
        for r in range(args.rounds):
            row = one_round(server.url, images, args.clients, args.requests, r * args.clients * args.requests,
                            fresh)
            mb, files = server.cache_size()
            row.update(rss_mb=server.rss_mb(), cache_mb=mb, cache_files=files, loadavg=load_avg())
            result["rounds"].append(row)
            print(f"{r + 1:>5} {f'{args.clients} x {args.requests}':>13} {row['answered']:>8} {row['refused']:>7} "
                  f"{row['errors']:>6} {row['p50_s']:>6.2f} {row['p95_s']:>6.2f} {row['max_s']:>6.2f} "
                  f"{row['answers_per_s']:>6.2f} {row['rss_mb']:>7.0f} {mb:>8.1f} {files:>6} {row['loadavg']:>15}",
                  flush=True)
            for text, n in row["messages"].items():
                print(f"      {n} x {text}")
    finally:
        stop.set()
        server.stop()
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
