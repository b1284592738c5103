"""Confidence that means something: expected calibration error, temperature scaling and abstention.

    ece(probs, labels)                   expected calibration error, equal-width confidence bins (15 by default)
    fit_temperature(logits, labels)      one temperature per task: minimises the NLL of softmax(logits / T)
    crossfit_ece(logits, labels)         the ECE after temperature scaling, each fold scaled by a T fitted on
                                         the others (an honest estimate when only one held-out split exists)
    coverage_table(probs, labels, ts)    answer only when the top probability reaches a threshold: coverage and
                                         accuracy of the answers at each threshold (`coverage_curve`: all of them)
    Calibration                          the temperatures and ECEs a checkpoint / export folder keeps

Labels are class indices with -1 (MISSING) = no label; those rows are left out. Dividing logits by a positive
T never changes their argmax, so top-1 is the same before and after scaling.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from deepart.core.errors import ConfigError, require
from deepart.data.table import MISSING

DEFAULT_BINS = 15
#: Fitted temperatures are kept within this range (a separable split would push T towards 0).
T_RANGE = (0.05, 20.0)


def _labelled(values: Any, labels: Any) -> tuple[torch.Tensor, torch.Tensor]:
    values, labels = torch.as_tensor(values).detach().cpu().double(), torch.as_tensor(labels).cpu().long()
    mask = labels != MISSING
    return values[mask], labels[mask]


def _top(probs: Any, labels: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top probability, predicted class and label of each labelled row."""
    probs, labels = _labelled(probs, labels)
    confidence, pred = probs.max(-1)
    return confidence, pred, labels


def reliability_bins(confidence: torch.Tensor, correct: torch.Tensor, n_bins: int = DEFAULT_BINS) -> torch.Tensor:
    """(3, n_bins): per equal-width bin (k/n, (k+1)/n] of the confidence, the count, the sum of confidences and
    the number correct (on the tensors' device; sums add up over batches and processes)."""
    index = (confidence.double() * n_bins).ceil().long().clamp(1, n_bins) - 1
    rows = [torch.ones_like(confidence, dtype=torch.float64), confidence.double(), correct.double()]
    return torch.stack([torch.bincount(index, weights=r, minlength=n_bins) for r in rows])


def ece_from_bins(bins: torch.Tensor) -> float:
    """Expected calibration error of `reliability_bins`: sum over bins of |accuracy - confidence| x share."""
    count, confidence, correct = bins.double().cpu()
    total = float(count.sum())
    return float((confidence - correct).abs().sum() / total) if total > 0 else 0.0


def ece(probs: Any, labels: Any, n_bins: int = DEFAULT_BINS) -> float:
    """Expected calibration error of (N, C) probabilities against labels (-1 = no label, left out)."""
    return ece_from_bins(bins_of(probs, labels, n_bins))


def bins_of(probs: Any, labels: Any, n_bins: int = DEFAULT_BINS) -> torch.Tensor:
    """`reliability_bins` of (N, C) probabilities against labels (-1 = no label, left out)."""
    confidence, pred, labels = _top(probs, labels)
    return reliability_bins(confidence, pred == labels, n_bins)


def scaled_probs(logits: Any, temperature: float = 1.0) -> torch.Tensor:
    """softmax(logits / T) in float64."""
    return torch.softmax(torch.as_tensor(logits).detach().cpu().double() / temperature, -1)


def nll(logits: Any, labels: Any, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of softmax(logits / T) on the labelled rows (0.0 when there are none)."""
    logits, labels = _labelled(logits, labels)
    return float(F.cross_entropy(logits / temperature, labels)) if len(labels) else 0.0


def fit_temperature(logits: Any, labels: Any, max_iter: int = 100) -> float:
    """The T > 0 that minimises the mean NLL of softmax(logits / T) on the labelled rows (L-BFGS on log T);
    1.0 when there are none."""
    logits, labels = _labelled(logits, labels)
    if len(labels) == 0:
        return 1.0
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")
    bounds = math.log(T_RANGE[0]), math.log(T_RANGE[1])

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.clamp(*bounds).exp(), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    t = float(log_t.detach().clamp(*bounds).exp())
    return t if math.isfinite(t) else 1.0


def crossfit_ece(logits: Any, labels: Any, folds: int = 2, seed: int = 0,
                 n_bins: int = DEFAULT_BINS) -> tuple[float, list[float]]:
    """ECE after temperature scaling measured on data the temperature was not fitted on: the labelled rows in
    `folds` random folds, each scaled by the T fitted on the other folds. Returns (ECE, the folds' T)."""
    logits, labels = _labelled(logits, labels)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    parts = [p for p in order.tensor_split(folds) if len(p)]
    probs, temps = torch.empty_like(logits), []
    for part in parts:
        rest = torch.ones(len(labels), dtype=torch.bool)
        rest[part] = False
        temps.append(fit_temperature(logits[rest], labels[rest]))
        probs[part] = scaled_probs(logits[part], temps[-1])
    return ece(probs, labels, n_bins), temps


def coverage_curve(probs: Any, labels: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Answering only the k most confident labelled images, k = 1..N: (coverage k/N, accuracy of those k,
    the k-th confidence), most confident first."""
    confidence, pred, labels = _top(probs, labels)
    order = confidence.argsort(descending=True, stable=True)
    hits = (pred == labels)[order].double().cumsum(0)
    k = torch.arange(1, len(order) + 1, dtype=torch.float64)
    return (k / max(len(order), 1)).numpy(), (hits / k).numpy(), confidence[order].numpy()


def coverage_table(probs: Any, labels: Any, thresholds: list[float]) -> list[dict[str, Any]]:
    """Per threshold: the share of labelled images whose top probability reaches it (coverage), how many that
    is (answered) and the top-1 accuracy on them (None when none is answered)."""
    confidence, pred, labels = _top(probs, labels)
    rows = []
    for t in thresholds:
        answered = confidence >= t
        n = int(answered.sum())
        accuracy = float((pred[answered] == labels[answered]).double().mean()) if n else None
        rows.append({"threshold": float(t), "coverage": n / max(len(labels), 1), "answered": n, "accuracy": accuracy})
    return rows


def min_confidence_per_task(value: Any, tasks: Mapping[str, Any] | None = None,
                            key: str = "min_confidence") -> dict[str, float]:
    """`min_confidence=` as {task: threshold}: null -> {}, a number in (0, 1) -> that number for every task,
    {task: number} -> those tasks (checked against `tasks` when given). Anything else is a one-line
    ConfigError naming `key`."""
    allowed = "a number in (0, 1), {task: number in (0, 1)} or null"
    if value is None:
        return {}
    if isinstance(value, Mapping):
        out = {str(t): _threshold(key, v, allowed, f".{t}") for t, v in value.items()}
        unknown = [t for t in out if tasks is not None and t not in tasks]
        if unknown:
            raise ConfigError(f"{key}: unknown task {unknown[0]!r}; the model's tasks are {', '.join(tasks or [])}")
        return out
    threshold = _threshold(key, value, allowed, "")
    return {t: threshold for t in tasks or {}}


def _threshold(key: str, value: Any, allowed: str, suffix: str) -> float:
    require(isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 1, key + suffix, value,
            allowed)
    return float(value)


@dataclass
class Calibration:
    """The per-task temperatures a checkpoint (`Checkpoint.calibration`) and an export folder (config.json's
    "calibration") keep, as plain containers, and the ECEs measured when they were fitted. A task without a
    temperature (every task of a model that was never calibrated) has T = 1."""

    temperature: dict[str, float] = field(default_factory=dict)
    split: str = "val"                      # the split the temperatures were fitted on
    images: int = 0                         # its labelled images (of the first task)
    bins: int = DEFAULT_BINS
    ece_before: dict[str, float] = field(default_factory=dict)         # softmax(logits), on `split`
    ece_after: dict[str, float] = field(default_factory=dict)          # softmax(logits / T), on `split` (fitted there)
    ece_after_crossfit: dict[str, float] = field(default_factory=dict)  # folds scaled by T fitted on the others
    nll_before: dict[str, float] = field(default_factory=dict)          # mean NLL of softmax(logits), on `split`
    nll_after: dict[str, float] = field(default_factory=dict)           # of softmax(logits / T): what T minimises

    def of(self, task: str) -> float:
        return float(self.temperature.get(task, 1.0))

    @property
    def calibrated(self) -> bool:
        return bool(self.temperature)

    def honest_ece(self, task: str) -> float | None:
        """The ECE after scaling measured on images the temperature was not fitted on where there is one."""
        return self.ece_after_crossfit.get(task, self.ece_after.get(task))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Calibration:
        """The calibration stored as `data` (None: uncalibrated); ValueError for a temperature that is not > 0."""
        data = dict(data or {})
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        calibration = cls(**known)
        for task, t in calibration.temperature.items():
            if not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0:
                raise ValueError(f"temperature of task {task!r} is {t!r}, not a number > 0")
        return calibration


def fit_calibration(logits: Mapping[str, Any], labels: Mapping[str, Any], split: str = "val",
                    n_bins: int = DEFAULT_BINS, folds: int = 2) -> Calibration:
    """Temperatures per task fitted on the logits and labels of `split`, with the ECE before, after (on the
    same images) and after with `folds`-fold cross-fitting (`crossfit_ece`). Tasks without a label are left at
    T = 1."""
    calibration = Calibration(split=split, bins=n_bins)
    for task, z in logits.items():
        y = torch.as_tensor(labels[task])
        n = int((y != MISSING).sum())
        calibration.images = calibration.images or n
        if n == 0:
            continue
        t = fit_temperature(z, y)
        calibration.temperature[task] = t
        calibration.ece_before[task] = ece(scaled_probs(z), y, n_bins)
        calibration.ece_after[task] = ece(scaled_probs(z, t), y, n_bins)
        calibration.ece_after_crossfit[task] = crossfit_ece(z, y, folds, n_bins=n_bins)[0]
        calibration.nll_before[task], calibration.nll_after[task] = nll(z, y), nll(z, y, t)
    return calibration
