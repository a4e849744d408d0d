"""Label-free performance estimation: confidence-based performance estimation (CBPE).

Calibrated on reference rows whose labels are known, CBPE maps the model's confidence to the
probability that the prediction is right (isotonic regression, so the map is monotone), and
estimates a window's accuracy as the mean of those probabilities. It tracks accuracy under
covariate shift while labels have not arrived; it cannot see concept drift (where the same
confidence is right less often), which is what feedback-based accuracy is for.

Expected macro F1 needs one more thing: where a wrong prediction's true class goes. CBPE
learns it on the reference as, for each predicted class, the share of its errors that belong
to each other class (exact for two classes, where an error can only be the other class).
Together they give each row a distribution over its true class, and from it every metric:
precision, recall and F1 per class and for a positive class, ROC AUC (each class against the
rest, ranked by the model's probability for it), and top-k accuracy (calibrated on its own,
from the probability mass of the k likeliest classes). :meth:`CBPE.estimate_all` returns them
with a sampling band each: the range the realised metric falls in 95 % of the time when the
calibration holds, found by drawing the rows' labels from those distributions.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> conf = rng.uniform(0.5, 1.0, 5000)
>>> correct = rng.random(5000) < conf          # a calibrated model
>>> cbpe = CBPE().fit(conf, correct)
>>> round(cbpe.estimate(np.full(1000, 0.9)), 2)
0.9
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.isotonic import IsotonicRegression

from driftloop.config import category_text
from driftloop.exceptions import ConfigError, NotFittedError

__all__ = ["CBPE"]


def _auc(positive: np.ndarray) -> float:
    """ROC AUC of a ranking (rows sorted by ascending score) when row ``i`` is positive with
    probability (or indicator) ``positive[i]``: the expected share of positive-negative pairs the
    ranking orders correctly (ties in score count as ordered; scores are rarely tied)."""
    negative = 1.0 - positive
    below = np.cumsum(negative) - negative  # expected negatives ranked below each row
    pairs = positive.sum() * negative.sum() - float(np.sum(positive * negative))
    return float(np.sum(positive * below) / pairs) if pairs > 0 else float("nan")


def _quantiles(values: list[float]) -> tuple[float, float]:
    finite = np.asarray([v for v in values if np.isfinite(v)])
    if not finite.size:
        return float("nan"), float("nan")
    low, high = np.quantile(finite, [0.025, 0.975])
    return float(low), float(high)


class CBPE:
    """Expected accuracy (and macro F1) from confidence.

    ``fit(confidence, correct)``, then ``estimate(confidence)``; pass ``predicted``, ``actual``
    and ``classes`` to ``fit`` to enable ``estimate_f1(confidence, predicted)``.
    """

    def __init__(self) -> None:
        self.x_: np.ndarray | None = None
        self.y_: np.ndarray | None = None
        self.classes_: list[str] | None = None
        self.errors_: np.ndarray | None = None  # [predicted j, true k]: share of j's errors that are k
        self.top_k_: tuple[int, np.ndarray, np.ndarray] | None = None  # k, isotonic x and y

    def fit(
        self,
        confidence: np.ndarray,
        correct: np.ndarray,
        *,
        predicted: np.ndarray | None = None,
        actual: np.ndarray | None = None,
        classes: list[str] | None = None,
        probabilities: np.ndarray | None = None,
        top_k: int | None = None,
    ) -> CBPE:
        """Calibrate on reference rows. ``probabilities`` (a column per class, in the order of
        ``classes``) with ``top_k`` also calibrates top-k accuracy."""
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
        iso.fit(np.asarray(confidence, dtype="float64"), np.asarray(correct, dtype="float64"))
        self.x_ = np.asarray(iso.X_thresholds_, dtype="float64")
        self.y_ = np.asarray(iso.y_thresholds_, dtype="float64")
        if predicted is not None and actual is not None and classes:
            k = len(classes)
            index = {c: i for i, c in enumerate(classes)}
            pred = np.array([index.get(str(p), -1) for p in predicted])
            true = np.array([index.get(str(a), -1) for a in actual])
            keep = (pred >= 0) & (true >= 0) & (pred != true)
            counts = np.zeros((k, k))
            np.add.at(counts, (pred[keep], true[keep]), 1.0)
            # a class never wrong on the reference: spread its errors evenly (Laplace-style prior)
            prior = (1.0 - np.eye(k)) / max(k - 1, 1)
            totals = counts.sum(axis=1, keepdims=True)
            self.errors_ = (counts + prior) / (totals + 1.0)
            self.classes_ = [str(c) for c in classes]
            if probabilities is not None and top_k and 1 < top_k < k:
                probs = np.asarray(probabilities, dtype="float64")
                top = np.argsort(-probs, axis=1, kind="stable")[:, :top_k]
                mass = np.take_along_axis(probs, top, axis=1).sum(axis=1)
                hit = (top == true[:, None]).any(axis=1)
                iso_k = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(mass, hit)
                self.top_k_ = (
                    top_k,
                    np.asarray(iso_k.X_thresholds_, dtype="float64"),
                    np.asarray(iso_k.y_thresholds_, dtype="float64"),
                )
        return self

    def _calibrated(self, confidence: np.ndarray) -> np.ndarray:
        if self.x_ is None or self.y_ is None:
            raise NotFittedError(
                "CBPE.estimate needs a calibration; call CBPE.fit(confidence, correct) first."
            )
        return np.asarray(np.interp(np.asarray(confidence, dtype="float64"), self.x_, self.y_))

    def estimate(self, confidence: np.ndarray) -> float:
        """Expected accuracy of predictions made with these confidences."""
        p = self._calibrated(confidence)
        return float(p.mean()) if p.size else float("nan")

    def band(self, confidence: np.ndarray, z: float = 1.96) -> tuple[float, float]:
        """The range the realised accuracy of these predictions falls in 95 % of the time if the
        calibration holds: each prediction is right with its calibrated probability, so the
        count of right ones has variance ``sum p (1 - p)`` (sampling error, not calibration
        error). It tells a 0.005 move from noise: on 1,000 rows at 0.9 it is about ±0.019.

        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> conf = rng.uniform(0.5, 1.0, 5000)
        >>> cbpe = CBPE().fit(conf, rng.random(5000) < conf)
        >>> low, high = cbpe.band(np.full(1000, 0.9))
        >>> round(low, 2), round(high, 2)
        (0.88, 0.92)
        """
        p = self._calibrated(confidence)
        if not p.size:
            return float("nan"), float("nan")
        half = z * float(np.sqrt(np.sum(p * (1 - p)))) / p.size
        centre = float(p.mean())
        return max(centre - half, 0.0), min(centre + half, 1.0)

    @classmethod
    def from_probabilities(cls, probabilities: Any, labels: Any, classes: list[Any] | None = None) -> CBPE:
        """Fit from what a user holds: a model's probabilities and the true labels.

        ``probabilities`` is a column for the positive class of a binary model (then
        ``classes`` is ``[negative, positive]``, by default ``[0, 1]``) or a matrix with a
        column per class in the order of ``classes``; labels may be strings, ints or floats
        (``1.0`` is the class ``1``). Inputs it cannot interpret are refused with one sentence.

        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> positive = rng.uniform(0, 1, 5000)
        >>> y = (rng.random(5000) < positive).astype(float)     # calibrated, labels as floats
        >>> round(CBPE.from_probabilities(positive, y).estimate(np.maximum(positive, 1 - positive)), 2)
        0.75
        >>> CBPE.from_probabilities(positive * 2, y)
        Traceback (most recent call last):
        ...
        driftloop.exceptions.ConfigError: The 'probabilities' of CBPE.from_probabilities must lie ...
        """
        probs = np.asarray(probabilities, dtype="float64")
        truth = np.asarray(labels, dtype=object).ravel()
        if probs.ndim == 1:
            classes = list(classes) if classes is not None else [0, 1]
            if len(classes) != 2:
                raise ConfigError(
                    "A single column of 'probabilities' is the positive class of a binary model, so "
                    f"'classes' must name two classes. Got {classes!r} instead."
                )
            probs = np.column_stack([1 - probs, probs])
        elif probs.ndim == 2:
            classes = list(classes) if classes is not None else list(range(probs.shape[1]))
            if probs.shape[1] != len(classes):
                raise ConfigError(
                    f"The 'probabilities' of CBPE.from_probabilities must have one column per class "
                    f"({len(classes)}). Got {probs.shape[1]} columns instead."
                )
        else:
            raise ConfigError(
                "The 'probabilities' of CBPE.from_probabilities must be a column or a matrix. "
                f"Got an array of shape {probs.shape} instead."
            )
        if len(probs) != len(truth) or not len(probs):
            raise ConfigError(
                "CBPE.from_probabilities needs one label per row of probabilities. "
                f"Got {len(probs)} rows and {len(truth)} labels instead."
            )
        finite = probs[np.isfinite(probs)]
        if finite.size != probs.size or finite.min() < 0 or finite.max() > 1:
            raise ConfigError(
                "The 'probabilities' of CBPE.from_probabilities must lie between 0 and 1. "
                f"Got values up to {np.nanmax(np.abs(probs)):.5g} instead."
            )
        names = [category_text(c) for c in classes]
        text = np.array([category_text(v) for v in truth], dtype=object)
        unknown = sorted(set(text) - set(names))
        if unknown:
            raise ConfigError(
                f"Every label given to CBPE.from_probabilities must be one of the classes {names}. "
                f"Got {unknown[:5]} instead."
            )
        best = probs.argmax(axis=1)
        predicted = np.asarray(names, dtype=object)[best]
        confidence = probs[np.arange(len(probs)), best]
        return cls().fit(confidence, predicted == text, predicted=predicted, actual=text, classes=names)

    def estimate_f1(self, confidence: np.ndarray, predicted: np.ndarray) -> float:
        """Expected macro F1 of these predictions (the classes' mean, as ``f1_score(average="macro")``).

        >>> import numpy as np
        >>> rng = np.random.default_rng(1)
        >>> conf = rng.uniform(0.5, 1.0, 20000); pred = rng.choice(["a", "b"], 20000)
        >>> right = rng.random(20000) < conf
        >>> true = np.where(right, pred, np.where(pred == "a", "b", "a"))
        >>> cbpe = CBPE().fit(conf, right, predicted=pred, actual=true, classes=["a", "b"])
        >>> from sklearn.metrics import f1_score
        >>> abs(cbpe.estimate_f1(conf, pred) - f1_score(true, pred, average="macro")) < 0.01
        True
        """
        if self.errors_ is None or self.classes_ is None:
            raise NotFittedError(
                "CBPE.estimate_f1 needs the reference's error structure; call "
                "CBPE.fit(confidence, correct, predicted=..., actual=..., classes=...) first."
            )
        p = self._calibrated(confidence)
        if p.size == 0:
            return float("nan")
        index = {c: i for i, c in enumerate(self.classes_)}
        pred = np.array([index.get(str(v), -1) for v in predicted])
        k = len(self.classes_)
        known = pred >= 0
        right = np.bincount(pred[known], weights=p[known], minlength=k)  # expected TP per class
        wrong = np.bincount(pred[known], weights=1.0 - p[known], minlength=k)  # expected FP per class
        missed = wrong @ self.errors_  # expected FN per class: errors of other classes that are k
        denominator = 2 * right + wrong + missed
        f1 = np.divide(2 * right, denominator, out=np.zeros(k), where=denominator > 0)
        return float(f1.mean())

    def truth(
        self, confidence: np.ndarray, predicted: np.ndarray, probabilities: np.ndarray | None = None
    ) -> np.ndarray:
        """Each row's distribution over its true class, ``(n, k)`` in the order of the classes:
        the calibrated confidence on the predicted class, the rest spread in proportion to the
        model's own probabilities for the other classes when given (what ranking metrics need:
        a row's chance of being class c rises with its score for c), else as the reference's
        errors of the predicted class were."""
        if self.errors_ is None or self.classes_ is None:
            raise NotFittedError(
                "CBPE needs the reference's error structure for this; call "
                "CBPE.fit(confidence, correct, predicted=..., actual=..., classes=...) first."
            )
        p = self._calibrated(confidence)
        index = {c: i for i, c in enumerate(self.classes_)}
        pred = np.array([index.get(str(v), -1) for v in predicted], dtype=np.int64)
        known = pred >= 0
        q = np.zeros((p.size, len(self.classes_)))
        spread = self.errors_[pred[known]]
        if probabilities is not None:
            others = np.asarray(probabilities, dtype="float64")[known].copy()
            others[np.arange(len(others)), pred[known]] = 0.0
            total = others.sum(axis=1, keepdims=True)
            spread = np.where(total > 0, others / np.where(total > 0, total, 1.0), spread)
        q[known] = (1.0 - p[known])[:, None] * spread
        q[np.flatnonzero(known), pred[known]] = p[known]
        return q

    def estimate_all(
        self,
        confidence: np.ndarray,
        predicted: np.ndarray,
        probabilities: np.ndarray | None = None,
        *,
        positive_class: str | None = None,
        draws: int = 200,
        seed: int = 0,
    ) -> dict[str, tuple[float, float, float]]:
        """Every metric's estimate with its 95 % sampling band, ``{name: (estimate, low, high)}``.

        Names are those :func:`driftloop.config.classification_metrics` lists; ``roc_auc`` and
        ``top_k_accuracy`` need ``probabilities`` (``top_k_accuracy`` also a top-k calibration).

        >>> import numpy as np
        >>> rng = np.random.default_rng(2)
        >>> n = 20000; p1 = rng.uniform(0, 1, n); y = np.where(rng.random(n) < p1, "b", "a")
        >>> probs = np.column_stack([1 - p1, p1]); pred = np.where(p1 > 0.5, "b", "a")
        >>> conf = probs.max(axis=1)
        >>> cbpe = CBPE().fit(conf, pred == y, predicted=pred, actual=y, classes=["a", "b"])
        >>> est = cbpe.estimate_all(conf[:2000], pred[:2000], probs[:2000], positive_class="b")
        >>> from sklearn.metrics import roc_auc_score
        >>> auc, low, high = est["roc_auc"]
        >>> realised = roc_auc_score(y[:2000] == "b", p1[:2000])
        >>> bool(low < realised < high), round(high - low, 3)
        (True, 0.03)
        """
        q = self.truth(confidence, predicted, probabilities)
        classes = list(self.classes_ or [])
        n, k = q.shape
        if n == 0:
            return {}
        index = {c: i for i, c in enumerate(classes)}
        pred = np.array([index.get(str(v), -1) for v in predicted], dtype=np.int64)
        scores = None if probabilities is None else np.asarray(probabilities, dtype="float64")
        order = None if scores is None else np.argsort(scores, axis=0, kind="stable")
        positive = None if positive_class is None else index.get(str(positive_class))

        def metrics(truth: np.ndarray) -> dict[str, float]:
            # truth: (n, k) class indicators (one draw) or the expected ones (q itself)
            tp = np.array([truth[pred == c, c].sum() for c in range(k)])
            predicted_c = np.bincount(pred[pred >= 0], minlength=k).astype("float64")
            actual_c = truth.sum(axis=0)
            precision = np.divide(tp, predicted_c, out=np.zeros(k), where=predicted_c > 0)
            recall = np.divide(tp, actual_c, out=np.zeros(k), where=actual_c > 0)
            denominator = predicted_c + actual_c
            f1 = np.divide(2 * tp, denominator, out=np.zeros(k), where=denominator > 0)
            out = {"accuracy": float(tp.sum() / n), "f1_macro": float(f1.mean())}
            if order is not None:
                aucs = [_auc(truth[order[:, c], c]) for c in (range(k) if k > 2 else [1])]
                finite = [a for a in aucs if np.isfinite(a)]
                out["roc_auc"] = float(np.mean(finite)) if finite else float("nan")
            if positive is not None:
                out |= {
                    "precision": float(precision[positive]),
                    "recall": float(recall[positive]),
                    "f1": float(f1[positive]),
                }
            for c, name in enumerate(classes):
                out |= {
                    f"precision.{name}": float(precision[c]),
                    f"recall.{name}": float(recall[c]),
                    f"f1.{name}": float(f1[c]),
                }
            return out

        centre = metrics(q)
        rng = np.random.default_rng(seed)
        cumulative = np.cumsum(q, axis=1)
        cumulative[:, -1] = 1.0
        drawn: dict[str, list[float]] = {name: [] for name in centre}
        rows = np.arange(n)
        for _ in range(draws):
            drawn_true = (np.asarray(rng.random(n))[:, None] > cumulative).sum(axis=1)
            onehot = np.zeros((n, k))
            onehot[rows, drawn_true] = 1.0
            for name, value in metrics(onehot).items():
                drawn[name].append(value)
        out: dict[str, tuple[float, float, float]] = {
            name: (value, *_quantiles(drawn[name])) for name, value in centre.items()
        }
        if scores is not None and self.top_k_ is not None and scores.shape[1] == k:
            top_k, xs, ys = self.top_k_
            mass = -np.sort(-scores, axis=1)[:, :top_k].sum(axis=1)
            hit = np.interp(mass, xs, ys)
            half = 1.96 * float(np.sqrt(np.sum(hit * (1 - hit)))) / n
            mean = float(hit.mean())
            out["top_k_accuracy"] = (mean, max(mean - half, 0.0), min(mean + half, 1.0))
        return out

    def to_dict(self) -> dict[str, Any]:
        if self.x_ is None or self.y_ is None:
            raise NotFittedError("An unfitted CBPE has nothing to serialise; call fit first.")
        data: dict[str, Any] = {"x": self.x_.tolist(), "y": self.y_.tolist()}
        if self.errors_ is not None:
            data["classes"] = self.classes_
            data["errors"] = self.errors_.tolist()
        if self.top_k_ is not None:
            data["top_k"] = {"k": self.top_k_[0], "x": self.top_k_[1].tolist(), "y": self.top_k_[2].tolist()}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CBPE:
        made = cls()
        made.x_ = np.asarray(data["x"], dtype="float64")
        made.y_ = np.asarray(data["y"], dtype="float64")
        if "errors" in data:
            made.classes_ = list(data["classes"])
            made.errors_ = np.asarray(data["errors"], dtype="float64")
        if "top_k" in data:
            top = data["top_k"]
            made.top_k_ = (
                int(top["k"]),
                np.asarray(top["x"], dtype="float64"),
                np.asarray(top["y"], dtype="float64"),
            )
        return made
