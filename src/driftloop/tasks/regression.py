"""Regression: a trainer returns ``predict``; a label is a number.

Metrics are MAE, RMSE, MAPE (over rows whose label is not 0; NaN when none is), R² and the
median and 90th percentile of the absolute error. The gate's paired test is the Wilcoxon
signed-rank test on the two models' absolute errors over the same rows, beside a bootstrap
interval of the metric's change.

>>> import numpy as np
>>> task = Regression()
>>> m = task.metrics(np.array([1.0, 2.0, 4.0]), np.array([1.0, 3.0, 2.0]))
>>> m["mae"], round(m["rmse"], 4), m["abs_error_p50"]
(1.0, 1.291, 1.0)
>>> task.label_error("twelve")
"'label' must be a finite number. Got 'twelve' instead."
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import stats

from driftloop.config import TASK_METRICS
from driftloop.evaluation import bootstrap_diff, wilcoxon
from driftloop.exceptions import SchemaError, TrainerError
from driftloop.tasks._base import Predictions

if TYPE_CHECKING:
    from collections.abc import Callable

    from driftloop.config import Settings
    from driftloop.profiles import ProfileSpec

__all__ = ["Regression"]

METRICS: tuple[str, ...] = TASK_METRICS["regression"]
RESIDUAL_SAMPLE = 500  # residuals of the reference's held-out rows kept for error drift


def _floats(values: Any) -> np.ndarray:
    series = pd.Series(np.asarray(values, dtype=object))
    return np.asarray(pd.to_numeric(series, errors="coerce"), dtype="float64")


class Regression:
    """A model of one number."""

    name = "regression"
    primary_metric = "mae"
    metric_names = METRICS
    lower_is_better = frozenset({"mae", "rmse", "mape", "abs_error_p50", "abs_error_p90"})
    slice_metric = "mae"
    paired_test = "Wilcoxon"
    classes: list[str] = []

    @classmethod
    def from_settings(cls, settings: Settings) -> Regression:
        return cls()

    def check_model(self, model: Any, entrypoint: str) -> None:
        if not hasattr(model, "predict"):
            raise TrainerError(
                f"The trainer {entrypoint!r} must return a fitted regressor with 'predict'. "
                f"Got a {type(model).__name__} without it."
            )

    def predict(self, model: Any, X: pd.DataFrame) -> Predictions:
        values = np.asarray(model.predict(X), dtype="float64").reshape(len(X))
        labels = np.array([repr(float(v)) for v in values], dtype=object)  # round-trips exactly
        return Predictions(labels, np.full(len(X), np.nan), None, values)

    def targets(self, values: pd.Series, what: str) -> pd.Series:
        y = pd.to_numeric(values, errors="coerce").astype("float64")
        bad = values[~np.isfinite(y.to_numpy())]
        if len(bad):
            raise SchemaError(
                f"Every label in the {what} must be a finite number. Got {bad.tolist()[:5]} instead."
            )
        return y

    def label_error(self, value: Any) -> str | None:
        if isinstance(value, bool):
            return f"'label' must be a finite number. Got {value!r} instead."
        try:
            number = float(value)
        except (TypeError, ValueError):
            return f"'label' must be a finite number. Got {value!r:.80} instead."
        return (
            None if math.isfinite(number) else f"'label' must be a finite number. Got {value!r:.80} instead."
        )

    def parse_label(self, value: Any) -> str:
        return repr(float(value))

    def metrics(self, y_true: Any, y_pred: Any, probabilities: Any = None) -> dict[str, float]:
        y, p = _floats(y_true), _floats(y_pred)
        if y.size == 0:
            return dict.fromkeys(METRICS, float("nan"))
        error = p - y
        absolute = np.abs(error)
        nonzero = y != 0
        spread = float(np.sum((y - y.mean()) ** 2))
        return {
            "mae": float(absolute.mean()),
            "rmse": float(np.sqrt(np.mean(error**2))),
            "mape": float(np.mean(absolute[nonzero] / np.abs(y[nonzero]))) if nonzero.any() else float("nan"),
            "r2": 1.0 - float(np.sum(error**2)) / spread if spread > 0 else float("nan"),
            "abs_error_p50": float(np.quantile(absolute, 0.5)),
            "abs_error_p90": float(np.quantile(absolute, 0.9)),
        }

    def subset_metrics(
        self, y_true: Any, y_pred: Any, probabilities: Any = None
    ) -> Callable[[np.ndarray], dict[str, float]]:
        y, made = _floats(y_true), _floats(y_pred)
        return lambda rows: self.metrics(y[rows], made[rows])

    def row_scores(self, y_true: Any, y_pred: Any) -> np.ndarray:
        return np.asarray(np.abs(_floats(y_pred) - _floats(y_true)), dtype="float64")

    def paired(
        self,
        y_true: Any,
        pred_a: Any,
        pred_b: Any,
        metric: str,
        probabilities_a: Any = None,
        probabilities_b: Any = None,
    ) -> tuple[float | None, tuple[float, float] | None]:
        y, a, b = _floats(y_true), _floats(pred_a), _floats(pred_b)
        if not len(y):
            return None, None
        ea, eb = np.abs(a - y), np.abs(b - y)
        p = wilcoxon(ea, eb)
        ci = bootstrap_diff(y, a, b, lambda t, q: self.metrics(t, q)[metric])
        return p, ci

    def corrected(self, y_true: Any, y_pred: Any) -> np.ndarray:
        """A label corrects a prediction when it is off by more than the median absolute error."""
        error = np.abs(_floats(y_pred) - _floats(y_true))
        return np.asarray(error > (np.median(error) if error.size else 0.0), dtype=bool)

    def strata(self, y_true: Any, y_pred: Any) -> np.ndarray:
        """The quartile of the absolute error: ``q1`` (smallest) to ``q4``."""
        error = np.abs(_floats(y_pred) - _floats(y_true))
        if not error.size:
            return np.array([], dtype=object)
        edges = np.quantile(error, [0.25, 0.5, 0.75])
        return np.array([f"q{int(np.searchsorted(edges, e, side='left')) + 1}" for e in error], dtype=object)

    def output_frame(self, labels: Any, confidence: Any, probabilities: Any = None) -> pd.DataFrame:
        return pd.DataFrame({"__prediction__": _floats(labels)})

    def output_spec(self, outputs: pd.DataFrame, bins: int) -> ProfileSpec:
        from driftloop.profiles import ProfileSpec

        edges = ProfileSpec.fit(outputs, ["__prediction__"], [], bins=bins).numeric["__prediction__"]
        return ProfileSpec(numeric={"__prediction__": edges}, categorical={}, sample_size=0)

    def fit_estimator(self, features: pd.DataFrame, outputs: pd.DataFrame, y_true: Any) -> dict[str, Any]:
        """DLE: a model of the reference's absolute error from the inputs and the prediction."""
        from driftloop.drift.dle import DLE

        prediction = outputs["__prediction__"].to_numpy("float64")
        actual = _floats(y_true)
        residuals = actual - prediction
        if residuals.size > RESIDUAL_SAMPLE:  # an evenly spaced quantile sample keeps the shape
            residuals = np.quantile(residuals, np.linspace(0, 1, RESIDUAL_SAMPLE))
        return {
            "dle": DLE().fit(features.reset_index(drop=True), prediction, actual).to_dict(),
            "residuals": [round(float(r), 6) for r in np.sort(residuals)],
        }

    def estimates(
        self, estimator: dict[str, Any], features: pd.DataFrame, outputs: pd.DataFrame
    ) -> dict[str, float | None]:
        from driftloop.drift.dle import DLE

        dle = DLE.from_dict(estimator["dle"])
        prediction = outputs["__prediction__"].to_numpy()
        frame = features.reset_index(drop=True)
        out: dict[str, float | None] = {"estimated_mae": dle.estimate(frame, prediction)}
        if dle.spread_ is not None:  # references made before bands have no spread
            out["estimated_mae_low"], out["estimated_mae_high"] = dle.band(frame, prediction)
        return out

    def label_drift(self, estimator: dict[str, Any], y_true: Any, y_pred: Any) -> dict[str, dict[str, Any]]:
        """``error_drift``: the KS distance between the window's residuals (label minus
        prediction) and the reference's, flagged when significant at 5 % and at least 0.1: the
        model errs differently (larger, or biased one way), whatever the inputs did."""
        reference = np.asarray(estimator.get("residuals", []), dtype="float64")
        residuals = _floats(y_true) - _floats(y_pred)
        residuals = residuals[np.isfinite(residuals)]
        if reference.size < 10 or residuals.size < 10:
            return {}
        test = stats.ks_2samp(residuals, reference)
        statistic, p = float(test.statistic), float(test.pvalue)
        flagged = p < 0.05 and statistic >= 0.1
        return {"error_drift": {"value": statistic, "p_value": p, "threshold": 0.1, "flagged": flagged}}
