"""The same loop on PostgreSQL: store, monitoring and the DBOS workflow state.

Needs PostgreSQL at DRIFTLOOP_TEST_POSTGRES (default postgresql://postgres@127.0.0.1:5432/test,
trust auth). Each test creates its own database and drops it afterwards. Without a server the
tests skip and say how to run them.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Collection, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.exc import IntegrityError

from driftloop import ConfigError, workflow
from driftloop.monitor import Monitor
from driftloop.project import Project
from driftloop.store import Store
from driftloop.training import train

from .conftest import make_project
from .helpers import send

ADMIN_URL = os.environ.get("DRIFTLOOP_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
pytestmark = pytest.mark.postgres


def _admin() -> object:
    return create_engine(
        "postgresql+psycopg://" + ADMIN_URL.split("://", 1)[1],
        isolation_level="AUTOCOMMIT",
        connect_args={"connect_timeout": 3},
    )


@contextlib.contextmanager
def _database() -> Iterator[str]:
    """The URL of a new database on the test server, dropped afterwards."""
    engine = _admin()
    name = f"driftloop_{uuid.uuid4().hex[:12]}"
    try:
        with engine.connect() as conn:  # type: ignore[attr-defined]
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        pytest.skip(
            f"PostgreSQL is not reachable at {ADMIN_URL} ({type(exc).__name__}). Start a server with trust "
            "auth there, or set DRIFTLOOP_TEST_POSTGRES=postgresql://user@host:port/db, to run these tests."
        )
    base = ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with engine.connect() as conn:  # type: ignore[attr-defined]
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()  # type: ignore[attr-defined]


@pytest.fixture
def pg_url() -> Iterator[str]:
    with _database() as url:
        yield url


def _row(i: int, ts: float) -> dict[str, object]:
    """A log row of model "m" whose prediction id is ``i`` in 32 hex digits."""
    return {
        "prediction_id": f"{i:032x}",
        "model": "m",
        "model_version": "1",
        "request_id": "r",
        "ts": ts,
        "inputs": {"x": i},
        "prediction": "yes",
        "confidence": 0.9,
        "probabilities": {"yes": 0.9, "no": 0.1},
        "latency_ms": 1.0,
        "meta": None,
    }


def test_store_round_trip_on_postgres(pg_url: str) -> None:
    store = Store(pg_url)
    store.insert_predictions([_row(i, float(i)) for i in range(1, 6)])
    store.add_feedback([{"prediction_id": f"{1:032x}", "label": "no", "source": "a"}])
    store.add_feedback([{"prediction_id": f"{1:032x}", "label": "yes", "source": "b"}])
    labelled = store.labelled("m")
    assert [(r["seq"], r["label"]) for r in labelled] == [(1, "yes")], "the latest label wins"
    assert store.existing_prediction_ids([f"{2:032x}", "nope"]) == {f"{2:032x}"}
    assert store.add_promotion(
        model="m", action="promote", from_version="1", to_version="2", run_id="r1", reason=""
    )
    assert not store.add_promotion(
        model="m", action="promote", from_version="1", to_version="2", run_id="r1", reason=""
    )
    Store(pg_url).close()  # migrating again is a no-op
    store.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_replayed_record_finds_the_first_and_an_incomplete_one_still_fails(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The store's write-once rows (a replayed step writes them again) skip only the conflict on
    their unique key; a row missing a required value is an error, never silently dropped."""
    url = f"sqlite:///{tmp_path}/db.sqlite" if backend == "sqlite" else request.getfixturevalue("pg_url")
    store = Store(url)
    decision = {
        "run_id": "r1",
        "model": "m",
        "champion_version": "1",
        "challenger_version": "2",
        "accepted": True,
        "rules": [],
        "reasons": ["first"],
        "eval_rows": 100,
        "eval_dataset": "d1",
    }
    assert store.add_decision(**decision)["reasons"] == ["first"]
    assert store.add_decision(**{**decision, "reasons": ["second"]})["reasons"] == ["first"]
    assert store.quarantine("m", "flaky", "disagrees") and not store.quarantine("m", "flaky", "again")
    assert store.quarantined("m") == {"flaky": "disagrees"}
    store.record_artifact("m", "1", "a" * 64, None)
    store.record_artifact("m", "1", "a" * 64, None)  # the same digest again: agreed
    with pytest.raises(ConfigError, match="another artifact digest"):
        store.record_artifact("m", "1", "b" * 64, None)
    with pytest.raises(IntegrityError):
        store.add_decision(**{**decision, "run_id": "r2", "eval_dataset": None})
    assert store.decision("r2") is None
    row = _row(1, 1.0)
    store.insert_predictions([row])
    store.insert_predictions([row])  # a frame re-sent to a restarted log writer
    with pytest.raises(IntegrityError):
        store.insert_predictions([{**_row(2, 2.0), "model_version": None}])
    assert store.existing_prediction_ids([row["prediction_id"], f"{2:032x}"]) == {row["prediction_id"]}
    store.close()


def _trained(tmp_path: Path, store_url: str | None, *edits: tuple[str, str], extra: str = "") -> Project:
    """A trained example project in ``tmp_path / "p"``: its store at ``store_url`` (None: SQLite
    beside it), each ``(old, new)`` of ``edits`` made to its config, ``extra`` appended."""
    config = tmp_path / "p" / "driftloop.toml"
    make_project(config.parent)
    text_ = config.read_text()
    if store_url is not None:
        text_ = text_.replace('url = "sqlite:///.driftloop/driftloop.db"', f'url = "{store_url}"')
    for old, new in edits:
        text_ = text_.replace(old, new)
    config.write_text(text_ + extra)
    project = Project.load(config)
    train(project)
    return project


def _review_project(tmp_path: Path, backend: str, request: pytest.FixtureRequest, review: str) -> Project:
    """A trained example project with a ``[review]`` table, on SQLite or on its own PostgreSQL
    database."""
    url = request.getfixturevalue("pg_url") if backend == "postgresql" else None
    return _trained(tmp_path, url, extra=f"\n[review]\n{review}\n")


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_reviewers_asking_at_once_for_an_empty_queue_both_get_items(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two reviewers ask for their next item at the same moment and the queue is empty, so both
    requests fill it with the same choice of items: each is queued once and both get one. Before,
    the second insert broke the unique key and that reviewer got a server error."""
    import threading

    import httpx
    from sqlalchemy import select

    from driftloop.demo.scenario import serve_in_thread
    from driftloop.serving import create_app
    from driftloop.store import tables as t

    project = _review_project(tmp_path, backend, request, "daily_budget = 1000")
    send(project, 100, "A", seed=60)
    monkeypatch.setenv("DRIFTLOOP_API_KEYS", "anna:ka=review;ben:kb=review")
    got: list[tuple[int, object]] = []
    with serve_in_thread(create_app(project, background=False, monitor=False)) as url:
        for _ in range(4):
            with project.store.begin() as conn:  # the queue is empty: the next request fills it
                conn.execute(t.review_items.delete())
            barrier = threading.Barrier(2)

            def ask(key: str, barrier: threading.Barrier = barrier) -> None:
                with httpx.Client(base_url=url, timeout=30) as client:
                    barrier.wait()
                    answer = client.get("/review/next", headers={"x-api-key": key})
                    got.append((answer.status_code, answer.json().get("item")))

            threads = [threading.Thread(target=ask, args=(key,)) for key in ("ka", "kb")]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            with project.store.engine.connect() as conn:
                queued = [r[0] for r in conn.execute(select(t.review_items.c.prediction_id))]
            assert len(queued) == len(set(queued)) == 100  # every unlabelled prediction, once
    assert [status for status, _ in got] == [200] * 8
    assert all(item is not None for _, item in got), "a reviewer was told the queue is empty"
    project.close()


def test_two_inserts_of_the_same_new_rows_in_different_orders_do_not_deadlock(pg_url: str) -> None:
    """Two reviewers' requests queue the same items in different orders (the ranking moved as a
    prediction came in): each would insert its first row and wait for the other's, a deadlock
    PostgreSQL ends by failing one. ``insert_new`` takes the table's turn first. Each insert
    pauses after its first row until the other has inserted one too (or 3 s have passed)."""
    import threading

    from sqlalchemy import event

    from driftloop.store import tables as t

    store = Store(pg_url)
    item = {
        "model": "m",
        "strategy": "audit",
        "score": 1.0,
        "wanted": 1,
        "created_at": 1.0,
        "expires_at": 9e9,
    }
    a, b = {**item, "prediction_id": "a" * 32}, {**item, "prediction_id": "b" * 32}
    barrier, local = threading.Barrier(2), threading.local()

    @event.listens_for(store.engine, "after_cursor_execute")
    def pause(*args: object) -> None:
        if str(args[2]).startswith("INSERT INTO review_items") and not getattr(local, "paused", False):
            local.paused = True
            with contextlib.suppress(threading.BrokenBarrierError):
                barrier.wait(timeout=3)

    results: list[object] = []

    def insert(rows: list[dict[str, object]]) -> None:
        try:
            results.append(store.insert_new(t.review_items, rows))
        except Exception as exc:
            results.append(exc)

    threads = [threading.Thread(target=insert, args=(rows,)) for rows in ([a, b], [b, a])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(map(str, results)) == ["[False, False]", "[True, True]"], results
    store.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_an_answer_sent_twice_at_once_is_recorded_once(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A reviewer's answer submitted twice at the same moment (a double click, a retry racing
    the first try): one is recorded with its label, the other is refused as answered already,
    its feedback row rolled back. Before, both were recorded on either store, so an overlap
    item's two answers could come from one reviewer, measuring their agreement with themself."""
    import threading

    from driftloop import DriftloopError, review
    from driftloop.store import tables as t

    project = _review_project(tmp_path, backend, request, "daily_budget = 20\noverlap = 1.0")
    send(project, 200, "A", seed=5)
    review.fill(project)
    with project.store.engine.connect() as conn:
        items = [
            row[0] for row in conn.execute(t.review_items.select().with_only_columns(t.review_items.c.id))
        ]
    assert len(items) == 20
    refused: list[str] = []
    for item in items:
        barrier = threading.Barrier(2)

        def submit(item: int = item, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            try:
                review.answer(project, item, "alice", "yes")
            except DriftloopError as exc:
                refused.append(str(exc))

        threads = [threading.Thread(target=submit) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(refused) == len(items)
    assert all("answered review item" in r and "already" in r for r in refused)
    with project.store.engine.connect() as conn:
        answers = conn.execute(t.reviews.select()).mappings().all()
        labels = conn.execute(t.feedback.select().where(t.feedback.c.source == "alice")).mappings().all()
    assert sorted(a["item_id"] for a in answers) == sorted(items)
    assert len(labels) == len(items) and {a["feedback_id"] for a in answers} == {f["id"] for f in labels}
    # an undone answer may be given again: the rule is one standing answer, not one ever
    assert review.undo(project, "alice") is not None
    last = max(answers, key=lambda a: a["id"])["item_id"]
    assert review.answer(project, last, "alice", "no")["label"] == "no"
    with pytest.raises(DriftloopError, match="already"):
        review.answer(project, last, "alice", "yes")
    project.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_answers_a_race_recorded_twice_keep_the_first_when_the_store_migrates(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A store written before the rule (revision 0007) may hold one reviewer's answer to an item
    twice; migrating keeps the first and undoes the later one as ``undo`` would."""
    from alembic import command
    from alembic.config import Config

    from driftloop.store import _MIGRATIONS, HEAD, make_engine

    url = f"sqlite:///{tmp_path}/db.sqlite" if backend == "sqlite" else request.getfixturevalue("pg_url")
    engine = make_engine(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "0007")
    with engine.begin() as conn:
        for fid in (1, 2, 3):
            conn.execute(
                text(
                    "INSERT INTO feedback (id, prediction_id, label, source, ts) "
                    "VALUES (:i, 'p', 'yes', 'a', 1)"
                ),
                {"i": fid},
            )
        for rid, reviewer, fid in ((1, "alice", 1), (2, "bob", 2), (3, "alice", 3)):
            conn.execute(
                text(
                    "INSERT INTO reviews (id, item_id, model, reviewer, action, label, feedback_id, "
                    "undone, ts) VALUES (:r, 7, 'm', :who, 'label', 'yes', :f, false, 1)"
                ),
                {"r": rid, "who": reviewer, "f": fid},
            )
    engine.dispose()
    store = Store(url)
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM driftloop_alembic_version")).scalar() == HEAD
        undone = dict(conn.execute(text("SELECT id, undone FROM reviews ORDER BY id")).all())
        kept = [row[0] for row in conn.execute(text("SELECT id FROM feedback ORDER BY id"))]
    assert {k: bool(v) for k, v in undone.items()} == {1: False, 2: False, 3: True}
    assert kept == [1, 2]
    store.close()


def test_an_archiving_pass_waits_for_a_label_in_flight_and_keeps_it(tmp_path: Path, pg_url: str) -> None:
    """PostgreSQL draws a label's id when it is inserted, not when it commits: a label still in
    flight as an archiving pass starts has an id below one already committed. Read then, the
    pass would archive the later label without it and leave it behind in the store, a label
    whose prediction has moved. The pass waits until it has committed and archives both."""
    import threading

    from sqlalchemy import insert

    from driftloop.archive import archive_logs
    from driftloop.store import tables as t

    project = _trained(tmp_path, pg_url, ('schedule = "30s"', 'schedule = "30s"\ncommit_lag = "1ms"'))
    ids = send(project, 700, "A", seed=9)
    Monitor(project).run()  # two closed windows of 300: 600 rows to archive
    engine = create_engine("postgresql+psycopg://" + pg_url.split("://", 1)[1])
    results: list[object] = []
    archiving = threading.Thread(target=lambda: results.append(archive_logs(project, older_than=0)))
    try:
        with engine.connect() as slow:
            in_flight = slow.begin()
            slow.execute(
                insert(t.feedback).values(prediction_id=ids[0], label="yes", source="slow", ts=time.time())
            )
            project.store.add_feedback([{"prediction_id": ids[1], "label": "no", "source": "fast"}])
            archiving.start()
            archiving.join(1.0)
            waited = archiving.is_alive()
            in_flight.commit()
        archiving.join(60)
    finally:
        engine.dispose()
    assert waited, f"the pass archived {results} with a label in flight"
    result = results[0]
    assert result.predictions == 600 and result.feedback == 2  # type: ignore[attr-defined]
    labels = {r["prediction_id"]: r["label"] for r in project.store.labelled(project.name)}
    assert labels == {ids[0]: "yes", ids[1]: "no"}
    with project.store.engine.connect() as conn:  # both moved: none left behind in the store
        assert conn.scalar(select(func.count()).select_from(t.feedback)) == 0
    project.close()


def test_whole_loop_on_postgres(tmp_path: Path, pg_url: str) -> None:
    project = _trained(tmp_path, pg_url, ("[monitor]\n", '[monitor]\ncommit_lag = "200ms"\n'))
    assert project.settings.workflow_db_url == pg_url
    send(project, 1200, "B", seed=31, label_share=0.6)
    time.sleep(0.3)  # past the commit-lag guard
    try:
        workflow.launch(project)
        result = workflow.monitor_and_trigger(project, Monitor(project))
        assert "accuracy-drop" in [a["rule"] for a in result.alerts]
        run = project.store.runs(project.name)[-1]
        assert workflow.wait(run["id"])["status"] == "promoted"
    finally:
        workflow.shutdown()
    assert project.registry.alias(project.name, "champion") == "2"
    project.close()


def test_several_workers_share_one_postgres_store(tmp_path: Path, pg_url: str) -> None:
    from .helpers import multi_worker_round

    project = _trained(
        tmp_path,
        pg_url,
        ('schedule = "30s"', 'schedule = "500ms"\ncommit_lag = "300ms"'),
        ('window = "300 rows"', 'window = "500 rows"'),
    )
    multi_worker_round(project)
    project.close()


def test_commit_lag_guard_waits_for_a_transaction_still_in_flight(pg_url: str) -> None:
    """Two writers: the lower sequence number commits last. Without the guard a reader that
    already moved past it would never see it; with it, the reader waits until rows settle."""
    store = Store(pg_url)
    slow = store.engine.connect()
    slow_txn = slow.begin()
    store.insert_predictions([_row(1, time.time())], connection=slow)  # the lower seq, not yet committed
    store.insert_predictions([_row(2, time.time())])  # a second writer commits the higher seq first
    unguarded = store.predictions_after("m", 0, 100)
    assert [r["prediction_id"] for r in unguarded] == [f"{2:032x}"], "the gap a naive reader skips"
    assert store.predictions_after("m", 0, 100, settled_before=time.time() - 5) == []
    slow_txn.commit()
    slow.close()
    settled = store.predictions_after("m", 0, 100, settled_before=time.time() + 1)
    assert [r["prediction_id"] for r in settled] == [f"{1:032x}", f"{2:032x}"]
    store.close()


@pytest.mark.parametrize("kind", ["feedback", "annotations"])
def test_a_cutoff_waits_for_a_lower_id_still_in_flight(pg_url: str, kind: str) -> None:
    """A retrain's plan fixes the newest label (and annotation) id it will read. A label whose
    transaction drew a lower id but commits after a higher one would fall under that cutoff
    after the snapshot read it: a replayed snapshot step would build other sets. The cutoff is
    read only once the lower id has settled, and then covers it."""
    import threading

    from driftloop.store import tables as t

    store = Store(pg_url)
    table, cutoff = (
        (t.feedback, store.max_feedback_id) if kind == "feedback" else (t.notes, store.max_annotation_id)
    )
    extra = {"label": "x"} if kind == "feedback" else {"rating": 1.0}
    got: list[int] = []
    reader = threading.Thread(target=lambda: got.append(cutoff()))
    with store.engine.connect() as slow:
        slow_txn = slow.begin()
        slow.execute(table.insert().values(prediction_id="a" * 32, source="s", ts=1.0, **extra))
        with store.begin() as conn:  # a second writer draws the next id and commits it first
            conn.execute(table.insert().values(prediction_id="b" * 32, source="s", ts=2.0, **extra))
        reader.start()
        reader.join(1.0)
        in_flight = reader.is_alive()
        slow_txn.commit()
    reader.join(10)
    assert in_flight, f"the cutoff {got} was read while id 1 was in flight"
    assert got == [2]
    with store.engine.connect() as conn:
        ids = conn.scalars(select(table.c.id).where(table.c.id <= got[0])).all()
    assert sorted(ids) == [1, 2]
    store.close()


def test_a_cutoff_that_cannot_settle_says_which_table_waits(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A transaction left open after writing a label (a psql session, a stuck client) would
    hold a run's plan forever; after ``SETTLE_TIMEOUT`` it fails, naming the table."""
    from driftloop import DriftloopError
    from driftloop import store as store_module
    from driftloop.store import tables as t

    monkeypatch.setattr(store_module, "SETTLE_TIMEOUT", 0.3)
    store = Store(pg_url)
    with store.engine.connect() as slow, slow.begin():
        slow.execute(t.feedback.insert().values(prediction_id="a" * 32, label="x", source="s", ts=1.0))
        waited = r"Waited 0\.3 s for the writes in flight to table 'feedback'"
        with pytest.raises(DriftloopError, match=waited):
            store.max_feedback_id()
    assert store.max_feedback_id() == 1
    store.close()


@pytest.mark.slow
def test_a_lock_in_one_database_is_neither_taken_nor_named_in_another(pg_url: str) -> None:
    """Advisory locks belong to a database: a project of the same name whose store is another
    database on the same server monitors on its own, and each names only its own holder."""
    from driftloop.locks import AdvisoryLock

    with _database() as other:
        here, there = AdvisoryLock(pg_url, "loan"), AdvisoryLock(other, "loan")
        try:
            assert here.acquire()
            assert f"pid {os.getpid()}" in AdvisoryLock(pg_url, "loan").holder()
            assert AdvisoryLock(other, "loan").holder() == ""  # nobody monitors that one yet
            assert there.acquire()
            assert not AdvisoryLock(other, "loan").acquire()
            here.release()
            assert AdvisoryLock(pg_url, "loan").holder() == ""
            assert f"pid {os.getpid()}" in AdvisoryLock(other, "loan").holder()
        finally:
            here.release()
            there.release()


def _two_hosts(tmp_path: Path, pg_url: str) -> tuple[Path, Path]:
    """Two "hosts": folders of their own (state, lock files, snapshots) with one PostgreSQL
    store and workflow database; a champion trained from the first. The MLflow registry stays
    a file of the first host's, which both name by its absolute path."""
    import shutil

    a, b = tmp_path / "host-a", tmp_path / "host-b"
    make_project(a)
    text = (
        (a / "driftloop.toml")
        .read_text()
        .replace('url = "sqlite:///.driftloop/driftloop.db"', f'url = "{pg_url}"')
        .replace(
            'uri = "sqlite:///.driftloop/mlflow.db"',
            f'uri = "sqlite:///{a}/.driftloop/mlflow.db"\nartifacts = "{a}/.driftloop/artifacts"',
        )
        .replace('schedule = "30s"', 'schedule = "300ms"\ncommit_lag = "200ms"')
        .replace("[registry]", f'snapshots = "{tmp_path}/shared/datasets"\n\n[registry]', 1)
    )
    (a / "driftloop.toml").write_text(text)
    trained = Project.load(a / "driftloop.toml")
    train(trained)
    trained.close()  # its store's connections too
    b.mkdir()
    shutil.copy(a / "trainer.py", b / "trainer.py")
    shutil.copytree(a / "data", b / "data")
    (b / "driftloop.toml").write_text(text)
    return a, b


def test_one_monitor_across_two_hosts_and_a_takeover_when_the_holder_dies(
    tmp_path: Path, pg_url: str
) -> None:
    """Two servers on two "hosts" (their own folders, so no shared lock file) and one PostgreSQL
    store: one monitors, under an advisory lock; kill it and the other takes over."""
    import re
    import signal
    import subprocess

    import httpx

    from driftloop.demo.data import applicants
    from driftloop.demo.scenario import free_port
    from driftloop.locks import AdvisoryLock

    from .conftest import cli_env

    a, b = _two_hosts(tmp_path, pg_url)
    servers: dict[int, tuple[subprocess.Popen[str], str]] = {}
    for host in (a, b):
        port = free_port()
        proc = subprocess.Popen(
            ["driftloop", "serve", "-c", str(host / "driftloop.toml"), "--port", str(port)],
            env=cli_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        servers[proc.pid] = (proc, f"http://127.0.0.1:{port}")
    lock = AdvisoryLock(pg_url, "loan")
    store = Store(pg_url)

    def holder(deadline: float, among: Collection[int]) -> int | None:
        """The first of ``among`` seen holding the lock before ``deadline``."""
        while time.time() < deadline:
            found = re.search(r"pid (\d+)", lock.holder())
            if found and int(found.group(1)) in among:
                return int(found.group(1))
            time.sleep(0.2)
        return None

    def traffic(url: str, n: int, seed: int) -> None:
        records = applicants(n, "A", seed=seed).drop(columns="approved").to_dict(orient="records")
        with httpx.Client(base_url=url, timeout=30) as client:
            for start in range(0, n, 100):
                assert (
                    client.post("/predict", json={"records": records[start : start + 100]}).status_code == 200
                )

    try:
        for _, url in servers.values():
            deadline = time.time() + 90
            while time.time() < deadline:
                try:
                    if httpx.get(url + "/health", timeout=1).json()["status"] == "ok":
                        break
                except (httpx.HTTPError, ValueError):
                    time.sleep(0.2)
        first = holder(time.time() + 30, among=servers)
        assert first is not None, "nobody took the monitoring lock"
        for i, (_, url) in enumerate(servers.values()):
            traffic(url, 300, seed=80 + i)  # both serve; one monitors
        deadline = time.time() + 30
        while time.time() < deadline and len(store.windows("loan", limit=100)) < 2:
            time.sleep(0.2)
        windows = store.windows("loan", limit=100)
        assert len(windows) == 2 and len({w["start_seq"] for w in windows}) == 2  # no window twice
        servers[first][0].send_signal(signal.SIGKILL)  # the holder's host dies
        servers[first][0].wait(timeout=30)
        survivor = next(pid for pid in servers if pid != first)
        # the dead holder's session ends as its server reads the closed socket: a moment later,
        # not before the kill returns, so the survivor is awaited, not the first holder seen
        assert holder(time.time() + 30, among={survivor}) == survivor, "the other server did not take over"
        traffic(servers[survivor][1], 300, seed=90)
        deadline = time.time() + 30
        while time.time() < deadline and len(store.windows("loan", limit=100)) < 3:
            time.sleep(0.2)
        assert len(store.windows("loan", limit=100)) == 3  # the survivor closes windows now
    finally:
        for proc, _ in servers.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=30)
        store.close()


@pytest.mark.slow
def test_a_run_interrupted_on_one_host_resumes_on_the_other(tmp_path: Path, pg_url: str) -> None:
    """A retrain dies mid-step on host A; a server on host B, with its own folder and its own
    workflow executor, sees that A's executor lease is free and resumes the run where it was."""
    import signal
    import subprocess
    import sys

    from driftloop.demo.scenario import free_port

    from .conftest import cli_env

    a, b = _two_hosts(tmp_path, pg_url)
    project = Project.load(a / "driftloop.toml")
    send(project, 900, "B", seed=24, label_share=0.6)
    marker = tmp_path / "crashed"
    crashed = subprocess.run(
        [sys.executable, "-m", "driftloop.cli", "retrain", "-c", str(a / "driftloop.toml")],
        env=cli_env(DRIFTLOOP_CRASH_AT="train:after-register", DRIFTLOOP_CRASH_MARKER=str(marker)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert crashed.returncode == 137, crashed.stdout + crashed.stderr  # host A died mid-run
    (run,) = project.store.runs("loan")
    assert run["status"] == "running"
    log = tmp_path / "host-b.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            ["driftloop", "serve", "-c", str(b / "driftloop.toml"), "--port", str(free_port())],
            env=cli_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.time() + 120
        while time.time() < deadline and f"Resuming retrain run(s) {run['id']} here" not in log.read_text():
            time.sleep(0.3)
        assert f"Resuming retrain run(s) {run['id']} here" in log.read_text(), log.read_text()[-3000:]
        # meanwhile a third process queues another run: it waits for the first, wherever it runs
        second = workflow.start_retrain(project, "manual")
        done = workflow.wait(second, timeout=240)
        row = project.store.run(run["id"])
        assert row is not None and row["status"] in ("promoted", "rejected"), (row, log.read_text()[-3000:])
        assert done["status"] in ("promoted", "rejected"), done
        began = min(s["started_at"] for s in project.store.run_steps(second))
        assert row["finished_at"] <= began, "the second run started before the first had finished"
    finally:
        workflow.shutdown()
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
    names = [s["step"] for s in project.store.run_steps(run["id"])]
    assert names.count("train") == 2, f"the interrupted step was entered again on host B: {names}"
    versions = [v["version"] for v in project.registry.versions("loan")]
    assert versions == ["1", "2", "3"]  # one per run: none registered twice by the resumed step
    assert len(project.store.decisions("loan")) == 2
    kept = {Path(d["path"]).parent for d in project.store.datasets("loan")}
    assert kept == {tmp_path / "shared" / "datasets"}, kept  # both hosts wrote to the shared folder
    project.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_concurrent_merges_into_a_runs_options_lose_no_key(backend: str, tmp_path: Path) -> None:
    """Steps and the post-deploy watch add keys to a run's options from several threads or
    processes; each merge reads and writes the row, so one must wait for the other."""
    from concurrent.futures import ThreadPoolExecutor

    with contextlib.ExitStack() as stack:
        url = stack.enter_context(_database()) if backend == "postgres" else f"sqlite:///{tmp_path}/s.db"
        stores = [Store(url) for _ in range(4)]  # one engine each, as separate processes would have
        for store in stores:
            stack.callback(store.close)
        stores[0].add_run("r1", "m", "manual", {"first": 0})

        def merge(i: int) -> None:
            stores[i % 4].merge_run_options("r1", **{f"k{i}": i})

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(merge, range(80)))
        row = stores[0].run("r1")
        assert row is not None
        missing = {f"k{i}" for i in range(80)} - set(row["options"])
        assert not missing and row["options"]["first"] == 0, f"lost {len(missing)} of 80 merges"


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_processes_delivering_alerts_at_once_send_each_once(backend: str, tmp_path: Path) -> None:
    """The serving worker that monitors, a 'driftloop monitor' and a retrain's process may each
    deliver the alerts a sink missed; a claim moves a delivery on only if no one else has."""
    from concurrent.futures import ThreadPoolExecutor

    with contextlib.ExitStack() as stack:
        url = stack.enter_context(_database()) if backend == "postgres" else f"sqlite:///{tmp_path}/s.db"
        stores = [Store(url) for _ in range(4)]  # one engine each, as separate processes would have
        for store in stores:
            stack.callback(store.close)
        for i in range(30):
            stores[0].add_alert(deliver_to=["a", "b"], model="m", rule="r", metric="x", message=str(i))
        now = time.time() + 1

        def claim(i: int) -> list[tuple[int, str]]:
            return [(d["id"], d["sink"]) for d in stores[i % 4].claim_deliveries("m", now=now, lease=60)]

        with ThreadPoolExecutor(8) as pool:
            claimed = [pair for part in pool.map(claim, range(8)) for pair in part]
        assert len(claimed) == len(set(claimed)) == 60, f"{len(claimed) - len(set(claimed))} claimed twice"
