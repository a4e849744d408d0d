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
from statistics import NormalDist
from typing import Any

from driftloop.config import GateSettings

__all__ = ["Decision", "RuleResult", "decide", "rows_needed"]


def rows_needed(policy: GateSettings, baseline: float | None) -> int:
    """Evaluation rows the gate needs: ``min_eval_rows``, or more when ``min_effect`` is set and
    the primary metric is a proportion with a known ``baseline`` (the champion's held-out score):
    ``(z(1 - alpha/2) + z(power))^2 * p(1 - p) / min_effect^2`` rows, the sample at which a
    change of ``min_effect`` stands out from the noise of a score near ``p``.

    >>> policy = GateSettings(min_eval_rows=50, min_effect=0.05)
    >>> rows_needed(policy, 0.85), rows_needed(policy, None), rows_needed(GateSettings(), 0.85)
    (401, 50, 50)
    """
    if policy.min_effect is None or baseline is None or not 0.0 <= baseline <= 1.0:
        return policy.min_eval_rows
    normal = NormalDist()
    z = normal.inv_cdf(1 - policy.alpha / 2) + normal.inv_cdf(policy.power)
    p = min(max(baseline, 0.05), 0.95)  # a perfect score does not make one row enough
    return max(policy.min_eval_rows, math.ceil(z * z * p * (1 - p) / policy.min_effect**2))


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
    lower_is_better: frozenset[str] = frozenset(),
    test: str = "McNemar",
    slice_metric: str = "accuracy",
    compared: int = 1,
    p_metric: str | None = None,
    intervals: dict[str, tuple[float, float] | list[float] | None] | None = None,
    judge: dict[str, Any] | None = None,
    newest: dict[str, Any] | None = None,
    p_improvement: float | None = None,
) -> Decision:
    """Apply every rule of ``policy`` to metrics of both models on the same ``n`` rows.

    ``slices`` maps a slice name to its row count and both models' ``slice_metric`` on it; ``ci``
    is the bootstrap 95 % interval of the primary metric's change (challenger minus champion).
    Metrics in ``lower_is_better`` (errors: MAE, RMSE) improve by falling; for them a
    ``min_value`` is a ceiling. ``test`` names the paired test behind ``p_value`` (two-sided, as
    the test gives it), about ``p_metric`` (default: ``slice_metric``, the per-row score).
    ``p_improvement`` is the one-sided p-value of the challenger's improvement, corrected for
    choosing it among the ``compared`` candidates scored on the same rows
    (:func:`driftloop.evaluation.max_t`); ``require_significance`` holds it against
    ``policy.alpha``. ``intervals`` holds the bootstrap interval of other metrics' changes
    (scorers), quoted in their rules; ``judge`` is a judge's pairwise verdicts (``wins``,
    ``losses``, ``ties``, ``win_rate``, ``p_value``), judged against ``policy.judge_min_win_rate``.
    ``newest`` is a backtest's newest fold (``rows``, ``first_seq``, ``last_seq`` and both models'
    primary metric): the challenger may lose to the champion there by at most
    ``policy.max_newest_fold_regression``, so a window that wins over the whole backtest on a
    concept that has just ended is not promoted into the new one.

        >>> d = decide(GateSettings(primary_metric="mae", min_improvement=0.1, min_eval_rows=10),
        ...            {"mae": 2.0}, {"mae": 1.5}, n=100, p_value=0.01, lower_is_better=frozenset({"mae"}),
        ...            test="Wilcoxon", slice_metric="mae")
        >>> d.accepted
        True
        >>> print(d.reasons[1])
        mae changed by -0.5000 (2.0000 -> 1.5000) (Wilcoxon p = 0.01), an improvement of +0.5000; at least...
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
    gain = -change if m in lower_is_better else change  # how much better the challenger is
    # a tie keeps the champion, unless the policy tolerates a small loss (a negative improvement)
    tie = change == 0 and policy.min_improvement >= 0
    ok = _finite(a, b) and gain >= policy.min_improvement and not tie
    # the paired test is about the per-row score (right or wrong; the absolute error)
    tested = m == (p_metric or slice_metric)
    p_parts = [f"{test} p = {p_value:.3g}"] if p_value is not None and tested else []
    if p_improvement is not None:
        chosen = f", corrected for choosing among {compared} candidates" if compared > 1 else ""
        p_parts.append(f"one-sided p = {p_improvement:.3g} for an improvement{chosen}")
    p_text = f" ({'; '.join(p_parts)})" if p_parts else ""
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
            else f"{m} changed by {change:+.4f} ({a:.4f} -> {b:.4f}){p_text}"
            + (f", an improvement of {gain:+.4f}" if m in lower_is_better else "")
            + f"; {'at least' if ok else 'below the required'} {policy.min_improvement:+.4f}.",
        )
    )
    for metric, tolerance in sorted(policy.max_regression.items()):
        a, b = champion[metric], challenger[metric]
        drop = b - a if metric in lower_is_better else a - b  # how much worse the challenger is
        ok = _finite(a, b) and drop <= tolerance
        interval = (intervals or {}).get(metric)
        quoted = f" [95 % CI of the change {interval[0]:+.4f} to {interval[1]:+.4f}]" if interval else ""
        rules.append(
            RuleResult(
                "max_regression",
                metric,
                a,
                b,
                tolerance,
                ok,
                f"{metric} {'rose' if metric in lower_is_better else 'fell'} by {drop:.4f} "
                f"({a:.4f} -> {b:.4f}){quoted}, more than the tolerated {tolerance:.4f}."
                if not ok
                else f"{metric} regression {drop:.4f} ({a:.4f} -> {b:.4f}){quoted} is within "
                f"the tolerated {tolerance:.4f}."
                if drop > 0
                else f"{metric} went {a:.4f} -> {b:.4f}{quoted}, no worse (tolerated regression "
                f"{tolerance:.4f}).",
            )
        )
    for metric, floor in sorted(policy.min_value.items()):
        b = challenger[metric]
        ceiling = metric in lower_is_better  # for an error, the bound is a ceiling
        ok = _finite(b) and (b <= floor if ceiling else b >= floor)
        bound = "ceiling" if ceiling else "floor"
        rules.append(
            RuleResult(
                "min_value",
                metric,
                champion.get(metric),
                b,
                floor,
                ok,
                f"The challenger's {metric} {b:.4f} is {'above' if ceiling else 'below'} the "
                f"{bound} {floor:.4f}."
                if not ok
                else f"The challenger's {metric} {b:.4f} meets the {bound} {floor:.4f}.",
            )
        )
    if newest is not None and policy.max_newest_fold_regression is not None:
        a, b = newest["champion"], newest["challenger"]
        drop = b - a if m in lower_is_better else a - b
        ok = _finite(a, b) and drop <= policy.max_newest_fold_regression
        span = f"seq {newest['first_seq']}-{newest['last_seq']}"
        where = f"the newest fold of the backtest ({newest['rows']} rows, {span})"
        rules.append(
            RuleResult(
                "max_newest_fold_regression",
                m,
                a,
                b,
                policy.max_newest_fold_regression,
                ok,
                f"On {where} {m} {'rose' if m in lower_is_better else 'fell'} by {drop:.4f} "
                f"({a:.4f} -> {b:.4f}), more than the tolerated {policy.max_newest_fold_regression:.4f}: "
                "the challenger does worse on the most recent rows."
                if not ok
                else f"On {where} {m} went {a:.4f} -> {b:.4f}, within the tolerated regression "
                f"{policy.max_newest_fold_regression:.4f}.",
            )
        )
    if policy.require_significance:
        if p_improvement is not None:  # one-sided, corrected for the candidates compared
            significant = p_improvement < policy.alpha
        elif ci is not None:  # the interval of the change must exclude zero on the side of "better"
            significant = ci[1] < 0 if m in lower_is_better else ci[0] > 0
            if tested and p_value is not None:
                significant = significant and p_value < policy.alpha
        else:
            significant = p_value is not None and p_value < policy.alpha
        rules.append(
            RuleResult(
                "significance",
                m,
                champion[m],
                challenger[m],
                policy.alpha,
                significant,
                (
                    f"The {m} improvement is significant (one-sided p = {p_improvement:.3g} < "
                    f"{policy.alpha:g}{', corrected for the candidates compared' if compared > 1 else ''})."
                    if p_improvement is not None
                    else f"The {m} improvement is significant (p < {policy.alpha:g}, CI above zero)."
                )
                if significant
                else (
                    f"The {m} improvement is not significant: one-sided p = {p_improvement:.3g}, "
                    f"not below gate.alpha {policy.alpha:g}; the gate needs evidence."
                    if p_improvement is not None
                    else f"The {m} change is not significant at {policy.alpha:g}; the gate needs evidence."
                ),
            )
        )
    if policy.max_field_regression is not None:  # an extractor: the field that lost the most F1
        drops = {
            k.removeprefix("f1."): champion[k] - challenger[k]
            for k in champion
            if k.startswith("f1.") and k in challenger and _finite(champion[k], challenger[k])
        }
        if drops:
            field, drop = max(drops.items(), key=lambda kv: (kv[1], kv[0]))
            ok = drop <= policy.max_field_regression
            rules.append(
                RuleResult(
                    "max_field_regression",
                    f"f1.{field}",
                    champion[f"f1.{field}"],
                    challenger[f"f1.{field}"],
                    policy.max_field_regression,
                    ok,
                    f"Field {field} lost {drop:.4f} F1 ({champion[f'f1.{field}']:.4f} -> "
                    f"{challenger[f'f1.{field}']:.4f}), more than the tolerated "
                    f"{policy.max_field_regression:.4f}."
                    if not ok
                    else f"The largest field regression, {field} ({max(drop, 0):.4f} F1), is within "
                    f"{policy.max_field_regression:.4f}.",
                )
            )
    if judge is not None:
        rate, floor = float(judge["win_rate"]), policy.judge_min_win_rate
        ok = rate >= floor
        rules.append(
            RuleResult(
                "judge",
                "win_rate",
                None,
                rate,
                floor,
                ok,
                f"The judge preferred the challenger on {judge['wins']} rows, the champion on "
                f"{judge['losses']}, with {judge['ties']} ties: a win rate of {rate:.3f} (a tie is half; "
                f"sign test p = {judge['p_value']:.3g}), {'at least' if ok else 'below'} the required "
                f"{floor:.3f}.",
            )
        )
    if policy.max_slice_regression is not None and slices:
        big = {k: v for k, v in slices.items() if v["n"] >= policy.min_slice_rows}
        if big:
            sign = -1.0 if slice_metric in lower_is_better else 1.0

            def loss(item: tuple[str, dict[str, float]]) -> float:
                return sign * (item[1]["champion"] - item[1]["challenger"])

            worst_name, worst = max(big.items(), key=loss)
            drop = loss((worst_name, worst))
            ok = drop <= policy.max_slice_regression
            rules.append(
                RuleResult(
                    "max_slice_regression",
                    worst_name,
                    worst["champion"],
                    worst["challenger"],
                    policy.max_slice_regression,
                    ok,
                    f"Slice {worst_name} (n = {worst['n']:.0f}) lost {drop:.4f} {slice_metric} "
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
