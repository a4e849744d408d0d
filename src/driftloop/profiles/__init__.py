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

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from driftloop.exceptions import ConfigError, NotFittedError

__all__ = ["CategoricalSummary", "NumericSummary", "Profile", "ProfileSpec", "rarity", "shares"]

_HASH_SCALE = float(2**64)
_PARALLEL_ROWS = 100_000


def _floats(column: pd.Series) -> np.ndarray:
    if column.dtype.kind == "f":
        return np.asarray(column.to_numpy("float64", copy=False))
    return np.asarray(pd.to_numeric(column, errors="coerce").to_numpy("float64"))


_BINNERS: dict[bytes, tuple[float, float, np.ndarray, np.ndarray]] = {}
_CELLS = 8192
_MAX_BINNERS = 512  # about 70 KB each; a long-running server sees new edges with each new reference


def _bin(edges: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``searchsorted(edges, x, side="right")``, exactly, about five times faster on large arrays.

    A uniform grid of cells over the edges' span is precomputed once per edge array; a value in
    a cell that no edge touches (nor its neighbours', against rounding) takes its bin from the
    table; the rest, typically a few percent, are binary-searched.
    """
    if x.size < 50_000 or not np.isfinite(edges).all() or edges[-1] <= edges[0]:
        return np.searchsorted(edges, x, side="right")
    key = edges.tobytes()
    binner = _BINNERS.get(key)
    if binner is None:
        lo, hi = float(edges[0]), float(edges[-1])
        scale = _CELLS / (hi - lo)
        bounds = lo + np.arange(_CELLS + 1) / scale
        left = np.searchsorted(edges, bounds[:-1], side="right")
        right = np.searchsorted(edges, bounds[1:], side="right")
        pure = left == right
        pure[1:] &= pure[:-1].copy()
        pure[:-1] &= pure[1:].copy()
        # cell -1 (below the first edge) and cell _CELLS (at or above the last) are impure: searched
        table = np.concatenate([[0], left, [edges.size]]).astype(np.int64)
        ok = np.concatenate([[False], pure, [False]])
        if len(_BINNERS) >= _MAX_BINNERS:
            _BINNERS.clear()
        binner = _BINNERS.setdefault(key, (lo, scale, table, ok))
    lo, scale, table, ok = binner
    cell = np.floor(np.clip((x - lo) * scale, -1.0, float(_CELLS))).astype(np.int64) + 1
    out = table[cell]
    unsure = np.flatnonzero(~ok[cell])
    if unsure.size:
        out[unsure] = np.searchsorted(edges, x[unsure], side="right")
    return out


def _bottom_k(keys: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` smallest keys, ordered as a stable argsort would order them."""
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    if keys.size <= 4 * k:
        return np.argsort(keys, kind="stable")[:k]
    kth = np.partition(keys, k - 1)[k - 1]
    candidates = np.flatnonzero(keys <= kth)  # every tie at the boundary, in position order
    return candidates[np.argsort(keys[candidates], kind="stable")[:k]]


def _row_keys(df: pd.DataFrame, spec: ProfileSpec) -> np.ndarray:
    """A uniform [0, 1) key per row from its content, so equal rows always get equal keys.

    Numeric columns are mixed bit-wise (fast, vectorised); without numeric columns the
    categorical values are hashed by pandas.
    """
    if not spec.numeric:
        return np.asarray(
            pd.util.hash_pandas_object(df[spec.columns], index=False).to_numpy().astype("float64")
            / _HASH_SCALE
        )
    h = np.full(len(df), 0x9E3779B97F4A7C15, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for name in list(spec.numeric)[:4]:  # four continuous columns carry ample entropy
            bits = np.nan_to_num(_floats(df[name]), nan=-1.2345e300).view(np.uint64)
            h ^= bits + np.uint64(0x9E3779B97F4A7C15) + (h << np.uint64(6)) + (h >> np.uint64(2))
        h ^= h >> np.uint64(33)
        h *= np.uint64(0xFF51AFD7ED558CCD)
        h ^= h >> np.uint64(33)
        h *= np.uint64(0xC4CEB9FE1A85EC53)
        h ^= h >> np.uint64(33)
    return (h >> np.uint64(11)).astype("float64") / float(2**53)


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
        x = values if finite.all() else values[finite]
        n = int(x.size)
        hist = np.bincount(_bin(edges, x), minlength=edges.size + 1)
        mean = float(x.mean()) if n else 0.0
        return cls(
            count=n,
            missing=int(values.size - n),
            mean=mean,
            m2=float(x.var() * n) if n else 0.0,
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
        # hash each value once (factorize), then map the few distinct values to the spec's categories
        codes, uniques = pd.factorize(values, use_na_sentinel=True)
        present = codes >= 0
        per_unique = np.bincount(codes[present], minlength=len(uniques))
        slot = pd.Index(categories).get_indexer([str(u) for u in uniques])  # -1: unseen in the reference
        counts = np.bincount(
            np.where(slot < 0, len(categories), slot), weights=per_unique, minlength=len(categories) + 1
        ).astype("int64")
        return cls(missing=int(codes.size - present.sum()), counts=counts)

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
        jobs: list[tuple[str, Any]] = [
            *(
                (name, lambda name=name, e=edges: NumericSummary.of(_floats(df[name]), e))
                for name, edges in spec.numeric.items()
            ),
            *(
                (name, lambda name=name, c=cats: CategoricalSummary.of(df[name], c))
                for name, cats in spec.categorical.items()
            ),
        ]
        if keys is None and spec.sample_size:
            jobs.append(("__keys__", lambda: _row_keys(df, spec)))
        if len(df) >= _PARALLEL_ROWS and len(jobs) > 1:  # numpy and pandas release the GIL here
            with ThreadPoolExecutor(max_workers=min(len(jobs), os.cpu_count() or 1)) as pool:
                done = dict(zip([n for n, _ in jobs], pool.map(lambda job: job[1](), jobs), strict=True))
        else:
            done = {name: job() for name, job in jobs}
        numeric = {name: done[name] for name in spec.numeric}
        categorical = {name: done[name] for name in spec.categorical}
        if keys is None:
            keys = done.get("__keys__", np.zeros(len(df)))
        keys = np.asarray(keys, dtype="float64")
        take = _bottom_k(keys, spec.sample_size)
        sample = df[spec.columns].iloc[take].reset_index(drop=True)
        return cls(spec, len(df), numeric, categorical, keys[take], sample)

    def merge(self, other: Profile) -> Profile:
        if self.spec != other.spec:
            raise ConfigError("Profiles can merge only when built from the same ProfileSpec.")
        keys = np.concatenate([self.sample_keys, other.sample_keys])
        rows = pd.concat([self.sample, other.sample], ignore_index=True)
        take = _bottom_k(keys, self.spec.sample_size)
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


def shares(reference: Profile, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per profiled column, the share of ``reference`` rows whose value fell in the histogram bin
    (or category) each row's value falls in, with add-half smoothing so an empty bin or an
    unseen category is rare, not impossible. A missing value counts by the reference's missing
    share.

    >>> spec = ProfileSpec.fit(pd.DataFrame({"x": np.arange(100.0)}), numeric=["x"], categorical=[], bins=10)
    >>> ref = Profile.from_frame(spec, pd.DataFrame({"x": np.arange(100.0)}))
    >>> shares(ref, pd.DataFrame({"x": [50.0, 1000.0]}))["x"].round(3).tolist()
    [0.099, 0.005]
    """
    out: dict[str, np.ndarray] = {}
    for name, edges in reference.spec.numeric.items():
        if name not in frame or name not in reference.numeric:
            continue
        summary = reference.numeric[name]
        x = pd.to_numeric(frame[name], errors="coerce").to_numpy("float64")
        total = summary.count + summary.missing + 0.5 * (summary.hist.size + 1)
        counts = np.where(
            np.isfinite(x),
            summary.hist[np.clip(_bin(edges, np.nan_to_num(x)), 0, summary.hist.size - 1)],
            summary.missing,
        )
        out[name] = (counts + 0.5) / total
    for name, categories in reference.spec.categorical.items():
        if name not in frame or name not in reference.categorical:
            continue
        cat = reference.categorical[name]
        values = frame[name]
        slot = pd.Index(categories).get_indexer(values.astype(str))
        slot = np.where(slot < 0, len(categories), slot)
        counts = np.where(values.isna().to_numpy(), cat.missing, cat.counts[slot])
        total = cat.count + cat.missing + 0.5 * (cat.counts.size + 1)
        out[name] = (counts + 0.5) / total
    return out


def rarity(reference: Profile, frame: pd.DataFrame) -> np.ndarray:
    """Per row, how unusual it is against ``reference``: the largest, over the profiled columns,
    surprisal ``-log p`` of the share of reference rows in its value's bin or category
    (:func:`shares`).

    >>> spec = ProfileSpec.fit(pd.DataFrame({"x": np.arange(100.0)}), numeric=["x"], categorical=[], bins=10)
    >>> ref = Profile.from_frame(spec, pd.DataFrame({"x": np.arange(100.0)}))
    >>> scores = rarity(ref, pd.DataFrame({"x": [50.0, 1000.0]}))
    >>> bool(scores[1] > scores[0])
    True
    """
    out = np.zeros(len(frame))
    for share in shares(reference, frame).values():
        out = np.maximum(out, -np.log(share))
    return out
