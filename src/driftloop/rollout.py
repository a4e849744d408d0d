"""The canary's rules: when a step of a gradual rollout passes, waits or fails.

A step serves ``share`` of live traffic from the challenger (the workflow's canary steps make
that durable). It fails at once on any configured alert since it began; it waits until the
challenger's part of the traffic has ``rollout.step_labels`` labels (or fails when none came
within ``rollout.step_timeout``); then it passes unless the challenger's primary metric on its
labelled requests is more than ``rollout.tolerance`` worse than the champion's on the same period.
"""

from __future__ import annotations

import time
from typing import Any

from driftloop.project import Project

__all__ = ["canary_verdict"]


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
    rows = project.store.labelled(name, start_seq=started["seq"] + 1, policy=project.settings.feedback)
    pairs: dict[str, tuple[list[str], list[str], list[Any]]] = {
        challenger: ([], [], []),
        champion: ([], [], []),
    }
    for r in rows:
        if r["model_version"] in pairs:
            pairs[r["model_version"]][0].append(r["label"])
            pairs[r["model_version"]][1].append(r["prediction"])
            pairs[r["model_version"]][2].append(r.get("probabilities"))
    n_new, n_old = len(pairs[challenger][0]), len(pairs[champion][0])
    timed_out = time.time() - started["ts"] > rollout.step_timeout
    if n_new < rollout.step_labels and not (timed_out and n_new):
        if timed_out:
            return {"state": "fail", "reason": f"no labelled canary traffic within {rollout.step_timeout:g}s"}
        return {"state": "wait"}
    task, metric = project.task, project.settings.gate.primary_metric
    acc_new = task.metrics(*pairs[challenger])[metric]
    if n_old == 0:
        return {"state": "pass", "reason": f"canary {metric} {acc_new:.3f} on {n_new} rows"}
    acc_old = task.metrics(*pairs[champion])[metric]
    worse = acc_new - acc_old if metric in task.lower_is_better else acc_old - acc_new
    if worse > rollout.tolerance:
        return {
            "state": "fail",
            "reason": f"in the {share:.0%} canary, {challenger} scored {metric} {acc_new:.3f} on {n_new} "
            f"labelled requests against {champion}'s {acc_old:.3f} on {n_old}, more than "
            f"{rollout.tolerance:g} worse",
        }
    return {"state": "pass", "reason": f"{acc_new:.3f} against {acc_old:.3f}"}
