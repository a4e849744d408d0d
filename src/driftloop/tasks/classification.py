"""Classification: a trainer returns ``predict_proba`` and ``classes_``; a label is a class.

>>> import numpy as np
>>> task = Classification(["a", "b"])
>>> task.metrics(np.array(["a", "b", "a", "b"]), np.array(["a", "b", "b", "b"]))["accuracy"]
0.75
>>> task.label_error("c")
"'label' must be one of ['a', 'b']. Got 'c' instead."

With probabilities (a column per class) it also scores ROC AUC, and with three or more classes
top-k accuracy; every class has its precision, recall and F1, and a ``positive_class`` has them
unqualified:

>>> task = Classification(["a", "b", "c"], positive_class="c", top_k=2)
>>> probs = np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.1, 0.2, 0.7], [0.5, 0.4, 0.1]])
>>> m = task.metrics(np.array(["a", "c", "c", "c"]), np.array(["a", "b", "c", "a"]), probs)
>>> m["accuracy"], m["top_k_accuracy"], m["recall"], m["precision.a"]
(0.5, 0.75, 0.3333333333333333, 0.5)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from driftloop.config import classification_metrics
from driftloop.evaluation import bootstrap_diff, mcnemar
from driftloop.exceptions import SchemaError, TrainerError
from driftloop.tasks._base import Predictions

if TYPE_CHECKING:
    from collections.abc import Callable

    from driftloop.config import Settings
    from driftloop.profiles import ProfileSpec

__all__ = ["Classification"]


def _roc_auc(true: np.ndarray, probs: np.ndarray) -> float:
    """ROC AUC: of the positive class's probability for two classes, else the mean over classes
    of each against the rest (classes absent from the rows, or alone in them, are left out).

    Each is the Mann-Whitney statistic: the chance that a row of the class has a higher
    probability of it than a row of another (ties count half), from the probabilities' ranks.

    >>> _roc_auc(np.array([0, 0, 1, 1]), np.array([[0.9, 0.1], [0.6, 0.4], [0.6, 0.4], [0.2, 0.8]]))
    0.875
    """
    k = probs.shape[1]
    columns = [1] if k == 2 else list(range(k))
    ranks = rankdata(probs[:, columns], axis=0)  # ties share their mean rank
    scores = []
    for j, c in enumerate(columns):
        hit = true == c
        positive = int(hit.sum())
        negative = len(hit) - positive
        if positive and negative:
            above = float(ranks[hit, j].sum()) - positive * (positive + 1) / 2
            scores.append(above / (positive * negative))
    return float(np.mean(scores)) if scores else float("nan")


class Classification:
    """A classifier over a fixed list of classes."""

    name = "classification"
    primary_metric = "accuracy"
    lower_is_better: frozenset[str] = frozenset()
    slice_metric = "accuracy"
    paired_test = "McNemar"

    def __init__(self, classes: list[str], positive_class: str | None = None, top_k: int = 2) -> None:
        self.classes = [str(c) for c in classes]
        self.positive_class = None if positive_class is None else str(positive_class)
        self.top_k = top_k
        self.metric_names = classification_metrics(self.classes, self.positive_class)

    @classmethod
    def from_settings(cls, settings: Settings) -> Classification:
        project = settings.project
        return cls(list(project.classes), project.positive_class, project.top_k)

    def probability_matrix(self, probabilities: Any) -> np.ndarray | None:
        """Logged probabilities (one ``{class: p}`` per row) or a matrix, as ``(n, k)`` in the
        order of the classes; ``None`` when any row lacks them."""
        if probabilities is None:
            return None
        if isinstance(probabilities, np.ndarray):
            return probabilities.astype("float64") if probabilities.ndim == 2 else None
        rows = list(probabilities)
        if not rows or not all(isinstance(r, dict) and r for r in rows):
            return None
        return np.array([[float(r.get(c, 0.0)) for c in self.classes] for r in rows], dtype="float64")

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

    def metrics(self, y_true: Any, y_pred: Any, probabilities: Any = None) -> dict[str, float]:
        """Every metric of :attr:`metric_names` the inputs allow (``roc_auc`` and
        ``top_k_accuracy`` need ``probabilities``, a column per class)."""
        y_true, y_pred = np.asarray(y_true).astype(str), np.asarray(y_pred).astype(str)
        if y_true.size == 0:
            return {"accuracy": float("nan"), "f1_macro": float("nan")}
        k = len(self.classes)
        index = {c: i for i, c in enumerate(self.classes)}
        true = np.array([index.get(v, -1) for v in y_true])
        pred = np.array([index.get(v, -1) for v in y_pred])
        tp = np.bincount(true[(true == pred) & (true >= 0)], minlength=k).astype("float64")
        predicted = np.bincount(pred[pred >= 0], minlength=k).astype("float64")
        actual = np.bincount(true[true >= 0], minlength=k).astype("float64")
        precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
        recall = np.divide(tp, actual, out=np.zeros(k), where=actual > 0)
        f1 = np.divide(2 * tp, predicted + actual, out=np.zeros(k), where=predicted + actual > 0)
        out = {"accuracy": float(np.mean(y_true == y_pred)), "f1_macro": float(f1.mean())}
        probs = self.probability_matrix(probabilities)
        if probs is not None and len(probs) == len(y_true):
            out["roc_auc"] = _roc_auc(true, probs)
            if k > 2:
                top = np.argsort(-probs, axis=1, kind="stable")[:, : self.top_k]
                out["top_k_accuracy"] = float(np.mean((top == true[:, None]).any(axis=1)))
        if self.positive_class is not None:
            j = index[self.positive_class]
            out |= {"precision": float(precision[j]), "recall": float(recall[j]), "f1": float(f1[j])}
        for j, c in enumerate(self.classes):
            out |= {
                f"precision.{c}": float(precision[j]),
                f"recall.{c}": float(recall[j]),
                f"f1.{c}": float(f1[j]),
            }
        return out

    def subset_metrics(
        self, y_true: Any, y_pred: Any, probabilities: Any = None
    ) -> Callable[[np.ndarray], dict[str, float]]:
        y, made = np.asarray(y_true).astype(str), np.asarray(y_pred).astype(str)
        probs = self.probability_matrix(probabilities)
        return lambda rows: self.metrics(y[rows], made[rows], None if probs is None else probs[rows])

    def row_scores(self, y_true: Any, y_pred: Any) -> np.ndarray:
        return np.asarray(np.asarray(y_true).astype(str) == np.asarray(y_pred).astype(str), dtype="float64")

    def paired(
        self,
        y_true: Any,
        pred_a: Any,
        pred_b: Any,
        metric: str,
        probabilities_a: Any = None,
        probabilities_b: Any = None,
    ) -> tuple[float | None, tuple[float, float] | None]:
        y, a, b = (np.asarray(v).astype(str) for v in (y_true, pred_a, pred_b))
        if not len(y):
            return None, None
        p = mcnemar(a == y, b == y)
        if metric in ("roc_auc", "top_k_accuracy"):  # resample row numbers, score with probabilities
            pa, pb = self.probability_matrix(probabilities_a), self.probability_matrix(probabilities_b)
            if pa is None or pb is None:
                return p, None
            n = len(y)
            stacked, labels = np.vstack([pa, pb]), np.concatenate([a, b])
            rows = np.arange(n)

            def score(t: np.ndarray, q: np.ndarray) -> float:
                return self.metrics(y[t], labels[q], stacked[q]).get(metric, float("nan"))

            return p, bootstrap_diff(rows, rows, rows + n, score)
        return p, bootstrap_diff(y, a, b, lambda t, q: self.metrics(t, q)[metric])

    def corrected(self, y_true: Any, y_pred: Any) -> np.ndarray:
        return np.asarray(np.asarray(y_true).astype(str) != np.asarray(y_pred).astype(str), dtype=bool)

    def strata(self, y_true: Any, y_pred: Any) -> np.ndarray:
        return np.asarray(y_true).astype(str)

    def output_frame(self, labels: Any, confidence: Any, probabilities: Any = None) -> pd.DataFrame:
        """Predicted class and confidence (profiled), and each class's probability
        ``__p__.<class>`` where every row has them (for ROC AUC and top-k estimates)."""
        columns: dict[str, Any] = {
            "__prediction__": np.asarray(labels, dtype=object),
            "__confidence__": np.asarray([np.nan if c is None else c for c in confidence], dtype="float64"),
        }
        probs = self.probability_matrix(probabilities)
        if probs is not None and len(probs) == len(columns["__prediction__"]):
            columns |= {f"__p__.{c}": probs[:, j] for j, c in enumerate(self.classes)}
        return pd.DataFrame(columns)

    def _probabilities(self, outputs: pd.DataFrame) -> np.ndarray | None:
        names = [f"__p__.{c}" for c in self.classes]
        return outputs[names].to_numpy("float64") if all(n in outputs for n in names) else None

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
            probabilities=self._probabilities(outputs),
            top_k=self.top_k if len(self.classes) > 2 else None,
        )
        return cbpe.to_dict()

    def estimates(
        self, estimator: dict[str, Any], features: pd.DataFrame, outputs: pd.DataFrame
    ) -> dict[str, float | None]:
        from driftloop.drift.cbpe import CBPE

        cbpe = CBPE.from_dict(estimator)
        confidence = outputs["__confidence__"].to_numpy()
        low, high = cbpe.band(confidence)  # sampling error: where the realised accuracy should fall
        out: dict[str, float | None] = {
            "estimated_accuracy": cbpe.estimate(confidence),
            "estimated_accuracy_low": low,
            "estimated_accuracy_high": high,
        }
        if cbpe.errors_ is None:  # a calibration without the error structure: accuracy only
            return out | {"estimated_f1_macro": None}
        every = cbpe.estimate_all(
            confidence,
            outputs["__prediction__"].to_numpy(),
            self._probabilities(outputs),
            positive_class=self.positive_class,
        )
        for name, (value, lo, hi) in every.items():
            if name == "accuracy":
                continue  # the analytic band above is exact for accuracy
            out |= {f"estimated_{name}": value, f"estimated_{name}_low": lo, f"estimated_{name}_high": hi}
        return out

    def label_drift(self, estimator: dict[str, Any], y_true: Any, y_pred: Any) -> dict[str, dict[str, Any]]:
        return {}
