"""How a retrain's training set is assembled from feedback and earlier data, and why.

Throwing all feedback into the next run is rarely best. :func:`training_set` applies, in order:

1. **corrected vs confirmed**: rows whose label corrected the served prediction and rows that
   confirmed it are balanced to ``corrected_share`` (the larger group is subsampled);
2. **replay**: a ``replay_fraction`` share drawn from the previous training data, against
   catastrophic forgetting, and at least what the production rows leave short of
   ``min_train_rows`` (a model needs enough rows, however few labels came in);
3. **caps**: no class above ``max_per_class`` rows;
4. **weights**: recency (a half-life on the prediction's age) and error-targeted oversampling
   (rows of a class weighted by ``1 + error_oversampling * its current error rate``), passed to
   the trainer as ``sample_weight`` when it takes one, else realised by resampling.

Every step is seeded and explained in the returned manifest section.

>>> import pandas as pd
>>> from driftloop.config import RetrainSettings
>>> prod = pd.DataFrame({"y": ["a", "a", "b", "b"], "__prediction__": ["a", "b", "b", "b"],
...                      "__ts__": [0.0, 0.0, 0.0, 0.0], "__key__": ["p1", "p2", "p3", "p4"]})
>>> rows, why = training_set(prod, prod.iloc[:0], RetrainSettings(replay_fraction=0), "y", now=0.0)
>>> len(rows), why["feedback"]["corrected"], why["feedback"]["confirmed"]
(4, 1, 3)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from driftloop.config import RetrainSettings
from driftloop.tasks import Classification, Task

__all__ = ["WEIGHT", "resample_by_weight", "training_set"]

WEIGHT = "__weight__"
_INTERNAL = ("__prediction__", "__ts__")


def resample_by_weight(df: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Rows drawn with probability proportional to ``__weight__``, as many as there are rows
    (systematic resampling: each row appears about ``n * w / sum(w)`` times, deterministically)."""
    weights = df[WEIGHT].to_numpy("float64")
    if len(df) == 0 or np.allclose(weights, weights[0]):
        return df
    cumulative = np.cumsum(weights / weights.sum())
    offset = np.random.default_rng(seed).random()
    picks = np.searchsorted(cumulative, (np.arange(len(df)) + offset) / len(df))
    return df.iloc[np.minimum(picks, len(df) - 1)].reset_index(drop=True)


def _take(df: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    return df if n >= len(df) else df.sample(n=max(n, 0), random_state=seed)


def training_set(
    production: pd.DataFrame,
    previous: pd.DataFrame,
    rt: RetrainSettings,
    target: str,
    *,
    now: float,
    task: Task | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """(training rows, the manifest's ``sampling`` section). ``production`` carries the served
    prediction (``__prediction__``) and its time (``__ts__``) beside the inputs and label.

    The ``task`` says which labels corrected their prediction and what a stratum is (the true
    class, or an error quantile); without one, labels are classes."""
    seed = rt.seed
    why: dict[str, Any] = {"seed": seed, "lookback": rt.lookback, "holdout_fraction": rt.holdout_fraction}
    prod = production
    task = task or Classification(sorted({str(v) for v in production[target]}) if len(production) else [])
    corrected = (
        pd.Series(task.corrected(prod[target], prod["__prediction__"]), index=prod.index)
        if len(prod)
        else pd.Series(dtype=bool)
    )
    strata = (
        pd.Series(task.strata(prod[target], prod["__prediction__"]), index=prod.index)
        if len(prod)
        else pd.Series(dtype=object)
    )
    feedback: dict[str, Any] = {"corrected": int(corrected.sum()), "confirmed": int((~corrected).sum())}
    if rt.corrected_share is not None and feedback["corrected"] and feedback["confirmed"]:
        s = rt.corrected_share
        fix, ok = prod[corrected], prod[~corrected]
        if len(fix) / len(prod) > s:
            fix = _take(fix, round(len(ok) * s / (1 - s)) if s < 1 else len(fix), seed)
        else:
            ok = _take(ok, round(len(fix) * (1 - s) / s) if s > 0 else 0, seed)
        prod = pd.concat([fix, ok]).sort_index()
        feedback.update(corrected_share=s, corrected_kept=len(fix), confirmed_kept=len(ok))
    why["feedback"] = feedback
    # error rates per stratum (true class), on all production rows of the lookback (before balancing)
    by_field = getattr(task, "stratum_errors", None)  # an extractor: 1 - F1 of the worst field a fix touched
    if by_field is not None and len(production):
        errors = by_field(production[target], production["__prediction__"])
        why["error_rate_by_class_is"] = (
            "1 - F1 of the field (stratum field:<name>: the worst field a correction touched)"
        )
    else:
        errors = corrected.groupby(strata).mean().round(4).to_dict() if len(production) else {}
    why["error_rate_by_class"] = errors

    share = rt.replay_fraction
    by_share = len(previous) if not len(prod) or share >= 1 else round(share / (1 - share) * len(prod))
    short = max(rt.min_train_rows - len(prod), 0)  # what the model needs beyond the labelled rows
    replay_n = min(len(previous), max(by_share, short))
    replay = _take(previous, replay_n, seed)
    why["replay"] = {
        "replay_fraction": share,
        "rows": len(replay),
        "available": len(previous),
        "min_train_rows": rt.min_train_rows,
        "filled_to_minimum": bool(short and replay_n == short),
    }

    training = pd.concat(
        [
            prod.assign(__source__="feedback", __stratum__=strata.loc[prod.index].to_numpy()),
            replay.assign(
                __source__="replay",
                __stratum__=task.strata(replay[target], replay[target])
                if task.name == "classification"
                else "replay",
            ),
        ],
        ignore_index=True,
    )
    if rt.max_per_class is not None:
        capped = [
            _take(group, rt.max_per_class, seed + i)
            for i, (_, group) in enumerate(training.groupby(training["__stratum__"].astype(str), sort=True))
        ]
        training = pd.concat(capped).sort_index() if capped else training
        why["max_per_class"] = rt.max_per_class

    weights = np.ones(len(training))
    if rt.recency_half_life is not None and len(prod):
        ts = training["__ts__"].to_numpy("float64", na_value=np.nan)
        oldest = float(np.nanmin(ts)) if np.isfinite(ts).any() else now
        age = now - np.where(np.isfinite(ts), ts, oldest)  # replayed rows count as the oldest
        weights *= 0.5 ** (np.maximum(age, 0.0) / rt.recency_half_life)
        why["recency_half_life_seconds"] = rt.recency_half_life
    if rt.error_oversampling > 0 and errors:
        per_row = training["__stratum__"].astype(str).map(errors).fillna(0.0).to_numpy("float64")
        weights *= 1.0 + rt.error_oversampling * per_row
        why["error_oversampling"] = rt.error_oversampling
    if not np.allclose(weights, 1.0):
        training[WEIGHT] = weights / weights.mean()
        why["weights"] = {
            "min": round(float(training[WEIGHT].min()), 4),
            "max": round(float(training[WEIGHT].max()), 4),
            "by_class": training.groupby(training["__stratum__"].astype(str))[WEIGHT]
            .sum()
            .round(2)
            .to_dict(),
        }
    why["rows_by_source"] = training["__source__"].value_counts().sort_index().to_dict()
    why["rows_by_class"] = training["__stratum__"].astype(str).value_counts().sort_index().to_dict()
    return training.drop(columns=[c for c in (*_INTERNAL, "__source__", "__stratum__") if c in training]), why
