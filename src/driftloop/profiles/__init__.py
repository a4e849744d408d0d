"""Mergeable per-window summaries of data: the currency of monitoring.

A :class:`ProfileSpec` is learned once from reference data (quantile bin edges per numeric
column, the category list per categorical column). A :class:`Profile` summarises any frame
against a spec, and two profiles of the same spec merge exactly: counts add, means and
variances combine by Chan's formula, and the row sample is a bottom-k sample on a hash of
each row, so ``profile(A + B) == profile(A).merge(profile(B))``.

>>> import pandas as pd
>>> ref = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "c": ["a", "b", "a", "a"]})
>>> spec = ProfileSpec.fit(ref, numeric=["x"], categorical=["c"], bins=2)
>>> a = Profile.from_frame(spec, ref.iloc[:2]); b = Profile.from_frame(spec, ref.iloc[2:])
>>> merged = a.merge(b)
>>> merged.n, merged.numeric["x"].mean, merged.categorical["c"].counts.tolist()
(4, 2.5, [3, 1, 0])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from driftloop.exceptions import ConfigError, NotFittedError

__all__ = ["CategoricalSummary", "NumericSummary", "Profile", "ProfileSpec"]

_HASH_SCALE = float(2**64)


@dataclass(frozen=True)
class ProfileSpec:
    """Fixed bins and categories, taken once from the reference data.

    Numeric bins: ``edges`` are reference quantiles; a value falls in bin ``i`` when
    ``edges[i-1] <= x < edges[i]``; bin 0 is the underflow and the last bin the overflow.
    Categorical: counts of the reference's categories, then one count for anything else.
    """

    numeric: dict[str, np.ndarray] = field(default_factory=dict)
    categorical: dict[str, list[str]] = field(default_factory=dict)
    sample_size: int = 2000

    @classmethod
    def fit(
        cls,
        df: pd.DataFrame,
        numeric: list[str],
        categorical: list[str],
        bins: int = 50,
        sample_size: int = 2000,
        max_categories: int = 200,
    ) -> ProfileSpec:
        if bins < 2:
            raise ConfigError(
                f"The 'bins' parameter of ProfileSpec must be at least 2. Got {bins!r} instead."
            )
        edges: dict[str, np.ndarray] = {}
        for name in numeric:
            values = pd.to_numeric(df[name], errors="coerce").to_numpy(dtype="float64")
            values = values[np.isfinite(values)]
            if values.size == 0:
                edges[name] = np.array([0.0, 1.0])
                continue
            qs = np.unique(np.quantile(values, np.linspace(0.0, 1.0, bins + 1)))
            qs[-1] = np.nextafter(qs[-1], np.inf)  # the reference maximum falls inside, not overflow
            if qs.size == 1:
                qs = np.array([qs[0], np.nextafter(qs[0], np.inf)])
            edges[name] = qs
        cats: dict[str, list[str]] = {}
        for name in categorical:
            counts = df[name].dropna().astype(str).value_counts()
            cats[name] = sorted(counts.index[:max_categories].tolist())
        return cls(numeric=edges, categorical=cats, sample_size=sample_size)

    @property
    def columns(self) -> list[str]:
        return [*self.numeric, *self.categorical]

    def to_dict(self) -> dict[str, Any]:
        return {
            "numeric": {k: v.tolist() for k, v in self.numeric.items()},
            "categorical": self.categorical,
            "sample_size": self.sample_size,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProfileSpec:
        return cls(
            numeric={k: np.asarray(v, dtype="float64") for k, v in data["numeric"].items()},
            categorical={k: list(v) for k, v in data["categorical"].items()},
            sample_size=int(data["sample_size"]),
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ProfileSpec):
            return NotImplemented
        return (
            self.categorical == other.categorical
            and self.sample_size == other.sample_size
            and self.numeric.keys() == other.numeric.keys()
            and all(np.array_equal(v, other.numeric[k]) for k, v in self.numeric.items())
        )

    __hash__ = None  # type: ignore[assignment]


@dataclass
class NumericSummary:
    count: int
    missing: int
    mean: float
    m2: float
    min: float
    max: float
    hist: np.ndarray

    @property
    def variance(self) -> float:
        return self.m2 / (self.count - 1) if self.count > 1 else 0.0

    @classmethod
    def of(cls, values: np.ndarray, edges: np.ndarray) -> NumericSummary:
        finite = np.isfinite(values)
        x = values[finite]
        n = int(x.size)
        hist = np.bincount(np.searchsorted(edges, x, side="right"), minlength=edges.size + 1)
        mean = float(x.mean()) if n else 0.0
        return cls(
            count=n,
            missing=int(values.size - n),
            mean=mean,
            m2=float(((x - mean) ** 2).sum()) if n else 0.0,
            min=float(x.min()) if n else float("inf"),
            max=float(x.max()) if n else float("-inf"),
            hist=hist.astype("int64"),
        )

    def merge(self, other: NumericSummary) -> NumericSummary:
        n = self.count + other.count
        if n == 0:
            mean, m2 = 0.0, 0.0
        else:
            delta = other.mean - self.mean
            mean = self.mean + delta * other.count / n
            m2 = self.m2 + other.m2 + delta * delta * self.count * other.count / n
        return NumericSummary(
            count=n,
            missing=self.missing + other.missing,
            mean=mean,
            m2=m2,
            min=min(self.min, other.min),
            max=max(self.max, other.max),
            hist=self.hist + other.hist,
        )


@dataclass
class CategoricalSummary:
    missing: int
    counts: np.ndarray  # one per spec category, then "other" (values unseen in the reference)

    @property
    def count(self) -> int:
        return int(self.counts.sum())

    @classmethod
    def of(cls, values: pd.Series, categories: list[str]) -> CategoricalSummary:
        present = values.dropna().astype(str)
        codes = pd.Index(categories).get_indexer(present)  # -1 for values unseen in the reference
        codes = np.where(codes < 0, len(categories), codes)
        counts = np.bincount(codes, minlength=len(categories) + 1).astype("int64")
        return cls(missing=int(values.size - present.size), counts=counts)

    def merge(self, other: CategoricalSummary) -> CategoricalSummary:
        return CategoricalSummary(missing=self.missing + other.missing, counts=self.counts + other.counts)


@dataclass
class Profile:
    """A summary of some rows against a :class:`ProfileSpec`; merges exactly with another."""

    spec: ProfileSpec
    n: int = 0
    numeric: dict[str, NumericSummary] = field(default_factory=dict)
    categorical: dict[str, CategoricalSummary] = field(default_factory=dict)
    sample_keys: np.ndarray = field(default_factory=lambda: np.empty(0))
    sample: pd.DataFrame = field(default_factory=pd.DataFrame)

    @classmethod
    def from_frame(cls, spec: ProfileSpec, df: pd.DataFrame, keys: np.ndarray | None = None) -> Profile:
        """Summarise ``df``. ``keys`` (uniform in [0, 1)) pick the sample; default: a row hash."""
        if spec is None:
            raise NotFittedError("Profile.from_frame needs a fitted ProfileSpec; call ProfileSpec.fit first.")
        missing = [c for c in spec.columns if c not in df.columns]
        if missing:
            raise ConfigError(f"The frame to profile must have every column of the spec. Missing {missing}.")
        numeric = {
            name: NumericSummary.of(pd.to_numeric(df[name], errors="coerce").to_numpy("float64"), edges)
            for name, edges in spec.numeric.items()
        }
        categorical = {name: CategoricalSummary.of(df[name], cats) for name, cats in spec.categorical.items()}
        if keys is None:
            hashed = pd.util.hash_pandas_object(df[spec.columns], index=False).to_numpy()
            keys = hashed.astype("float64") / _HASH_SCALE
        take = np.argsort(keys, kind="stable")[: spec.sample_size]
        sample = df[spec.columns].iloc[take].reset_index(drop=True)
        return cls(spec, len(df), numeric, categorical, np.asarray(keys)[take], sample)

    def merge(self, other: Profile) -> Profile:
        if self.spec != other.spec:
            raise ConfigError("Profiles can merge only when built from the same ProfileSpec.")
        keys = np.concatenate([self.sample_keys, other.sample_keys])
        rows = pd.concat([self.sample, other.sample], ignore_index=True)
        take = np.argsort(keys, kind="stable")[: self.spec.sample_size]
        return Profile(
            self.spec,
            self.n + other.n,
            {k: v.merge(other.numeric[k]) for k, v in self.numeric.items()},
            {k: v.merge(other.categorical[k]) for k, v in self.categorical.items()},
            keys[take],
            rows.iloc[take].reset_index(drop=True),
        )

    # -- serialisation ---------------------------------------------------------------------
    def to_dict(self, include_spec: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {
            "n": self.n,
            "numeric": {
                k: {
                    "count": v.count,
                    "missing": v.missing,
                    "mean": v.mean,
                    "m2": v.m2,
                    "min": v.min if np.isfinite(v.min) else None,
                    "max": v.max if np.isfinite(v.max) else None,
                    "hist": v.hist.tolist(),
                }
                for k, v in self.numeric.items()
            },
            "categorical": {
                k: {"missing": v.missing, "counts": v.counts.tolist()} for k, v in self.categorical.items()
            },
            "sample_keys": self.sample_keys.tolist(),
            "sample": self.sample.astype(object).where(self.sample.notna(), None).to_dict(orient="list"),
        }
        if include_spec:
            data["spec"] = self.spec.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], spec: ProfileSpec | None = None) -> Profile:
        spec = spec or ProfileSpec.from_dict(data["spec"])
        numeric = {
            k: NumericSummary(
                count=v["count"],
                missing=v["missing"],
                mean=v["mean"],
                m2=v["m2"],
                min=float("inf") if v["min"] is None else v["min"],
                max=float("-inf") if v["max"] is None else v["max"],
                hist=np.asarray(v["hist"], dtype="int64"),
            )
            for k, v in data["numeric"].items()
        }
        categorical = {
            k: CategoricalSummary(missing=v["missing"], counts=np.asarray(v["counts"], dtype="int64"))
            for k, v in data["categorical"].items()
        }
        sample = pd.DataFrame(data["sample"], columns=spec.columns)
        for name in spec.numeric:
            sample[name] = pd.to_numeric(sample[name], errors="coerce").astype("float64")
        return cls(
            spec,
            int(data["n"]),
            numeric,
            categorical,
            np.asarray(data["sample_keys"], dtype="float64"),
            sample,
        )
