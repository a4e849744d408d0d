"""Label-free performance estimation: confidence-based performance estimation (CBPE).

Calibrated on reference rows whose labels are known, CBPE maps the model's confidence to the
probability that the prediction is right (isotonic regression, so the map is monotone), and
estimates a window's accuracy as the mean of those probabilities. It tracks accuracy under
covariate shift while labels have not arrived; it cannot see concept drift (where the same
confidence is right less often), which is what feedback-based accuracy is for.

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

from driftloop.exceptions import NotFittedError

__all__ = ["CBPE"]


class CBPE:
    """Expected accuracy from confidence. ``fit(confidence, correct)``, then ``estimate(confidence)``."""

    def __init__(self) -> None:
        self.x_: np.ndarray | None = None
        self.y_: np.ndarray | None = None

    def fit(self, confidence: np.ndarray, correct: np.ndarray) -> CBPE:
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
        iso.fit(np.asarray(confidence, dtype="float64"), np.asarray(correct, dtype="float64"))
        self.x_ = np.asarray(iso.X_thresholds_, dtype="float64")
        self.y_ = np.asarray(iso.y_thresholds_, dtype="float64")
        return self

    def estimate(self, confidence: np.ndarray) -> float:
        """Expected accuracy of predictions made with these confidences."""
        if self.x_ is None or self.y_ is None:
            raise NotFittedError(
                "CBPE.estimate needs a calibration; call CBPE.fit(confidence, correct) first."
            )
        values = np.asarray(confidence, dtype="float64")
        if values.size == 0:
            return float("nan")
        return float(np.interp(values, self.x_, self.y_).mean())

    def to_dict(self) -> dict[str, Any]:
        if self.x_ is None or self.y_ is None:
            raise NotFittedError("An unfitted CBPE has nothing to serialise; call fit first.")
        return {"x": self.x_.tolist(), "y": self.y_.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CBPE:
        made = cls()
        made.x_ = np.asarray(data["x"], dtype="float64")
        made.y_ = np.asarray(data["y"], dtype="float64")
        return made
