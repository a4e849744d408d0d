"""The store cannot be written for a while (a full disk, a database that is down): what each log
mode does, and what ``GET /ready`` says. The outage is real SQLite refusing the log's inserts: a
trigger that aborts every insert into ``predictions``, created and dropped from another
connection, as a full disk or a failed database would refuse them."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from driftloop.demo.scenario import serve_in_thread
from driftloop.project import Project
from driftloop.serving import create_app
from driftloop.serving import writer as log_writer

from .conftest import trained_with
from .test_serving import GOOD


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("outage")
    trained_with(root).close()
    return root


@pytest.fixture
def load(folder: Path) -> Iterator[Callable[..., Project]]:
    """The trained project with these ``[serving]`` settings (the same store every time)."""
    opened: list[Project] = []
    config = folder / "driftloop.toml"
    original = config.read_text()

    def with_serving(**settings: str) -> Project:
        kept = [x for x in original.splitlines() if x.split(" = ")[0] not in settings]
        lines = "".join(f'{k} = "{v}"\n' for k, v in settings.items())
        config.write_text("\n".join(kept).replace("[serving]\n", f"[serving]\n{lines}", 1))
        opened.append(Project.load(config))
        return opened[-1]

    assert "[serving]\n" in original
    yield with_serving
    config.write_text(original)
    for project in opened:
        project.close()


def outage(project: Project, on: bool) -> None:
    path = project.store.url.removeprefix("sqlite:///")
    with sqlite3.connect(path, timeout=30) as con:
        if on:
            con.execute(
                "CREATE TRIGGER outage BEFORE INSERT ON predictions "
                "BEGIN SELECT RAISE(ABORT, 'disk I/O error (a test outage)'); END"
            )
        else:
            con.execute("DROP TRIGGER outage")
    con.close()


def until(check: Callable[[], bool], seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


@pytest.mark.parametrize("writer", ["process", "thread"])
def test_fast_mode_keeps_the_rows_it_answered_for_until_the_store_is_back(
    load: Callable[..., Project], writer: str
) -> None:
    project = load(log_mode="fast", log_writer=writer)
    with serve_in_thread(create_app(project, background=False)) as url, httpx.Client(base_url=url) as client:
        assert client.get("/ready").status_code == 200
        outage(project, on=True)
        ids: list[str] = []
        try:
            for _ in range(10):
                r = client.post("/predict", json={"records": [GOOD] * 10})
                assert r.status_code == 200, r.text
                ids += [p["prediction_id"] for p in r.json()["predictions"]]
            until(lambda: client.get("/ready").status_code == 503)
            problems = client.get("/ready").json()["problems"]
            assert problems == ["the store cannot be written (the server's log says why)"], problems
            assert "outage" not in str(problems)  # the database's words stay in the log
            assert client.get("/health").json()["log"] == problems[0]
            time.sleep(3)  # past five tries (about 1.5 s), after which answered rows used to be dropped
        finally:
            outage(project, on=False)
        until(lambda: len(project.store.existing_prediction_ids(ids)) == len(ids))
        until(lambda: client.get("/ready").status_code == 200)
        metrics = client.get("/metrics").text
        assert 'driftloop_log_rows_lost_total{model="loan"} 0' in metrics


@pytest.mark.parametrize("writer", ["process", "thread"])
def test_durable_mode_answers_503_and_ready_lets_traffic_try_again(
    load: Callable[..., Project],
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    writer: str,
) -> None:
    monkeypatch.setattr(log_writer, "FAILING_FOR", 1.0)  # the thread's, and /ready's
    project = load(log_mode="durable", log_writer=writer)
    with serve_in_thread(create_app(project, background=False)) as url, httpx.Client(base_url=url) as client:
        outage(project, on=True)
        try:
            refused = client.post("/predict", json=GOOD)
            assert refused.status_code == 503 and refused.headers["retry-after"], refused.text
            assert "could not be logged" in refused.json()["detail"]
            assert "outage" not in refused.text  # the database's words, maybe other requests' rows
            # the store is known to be down: the next commit is tried once, not five times
            assert client.post("/predict", json=GOOD).status_code == 503
            said = capfd.readouterr().err + caplog.text  # the child's stderr, or the thread's log
            assert [said.count(f"(attempt {n})") for n in (1, 2, 5)] == [2, 1, 1], said
            assert client.get("/ready").status_code == 503
            # no traffic for FAILING_FOR seconds: ready again, so a store that came back is found
            time.sleep(1.2)
            assert client.get("/ready").status_code == 200
            assert client.post("/predict", json=GOOD).status_code == 503  # still down: out again
            assert client.get("/ready").status_code == 503
        finally:
            outage(project, on=False)
        answered = client.post("/predict", json=GOOD)
        assert answered.status_code == 200
        pid = answered.json()["predictions"][0]["prediction_id"]
        assert project.store.existing_prediction_ids([pid]) == {pid}
        assert client.get("/ready").json() == {
            "ready": True,
            "problems": [],
            "model": "loan",
            "worker": client.get("/health").json()["worker"],
        }


def test_a_store_error_never_quotes_the_rows_it_was_writing(load: Callable[..., Project]) -> None:
    """What a failed write says goes to the server's log and to alerts: never the rows' values."""
    project = load()
    row = {"prediction_id": "p" * 32, "model": "loan", "model_version": "1", "request_id": "r", "ts": 1.0}
    row |= {"inputs": {"income": "a-secret-income"}, "prediction": "yes", "confidence": 0.9}
    row |= {"probabilities": None, "latency_ms": 1.0, "meta": None}
    outage(project, on=True)
    try:
        with pytest.raises(Exception, match="a test outage") as raised:
            project.store.insert_predictions([row])
    finally:
        outage(project, on=False)
    assert "a-secret-income" not in str(raised.value), raised.value


def test_labels_and_reads_get_503_while_the_store_refuses_them(load: Callable[..., Project]) -> None:
    """Not only the log: a label, a read and an invalid request each get an answer a client
    knows to retry (503 + Retry-After) or to fix (422), never a 500 or the database's words."""
    project = load()
    path = project.store.url.removeprefix("sqlite:///")
    with serve_in_thread(create_app(project, background=False)) as url, httpx.Client(base_url=url) as client:
        pid = client.post("/predict", json=GOOD).json()["predictions"][0]["prediction_id"]
        with sqlite3.connect(path, timeout=30) as con:
            for table in ("feedback", "invalid_requests"):
                con.execute(
                    f"CREATE TRIGGER outage_{table} BEFORE INSERT ON {table} "
                    "BEGIN SELECT RAISE(ABORT, 'disk I/O error (a test outage)'); END"
                )
        con.close()
        try:
            label = client.post("/feedback", json={"prediction_id": pid, "label": "yes"})
            wrong = client.post("/feedback", json={"prediction_id": pid, "label": "maybe"})
        finally:
            with sqlite3.connect(path, timeout=30) as con:
                con.execute("DROP TRIGGER outage_feedback")
                con.execute("DROP TRIGGER outage_invalid_requests")
            con.close()
        assert label.status_code == 503 and label.headers["retry-after"] == "1", label.text
        assert "the store cannot be written" in label.text.lower() and "outage" not in label.text
        assert wrong.status_code == 422 and "'maybe'" in wrong.text, wrong.text
        assert client.post("/feedback", json={"prediction_id": pid, "label": "yes"}).status_code == 200
        assert 'route="/feedback",status="503"' in client.get("/metrics").text
