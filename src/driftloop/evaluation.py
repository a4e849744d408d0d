"""Metrics and paired comparisons of two models on the same rows.

>>> import numpy as np
>>> y = np.array(["a", "b", "a", "b"])
>>> metrics(y, np.array(["a", "b", "b", "b"]), ["a", "b"])["accuracy"]
0.75
>>> round(mcnemar(np.array([1, 1, 1, 0], bool), np.array([0, 0, 0, 0], bool)), 3)
0.25
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import f1_score

__all__ = ["METRICS", "bootstrap_diff", "mcnemar", "metrics", "predict"]

METRICS = ("accuracy", "f1_macro")


def predict(model: Any, X: pd.DataFrame, classes: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels, confidence, probabilities aligned to ``classes``) for a fitted classifier."""
    raw = np.asarray(model.predict_proba(X), dtype="float64")
    model_classes = [str(c) for c in model.classes_]
    probs = np.zeros((len(X), len(classes)))
    for j, c in enumerate(model_classes):
        if c in classes:
            probs[:, classes.index(c)] = raw[:, j]
    best = probs.argmax(axis=1)
    return np.asarray(classes, dtype=object)[best], probs[np.arange(len(X)), best], probs


def metrics(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> dict[str, float]:
    y_true, y_pred = np.asarray(y_true).astype(str), np.asarray(y_pred).astype(str)
    if y_true.size == 0:
        return {"accuracy": float("nan"), "f1_macro": float("nan")}
    return {
        "accuracy": float(np.mean(y_true == y_pred)),
        "f1_macro": float(f1_score(y_true, y_pred, labels=classes, average="macro", zero_division=0)),
    }


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> float:
    """Exact McNemar p-value: do two models on the same rows differ in accuracy?"""
    b = int(np.sum(correct_a & ~correct_b))
    c = int(np.sum(~correct_a & correct_b))
    if b + c == 0:
        return 1.0
    return float(stats.binomtest(min(b, c), b + c, 0.5).pvalue)


def bootstrap_diff(
    y_true: np.ndarray,
    pred_a: np.ndarray,
    pred_b: np.ndarray,
    classes: list[str],
    metric: str,
    n_boot: int = 500,
    seed: int = 0,
) -> tuple[float, float]:
    """95 % bootstrap interval of ``metric(b) - metric(a)`` resampling the same rows."""
    rng = np.random.default_rng(seed)
    n = len(y_true)
    if n == 0:
        return float("nan"), float("nan")
    diffs = np.empty(n_boot)
    for i in range(n_boot):
        idx = rng.integers(0, n, n)
        diffs[i] = (
            metrics(y_true[idx], pred_b[idx], classes)[metric]
            - metrics(y_true[idx], pred_a[idx], classes)[metric]
        )
    lo, hi = np.quantile(diffs, [0.025, 0.975])
    return float(lo), float(hi)
