"""The synthetic reference/current data of issue 3, generated in chunks (memory flat in n).

20 numeric columns (7 normal, 7 lognormal, 6 uniform) and 5 categorical ones (5, 10, 20, 35 and
50 levels). Drift is injected in 7 columns: n00 and n07 (mean + 0.1 sd), n01 and n08 (sd x 1.2),
n14 (mean + 0.1 sd), c1 and c3 (5 points of probability moved onto the first level).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd

NUMERIC = [f"n{i:02d}" for i in range(20)]
CATEGORICAL = [f"c{i}" for i in range(5)]
LEVELS = [5, 10, 20, 35, 50]
DRIFTED = {"n00", "n07", "n01", "n08", "n14", "c1", "c3"}


def _probs(levels: int) -> np.ndarray:
    p = 1.0 / np.arange(1, levels + 1) ** 0.8
    return p / p.sum()


def frame(n: int, drift: bool, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    cols: dict[str, np.ndarray] = {}
    for i, name in enumerate(NUMERIC):
        shift = 0.1 if drift and name in ("n00", "n07", "n14") else 0.0
        scale = 1.2 if drift and name in ("n01", "n08") else 1.0
        if i < 7:
            cols[name] = rng.normal(shift, scale, n)
        elif i < 14:  # lognormal: the shift and scale act on the log
            cols[name] = np.exp(rng.normal(shift * 0.5, 0.5 * scale, n))
        else:  # uniform with sd 1
            cols[name] = rng.uniform(0, np.sqrt(12.0), n) + shift
    for name, levels in zip(CATEGORICAL, LEVELS, strict=True):
        p = _probs(levels)
        if drift and name in ("c1", "c3"):
            p = p * 0.95
            p[0] += 0.05
        codes = rng.choice(levels, n, p=p)
        cols[name] = np.asarray([f"v{k}" for k in range(levels)], dtype=object)[codes]
    return pd.DataFrame(cols)


def chunks(n: int, drift: bool, seed: int, size: int = 1_000_000) -> Iterator[pd.DataFrame]:
    for start in range(0, n, size):
        yield frame(min(size, n - start), drift, seed + start)
