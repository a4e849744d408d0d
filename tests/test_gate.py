"""The gate: every rule a sentence; slices, significance and refusal to decide on too little."""

from __future__ import annotations

from driftloop.config import GateSettings
from driftloop.gate import decide

CHAMP = {"accuracy": 0.80, "f1_macro": 0.78}
BETTER = {"accuracy": 0.86, "f1_macro": 0.85}


def test_accepts_a_clear_improvement_with_every_rule_explained() -> None:
    d = decide(GateSettings(min_improvement=0.01), CHAMP, BETTER, n=500, p_value=0.001, ci=(0.03, 0.09))
    assert d.accepted
    assert any("+0.0600" in r and "McNemar p = 0.001" in r and "+0.0300 to +0.0900" in r for r in d.reasons)


def test_tolerated_regression_and_value_floor() -> None:
    policy = GateSettings(
        min_improvement=-0.01, max_regression={"f1_macro": 0.02}, min_value={"accuracy": 0.9}
    )
    d = decide(policy, CHAMP, {"accuracy": 0.795, "f1_macro": 0.775}, n=500)
    failed = [r for r in d.rules if not r.passed]
    assert [r.rule for r in failed] == ["min_value"], (
        "a small drop within tolerance is allowed; the floor is not"
    )
    assert d.reasons == ["The challenger's accuracy 0.7950 is below the floor 0.9000."]
    within = next(r.sentence for r in d.rules if r.rule == "max_regression")
    assert within == "f1_macro regression 0.0050 (0.7800 -> 0.7750) is within the tolerated 0.0200."
    better = decide(policy, CHAMP, BETTER, n=500).rules  # a rise is no regression of 0.0000
    said = next(r.sentence for r in better if r.rule == "max_regression")
    assert said == "f1_macro went 0.7800 -> 0.8500, no worse (tolerated regression 0.0200).", said


def test_refuses_to_decide_below_the_minimum_evaluation_size() -> None:
    d = decide(GateSettings(min_eval_rows=100), CHAMP, BETTER, n=40)
    assert not d.accepted and len(d.rules) == 1
    assert d.reasons == ["The evaluation set has 40 rows; the gate needs at least 100 to decide."]


def test_significance_is_required_when_asked() -> None:
    policy = GateSettings(require_significance=True, alpha=0.05)
    lucky = decide(policy, CHAMP, BETTER, n=500, p_value=0.2, ci=(-0.01, 0.12))
    assert not lucky.accepted and "not significant at 0.05" in lucky.reasons[0]
    solid = decide(policy, CHAMP, BETTER, n=500, p_value=0.001, ci=(0.02, 0.1))
    assert solid.accepted


def test_largest_slice_regression_blocks_a_better_average() -> None:
    slices = {
        "class=yes": {"n": 200, "champion": 0.90, "challenger": 0.70},
        "class=no": {"n": 300, "champion": 0.73, "challenger": 0.97},
        "employment=student": {"n": 5, "champion": 1.0, "challenger": 0.0},  # too small to count
    }
    d = decide(GateSettings(max_slice_regression=0.05), CHAMP, BETTER, n=500, slices=slices)
    assert not d.accepted
    assert d.reasons == [
        "Slice class=yes (n = 200) lost 0.2000 accuracy (0.9000 -> 0.7000), more than the tolerated 0.0500."
    ]
