"""Paired comparisons of two models on the same rows, whatever the task.

The task (:mod:`driftloop.tasks`) decides which test fits its labels and metrics; these are the
pieces it uses.

>>> import numpy as np
>>> round(mcnemar(np.array([1, 1, 1, 0], bool), np.array([0, 0, 0, 0], bool)), 3)
0.25
>>> y = np.array([1.0, 2.0, 3.0, 4.0])
>>> lo, hi = bootstrap_diff(y, y + 1, y, lambda t, p: -float(np.abs(t - p).mean()))
>>> lo == hi == 1.0
True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import stats

__all__ = ["bootstrap_diff", "mcnemar", "wilcoxon"]


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> float:
    """Exact McNemar p-value: do two models on the same rows differ in accuracy?"""
    b = int(np.sum(correct_a & ~correct_b))
    c = int(np.sum(~correct_a & correct_b))
    if b + c == 0:
        return 1.0
    return float(stats.binomtest(min(b, c), b + c, 0.5).pvalue)


def wilcoxon(loss_a: np.ndarray, loss_b: np.ndarray) -> float:
    """Wilcoxon signed-rank p-value: do two models' per-row losses on the same rows differ?"""
    if np.allclose(loss_a, loss_b):
        return 1.0
    return float(stats.wilcoxon(loss_a, loss_b).pvalue)


def bootstrap_diff(
    y_true: np.ndarray,
    pred_a: np.ndarray,
    pred_b: np.ndarray,
    metric: Callable[[Any, Any], float],
    n_boot: int = 500,
    seed: int = 0,
) -> tuple[float, float]:
    """95 % bootstrap interval of ``metric(y, b) - metric(y, a)``, resampling the same rows."""
    rng = np.random.default_rng(seed)
    n = len(y_true)
    if n == 0:
        return float("nan"), float("nan")
    diffs = np.empty(n_boot)
    for i in range(n_boot):
        idx = rng.integers(0, n, n)
        diffs[i] = metric(y_true[idx], pred_b[idx]) - metric(y_true[idx], pred_a[idx])
    lo, hi = np.quantile(diffs, [0.025, 0.975])
    return float(lo), float(hi)
