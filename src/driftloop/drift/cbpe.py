"""Label-free performance estimation: confidence-based performance estimation (CBPE).

Calibrated on reference rows whose labels are known, CBPE maps the model's confidence to the
probability that the prediction is right (isotonic regression, so the map is monotone), and
estimates a window's accuracy as the mean of those probabilities. It tracks accuracy under
covariate shift while labels have not arrived; it cannot see concept drift (where the same
confidence is right less often), which is what feedback-based accuracy is for.

Expected macro F1 needs one more thing: where a wrong prediction's true class goes. CBPE
learns it on the reference as, for each predicted class, the share of its errors that belong
to each other class (exact for two classes, where an error can only be the other class).

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

    def fit(
        self,
        confidence: np.ndarray,
        correct: np.ndarray,
        *,
        predicted: np.ndarray | None = None,
        actual: np.ndarray | None = None,
        classes: list[str] | None = None,
    ) -> CBPE:
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

    def to_dict(self) -> dict[str, Any]:
        if self.x_ is None or self.y_ is None:
            raise NotFittedError("An unfitted CBPE has nothing to serialise; call fit first.")
        data: dict[str, Any] = {"x": self.x_.tolist(), "y": self.y_.tolist()}
        if self.errors_ is not None:
            data["classes"] = self.classes_
            data["errors"] = self.errors_.tolist()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CBPE:
        made = cls()
        made.x_ = np.asarray(data["x"], dtype="float64")
        made.y_ = np.asarray(data["y"], dtype="float64")
        if "errors" in data:
            made.classes_ = list(data["classes"])
            made.errors_ = np.asarray(data["errors"], dtype="float64")
        return made
