"""What the store knows, as plain JSON-ready dicts: one source for ``--json`` on the commands,
the HTTP read routes and (later) the pages, so the three never disagree.

Every function reads driftloop's own store only (never the registry or the logged rows), so each
answers in well under a second. Times are Unix seconds; a missing value is ``None``.

>>> window_view({"id": 3, "start_seq": 1, "end_seq": 500, "start_ts": 0.0, "end_ts": 60.0, "n": 500,
...     "model_versions": ["2"], "metrics": {"accuracy": {"value": 0.9, "n": 480, "p_value": None,
...     "threshold": None, "flagged": False}, "drift.age": {"value": 0.21, "n": 500, "p_value": 0.001,
...     "threshold": 0.1, "flagged": True}}})["drift"]
{'age': {'statistic': 0.21, 'threshold': 0.1, 'p_value': 0.001, 'drifted': True}}
"""

from __future__ import annotations

import math
from typing import Any

from driftloop.project import Project

__all__ = [
    "alerts_view",
    "datasets_view",
    "decisions_view",
    "drift_view",
    "jsonable",
    "runs_view",
    "shadow_view",
    "status_view",
    "window_view",
    "windows_view",
]


def window_view(window: dict[str, Any]) -> dict[str, Any]:
    """One window: its span, its metrics by name (value, rows, threshold, flagged) and the drift
    of each feature apart (``drift.<feature>`` metrics)."""
    metrics, drift = {}, {}
    for name, m in sorted(window["metrics"].items()):
        if name.startswith("drift."):
            drift[name.removeprefix("drift.")] = {
                "statistic": m["value"],
                "threshold": m["threshold"],
                "p_value": m["p_value"],
                "drifted": bool(m["flagged"]),
            }
        else:
            metrics[name] = {
                "value": m["value"],
                "n": m["n"],
                "threshold": m["threshold"],
                "p_value": m["p_value"],
                "flagged": bool(m["flagged"]),
            }
    return {
        "id": window["id"],
        "start_seq": window["start_seq"],
        "end_seq": window["end_seq"],
        "start_ts": window["start_ts"],
        "end_ts": window["end_ts"],
        "rows": window["n"],
        "model_versions": window["model_versions"],
        "metrics": metrics,
        "drift": drift,
        "drifted": sorted(k for k, d in drift.items() if d["drifted"]),
    }


def windows_view(project: Project, limit: int = 50) -> list[dict[str, Any]]:
    """The newest ``limit`` windows, oldest first."""
    return [window_view(w) for w in project.store.windows(project.name, limit=limit)]


def alerts_view(project: Project, limit: int = 50) -> list[dict[str, Any]]:
    """The newest ``limit`` alerts, oldest first; ``undelivered`` says which sinks have not
    taken one yet (empty once every sink has)."""
    pending: dict[int, list[str]] = {}
    for d in project.store.undelivered(project.name):
        state = "given up" if d["given_up"] else "retrying"
        attempts = f"{d['tries']} attempt{'' if d['tries'] == 1 else 's'}"
        pending.setdefault(d["alert_id"], []).append(f"{d['sink']}: {state} after {attempts}; {d['error']}")
    return [
        {
            **{
                k: a[k]
                for k in (
                    "id",
                    "ts",
                    "rule",
                    "metric",
                    "value",
                    "threshold",
                    "window_id",
                    "message",
                    "run_id",
                )
            },
            "undelivered": pending.get(a["id"], []),
        }
        for a in project.store.alerts(project.name, limit=limit)
    ]


def decisions_view(project: Project, limit: int = 50) -> list[dict[str, Any]]:
    """The newest ``limit`` gate decisions, each with every rule and both models' values."""
    return [
        {
            "run_id": d["run_id"],
            "ts": d.get("ts"),
            "champion_version": d["champion_version"],
            "challenger_version": d["challenger_version"],
            "accepted": bool(d["accepted"]),
            "eval_rows": d["eval_rows"],
            "eval_dataset": d["eval_dataset"],
            "rules": d["rules"],
            "reasons": d["reasons"],
        }
        for d in project.store.decisions(project.name, limit=limit)
    ]


def runs_view(project: Project, limit: int = 20) -> list[dict[str, Any]]:
    """The newest ``limit`` retrain runs, oldest first, each with its decision (or None)."""
    decided = {d["run_id"]: d for d in decisions_view(project, limit=max(limit, 50))}
    return [
        {
            "id": r["id"],
            "trigger": r["trigger"],
            "status": r["status"],
            "step": r["step"],
            "started_at": r["started_at"],
            "finished_at": r["finished_at"],
            "challenger_version": r["challenger_version"],
            "error": r["error"],
            "options": r["options"],
            "decision": decided.get(r["id"]),
        }
        for r in project.store.runs(project.name, limit=limit)
    ]


def datasets_view(project: Project) -> list[dict[str, Any]]:
    """Every snapshot of the model: id, kind, rows, when, and its manifest."""
    return [
        {
            "id": d["id"],
            "kind": d["kind"],
            "rows": d["rows"],
            "created_at": d["created_at"],
            "manifest": d["manifest"],
        }
        for d in project.store.datasets(project.name)
    ]


def status_view(project: Project, *, windows: int = 10, alerts: int = 10) -> dict[str, Any]:
    """The champion, the newest versions with their role and gate verdict, recent windows and
    alerts, the champion history, runs, the gate's calibration and the monitor's health."""
    from driftloop.optimism import optimism_summary

    store, name = project.store, project.name
    champion = store.champion(name)
    history = store.promotions(name)
    previous = next(
        (p["from_version"] for p in reversed(history) if p["to_version"] == champion and p["from_version"]),
        None,
    )
    active = {r["challenger_version"] for r in store.runs(name, active_only=True) if r["challenger_version"]}
    decided = {d["challenger_version"]: d for d in store.decisions(name, limit=200)}
    made_by: dict[str, tuple[str, str]] = {}  # a version no gate judged: the run that made it, and how
    for run in store.runs(name, limit=200):
        options = run["options"] or {}
        for c in options.get("candidates") or []:
            if not c.get("chosen") and not c.get("earlier"):
                made_by[str(c["version"])] = (run["id"], f"not chosen ('{c['name']}')")
        if options.get("deployed_version") and options.get("deployed_version") != options.get(
            "evaluated_version"
        ):
            made_by[str(options["deployed_version"])] = (
                run["id"],
                f"refit of {options['evaluated_version']}",
            )
    versions = []
    for v in store.artifacts(name)[-10:]:
        version, decision = v["version"], decided.get(v["version"])
        run_id, made = made_by.get(version, (None, None))
        role = (
            "champion"
            if version == champion
            else "challenger"
            if version in active
            else "previous"
            if version == previous
            else None
        )
        versions.append(
            {
                "version": version,
                "role": role,
                "gate": made if decision is None else "accepted" if decision["accepted"] else "rejected",
                "registered_at": v["created_at"],
                "run_id": decision["run_id"] if decision else run_id,
            }
        )
    ok = store.monitor_runs(name, limit=1, ok=True)
    failed = store.monitor_runs(name, limit=1, ok=False)
    return {
        "model": name,
        "champion": champion,
        "previous": previous,
        "versions": versions,
        "windows": windows_view(project, limit=windows),
        "alerts": alerts_view(project, limit=alerts),
        "history": [
            {k: p[k] for k in ("ts", "action", "from_version", "to_version", "run_id", "reason")}
            for p in history[-8:]
        ],
        "runs": runs_view(project, limit=10),
        "gate_optimism": optimism_summary(project),
        "archive": archive_view(project),
        "monitoring": {
            "last_success": ok[-1]["finished_at"] if ok else None,
            "last_failure": failed[-1]["finished_at"] if failed else None,
            "last_error": failed[-1]["error"] if failed else None,
        },
    }


def archive_view(project: Project) -> dict[str, Any]:
    """What the log archive holds of the project (from its manifests)."""
    batches = project.archive.manifests(project.name)
    files = [f for b in batches for f in b["files"]]
    return {
        "url": project.settings.archive.url,
        "batches": len(batches),
        "predictions": sum(f["rows"] for f in files if f["kind"] == "predictions"),
        "bytes": sum(f["bytes"] for f in files),
        "through_seq": batches[-1]["last_seq"] if batches else 0,
        "newest": max((f["max_ts"] for f in files), default=None),
    }


def drift_view(
    project: Project, since: float, *, engine: str = "profiles", scheduler: Any = None, progress: bool = False
) -> dict[str, Any] | None:
    """Drift since ``since``, per column; None when there is nothing to compare.

    ``engine="profiles"`` merges the windows' stored profiles (no rows rescanned; windows
    scored against the current reference); ``"local"`` and ``"dask"`` rescan the archived rows
    of the span from Parquet, in this process or on a Dask cluster
    (:func:`driftloop.archive.profile_archive`).
    """
    from driftloop.monitor import Monitor

    monitor = Monitor(project)
    if engine == "profiles":
        n, report = monitor.rollup(since=since)
        vocabulary = monitor.vocabulary(since=since) if report is not None else {}
    else:
        from driftloop.archive import profile_archive

        n, report = profile_archive(
            project, since=since, engine=engine, scheduler=scheduler, progress=progress
        )
        vocabulary = {}
    if report is None:
        return None
    return {
        "model": project.name,
        "since": since,
        "engine": engine,
        "rows": n,
        "columns": [
            {
                "column": c.column,
                "kind": c.kind,
                "n": c.n_current,
                "statistic": c.effect,
                "threshold": c.effect_threshold,
                "p_value": c.p_value,
                "psi": c.psi,
                "missing_change": c.missing_change,
                "drifted": bool(c.drifted),
            }
            for c in report.columns
        ],
        "drifted": list(report.drifted),
        "vocabulary": vocabulary,
    }


def jsonable(value: Any) -> Any:
    """``value`` with every non-finite float as None (JSON has no NaN) and numpy scalars as Python's.

    >>> jsonable({"a": float("nan"), "b": [1.5, float("inf")]})
    {'a': None, 'b': [1.5, None]}
    """
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # a numpy scalar
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def shadow_view(project: Project, version: str | None = None) -> dict[str, Any]:
    """The challenger in shadow against what was served, on the same requests: how often their
    outputs are the same (not for regression, whose numbers rarely are), and the gate's metric of
    each: a scorer on every request, a metric of the task on the requests with a label (under
    the feedback policy, as the monitor counts them)."""
    from driftloop.scoring import logged_score

    store, name = project.store, project.name
    metric = project.settings.gate.primary_metric
    pairs = store.shadow_pairs(name, version)
    labels: dict[str, Any] = {}
    if pairs:
        labels = {
            r["prediction_id"]: r["label"]
            for r in store.labelled(name, start_seq=pairs[0]["seq"], policy=project.settings.feedback)
        }

    def rows(side: str) -> list[dict[str, Any]]:
        return [
            {
                "inputs": r["inputs"],
                "prediction": r[side],
                "probabilities": r[f"{side}_probabilities"],
                "label": labels.get(r["prediction_id"]),
            }
            for r in pairs
        ]

    same = project.task.name != "regression" and pairs
    return {
        "versions": sorted({r["model_version"] for r in pairs}),
        "requests": len(pairs),
        "agreement": sum(r["served"] == r["shadow"] for r in pairs) / len(pairs) if same else None,
        "labelled": sum(r["prediction_id"] in labels for r in pairs),
        "metric": metric,
        "served": logged_score(project, rows("served"), metric),
        "shadow": logged_score(project, rows("shadow"), metric),
    }
