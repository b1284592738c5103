"""The throughput benchmark runs end to end on CPU with a tiny model (figures are not checked: no timing
asserts; GPU figures live in BENCHMARKS.md)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load_benchmark():
    spec = importlib.util.spec_from_file_location("throughput", REPO / "benchmarks" / "throughput.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_throughput_benchmark_reports_every_configuration(tmp_path, capsys):
    bench = load_benchmark()
    out = tmp_path / "report.json"
    report = bench.main(["--tiny", "--device", "cpu", "--work-dir", str(tmp_path / "work"), "--json", str(out),
                         "--n-images", "16", "--workers", "0"])
    expected = {"train model-only", "train e2e originals", "train e2e cache", "eval model-only",
                "eval e2e originals", "eval e2e cache", "train model-only fp32", "train naive"}
    assert set(report["results"]) == expected
    for name, res in report["results"].items():
        assert res["images_per_s"] > 0 and res["steps"] == 3, name
        assert res["peak_mem_gib"] is None  # CPU: no device memory to report
    assert set(report["ratios"]) == {"e2e cache / model-only", "e2e originals / model-only", "e2e cache / naive",
                                     "eval e2e cache / eval model-only"}
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    # the cache really was written and used: resized copies with a manifest
    manifests = list((tmp_path / "work" / "cache").rglob("manifest.json"))
    assert len(manifests) == 1
    copies = [p for p in manifests[0].parent.rglob("*.jpg")]
    assert len(copies) == 16
    printed = capsys.readouterr().out
    assert "train e2e cache" in printed and "e2e cache / naive" in printed


def test_memory_benchmark_reports_eval_batches_and_the_largest_training_batch(tmp_path):
    spec = importlib.util.spec_from_file_location("memory", REPO / "benchmarks" / "memory.py")
    memory = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(memory)
    out = tmp_path / "memory.json"
    assert memory.main(["--tiny", "--device", "cpu", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report["eval"]) == {"8", "16"} and all(r["images_per_s"] > 0 for r in report["eval"].values())
    # nothing runs out of memory on a CPU: the search doubles from 4 up to its limit of 16
    assert report["train_phase3"] == {"largest_batch": 16, "peak_mem_gib": None, "first_too_large": None,
                                      "limit": 16}
