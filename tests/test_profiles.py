"""Profiles merge exactly; statistics behave; serialisation round-trips."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftloop import ConfigError, NotFittedError, Profile, ProfileSpec
from driftloop.drift import benjamini_hochberg, compare, ks_binned, psi

REF = pd.DataFrame(
    {
        "x": np.random.default_rng(0).normal(size=2000),
        "c": np.random.default_rng(1).choice(["a", "b", "c"], 2000),
    }
)
SPEC = ProfileSpec.fit(REF, numeric=["x"], categorical=["c"], bins=20, sample_size=50)

frames = st.lists(
    st.tuples(
        st.one_of(st.floats(-5, 5, allow_nan=False), st.just(float("nan"))),
        st.sampled_from(["a", "b", "c", "zzz", None]),
    ),
    min_size=0,
    max_size=120,
).map(lambda rows: pd.DataFrame(rows, columns=["x", "c"]).astype({"x": "float64", "c": "object"}))


def assert_same(a: Profile, b: Profile) -> None:
    assert a.n == b.n
    for k in a.numeric:
        x, y = a.numeric[k], b.numeric[k]
        assert (x.count, x.missing) == (y.count, y.missing)
        assert np.array_equal(x.hist, y.hist)
        assert x.mean == pytest.approx(y.mean, abs=1e-9) and x.m2 == pytest.approx(y.m2, rel=1e-9, abs=1e-9)
        assert (x.min, x.max) == (y.min, y.max)
    for k in a.categorical:
        assert a.categorical[k].missing == b.categorical[k].missing
        assert np.array_equal(a.categorical[k].counts, b.categorical[k].counts)
    assert np.array_equal(a.sample_keys, b.sample_keys)
    pd.testing.assert_frame_equal(a.sample, b.sample, check_dtype=False)


@settings(max_examples=60, deadline=None)
@given(frames, frames)
def test_profile_of_union_equals_merge_of_profiles(a: pd.DataFrame, b: pd.DataFrame) -> None:
    whole = Profile.from_frame(SPEC, pd.concat([a, b], ignore_index=True))
    assert_same(whole, Profile.from_frame(SPEC, a).merge(Profile.from_frame(SPEC, b)))


@settings(max_examples=40, deadline=None)
@given(frames, frames, frames)
def test_merge_is_associative(a: pd.DataFrame, b: pd.DataFrame, c: pd.DataFrame) -> None:
    pa, pb, pc = (Profile.from_frame(SPEC, f) for f in (a, b, c))
    assert_same(pa.merge(pb).merge(pc), pa.merge(pb.merge(pc)))


@settings(max_examples=30, deadline=None)
@given(frames)
def test_serialisation_round_trips_through_json(a: pd.DataFrame) -> None:
    p = Profile.from_frame(SPEC, a)
    back = Profile.from_dict(json.loads(json.dumps(p.to_dict())))
    assert back.spec == SPEC
    assert_same(p, back)


def test_unseen_categories_and_out_of_range_values_are_counted() -> None:
    p = Profile.from_frame(SPEC, pd.DataFrame({"x": [100.0, -100.0, np.nan], "c": ["new", "a", None]}))
    assert p.categorical["c"].counts.tolist() == [1, 0, 0, 1] and p.categorical["c"].missing == 1
    hist = p.numeric["x"].hist
    assert hist[0] == 1 and hist[-1] == 1 and p.numeric["x"].missing == 1


def test_errors_name_the_problem() -> None:
    with pytest.raises(ConfigError, match="'bins' parameter of ProfileSpec must be at least 2. Got 1"):
        ProfileSpec.fit(REF, ["x"], [], bins=1)
    with pytest.raises(ConfigError, match="Missing \\['c'\\]"):
        Profile.from_frame(SPEC, pd.DataFrame({"x": [1.0]}))
    with pytest.raises(NotFittedError, match="call ProfileSpec.fit first"):
        Profile.from_frame(None, REF)  # type: ignore[arg-type]
    other = ProfileSpec.fit(REF, ["x"], [], bins=5)
    with pytest.raises(ConfigError, match="same ProfileSpec"):
        Profile.from_frame(SPEC, REF).merge(Profile.from_frame(other, REF))
    with pytest.raises(ConfigError, match="'fdr' parameter of compare must be between 0 and 1. Got 2"):
        compare(Profile.from_frame(SPEC, REF), Profile.from_frame(SPEC, REF), fdr=2)


def test_statistics_on_known_cases() -> None:
    same = np.array([100, 200, 300])
    assert psi(same, same) == 0.0
    d, p = ks_binned(np.array([1000, 0]), np.array([0, 1000]))
    assert d == 1.0 and p < 1e-100
    assert benjamini_hochberg(np.array([0.01, 0.04, 0.03, 0.2]), 0.05).tolist() == [True, False, False, False]
    # step-up: 0.04 <= 0.05 * 4/4 carries every smaller p-value with it
    assert benjamini_hochberg(np.array([0.04, 0.03, 0.02, 0.011]), 0.05).tolist() == [True, True, True, True]
    assert benjamini_hochberg(np.array([]), 0.05).tolist() == []


def test_large_samples_do_not_cry_wolf() -> None:
    rng = np.random.default_rng(3)
    ref = pd.DataFrame({"x": rng.normal(size=200_000), "c": rng.choice(["a", "b"], 200_000, p=[0.5, 0.5])})
    spec = ProfileSpec.fit(ref, ["x"], ["c"])
    cur = pd.DataFrame(
        {"x": rng.normal(0.005, size=200_000), "c": rng.choice(["a", "b"], 200_000, p=[0.503, 0.497])}
    )
    report = compare(Profile.from_frame(spec, ref), Profile.from_frame(spec, cur))
    # tiny, practically irrelevant shifts at large n: no flag even if a test would call them significant
    assert report.drifted == []
    assert all(c.n_current == 200_000 for c in report.columns)
