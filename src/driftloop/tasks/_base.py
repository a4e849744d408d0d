"""The task protocol and the columnar predictions every task returns (see :mod:`driftloop.tasks`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from collections.abc import Callable

    from driftloop.profiles import ProfileSpec

__all__ = ["ROW", "Predictions", "Task", "predictions_frame", "read_predictions"]

ROW = "__row__"  # which row of a frame of inputs a stored prediction belongs to


class Predictions(NamedTuple):
    """A model's outputs for a frame, column by column.

    ``labels`` is what is returned, logged (as text) and compared with labels; ``confidence``
    the per-row confidence (NaN where the task has none); ``probabilities`` the class
    probabilities aligned with the task's classes (classification only); ``values`` the numeric
    predictions (regression only).
    """

    labels: np.ndarray
    confidence: np.ndarray
    probabilities: np.ndarray | None = None
    values: np.ndarray | None = None


def predictions_frame(rows: np.ndarray, made: Predictions) -> pd.DataFrame:
    """``made`` for evaluation rows ``rows`` as a flat frame (no pickles: labels are text)."""
    frame = pd.DataFrame({ROW: rows, "label": made.labels, "confidence": made.confidence})
    if made.values is not None:
        frame["value"] = made.values
    if made.probabilities is not None:
        for j in range(made.probabilities.shape[1]):
            frame[f"p{j}"] = made.probabilities[:, j]
    return frame


def read_predictions(frame: pd.DataFrame) -> Predictions:
    """The inverse of :func:`predictions_frame`."""
    columns = sorted((c for c in frame if c.startswith("p") and c[1:].isdigit()), key=lambda c: int(c[1:]))
    return Predictions(
        frame["label"].to_numpy(object),
        frame["confidence"].to_numpy("float64"),
        frame[columns].to_numpy("float64") if columns else None,
        frame["value"].to_numpy("float64") if "value" in frame else None,
    )


class Task(Protocol):
    """What a kind of model decides (see the module docstring for the table)."""

    name: str
    primary_metric: str
    metric_names: tuple[str, ...]
    lower_is_better: frozenset[str]
    slice_metric: str
    paired_test: str
    classes: list[str]

    def check_model(self, model: Any, entrypoint: str) -> None:
        """Raise :class:`~driftloop.TrainerError` if the trainer's result cannot serve."""

    def predict(self, model: Any, X: pd.DataFrame) -> Predictions: ...

    def targets(self, values: pd.Series, what: str) -> pd.Series:
        """Training labels in the task's type (text classes; floats), or :class:`SchemaError`."""

    def label_error(self, value: Any) -> str | None:
        """Why ``value`` is not a valid label (a sentence), or ``None``."""

    def parse_label(self, value: Any) -> str:
        """A valid label as stored (text)."""

    def metrics(self, y_true: Any, y_pred: Any, probabilities: Any = None) -> dict[str, float]:
        """Every metric the rows allow; ``probabilities`` (a matrix, or logged ``{class: p}``
        rows) adds those that rank (ROC AUC, top-k accuracy)."""

    def subset_metrics(
        self, y_true: Any, y_pred: Any, probabilities: Any = None
    ) -> Callable[[np.ndarray], dict[str, float]]:
        """A function of row numbers (a resample: repeats allowed) that returns :meth:`metrics` of
        those rows: what a bootstrap calls hundreds of times, so per-row work is done once."""

    def row_scores(self, y_true: Any, y_pred: Any) -> np.ndarray:
        """Per-row contribution to :attr:`slice_metric` (1/0 correct; absolute error)."""

    def paired(
        self,
        y_true: Any,
        pred_a: Any,
        pred_b: Any,
        metric: str,
        probabilities_a: Any = None,
        probabilities_b: Any = None,
    ) -> tuple[float | None, tuple[float, float] | None]:
        """(p-value, 95 % bootstrap CI of ``metric(b) - metric(a)``) on the same rows."""

    def corrected(self, y_true: Any, y_pred: Any) -> np.ndarray:
        """Which labels corrected the served prediction (for corrected/confirmed balancing)."""

    def strata(self, y_true: Any, y_pred: Any) -> np.ndarray:
        """A stratum per row, for error-targeted sampling."""

    def output_frame(self, labels: Any, confidence: Any, probabilities: Any = None) -> pd.DataFrame:
        """The outputs monitoring profiles (``__prediction__``, and ``__confidence__`` where the
        task has one), from what was logged."""

    def output_spec(self, outputs: pd.DataFrame, bins: int) -> ProfileSpec:
        """The profile spec of :meth:`output_frame` columns, fitted on the reference outputs."""

    def fit_estimator(self, features: pd.DataFrame, outputs: pd.DataFrame, y_true: Any) -> dict[str, Any]:
        """The label-free estimator, fitted on reference rows with labels, as JSON."""

    def estimates(
        self, estimator: dict[str, Any], features: pd.DataFrame, outputs: pd.DataFrame
    ) -> dict[str, float | None]:
        """Label-free window metrics (``estimated_<metric>``) from the fitted estimator."""

    def label_drift(self, estimator: dict[str, Any], y_true: Any, y_pred: Any) -> dict[str, dict[str, Any]]:
        """Window metrics that compare labelled rows with the reference's (regression: the
        residual distribution), each as ``{"value", "p_value", "threshold", "flagged"}``."""
