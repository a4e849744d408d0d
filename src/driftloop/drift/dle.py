"""Label-free error estimation for regression: direct loss estimation (DLE).

Fitted on reference rows whose labels are known, DLE learns the model's *absolute error* from
the inputs and the prediction, and estimates a window's MAE as the mean of the errors it
expects there, before any label arrives: a window whose rows lie where the model erred more on
the reference is estimated to have a higher MAE. As NannyML's DLE does, it models the error
directly; here the model is an additive one that stays a small JSON document (so a reference
is data, never a pickle): each numeric column is cut at its reference quantiles, each
categorical column keeps its reference categories, and a ridge regression on those indicators
predicts the absolute error. Like CBPE, it sees covariate shift, not concept drift (the same
input erring more than before), which is what feedback is for.

>>> import numpy as np, pandas as pd
>>> rng = np.random.default_rng(0)
>>> x = rng.uniform(0, 10, 4000)
>>> y = x + rng.normal(0, 0.2 + x / 5, 4000)            # the error grows with x
>>> frame = pd.DataFrame({"x": x})
>>> dle = DLE().fit(frame, x, y)
>>> low, high = dle.estimate(frame[x < 3], x[x < 3]), dle.estimate(frame[x > 7], x[x > 7])
>>> bool(low < 0.8 < high)
True
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from driftloop.exceptions import NotFittedError

__all__ = ["DLE"]

_PREDICTION = "__prediction__"


class DLE:
    """Expected absolute error from inputs and prediction.

    Parameters
    ----------
    bins
        Quantile bins per numeric column (and for the prediction).
    alpha
        Ridge penalty of the indicator regression.
    """

    def __init__(self, bins: int = 8, alpha: float = 1.0) -> None:
        if bins < 2:
            raise ValueError(f"The 'bins' parameter of DLE must be at least 2. Got {bins!r} instead.")
        if alpha <= 0:
            raise ValueError(f"The 'alpha' parameter of DLE must be positive. Got {alpha!r} instead.")
        self.bins, self.alpha = bins, alpha
        self.edges_: dict[str, list[float]] | None = None
        self.categories_: dict[str, list[str]] | None = None
        self.coef_: list[float] | None = None
        self.intercept_: float | None = None
        self.spread_: float | None = None  # sd of a row's absolute error about its expected one

    def _design(self, frame: pd.DataFrame, prediction: np.ndarray) -> np.ndarray:
        assert self.edges_ is not None and self.categories_ is not None
        columns = []
        data = frame.assign(**{_PREDICTION: np.asarray(prediction, dtype="float64")})
        for name, edges in self.edges_.items():
            values = pd.to_numeric(data[name], errors="coerce").to_numpy("float64") if name in data else None
            cells = len(edges) + 2  # below, between the edges, above, missing
            index = (
                np.full(len(data), cells - 1)
                if values is None
                else np.where(np.isnan(values), cells - 1, np.searchsorted(edges, values, side="right"))
            )
            block = np.zeros((len(data), cells))
            block[np.arange(len(data)), index] = 1.0
            columns.append(block)
        for name, categories in self.categories_.items():
            values = data[name].astype(str).to_numpy() if name in data else np.full(len(data), "")
            block = np.stack([values == c for c in categories], axis=1).astype("float64")
            columns.append(block)
        return np.hstack(columns) if columns else np.zeros((len(data), 0))

    def fit(self, frame: pd.DataFrame, prediction: np.ndarray, actual: np.ndarray) -> DLE:
        """Learn the absolute error of ``prediction`` against ``actual`` from ``frame`` (the
        monitored columns) and the prediction itself."""
        prediction = np.asarray(prediction, dtype="float64")
        error = np.abs(np.asarray(actual, dtype="float64") - prediction)
        data = frame.assign(**{_PREDICTION: prediction})
        self.edges_, self.categories_ = {}, {}
        for name in data.columns:
            column = data[name]
            if pd.api.types.is_numeric_dtype(column):
                values = column.to_numpy("float64")
                finite = values[np.isfinite(values)]
                if finite.size:
                    qs = np.quantile(finite, np.linspace(0, 1, self.bins + 1)[1:-1])
                    self.edges_[str(name)] = sorted({float(q) for q in qs})
            else:
                top = column.astype(str).value_counts().index[:20]
                self.categories_[str(name)] = [str(c) for c in top]
        X = self._design(frame, prediction)
        mean = float(error.mean()) if error.size else 0.0
        if X.shape[1] and error.size:
            centred = X - X.mean(axis=0)
            gram = centred.T @ centred + self.alpha * np.eye(X.shape[1])
            coef = np.linalg.solve(gram, centred.T @ (error - mean))
            self.intercept_ = mean - float(X.mean(axis=0) @ coef)
            self.coef_ = coef.tolist()
        else:
            self.intercept_, self.coef_ = mean, []
        left = error - self.errors(frame, prediction) if error.size else error
        self.spread_ = float(left.std(ddof=1)) if left.size > 1 else 0.0
        return self

    def errors(self, frame: pd.DataFrame, prediction: np.ndarray) -> np.ndarray:
        """The expected absolute error of each row (never below 0)."""
        if self.coef_ is None or self.intercept_ is None:
            raise NotFittedError(
                "DLE.estimate needs a fitted model; call DLE.fit(frame, prediction, actual) first."
            )
        X = self._design(frame, prediction)
        return np.maximum(X @ np.asarray(self.coef_) + self.intercept_, 0.0) if len(X) else np.zeros(0)

    def estimate(self, frame: pd.DataFrame, prediction: np.ndarray) -> float:
        """The expected MAE of these rows."""
        errors = self.errors(frame, prediction)
        return float(errors.mean()) if errors.size else float("nan")

    def band(self, frame: pd.DataFrame, prediction: np.ndarray, z: float = 1.96) -> tuple[float, float]:
        """Where the realised MAE of these rows falls 95 % of the time if the error model holds:
        the estimate plus or minus ``z`` standard errors of a mean of ``n`` rows' absolute errors,
        each scattered about its expected value as on the reference (sampling error, as
        NannyML's bands; an error model that no longer holds is what the labels show).

        >>> import numpy as np, pandas as pd
        >>> rng = np.random.default_rng(0)
        >>> x = rng.uniform(0, 10, 4000); y = x + rng.normal(0, 1, 4000)
        >>> dle = DLE().fit(pd.DataFrame({"x": x}), x, y)
        >>> low, high = dle.band(pd.DataFrame({"x": x[:1000]}), x[:1000])
        >>> bool(low < 0.8 < high), round(high - low, 2)
        (True, 0.07)
        """
        errors = self.errors(frame, prediction)
        if not errors.size:
            return float("nan"), float("nan")
        half = z * float(self.spread_ or 0.0) / float(np.sqrt(errors.size))
        centre = float(errors.mean())
        return max(centre - half, 0.0), centre + half

    def to_dict(self) -> dict[str, Any]:
        if self.coef_ is None:
            raise NotFittedError("An unfitted DLE has nothing to serialise; call fit first.")
        return {
            "bins": self.bins,
            "alpha": self.alpha,
            "edges": self.edges_,
            "categories": self.categories_,
            "coef": self.coef_,
            "intercept": self.intercept_,
            "spread": self.spread_,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DLE:
        made = cls(bins=int(data["bins"]), alpha=float(data["alpha"]))
        made.edges_ = {k: list(v) for k, v in data["edges"].items()}
        made.categories_ = {k: list(v) for k, v in data["categories"].items()}
        made.coef_, made.intercept_ = list(data["coef"]), float(data["intercept"])
        made.spread_ = data.get("spread")  # None in references made before bands
        return made
