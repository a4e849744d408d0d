"""Classification: a trainer returns ``predict_proba`` and ``classes_``; a label is a class.

>>> import numpy as np
>>> task = Classification(["a", "b"])
>>> task.metrics(np.array(["a", "b", "a", "b"]), np.array(["a", "b", "b", "b"]))["accuracy"]
0.75
>>> task.label_error("c")
"'label' must be one of ['a', 'b']. Got 'c' instead."
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score

from driftloop.config import TASK_METRICS
from driftloop.evaluation import bootstrap_diff, mcnemar
from driftloop.exceptions import SchemaError, TrainerError
from driftloop.tasks._base import Predictions

if TYPE_CHECKING:
    from driftloop.config import Settings
    from driftloop.profiles import ProfileSpec

__all__ = ["Classification"]


class Classification:
    """A classifier over a fixed list of classes."""

    name = "classification"
    primary_metric = "accuracy"
    metric_names: tuple[str, ...] = TASK_METRICS["classification"]
    lower_is_better: frozenset[str] = frozenset()
    slice_metric = "accuracy"
    paired_test = "McNemar"

    def __init__(self, classes: list[str]) -> None:
        self.classes = [str(c) for c in classes]

    @classmethod
    def from_settings(cls, settings: Settings) -> Classification:
        return cls(list(settings.project.classes))

    def check_model(self, model: Any, entrypoint: str) -> None:
        for attribute in ("predict_proba", "classes_"):
            if not hasattr(model, attribute):
                raise TrainerError(
                    f"The trainer {entrypoint!r} must return a fitted classifier with '{attribute}'. "
                    f"Got a {type(model).__name__} without it."
                )

    def predict(self, model: Any, X: pd.DataFrame) -> Predictions:
        """Labels, confidence and probabilities aligned to the project's classes."""
        raw = np.asarray(model.predict_proba(X), dtype="float64")
        classes = self.classes
        probs = np.zeros((len(X), len(classes)))
        for j, c in enumerate(str(c) for c in model.classes_):
            if c in classes:
                probs[:, classes.index(c)] = raw[:, j]
        best = probs.argmax(axis=1)
        return Predictions(np.asarray(classes, dtype=object)[best], probs[np.arange(len(X)), best], probs)

    def targets(self, values: pd.Series, what: str) -> pd.Series:
        from driftloop.config import category_text

        y = values.map(lambda v: category_text(v) if pd.notna(v) else "")
        unknown = sorted(set(y) - set(self.classes))
        if unknown:
            raise SchemaError(
                f"Every label in the {what} must be one of the classes {self.classes}. "
                f"Got {unknown[:5]} instead."
            )
        return y.astype(object)

    def label_error(self, value: Any) -> str | None:
        if value is None or isinstance(value, dict | list) or str(value) not in self.classes:
            return f"'label' must be one of {self.classes}. Got {value!r:.80} instead."
        return None

    def parse_label(self, value: Any) -> str:
        return str(value)

    def metrics(self, y_true: Any, y_pred: Any) -> dict[str, float]:
        y_true, y_pred = np.asarray(y_true).astype(str), np.asarray(y_pred).astype(str)
        if y_true.size == 0:
            return {"accuracy": float("nan"), "f1_macro": float("nan")}
        return {
            "accuracy": float(np.mean(y_true == y_pred)),
            "f1_macro": float(
                f1_score(y_true, y_pred, labels=self.classes, average="macro", zero_division=0)
            ),
        }

    def row_scores(self, y_true: Any, y_pred: Any) -> np.ndarray:
        return np.asarray(np.asarray(y_true).astype(str) == np.asarray(y_pred).astype(str), dtype="float64")

    def paired(
        self, y_true: Any, pred_a: Any, pred_b: Any, metric: str
    ) -> tuple[float | None, tuple[float, float] | None]:
        y, a, b = (np.asarray(v).astype(str) for v in (y_true, pred_a, pred_b))
        if not len(y):
            return None, None
        p = mcnemar(a == y, b == y)
        ci = bootstrap_diff(y, a, b, lambda t, q: self.metrics(t, q)[metric])
        return p, ci

    def corrected(self, y_true: Any, y_pred: Any) -> np.ndarray:
        return np.asarray(np.asarray(y_true).astype(str) != np.asarray(y_pred).astype(str), dtype=bool)

    def strata(self, y_true: Any, y_pred: Any) -> np.ndarray:
        return np.asarray(y_true).astype(str)

    def output_frame(self, labels: Any, confidence: Any) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "__prediction__": np.asarray(labels, dtype=object),
                "__confidence__": np.asarray(
                    [np.nan if c is None else c for c in confidence], dtype="float64"
                ),
            }
        )

    def output_spec(self, outputs: pd.DataFrame, bins: int) -> ProfileSpec:
        from driftloop.profiles import ProfileSpec

        edges = ProfileSpec.fit(outputs, ["__confidence__"], [], bins=bins).numeric["__confidence__"]
        return ProfileSpec(
            numeric={"__confidence__": edges},
            categorical={"__prediction__": list(self.classes)},
            sample_size=0,
        )

    def fit_estimator(self, features: pd.DataFrame, outputs: pd.DataFrame, y_true: Any) -> dict[str, Any]:
        """CBPE: calibrated confidence -> expected accuracy and macro F1."""
        from driftloop.drift.cbpe import CBPE

        predicted = outputs["__prediction__"].to_numpy()
        actual = np.asarray(y_true).astype(str)
        cbpe = CBPE().fit(
            outputs["__confidence__"].to_numpy(),
            predicted.astype(str) == actual,
            predicted=predicted,
            actual=actual,
            classes=list(self.classes),
        )
        return cbpe.to_dict()

    def estimates(
        self, estimator: dict[str, Any], features: pd.DataFrame, outputs: pd.DataFrame
    ) -> dict[str, float | None]:
        from driftloop.drift.cbpe import CBPE

        cbpe = CBPE.from_dict(estimator)
        confidence = outputs["__confidence__"].to_numpy()
        low, high = cbpe.band(confidence)  # sampling error: where the realised accuracy should fall
        return {
            "estimated_accuracy": cbpe.estimate(confidence),
            "estimated_accuracy_low": low,
            "estimated_accuracy_high": high,
            "estimated_f1_macro": cbpe.estimate_f1(confidence, outputs["__prediction__"].to_numpy())
            if cbpe.errors_ is not None
            else None,
        }

    def label_drift(self, estimator: dict[str, Any], y_true: Any, y_pred: Any) -> dict[str, dict[str, Any]]:
        return {}
