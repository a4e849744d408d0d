"""Custom per-prediction metrics: values sent with requests or computed by the user's function.

Each becomes a numeric column ``metric.<name>`` of a window's custom profile, so it is profiled,
merged and compared like a feature, gets a per-window mean (metric ``metric.<name>``) and can
drive alert rules, thresholds or sequential detectors alike.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from driftloop.config import Settings
from driftloop.exceptions import SchemaError
from driftloop.plugins import load_function
from driftloop.profiles import ProfileSpec

__all__ = ["column", "metric_frame", "metric_spec", "validate_sent"]


def column(name: str) -> str:
    return f"metric.{name}"


def validate_sent(settings: Settings, sent: Any, n_records: int) -> tuple[list[dict[str, float]], list[str]]:
    """The ``"metrics"`` member of a predict body -> one dict per record, plus problems (sentences)."""
    if sent is None:
        return [{} for _ in range(n_records)], []
    rows = [sent] * n_records if isinstance(sent, dict) else sent
    if not isinstance(rows, list) or len(rows) != n_records:
        return [], [
            "'metrics' must be an object (applied to every record) or a list with one object per "
            f"record ({n_records}). Got {type(sent).__name__}"
            + (f" of length {len(sent)}" if isinstance(sent, list) else "")
            + " instead."
        ]
    configured = settings.metrics
    problems: list[str] = []
    out: list[dict[str, float]] = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            problems.append(f"Metrics of record {i} must be an object. Got {type(row).__name__} instead.")
            continue
        clean: dict[str, float] = {}
        for name, value in row.items():
            spec = configured.get(name)
            if spec is None or spec.function is not None:
                sendable = sorted(n for n, m in configured.items() if m.function is None)
                problems.append(
                    f"Metric '{name}' of record {i} is not a metric sent with requests; "
                    f"sendable metrics are {sendable}."
                )
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                problems.append(
                    f"Metric '{name}' of record {i} must be a finite number. Got {value!r} instead."
                )
                continue
            assert spec.min is not None and spec.max is not None
            if not spec.min <= value <= spec.max:
                problems.append(
                    f"Metric '{name}' of record {i} must be between {spec.min:g} and {spec.max:g}. "
                    f"Got {value!r} instead."
                )
                continue
            clean[name] = float(value)
        out.append(clean)
    return out, problems


def metric_frame(
    settings: Settings,
    inputs: pd.DataFrame,
    outputs: pd.DataFrame,
    sent: Sequence[dict[str, Any] | None] | None = None,
) -> pd.DataFrame:
    """One ``metric.<name>`` column per configured metric for these rows (NaN where not sent)."""
    frame = pd.DataFrame(index=range(len(inputs)))
    public = outputs.rename(columns={"__prediction__": "prediction", "__confidence__": "confidence"})
    if "__text__" in outputs:  # a generator's outputs: scorers read the text as "prediction"
        public = pd.DataFrame({"prediction": outputs["__text__"].to_numpy()})
    for name, spec in settings.metrics.items():
        if spec.function is None:
            values = [(row or {}).get(name) for row in sent] if sent is not None else []
            frame[column(name)] = np.array(
                [np.nan if v is None else v for v in values] if values else np.full(len(inputs), np.nan),
                dtype="float64",
            )
            continue
        fn = load_function(spec.function, settings.root, f"metrics.{name}.function")
        params = dict(spec.params)
        if "root" in inspect.signature(fn).parameters:  # relative files in params: the project's
            params["root"] = settings.root
        raw = fn(inputs.reset_index(drop=True), public.reset_index(drop=True), **params)
        result = (
            np.asarray([None if v is None else str(v) for v in raw], dtype=object)
            if spec.kind == "categorical"
            else np.asarray(raw, dtype="float64")
        )
        if result.shape != (len(inputs),):
            raise SchemaError(
                f"The function {spec.function!r} of metric '{name}' must return one number per row "
                f"({len(inputs)}). Got shape {result.shape} instead."
            )
        frame[column(name)] = result
    return frame


def metric_spec(settings: Settings, reference: pd.DataFrame) -> ProfileSpec:
    """Bins per metric: the reference's quantiles when it has values, else ``min``..``max`` evenly."""
    edges: dict[str, np.ndarray] = {}
    labels = {column(n): list(s.categories) for n, s in settings.metrics.items() if s.kind == "categorical"}
    for name, spec in settings.metrics.items():
        if spec.kind == "categorical":
            continue
        values = reference[column(name)].to_numpy("float64") if column(name) in reference else np.array([])
        if np.isfinite(values).sum() >= 2 * spec.bins:
            edges[column(name)] = ProfileSpec.fit(reference, [column(name)], [], bins=spec.bins).numeric[
                column(name)
            ]
        else:
            lo = spec.min if spec.min is not None else float(np.nanmin(values)) if values.size else 0.0
            hi = spec.max if spec.max is not None else float(np.nanmax(values)) if values.size else 1.0
            hi = hi if hi > lo else lo + 1.0
            grid = np.linspace(lo, hi, spec.bins + 1)
            grid[-1] = np.nextafter(grid[-1], np.inf)  # the maximum falls inside, not in the overflow
            edges[column(name)] = grid
    return ProfileSpec(numeric=edges, categorical=labels, sample_size=0)
