"""Monitoring on profiles: windows that must flag drift, windows that must not, alerts, sinks."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from driftloop.alerts import SlackSink, WebhookSink, dispatch
from driftloop.drift import compare
from driftloop.monitor import Monitor
from driftloop.profiles import Profile
from driftloop.project import Project
from driftloop.training import train

from .conftest import make_project
from .helpers import send


def test_undrifted_windows_stay_quiet_and_drifted_ones_flag(trained: Project) -> None:
    monitor = Monitor(trained)
    send(trained, 600, "A", seed=11, label_share=1.0)
    first = monitor.run()
    assert len(first.windows) == 2
    quiet = trained.store.windows(trained.name)
    for w in quiet:
        flagged = [k for k, m in w["metrics"].items() if k.startswith("drift.") and m["flagged"]]
        assert flagged == [], f"false alarm on concept A data: {flagged}"
        assert w["metrics"]["prediction_drift"]["flagged"] is False
        assert w["metrics"]["multivariate_auc"]["flagged"] is False
        assert w["metrics"]["accuracy"]["value"] > 0.85 and w["metrics"]["accuracy"]["n"] == 300
        # label-free estimate agrees with feedback when only noise separates the windows
        assert abs(w["metrics"]["estimated_accuracy"]["value"] - w["metrics"]["accuracy"]["value"]) < 0.06
        assert w["metrics"]["multivariate_mmd"]["flagged"] is False
        assert abs(w["metrics"]["estimated_f1_macro"]["value"] - w["metrics"]["f1_macro"]["value"]) < 0.06
        # ROC AUC and each class's precision, recall and F1, from feedback and estimated with a band
        for metric in ("roc_auc", "precision.yes", "recall.no", "f1.yes"):
            realised, estimated = w["metrics"][metric]["value"], w["metrics"][f"estimated_{metric}"]["value"]
            low, high = (w["metrics"][f"estimated_{metric}_{end}"]["value"] for end in ("low", "high"))
            assert low < estimated < high and abs(estimated - realised) < 0.08, (metric, realised, low, high)
    assert not [a for a in first.alerts if a["rule"] == "feature-drift"]
    # a longer span merges the windows' stored profiles; the verdict equals a profile of all rows
    n, rollup = monitor.rollup(since=0)
    assert n == 600 and rollup is not None and not rollup.drifted
    rows = trained.store.predictions_after(trained.name, 0, 10_000)
    frame = trained.schema.profile_frame(trained.schema.frame(pd.DataFrame([r["inputs"] for r in rows])))
    ref = monitor.reference().features
    direct = compare(ref, Profile.from_frame(ref.spec, frame))
    assert [(c.column, c.effect, c.p_value) for c in rollup.columns] == [
        (c.column, c.effect, c.p_value) for c in direct.columns
    ]

    send(trained, 300, "B", seed=12)
    monitor.run()
    drifted = trained.store.windows(trained.name)[-1]
    flagged = sorted(
        k.removeprefix("drift.")
        for k, m in drifted["metrics"].items()
        if k.startswith("drift.") and m["flagged"]
    )
    assert {"income", "age", "employment"} <= set(flagged), flagged
    assert "purpose" not in flagged, "purpose has the same distribution under both concepts"
    assert drifted["metrics"]["multivariate_auc"]["flagged"] is True
    # output metrics are named by what they measure: L-inf threshold on classes, KS on confidence
    assert drifted["metrics"]["prediction_drift"]["threshold"] == 0.02
    assert drifted["metrics"]["confidence_drift"]["threshold"] == 0.025
    assert drifted["metrics"]["multivariate_auc"]["value"] > 0.6
    assert drifted["metrics"]["multivariate_mmd"]["flagged"] is True
    income = drifted["metrics"]["drift.income"]
    assert income["n"] == 300 and income["p_value"] < 1e-3 and income["threshold"] == 0.025
    assert drifted["metrics"]["drift_share"]["value"] == pytest.approx(len(flagged) / 6)


def test_partial_window_waits_unless_flushed(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p")
    train(project)
    send(project, 450, "A", seed=1)
    assert len(Monitor(project).run().windows) == 1  # 300 closed, 150 wait
    assert len(Monitor(project).run(flush=True).windows) == 1
    assert [w["n"] for w in project.store.windows(project.name)] == [300, 150]
    assert Monitor(project).run().windows == []  # nothing is profiled twice
    project.close()


def test_a_backlog_of_windows_is_scored_under_a_progress_bar(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import rich.progress

    advanced: list[tuple[Any, Any]] = []  # (rows advanced, the bar's total) per update

    class Recorded(rich.progress.Progress):
        def update(self, task_id: rich.progress.TaskID, **kwargs: Any) -> None:
            super().update(task_id, **kwargs)
            advanced.append((kwargs.get("advance"), self.tasks[0].total))

    monkeypatch.setattr(rich.progress, "Progress", Recorded)
    project = make_project(tmp_path / "p")
    train(project)
    send(project, 650, "A", seed=2)
    assert len(Monitor(project, progress=True).run().windows) == 2  # 300 + 300; 50 wait
    assert advanced == [(300, 650), (300, 650)]
    send(project, 300, "A", seed=3)
    assert len(Monitor(project, progress=True).run().windows) == 1  # one window is quick: no bar
    assert len(advanced) == 2
    project.close()


def test_time_windows_close_on_their_boundaries(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", window="1h")
    train(project)
    send(project, 100, "A", seed=2)
    rows = project.store.predictions_after(project.name, 0, 1000)
    now = rows[-1]["ts"]
    assert Monitor(project).run(now=now).windows == []  # the current hour is still open
    assert len(Monitor(project).run(now=now + 3600).windows) == 1
    project.close()


class _Receiver(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        length = int(self.headers["content-length"])
        _Receiver.received.append({"path": self.path, "body": json.loads(self.rfile.read(length))})
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    _Receiver.received = []
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_alert_fires_once_per_streak_to_webhook_and_slack(
    tmp_path: Path, receiver: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "p"
    make_project(folder)
    config = folder / "driftloop.toml"
    text = config.read_text().replace(
        '[[sinks]]\ntype = "log"',
        f'[[sinks]]\ntype = "webhook"\nurl = "{receiver}/hook"\n\n'
        '[[sinks]]\ntype = "slack"\nurl_env = "TEST_SLACK_URL"',
    )
    config.write_text(text)
    monkeypatch.setenv("TEST_SLACK_URL", f"{receiver}/slack")
    project = Project.load(config)
    train(project)
    monitor = Monitor(project)
    send(project, 900, "B", seed=5)
    fired = monitor.run().alerts
    assert [a["rule"] for a in fired] == ["feature-drift"]  # for = 2: fires once 2 windows breach
    assert "drift_share" in fired[0]["message"] and "3 consecutive window(s)" in fired[0]["message"]
    hooks = [r for r in _Receiver.received if r["path"] == "/hook"]
    slack = [r for r in _Receiver.received if r["path"] == "/slack"]
    assert hooks[0]["body"]["rule"] == "feature-drift" and hooks[0]["body"]["model"] == "loan"
    assert "feature-drift" in slack[0]["body"]["text"]
    send(project, 300, "B", seed=6)
    assert monitor.run().alerts == [], "the same streak does not alert twice"
    project.close()


def test_a_failing_sink_does_not_stop_the_others(receiver: str) -> None:
    failures = dispatch(
        [WebhookSink("http://127.0.0.1:9/nothing-listens", tries=1), SlackSink(f"{receiver}/slack")],
        {"rule": "r", "model": "m", "message": "x"},
    )
    assert len(failures) == 1 and "webhook" in failures[0]
    assert _Receiver.received[-1]["path"] == "/slack"
