"""Retrieval quality: how often a painting's nearest neighbours share its label (same style, same artist).

Each query ranks the whole gallery by similarity (ties broken by gallery order). For one task:

    precision@k   the share of the k nearest gallery items with the query's label, averaged over queries
    AP            average precision of the query's full ranking (the mean of precision@r over the ranks r of
                  the relevant items); mAP is its mean over the queries that have a relevant item
    chance@k      the precision@k of a random ranking: the share of the gallery with the query's label

Items without a label for the task (-1) are left out: unlabelled queries are not scored, unlabelled gallery
items are removed from the ranking.
"""
from __future__ import annotations

import numpy as np
import torch

from deepart.data.table import MISSING


def per_query(similarity: torch.Tensor, query_labels: np.ndarray, gallery_labels: np.ndarray,
              ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, np.ndarray]:
    """Per labelled query: "precision@k" for each k (capped at the gallery size), "ap" (NaN when the gallery
    holds no item of its label), "chance" (the share of the gallery with its label) and "query" (its row in
    `similarity`). `similarity`: (Q, G), larger = more similar."""
    queries = np.flatnonzero(np.asarray(query_labels) != MISSING)
    gallery = np.flatnonzero(np.asarray(gallery_labels) != MISSING)
    q_labels = torch.as_tensor(np.asarray(query_labels)[queries])
    g_labels = torch.as_tensor(np.asarray(gallery_labels)[gallery])
    sim = similarity.float()[torch.as_tensor(queries)][:, torch.as_tensor(gallery)]
    order = sim.argsort(dim=1, descending=True, stable=True)
    relevant = (g_labels[order] == q_labels[:, None]).double()               # (Q, G) in rank order
    n_relevant = relevant.sum(1)
    hits = relevant.cumsum(1)
    ranks = torch.arange(1, relevant.shape[1] + 1, dtype=torch.double)
    ap = (hits / ranks * relevant).sum(1) / n_relevant                          # NaN where n_relevant == 0
    out = {f"precision@{k}": (hits[:, min(k, len(gallery)) - 1] / min(k, len(gallery))).numpy() for k in ks}
    out.update(ap=ap.numpy(), chance=(n_relevant / max(len(gallery), 1)).numpy(), query=queries)
    return out


def summarize(scores: dict[str, np.ndarray]) -> dict[str, float]:
    """Means of `per_query`'s scores: precision@k, "mAP" (over queries with a relevant item), "chance", and
    "queries" (how many were scored)."""
    out = {key: float(np.mean(values)) for key, values in scores.items() if key.startswith("precision@")}
    out["mAP"] = float(np.nanmean(scores["ap"])) if np.isfinite(scores["ap"]).any() else float("nan")
    out["chance"] = float(np.mean(scores["chance"]))
    out["queries"] = len(scores["query"])
    return out


def retrieval_quality(similarity: torch.Tensor, query_labels: np.ndarray, gallery_labels: np.ndarray,
                      ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    """`summarize(per_query(...))`: precision@k, mAP and chance of one task."""
    return summarize(per_query(similarity, query_labels, gallery_labels, ks))
