"""Seeded, stratified splits for collections that do not come with one."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from deepart.core.errors import ConfigError


def check_fractions(fractions: Sequence[float], key: str) -> list[float]:
    """Split fractions (train first) must be >= 0, sum to 1, and leave something for train."""
    values = [float(f) for f in fractions]
    if any(f < 0 for f in values) or abs(sum(values) - 1) > 1e-6 or values[0] <= 0:
        raise ConfigError(f"{key}={list(fractions)} is not allowed: expected fractions >= 0 that sum to 1, "
                          f"train first and > 0 (e.g. [0.8, 0.1, 0.1])")
    return values


def stratified_split(strata: Sequence, fractions: Sequence[float], seed: int) -> np.ndarray:
    """Split index (0 = train, 1 = val, ...) for each item, drawn per stratum in proportion to `fractions`.

    Each stratum (e.g. a class; missing labels form a stratum of their own) is shuffled with `seed`
    and cut by largest-remainder counts, so every class with enough images appears in every split; train
    keeps at least one image of each class. The result depends only on the strata and the seed.
    """
    strata = pd.Series(list(strata), dtype=object).astype(str).to_numpy()
    out = np.zeros(len(strata), dtype=np.int64)
    rng = np.random.default_rng(seed)
    for value in sorted(set(strata)):
        members = np.flatnonzero(strata == value)
        members = members[rng.permutation(len(members))]
        n = len(members)
        exact = np.asarray(fractions, dtype=np.float64) * n
        counts = np.floor(exact).astype(np.int64)
        # largest remainders get the leftover items (ties broken by the seed)
        order = np.lexsort((rng.random(len(counts)), -(exact - counts)))
        counts[order[: n - counts.sum()]] += 1
        if counts[0] == 0 and n:  # train keeps at least one image of every class
            counts[int(np.argmax(counts))] -= 1
            counts[0] += 1
        out[members] = np.repeat(np.arange(len(counts)), counts)
    return out
