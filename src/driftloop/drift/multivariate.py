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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from driftloop.exceptions import ConfigError

__all__ = ["DomainClassifierResult", "domain_classifier"]


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
    ref_idx, cur_idx = np.arange(n_ref), np.arange(n_ref, n_ref + n_cur)
    boots = []
    for _ in range(n_boot):
        idx = np.r_[rng.choice(ref_idx, n_ref), rng.choice(cur_idx, n_cur)]
        boots.append(roc_auc_score(y[idx], scores[idx]))
    low, high = np.quantile(boots, [0.025, 0.975])
    return DomainClassifierResult(auc, float(low), float(high), n_ref, n_cur, threshold)
