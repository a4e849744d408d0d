"""Sequential change detectors for metric streams (accuracy from feedback, confidence, …).

Each is a small object: parameters in ``__init__``, state in ``_reset()``, learning through
``update(x)`` (returns ``self``), the answer in ``drift_detected``. After a detection the next
``update`` starts afresh, as in River.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> stream = np.concatenate([rng.normal(0, 1, 500), rng.normal(3, 1, 500)])
>>> for name, make in sorted(DETECTORS.items()):
...     d = make()
...     hits = [i for i, x in enumerate(stream) if d.update(x).drift_detected]
...     print(name, hits[0] >= 500 and hits[0] < 560)
adwin True
cusum True
ewma True
page_hinkley True
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from driftloop.exceptions import ConfigError

__all__ = ["ADWIN", "CUSUM", "DETECTORS", "EWMAChart", "PageHinkley", "make_detector"]


def _check(owner: str, name: str, value: float, rule: str, ok: bool) -> None:
    if not ok:
        raise ConfigError(f"The '{name}' parameter of {owner} must be {rule}. Got {value!r} instead.")


class _Detector:
    """Shared plumbing: clone, parameters, serialisation."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.drift_detected = False
        self.n = 0

    def _params(self) -> dict[str, Any]:
        raise NotImplementedError

    def update(self, x: float) -> _Detector:
        raise NotImplementedError

    def clone(self) -> _Detector:
        """A fresh detector with the same parameters."""
        return type(self)(**self._params())

    def to_dict(self) -> dict[str, Any]:
        return {"type": type(self).__name__, "params": self._params(), "state": dict(vars(self))}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> _Detector:
        made = {c.__name__: c for c in (PageHinkley, CUSUM, ADWIN, EWMAChart)}[data["type"]](**data["params"])
        for key, value in data["state"].items():
            setattr(made, key, list(value) if isinstance(value, tuple) else value)
        return made

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._params().items())
        return f"{type(self).__name__}({args})"


class PageHinkley(_Detector):
    """Page–Hinkley test for a change in the mean, either direction.

    Parameters: ``min_instances`` before any alarm, ``delta`` tolerated change,
    ``threshold`` (lambda), ``alpha`` forgetting factor of the cumulative sum.
    """

    def __init__(
        self, min_instances: int = 30, delta: float = 0.005, threshold: float = 50.0, alpha: float = 0.9999
    ) -> None:
        _check("PageHinkley", "min_instances", min_instances, "a positive integer", min_instances >= 1)
        _check("PageHinkley", "threshold", threshold, "positive", threshold > 0)
        _check("PageHinkley", "delta", delta, "non-negative", delta >= 0)
        _check("PageHinkley", "alpha", alpha, "in (0, 1]", 0 < alpha <= 1)
        self.min_instances, self.delta, self.threshold, self.alpha = min_instances, delta, threshold, alpha
        super().__init__()

    def _params(self) -> dict[str, Any]:
        return {
            "min_instances": self.min_instances,
            "delta": self.delta,
            "threshold": self.threshold,
            "alpha": self.alpha,
        }

    def _reset(self) -> None:
        super()._reset()
        self.mean = 0.0
        self.up = self.down = 0.0
        self.up_min = self.down_max = 0.0

    def update(self, x: float) -> PageHinkley:
        x = float(x)
        if self.drift_detected:
            self._reset()
        self.n += 1
        self.mean += (x - self.mean) / self.n
        self.up = self.alpha * self.up + (x - self.mean - self.delta)
        self.down = self.alpha * self.down + (x - self.mean + self.delta)
        self.up_min = min(self.up_min, self.up)
        self.down_max = max(self.down_max, self.down)
        if self.n >= self.min_instances:
            self.drift_detected = bool(
                self.up - self.up_min > self.threshold or self.down_max - self.down > self.threshold
            )
        return self


class _Standardised(_Detector):
    """Detectors that learn the in-control mean and sd from the first ``warmup`` values."""

    warmup: int

    def _reset(self) -> None:
        super()._reset()
        self.mu = 0.0
        self.m2 = 0.0

    def _learn(self, x: float) -> bool:
        """Returns True while still warming up."""
        self.n += 1
        if self.n <= self.warmup:
            delta = x - self.mu
            self.mu += delta / self.n
            self.m2 += delta * (x - self.mu)
            return True
        return False

    @property
    def sigma(self) -> float:
        return math.sqrt(self.m2 / (self.warmup - 1)) if self.warmup > 1 and self.m2 > 0 else 1e-9


class CUSUM(_Standardised):
    """Two-sided tabular CUSUM on standardised values: allowance ``k`` and decision interval ``h``
    (both in standard deviations of the warm-up)."""

    def __init__(self, warmup: int = 100, k: float = 0.5, h: float = 8.0) -> None:
        _check("CUSUM", "warmup", warmup, "an integer of at least 2", warmup >= 2)
        _check("CUSUM", "k", k, "non-negative", k >= 0)
        _check("CUSUM", "h", h, "positive", h > 0)
        self.warmup, self.k, self.h = warmup, k, h
        super().__init__()

    def _params(self) -> dict[str, Any]:
        return {"warmup": self.warmup, "k": self.k, "h": self.h}

    def _reset(self) -> None:
        super()._reset()
        self.high = self.low = 0.0

    def update(self, x: float) -> CUSUM:
        x = float(x)
        if self.drift_detected:
            self._reset()
        if self._learn(x):
            return self
        z = (x - self.mu) / self.sigma
        self.high = max(0.0, self.high + z - self.k)
        self.low = max(0.0, self.low - z - self.k)
        self.drift_detected = bool(self.high > self.h or self.low > self.h)
        return self


class EWMAChart(_Standardised):
    """EWMA control chart: smoothing ``lam``, limits at ``L`` time-varying standard errors."""

    def __init__(self, warmup: int = 100, lam: float = 0.1, L: float = 4.0) -> None:
        _check("EWMAChart", "warmup", warmup, "an integer of at least 2", warmup >= 2)
        _check("EWMAChart", "lam", lam, "in (0, 1]", 0 < lam <= 1)
        _check("EWMAChart", "L", L, "positive", L > 0)
        self.warmup, self.lam, self.L = warmup, lam, L
        super().__init__()

    def _params(self) -> dict[str, Any]:
        return {"warmup": self.warmup, "lam": self.lam, "L": self.L}

    def _reset(self) -> None:
        super()._reset()
        self.z = 0.0

    def update(self, x: float) -> EWMAChart:
        x = float(x)
        if self.drift_detected:
            self._reset()
        if self._learn(x):
            self.z = self.mu
            return self
        t = self.n - self.warmup
        self.z = self.lam * x + (1 - self.lam) * self.z
        width = self.L * self.sigma * math.sqrt(self.lam / (2 - self.lam) * (1 - (1 - self.lam) ** (2 * t)))
        self.drift_detected = bool(abs(self.z - self.mu) > width)
        return self


class ADWIN(_Detector):
    """ADaptive WINdowing (Bifet & Gavaldà): keep the longest recent window whose two halves
    agree; a cut means the mean changed. Checks every ``clock`` values over at most
    ``max_window`` values, vectorised over all split points.
    """

    def __init__(
        self, delta: float = 0.002, clock: int = 32, max_window: int = 5000, min_side: int = 5
    ) -> None:
        _check("ADWIN", "delta", delta, "in (0, 1)", 0 < delta < 1)
        _check("ADWIN", "clock", clock, "a positive integer", clock >= 1)
        _check("ADWIN", "max_window", max_window, "at least 10", max_window >= 10)
        _check("ADWIN", "min_side", min_side, "a positive integer", min_side >= 1)
        self.delta, self.clock, self.max_window, self.min_side = delta, clock, max_window, min_side
        super().__init__()

    def _params(self) -> dict[str, Any]:
        return {
            "delta": self.delta,
            "clock": self.clock,
            "max_window": self.max_window,
            "min_side": self.min_side,
        }

    def _reset(self) -> None:
        super()._reset()
        self.window: list[float] = []

    def update(self, x: float) -> ADWIN:
        self.drift_detected = False
        self.n += 1
        self.window.append(float(x))
        if len(self.window) > self.max_window:
            del self.window[0]
        if self.n % self.clock == 0 and len(self.window) >= 2 * self.min_side:
            self.drift_detected = self._cut()
        return self

    def _cut(self) -> bool:
        w = np.asarray(self.window)
        n = w.size
        csum = np.cumsum(w)
        n0 = np.arange(self.min_side, n - self.min_side + 1)
        n1 = n - n0
        mu0 = csum[n0 - 1] / n0
        mu1 = (csum[-1] - csum[n0 - 1]) / n1
        variance = float(w.var())
        m = 1.0 / (1.0 / n0 + 1.0 / n1)
        log_term = math.log(2.0 * math.log(n) / self.delta) if n > 1 else 1.0
        eps = np.sqrt(2.0 / m * variance * log_term) + 2.0 / (3.0 * m) * log_term
        cuts = np.nonzero(np.abs(mu0 - mu1) > eps)[0]
        if cuts.size == 0:
            return False
        keep_from = int(n0[cuts[-1]])  # drop everything before the latest significant split
        self.window = self.window[keep_from:]
        return True


DETECTORS: dict[str, Callable[..., _Detector]] = {
    "page_hinkley": PageHinkley,
    "cusum": CUSUM,
    "adwin": ADWIN,
    "ewma": EWMAChart,
}


def make_detector(name: str, **params: Any) -> _Detector:
    """A detector by name; an unknown name lists the known ones."""
    if name not in DETECTORS:
        raise ConfigError(f"The detector must be one of {sorted(DETECTORS)}. Got {name!r} instead.")
    return DETECTORS[name](**params)
