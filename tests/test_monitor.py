"""Monitoring on profiles: windows that must flag drift, windows that must not, alerts, sinks."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from driftloop import alerts
from driftloop.alerts import SlackSink, WebhookSink, deliver, notify, sink_key
from driftloop.drift import compare
from driftloop.monitor import Monitor
from driftloop.profiles import Profile
from driftloop.project import Project
from driftloop.store import Store
from driftloop.training import train
from driftloop.views import status_view

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
    down = False  # answer 500 to everything, as a webhook that is down does
    posts = 0

    def do_POST(self) -> None:
        _Receiver.posts += 1
        length = int(self.headers["content-length"])
        body = json.loads(self.rfile.read(length))
        if not _Receiver.down:
            _Receiver.received.append({"path": self.path, "body": body})
        self.send_response(500 if _Receiver.down else 200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    _Receiver.received, _Receiver.down, _Receiver.posts = [], False, 0
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _with_sinks(tmp_path: Path, sinks: str) -> Path:
    """The example project's config, its log sink replaced by ``sinks`` (TOML)."""
    make_project(tmp_path / "p")
    config = tmp_path / "p" / "driftloop.toml"
    config.write_text(config.read_text().replace('[[sinks]]\ntype = "log"', sinks))
    return config


def test_alert_fires_once_per_streak_to_webhook_and_slack(
    tmp_path: Path, receiver: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _with_sinks(
        tmp_path,
        f'[[sinks]]\ntype = "webhook"\nurl = "{receiver}/hook"\n\n'
        '[[sinks]]\ntype = "slack"\nurl_env = "TEST_SLACK_URL"',
    )
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


def _alert(store: Store, sinks: list[Any], message: str = "x") -> dict[str, Any]:
    return notify(
        store, sinks, model="m", rule="r", metric="accuracy", value=0.5, threshold=0.8, message=message
    )


def test_a_failing_sink_does_not_stop_the_others(receiver: str, tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path}/db.sqlite")
    sinks = [WebhookSink("http://127.0.0.1:9/nothing-listens", tries=1), SlackSink(f"{receiver}/slack")]
    alert = _alert(store, sinks)
    assert [r["path"] for r in _Receiver.received] == ["/slack"]
    (missed,) = store.undelivered("m")
    assert (missed["alert_id"], missed["sink"], missed["tries"]) == (alert["id"], sink_key(sinks[0]), 1)
    assert "ConnectError" in missed["error"] and not missed["given_up"]


def test_an_alert_a_sink_missed_is_delivered_once_it_is_back(
    receiver: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The outbox: an alert is stored with a delivery per sink in one transaction; what a sink
    did not take is tried again on each monitoring pass after its backoff, and once taken is
    not sent again; a delivery to a sink no longer configured, or past RETRY_FOR, is given up
    and shown."""
    store = Store(f"sqlite:///{tmp_path}/db.sqlite")
    hook = WebhookSink(f"{receiver}/hook", tries=1)
    _Receiver.down = True
    first = _alert(store, [hook], "the webhook is down")
    assert _Receiver.received == [] and [d["tries"] for d in store.undelivered("m")] == [1]
    assert deliver(store, [hook], "m") == 0  # not yet due: backing off 30 s
    second = _alert(store, [hook], "still down")
    assert _Receiver.posts == 2
    later = time.time() + alerts.backoff(2)
    assert deliver(store, [hook], "m", now=later) == 0
    assert _Receiver.posts == 3  # one try for both: a sink that failed is not tried again in a pass
    _Receiver.down = False
    assert deliver(store, [hook], "m", now=later + alerts.backoff(2)) == 2
    assert deliver(store, [hook], "m", now=later + 7200) == 0  # taken: never sent twice
    assert [(r["body"]["id"], r["body"]["message"]) for r in _Receiver.received] == [
        (first["id"], "the webhook is down"),
        (second["id"], "still down"),
    ]
    assert store.undelivered("m") == []
    # a process that stored an alert and died before sending it: the next pass sends it
    pending = store.add_alert(deliver_to=[sink_key(hook)], model="m", rule="r", metric="m", message="y")
    assert deliver(store, [hook], "m") == 1 and _Receiver.received[-1]["body"]["id"] == pending
    # two processes that read the due deliveries at once: only one claims each
    store.add_alert(deliver_to=[sink_key(hook)], model="m", rule="r", metric="m", message="z")
    now, read, first_read = time.time(), store._all, list[dict[str, Any]]()

    def as_first(query: Any) -> list[dict[str, Any]]:  # the second reads what the first read
        if not first_read:
            first_read.extend(read(query))
        return list(first_read)

    with monkeypatch.context() as both:
        both.setattr(store, "_all", as_first)
        assert len(store.claim_deliveries("m", now=now, lease=60)) == 1
        assert store.claim_deliveries("m", now=now, lease=60) == []
    # a sink removed from the configuration, and a delivery past RETRY_FOR: given up, and shown
    assert deliver(store, [], "m", now=now + 61) == 0
    _Receiver.down = True
    monkeypatch.setattr(alerts, "RETRY_FOR", 0.0)
    _alert(store, [hook], "given up")
    states = [(d["sink"], d["given_up"]) for d in store.undelivered("m")]
    assert states == [(sink_key(hook), True), (sink_key(hook), True)], states
    monkeypatch.setattr(alerts, "backoff", lambda tries: 0.0)
    assert deliver(store, [hook], "m", now=now + 7200) == 0  # given up: not tried again
    assert len(_Receiver.received) == 3


def test_the_monitor_delivers_what_a_sink_missed_and_status_shows_it(
    tmp_path: Path, receiver: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _with_sinks(tmp_path, f'[[sinks]]\ntype = "webhook"\nurl = "{receiver}/hook"')
    project = Project.load(config)
    train(project)
    monitor = Monitor(project)
    monkeypatch.setattr(alerts, "backoff", lambda tries: 0.0)  # due again at the next pass
    _Receiver.down = True
    send(project, 900, "B", seed=5)
    fired = monitor.run().alerts
    assert [a["rule"] for a in fired] == ["feature-drift"] and _Receiver.received == []
    (shown,) = [a for a in status_view(project)["alerts"] if a["id"] == fired[0]["id"]]
    assert shown["undelivered"] and "retrying after 1 attempt; " in shown["undelivered"][0], shown
    _Receiver.down = False
    assert monitor.run().alerts == []  # no new alert; the pass delivers the one the webhook missed
    assert [r["body"]["id"] for r in _Receiver.received] == [fired[0]["id"]]
    assert all(not a["undelivered"] for a in status_view(project)["alerts"])
    project.close()
