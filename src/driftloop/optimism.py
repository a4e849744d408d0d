"""The gate's calibration in the open: what promoted models were promised against what they
reached live, summarised for ``driftloop status``, ``GET /status`` and ``/metrics``.

Only stored records are read here, and nothing heavier than the store is imported, so the
read-only commands stay fast (the post-deploy watch that writes the records is in
:mod:`driftloop.watch`).
"""

from __future__ import annotations

import math
from statistics import fmean, stdev
from typing import Any

from driftloop.project import Project

__all__ = ["optimism_summary", "summarise_optimism"]


def optimism_summary(project: Project, limit: int = 200) -> dict[str, Any] | None:
    """The gate's calibration over the last promotions that have a live score
    (:func:`summarise_optimism` of their records), or None before any."""
    records = [
        {"run_id": r["id"], **r["options"]["gate_optimism"]}
        for r in project.store.runs(project.name, limit=limit)
        if (r["options"] or {}).get("gate_optimism")
    ]
    return summarise_optimism(records) if records else None


def summarise_optimism(records: list[dict[str, Any]]) -> dict[str, Any]:
    """``{"mean", "se", "mean_raw", "mean_gain", "se_gain", "n", "n_gain", "metric", "records"}``
    of promotion records (positive mean: the gate promised more than the models delivered;
    ``mean_gain``: more improvement over the previous champion than the two showed on the same
    live rows). ``se`` is the standard error of the mean (None below two promotions), so a mean
    past a limit can be told from one promotion's bad luck.

    >>> s = summarise_optimism([{"optimism": 0.03, "metric": "accuracy"},
    ...                         {"optimism": -0.01, "metric": "accuracy"}])
    >>> s["mean"], s["se"], s["n"], s["mean_gain"]
    (0.01, 0.02, 2, None)
    """
    values = [r["optimism"] for r in records]
    paired = [r["gain_optimism"] for r in records if r.get("gain_optimism") is not None]
    return {
        "mean": round(fmean(values), 6),
        "se": _standard_error(values),
        "mean_raw": round(fmean([r.get("optimism_raw", r["optimism"]) for r in records]), 6),
        "mean_gain": round(fmean(paired), 6) if paired else None,
        "se_gain": _standard_error(paired),
        "n_gain": len(paired),  # promotions recorded before the paired figure existed have none
        "n": len(records),
        "metric": records[-1]["metric"],
        "records": records,
    }


def _standard_error(values: list[float]) -> float | None:
    return round(stdev(values) / math.sqrt(len(values)), 6) if len(values) > 1 else None
