"""Pages and the offline report: the views of :mod:`driftloop.views` drawn as HTML with
server-side SVG charts (:mod:`driftloop.ui.charts`), through Jinja2 (the ``ui`` extra).

Everything is inline: no script, font or style sheet is fetched, so a page works offline and a
report is one file that can be mailed. Only stored aggregates are read (windows, metrics,
alerts, runs, decisions), never the logged rows.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from typing import Any

from driftloop.exceptions import ConfigError
from driftloop.project import Project
from driftloop.scoring import is_scorer
from driftloop.ui.charts import Series, calibration_chart, heatmap, line_chart
from driftloop.views import jsonable, shadow_view, status_view, windows_view

__all__ = ["environment", "render_report", "report_context"]


def environment() -> Any:
    """The Jinja2 environment of the templates, or :class:`ConfigError` without the ``ui`` extra."""
    try:
        import jinja2
    except ImportError:
        raise ConfigError(
            "The pages and 'driftloop report' need Jinja2: pip install 'driftloop[ui]'."
        ) from None
    return jinja2.Environment(
        loader=jinja2.PackageLoader("driftloop.ui", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _when(ts: float | None) -> str:
    return "-" if ts is None else dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")


def _natural(name: str) -> list[Any]:
    """Sort key that orders the numbers in a name by value.

    >>> sorted(["e10", "e2", "length"], key=_natural)
    ['e2', 'e10', 'length']
    """
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _value(window: dict[str, Any], name: str) -> float | None:
    m = window["metrics"].get(name)
    return None if m is None else m["value"]


def report_context(project: Project, *, windows: int = 1000) -> dict[str, Any]:
    """Everything a report or the dashboard shows, with its charts drawn."""
    status = status_view(project, windows=0, alerts=200)
    rows = windows_view(project, limit=windows)
    labels = [f"#{w['id']}" for w in rows]
    task = project.task
    metric = project.settings.gate.primary_metric
    lower = metric in project.lower_is_better
    # a scorer (metric.<name>) is measured on every output, labels or not; only metrics from
    # feedback have a label-free estimate beside them
    source = "scored on every output" if is_scorer(metric) else "from feedback"
    estimated = [_value(w, f"estimated_{metric}") for w in rows]
    performance = line_chart(
        [
            Series(f"{metric} {source}", [_value(w, metric) for w in rows]),
            *(
                [
                    Series(
                        f"estimated {metric} (label-free) and its band",
                        estimated,
                        low=[_value(w, f"estimated_{metric}_low") for w in rows],
                        high=[_value(w, f"estimated_{metric}_high") for w in rows],
                        dashed=True,
                    )
                ]
                if any(v is not None for v in estimated)
                else []
            ),
        ],
        labels=labels,
        title=f"{metric} per window",
        markers=[
            (i, f"v{','.join(w['model_versions'])}")
            for i, w in enumerate(rows)
            if i > 0 and w["model_versions"] != rows[i - 1]["model_versions"]
        ],
    )
    features = sorted({f for w in rows for f in w["drift"]}, key=_natural)  # prompt.e2 before prompt.e10
    cells = [
        [
            None
            if f not in w["drift"] or w["drift"][f]["statistic"] is None or not w["drift"][f]["threshold"]
            else min(w["drift"][f]["statistic"] / w["drift"][f]["threshold"] / 2, 1.0)
            for w in rows
        ]
        for f in features
    ]
    flagged = [[bool(w["drift"].get(f, {}).get("drifted")) for w in rows] for f in features]
    extra = sorted(
        {
            name
            for w in rows
            for name in w["metrics"]
            if name in ("mean_confidence", "prediction_drift", "output_drift", "novelty", "rating")
            or name.startswith(("metric.", "tag.", "scored."))
        }
    )
    others = (
        line_chart([Series(name, [_value(w, name) for w in rows]) for name in extra], labels=labels)
        if extra
        else None
    )
    fields = list(project.settings.fields)  # an extractor: each field's F1 per window, as a heat map
    field_rows = [
        (f, [_value(w, f"f1.{f}") for w in rows], [_value(w, f"presence.{f}") for w in rows]) for f in fields
    ]
    field_map = (
        heatmap(
            fields,
            labels,
            [[None if v is None else 1.0 - v for v in f1] for _, f1, _ in field_rows],
            [[v is not None and v < 0.8 for v in f1] for _, f1, _ in field_rows],
            title="per-field F1 per window (darker: worse)",
        )
        if fields and rows
        else None
    )
    optimism = status.get("gate_optimism") or {}
    error = optimism.get("metric") in project.lower_is_better  # over-promised: live above the estimate
    calibration = (
        calibration_chart(
            [
                (o["run_id"], o["gate"], o["live"], o["n"])
                for o in optimism["records"]
                if o["metric"] == optimism["metric"]  # one scale: the newest promotions' metric
            ],
            metric=optimism["metric"],
            lower_is_better=error,
        )
        if optimism.get("records")
        else None
    )
    shadow = shadow_view(project)
    return {
        "generated": _when(time.time()),
        "model": project.name,
        "task": task.name,
        "metric": metric,
        "source": source,
        "estimated": any(v is not None for v in estimated),
        "lower_is_better": lower,
        "calibration_side": "Above" if error else "Below",
        "status": status,
        "windows": rows,
        "latest": rows[-1] if rows else None,
        "labels": labels,
        "features": features,
        "charts": {
            "performance": performance,
            "drift": heatmap(features, labels, cells, flagged, title="drift per feature and window")
            if features
            else None,
            "others": others,
            "fields": field_map,
            "calibration": calibration,
        },
        "fields": field_rows,
        "extra": extra,
        "shadow": jsonable(shadow) if shadow.get("requests") else None,
        "canaries": jsonable(project.store.rollouts(project.name)),
        "when": _when,
        "value": _value,
    }


def render_report(project: Project, *, windows: int = 1000) -> str:
    """One self-contained HTML file of the dashboard's views, from stored aggregates."""
    return str(
        environment().get_template("report.html.j2").render(**report_context(project, windows=windows))
    )
