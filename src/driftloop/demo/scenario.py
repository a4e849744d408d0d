"""``driftloop demo``: the whole loop on embedded defaults, over real HTTP, offline.

1. Train a loan-approval classifier on concept A; it becomes the champion.
2. Start the real server on 127.0.0.1 and send traffic window by window.
3. Simulated reviewers label ~20 % of predictions, one window late.
4. Mid-stream the concept changes (A -> B). Monitoring shows feature drift and, once labels
   arrive, the accuracy drop; the alert rule queues the durable retraining workflow.
5. The gate compares challenger and champion on the same held-out rows and promotes; the
   server swaps to the new champion without a restart; accuracy recovers. The post-deploy
   watch then compares the new champion's first windows with the old one's gate score.
6. A deliberately careless candidate is trained by hand; the gate rejects it; the champion stays.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import uvicorn
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from driftloop import workflow
from driftloop.config import ServingSettings
from driftloop.demo.data import applicants
from driftloop.demo.documents import documents
from driftloop.demo.houses import houses
from driftloop.demo.project import write_example
from driftloop.demo.shapes import shapes
from driftloop.monitor import Monitor
from driftloop.project import Project
from driftloop.serving import create_app
from driftloop.training import train

__all__ = ["DemoResult", "free_port", "run_demo", "serve_in_thread"]


@dataclass(frozen=True)
class Scenario:
    """A template's stream: its data generator (rows, concept, seed) and the metric it is judged by."""

    template: str
    data: Callable[..., pd.DataFrame]
    target: str
    metric: str  # accuracy (higher is better) or mae (lower is better)
    window_rows: int = 3000  # rows per monitoring window in the demo
    train_rows: int = 5000  # rows of the first training set


SCENARIOS = {
    "loan": Scenario("loan", applicants, "approved", "accuracy"),
    "regression": Scenario("regression", houses, "price", "mae"),
    "images": Scenario("images", shapes, "shape", "accuracy", window_rows=1000, train_rows=3000),
    "documents": Scenario("documents", documents, "doc_type", "accuracy", window_rows=1500, train_rows=3000),
}


@dataclass
class DemoResult:
    folder: Path
    before: float
    after_drift: float
    after_promotion: float
    promoted: int
    rejected: int
    timeline: list[dict[str, Any]] = field(default_factory=list)
    metric: str = "accuracy"

    @property
    def summary(self) -> str:
        return (
            f"{self.metric} before drift {self.before:.3f} | after drift {self.after_drift:.3f} | "
            f"after promotion {self.after_promotion:.3f} | retrains promoted {self.promoted}, "
            f"rejected {self.rejected} | artifacts in {self.folder}"
        )


def scenario_project(folder: Path, template: str, *, seed: int, rows: int, window_rows: int) -> Project:
    """A scenario's project, written into an empty ``folder`` from ``template`` (training rows of
    concept A, windows of ``window_rows``, a quick champion reload) and opened."""
    if (folder / ".driftloop").exists():
        raise FileExistsError(
            f"The demo folder '{folder}' already holds a run; choose another --out or remove it."
        )
    config = write_example(
        folder,
        seed=seed,
        rows=rows,
        window=f"{window_rows} rows",
        replay_fraction=0.1,
        reload_interval="250ms",
        template=template,
    )
    return Project.load(config)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class serve_in_thread:
    """Run uvicorn with the app on 127.0.0.1 in a thread: ``with serve_in_thread(app) as url:``."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        from driftloop.serving.http import uvicorn_config

        self.port = port or free_port()
        project = getattr(getattr(app, "state", None), "project", None)
        settings = project.settings.serving if project is not None else ServingSettings()
        self.server = uvicorn.Server(
            uvicorn_config(app, settings, host="127.0.0.1", port=self.port, lifespan="on")
        )
        self.thread = threading.Thread(target=self.server.run, name="driftloop-demo-server", daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.time() + 60
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("The demo server did not start.")
            time.sleep(0.02)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def run_demo(
    folder: Path,
    *,
    seed: int = 7,
    windows: int = 14,
    drift_at: int = 5,
    window_rows: int | None = None,
    label_share: float = 0.2,
    batch: int = 250,
    console: Console | None = None,
    scenario: str = "loan",
) -> DemoResult:
    console = console or Console()
    if scenario not in SCENARIOS:
        raise ValueError(f"The scenario must be one of {sorted(SCENARIOS)}. Got {scenario!r} instead.")
    stream = SCENARIOS[scenario]
    window_rows = window_rows or stream.window_rows
    folder = folder.resolve()
    project = scenario_project(
        folder, stream.template, seed=seed, rows=stream.train_rows, window_rows=window_rows
    )
    rng = np.random.default_rng(seed + 1)
    console.rule(f"[bold]driftloop demo: {scenario}")
    console.print(f"Project written to [cyan]{folder}[/]; training the first champion on concept A…")
    first = train(project)
    console.print(
        f"Champion: version {first.version} "
        f"(validation {stream.metric} {first.metrics[f'validation_{stream.metric}']:.3f})"
    )
    workflow.launch(project)
    monitor = Monitor(project)
    truth: dict[str, tuple[str, int, str]] = {}  # prediction id -> (true label, window, served version)
    events: dict[int, list[str]] = {}
    watched = 0
    pending_labels: list[tuple[str, str]] = []
    promoted = rejected = 0
    try:
        with (
            serve_in_thread(create_app(project, background=True, monitor=False)) as url,
            httpx.Client(base_url=url, timeout=60) as client,
            Progress(console=console, transient=True) as bar,
        ):
            task = bar.add_task("streaming traffic", total=windows)
            for w in range(windows):
                concept = "A" if w < drift_at else "B"
                if w == drift_at:
                    events.setdefault(w, []).append("concept changes A→B")
                df = stream.data(window_rows, concept, seed=rng)
                records = df.drop(columns=stream.target).to_dict(orient="records")
                ids: list[str] = []
                for start in range(0, window_rows, batch):
                    response = client.post("/predict", json={"records": records[start : start + batch]})
                    response.raise_for_status()
                    body = response.json()
                    for j, p in enumerate(body["predictions"]):
                        truth[p["prediction_id"]] = (
                            df[stream.target].iloc[start + j],
                            w,
                            body["model_version"],
                        )
                        ids.append(p["prediction_id"])
                # reviewers label last window's sample now (one window late), and sample this one
                _send_labels(client, pending_labels)
                chosen = rng.random(len(ids)) < label_share
                pending_labels = [(pid, truth[pid][0]) for pid, keep in zip(ids, chosen, strict=True) if keep]
                monitored = workflow.monitor_and_trigger(project, monitor)
                for alert in monitored.alerts:
                    events.setdefault(w, []).append(f"alert {alert['rule']}")
                judged = [p for p in project.store.promotions(project.name) if p["action"] == "watch-kept"]
                if len(judged) > watched:  # the post-deploy watch judged the newest promotion
                    watched = len(judged)
                    events.setdefault(w, []).append(f"watch kept v{judged[-1]['to_version']}")
                for run in project.store.runs(project.name, active_only=True):
                    outcome = workflow.wait(run["id"])
                    decision = project.store.decision(run["id"])
                    events.setdefault(w, []).append(
                        f"retrain {outcome['status']} (v{outcome['challenger_version']})"
                    )
                    console.print(
                        f"[bold]window {w}[/]: retrain {run['id']} ({run['trigger']}) → "
                        f"[{'green' if outcome['status'] == 'promoted' else 'red'}]{outcome['status']}[/]"
                    )
                    for reason in (decision or {}).get("reasons", []):
                        console.print(f"    • {reason}")
                    promoted += outcome["status"] == "promoted"
                    rejected += outcome["status"] == "rejected"
                    _wait_for_swap(client, project)
                if w == windows - 2:  # a careless candidate, by hand: the gate must say no
                    run_id = workflow.start_retrain(
                        project, "manual:careless-candidate", trainer="trainer:careless"
                    )
                    outcome = workflow.wait(run_id)
                    decision = project.store.decision(run_id) or {}
                    events.setdefault(w, []).append(f"careless candidate {outcome['status']}")
                    console.print(f"[bold]window {w}[/]: careless candidate → [red]{outcome['status']}[/]")
                    for reason in decision.get("reasons", []):
                        console.print(f"    • {reason}")
                    rejected += outcome["status"] == "rejected"
                bar.advance(task)
            _send_labels(client, pending_labels)
        workflow.monitor_and_trigger(project, monitor)
    finally:
        workflow.shutdown()
    timeline = _timeline(project, truth, events, windows, stream.metric)
    _print_timeline(console, timeline, stream.metric)
    first_version = first.version
    acc = {row["window"]: row for row in timeline}
    before = _mean([acc[w]["accuracy"] for w in range(drift_at)])
    after_drift = _mean(
        [acc[w]["accuracy"] for w in range(drift_at, windows) if acc[w]["served"] == [first_version]]
    )
    after_promo = _mean(
        [acc[w]["accuracy"] for w in range(drift_at, windows) if first_version not in acc[w]["served"]]
    )
    result = DemoResult(folder, before, after_drift, after_promo, promoted, rejected, timeline, stream.metric)
    (folder / "summary.txt").write_text(result.summary + "\n")
    console.print(f"[bold]summary:[/] {result.summary}")
    project.close()
    return result


def _send_labels(client: httpx.Client, labels: list[tuple[str, str]]) -> None:
    for start in range(0, len(labels), 500):
        chunk = [
            {"prediction_id": pid, "label": label, "source": "reviewer"}
            for pid, label in labels[start : start + 500]
        ]
        client.post("/feedback", json={"feedback": chunk}).raise_for_status()


def _wait_for_swap(client: httpx.Client, project: Project, timeout: float = 30.0) -> None:
    champion = project.champion()
    deadline = time.time() + timeout
    while time.time() < deadline and client.get("/health").json()["champion"] != champion:
        time.sleep(0.05)


def _timeline(
    project: Project,
    truth: dict[str, tuple[Any, int, str]],
    events: dict[int, list[str]],
    windows: int,
    metric: str = "accuracy",
) -> list[dict[str, Any]]:
    per_window: dict[int, list[tuple[float, str]]] = {}
    labels = {}
    for row in project.store.predictions_after(project.name, 0, 10_000_000):
        labels[row["prediction_id"]] = row["prediction"]
    for pid, (label, w, version) in truth.items():
        served = labels.get(pid)
        score = (  # per row: right or wrong; or the absolute error
            float(served == label) if metric == "accuracy" else abs(float(served or "nan") - float(label))
        )
        per_window.setdefault(w, []).append((score, version))
    monitored = project.store.windows(project.name, limit=windows + 5)
    timeline = []
    for w in range(windows):
        rows = per_window.get(w, [])
        metrics = monitored[w]["metrics"] if w < len(monitored) else {}
        timeline.append(
            {
                "window": w,
                "accuracy": float(np.mean([ok for ok, _ in rows])) if rows else float("nan"),
                "monitored_accuracy": (metrics.get(metric) or {}).get("value"),
                "labelled": (metrics.get("labelled") or {}).get("n", 0),
                "drift_share": (metrics.get("drift_share") or {}).get("value"),
                "estimated_accuracy": (metrics.get(f"estimated_{metric}") or {}).get("value"),
                "multivariate_auc": (metrics.get("multivariate_auc") or {}).get("value"),
                "prediction_drift": (metrics.get("prediction_drift") or {}).get("value"),
                "served": sorted({v for _, v in rows}),
                "events": events.get(w, []),
            }
        )
    return timeline


def _print_timeline(console: Console, timeline: list[dict[str, Any]], metric: str = "accuracy") -> None:
    table = Table(title="timeline (one row per monitoring window)")
    for column in (
        "window",
        "served by",
        f"{metric} (truth)",
        f"{metric} (feedback)",
        "estimated (no labels)",
        "labels",
        "drifted features",
        "multivariate AUC",
        "prediction drift",
        "events",
    ):
        table.add_column(column)

    def fmt(value: float | None, spec: str = "{:.3f}") -> str:
        return "-" if value is None else spec.format(value)

    for row in timeline:
        table.add_row(
            str(row["window"]),
            ",".join(f"v{v}" for v in row["served"]),
            fmt(row["accuracy"]),
            fmt(row["monitored_accuracy"]),
            fmt(row["estimated_accuracy"]),
            str(row["labelled"]),
            fmt(row["drift_share"], "{:.0%}"),
            fmt(row["multivariate_auc"]),
            fmt(row["prediction_drift"]),
            "; ".join(row["events"]),
        )
    console.print(table)


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")
