"""Exact cosine top-k over an index of paintings: one query against 100,000 L2-normalised vectors, with plain
torch matmul + topk (what `python -m deepart similar` uses), faiss-cpu (IndexFlatIP) and usearch (exact search).

    python benchmarks/similar_search.py                         # 100,000 x 512 (the context embedding), k=8
    python benchmarks/similar_search.py --dim 320 --threads 1   # the pooled Lite0 features, one thread
    python benchmarks/similar_search.py --json search.json

Prints, per backend, the latency of one query (median and p95 over --queries single-vector queries, after a
warm-up; wall clock, and the CPU time of the process, all threads summed: on a machine shared with other work
the wall clock includes the time spent waiting for a core, the CPU time does not), the time to build its
index, the memory its vectors take, the resident memory it added to the process (a copy of the vectors or
none) and the process's peak resident memory so far, and whether its top-k equals torch's (the exact answer).
faiss and usearch are measured when installed and left out with a note otherwise. Results go to
BENCHMARKS.md with the command.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deepart.inference.index import cosine_top_k  # noqa: E402

Search = Callable[[np.ndarray, int], np.ndarray]  # (1, d) query, k -> (k,) row indices


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mib() -> float:
    """The process's resident memory now (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def torch_backend(vectors: np.ndarray) -> tuple[Search, int]:
    gallery = torch.from_numpy(vectors)
    return (lambda q, k: cosine_top_k(gallery, torch.from_numpy(q), k)[1][0].numpy()), gallery.nbytes


def faiss_backend(vectors: np.ndarray) -> tuple[Search, int]:
    import faiss

    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    return (lambda q, k: index.search(q, k)[1][0]), index.ntotal * index.d * 4


def usearch_backend(vectors: np.ndarray) -> tuple[Search, int]:
    from usearch.index import MetricKind
    from usearch.index import search as exact_search

    threads = torch.get_num_threads()
    return (lambda q, k: np.asarray(exact_search(vectors, q[0], k, MetricKind.IP, exact=True, threads=threads).keys)
            ), vectors.nbytes


BACKENDS = {"torch": torch_backend, "faiss": faiss_backend, "usearch": usearch_backend}


def measure(name: str, vectors: np.ndarray, queries: np.ndarray, k: int, truth: np.ndarray | None) -> dict:
    """Build the backend's index, warm it up, then time one query at a time."""
    before, start = rss_mib(), time.perf_counter()
    try:
        search, nbytes = BACKENDS[name](vectors)
    except ImportError as exc:
        return {"backend": name, "skipped": f"not installed ({exc.name})"}
    build_s = time.perf_counter() - start
    for q in queries[:5]:
        search(q[None], k)
    times, cpu, found = [], [], []
    for q in queries:
        t0, c0 = time.perf_counter(), time.process_time()
        found.append(search(q[None], k))
        times.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.process_time() - c0) * 1000)
    found = np.stack(found)
    return {"backend": name, "median_ms": float(np.median(times)), "p95_ms": float(np.percentile(times, 95)),
            "cpu_median_ms": float(np.median(cpu)), "cpu_p95_ms": float(np.percentile(cpu, 95)),
            "build_s": build_s, "index_mib": nbytes / 2**20, "added_rss_mib": rss_mib() - before,
            "peak_rss_mib": peak_rss_mib(),
            "same_top_k_as_torch": None if truth is None else bool((np.sort(found, 1) == np.sort(truth, 1)).all()),
            "top_k": found}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="vectors in the index")
    parser.add_argument("--dim", type=int, default=512, help="their dimension (context 512, pooled Lite0 1280)")
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--queries", type=int, default=200, help="single-vector queries timed per backend")
    parser.add_argument("--threads", type=int, default=None, help="threads of every backend (default: one per core)")
    parser.add_argument("--backends", default="torch,faiss,usearch")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((args.n, args.dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = vectors[rng.choice(args.n, args.queries, replace=False)] + 0.1 * rng.standard_normal(
        (args.queries, args.dim), dtype=np.float32)
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    print(f"{args.n} x {args.dim} float32 vectors ({vectors.nbytes / 2**20:.0f} MiB), {args.queries} queries of one "
          f"vector, k={args.k}, {threads} thread(s), load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} "
          f"cores, peak RSS before the backends {peak_rss_mib():.0f} MiB")
    results, truth = [], None
    for name in args.backends.split(","):
        if name == "faiss":
            _faiss_threads(threads)
        res = measure(name, vectors, queries, args.k, truth)
        truth = res.pop("top_k") if name == "torch" else truth
        res.pop("top_k", None)
        results.append(res)
        print(_line(res), flush=True)
    report = {"n": args.n, "dim": args.dim, "k": args.k, "threads": threads, "load_average": os.getloadavg()[0],
              "results": results}
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return report


def _faiss_threads(threads: int) -> None:
    try:
        import faiss
    except ImportError:
        return
    faiss.omp_set_num_threads(threads)


def _line(res: dict) -> str:
    if "skipped" in res:
        return f"  {res['backend']:8s} skipped: {res['skipped']}"
    same = "" if res["same_top_k_as_torch"] is None else f", same top-k as torch: {res['same_top_k_as_torch']}"
    return (f"  {res['backend']:8s} median {res['median_ms']:6.2f} ms, p95 {res['p95_ms']:6.2f} ms (CPU time "
            f"{res['cpu_median_ms']:.2f} / {res['cpu_p95_ms']:.2f} ms), build "
            f"{res['build_s']:.2f} s, vectors {res['index_mib']:.0f} MiB, memory added {res['added_rss_mib']:.0f} MiB, "
            f"peak RSS {res['peak_rss_mib']:.0f} MiB"
            + same)


if __name__ == "__main__":
    main()
