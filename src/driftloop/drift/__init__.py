"""Drift between a reference profile and a window profile, per column, with decisions.

A column is flagged when its test is significant after Benjamini–Hochberg across columns
**and** its effect size reaches a minimum (KS distance for numeric columns, L-infinity for
categorical ones), so huge windows do not cry wolf and small ones are not over-trusted.
Every verdict carries n, the statistic, the p-value and the threshold; a window small enough to
sit whole in its row sample (500 rows by default) is tested with the exact KS test on the rows
instead of the bins.
Missing-rate changes (with a Fisher test) and, for categories, the share of unseen values are
reported for every column.

>>> import numpy as np, pandas as pd
>>> from driftloop.profiles import Profile, ProfileSpec
>>> rng = np.random.default_rng(0)
>>> ref = pd.DataFrame({"x": rng.normal(size=5000)})
>>> spec = ProfileSpec.fit(ref, numeric=["x"], categorical=[])
>>> same = Profile.from_frame(spec, pd.DataFrame({"x": rng.normal(size=5000)}))
>>> moved = Profile.from_frame(spec, pd.DataFrame({"x": rng.normal(0.5, size=5000)}))
>>> reference = Profile.from_frame(spec, ref)
>>> compare(reference, same).drifted, compare(reference, moved).drifted
([], ['x'])
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats as sps

from driftloop.drift.stats import (
    benjamini_hochberg,
    chi_square,
    jensen_shannon,
    ks_binned,
    linf,
    psi,
    wasserstein_binned,
)
from driftloop.exceptions import ConfigError
from driftloop.profiles import Profile

__all__ = [
    "ColumnDrift",
    "DriftReport",
    "benjamini_hochberg",
    "chi_square",
    "compare",
    "jensen_shannon",
    "ks_binned",
    "linf",
    "psi",
    "wasserstein_binned",
]


@dataclass(frozen=True)
class ColumnDrift:
    """One column's verdict, with everything needed to judge it."""

    column: str
    kind: str
    n_reference: int
    n_current: int
    psi: float
    js: float
    effect: float  # KS distance (numeric) or L-infinity (categorical)
    effect_threshold: float
    p_value: float
    wasserstein: float | None
    missing_change: float  # the current missing rate minus the reference's
    drifted: bool
    method: str = "binned"  # "binned" (from the histograms) or "exact" (KS on the row samples)
    unseen_share: float | None = None  # categorical: share of values the reference never had
    missing_p_value: float | None = None  # two-proportion test of the missing rates

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class DriftReport:
    columns: list[ColumnDrift]

    @property
    def drifted(self) -> list[str]:
        return [c.column for c in self.columns if c.drifted]

    @property
    def share(self) -> float:
        return len(self.drifted) / len(self.columns) if self.columns else 0.0

    def __getitem__(self, column: str) -> ColumnDrift:
        for c in self.columns:
            if c.column == column:
                return c
        raise KeyError(column)


def compare(
    reference: Profile,
    current: Profile,
    *,
    fdr: float = 0.05,
    min_ks: float = 0.025,
    min_linf: float = 0.02,
    exact_max_rows: int = 500,
) -> DriftReport:
    """Compare every column of two profiles built from the same spec.

    Numeric columns of a window of at most ``exact_max_rows`` rows (fewer than about ten per
    bin, where binned CDFs are coarse) are tested with the exact two-sample KS test on the row
    samples; larger windows with KS from the binned CDFs.
    """
    for name, value in (("fdr", fdr), ("min_ks", min_ks), ("min_linf", min_linf)):
        if not 0 < value < 1:
            raise ConfigError(
                f"The '{name}' parameter of compare must be between 0 and 1. Got {value!r} instead."
            )
    rows: list[dict[str, object]] = []
    # a small window (a few rows per bin), whole in its row sample, gets the exact KS test on the rows
    exact = 0 < current.n <= min(len(current.sample), exact_max_rows) and len(reference.sample) >= 20
    for name, ref in reference.numeric.items():
        cur = current.numeric[name]
        method = "binned"
        d, p = ks_binned(ref.hist, cur.hist)
        if exact and name in current.sample and name in reference.sample:
            a = reference.sample[name].to_numpy("float64", na_value=np.nan)
            b = current.sample[name].to_numpy("float64", na_value=np.nan)
            a, b = a[np.isfinite(a)], b[np.isfinite(b)]
            if a.size >= 20 and b.size >= 5:
                result = sps.ks_2samp(a, b)
                d, p, method = float(result.statistic), float(result.pvalue), "exact"
        scale = float(np.sqrt(ref.variance)) or 1.0
        lo, hi = min(ref.min, cur.min), max(ref.max, cur.max)
        rows.append(
            dict(
                column=name,
                kind="numeric",
                n_reference=ref.count,
                n_current=cur.count,
                psi=psi(ref.hist, cur.hist),
                js=jensen_shannon(ref.hist, cur.hist),
                effect=d,
                effect_threshold=min_ks,
                p_value=p,
                wasserstein=wasserstein_binned(
                    ref.hist, cur.hist, reference.spec.numeric[name], lo, hi, scale
                ),
                missing_change=_missing_rate(cur.missing, cur.count) - _missing_rate(ref.missing, ref.count),
                missing_p_value=_missing_test(ref.missing, ref.count, cur.missing, cur.count),
                method=method,
            )
        )
    for name, refc in reference.categorical.items():
        curc = current.categorical[name]
        _, p = chi_square(refc.counts, curc.counts)
        rows.append(
            dict(
                column=name,
                kind="categorical",
                n_reference=refc.count,
                n_current=curc.count,
                psi=psi(refc.counts, curc.counts),
                js=jensen_shannon(refc.counts, curc.counts),
                effect=linf(refc.counts, curc.counts),
                effect_threshold=min_linf,
                p_value=p,
                wasserstein=None,
                missing_change=_missing_rate(curc.missing, curc.count)
                - _missing_rate(refc.missing, refc.count),
                missing_p_value=_missing_test(refc.missing, refc.count, curc.missing, curc.count),
                unseen_share=float(curc.counts[-1] / curc.count) if curc.count else 0.0,
            )
        )
    significant = benjamini_hochberg(np.array([r["p_value"] for r in rows], dtype="float64"), fdr)
    columns = [
        ColumnDrift(**r, drifted=bool(sig and float(r["effect"]) >= float(r["effect_threshold"])))  # type: ignore[arg-type]
        for r, sig in zip(rows, significant, strict=True)
    ]
    return DriftReport(columns)


def _missing_test(ref_missing: int, ref_present: int, cur_missing: int, cur_present: int) -> float | None:
    """Two-sided p-value that the missing rates differ (Fisher's exact test on the 2x2 counts)."""
    if ref_missing + cur_missing == 0:
        return 1.0
    if min(ref_missing + ref_present, cur_missing + cur_present) == 0:
        return None
    table = [[ref_missing, ref_present], [cur_missing, cur_present]]
    if max(ref_missing + ref_present, cur_missing + cur_present) > 100_000:  # Fisher gets slow
        return float(sps.chi2_contingency(table)[1])
    return float(sps.fisher_exact(table)[1])


def _missing_rate(missing: int, present: int) -> float:
    total = missing + present
    return missing / total if total else 0.0
