"""The canary's rules: when a step of a gradual rollout passes, waits or fails.

A step serves ``share`` of live traffic from the challenger (the workflow's canary steps make
that durable). It fails at once on any configured alert since it began; it waits until the
challenger's part of the traffic has ``rollout.step_labels`` labels (or fails when none came
within ``rollout.step_timeout``); then it passes unless the challenger's primary metric on its
labelled requests is more than ``rollout.tolerance`` worse than the champion's on the same period.
A scorer as the primary metric needs no labels: every request of the period counts, and
``step_labels`` is the number of the challenger's requests the step waits for.
"""

from __future__ import annotations

import time
from typing import Any

from driftloop.project import Project
from driftloop.scoring import is_scorer, logged_score

__all__ = ["canary_verdict"]

SCORED_ROWS = 20_000  # a scorer's canary: the requests of the period it scores, at most


def canary_verdict(
    project: Project, challenger: str, champion: str, share: float, started: dict[str, Any]
) -> dict[str, Any]:
    """``{"state": "wait" | "pass" | "fail", "reason": ...}`` for the canary step at ``share``
    that began at ``started`` (``{"seq", "ts"}``: the log position and time)."""
    rollout, name = project.settings.rollout, project.name
    rule_names = {r.name for r in project.settings.alerts}
    alarms = [
        a
        for a in project.store.alerts(name, limit=50)
        if a["rule"] in rule_names and a["ts"] >= started["ts"]
    ]
    if alarms:
        return {
            "state": "fail",
            "reason": f"alert '{alarms[-1]['rule']}' during the {share:.0%} canary: {alarms[-1]['message']}",
        }
    metric = project.settings.gate.primary_metric
    scorer = is_scorer(metric)
    requests = "requests" if scorer else "labelled requests"
    if scorer:  # a scorer needs no label: every request of the period
        rows = project.store.predictions_after(name, started["seq"], SCORED_ROWS)
    else:
        rows = project.store.labelled(name, start_seq=started["seq"] + 1, policy=project.settings.feedback)
    pairs: dict[str, list[dict[str, Any]]] = {challenger: [], champion: []}
    for r in rows:
        if r["model_version"] in pairs:
            pairs[r["model_version"]].append(r)
    n_new, n_old = len(pairs[challenger]), len(pairs[champion])
    timed_out = time.time() - started["ts"] > rollout.step_timeout
    if n_new < rollout.step_labels and not (timed_out and n_new):
        if timed_out:
            waited = f"no {requests} on the canary within {rollout.step_timeout:g}s"
            return {"state": "fail", "reason": waited}
        return {"state": "wait"}
    new = logged_score(project, pairs[challenger], metric)
    old = logged_score(project, pairs[champion], metric) if n_old else None
    if new is None or old is None:  # nothing to compare it with
        shown = "-" if new is None else f"{new:.3f}"
        return {"state": "pass", "reason": f"canary {metric} {shown} on {n_new} {requests}"}
    worse = new - old if metric in project.lower_is_better else old - new
    if worse > rollout.tolerance:
        return {
            "state": "fail",
            "reason": f"in the {share:.0%} canary, {challenger} scored {metric} {new:.3f} on {n_new} "
            f"{requests} against {champion}'s {old:.3f} on {n_old}, more than "
            f"{rollout.tolerance:g} worse",
        }
    return {
        "state": "pass",
        "reason": f"{challenger} scored {metric} {new:.3f} on {n_new} {requests} against {champion}'s "
        f"{old:.3f} on {n_old}, within {rollout.tolerance:g}",
    }
