"""Multivariate drift: can a classifier tell the reference sample from the current one?

Trained with cross-validation on the profiles' row samples, the domain classifier's AUC is 0.5
when the two samples come from one distribution and grows with any difference, including ones
no single column shows (a changed correlation). The verdict needs the lower end of a bootstrap
confidence interval above ``0.5 + min_effect``, so a small sample does not flag on noise.

>>> import numpy as np, pandas as pd
>>> rng = np.random.default_rng(0)
>>> a = pd.DataFrame({"x": rng.normal(size=800), "y": rng.normal(size=800)})
>>> same = pd.DataFrame({"x": rng.normal(size=800), "y": rng.normal(size=800)})
>>> z = rng.normal(size=800)
>>> correlated = pd.DataFrame({"x": z, "y": z + rng.normal(scale=0.3, size=800)})  # a new correlation
>>> domain_classifier(a, same).drifted, domain_classifier(a, correlated).drifted
(False, True)

For small samples, where a classifier has too little to learn from, the kernel two-sample test
(maximum mean discrepancy with a Gaussian kernel, p-value by permutation) is the sharper tool:

>>> small = correlated.iloc[:60]
>>> mmd(a, same.iloc[:60]).drifted, mmd(a, small).drifted
(False, True)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from driftloop.exceptions import ConfigError

__all__ = ["DomainClassifierResult", "MMDResult", "domain_classifier", "mmd"]


@dataclass(frozen=True)
class DomainClassifierResult:
    auc: float
    low: float
    high: float
    n_reference: int
    n_current: int
    threshold: float

    @property
    def drifted(self) -> bool:
        return self.low > self.threshold


def domain_classifier(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    min_effect: float = 0.05,
    folds: int = 3,
    n_boot: int = 200,
    seed: int = 0,
) -> DomainClassifierResult:
    """AUC (out-of-fold) of telling ``current`` rows from ``reference`` rows, with a 95 % bootstrap CI."""
    if not 0 <= min_effect < 0.5:
        raise ConfigError(
            "The 'min_effect' parameter of domain_classifier must be in [0, 0.5). "
            f"Got {min_effect!r} instead."
        )
    threshold = 0.5 + min_effect
    n_ref, n_cur = len(reference), len(current)
    if min(n_ref, n_cur) < 2 * folds:
        return DomainClassifierResult(float("nan"), float("nan"), float("nan"), n_ref, n_cur, threshold)
    both = pd.concat([reference, current], ignore_index=True)
    X = pd.DataFrame(index=both.index)
    categorical = []
    for column in both.columns:
        if both[column].dtype.kind in "fiub":
            X[column] = both[column].astype("float64")
        else:
            X[column] = pd.Categorical(both[column].astype("string").fillna("∅")).codes
            categorical.append(column)
    y = np.r_[np.zeros(n_ref), np.ones(n_cur)]
    scores = np.zeros(len(y))
    model = HistGradientBoostingClassifier(
        max_iter=60,
        learning_rate=0.1,
        max_leaf_nodes=15,
        categorical_features=categorical or None,
        random_state=seed,
    )
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(X, y):
        scores[test] = model.fit(X.iloc[train], y[train]).predict_proba(X.iloc[test])[:, 1]
    auc = float(roc_auc_score(y, scores))
    rng = np.random.default_rng(seed)
    w_ref, w_cur = np.empty((n_boot, n_ref)), np.empty((n_boot, n_cur))  # times each row is drawn
    for b in range(n_boot):
        w_ref[b] = np.bincount(rng.choice(n_ref, n_ref), minlength=n_ref)
        w_cur[b] = np.bincount(rng.choice(n_cur, n_cur), minlength=n_cur)
    boots = _resampled_auc(scores[:n_ref], scores[n_ref:], w_ref, w_cur)
    low, high = np.quantile(boots, [0.025, 0.975])
    return DomainClassifierResult(auc, float(low), float(high), n_ref, n_cur, threshold)


def _resampled_auc(
    negative: np.ndarray, positive: np.ndarray, w_neg: np.ndarray, w_pos: np.ndarray
) -> np.ndarray:
    """The AUC of each bootstrap resample at once, from how many times it drew each row
    (``w_neg``, ``w_pos``: one row per resample): Mann-Whitney's count of positive-negative pairs
    in order, ties counting half, as ``roc_auc_score`` gives on the resampled rows.

    >>> neg, pos = np.array([0.1, 0.4, 0.35]), np.array([0.8, 0.4])
    >>> float(_resampled_auc(neg, pos, np.ones((1, 3)), np.ones((1, 2)))[0])  # (3 + 2.5) / 6 pairs
    0.9166666666666666
    """
    order = np.argsort(negative, kind="stable")
    sorted_neg = negative[order]
    below = np.searchsorted(sorted_neg, positive, side="left")
    upto = np.searchsorted(sorted_neg, positive, side="right")
    cum = np.concatenate([np.zeros((len(w_neg), 1)), np.cumsum(w_neg[:, order], axis=1)], axis=1)
    pairs = cum[:, below] + 0.5 * (cum[:, upto] - cum[:, below])  # negatives below each positive
    return np.asarray((w_pos * pairs).sum(axis=1) / (w_pos.sum(axis=1) * w_neg.sum(axis=1)))


@dataclass(frozen=True)
class MMDResult:
    mmd2: float
    p_value: float
    n_reference: int
    n_current: int
    alpha: float

    @property
    def drifted(self) -> bool:
        return self.p_value < self.alpha


def _encode(reference: pd.DataFrame, current: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Numeric columns standardised on the reference (missing -> its mean); categories one-hot."""
    parts_ref, parts_cur = [], []
    for column in reference.columns:
        ref, cur = reference[column], current[column]
        if ref.dtype.kind in "fiub" and cur.dtype.kind in "fiub":
            r = ref.to_numpy("float64", na_value=np.nan)
            c = cur.to_numpy("float64", na_value=np.nan)
            mean = np.nanmean(r) if np.isfinite(r).any() else 0.0
            sd = np.nanstd(r) if np.isfinite(r).any() else 1.0
            sd = sd if sd > 0 else 1.0
            parts_ref.append(np.nan_to_num((r - mean) / sd, nan=0.0)[:, None])
            parts_cur.append(np.nan_to_num((c - mean) / sd, nan=0.0)[:, None])
        else:
            levels = pd.Index(pd.concat([ref, cur]).astype("string").fillna("∅").unique())
            r_codes = levels.get_indexer(ref.astype("string").fillna("∅"))
            c_codes = levels.get_indexer(cur.astype("string").fillna("∅"))
            eye = np.eye(len(levels)) / np.sqrt(2.0)  # two one-hot rows differ by distance 1, as 1 sd does
            parts_ref.append(eye[r_codes])
            parts_cur.append(eye[c_codes])
    return np.hstack(parts_ref), np.hstack(parts_cur)


def mmd(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    alpha: float = 0.05,
    n_permutations: int = 200,
    max_rows: int = 500,
    seed: int = 0,
) -> MMDResult:
    """Kernel two-sample test: squared MMD (Gaussian kernel, median-distance bandwidth) and its
    permutation p-value. Each side is subsampled to ``max_rows`` rows, so the cost is bounded."""
    if not 0 < alpha < 1:
        raise ConfigError(f"The 'alpha' parameter of mmd must be in (0, 1). Got {alpha!r} instead.")
    if n_permutations < 20:
        raise ConfigError(
            f"The 'n_permutations' parameter of mmd must be at least 20. Got {n_permutations!r} instead."
        )
    if max_rows < 2:
        raise ConfigError(f"The 'max_rows' parameter of mmd must be at least 2. Got {max_rows!r} instead.")
    rng = np.random.default_rng(seed)
    if len(reference) > max_rows:
        reference = reference.iloc[np.sort(rng.choice(len(reference), max_rows, replace=False))]
    if len(current) > max_rows:
        current = current.iloc[np.sort(rng.choice(len(current), max_rows, replace=False))]
    n, m = len(reference), len(current)
    if min(n, m) < 5:
        return MMDResult(float("nan"), float("nan"), n, m, alpha)
    x, y = _encode(reference, current)
    z = np.vstack([x, y])
    sq = np.sum(z * z, axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (z @ z.T), 0.0)
    upper = d2[np.triu_indices_from(d2, k=1)]
    bandwidth = float(np.median(upper[upper > 0])) if (upper > 0).any() else 1.0
    kernel = np.exp(-d2 / bandwidth)
    # MMD² of a labelling w (+1/n for reference rows, -1/m for current rows) is wᵀKw
    signs = np.empty((n_permutations + 1, n + m))
    base = np.r_[np.full(n, 1.0 / n), np.full(m, -1.0 / m)]
    signs[0] = base
    for i in range(1, n_permutations + 1):
        signs[i] = rng.permutation(base)
    stats_ = np.einsum("ij,ij->i", signs @ kernel, signs)
    observed = float(stats_[0])
    p_value = float((1 + np.sum(stats_[1:] >= observed)) / (n_permutations + 1))
    return MMDResult(observed, p_value, n, m, alpha)
