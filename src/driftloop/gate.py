"""Policy -> decision with human-readable reasons.

>>> from driftloop.config import GateSettings
>>> policy = GateSettings(min_improvement=0.01, max_regression={"f1_macro": 0.02}, min_eval_rows=10)
>>> d = decide(policy, {"accuracy": 0.80, "f1_macro": 0.78}, {"accuracy": 0.85, "f1_macro": 0.84}, n=200)
>>> d.accepted
True
>>> d = decide(policy, {"accuracy": 0.80, "f1_macro": 0.78}, {"accuracy": 0.80, "f1_macro": 0.70}, n=200)
>>> d.accepted, len(d.reasons)
(False, 2)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from driftloop.config import GateSettings

__all__ = ["Decision", "RuleResult", "decide"]


@dataclass(frozen=True)
class RuleResult:
    rule: str
    metric: str
    champion: float | None
    challenger: float | None
    limit: float
    passed: bool
    sentence: str


@dataclass(frozen=True)
class Decision:
    accepted: bool
    rules: list[RuleResult] = field(default_factory=list)
    n: int = 0

    @property
    def reasons(self) -> list[str]:
        """One sentence per failed rule (or, when accepted, per rule)."""
        failed = [r.sentence for r in self.rules if not r.passed]
        return failed if failed else [r.sentence for r in self.rules]

    def rules_as_dicts(self) -> list[dict[str, object]]:
        return [asdict(r) for r in self.rules]


def decide(
    policy: GateSettings,
    champion: dict[str, float],
    challenger: dict[str, float],
    n: int,
    p_value: float | None = None,
    *,
    slices: dict[str, dict[str, float]] | None = None,
    ci: tuple[float, float] | list[float] | None = None,
) -> Decision:
    """Apply every rule of ``policy`` to metrics of both models on the same ``n`` rows.

    ``slices`` maps a slice name to its row count and both models' accuracy on it; ``ci`` is
    the bootstrap 95 % interval of the primary metric's change (challenger minus champion).
    """
    rules: list[RuleResult] = []
    enough = n >= policy.min_eval_rows
    rules.append(
        RuleResult(
            "min_eval_rows",
            "rows",
            None,
            float(n),
            float(policy.min_eval_rows),
            enough,
            f"The evaluation set has {n} rows; the gate needs at least {policy.min_eval_rows} to decide."
            if not enough
            else f"The evaluation set has {n} rows (at least {policy.min_eval_rows} needed).",
        )
    )
    if not enough:
        return Decision(False, rules, n)
    m = policy.primary_metric
    a, b = champion[m], challenger[m]
    change = b - a
    # a tie keeps the champion, unless the policy tolerates a small loss (a negative improvement)
    tie = change == 0 and policy.min_improvement >= 0
    ok = _finite(a, b) and change >= policy.min_improvement and not tie
    p_text = f" (McNemar p = {p_value:.3g})" if p_value is not None and m == "accuracy" else ""
    if ci is not None:
        p_text += f" [95 % CI of the change {ci[0]:+.4f} to {ci[1]:+.4f}]"
    rules.append(
        RuleResult(
            "min_improvement",
            m,
            a,
            b,
            policy.min_improvement,
            ok,
            f"{m} did not change ({a:.4f} -> {b:.4f}){p_text}; a tie keeps the champion."
            if tie
            else f"{m} changed by {change:+.4f} ({a:.4f} -> {b:.4f}){p_text}; "
            f"{'at least' if ok else 'below the required'} {policy.min_improvement:+.4f}.",
        )
    )
    for metric, tolerance in sorted(policy.max_regression.items()):
        a, b = champion[metric], challenger[metric]
        drop = a - b
        ok = _finite(a, b) and drop <= tolerance
        rules.append(
            RuleResult(
                "max_regression",
                metric,
                a,
                b,
                tolerance,
                ok,
                f"{metric} fell by {drop:.4f} ({a:.4f} -> {b:.4f}), more than the tolerated {tolerance:.4f}."
                if not ok
                else f"{metric} regression {max(drop, 0):.4f} is within the tolerated {tolerance:.4f}.",
            )
        )
    for metric, floor in sorted(policy.min_value.items()):
        b = challenger[metric]
        ok = _finite(b) and b >= floor
        rules.append(
            RuleResult(
                "min_value",
                metric,
                champion.get(metric),
                b,
                floor,
                ok,
                f"The challenger's {metric} {b:.4f} is below the floor {floor:.4f}."
                if not ok
                else f"The challenger's {metric} {b:.4f} meets the floor {floor:.4f}.",
            )
        )
    if policy.require_significance:
        significant = ci[0] > 0 if ci is not None else (p_value is not None and p_value < policy.alpha)
        if m == "accuracy" and p_value is not None:
            significant = significant and p_value < policy.alpha
        rules.append(
            RuleResult(
                "significance",
                m,
                champion[m],
                challenger[m],
                policy.alpha,
                significant,
                f"The {m} improvement is significant (p < {policy.alpha:g}, CI above zero)."
                if significant
                else f"The {m} change is not significant at {policy.alpha:g}; the gate needs evidence.",
            )
        )
    if policy.max_slice_regression is not None and slices:
        big = {k: v for k, v in slices.items() if v["n"] >= policy.min_slice_rows}
        if big:
            worst_name, worst = max(big.items(), key=lambda kv: kv[1]["champion"] - kv[1]["challenger"])
            drop = worst["champion"] - worst["challenger"]
            ok = drop <= policy.max_slice_regression
            rules.append(
                RuleResult(
                    "max_slice_regression",
                    worst_name,
                    worst["champion"],
                    worst["challenger"],
                    policy.max_slice_regression,
                    ok,
                    f"Slice {worst_name} (n = {worst['n']:.0f}) lost {drop:.4f} accuracy "
                    f"({worst['champion']:.4f} -> {worst['challenger']:.4f}), more than the tolerated "
                    f"{policy.max_slice_regression:.4f}."
                    if not ok
                    else f"The largest slice regression, {worst_name} ({max(drop, 0):.4f}), is within "
                    f"{policy.max_slice_regression:.4f}.",
                )
            )
    return Decision(all(r.passed for r in rules), rules, n)


def _finite(*values: float) -> bool:
    return all(v is not None and math.isfinite(v) for v in values)
