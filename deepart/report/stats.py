"""Small statistics for comparing runs (numpy, scipy.stats): a t-interval of a mean over seeds, a Wilson
interval of a proportion, a two-level paired bootstrap of a difference in accuracy on the same images, and
McNemar's exact test on paired per-image correctness."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

#: Bootstrap replicates drawn at once are capped so that a block holds at most this many image draws.
_BLOCK_DRAWS = 2_000_000


def t_critical(df: int, confidence: float = 0.95) -> float:
    """The two-sided critical value of Student's t: P(|T| <= t) = confidence (df=2: 4.303 at 95 %)."""
    if df < 1:
        raise ValueError(f"t_critical needs df >= 1, got {df}")
    return float(stats.t.ppf(0.5 + confidence / 2, df))


def t_interval(values, confidence: float = 0.95) -> tuple[float, float]:
    """Interval of the mean of `values` (e.g. one metric over seeds): mean ± t * std / sqrt(n), std with
    ddof=1. NaN values are dropped; fewer than two values give (nan, nan)."""
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    if len(x) < 2:
        return math.nan, math.nan
    half = t_critical(len(x) - 1, confidence) * x.std(ddof=1) / math.sqrt(len(x))
    return float(x.mean() - half), float(x.mean() + half)


def wilson_interval(successes: float, n: float, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion successes / n (50 of 100: 0.404 to 0.596 at 95 %).
    `n` may be an effective sample size (not an integer); n <= 0 gives (nan, nan)."""
    if n <= 0:
        return math.nan, math.nan
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    p = successes / n
    scale = 1 + z * z / n
    center = (p + z * z / (2 * n)) / scale
    half = z / scale * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return center - half, center + half


@dataclass(frozen=True)
class BootstrapResult:
    """A bootstrapped difference (fractions, not points): observed value, interval and two-sided p-value."""

    diff: float
    low: float
    high: float
    p_value: float

    @property
    def significant(self) -> bool:
        """True when the interval excludes 0."""
        return self.low > 0 or self.high < 0


def _as_runs(correct) -> np.ndarray:
    """Per-image correctness as (runs, tasks, images) booleans; a 2-D (runs, images) array is one task."""
    a = np.asarray(correct, dtype=bool)
    if a.ndim not in (2, 3):
        raise ValueError(f"correctness must be (runs, images) or (runs, tasks, images), got shape {a.shape}")
    return a[:, None, :] if a.ndim == 2 else a


def _accuracy(correct: np.ndarray, labelled: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Accuracy of every run under image weights (replicates, images): the mean over tasks of the weighted
    share of correct labelled images; shape (runs, replicates)."""
    runs, tasks, n = correct.shape
    hits = (correct & labelled).reshape(runs * tasks, n).astype(float) @ weights.T
    counts = labelled.astype(float) @ weights.T
    return (hits.reshape(runs, tasks, -1) / np.maximum(counts, 1)).mean(axis=1)


def _mean_over_resampled_runs(acc: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mean over runs drawn with replacement (one draw per replicate) of acc (runs, replicates); a single run
    is used as it is."""
    runs, replicates = acc.shape
    if runs < 2:
        return acc[0]
    picks = rng.integers(0, runs, size=(runs, replicates))
    return np.take_along_axis(acc, picks, axis=0).mean(axis=0)


def paired_bootstrap(correct, baseline, labelled=None, *, n_boot: int = 2000, confidence: float = 0.95,
                     seed: int = 0) -> BootstrapResult:
    """Two-level paired bootstrap of the difference in accuracy, `correct` minus `baseline`, on the same images.

    correct, baseline: per-image correctness of each run (seed) of the two configs, (runs, images) or
    (runs, tasks, images) with the same images in the same order; labelled: (tasks, images) mask of the images
    that count for each task (default: all). A run's accuracy is the mean over tasks of its top-1 on the task's
    labelled images. Each replicate resamples the images with replacement (the same draw for every run) and,
    for a config with two or more runs, its runs; the statistic is the mean over the drawn runs of their accuracy
    on the drawn images. Returns the observed difference, the percentile interval and the two-sided p-value
    (twice the smaller share of replicates on either side of 0, with a +1 correction, at most 1).
    """
    a, b = _as_runs(correct), _as_runs(baseline)
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"paired_bootstrap needs the same tasks and images: {a.shape[1:]} vs {b.shape[1:]}")
    shape = a.shape[1:]
    mask = np.ones(shape, dtype=bool) if labelled is None else np.asarray(labelled, dtype=bool).reshape(shape)
    n = a.shape[-1]
    ones = np.ones((1, n))
    observed = float(_accuracy(a, mask, ones).mean() - _accuracy(b, mask, ones).mean())
    rng = np.random.default_rng(seed)
    block = max(1, _BLOCK_DRAWS // max(n, 1))
    diffs = []
    for start in range(0, n_boot, block):
        size = min(block, n_boot - start)
        draws = rng.integers(0, n, size=(size, n)) + n * np.arange(size)[:, None]
        weights = np.bincount(draws.ravel(), minlength=size * n).reshape(size, n).astype(float)
        diffs.append(_mean_over_resampled_runs(_accuracy(a, mask, weights), rng)
                     - _mean_over_resampled_runs(_accuracy(b, mask, weights), rng))
    d = np.concatenate(diffs)
    tail = (1 - confidence) / 2
    low, high = np.quantile(d, [tail, 1 - tail])
    p = 2 * min(int((d <= 0).sum()) + 1, int((d >= 0).sum()) + 1) / (n_boot + 1)
    return BootstrapResult(observed, float(low), float(high), min(1.0, p))


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided p-value of McNemar's exact test from the discordant counts: b pairs where only the first is
    right, c where only the second is; the binomial test of b of b + c at 1/2. b=10, c=2: 0.0386."""
    n = b + c
    return 1.0 if n == 0 else float(stats.binomtest(b, n, 0.5).pvalue)
