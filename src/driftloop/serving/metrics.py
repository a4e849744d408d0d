"""``GET /metrics``: the API's counters and the project's state as Prometheus text.

:class:`Metrics` is what the app counts as it serves (requests, predictions by version, latency
histograms, shadow and guard counts); :func:`prometheus_text` renders it beside what the store
knows (retrain runs, gate optimism, the newest window's metrics and drift, monitor health).
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from driftloop import views
from driftloop.project import Project
from driftloop.serving.batcher import Batcher
from driftloop.serving.logproc import ProcessLogWriter
from driftloop.serving.slots import ModelSlot
from driftloop.serving.writer import LogWriter

__all__ = ["LATENCY_BUCKETS", "Metrics", "prometheus_text"]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """What the API counts as it serves, for ``GET /metrics`` (one lock; updated per request)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: Counter[tuple[str, int]] = Counter()
        self.predictions: Counter[str] = Counter()
        self.invalid = 0
        self.latency: dict[str, list[int]] = {}
        self.latency_sum: dict[str, float] = {}
        self.shadow = 0
        self.shadow_errors = 0
        self.guard: Counter[str] = Counter()  # refused: "overload", "host" (the Guard), "rate", "lockout"
        self.model_errors = 0

    def observe(self, version: str, seconds: float, rows: int) -> None:
        with self.lock:
            self.predictions[version] += rows
            buckets = self.latency.setdefault(version, [0] * (len(LATENCY_BUCKETS) + 1))
            for i, edge in enumerate(LATENCY_BUCKETS):
                if seconds <= edge:
                    buckets[i] += 1
            buckets[-1] += 1
            self.latency_sum[version] = self.latency_sum.get(version, 0.0) + seconds


def _label(value: str) -> str:
    """A Prometheus label value: backslash, quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def prometheus_text(
    project: Project,
    slot: ModelSlot,
    writer: LogWriter | ProcessLogWriter,
    stats: Metrics,
    challenger: ModelSlot,
    routing: dict[str, Any],
    batcher: Batcher,
) -> str:
    from driftloop.optimism import optimism_summary

    name = project.name
    other, canary = challenger.current, routing["canary"]
    optimism = optimism_summary(project)  # the gate's estimate minus what promoted models reached live
    lines = ["# TYPE driftloop_requests_total counter"]
    with stats.lock:
        for (route, status), n in sorted(stats.requests.items()):
            lines.append(f'driftloop_requests_total{{model="{name}",route="{route}",status="{status}"}} {n}')
        lines.append("# TYPE driftloop_predictions_total counter")
        for version, n in sorted(stats.predictions.items()):
            lines.append(f'driftloop_predictions_total{{model="{name}",version="{version}"}} {n}')
        lines += [
            "# TYPE driftloop_invalid_requests_total counter",
            f'driftloop_invalid_requests_total{{model="{name}"}} {stats.invalid}',
            "# TYPE driftloop_request_seconds histogram",
        ]
        for version, buckets in sorted(stats.latency.items()):
            for edge, n in zip((*LATENCY_BUCKETS, "+Inf"), buckets, strict=True):
                lines.append(
                    f'driftloop_request_seconds_bucket{{model="{name}",version="{version}",le="{edge}"}} {n}'
                )
            lines.append(
                f'driftloop_request_seconds_sum{{model="{name}",version="{version}"}} '
                f"{stats.latency_sum[version]:.6f}"
            )
            lines.append(
                f'driftloop_request_seconds_count{{model="{name}",version="{version}"}} {buckets[-1]}'
            )
    loaded = slot.current
    lines += [
        "# TYPE driftloop_log_queue_depth gauge",
        f'driftloop_log_queue_depth{{model="{name}"}} {writer.depth}',
        "# TYPE driftloop_log_rows_lost_total counter",
        f'driftloop_log_rows_lost_total{{model="{name}"}} {writer.rows_lost}',
        "# TYPE driftloop_rejected_requests_total counter",
        f'driftloop_rejected_requests_total{{model="{name}",reason="overload"}} {stats.guard["overload"]}',
        f'driftloop_rejected_requests_total{{model="{name}",reason="host"}} {stats.guard["host"]}',
        f'driftloop_rejected_requests_total{{model="{name}",reason="rate"}} {stats.guard["rate"]}',
        f'driftloop_rejected_requests_total{{model="{name}",reason="lockout"}} {stats.guard["lockout"]}',
        "# TYPE driftloop_model_errors_total counter",
        f'driftloop_model_errors_total{{model="{name}"}} {stats.model_errors}',
        "# TYPE driftloop_champion_info gauge",
        f'driftloop_champion_info{{model="{name}",version="{loaded.version if loaded else ""}"}} 1',
        "# TYPE driftloop_challenger_info gauge",
        f'driftloop_challenger_info{{model="{name}",version="{other.version if other else ""}"}} '
        f"{1 if other else 0}",
        "# TYPE driftloop_canary_share gauge",
        f'driftloop_canary_share{{model="{name}"}} {canary[1] if canary else 0}',
        "# TYPE driftloop_model_calls_total counter",
        f'driftloop_model_calls_total{{model="{name}"}} {batcher.calls}',
        "# TYPE driftloop_model_call_requests_total counter",
        f'driftloop_model_call_requests_total{{model="{name}"}} {batcher.requests}',
        "# TYPE driftloop_gate_optimism gauge",
        f'driftloop_gate_optimism{{model="{name}"}} {optimism["mean"] if optimism else "NaN"}',
        "# TYPE driftloop_gate_optimism_standard_error gauge",  # of the mean, over the promotions
        f'driftloop_gate_optimism_standard_error{{model="{name}"}} '
        f"{optimism['se'] if optimism and optimism['se'] is not None else 'NaN'}",
        "# TYPE driftloop_gate_optimism_raw gauge",  # from the winner's score before the choice's correction
        f'driftloop_gate_optimism_raw{{model="{name}"}} {optimism["mean_raw"] if optimism else "NaN"}',
        "# TYPE driftloop_gate_gain_optimism gauge",  # the promised improvement minus the delivered one
        f'driftloop_gate_gain_optimism{{model="{name}"}} '
        f"{optimism['mean_gain'] if optimism and optimism.get('mean_gain') is not None else 'NaN'}",
        "# TYPE driftloop_gate_optimism_promotions gauge",
        f'driftloop_gate_optimism_promotions{{model="{name}"}} {optimism["n"] if optimism else 0}',
        "# TYPE driftloop_shadow_predictions_total counter",
        f'driftloop_shadow_predictions_total{{model="{name}"}} {stats.shadow}',
        "# TYPE driftloop_shadow_errors_total counter",
        f'driftloop_shadow_errors_total{{model="{name}"}} {stats.shadow_errors}',
    ]
    runs = project.store.runs(name, limit=1000)
    by_status = Counter(r["status"] for r in runs)
    lines.append("# TYPE driftloop_retrain_runs_total counter")
    for state in ("queued", "running", "promoted", "rejected", "skipped", "failed"):
        lines.append(f'driftloop_retrain_runs_total{{model="{name}",status="{state}"}} {by_status[state]}')
    finished = [r["finished_at"] - r["started_at"] for r in runs if r["finished_at"]]
    lines += [
        "# TYPE driftloop_retrain_seconds summary",
        f'driftloop_retrain_seconds_sum{{model="{name}"}} {sum(finished):.3f}',
        f'driftloop_retrain_seconds_count{{model="{name}"}} {len(finished)}',
    ]
    archived = views.archive_view(project)
    lines += [  # how much the store holds, and what moved out of it
        "# TYPE driftloop_store_predictions gauge",
        f'driftloop_store_predictions{{model="{name}"}} {project.store.count_predictions(name)}',
        "# TYPE driftloop_archive_predictions gauge",
        f'driftloop_archive_predictions{{model="{name}"}} {archived["predictions"]}',
        "# TYPE driftloop_archive_bytes gauge",
        f'driftloop_archive_bytes{{model="{name}"}} {archived["bytes"]}',
        "# TYPE driftloop_archive_through_seq gauge",
        f'driftloop_archive_through_seq{{model="{name}"}} {archived["through_seq"]}',
    ]
    lines.append("# TYPE driftloop_alerts_total counter")
    for rule, n in project.store.alert_counts(name).items():
        lines.append(f'driftloop_alerts_total{{model="{name}",rule="{_label(rule)}"}} {n}')
    given_up = [bool(d["given_up"]) for d in project.store.undelivered(name)]
    lines.append("# TYPE driftloop_alert_deliveries_undelivered gauge")  # retried each pass, or given up
    for state, n in (("retrying", given_up.count(False)), ("given_up", given_up.count(True))):
        lines.append(f'driftloop_alert_deliveries_undelivered{{model="{name}",state="{state}"}} {n}')
    latest = views.windows_view(project, limit=1)
    if latest:  # the newest window: every metric, and each feature's drift statistic
        w = latest[0]
        lines += [
            "# TYPE driftloop_window_end_timestamp_seconds gauge",
            f'driftloop_window_end_timestamp_seconds{{model="{name}"}} {w["end_ts"]:.3f}',
            "# TYPE driftloop_window_rows gauge",
            f'driftloop_window_rows{{model="{name}"}} {w["rows"]}',
            "# TYPE driftloop_window_metric gauge",
        ]
        for metric, m in w["metrics"].items():
            value = "NaN" if m["value"] is None else repr(float(m["value"]))
            lines.append(f'driftloop_window_metric{{model="{name}",metric="{_label(metric)}"}} {value}')
        share = len(w["drifted"]) / len(w["drift"]) if w["drift"] else 0.0
        lines += [
            "# TYPE driftloop_window_drifted_feature_share gauge",
            f'driftloop_window_drifted_feature_share{{model="{name}"}} {share:.6f}',
            "# TYPE driftloop_feature_drift gauge",
        ]
        for feature, d in w["drift"].items():
            value = "NaN" if d["statistic"] is None else repr(float(d["statistic"]))
            lines.append(
                f'driftloop_feature_drift{{model="{name}",feature="{_label(feature)}",'
                f'drifted="{str(d["drifted"]).lower()}"}} {value}'
            )
    ok = project.store.monitor_runs(name, limit=1, ok=True)
    failed = project.store.monitor_runs(name, limit=1, ok=False)
    lines += [
        "# TYPE driftloop_monitor_last_success_timestamp_seconds gauge",
        f'driftloop_monitor_last_success_timestamp_seconds{{model="{name}"}} '
        f"{ok[-1]['finished_at'] if ok else 0:.3f}",
        "# TYPE driftloop_monitor_last_failure_timestamp_seconds gauge",
        f'driftloop_monitor_last_failure_timestamp_seconds{{model="{name}"}} '
        f"{failed[-1]['finished_at'] if failed else 0:.3f}",
    ]
    return "\n".join(lines) + "\n"
