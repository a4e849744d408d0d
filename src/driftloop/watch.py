"""After a promotion: the paired post-deploy watch, and the gate's calibration in the open.

**Paired.** Judging a new champion by its live score against the old one's gate score compares
two periods, and a drifting world moves both: on real streams that rolled back 10 of 43
promotions, always to a staler model. Here the previous champion scores the *same* live rows the
new one served (its predictions made from the logged inputs, as a shadow would have made them),
and the two are compared on the rows that got labels with the task's paired test (McNemar for
classes, Wilcoxon on absolute errors for numbers), on ``watch.metric``: by default what the gate
promoted for, which for a generator is often a scorer: it needs no label, so both models'
outputs are scored on every row the new one served (the first ``watch.max_rows``; Wilcoxon).
The promotion is rolled back only on significant evidence of harm: the new model worse by more
than ``watch.tolerance`` with a p-value below ``watch.alpha``; anything else keeps it. With too
few labels the label-free estimates may raise the question (an alert), never decide it.

**Gate optimism.** For every promoted model, the gate's estimate of its primary metric is kept
beside the live score it reached on the first labelled rows it served, as many as the gate had
(``gate optimism`` = gate - live for a score, live - gate for an error). The estimate is the
winner's score less what choosing it among the candidates flattered it by (the bootstrap's
winner's curse, :func:`driftloop.evaluation.selection_bias`); the raw score's optimism is kept
beside it. The paired figure (``gain optimism``) does the same for the gate's promise of an
improvement: the estimate minus the previous champion's gate score, less the difference the two
made on the same live rows. A concept change right after a promotion takes the live score of
the new model and the old alike: it counts against the absolute figure, which measures what a
user was promised, but cancels in the paired one, which measures the gate's judgement.
``driftloop status`` and ``/metrics`` show the means, so a gate that flatters is seen.

**What the watch proves sets the reference.** A kept model whose live score's one-sided
bootstrap bound (``watch.anchor_confidence``) beats its held-out score, measured on at least as
many rows, has that bound as the reference of alert rules ``relative_to = "reference"`` for
the windows after the watch: a gate that judged a young concept on refits of few of its rows
scores the winner far below what it serves at, and a rule relative to that score stays silent
through a real fall. It is recorded on the ``watch-kept`` promotion (``detail``) and read back
by :func:`driftloop.monitor.watch_anchor`; it only ever raises the bar.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from driftloop.evaluation import bootstrap_bounds
from driftloop.monitor import Monitor, watch_anchor
from driftloop.optimism import optimism_summary, summarise_optimism
from driftloop.project import Project
from driftloop.scoring import is_scorer, paired_scores, scorer_values, with_scorers

__all__ = ["gate_optimism", "harmful", "optimism_summary", "post_deploy_watch", "summarise_optimism"]

log = logging.getLogger("driftloop.watch")


def _estimated(windows: list[dict[str, Any]], metric: str) -> float | None:
    values = [
        w["metrics"][f"estimated_{metric}"]["value"]
        for w in windows
        if (w["metrics"].get(f"estimated_{metric}") or {}).get("value") is not None
    ]
    return float(np.mean(values)) if values else None


def _paired_on_live_rows(
    project: Project,
    rows: list[dict[str, Any]],
    new: str,
    old: str,
    metric: str | None = None,
    level: float = 0.0,
) -> dict[str, Any]:
    """Both versions on the same logged, labelled rows: ``metric`` (the watch's by default) and
    the paired test. A scorer (``metric.<name>``) scores both models' outputs, as the gate did,
    and is paired by Wilcoxon. With a ``level``, ``bounds`` holds the one-sided bootstrap bound
    of each of ``new``'s label metrics on these rows (see :func:`_anchor`)."""
    task, metric = project.task, metric or project.settings.watch.metric
    bounds: dict[str, float] = {}
    inputs = [r["inputs"] for r in rows]
    X = project.schema.frame(inputs, strict=False)
    made = {v: task.predict(project.registry.load(project.name, v), X) for v in (old, new)}
    if is_scorer(metric):  # what the gate judged a generator on, say
        raw = project.schema.frame(inputs, strict=False, decode=False)  # what scorers see
        scored = {v: scorer_values(project, raw, m)[metric] for v, m in made.items()}
        values = {v: with_scorers({}, {metric: s})[metric] for v, s in scored.items()}
        p_value, ci = paired_scores(scored[old], scored[new])
        test = "Wilcoxon"
    else:
        y = task.targets(pd.Series([r["label"] for r in rows], dtype=object), "labelled live rows").to_numpy()
        values = {v: float(task.metrics(y, m.labels, m.probabilities)[metric]) for v, m in made.items()}
        p_value, ci = task.paired(
            y, made[old].labels, made[new].labels, metric, made[old].probabilities, made[new].probabilities
        )
        test = task.paired_test
        if level:
            score = task.subset_metrics(y, made[new].labels, made[new].probabilities)
            bounds = bootstrap_bounds(len(y), score, level, errors=project.lower_is_better)
    return {
        "new": values[new],
        "old": values[old],
        "p_value": p_value,
        "ci": ci,
        "n": len(rows),
        "test": test,
        "bounds": bounds,
    }


def gate_optimism(
    project: Project, run_id: str, live: float, n: int, live_old: float | None = None
) -> dict[str, Any] | None:
    """Record, on the run that promoted, the gate's estimate beside the live ``live`` over ``n``
    rows; with ``live_old`` (the previous champion on the same rows) the paired figure too."""
    store, metric = project.store, project.settings.gate.primary_metric
    decision = store.decision(run_id)
    rule = next(
        (
            r
            for r in (decision or {}).get("rules", [])
            if r["metric"] == metric and r["challenger"] is not None
        ),
        None,
    )
    run = store.run(run_id)
    if rule is None or run is None:
        return None
    estimate = (run["options"] or {}).get("gate_estimate") or {}
    mine = estimate.get("metric") == metric
    # the estimate's own rows (the winner's recipe predicted them) where it names them, else the
    # gate's score on every evaluation row
    gate = float(estimate["raw"] if mine and "rows" in estimate else rule["challenger"])
    champion = estimate["champion"] if mine and "champion" in estimate else rule.get("champion")
    expected = float(estimate["value"]) if mine else gate
    sign = -1.0 if metric in project.lower_is_better else 1.0  # optimism: promised more than delivered
    record: dict[str, Any] = {
        "metric": metric,
        "gate": round(expected, 6),
        "gate_raw": round(gate, 6),
        "live": round(live, 6),
        "n": n,
        "optimism": round(sign * (expected - live), 6),
        "optimism_raw": round(sign * (gate - live), 6),
    }
    if live_old is not None and champion is not None:
        # the gain promised (estimate minus the champion's gate score on the same rows) minus the
        # gain delivered (the two on the same live rows): a change of the world both meet cancels
        record["champion_gate"] = round(float(champion), 6)
        record["champion_live"] = round(live_old, 6)
        record["gain_optimism"] = round(sign * ((expected - float(champion)) - (live - live_old)), 6)
    store.merge_run_options(run_id, gate_optimism=record)
    return record


def harmful(worse_by: float, p_value: float | None, *, tolerance: float, alpha: float) -> bool:
    """The watch's rule: roll back only on significant evidence of harm.

    >>> harmful(0.01, 0.40, tolerance=0.0, alpha=0.05), harmful(0.01, 0.01, tolerance=0.0, alpha=0.05)
    (False, True)
    """
    return worse_by > tolerance and p_value is not None and p_value < alpha


def post_deploy_watch(project: Project, monitor: Monitor | None = None) -> dict[str, Any] | None:
    """Judge the newest promotion once its first ``watch.windows`` windows hold ``watch.min_labels``
    labelled rows (or keep it after ``watch.max_windows`` windows without them).

    Returns ``None`` while watching (or with nothing to watch), else the verdict: kept, or
    rolled back with an alert. Each promotion is judged once (a ``watch`` row in the history).
    """
    ws, store, name = project.settings.watch, project.store, project.name
    if ws.windows == 0:
        return None
    history = store.promotions(name)
    promoted = [r for r in history if r["action"] == "promote"]
    if not promoted:
        return None
    last = promoted[-1]
    if any(r["id"] > last["id"] for r in history) or project.champion() != last["to_version"]:
        return None  # judged already, rolled back by hand, or superseded
    new, old = last["to_version"], last["from_version"]
    after = [
        w
        for w in store.windows(name, limit=500)
        if w["model_versions"] == [new] and w["start_ts"] >= last["ts"]
    ][: ws.max_windows]
    if len(after) < ws.windows:
        return None
    metric = ws.metric
    rows = _watched_rows(project, after, new, metric)
    if len(rows) < ws.min_labels:
        if len(after) < ws.max_windows:
            _question(project, monitor, after, new, old, len(rows), last)
            return None
        had = "were served" if is_scorer(metric) else "had labels"
        verdict = {
            "action": "watch-kept",
            "reason": f"post-deploy watch: {new} kept; after {len(after)} windows only {len(rows)} "
            f"of its rows {had} (watch.min_labels {ws.min_labels}), too few to judge it against {old}",
        }
        compared: dict[str, Any] = {"new": None, "old": None, "p_value": None, "n": len(rows)}
    else:
        # bounds for the reference only where the live rows could set it (see _anchor)
        enough = len(rows) >= int(_reference_profile(project, new).get("scored_rows", 0))
        level = ws.anchor_confidence if enough else 0.0
        compared = _paired_on_live_rows(project, rows, new, old, level=level)
        lower = metric in project.lower_is_better
        worse_by = compared["new"] - compared["old"] if lower else compared["old"] - compared["new"]
        p = compared["p_value"]
        p_text = f"{compared['test']} p = {p:.3g}" if p is not None else "no paired test"
        harm = harmful(worse_by, p, tolerance=ws.tolerance, alpha=ws.alpha)
        said = (
            f"post-deploy watch: on the same {len(rows)} {_kind_of_rows(metric)}, {metric} of {new} is "
            f"{compared['new']:.4f} and of {old} {compared['old']:.4f} ({p_text}; alpha {ws.alpha:g}, "
            f"tolerance {ws.tolerance:g})"
        )
        verdict = {
            "action": "watch-rollback" if harm else "watch-kept",
            "reason": f"{said}: significantly worse, rolled back"
            if harm
            else f"{said}: {'no significant harm' if worse_by > 0 else 'no worse'}, kept",
        }
        if last["run_id"]:  # the gate's calibration: its estimate against the first live rows
            primary = project.settings.gate.primary_metric  # what the estimate is of
            # a scorer's estimate is met on any served row, a metric's on the labelled ones
            same = is_scorer(primary) == is_scorer(metric)
            live = rows if same else _watched_rows(project, after, new, primary)
            decision = store.decision(last["run_id"]) or {}
            n = min(len(live), int(decision.get("eval_rows") or len(live)))  # as many as the gate had
            if n and n == len(rows) and primary == metric:
                gate_optimism(project, last["run_id"], compared["new"], n, live_old=compared["old"])
            elif n:
                first = _paired_on_live_rows(project, live[:n], new, old, primary)
                gate_optimism(project, last["run_id"], first["new"], n, live_old=first["old"])
    key = f"watch-{last['run_id'] or last['id']}"[:64]
    anchor = None
    if verdict["action"] == "watch-kept" and compared.get("bounds"):
        anchor = _anchor(project, new, compared["bounds"], len(rows), after[-1]["end_seq"])
        if anchor is not None:
            verdict["reason"] += f"; {_anchor_said(project, anchor)}"
    if verdict["action"] == "watch-rollback":
        from driftloop.workflow import rollback

        rollback(project, verdict["reason"], run_id=key)
        (monitor or Monitor(project)).system_alert(
            "post-deploy-rollback", f"Rolled {new} back to {old}: {verdict['reason']}."
        )
    else:
        store.add_promotion(
            model=name,
            action="watch-kept",
            from_version=old,
            to_version=new,
            run_id=key,
            reason=verdict["reason"],
            detail={"anchor": anchor} if anchor else None,
        )
    log.info("%s", verdict["reason"])
    return {
        **verdict,
        "anchor": anchor,
        "new": new,
        "old": old,
        "source": "served" if is_scorer(metric) else "feedback",
        "new_value": compared["new"],
        "old_value": compared["old"],
        "p_value": compared["p_value"],
        "rows": compared["n"],
    }


def _anchor(
    project: Project, version: str, bounds: dict[str, float], n: int, end_seq: int
) -> dict[str, Any] | None:
    """The reference scores a kept model's live rows raise: each held-out score of ``version``
    that the bound of its live score beats (``watch.anchor_confidence``), with what it was; of
    the metrics alert rules judge relative to the reference, and the watch's own. Bounding every
    per-class metric as well would raise a few of them by chance in an unchanged world. None
    when the live rows are fewer than the held-out rows: a bar set by forty labels is met by
    windows of forty labels, which then fire on noise.

    Only ever up: a live score below the held-out one may be a concept change that met both
    models after the promotion, which relative alerts are there to catch, not to absorb. Rules
    judge the windows after ``end_seq`` (the watch's last) against the raised scores."""
    settings = project.settings
    wanted = {settings.watch.metric} | {
        rule.metric.removeprefix("estimated_") for rule in settings.alerts if rule.relative_to == "reference"
    }
    profile = _reference_profile(project, version)
    if n < int(profile.get("scored_rows", 0)):
        return None
    held_out = profile.get("scores", {})
    raised: dict[str, dict[str, float]] = {}
    for metric, bound in bounds.items():
        before = held_out.get(metric) if metric in wanted else None
        if before is None or not np.isfinite(bound) or not np.isfinite(before):
            continue
        if (bound < before) if metric in project.lower_is_better else (bound > before):
            raised[metric] = {"held_out": round(float(before), 6), "bound": round(bound, 6)}
    if not raised:
        return None
    return {
        "metrics": raised,
        "level": project.settings.watch.anchor_confidence,
        "n": n,
        "end_seq": int(end_seq),
    }


def _reference_profile(project: Project, version: str) -> dict[str, Any]:
    return (project.store.reference(project.name, version) or {}).get("profile") or {}


def _anchor_said(project: Project, anchor: dict[str, Any]) -> str:
    """The verdict's clause on what the watch raised: the watched metric's scores, and how many more."""
    raised, metric = anchor["metrics"], project.settings.watch.metric
    shown = metric if metric in raised else next(iter(raised))
    side = "upper" if shown in project.lower_is_better else "lower"
    others = len(raised) - 1
    value = raised[shown]
    return (
        f"its reference {shown} becomes {value['bound']:.4f} (held out: {value['held_out']:.4f}), "
        f"the {anchor['level'] * 100:g} % {side} bound of its {shown} on these rows"
        + (f" ({others} more metric{'s' if others > 1 else ''} likewise)" if others else "")
        + ", so alerts relative to it judge the windows after the watch by what it showed live"
    )


def _kind_of_rows(metric: str) -> str:
    return "live rows" if is_scorer(metric) else "labelled live rows"


def _watched_rows(
    project: Project, after: list[dict[str, Any]], new: str, metric: str
) -> list[dict[str, Any]]:
    """The rows ``new`` served in the windows ``after`` that ``metric`` can be judged on, oldest
    first: for a scorer, which reads only inputs and outputs, every one (at most
    ``watch.max_rows``), so a generator is watched without waiting for labels; else those with
    a label."""
    store, name = project.store, project.name
    start, end = after[0]["start_seq"], after[-1]["end_seq"]
    if is_scorer(metric):
        served = store.served_inputs(name, start, end, project.settings.watch.max_rows, oldest=True)
        return [r for r in served if r["model_version"] == new]
    labelled = store.labelled(name, start_seq=start, end_seq=end, policy=project.settings.feedback)
    return [r for r in labelled if r["model_version"] == new]


def _question(
    project: Project,
    monitor: Monitor | None,
    after: list[dict[str, Any]],
    new: str,
    old: str,
    labelled: int,
    last: dict[str, Any],
) -> None:
    """Too few labels to decide: if the label-free estimate says the new champion does worse
    than the old one's own held-out score, say so once (an alert), and keep watching."""
    ws, metric = project.settings.watch, project.settings.watch.metric
    estimate = _estimated(after, metric)
    reference = project.store.reference(project.name, old)
    before = ((reference or {}).get("profile") or {}).get("scores", {}).get(metric)
    raised = ((watch_anchor(project.store, project.name, old) or {}).get("metrics") or {}).get(metric)
    where = "on its held-out rows"
    if raised:  # what its own watch proved live
        before, where = raised["bound"], "(the bound its own post-deploy watch proved live)"
    if estimate is None or before is None:
        return
    lower = metric in project.lower_is_better
    if (estimate - before if lower else before - estimate) <= max(ws.tolerance, 0.02):
        return
    rule = "post-deploy-question"
    run_id = f"watch-{last['run_id'] or last['id']}"[:64]
    if any(a["run_id"] == run_id for a in project.store.alerts(project.name, limit=50, rule=rule)):
        return
    (monitor or Monitor(project)).system_alert(
        rule,
        f"The label-free estimate of {metric} for {new} is {estimate:.3f} over {len(after)} windows against "
        f"{old}'s {before:.3f} {where}, but only {labelled} rows have labels "
        f"(watch.min_labels {ws.min_labels}): label some of its recent predictions to decide.",
        run_id=run_id,
    )
