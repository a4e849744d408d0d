"""The store: one SQLAlchemy Core code path for SQLite (WAL) and PostgreSQL.

>>> import tempfile, os
>>> store = Store(f"sqlite:///{tempfile.mkdtemp()}/db.sqlite")
>>> store.count_predictions("loan")
0
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Connection,
    Engine,
    Table,
    and_,
    create_engine,
    event,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import OperationalError

from driftloop.config import FeedbackSettings
from driftloop.exceptions import ConfigError, DriftloopError
from driftloop.identity import principal
from driftloop.locks import advisory_key
from driftloop.store import tables as t

if TYPE_CHECKING:
    from driftloop.archive import LogArchive

__all__ = ["Store", "tables"]
tables = t

_MIGRATIONS = Path(__file__).with_name("migrations")


def make_engine(url: str, synchronous: str = "full") -> Engine:
    """An engine with the pragmas driftloop needs: WAL, a busy timeout, and on SQLite
    ``synchronous`` (``full``: fsync on every commit; ``normal``: at checkpoints only).

    Its errors never quote a statement's parameters (``hide_parameters``): those are logged
    inputs, labels and notes, and an error's text goes to the server's log and to alerts."""
    if synchronous not in ("full", "normal"):
        raise ConfigError(
            f"The 'store.sqlite_synchronous' setting must be 'full' or 'normal'. Got {synchronous!r} instead."
        )
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"timeout": 30, "check_same_thread": False}, hide_parameters=True
        )

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA synchronous={synchronous.upper()}")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    if url.startswith(("postgresql", "postgres")):
        if url.startswith("postgresql://") or url.startswith("postgres://"):
            url = "postgresql+psycopg://" + url.split("://", 1)[1]
        return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20, hide_parameters=True)
    raise ConfigError(
        f"The 'store.url' setting must be a sqlite:/// or postgresql:// URL. Got {url!r} instead."
    )


HEAD = "0010"  # the newest revision in store/migrations/versions (a test checks they agree)
SETTLE_TIMEOUT = 60.0  # seconds a cutoff waits for writes in flight (see Store._settled_max)


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision (safe to call on every start). A store
    already at ``HEAD`` costs one query: Alembic is imported only when there is work to do."""
    try:
        with engine.connect() as conn:
            current = conn.exec_driver_sql("SELECT version_num FROM driftloop_alembic_version").scalar()
        if current == HEAD:
            return
    except Exception:  # a new database: no version table yet
        pass
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "head")


def _resolve(group: list[dict[str, Any]], policy: FeedbackSettings) -> dict[str, Any]:
    """The label one prediction gets from its (non-quarantined) feedback rows, oldest first."""
    if policy.conflict_rule == "trusted":
        names = {principal(s) for s in policy.trusted_sources}
        trusted = [r for r in group if principal(r["source"]) in names]
        return (trusted or group)[-1]
    if policy.conflict_rule == "majority":
        votes = Counter(r["label"] for r in group)
        top = max(votes.values())
        return [r for r in group if votes[r["label"]] == top][-1]  # a tie goes to the latest
    return group[-1]


_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
# a frame re-sent to a restarted log writer may hold rows its predecessor committed: skip them
# (ON CONFLICT, not OR IGNORE, which would also drop a row missing a value and ack it as written)
_SQLITE_INSERT = (
    "INSERT INTO predictions (prediction_id, model, model_version, request_id, ts, inputs, "
    "prediction, confidence, probabilities, latency_ms, meta, inserted_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (prediction_id) DO NOTHING"
)


def _sqlite_params(rows: Sequence[dict[str, Any]], now: float) -> list[tuple[Any, ...]]:
    """Log rows as plain tuples for ``_SQLITE_INSERT``, the JSON columns encoded once."""
    encode = _JSON.encode
    return [
        (
            r["prediction_id"],
            r["model"],
            r["model_version"],
            r["request_id"],
            r["ts"],
            encode(r["inputs"]),
            r["prediction"],
            r["confidence"],
            encode(r["probabilities"]),
            r["latency_ms"],
            None if r.get("meta") is None else encode(r["meta"]),
            r.get("inserted_at") or now,
        )
        for r in rows
    ]


def _bounded(errors: list[Any], items: int = 50, chars: int = 500) -> list[Any]:
    """Errors as stored: at most ``items``, every string cut to ``chars`` characters."""

    def cut(value: Any) -> Any:
        if isinstance(value, str):
            return value if len(value) <= chars else value[:chars] + "…"
        if isinstance(value, dict):
            return {str(k)[:64]: cut(v) for k, v in list(value.items())[:20]}
        if isinstance(value, list):
            return [cut(v) for v in value[:20]]
        return value

    return [cut(e) for e in errors[:items]]


_ARCHIVED_COLUMNS = ("seq", "prediction_id", "inputs", "prediction", "probabilities", "model_version", "ts")
_LABEL_PICK = {"label": "label", "source": "source", "id": "feedback_id"}
_NOTE_PICK = {"source": "source", "rating": "rating", "tags": "tags"}


class Store:
    """Small repositories over the tables. Every write is one transaction."""

    def __init__(
        self, url: str, *, create: bool = True, synchronous: str = "full", archive: LogArchive | None = None
    ) -> None:
        self.url, self.synchronous = url, synchronous
        self.archive = archive  # label queries read rows archived out of the store from here
        self.engine = make_engine(url, synchronous)
        if create:
            migrate(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        with self.engine.begin() as connection:
            yield connection

    def _first(self, query: Any) -> dict[str, Any] | None:
        """The first row a query returns, as a dict, or None."""
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return dict(row) if row else None

    def _all(self, query: Any) -> list[dict[str, Any]]:
        """Every row a query returns, as dicts."""
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def _insert_once(self, table: Table, **values: Any) -> bool:
        """Insert a row unless one with the same unique key is there (a replayed step finds the
        first); True when this call inserted it. Any other integrity error (a missing value)
        still raises: only the conflict on a unique key is expected."""
        return self.insert_new(table, [values])[0]

    def insert_new(self, table: Table, rows: Sequence[dict[str, Any]]) -> list[bool]:
        """Insert each row unless one with the same unique key is there (written meanwhile by
        another process), in one transaction; for each row, True when this call inserted it.
        Only the conflict on a unique key is skipped; any other integrity error raises. On
        PostgreSQL such inserts of several rows into one table take turns (a transaction-level
        advisory lock), so two inserting the same keys in different orders cannot deadlock."""
        dialect = sqlite if self.engine.dialect.name == "sqlite" else postgresql
        inserted: list[bool] = []
        with self.begin() as conn:
            if dialect is postgresql and len(rows) > 1:
                # two such inserts of the same keys in different orders would each wait for the
                # other's row: one at a time per table (SQLite has one writer at a time anyway)
                conn.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": advisory_key(table.name, "insert")}
                )
            for values in rows:
                statement = dialect.insert(table).values(**values).on_conflict_do_nothing()
                if dialect is sqlite:  # its row count is exact (RETURNING would need SQLite 3.35)
                    inserted.append(conn.execute(statement).rowcount == 1)
                else:  # PostgreSQL's count is hidden by the key SQLAlchemy returns; a skip returns none
                    key = conn.execute(statement.returning(*table.primary_key.columns)).first()
                    inserted.append(key is not None)
        return inserted

    # -- predictions -----------------------------------------------------------------------
    def insert_predictions(
        self, rows: Sequence[dict[str, Any]], connection: Connection | None = None
    ) -> None:
        if not rows:
            return
        if connection is None:
            with self.begin() as conn:
                self.insert_predictions(rows, conn)
            return
        now = time.time()
        if self.engine.dialect.name != "sqlite":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            connection.execute(
                pg_insert(t.predictions).on_conflict_do_nothing(index_elements=["prediction_id"]),
                [r if r.get("inserted_at") else {**r, "inserted_at": now} for r in rows],
            )
            return
        connection.exec_driver_sql(_SQLITE_INSERT, _sqlite_params(rows, now))

    def prediction_writer(self) -> Callable[[Sequence[dict[str, Any]]], None]:
        """A function that commits rows, one transaction per call, for a process that does nothing
        else (the log writer): on SQLite it keeps one connection and skips SQLAlchemy's per-call
        work (connection checkout, transaction objects), about half of a small commit's CPU."""
        if self.engine.dialect.name != "sqlite":
            return self.insert_predictions
        raw = self.engine.raw_connection()  # pragmas applied by the engine's connect hook

        def write(rows: Sequence[dict[str, Any]]) -> None:
            cursor = raw.cursor()
            try:
                cursor.executemany(_SQLITE_INSERT, _sqlite_params(rows, time.time()))
                raw.commit()
            except BaseException:
                raw.rollback()
                raise
            finally:
                cursor.close()

        return write

    def max_seq(self, model: str) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.scalar(select(func.max(t.predictions.c.seq)).where(t.predictions.c.model == model)) or 0
            )

    def count_predictions(self, model: str) -> int:
        with self.engine.connect() as conn:
            return int(conn.scalar(select(func.count()).where(t.predictions.c.model == model)) or 0)

    def prediction(self, prediction_id: str) -> dict[str, Any] | None:
        return self._first(select(t.predictions).where(t.predictions.c.prediction_id == prediction_id))

    def served(self, ids: Iterable[str]) -> dict[str, str]:
        """The logged prediction (its text) of each of ``ids`` that exists."""
        ids = list(ids)
        found: dict[str, str] = {}
        p = t.predictions
        with self.engine.connect() as conn:
            for start in range(0, len(ids), 500):
                query = select(p.c.prediction_id, p.c.prediction).where(
                    p.c.prediction_id.in_(ids[start : start + 500])
                )
                found.update({r.prediction_id: r.prediction for r in conn.execute(query)})
        return found

    def existing_prediction_ids(self, ids: Iterable[str]) -> set[str]:
        ids = list(ids)
        found: set[str] = set()
        with self.engine.connect() as conn:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                found.update(
                    conn.scalars(
                        select(t.predictions.c.prediction_id).where(t.predictions.c.prediction_id.in_(chunk))
                    )
                )
        return found

    def predictions_after(
        self, model: str, after_seq: int, limit: int, *, settled_before: float | None = None
    ) -> list[dict[str, Any]]:
        """Predictions after ``after_seq`` in sequence order. With ``settled_before``, stop short of
        rows inserted at or after that time: on a database where concurrent writers may commit out
        of sequence order (PostgreSQL), a lower sequence number may still be in flight there."""
        query = select(t.predictions).where(
            and_(t.predictions.c.model == model, t.predictions.c.seq > after_seq)
        )
        if settled_before is not None:
            recent = (
                select(func.min(t.predictions.c.seq))
                .where(t.predictions.c.model == model, t.predictions.c.inserted_at >= settled_before)
                .scalar_subquery()
            )
            query = query.where(
                (t.predictions.c.inserted_at < settled_before) | t.predictions.c.inserted_at.is_(None),
                func.coalesce(t.predictions.c.seq < recent, True),
            )
        query = query.order_by(t.predictions.c.seq).limit(limit)
        return self._all(query)

    def served_inputs(
        self, model: str, first_seq: int, last_seq: int, limit: int, *, oldest: bool = False
    ) -> list[dict[str, Any]]:
        """The newest ``limit`` requests served with ``first_seq <= seq <= last_seq`` (``oldest``:
        the first ``limit``), labelled or not, oldest first: ``seq``, ``prediction_id``,
        ``model_version`` and ``inputs`` (a period's population, a watch's rows), from the store
        and, for the part already moved there, the archive."""
        p = t.predictions
        order = p.c.seq.asc() if oldest else p.c.seq.desc()
        query = (
            select(p.c.seq, p.c.prediction_id, p.c.model_version, p.c.inputs)
            .where(p.c.model == model, p.c.seq >= first_seq, p.c.seq <= last_seq)
            .order_by(order)
            .limit(limit)
        )
        stored = sorted(self._all(query), key=lambda r: r["seq"])  # the store before the archive
        if self.archive is None or (len(stored) >= limit and not oldest):
            return stored  # archived rows are older than the newest ``limit`` the store holds
        batches = self.archive.manifests(model)
        through = int(batches[-1]["last_seq"]) if batches else 0
        if first_seq > through:
            return stored
        end = min(last_seq, through)
        span = {"start_seq": first_seq, "end_seq": end, "batches": batches}
        keys = ("seq", "prediction_id", "model_version", "inputs")
        archived = [
            {k: r[k] for k in keys}
            for r in self.archive.rows(model, "predictions", **span)
            if first_seq <= r["seq"] <= end
        ]
        archived.sort(key=lambda r: r["seq"])
        # a row both archived and not yet deleted is read once, from the archive; the store's
        # rows past the archive continue it (with ``oldest``, a prefix of them is enough: the
        # archive holds every row before the first)
        both = archived + [r for r in stored if r["seq"] > through]
        return both[:limit] if oldest else both[-limit:]

    # -- shadow predictions and canary rollouts ---------------------------------------------
    def insert_shadow(self, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            with self.begin() as conn:
                conn.execute(insert(t.shadow_predictions), list(rows))

    def shadow_pairs(self, model: str, version: str | None = None) -> list[dict[str, Any]]:
        """Every request a shadow model also scored, oldest first: ``seq``, ``prediction_id``,
        ``inputs``, the ``served`` output and the ``shadow`` one, with each one's probabilities
        and the shadow's ``model_version`` (only ``version``'s, if given)."""
        p, s = t.predictions, t.shadow_predictions
        query = (
            select(
                p.c.seq,
                p.c.prediction_id,
                p.c.inputs,
                p.c.prediction.label("served"),
                p.c.probabilities.label("served_probabilities"),
                s.c.prediction.label("shadow"),
                s.c.probabilities.label("shadow_probabilities"),
                s.c.model_version,
            )
            .join(p, p.c.prediction_id == s.c.prediction_id)
            .where(s.c.model == model)
            .order_by(p.c.seq)
        )
        if version is not None:
            query = query.where(s.c.model_version == version)
        return self._all(query)

    def start_rollout(self, model: str, run_id: str, version: str, share: float) -> None:
        """Begin (or, on a replay, find) the canary rollout of a run."""
        now = time.time()
        self._insert_once(
            t.rollouts,
            model=model,
            run_id=run_id,
            version=version,
            share=share,
            status="canary",
            started_at=now,
            updated_at=now,
        )

    def update_rollout(self, run_id: str, **values: Any) -> None:
        with self.begin() as conn:
            conn.execute(
                update(t.rollouts)
                .where(t.rollouts.c.run_id == run_id)
                .values(updated_at=time.time(), **values)
            )

    def rollouts(self, model: str, limit: int = 20) -> list[dict[str, Any]]:
        """The model's canary rollouts, newest first: version, last share, status and why."""
        query = (
            select(t.rollouts)
            .where(t.rollouts.c.model == model)
            .order_by(t.rollouts.c.id.desc())
            .limit(limit)
        )
        return self._all(query)

    def rollout(self, model: str, run_id: str | None = None) -> dict[str, Any] | None:
        """A run's rollout, or the model's active canary (status ``canary``)."""
        query = select(t.rollouts).where(t.rollouts.c.model == model)
        query = (
            query.where(t.rollouts.c.run_id == run_id)
            if run_id
            else query.where(t.rollouts.c.status == "canary")
        )
        return self._first(query.order_by(t.rollouts.c.id.desc()).limit(1))

    # -- retrain run steps -------------------------------------------------------------------
    def add_run_step(self, run_id: str, step: str) -> None:
        with self.begin() as conn:
            conn.execute(insert(t.run_steps).values(run_id=run_id, step=step[:32], started_at=time.time()))

    def run_steps(self, run_id: str) -> list[dict[str, Any]]:
        """Each step a run entered, with its duration (to the next step, or to the run's end).
        A step entered twice was resumed after a crash."""
        with self.engine.connect() as conn:
            rows = [
                dict(r)
                for r in conn.execute(
                    select(t.run_steps.c.step, t.run_steps.c.started_at)
                    .where(t.run_steps.c.run_id == run_id)
                    .order_by(t.run_steps.c.id)
                ).mappings()
            ]
            finished = conn.scalar(select(t.retrain_runs.c.finished_at).where(t.retrain_runs.c.id == run_id))
        ends = [r["started_at"] for r in rows[1:]] + [finished]
        for row, end in zip(rows, ends, strict=True):
            row["seconds"] = None if end is None else round(end - row["started_at"], 3)
        return rows

    # -- monitor runs ----------------------------------------------------------------------
    def add_monitor_run(
        self, model: str, started_at: float, ok: bool, windows: int, error: str | None = None
    ) -> None:
        with self.begin() as conn:
            conn.execute(
                insert(t.monitor_runs).values(
                    model=model,
                    started_at=started_at,
                    finished_at=time.time(),
                    ok=ok,
                    windows=windows,
                    error=error,
                )
            )

    def monitor_runs(
        self, model: str, limit: int = 20, ok: bool | None = None, first: bool = False
    ) -> list[dict[str, Any]]:
        """The newest (or with ``first``, the oldest) monitoring passes, oldest first."""
        query = select(t.monitor_runs).where(t.monitor_runs.c.model == model)
        if ok is not None:
            query = query.where(t.monitor_runs.c.ok == ok)
        order = t.monitor_runs.c.id.asc() if first else t.monitor_runs.c.id.desc()
        with self.engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(query.order_by(order).limit(limit)).mappings()]
            return rows if first else rows[::-1]

    def record_invalid(
        self,
        model: str,
        path: str,
        status: int,
        errors: list[Any],
        *,
        keep_rows: int = 10_000,
        keep_seconds: float = 7 * 86400.0,
    ) -> None:
        """Store a rejected request's errors (at most 50, each cut to 500 characters), and keep the
        table bounded: older than ``keep_seconds`` or beyond the newest ``keep_rows`` is deleted."""
        now = time.time()
        with self.begin() as conn:
            key = conn.execute(
                insert(t.invalid_requests).values(
                    model=model, ts=now, path=path[:64], status=status, errors=_bounded(errors)
                )
            ).inserted_primary_key
            new_id = int(key[0]) if key else 0
            if new_id % 50 == 0 or keep_rows < 50:  # prune now and then, not on every insert
                ir = t.invalid_requests
                conn.execute(
                    ir.delete().where((ir.c.id <= new_id - keep_rows) | (ir.c.ts < now - keep_seconds))
                )

    def count_invalid(self, model: str) -> int:
        with self.engine.connect() as conn:
            return int(conn.scalar(select(func.count()).where(t.invalid_requests.c.model == model)) or 0)

    # -- feedback --------------------------------------------------------------------------
    def add_feedback(self, items: Sequence[dict[str, Any]], *, annotations: bool = False) -> None:
        """Labels (``prediction_id``, ``label``, ``source``). With ``annotations``, each item may
        also carry ``rating``, ``tags``, ``scores`` and ``rationale`` (see
        :mod:`driftloop.annotations`), and its label may be ``None``; all in one transaction."""
        now = time.time()
        keys = ("rating", "tags", "scores", "rationale")
        labels = [
            {"ts": now, **{k: v for k, v in item.items() if k not in keys}}
            for item in items
            if item.get("label") is not None
        ]
        notes = [
            {
                "ts": now,
                "prediction_id": item["prediction_id"],
                "source": item["source"],
                **{k: item.get(k) for k in keys},
            }
            for item in items
            if annotations and any(item.get(k) is not None for k in keys)
        ]
        with self.begin() as conn:
            if labels:
                conn.execute(insert(t.feedback), labels)
            if notes:
                conn.execute(insert(t.notes), notes)

    def annotated(self, model: str, *, start_seq: int, end_seq: int) -> list[dict[str, Any]]:
        """The annotations of a model's predictions with ``seq`` in the range, with the
        prediction's ``seq``, inputs and output, oldest first."""
        p, a = t.predictions, t.notes
        query = (
            select(
                p.c.seq,
                p.c.inputs,
                p.c.prediction,
                *(a.c[k] for k in ("prediction_id", "source", "rating", "tags", "scores", "rationale", "id")),
            )
            .join(p, p.c.prediction_id == a.c.prediction_id)
            .where(p.c.model == model, p.c.seq >= start_seq, p.c.seq <= end_seq)
            .order_by(a.c.id)
        )
        with self.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(query)]

    def labelled(
        self,
        model: str,
        *,
        start_seq: int = 0,
        end_seq: int | None = None,
        max_feedback_id: int | None = None,
        policy: FeedbackSettings | None = None,
    ) -> list[dict[str, Any]]:
        """Predictions with their resolved label (one row per prediction), oldest first."""
        return self.resolved_labels(
            model, start_seq=start_seq, end_seq=end_seq, max_feedback_id=max_feedback_id, policy=policy
        )[0]

    def resolved_labels(
        self,
        model: str,
        *,
        start_seq: int = 0,
        end_seq: int | None = None,
        max_feedback_id: int | None = None,
        policy: FeedbackSettings | None = None,
    ) -> tuple[list[dict[str, Any]], dict[str, int]]:
        """One label per prediction under ``policy`` (default: the latest wins), and what it took:
        ``{"feedback": rows read, "quarantined": rows from quarantined sources, "conflicts":
        predictions whose usable labels disagreed}``."""
        policy = policy or FeedbackSettings()
        p, f = t.predictions, t.feedback
        query = (
            select(
                p.c.seq,
                p.c.prediction_id,
                p.c.inputs,
                p.c.prediction,
                p.c.probabilities,
                p.c.model_version,
                p.c.ts,
                f.c.label,
                f.c.source,
                f.c.id.label("feedback_id"),
            )
            .join(f, f.c.prediction_id == p.c.prediction_id)
            .where(p.c.model == model, p.c.seq >= start_seq)
            .order_by(p.c.seq, f.c.id)
        )
        if end_seq is not None:
            query = query.where(p.c.seq <= end_seq)
        if max_feedback_id is not None:
            query = query.where(f.c.id <= max_feedback_id)
        with self.engine.connect() as conn:  # the store first, then the archive: see _archived
            stored = [dict(r) for r in conn.execute(query).mappings()]
        rows, through = self._archived(model, "feedback", start_seq, end_seq, max_feedback_id, _LABEL_PICK)
        rows += [r for r in stored if r["seq"] > through]
        quarantined = self.quarantined_principals(model, policy)
        usable = [r for r in rows if principal(r["source"]) not in quarantined]
        by_prediction: dict[str, list[dict[str, Any]]] = {}
        for r in usable:
            by_prediction.setdefault(r["prediction_id"], []).append(r)
        resolved, conflicts = [], 0
        for group in by_prediction.values():  # insertion order: by seq, then feedback id
            conflicts += len({r["label"] for r in group}) > 1
            resolved.append(_resolve(group, policy))
        stats = {"feedback": len(rows), "quarantined": len(rows) - len(usable), "conflicts": conflicts}
        return resolved, stats

    def _archived(
        self,
        model: str,
        kind: str,
        start_seq: int,
        end_seq: int | None,
        max_id: int | None,
        pick: dict[str, str],
    ) -> tuple[list[dict[str, Any]], int]:
        """The archived part of a label query (rows with seq up to the archive's end) and that
        end; the caller keeps only the store's rows past it, so a row in both (a crash before the
        delete) counts once. Callers read the store *before* calling this: an archiving pass
        writes its manifest before it deletes, so whichever side of a concurrent pass the store
        read fell on, the manifests read afterwards cover every row it no longer saw."""
        batches = self.archive.manifests(model) if self.archive is not None else []
        through = int(batches[-1]["last_seq"]) if batches else 0
        if not through or start_seq > through:
            return [], through
        from driftloop.archive import archived_joined

        table = t.feedback if kind == "feedback" else t.notes
        orphans = select(table).where(
            ~select(t.predictions.c.seq)
            .where(t.predictions.c.prediction_id == table.c.prediction_id)
            .exists()
        )
        with self.engine.connect() as conn:  # rows that came in while their prediction was archived
            stray = [dict(r) for r in conn.execute(orphans).mappings()]
        assert self.archive is not None
        rows = archived_joined(
            self.archive,
            model,
            kind,
            start_seq=start_seq,
            end_seq=through if end_seq is None else min(end_seq, through),
            max_id=max_id,
            orphans=stray,
            columns=_ARCHIVED_COLUMNS,
            pick=pick,
            batches=batches,
        )
        return rows, through

    def feedback_of(self, ids: Sequence[str], *, max_id: int) -> list[dict[str, Any]]:
        """The labels of ``ids`` with ids up to ``max_id``, as stored (for the archive)."""
        return self._rows_of(t.feedback, ids, max_id)

    def annotations_of(self, ids: Sequence[str], *, max_id: int) -> list[dict[str, Any]]:
        """The annotations of ``ids`` with ids up to ``max_id``, as stored (for the archive)."""
        return self._rows_of(t.notes, ids, max_id)

    def _rows_of(self, table: Any, ids: Sequence[str], max_id: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        with self.engine.connect() as conn:
            for start in range(0, len(ids), 500):
                query = (
                    select(table)
                    .where(table.c.prediction_id.in_(ids[start : start + 500]), table.c.id <= max_id)
                    .order_by(table.c.id)
                )
                out += [dict(r) for r in conn.execute(query).mappings()]
        return out

    def delete_archived(
        self,
        model: str,
        manifest: dict[str, Any],
        *,
        feedback_ids: Sequence[int],
        annotation_ids: Sequence[int],
    ) -> int:
        """Delete the store's rows of one archived batch: ``model``'s predictions in the
        manifest's sequence range and the labels and annotations the batch holds (their ids), in
        one transaction; called only once the archive has them durably (the manifest is written).
        Returns the predictions deleted (0 when an earlier call already did).

        Labels go by their ids, exactly those the archive holds: a label written after the batch
        was read stays in the store, read as a label whose prediction was archived (the batch's
        cutoff waited for the labels in flight, :meth:`max_feedback_id`)."""
        p = t.predictions
        span = (
            p.c.model == model,
            p.c.seq >= int(manifest["first_seq"]),
            p.c.seq <= int(manifest["last_seq"]),
        )
        with self.begin() as conn:
            for table, ids in ((t.feedback, feedback_ids), (t.notes, annotation_ids)):
                for start in range(0, len(ids), 1000):
                    conn.execute(table.delete().where(table.c.id.in_(list(ids[start : start + 1000]))))
            done = conn.execute(p.delete().where(*span))
        return int(done.rowcount or 0)

    def quarantined_principals(self, model: str, policy: FeedbackSettings) -> set[str]:
        """Every source whose labels and annotations must not count: the configured ones and
        those quarantined at run time, as the identities they name."""
        return {principal(s) for s in policy.quarantined_sources} | set(self.quarantined(model))

    def quarantined(self, model: str) -> dict[str, str]:
        """Sources quarantined at run time (a reviewer with low agreement), with the reason; the
        configured ``feedback.quarantined_sources`` come on top."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.quarantined_sources.c.source, t.quarantined_sources.c.reason).where(
                    t.quarantined_sources.c.model == model
                )
            ).all()
        return {r.source: r.reason for r in rows}

    def quarantine(self, model: str, source: str, reason: str) -> bool:
        """Quarantine ``source``'s labels for ``model``; False if it was already."""
        return self._insert_once(
            t.quarantined_sources, model=model, source=source, reason=reason, ts=time.time()
        )

    def release(self, model: str, source: str) -> bool:
        """Use ``source``'s labels again; False if it was not quarantined at run time."""
        with self.begin() as conn:
            done = conn.execute(
                t.quarantined_sources.delete().where(
                    t.quarantined_sources.c.model == model, t.quarantined_sources.c.source == source
                )
            )
        return bool(done.rowcount)

    def max_feedback_id(self) -> int:
        """The highest label id, every lower one settled: a cutoff a run reads the same again."""
        return self._settled_max(t.feedback)

    def max_annotation_id(self) -> int:
        """The highest annotation id, every lower one settled (as :meth:`max_feedback_id`)."""
        return self._settled_max(t.notes)

    def _settled_max(self, table: Table) -> int:
        """``max(id)`` of ``table`` once no lower id can still commit.

        PostgreSQL draws an id when a row is inserted, not when it commits. Read while a
        transaction holding a lower id is in flight, the maximum is a cutoff whose rows change
        when it commits: a retrain step replayed after a crash would build other sets than its
        first attempt, and an archive batch would leave the row behind. A SHARE lock waits for
        the table's writers in flight (and holds new ones for the one read), for at most
        ``SETTLE_TIMEOUT`` seconds. SQLite has one writer at a time and nothing to wait for."""
        with self.begin() as conn:
            if conn.dialect.name != "sqlite":
                name = conn.dialect.identifier_preparer.quote(table.name)
                conn.execute(text(f"SET LOCAL lock_timeout = '{int(SETTLE_TIMEOUT * 1000)}ms'"))
                try:
                    conn.execute(text(f"LOCK TABLE {name} IN SHARE MODE"))
                except OperationalError as exc:
                    if getattr(exc.orig, "sqlstate", None) != "55P03":  # not lock_not_available
                        raise
                    raise DriftloopError(
                        f"Waited {SETTLE_TIMEOUT:g} s for the writes in flight to table "
                        f"'{table.name}' to commit; a transaction that wrote to it is still open "
                        f"(see pg_stat_activity). ({str(exc.orig).strip()[:200]})"
                    ) from None
            return int(conn.scalar(select(func.max(table.c.id))) or 0)

    def judged_outputs(
        self,
        model: str,
        *,
        max_annotation_id: int,
        accept_rating: float | None,
        bad_tags: Sequence[str],
        policy: FeedbackSettings,
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Outputs people accepted and outputs they tagged bad, each as a row shaped like
        :meth:`resolved_labels` rows whose label is the output itself, oldest first. The newest
        annotation of an output by a rating or a tag decides (quarantined sources left out): a
        bad tag makes it bad; else a rating of at least ``accept_rating`` accepts it."""
        p, a = t.predictions, t.notes
        query = (
            select(
                p.c.seq,
                p.c.prediction_id,
                p.c.inputs,
                p.c.prediction,
                p.c.probabilities,
                p.c.model_version,
                p.c.ts,
                a.c.source,
                a.c.rating,
                a.c.tags,
            )
            .join(p, p.c.prediction_id == a.c.prediction_id)
            .where(p.c.model == model, a.c.id <= max_annotation_id)
            .order_by(p.c.seq, a.c.id)
        )
        quarantined = self.quarantined_principals(model, policy)
        newest: dict[str, dict[str, Any]] = {}
        with self.engine.connect() as conn:  # the store first, then the archive: see _archived
            stored = [dict(r) for r in conn.execute(query).mappings()]
        rows, through = self._archived(model, "annotations", 0, None, max_annotation_id, _NOTE_PICK)
        rows += [r for r in stored if r["seq"] > through]
        for row in rows:  # a late score alone says nothing here
            if principal(row["source"]) not in quarantined and (row["rating"] is not None or row["tags"]):
                newest[row["prediction_id"]] = row
        bad = set(bad_tags)
        accepted, rejected = [], []
        for r in newest.values():
            if bad & set(r["tags"] or []):
                rejected.append({**r, "label": r["prediction"]})
            elif accept_rating is not None and r["rating"] is not None and r["rating"] >= accept_rating:
                accepted.append({**r, "label": r["prediction"]})
        return accepted, rejected

    # -- model artifacts: the digests serving trusts ------------------------------------------
    def record_artifact(self, model: str, version: str, sha256: str, signature: str | None) -> None:
        """Record a registered version's artifact digest once; a second call must agree."""
        if not self._insert_once(
            t.model_artifacts,
            model=model,
            version=version,
            sha256=sha256,
            signature=signature,
            created_at=time.time(),
        ):
            found = self.artifact(model, version)
            if found is None or found["sha256"] != sha256:
                raise ConfigError(
                    f"Version {version} of '{model}' is already recorded with another artifact digest; "
                    "refusing to record a second one."
                ) from None

    def sign_artifact(self, model: str, version: str, signature: str) -> None:
        with self.begin() as conn:
            conn.execute(
                update(t.model_artifacts)
                .where(t.model_artifacts.c.model == model, t.model_artifacts.c.version == version)
                .values(signature=signature)
            )

    def artifact(self, model: str, version: str) -> dict[str, Any] | None:
        return self._first(
            select(t.model_artifacts).where(
                t.model_artifacts.c.model == model, t.model_artifacts.c.version == version
            )
        )

    def artifacts(self, model: str) -> list[dict[str, Any]]:
        return self._all(
            select(t.model_artifacts)
            .where(t.model_artifacts.c.model == model)
            .order_by(t.model_artifacts.c.id)
        )

    # -- references ------------------------------------------------------------------------
    def reference(self, model: str, model_version: str) -> dict[str, Any] | None:
        return self._first(
            select(t.references).where(
                t.references.c.model == model, t.references.c.model_version == model_version
            )
        )

    def delete_reference(self, model: str, model_version: str) -> None:
        """Forget a version's reference so that the next use rebuilds it (windows keep theirs)."""
        with self.begin() as conn:
            conn.execute(
                t.references.delete().where(
                    t.references.c.model == model, t.references.c.model_version == model_version
                )
            )

    def add_reference(
        self, model: str, model_version: str, dataset_id: str, profile: dict[str, Any]
    ) -> dict[str, Any]:
        """Insert once per (model, version); a second call returns the first row."""
        self._insert_once(
            t.references,
            model=model,
            model_version=model_version,
            dataset_id=dataset_id,
            profile=profile,
            created_at=time.time(),
        )
        row = self.reference(model, model_version)
        assert row is not None
        return row

    # -- windows and metrics ---------------------------------------------------------------
    def last_window(self, model: str) -> dict[str, Any] | None:
        return self._first(
            select(t.windows).where(t.windows.c.model == model).order_by(t.windows.c.end_seq.desc()).limit(1)
        )

    def add_window(self, window: dict[str, Any], window_metrics: list[dict[str, Any]]) -> int:
        """A closed window and its metrics, in one transaction."""
        with self.begin() as conn:
            key = conn.execute(insert(t.windows).values(**window)).inserted_primary_key
            assert key is not None
            window_id = int(key[0])
            now = time.time()
            if window_metrics:
                conn.execute(
                    insert(t.metrics),
                    [{"window_id": window_id, "updated_at": now, **m} for m in window_metrics],
                )
        return window_id

    def upsert_metrics(self, window_id: int, window_metrics: list[dict[str, Any]]) -> None:
        now = time.time()
        with self.begin() as conn:
            for m in window_metrics:
                changed = conn.execute(
                    update(t.metrics)
                    .where(t.metrics.c.window_id == window_id, t.metrics.c.name == m["name"])
                    .values(updated_at=now, **m)
                ).rowcount
                if not changed:
                    conn.execute(insert(t.metrics).values(window_id=window_id, updated_at=now, **m))

    def windows(self, model: str, limit: int = 50) -> list[dict[str, Any]]:
        """The newest ``limit`` windows, oldest first, each with a ``metrics`` dict by name."""
        with self.engine.connect() as conn:
            rows = [
                dict(r)
                for r in conn.execute(
                    select(
                        t.windows.c.id,
                        t.windows.c.start_seq,
                        t.windows.c.end_seq,
                        t.windows.c.start_ts,
                        t.windows.c.end_ts,
                        t.windows.c.n,
                        t.windows.c.model_versions,
                        t.windows.c.reference_id,
                    )
                    .where(t.windows.c.model == model)
                    .order_by(t.windows.c.end_seq.desc())
                    .limit(limit)
                ).mappings()
            ][::-1]
            ids = [r["id"] for r in rows]
            by_window: dict[int, dict[str, dict[str, Any]]] = {i: {} for i in ids}
            if ids:
                for m in conn.execute(select(t.metrics).where(t.metrics.c.window_id.in_(ids))).mappings():
                    by_window[m["window_id"]][m["name"]] = dict(m)
        for r in rows:
            r["metrics"] = by_window[r["id"]]
        return rows

    def window_profiles(
        self,
        model: str,
        *,
        since: float | None = None,
        until: float | None = None,
        reference_id: int | None = None,
    ) -> list[dict[str, Any]]:
        """Windows (id, times, n, reference id and stored profiles) ending within ``[since, until)``."""
        query = select(
            t.windows.c.id,
            t.windows.c.start_ts,
            t.windows.c.end_ts,
            t.windows.c.n,
            t.windows.c.reference_id,
            t.windows.c.profile,
        ).where(t.windows.c.model == model)
        if since is not None:
            query = query.where(t.windows.c.end_ts >= since)
        if until is not None:
            query = query.where(t.windows.c.end_ts < until)
        if reference_id is not None:
            query = query.where(t.windows.c.reference_id == reference_id)
        return self._all(query.order_by(t.windows.c.end_seq))

    # -- alerts ----------------------------------------------------------------------------
    def add_alert(self, *, deliver_to: Sequence[str] = (), **values: Any) -> int:
        """Store an alert and, in the same transaction, a pending delivery to each sink key in
        ``deliver_to``: a process that dies once this returns loses no notification."""
        now = time.time()
        with self.begin() as conn:
            key = conn.execute(insert(t.alerts).values(ts=now, **values)).inserted_primary_key
            assert key is not None
            alert_id = int(key[0])
            pending = [
                {"alert_id": alert_id, "sink": sink, "model": values["model"], "tries": 0, "next_at": now}
                for sink in dict.fromkeys(deliver_to)  # one delivery per sink, however often listed
            ]
            if pending:
                conn.execute(insert(t.alert_deliveries).values(error=None, given_up=False), pending)
            return alert_id

    # -- alert deliveries: an outbox, so a sink that is down gets the alert when it is back ----
    def claim_deliveries(
        self, model: str, *, now: float, lease: float, alert_id: int | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """The deliveries due by ``now`` (of one alert, or of any), each with its alert's
        columns, claimed for ``lease`` seconds: a claim moves the delivery's ``next_at`` on
        only if no one else has, so two processes never both send one."""
        d = t.alert_deliveries
        query = (
            select(d.c.sink, d.c.tries, d.c.next_at, *t.alerts.c)
            .join(t.alerts, t.alerts.c.id == d.c.alert_id)
            .where(d.c.model == model, d.c.given_up.is_(False), d.c.next_at <= now)
            .order_by(d.c.alert_id)
            .limit(limit)
        )
        if alert_id is not None:
            query = query.where(d.c.alert_id == alert_id)
        claimed = []
        for row in self._all(query):
            mine = (d.c.alert_id == row["id"]) & (d.c.sink == row["sink"]) & (d.c.next_at == row["next_at"])
            with self.begin() as conn:
                if conn.execute(update(d).where(mine).values(next_at=now + lease)).rowcount:
                    claimed.append(row)
        return claimed

    def delivered(self, alert_id: int, sink: str) -> None:
        d = t.alert_deliveries
        with self.begin() as conn:
            conn.execute(d.delete().where(d.c.alert_id == alert_id, d.c.sink == sink))

    def delivery_failed(self, alert_id: int, sink: str, *, error: str, next_at: float, give_up: bool) -> None:
        d = t.alert_deliveries
        with self.begin() as conn:
            conn.execute(
                update(d)
                .where(d.c.alert_id == alert_id, d.c.sink == sink)
                .values(tries=d.c.tries + 1, error=error[:2000], next_at=next_at, given_up=give_up)
            )

    def undelivered(self, model: str) -> list[dict[str, Any]]:
        """Every delivery not made yet (pending or given up), oldest alert first."""
        d = t.alert_deliveries
        return self._all(select(d).where(d.c.model == model).order_by(d.c.alert_id, d.c.sink))

    def alerts(self, model: str, limit: int = 20, rule: str | None = None) -> list[dict[str, Any]]:
        query = select(t.alerts).where(t.alerts.c.model == model)
        if rule is not None:
            query = query.where(t.alerts.c.rule == rule)
        return self._all(query.order_by(t.alerts.c.id.desc()).limit(limit))[::-1]

    def alert_counts(self, model: str) -> dict[str, int]:
        """How many alerts each rule raised, ever."""
        query = (
            select(t.alerts.c.rule, func.count())
            .where(t.alerts.c.model == model)
            .group_by(t.alerts.c.rule)
            .order_by(t.alerts.c.rule)
        )
        with self.engine.connect() as conn:
            return {str(rule): int(n) for rule, n in conn.execute(query)}

    def set_alert_run(self, alert_id: int, run_id: str) -> None:
        with self.begin() as conn:
            conn.execute(update(t.alerts).where(t.alerts.c.id == alert_id).values(run_id=run_id))

    # -- datasets --------------------------------------------------------------------------
    def add_dataset(self, **values: Any) -> None:
        """Record a snapshot's manifest once (content-addressed: the same id again is a no-op)."""
        self._insert_once(t.datasets, created_at=time.time(), **values)

    def dataset(self, dataset_id: str) -> dict[str, Any] | None:
        return self._first(select(t.datasets).where(t.datasets.c.id == dataset_id))

    def datasets(self, model: str) -> list[dict[str, Any]]:
        return self._all(
            select(t.datasets).where(t.datasets.c.model == model).order_by(t.datasets.c.created_at)
        )

    # -- retrain runs, decisions, promotions -----------------------------------------------
    def add_run(
        self,
        run_id: str,
        model: str,
        trigger: str,
        options: dict[str, Any],
        status: str = "queued",
        error: str | None = None,
    ) -> None:
        """A run row: ``queued`` (enqueued next), or ``waiting`` for evidence (``error`` says why)."""
        with self.begin() as conn:
            conn.execute(
                insert(t.retrain_runs).values(
                    id=run_id,
                    model=model,
                    trigger=trigger,
                    status=status,
                    options=options,
                    error=error,
                    step="waiting" if status == "waiting" else None,
                    started_at=time.time(),
                )
            )

    def update_run(self, run_id: str, **values: Any) -> None:
        with self.begin() as conn:
            conn.execute(update(t.retrain_runs).where(t.retrain_runs.c.id == run_id).values(**values))

    # -- sign-in sessions ------------------------------------------------------------------
    def revoke_session(self, nonce: str, expires: float) -> None:
        """Sign one session out everywhere until its cookie would have expired (``expires``);
        the rows of sessions that have expired since are dropped."""
        with self.begin() as conn:
            conn.execute(t.revoked_sessions.delete().where(t.revoked_sessions.c.expires < time.time()))
        self.insert_new(t.revoked_sessions, [{"nonce": nonce, "expires": expires}])

    def revoked_sessions(self) -> set[str]:
        """The nonces of the sessions signed out that have not expired yet."""
        query = select(t.revoked_sessions.c.nonce).where(t.revoked_sessions.c.expires >= time.time())
        with self.engine.connect() as conn:
            return set(conn.scalars(query))

    def merge_run_options(self, run_id: str, **values: Any) -> None:
        """Add keys to a run's ``options``, read and written in one transaction that holds the
        row: a write to it first takes the row's lock on PostgreSQL and the write lock on
        SQLite, so two merges take turns instead of each writing over the other's key."""
        runs = t.retrain_runs
        with self.begin() as conn:
            conn.execute(update(runs).where(runs.c.id == run_id).values(options=runs.c.options))
            row = conn.execute(select(runs.c.options).where(runs.c.id == run_id)).first()
            if row is not None:
                merged = {**(row[0] or {}), **values}
                conn.execute(update(runs).where(runs.c.id == run_id).values(options=merged))

    def run(self, run_id: str) -> dict[str, Any] | None:
        return self._first(select(t.retrain_runs).where(t.retrain_runs.c.id == run_id))

    def runs(
        self, model: str, limit: int = 20, active_only: bool = False, status: str | None = None
    ) -> list[dict[str, Any]]:
        """Runs oldest first; ``active_only``: queued or running; ``status``: only that one."""
        query = select(t.retrain_runs).where(t.retrain_runs.c.model == model)
        if active_only:
            query = query.where(t.retrain_runs.c.status.in_(["queued", "running"]))
        if status is not None:
            query = query.where(t.retrain_runs.c.status == status)
        return self._all(query.order_by(t.retrain_runs.c.started_at.desc()).limit(limit))[::-1]

    def add_decision(self, **values: Any) -> dict[str, Any]:
        """Insert once per run; a replayed step gets the first decision back."""
        self._insert_once(t.decisions, ts=time.time(), **values)
        decision = self.decision(values["run_id"])
        assert decision is not None
        return decision

    def decision(self, run_id: str) -> dict[str, Any] | None:
        return self._first(select(t.decisions).where(t.decisions.c.run_id == run_id))

    def decisions(self, model: str, limit: int = 20) -> list[dict[str, Any]]:
        return self._all(
            select(t.decisions)
            .where(t.decisions.c.model == model)
            .order_by(t.decisions.c.id.desc())
            .limit(limit)
        )[::-1]

    def add_promotion(self, **values: Any) -> bool:
        """Record an alias move; False when this run's move is already recorded."""
        return self._insert_once(t.promotions, ts=time.time(), **values)

    def champion(self, model: str) -> str | None:
        """The champion as driftloop's own history records it (every alias move driftloop makes is
        a promotions row), read without the registry: what fast, read-only commands show."""
        moves = ("initial", "promote", "rollback", "manual-promote")
        with self.engine.connect() as conn:
            return conn.scalar(
                select(t.promotions.c.to_version)
                .where(t.promotions.c.model == model, t.promotions.c.action.in_(moves))
                .order_by(t.promotions.c.id.desc())
                .limit(1)
            )

    def promotions(self, model: str) -> list[dict[str, Any]]:
        return self._all(
            select(t.promotions).where(t.promotions.c.model == model).order_by(t.promotions.c.id)
        )
