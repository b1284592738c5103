"""Classification metrics accumulated on the device (one host sync per evaluation).

Everything derives from a confusion matrix per task plus top-k hit counts, loss sums and reliability bins:
top-1, top-5 (k capped at the number of classes), macro-F1 and balanced accuracy (as in scikit-learn:
F1 averaged over classes that occur as truth or prediction, recall averaged over classes that occur
as truth), per-class precision / recall, and the expected calibration error of the softmax (objectives.calibration).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from deepart.data.table import MISSING
from deepart.objectives.calibration import DEFAULT_BINS, ece_from_bins, reliability_bins


def macro_f1(cm: np.ndarray) -> float:
    tp = np.diag(cm).astype(float)
    support, predicted = cm.sum(1), cm.sum(0)
    present = (support + predicted) > 0
    if not present.any():
        return 0.0
    denom = support + predicted
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return float(f1[present].mean())


def balanced_accuracy(cm: np.ndarray) -> float:
    support = cm.sum(1)
    present = support > 0
    if not present.any():
        return 0.0
    return float((np.diag(cm)[present] / support[present]).mean())


def per_class_table(cm: np.ndarray, class_names: list[str]) -> pd.DataFrame:
    """Support, precision, recall and F1 of every class of one task."""
    tp = np.diag(cm).astype(float)
    support, predicted = cm.sum(1), cm.sum(0)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    f1 = np.divide(2 * tp, support + predicted, out=np.zeros_like(tp), where=(support + predicted) > 0)
    return pd.DataFrame({"class": class_names, "support": support, "predicted": predicted,
                         "precision": precision, "recall": recall, "f1": f1})


class MetricAccumulator:
    """Accumulates per-task confusion matrices, top-k hits and loss sums for one pass over a split."""

    def __init__(self, tasks: dict[str, list[str]], device: torch.device | str = "cpu", top_k: int = 5):
        self.tasks = {t: list(c) for t, c in tasks.items()}
        self.device = torch.device(device)
        self.top_k = top_k
        self.reset()

    def reset(self) -> None:
        n = len(self.tasks)
        self.confusion = {t: torch.zeros(len(c), len(c), dtype=torch.long, device=self.device)
                          for t, c in self.tasks.items()}
        self.topk_hits = torch.zeros(n, dtype=torch.long, device=self.device)
        self.loss_sum = torch.zeros(n, dtype=torch.float64, device=self.device)
        self.count = torch.zeros(n, dtype=torch.long, device=self.device)
        self.bins = {t: torch.zeros(3, DEFAULT_BINS, dtype=torch.float64, device=self.device) for t in self.tasks}

    @torch.no_grad()
    def update(self, logits: dict[str, torch.Tensor], labels: torch.Tensor,
               loss_sums: torch.Tensor | None = None) -> None:
        """logits: {task: (B, C)}; labels: (B, T) with -1 = missing; loss_sums: (T,) summed per-sample losses."""
        for t, (task, classes) in enumerate(self.tasks.items()):
            y = labels[:, t]
            mask = y != MISSING
            y, z = y[mask], logits[task].detach()[mask]
            c = len(classes)
            pred = z.argmax(-1)
            self.confusion[task] += torch.bincount(y * c + pred, minlength=c * c).view(c, c)
            k = min(self.top_k, c)
            self.topk_hits[t] += (z.topk(k, dim=-1).indices == y[:, None]).any(-1).sum()
            self.count[t] += mask.sum()
            confidence = z.float().softmax(-1).max(-1).values
            self.bins[task] += reliability_bins(confidence, pred == y, DEFAULT_BINS)
        if loss_sums is not None:
            self.loss_sum += loss_sums.detach().to(torch.float64)

    def tensors(self) -> list[torch.Tensor]:
        """The state as tensors (e.g. for an all-reduce across processes)."""
        return [*self.confusion.values(), self.topk_hits, self.loss_sum, self.count, *self.bins.values()]

    def confusion_matrix(self, task: str) -> np.ndarray:
        return self.confusion[task].cpu().numpy()

    def compute(self, prefix: str = "val") -> dict[str, float]:
        """`<prefix>/<task>/{top1,top5,loss,macro_f1,balanced_acc,ece,count}`, `<prefix>/mean_top1`,
        `<prefix>/loss`."""
        count = self.count.cpu().numpy()
        hits = self.topk_hits.cpu().numpy()
        loss = self.loss_sum.cpu().numpy()
        out: dict[str, float] = {}
        top1s, losses = [], []
        for t, task in enumerate(self.tasks):
            cm = self.confusion_matrix(task)
            n = max(int(count[t]), 1)
            top1 = float(np.trace(cm) / n)
            out[f"{prefix}/{task}/top1"] = top1
            out[f"{prefix}/{task}/top5"] = float(hits[t] / n)
            out[f"{prefix}/{task}/loss"] = float(loss[t] / n)
            out[f"{prefix}/{task}/macro_f1"] = macro_f1(cm)
            out[f"{prefix}/{task}/balanced_acc"] = balanced_accuracy(cm)
            out[f"{prefix}/{task}/ece"] = ece_from_bins(self.bins[task])
            out[f"{prefix}/{task}/count"] = int(count[t])
            if count[t] > 0:
                top1s.append(top1)
                losses.append(out[f"{prefix}/{task}/loss"])
        out[f"{prefix}/mean_top1"] = float(np.mean(top1s)) if top1s else 0.0
        out[f"{prefix}/loss"] = float(np.mean(losses)) if losses else 0.0
        return out


def chance_level(class_names: list[str]) -> float:
    return 1.0 / len(class_names)


def format_table(metrics: dict[str, float], tasks: dict[str, list[str]], prefix: str = "val") -> str:
    """A per-task text table of top-1 / top-5 / macro-F1 / balanced accuracy (in %) against chance, and the
    expected calibration error (in %)."""
    head = (f"{'task':<12}{'classes':>8}{'top1':>8}{'top5':>8}{'mF1':>8}{'bal.acc':>9}{'chance':>8}{'x chance':>10}"
            f"{'ECE':>7}")
    lines = [head, "-" * len(head)]
    for task, classes in tasks.items():
        key = f"{prefix}/{task}"
        if f"{key}/top1" not in metrics:
            continue
        chance = chance_level(classes)
        top1 = metrics[f"{key}/top1"]
        lines.append(f"{task:<12}{len(classes):>8}{100 * top1:>8.1f}{100 * metrics[f'{key}/top5']:>8.1f}"
                     f"{100 * metrics[f'{key}/macro_f1']:>8.1f}{100 * metrics[f'{key}/balanced_acc']:>9.1f}"
                     f"{100 * chance:>8.1f}{top1 / chance:>10.2f}{100 * metrics.get(f'{key}/ece', float('nan')):>7.1f}")
    lines.append(f"{'mean top1':<12}{'':>8}{100 * metrics.get(f'{prefix}/mean_top1', 0.0):>8.1f}")
    return "\n".join(lines)
