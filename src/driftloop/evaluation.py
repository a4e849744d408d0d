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

Choosing the best of several candidates on the same rows flatters it; :func:`max_t` gives the
one-sided p-value of its improvement corrected for that choice:

>>> rng = np.random.default_rng(0)
>>> noise = rng.choice([-1.0, 0.0, 0.0, 1.0], size=(200, 5))  # five candidates no better than the champion
>>> best = int(noise.mean(axis=0).argmax())
>>> round(max_t(noise, best), 2) > round(max_t(noise[:, [best]], 0), 2)  # corrected: less sure
True

and :func:`selection_bias` how much the choice flatters its score, so the gate's estimate of the
winner is not the luckiest candidate's draw.
"""

from __future__ import annotations

from collections.abc import Callable, Container
from typing import Any

import numpy as np
from scipy import stats

__all__ = ["bootstrap_bounds", "bootstrap_diff", "max_t", "mcnemar", "selection_bias", "wilcoxon"]


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> float:
    """Exact McNemar p-value: do two models on the same rows differ in accuracy?"""
    b = int(np.sum(correct_a & ~correct_b))
    c = int(np.sum(~correct_a & correct_b))
    if b + c == 0:
        return 1.0
    return float(stats.binomtest(min(b, c), b + c, 0.5).pvalue)


def wilcoxon(loss_a: np.ndarray, loss_b: np.ndarray) -> float:
    """Wilcoxon signed-rank p-value: do two models' per-row losses on the same rows differ?

    Rows with equal losses carry no sign and are dropped first (Wilcoxon's own rule, SciPy's
    default), so a few differing rows among many ties get the exact test, not the normal
    approximation (on which SciPy before 1.13 warns when under ten differ).

    >>> round(wilcoxon(np.array([0.0, 0.0, 1.0, 1.0, 1.0]), np.zeros(5)), 3)
    0.25
    """
    if np.allclose(loss_a, loss_b):
        return 1.0
    differences = np.asarray(loss_a, dtype=float) - np.asarray(loss_b, dtype=float)
    return float(stats.wilcoxon(differences[differences != 0]).pvalue)


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


def bootstrap_bounds(
    n: int,
    score: Callable[[np.ndarray], dict[str, float]],
    level: float,
    *,
    errors: Container[str] = (),
    n_boot: int = 500,
    seed: int = 0,
) -> dict[str, float]:
    """One-sided percentile-bootstrap bounds of the scores of ``n`` rows: for each name
    ``score`` returns, the value it is above with confidence ``level`` (below, for a name in
    ``errors``, where lower is better). ``score`` takes the row numbers of a resample, so every
    metric a task computes from the same rows is bounded by the same resamples.

    >>> right = np.r_[np.ones(90), np.zeros(10)]  # 90 of 100 rows right
    >>> bounds = bootstrap_bounds(100, lambda rows: {"accuracy": float(right[rows].mean()),
    ...                                              "error": 1 - float(right[rows].mean())},
    ...                           0.95, errors={"error"})
    >>> 0.83 < bounds["accuracy"] < 0.88 and 0.12 < bounds["error"] < 0.17
    True
    """
    if n == 0:
        return {}
    rng = np.random.default_rng(seed)
    draws = [score(rng.integers(0, n, n)) for _ in range(n_boot)]
    out: dict[str, float] = {}
    for name in draws[0]:
        values = np.array([d.get(name, np.nan) for d in draws], dtype="float64")
        if np.isfinite(values).any():
            out[name] = float(np.nanquantile(values, level if name in errors else 1 - level))
    return out


def max_t(gains: np.ndarray, chosen: int, n_perm: int = 4999, seed: int = 0) -> float:
    """One-sided p-value that candidate ``chosen`` does better than the champion, corrected for
    having chosen it among all candidates (Westfall and Young's max-T by sign flips).

    ``gains`` holds one row per evaluation row and one column per candidate: the candidate's
    per-row score minus the champion's, oriented so that positive is better. Under the null
    hypothesis that no candidate differs from the champion, each row's gains are as likely
    negated; flipping every candidate's gain on a row together keeps how alike the candidates
    are, so the correction is exact for correlated candidates, where Bonferroni's is far too
    strict. Each candidate's statistic is its summed gain over ``sqrt(sum of squared gains)``,
    which sign flips leave unchanged: a candidate that disagrees with the champion on many rows
    (an earlier champion) then does not swamp one that differs on a few. The p-value is the share
    of flips whose largest statistic reaches the chosen one's (the observed arrangement included).

    >>> gains = np.zeros((50, 2))
    >>> gains[:12, 0] = 1.0  # candidate 0 right on 12 rows the champion got wrong
    >>> max_t(gains, 0) < 0.001, max_t(gains, 1) == 1.0
    (True, True)
    """
    gains = np.asarray(gains, dtype="float64").reshape(len(gains), -1)
    scale = np.sqrt((gains**2).sum(axis=0))
    if not len(gains) or scale[chosen] == 0 or gains[:, chosen].sum() <= 0:
        return 1.0
    standard = gains[:, scale > 0] / scale[scale > 0]  # candidates equal to the champion on every row: none
    observed = float(gains[:, chosen].sum() / scale[chosen])
    rng = np.random.default_rng(seed)
    n = len(gains)
    exceed, done, chunk = 0, 0, max(1, 2_000_000 // n)
    while done < n_perm:
        b = min(chunk, n_perm - done)
        signs = rng.integers(0, 2, size=(b, n), dtype=np.int8) * 2 - 1
        exceed += int(np.count_nonzero((signs @ standard).max(axis=1) >= observed - 1e-9))
        done += b
    return (1 + exceed) / (1 + n_perm)


def selection_bias(
    scores: np.ndarray, n_boot: int = 1000, seed: int = 0, report: np.ndarray | None = None
) -> float:
    """How much choosing the best of several candidates by their mean score on the same rows
    flatters the one chosen (the winner's curse), in the score's units.

    ``scores`` holds one row per evaluation row and one column per candidate, higher is better
    (1/0 for right/wrong, a negated error, a quality score). The bootstrap plays the choice
    again: resample the rows, choose the best candidate on the resample, and take how far its
    score there exceeds its score on all rows; the mean over resamples estimates the optimism of
    the real choice (Tibshirani and Tibshirani, 2009, with the bootstrap for the folds). Zero for
    one candidate, near zero when one is clearly best, largest for equally good candidates that
    disagree row by row. Rows with a missing score are left out.

    ``report`` (a mask of the rows) measures the flattery on those rows only, when every row
    chooses but the estimate is read on some: each resample chooses on all its rows and takes
    how far the chosen candidate's mean over its resampled ``report`` rows exceeds that over all
    ``report`` rows.

    >>> rng = np.random.default_rng(0)
    >>> alike = (rng.random((200, 5)) < 0.8).astype(float)  # five equally good, independent candidates
    >>> 0.02 < selection_bias(alike) < 0.04
    True
    >>> clear = alike.copy()
    >>> clear[:, 2] = 1.0  # one right on every row
    >>> selection_bias(clear), selection_bias(alike[:, :1])
    (0.0, 0.0)
    >>> 0.0 <= selection_bias(alike, report=np.arange(200) < 100) < 0.06
    True
    """
    scores = np.asarray(scores, dtype="float64").reshape(len(scores), -1)
    finite = np.isfinite(scores).all(axis=1)
    shown = np.ones(len(scores), dtype=bool) if report is None else np.asarray(report, dtype=bool)
    scores, shown = scores[finite], shown[finite]
    n, k = scores.shape
    if k < 2 or n == 0 or not shown.any():
        return 0.0
    full = scores[shown].mean(axis=0)
    rng = np.random.default_rng(seed)
    total, done, chunk = 0.0, 0, max(1, 2_000_000 // n)
    while done < n_boot:
        b = min(chunk, n_boot - done)
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=b)  # each resample's row counts
        chosen = (counts @ scores).argmax(axis=1)  # the first of equals, as the gate ranks them
        seen = counts[:, shown].sum(axis=1)  # a resample may draw no reported row: it adds 0
        means = counts[:, shown] @ scores[shown] / np.maximum(seen, 1)[:, None]
        total += float(np.where(seen > 0, means[np.arange(b), chosen] - full[chosen], 0.0).sum())
        done += b
    return max(0.0, round(total / n_boot, 6))
