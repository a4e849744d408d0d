"""``driftloop demo --scenario blog``: a post generator kept fresh, over real HTTP.

1. Train the generator on concept A's posts; it becomes the champion.
2. Prompts stream to the real server; the monitor runs the scorers (freshness, relevance,
   coherence, repetition) on every window, off the response path.
3. A simulated reviewer rates and tags a share of the outputs ("dated" when a post names an
   older tool than the prompt asked for) and rewrites a few (the post the prompt asked for).
4. The topics move on (A -> B): freshness and relevance fall, the ``stale-posts`` rule fires
   and queues a retrain on recent prompts, rewrites and accepted outputs.
5. The gate lets champion and challenger write for the same held-out prompts and compares
   their scorers, paired, and the judge's preference; the fresher model is promoted.
6. A candidate that is fresher but unreadable (a word salad of trending terms) is trained by
   hand; the gate rejects it for coherence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from driftloop import workflow
from driftloop.demo.blog import TOPICS, posts, terms_csv
from driftloop.monitor import Monitor
from driftloop.project import Project
from driftloop.scorers import words
from driftloop.serving import create_app
from driftloop.training import train

__all__ = ["BlogResult", "run_blog"]

_OLD = {t.lower() for topic in TOPICS.values() for t in topic["A"]}


@dataclass
class BlogResult:
    folder: Path
    freshness: tuple[float, float, float]  # before the shift, after it, after the promotion
    coherence: tuple[float, float, float]
    promoted: int
    rejected: int
    timeline: list[dict[str, Any]] = field(default_factory=list)

    @property
    def summary(self) -> str:
        f, c = self.freshness, self.coherence
        return (
            f"freshness before shift {f[0]:.3f} | after shift {f[1]:.3f} | after promotion {f[2]:.3f}; "
            f"coherence {c[0]:.3f} | {c[1]:.3f} | {c[2]:.3f} | retrains promoted {self.promoted}, "
            f"rejected {self.rejected} | artifacts in {self.folder}"
        )


def _review(prompt: str, output: str, rng: np.random.Generator) -> dict[str, Any]:
    """A reviewer's rating and tags: a post that names an older tool than asked is dated."""
    asked = set(words(prompt)) - _OLD
    used = set(words(output))
    dated = bool(used & _OLD) and not (set(words(prompt)) & _OLD)
    off_topic = not any(w in used for w in asked if len(w) > 3)
    tags = (["dated"] if dated else []) + (["off-topic"] if off_topic else [])
    rating = 2.0 if tags else float(rng.choice([4, 5]))
    return {"rating": rating, "tags": tags}


def run_blog(
    folder: Path,
    *,
    seed: int = 7,
    windows: int = 10,
    drift_at: int = 3,
    window_rows: int = 200,
    review_share: float = 0.4,
    rewrite_share: float = 0.5,
    train_rows: int = 1500,
    console: Console | None = None,
) -> BlogResult:
    """Run the blog scenario in ``folder`` (see the module docstring); ``rewrite_share`` of the
    reviewed outputs also get the post the prompt asked for as a preferred text."""
    from driftloop.demo.scenario import _wait_for_swap, scenario_project, serve_in_thread

    console = console or Console()
    folder = folder.resolve()
    project = scenario_project(folder, "blog", seed=seed, rows=train_rows, window_rows=window_rows)
    rng = np.random.default_rng(seed + 1)
    console.rule("[bold]driftloop demo: blog")
    first = train(project)
    console.print(
        f"Champion: version {first.version} (validation token F1 {first.metrics['validation_token_f1']:.3f})"
    )
    workflow.launch(project)
    monitor = Monitor(project)
    events: dict[int, list[str]] = {}
    promoted = rejected = 0
    pending: list[dict[str, Any]] = []
    try:
        with (
            serve_in_thread(create_app(project, background=True, monitor=False)) as url,
            httpx.Client(base_url=url, timeout=60) as client,
            Progress(console=console, transient=True) as bar,
        ):
            progress = bar.add_task("streaming prompts", total=windows)
            for w in range(windows):
                concept = "A" if w < drift_at else "B"
                if w == drift_at:  # the owner adds the new tools to the trend list
                    events.setdefault(w, []).append("topics move on A→B")
                    (folder / "terms.csv").write_text(terms_csv(("A", "B")))
                df = posts(window_rows, concept, seed=rng)
                records = df.drop(columns="post").to_dict(orient="records")
                response = client.post("/predict", json={"records": records})
                response.raise_for_status()
                _send(client, pending)  # last window's reviews arrive now: one window late
                pending = []
                for j, p in enumerate(response.json()["predictions"]):
                    if rng.random() >= review_share:
                        continue
                    said = _review(df["prompt"].iloc[j], p["text"], rng)
                    if rng.random() < rewrite_share:
                        said["preferred"] = df["post"].iloc[j]
                    pending.append({"prediction_id": p["prediction_id"], "source": "editor", **said})
                monitored = workflow.monitor_and_trigger(project, monitor)
                events.setdefault(w, []).extend(f"alert {a['rule']}" for a in monitored.alerts)
                for run in project.store.runs(project.name, active_only=True):
                    outcome = workflow.wait(run["id"])
                    events.setdefault(w, []).append(
                        f"retrain {outcome['status']} (v{outcome['challenger_version']})"
                    )
                    _report(console, w, run["id"], outcome["status"], project)
                    promoted += outcome["status"] == "promoted"
                    rejected += outcome["status"] == "rejected"
                if w == windows - 2:  # a fresh but unreadable candidate, by hand: the gate must say no
                    run_id = workflow.start_retrain(project, "manual:word-salad", trainer="trainer:careless")
                    outcome = workflow.wait(run_id)
                    events.setdefault(w, []).append(f"word-salad candidate {outcome['status']}")
                    _report(console, w, run_id, outcome["status"], project)
                    rejected += outcome["status"] == "rejected"
                _wait_for_swap(client, project)
                bar.advance(progress)
            _send(client, pending)
        workflow.monitor_and_trigger(project, monitor)
    finally:
        workflow.shutdown()
    timeline = _timeline(project, events, windows)
    _print(console, timeline)
    first_version = first.version

    def mean(metric: str, rows: list[dict[str, Any]]) -> float:
        values = [r[metric] for r in rows if r[metric] is not None]
        return float(np.mean(values)) if values else float("nan")

    before = timeline[:drift_at]
    stale = [r for r in timeline[drift_at:] if r["served"] == [first_version]]
    fresh = [r for r in timeline[drift_at:] if first_version not in r["served"]]
    result = BlogResult(
        folder,
        (mean("freshness", before), mean("freshness", stale), mean("freshness", fresh)),
        (mean("coherence", before), mean("coherence", stale), mean("coherence", fresh)),
        promoted,
        rejected,
        timeline,
    )
    (folder / "summary.txt").write_text(result.summary + "\n")
    console.print(f"[bold]summary:[/] {result.summary}")
    project.close()
    return result


def _send(client: httpx.Client, items: list[dict[str, Any]]) -> None:
    for start in range(0, len(items), 500):
        client.post("/feedback", json={"feedback": items[start : start + 500]}).raise_for_status()


def _report(console: Console, w: int, run_id: str, status: str, project: Project) -> None:
    colour = "green" if status == "promoted" else "red"
    console.print(f"[bold]window {w}[/]: retrain {run_id} → [{colour}]{status}[/]")
    for reason in (project.store.decision(run_id) or {}).get("reasons", []):
        console.print(f"    • {reason}")


def _timeline(project: Project, events: dict[int, list[str]], windows: int) -> list[dict[str, Any]]:
    def value(metrics: dict[str, Any], name: str) -> float | None:
        m = metrics.get(name) or {}
        return None if m.get("value") is None else float(m["value"])

    rows = []
    for w, window in enumerate(project.store.windows(project.name, limit=windows + 5)[:windows]):
        metrics = window["metrics"]
        rows.append(
            {
                "window": w,
                "served": sorted(window["model_versions"]),
                **{
                    name: value(metrics, key)
                    for name, key in (
                        ("freshness", "metric.freshness"),
                        ("relevance", "metric.relevance"),
                        ("coherence", "metric.coherence"),
                        ("rating", "rating"),
                        ("dated", "tag.dated"),
                        ("output_drift", "output_drift"),
                        ("novelty", "novelty"),
                    )
                },
                "events": events.get(w, []),
            }
        )
    return rows


def _print(console: Console, timeline: list[dict[str, Any]]) -> None:
    table = Table(title="timeline (one row per monitoring window)")
    columns = ("freshness", "relevance", "coherence", "rating", "dated", "output_drift", "novelty")
    for column in ("window", "served by", *columns, "events"):
        table.add_column(column)
    for row in timeline:
        cells = ["-" if row[c] is None else f"{row[c]:.3f}" for c in columns]
        table.add_row(
            str(row["window"]), ",".join(f"v{v}" for v in row["served"]), *cells, "; ".join(row["events"])
        )
    console.print(table)
