"""Drift-report speed: driftloop (profile + compare against a pre-built reference profile) and
the peers, on the same synthetic data, in the same run.

    python benchmarks/drift_speed.py [--sizes 10000,100000,1000000,10000000]

Prints, per size: seconds (from an untraced run), peak extra memory (tracemalloc, from a
second run of the same call), how many of the 7 drifted columns were flagged
and how many of the 18 undrifted ones (false alarms). Peers run when installed
(``pip install -r benchmarks/requirements-peers.txt``); the per-column scipy baseline always runs
(up to 1M rows). Data generation is not timed; 10M rows are profiled in 1M-row chunks and merged.
"""

from __future__ import annotations

import argparse
import os
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
from _data import CATEGORICAL, DRIFTED, NUMERIC, chunks, frame
from scipy import stats

from driftloop import Profile, ProfileSpec
from driftloop.drift import compare

REFERENCE_ROWS = 100_000
os.environ.setdefault("NML_DISABLE_USAGE_LOGGING", "1")  # NannyML phones home otherwise


def measure(fn: Callable[[], set[str]]) -> tuple[float, float, set[str]]:
    """Seconds from an untraced run (tracemalloc slows allocation-heavy code several-fold), then
    peak traced memory from a second, traced run of the same call."""
    t = time.perf_counter()
    flagged = fn()
    seconds = time.perf_counter() - t
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return seconds, peak, flagged


def driftloop_run(reference: Profile, n: int) -> tuple[float, float, set[str]]:
    """Profile the current data chunk by chunk (generation excluded) and compare: timed untraced,
    then once more traced for the peak memory of a chunk's profiling."""

    def one_pass(trace: bool) -> tuple[float, float, set[str]]:
        total = peak = 0.0
        merged: Profile | None = None
        for chunk in chunks(n, drift=True, seed=2):
            if trace:
                tracemalloc.start()
            t = time.perf_counter()
            profile = Profile.from_frame(reference.spec, chunk)
            merged = profile if merged is None else merged.merge(profile)
            total += time.perf_counter() - t
            if trace:
                peak = max(peak, tracemalloc.get_traced_memory()[1] / 2**20)
                tracemalloc.stop()
        assert merged is not None
        t = time.perf_counter()
        report = compare(reference, merged)
        total += time.perf_counter() - t
        return total, peak, set(report.drifted)

    seconds, _, flagged = one_pass(trace=False)
    _, peak, _ = one_pass(trace=True)
    return seconds, peak, flagged


def scipy_baseline(ref: Any, cur: Any) -> set[str]:
    """Per-column two-sample KS and chi-square at p < 0.05 (what many teams write by hand)."""
    flagged = set()
    for c in NUMERIC:
        if stats.ks_2samp(ref[c].to_numpy(), cur[c].to_numpy()).pvalue < 0.05:
            flagged.add(c)
    for c in CATEGORICAL:
        a, b = ref[c].value_counts(), cur[c].value_counts()
        table = np.vstack(
            [a.reindex(a.index.union(b.index), fill_value=0), b.reindex(a.index.union(b.index), fill_value=0)]
        )
        if stats.chi2_contingency(table).pvalue < 0.05:
            flagged.add(c)
    return flagged


def evidently_run(ref: Any, cur: Any) -> set[str]:  # pragma: no cover - optional peer
    """Evidently's default DataDriftPreset: each column's method and threshold as it chooses them
    (a distance such as normed Wasserstein is drifted above its threshold, a p-value below it)."""
    from evidently import Report
    from evidently.presets import DataDriftPreset

    result = Report([DataDriftPreset()]).run(reference_data=ref, current_data=cur).dict()
    flagged = set()
    for metric in result["metrics"]:
        config = metric.get("config", {})
        if not str(config.get("type", "")).endswith("ValueDrift"):
            continue
        method = str(config.get("method", "")).lower()
        is_p_value = "p_value" in method or "test" in method or "chi" in method or "k-s" in method
        value, threshold = float(metric["value"]), float(config["threshold"])
        if (value < threshold) if is_p_value else (value >= threshold):
            flagged.add(config["column"])
    return flagged


def nannyml_run(ref: Any, cur: Any) -> set[str]:  # pragma: no cover - optional peer
    import nannyml as nml

    calc = nml.UnivariateDriftCalculator(
        column_names=[*NUMERIC, *CATEGORICAL],
        chunk_number=1,
        continuous_methods=["kolmogorov_smirnov"],
        categorical_methods=["chi2"],
    )
    calc.fit(ref)
    out = calc.calculate(cur).filter(period="analysis").to_df()
    flagged = set()
    for c in [*NUMERIC, *CATEGORICAL]:
        method = "kolmogorov_smirnov" if c in NUMERIC else "chi2"
        if bool(out[(c, method, "alert")].iloc[-1]):
            flagged.add(c)
    return flagged


def alibi_run(ref: Any, cur: Any) -> set[str]:  # pragma: no cover - optional peer
    from alibi_detect.cd import TabularDrift

    cols = [*NUMERIC, *CATEGORICAL]
    ref_x = ref[cols].copy()
    cur_x = cur[cols].copy()
    cats = {}
    for i, c in enumerate(CATEGORICAL, start=len(NUMERIC)):
        levels = sorted(set(ref_x[c]) | set(cur_x[c]))
        code = {v: k for k, v in enumerate(levels)}
        ref_x[c] = ref_x[c].map(code)
        cur_x[c] = cur_x[c].map(code)
        cats[i] = None
    detector = TabularDrift(ref_x.to_numpy(dtype="float64"), p_val=0.05, categories_per_feature=cats)
    pred = detector.predict(cur_x.to_numpy(dtype="float64"), drift_type="feature")
    return {c for c, d in zip(cols, pred["data"]["is_drift"], strict=True) if d}


PEERS: dict[str, Callable[[Any, Any], set[str]]] = {
    "evidently": evidently_run,
    "nannyml": nannyml_run,
    "alibi-detect": alibi_run,
}


def verdict(flagged: set[str]) -> str:
    hits = len(flagged & DRIFTED)
    false = len(flagged - DRIFTED)
    return f"{hits}/7 drifted flagged, {false}/18 false alarms"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,100000,1000000,10000000")
    parser.add_argument("--peer-max", type=int, default=1_000_000, help="largest size given to the peers")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    ref_df = frame(REFERENCE_ROWS, drift=False, seed=1)
    t = time.perf_counter()
    spec = ProfileSpec.fit(ref_df, NUMERIC, CATEGORICAL)
    reference = Profile.from_frame(spec, ref_df)
    print(
        f"reference profile of {REFERENCE_ROWS:,} rows built once in {time.perf_counter() - t:.2f}s "
        f"({len(NUMERIC)} numeric, {len(CATEGORICAL)} categorical columns)\n"
    )
    print(f"{'tool':<14}{'rows':>12}{'seconds':>10}{'peak MiB':>10}  verdict")
    installed = {}
    for name in PEERS:
        try:
            __import__({"alibi-detect": "alibi_detect"}.get(name, name))
            installed[name] = PEERS[name]
        except ImportError:
            print(f"{name:<14}{'':>32}  not installed (pip install -r benchmarks/requirements-peers.txt)")
    for n in sizes:
        seconds, peak, flagged = driftloop_run(reference, n)
        print(f"{'driftloop':<14}{n:>12,}{seconds:>10.3f}{peak:>10.0f}  {verdict(flagged)}")
        if n > args.peer_max:
            continue
        cur_df = frame(n, drift=True, seed=2)
        seconds, peak, flagged = measure(lambda cur_df=cur_df: scipy_baseline(ref_df, cur_df))
        print(f"{'scipy per-col':<14}{n:>12,}{seconds:>10.3f}{peak:>10.0f}  {verdict(flagged)}")
        for name, run in installed.items():
            try:
                seconds, peak, flagged = measure(lambda run=run, cur_df=cur_df: run(ref_df, cur_df))
                print(f"{name:<14}{n:>12,}{seconds:>10.3f}{peak:>10.0f}  {verdict(flagged)}")
            except Exception as exc:
                print(f"{name:<14}{n:>12,}  failed: {type(exc).__name__}: {str(exc)[:80]}")


if __name__ == "__main__":
    main()
