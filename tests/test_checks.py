"""One shared check suite over every detector and statistic found through the public API."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from driftloop import ConfigError
from driftloop.drift import stats
from driftloop.drift.detectors import DETECTORS, make_detector

STREAM = np.concatenate(
    [np.random.default_rng(0).normal(0, 1, 400), np.random.default_rng(1).normal(2, 1, 400)]
)
SENTENCE = re.compile(r"^The '\w+' parameter of \w+ must be .+\. Got .+ instead\.$")
BAD = {
    "page_hinkley": {"threshold": -1},
    "cusum": {"h": 0},
    "adwin": {"delta": 2},
    "ewma": {"lam": 0},
}


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_detector_clone_is_fresh_and_idempotent(name: str) -> None:
    d = make_detector(name)
    for x in STREAM[:300]:
        d.update(x)
    clone = d.clone()
    assert repr(clone) == repr(d) == repr(clone.clone())
    assert clone.n == 0 and not clone.drift_detected


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_detector_bad_parameters_raise_the_standard_sentence(name: str) -> None:
    with pytest.raises(ConfigError) as info:
        make_detector(name, **BAD[name])
    assert SENTENCE.match(str(info.value)), str(info.value)


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_detector_serialisation_round_trips_mid_stream(name: str) -> None:
    d = make_detector(name)
    for x in STREAM[:350]:
        d.update(x)
    back = type(d).from_dict(json.loads(json.dumps(d.to_dict())))
    rest_a = [d.update(x).drift_detected for x in STREAM[350:]]
    rest_b = [back.update(x).drift_detected for x in STREAM[350:]]
    assert rest_a == rest_b


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_detector_finds_the_change_and_not_before(name: str) -> None:
    d = make_detector(name)
    hits = [i for i, x in enumerate(STREAM) if d.update(x).drift_detected]
    assert hits and 400 <= hits[0] < 480, hits[:3]


def test_unknown_detector_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"\['adwin', 'cusum', 'ewma', 'page_hinkley'\]"):
        make_detector("magic")


BINNED = {
    "psi": stats.psi,
    "jensen_shannon": stats.jensen_shannon,
    "linf": stats.linf,
    "ks_binned": lambda a, b: stats.ks_binned(a, b)[0],
    "chi_square": lambda a, b: stats.chi_square(a, b)[0],
}


@pytest.mark.parametrize("name", sorted(BINNED))
def test_statistics_are_zero_on_identical_and_grow_with_change(name: str) -> None:
    f = BINNED[name]
    ref = np.array([100, 300, 400, 200])
    assert f(ref, ref * 3) == pytest.approx(0.0, abs=1e-12), "scale-free: proportions, not counts"
    small, large = np.array([110, 290, 400, 200]), np.array([300, 300, 200, 200])
    assert 0 < f(ref, small) < f(ref, large)


@pytest.mark.parametrize("name", sorted(BINNED))
def test_statistics_handle_empty_sides(name: str) -> None:
    value = BINNED[name](np.array([0, 0, 0]), np.array([1, 2, 3]))
    assert np.isfinite(value)


def test_alert_rules_can_use_a_detector() -> None:
    from driftloop.alerts import should_fire
    from driftloop.config import AlertRuleSettings

    rule = AlertRuleSettings.model_validate(
        {"name": "conf", "metric": "mean_confidence", "detector": "cusum", "detector_params": {"warmup": 20}}
    )
    values = [0.9 + 0.01 * np.sin(i) for i in range(40)] + [0.7] * 10
    series = [(i, v, 100) for i, v in enumerate(values)]
    fired = [should_fire(rule, series[: i + 1], None, 0.0)[0] for i in range(len(series))]
    assert not any(fired[:40]) and any(fired[40:])
    with pytest.raises(ConfigError, match="needs a 'threshold'"):
        from driftloop import Settings

        Settings.from_dict(
            {
                "project": {"name": "m", "target": "y", "classes": ["a", "b"]},
                "features": {"x": {"type": "numeric"}},
                "data": {"train": "t.csv"},
                "trainer": {"entrypoint": "t:f"},
                "alerts": [{"name": "r", "metric": "accuracy"}],
            }
        )


def test_cbpe_round_trips_and_refuses_unfitted_use() -> None:
    from driftloop import NotFittedError
    from driftloop.drift.cbpe import CBPE

    rng = np.random.default_rng(0)
    conf = rng.uniform(0.5, 1, 2000)
    cbpe = CBPE().fit(conf, rng.random(2000) < conf)
    back = CBPE.from_dict(json.loads(json.dumps(cbpe.to_dict())))
    assert back.estimate(conf) == cbpe.estimate(conf)
    assert 0.7 < cbpe.estimate(conf) < 0.8  # mean of uniform(0.5, 1)
    with pytest.raises(NotFittedError, match="call CBPE.fit"):
        CBPE().estimate(conf)


def test_domain_classifier_reports_n_and_refuses_bad_parameters() -> None:
    import pandas as pd

    from driftloop.drift.multivariate import domain_classifier

    rng = np.random.default_rng(5)
    a = pd.DataFrame({"x": rng.normal(size=300), "c": rng.choice(["p", "q"], 300)})
    b = pd.DataFrame({"x": rng.normal(size=300), "c": rng.choice(["p", "q"], 300, p=[0.1, 0.9])})
    result = domain_classifier(a, b)
    assert result.drifted and result.low <= result.auc <= result.high and result.n_current == 300
    tiny = domain_classifier(a.iloc[:3], b.iloc[:3])
    assert not tiny.drifted and np.isnan(tiny.auc), "too few rows: no verdict rather than a guess"
    with pytest.raises(ConfigError, match="'min_effect' parameter of domain_classifier"):
        domain_classifier(a, b, min_effect=0.7)


def test_cbpe_f1_round_trips_and_tracks_a_three_class_model() -> None:
    from sklearn.metrics import f1_score

    from driftloop import NotFittedError
    from driftloop.drift.cbpe import CBPE

    rng = np.random.default_rng(2)
    classes = ["a", "b", "c"]
    n = 30_000
    pred = rng.choice(classes, n, p=[0.5, 0.3, 0.2])
    conf = rng.uniform(0.4, 1.0, n)
    right = rng.random(n) < conf
    # errors of "a" are mostly "b"; of "b" and "c" mostly "a": structure CBPE must learn
    wrong_to = {"a": ["b", "b", "b", "c"], "b": ["a", "a", "c"], "c": ["a", "a", "a", "b"]}
    true = np.array([p if r else rng.choice(wrong_to[p]) for p, r in zip(pred, right, strict=True)])
    half = n // 2
    cbpe = CBPE().fit(conf[:half], right[:half], predicted=pred[:half], actual=true[:half], classes=classes)
    back = CBPE.from_dict(json.loads(json.dumps(cbpe.to_dict())))
    # a shifted window: only confident predictions of "a" and "c"
    window = np.flatnonzero((np.arange(n) >= half) & (pred != "b") & (conf > 0.7))
    truth = f1_score(true[window], pred[window], labels=classes, average="macro", zero_division=0)
    assert back.estimate_f1(conf[window], pred[window]) == cbpe.estimate_f1(conf[window], pred[window])
    assert abs(cbpe.estimate_f1(conf[window], pred[window]) - truth) < 0.02
    with pytest.raises(NotFittedError, match="error structure"):
        CBPE().fit(conf, right).estimate_f1(conf, pred)


def test_mmd_holds_its_level_finds_a_shift_and_refuses_bad_parameters() -> None:
    import pandas as pd

    from driftloop.drift.multivariate import mmd

    rng = np.random.default_rng(8)
    reference = pd.DataFrame({"x": rng.normal(size=1000), "c": rng.choice(["p", "q", "r"], 1000)})
    same = [
        mmd(reference, pd.DataFrame({"x": rng.normal(size=60), "c": rng.choice(["p", "q", "r"], 60)}), seed=s)
        for s in range(60)
    ]
    assert sum(r.drifted for r in same) <= 8, "about 5 % false alarms at alpha 0.05, not more"
    shifted = pd.DataFrame({"x": rng.normal(0.8, size=60), "c": rng.choice(["p", "q", "r"], 60)})
    result = mmd(reference, shifted)
    assert result.drifted and result.n_reference == 500 and result.n_current == 60
    assert mmd(reference, shifted, seed=1).p_value < 0.05, "the verdict does not hang on the seed"
    assert np.isnan(mmd(reference, shifted.iloc[:3]).p_value), "too few rows: no verdict"
    for kwargs, name in (({"alpha": 1.5}, "alpha"), ({"n_permutations": 5}, "n_permutations")):
        with pytest.raises(ConfigError, match=rf"^The '{name}' parameter of mmd must be"):
            mmd(reference, shifted, **kwargs)  # type: ignore[arg-type]


def test_small_windows_get_exact_ks_and_every_column_reports_missing_and_unseen() -> None:
    import pandas as pd
    from scipy import stats

    from driftloop.drift import compare
    from driftloop.profiles import Profile, ProfileSpec

    rng = np.random.default_rng(4)
    ref_df = pd.DataFrame({"x": rng.normal(size=1500), "c": rng.choice(["p", "q"], 1500)})
    spec = ProfileSpec.fit(ref_df, ["x"], ["c"])
    reference = Profile.from_frame(spec, ref_df)
    small_df = pd.DataFrame({"x": rng.normal(0.3, size=200), "c": rng.choice(["p", "q", "new"], 200)})
    small_df.loc[:39, "x"] = np.nan  # 20 % missing, against none in the reference
    small = compare(reference, Profile.from_frame(spec, small_df))
    x, c = small["x"], small["c"]
    assert x.method == "exact" and x.n_current == 160
    expected = stats.ks_2samp(ref_df["x"], small_df["x"].dropna())
    assert x.effect == pytest.approx(expected.statistic) and x.p_value == pytest.approx(expected.pvalue)
    assert x.missing_change == pytest.approx(0.2)
    assert x.missing_p_value is not None and x.missing_p_value < 1e-6
    assert c.unseen_share == pytest.approx((small_df["c"] == "new").mean())
    big_df = pd.DataFrame({"x": rng.normal(size=5000), "c": rng.choice(["p", "q"], 5000)})
    assert compare(reference, Profile.from_frame(spec, big_df))["x"].method == "binned"


def test_threshold_rules_fire_once_per_streak_unless_asked_to_repeat() -> None:
    from driftloop.alerts import should_fire
    from driftloop.config import AlertRuleSettings

    series = [(i, 0.5, 100) for i in range(1, 11)]  # ten breaching windows in a row
    once = AlertRuleSettings(name="r", metric="accuracy", op="<", threshold=0.8)
    again = AlertRuleSettings(name="r", metric="accuracy", op="<", threshold=0.8, repeat_after=3)

    def fires(rule: AlertRuleSettings) -> list[int]:
        last: dict[str, object] | None = None
        out = []
        for i in range(1, 11):
            if should_fire(rule, series[:i], last, 0.0)[0]:
                out.append(i)
                last = {"window_id": i, "ts": 0.0}
        return out

    assert fires(once) == [1]
    assert fires(again) == [1, 4, 7, 10]


def test_cbpe_takes_probabilities_as_users_hold_them_and_refuses_the_rest() -> None:
    from driftloop.drift.cbpe import CBPE

    rng = np.random.default_rng(7)
    positive = rng.uniform(0, 1, 20_000)
    y = rng.random(20_000) < positive
    confidence = np.maximum(positive, 1 - positive)
    realised = float(np.mean((positive > 0.5) == y))
    for labels, classes in (
        (y.astype(int), None),
        (y.astype(float), [0, 1]),
        (np.where(y, "yes", "no"), ["no", "yes"]),
    ):
        cbpe = CBPE.from_probabilities(positive, labels, classes)
        assert abs(cbpe.estimate(confidence) - realised) < 0.01, (labels.dtype, cbpe.estimate(confidence))
        assert (
            cbpe.estimate_f1(confidence, np.where(positive > 0.5, cbpe.classes_[1], cbpe.classes_[0])) > 0.7
        )
    matrix = np.column_stack([1 - positive, positive])
    assert CBPE.from_probabilities(matrix, y.astype(int)).estimate(confidence) == pytest.approx(
        CBPE.from_probabilities(positive, y.astype(int)).estimate(confidence)
    )
    with pytest.raises(ConfigError, match="one column per class"):
        CBPE.from_probabilities(matrix, y, classes=["a", "b", "c"])
    with pytest.raises(ConfigError, match=r"one of the classes \['0', '1'\]. Got \['2'\]"):
        CBPE.from_probabilities(positive, np.full(20_000, 2))
    with pytest.raises(ConfigError, match="one label per row"):
        CBPE.from_probabilities(positive, y[:10])
    with pytest.raises(ConfigError, match="between 0 and 1"):
        CBPE.from_probabilities(positive * 100, y)


def test_cbpe_band_covers_the_realised_accuracy_of_calibrated_windows() -> None:
    from driftloop.drift.cbpe import CBPE

    rng = np.random.default_rng(11)
    reference = rng.uniform(0.5, 1.0, 20_000)
    cbpe = CBPE().fit(reference, rng.random(20_000) < reference)
    inside = 0
    for _ in range(200):
        window = rng.uniform(0.6, 1.0, 500)
        realised = float(np.mean(rng.random(500) < window))
        low, high = cbpe.band(window)
        inside += low <= realised <= high
        assert high - low < 0.08
    assert 0.88 <= inside / 200 <= 0.99, inside


def test_cbpe_bands_cover_every_realised_metric_of_calibrated_windows() -> None:
    """Per-class precision, recall and F1, macro F1, ROC AUC and top-k accuracy: with a
    calibrated three-class model, each realised value falls inside its band about 95 % of the
    time, and the estimate follows a shift in the class mix (covariate shift) that moves them."""
    from sklearn.metrics import roc_auc_score

    from driftloop.drift.cbpe import CBPE
    from driftloop.tasks import Classification

    rng = np.random.default_rng(5)
    classes = ["a", "b", "c"]
    task = Classification(classes, positive_class="c", top_k=2)

    def stream(n: int, mix: list[float]) -> tuple[np.ndarray, np.ndarray]:
        logits = rng.normal(0, 1.4, (n, 3)) + np.log(mix)
        probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        truth = (rng.random(n)[:, None] > probs.cumsum(axis=1)).sum(axis=1)  # drawn from probs
        return probs, np.asarray(classes, dtype=object)[np.minimum(truth, 2)]

    probs, y = stream(30_000, [1 / 3, 1 / 3, 1 / 3])
    pred = np.asarray(classes, dtype=object)[probs.argmax(axis=1)]
    conf = probs.max(axis=1)
    cbpe = CBPE().fit(
        conf, pred == y, predicted=pred, actual=y, classes=classes, probabilities=probs, top_k=2
    )
    cbpe = CBPE.from_dict(cbpe.to_dict())  # as a reference stores it
    names = ["f1_macro", "roc_auc", "top_k_accuracy", "precision", "recall", "f1", "f1.a", "precision.b"]
    inside = dict.fromkeys(names, 0)
    windows = 60
    for i in range(windows):
        mix = [0.6, 0.25, 0.15] if i % 2 else [0.2, 0.3, 0.5]  # the class mix moves window to window
        wp, wy = stream(800, mix)
        wpred = np.asarray(classes, dtype=object)[wp.argmax(axis=1)]
        realised = task.metrics(wy, wpred, wp)
        assert realised["roc_auc"] == pytest.approx(
            roc_auc_score(wy, wp, multi_class="ovr", average="macro", labels=classes)
        )
        estimated = cbpe.estimate_all(wp.max(axis=1), wpred, wp, positive_class="c", draws=100, seed=i)
        for name in names:
            _, low, high = estimated[name]
            assert high - low < 0.2, (name, low, high)
            inside[name] += low <= realised[name] <= high
    for name, count in inside.items():
        assert count / windows >= 0.85, (name, count, inside)


def test_a_rule_with_confidence_fires_on_evidence_not_on_thin_windows() -> None:
    from driftloop.alerts import should_fire, wilson
    from driftloop.config import AlertRuleSettings

    rule = AlertRuleSettings(name="r", metric="accuracy", op="<", threshold=0.85, confidence=0.9)
    plain = rule.model_copy(update={"confidence": None})
    assert should_fire(plain, [(1, 0.80, 50)], None, 0.0)[0], "past the threshold"
    assert not should_fire(rule, [(1, 0.80, 50)], None, 0.0)[0], "50 rows cannot tell 0.80 from 0.85"
    assert should_fire(rule, [(1, 0.80, 500)], None, 0.0)[0], "500 rows can"
    assert should_fire(rule, [(1, 0.70, 50)], None, 0.0)[0], "a large drop shows on 50"
    above = AlertRuleSettings(name="r", metric="tag.stale", op=">", threshold=0.1, confidence=0.9)
    assert not should_fire(above, [(1, 0.14, 50)], None, 0.0)[0]
    assert should_fire(above, [(1, 0.14, 2000)], None, 0.0)[0]
    # the interval covers the true share about as often as its level says
    rng = np.random.default_rng(3)
    for p, n in ((0.8, 50), (0.95, 200), (0.5, 30)):
        hits = [rng.binomial(n, p) / n for _ in range(2000)]
        covered = np.mean([lo <= p <= hi for lo, hi in (wilson(h, n, 0.9) for h in hits)])
        assert 0.86 <= covered <= 0.95, (p, n, covered)


def test_a_confidence_needs_a_proportion_and_no_detector() -> None:
    from driftloop.config import AlertRuleSettings

    with pytest.raises(ValueError, match=r"needs a proportion metric .* Got 'f1_macro' instead"):
        AlertRuleSettings(name="r", metric="f1_macro", threshold=0.8, confidence=0.9)
    with pytest.raises(ValueError, match="takes a 'confidence' or a 'detector', not both"):
        AlertRuleSettings(name="r", metric="accuracy", detector="adwin", confidence=0.9)
    with pytest.raises(ValueError, match="less than 1"):
        AlertRuleSettings(name="r", metric="accuracy", threshold=0.8, confidence=1.0)


def test_the_domain_classifiers_bootstrap_auc_is_sklearns_on_every_resample() -> None:
    """The bootstrap scores every resample at once from how often it drew each row; that must be
    ``roc_auc_score`` of the resampled rows exactly, ties included."""
    from sklearn.metrics import roc_auc_score

    from driftloop.drift.multivariate import _resampled_auc

    rng = np.random.default_rng(1)
    for _ in range(50):
        n0, n1 = (int(n) for n in rng.integers(5, 300, 2))
        scores = np.round(rng.random(n0 + n1), int(rng.integers(1, 4)))  # coarse scores: many ties
        y = np.r_[np.zeros(n0), np.ones(n1)]
        ref, cur = rng.choice(np.arange(n0), n0), rng.choice(np.arange(n0, n0 + n1), n1)
        want = roc_auc_score(y[np.r_[ref, cur]], scores[np.r_[ref, cur]])
        got = _resampled_auc(
            scores[:n0],
            scores[n0:],
            np.bincount(ref, minlength=n0)[None],
            np.bincount(cur - n0, minlength=n1)[None],
        )[0]
        assert got == pytest.approx(want, abs=1e-12)
