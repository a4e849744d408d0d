"""``driftloop demo --scenario forms``: an entity extractor corrected field by field, over HTTP.

1. Train the token tagger on layout A's documents; it becomes the champion. Beside it, in the
   same store, a document classifier (``doc-types``) learns the documents' kinds: two models,
   one store, each with its own windows, alerts and labels.
2. Documents stream to the real server; each answer has every field's value and confidence.
3. A simulated reviewer checks a share of them one window late: a wrong field is corrected, a
   missing one filled in, a spurious one marked absent, and the rest confirmed in the same
   correction (``"confirm": "rest"``).
4. A new portal's layout arrives (A -> B): the date of birth, provider and amount fields fail
   while the name and the reference keep working; the per-field format checks and confidences
   move at once, the per-field F1 once corrections arrive; the ``dob-f1-drop`` rule queues a
   retrain.
5. The retraining set oversamples documents whose corrections touched the weakest fields and
   balances corrected with confirmed ones; the gate judges every field (critical fields' floors,
   the largest field regression) on the same held-out documents, and promotes.
6. A careless reviewer ("temp") answers review-queue items by confirming whatever was served;
   their agreement with the clerk's trusted corrections falls with the new layout, and the
   monitoring pass quarantines them: their labels stop counting.
7. Before the retrain, a candidate that never learned dates of birth is trained by hand: better
   overall than the stale champion, blind on a critical field; the gate rejects it and names it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from driftloop import review, workflow
from driftloop.demo.blog_scenario import _report, _send
from driftloop.demo.forms import FIELDS, forms
from driftloop.monitor import Monitor
from driftloop.project import Project
from driftloop.serving import create_app
from driftloop.tasks.extraction import Extraction
from driftloop.training import train

__all__ = ["FormsResult", "correction", "run_forms"]


@dataclass
class FormsResult:
    folder: Path
    f1: dict[
        str, tuple[float, float, float]
    ]  # per field and f1_micro: before, after the change, after promotion
    promoted: int
    rejected: int
    timeline: list[dict[str, Any]] = field(default_factory=list)
    quarantined: list[str] = field(default_factory=list)
    doc_type_accuracy: tuple[float, float] = (float("nan"), float("nan"))  # the classifier: before, after

    @property
    def summary(self) -> str:
        def three(name: str) -> str:
            a, b, c = self.f1[name]
            return f"{name} {a:.3f} | {b:.3f} | {c:.3f}"

        fields = "; ".join(three(f"f1.{f}") for f in FIELDS)
        return (
            f"{three('f1_micro')} (before the layout change, after it, after promotion); {fields} | "
            f"doc-type classifier accuracy {self.doc_type_accuracy[0]:.3f} | "
            f"{self.doc_type_accuracy[1]:.3f} | "
            f"reviewers quarantined {self.quarantined or 'none'} | retrains promoted {self.promoted}, "
            f"rejected {self.rejected} | artifacts in {self.folder}"
        )


def correction(served: dict[str, Any], truth: dict[str, str | None]) -> dict[str, Any]:
    """What a careful reviewer sends for a served document: the fields it got wrong, with their
    true values (``None``: absent), and every other field confirmed.

    >>> served = {"dob": {"value": "1990"}, "name": {"value": "Ana"}}
    >>> correction(served, {"dob": "12/03/1990", "name": "Ana"})
    {'fields': {'dob': '12/03/1990'}, 'confirm': 'rest'}
    """
    wrong = {f: v for f, v in truth.items() if (served.get(f) or {}).get("value") != v}
    return {"fields": wrong, "confirm": "rest"} if wrong else {"confirm": "all"}


def run_forms(
    folder: Path,
    *,
    seed: int = 7,
    windows: int = 10,
    drift_at: int = 3,
    window_rows: int = 200,
    review_share: float = 0.5,
    careless_items: int = 15,
    train_rows: int = 1500,
    console: Console | None = None,
) -> FormsResult:
    """Run the forms scenario in ``folder`` (see the module docstring)."""
    from driftloop.demo.scenario import _wait_for_swap, scenario_project, serve_in_thread

    console = console or Console()
    folder = folder.resolve()
    project = scenario_project(folder, "forms", seed=seed, rows=train_rows, window_rows=window_rows)
    classifier = _classifier(folder, project, window_rows)
    rng = np.random.default_rng(seed + 1)
    console.rule("[bold]driftloop demo: forms")
    first = train(project)
    train(classifier)
    classify = Monitor(classifier)
    kinds_right: dict[int, list[bool]] = {}
    console.print(
        f"Champion: version {first.version} (validation f1_micro {first.metrics['validation_f1_micro']:.3f})"
    )
    workflow.launch(project)
    monitor = Monitor(project)
    events: dict[int, list[str]] = {}
    truth: dict[str, tuple[str, int]] = {}  # prediction id -> (true fields as JSON, window)
    promoted = rejected = 0
    pending: list[dict[str, Any]] = []
    quarantined: list[str] = []
    try:
        with (
            serve_in_thread(create_app(project, background=True, monitor=False)) as url,
            serve_in_thread(create_app(classifier, background=True, monitor=False)) as kinds_url,
            httpx.Client(base_url=url, timeout=60) as client,
            httpx.Client(base_url=kinds_url, timeout=60) as kinds,
            Progress(console=console, transient=True) as bar,
        ):
            progress = bar.add_task("streaming documents", total=windows)
            for w in range(windows):
                layout = "A" if w < drift_at else "B"
                if w == drift_at:
                    events.setdefault(w, []).append("new portal layout A→B")
                df = forms(window_rows, layout, seed=rng)
                records = df.drop(columns=["fields", "doc_type"]).to_dict(orient="records")
                response = client.post("/predict", json={"records": records})
                response.raise_for_status()
                typed = kinds.post("/predict", json={"records": records})
                typed.raise_for_status()
                said = [p["label"] for p in typed.json()["predictions"]]
                kinds_right[w] = [a == b for a, b in zip(said, df["doc_type"], strict=True)]
                labels = [
                    {"prediction_id": p["prediction_id"], "label": kind, "source": "clerk"}
                    for p, kind, keep in zip(
                        typed.json()["predictions"],
                        df["doc_type"],
                        rng.random(len(df)) < review_share,
                        strict=True,
                    )
                    if keep
                ]
                kinds.post("/feedback", json={"feedback": labels}).raise_for_status()
                _send(client, pending)  # last window's corrections arrive now: one window late
                pending = []
                review.fill(project)  # the careless reviewer confirms whatever the queue shows
                for _ in range(careless_items):
                    item = review.next_item(project, "temp")
                    if item is None:
                        break
                    review.answer(project, item["item_id"], "temp", {"confirm": "all"})
                if w == drift_at + 2:  # before the retrain: a candidate blind on a critical field
                    run_id = workflow.start_retrain(project, "manual:forgets-dob", trainer="trainer:careless")
                    outcome = workflow.wait(run_id)
                    events.setdefault(w, []).append(f"forgets-dob candidate {outcome['status']}")
                    _report(console, w, run_id, outcome["status"], project)
                    rejected += outcome["status"] == "rejected"
                for j, p in enumerate(response.json()["predictions"]):
                    truth[p["prediction_id"]] = (df["fields"].iloc[j], w)
                    if rng.random() < review_share:
                        fix = correction(p["fields"], json.loads(df["fields"].iloc[j]))
                        pending.append({"prediction_id": p["prediction_id"], "source": "clerk", **fix})
                classify.run()  # the classifier's own windows, in the same store
                monitored = workflow.monitor_and_trigger(project, monitor)
                events.setdefault(w, []).extend(f"alert {a['rule']}" for a in monitored.alerts)
                for name in sorted(set(project.store.quarantined(project.name)) - set(quarantined)):
                    quarantined.append(name)
                    events.setdefault(w, []).append(f"reviewer {name} quarantined")
                for run in project.store.runs(project.name, active_only=True):
                    outcome = workflow.wait(run["id"])
                    events.setdefault(w, []).append(
                        f"retrain {outcome['status']} (v{outcome['challenger_version']})"
                    )
                    _report(console, w, run["id"], outcome["status"], project)
                    promoted += outcome["status"] == "promoted"
                    rejected += outcome["status"] == "rejected"
                _wait_for_swap(client, project)
                bar.advance(progress)
            _send(client, pending)
        workflow.monitor_and_trigger(project, monitor)
    finally:
        workflow.shutdown()
    timeline = _timeline(project, truth, events, windows)
    _print(console, timeline)
    first_version = first.version
    names = ["f1_micro", *(f"f1.{f}" for f in FIELDS)]

    def mean(name: str, rows: list[dict[str, Any]]) -> float:
        values = [r[name] for r in rows if r[name] is not None]
        return float(np.mean(values)) if values else float("nan")

    before = timeline[:drift_at]
    stale = [r for r in timeline[drift_at:] if r["served"] == [first_version]]
    fresh = [r for r in timeline[drift_at:] if first_version not in r["served"]]
    accuracy = (
        float(np.mean([ok for w in range(drift_at) for ok in kinds_right.get(w, [])])),
        float(np.mean([ok for w in range(drift_at, windows) for ok in kinds_right.get(w, [])])),
    )
    result = FormsResult(
        folder,
        {n: (mean(n, before), mean(n, stale), mean(n, fresh)) for n in names},
        promoted,
        rejected,
        timeline,
        quarantined,
        accuracy,
    )
    (folder / "summary.txt").write_text(result.summary + "\n")
    console.print(f"[bold]summary:[/] {result.summary}")
    project.close()
    classifier.close()
    return result


def _classifier(folder: Path, extractor: Project, window_rows: int) -> Project:
    """The document classifier's project beside the extractor's, writing to the same store."""
    from driftloop.demo.forms import CLASSIFIER, CLASSIFIER_TRAINER

    home = folder / "doc-types"
    (home / "data").mkdir(parents=True, exist_ok=True)
    (home / "driftloop.toml").write_text(
        CLASSIFIER.format(store=extractor.settings.store.url, window=f"{window_rows} rows")
    )
    (home / "trainer.py").write_text(CLASSIFIER_TRAINER)
    (home / "data" / "train.csv").write_text((folder / "data" / "train.csv").read_text())
    return Project.load(home / "driftloop.toml")


def _timeline(
    project: Project, truth: dict[str, tuple[str, int]], events: dict[int, list[str]], windows: int
) -> list[dict[str, Any]]:
    """Per window: the true per-field F1 of what was served (every document, from the truth),
    beside what monitoring saw without labels."""
    task = project.task
    assert isinstance(task, Extraction)
    served = {r["prediction_id"]: r for r in project.store.predictions_after(project.name, 0, 10_000_000)}
    by_window: dict[int, list[tuple[str, str, str]]] = {}
    for pid, (fields, w) in truth.items():
        row = served.get(pid)
        if row is not None:
            by_window.setdefault(w, []).append((fields, row["prediction"], row["model_version"]))
    monitored = project.store.windows(project.name, limit=windows + 5)
    rows = []
    for w in range(windows):
        part = by_window.get(w, [])
        scores = task.metrics([t for t, _, _ in part], [p for _, p, _ in part]) if part else {}
        metrics = monitored[w]["metrics"] if w < len(monitored) else {}
        rows.append(
            {
                "window": w,
                "served": sorted({v for _, _, v in part}),
                "f1_micro": scores.get("f1_micro"),
                **{f"f1.{f}": scores.get(f"f1.{f}") for f in FIELDS},
                "validity.dob": (metrics.get("validity.dob") or {}).get("value"),
                "estimated_precision.dob": (metrics.get("estimated_precision.dob") or {}).get("value"),
                "events": events.get(w, []),
            }
        )
    return rows


def _print(console: Console, timeline: list[dict[str, Any]]) -> None:
    table = Table(title="timeline (one row per monitoring window; F1 from the truth of every document)")
    columns = ("f1_micro", *(f"f1.{f}" for f in FIELDS), "validity.dob", "estimated_precision.dob")
    for column in ("window", "served by", *columns, "events"):
        table.add_column(column)
    for row in timeline:
        cells = ["-" if row[c] is None else f"{row[c]:.3f}" for c in columns]
        table.add_row(
            str(row["window"]), ",".join(f"v{v}" for v in row["served"]), *cells, "; ".join(row["events"])
        )
    console.print(table)
