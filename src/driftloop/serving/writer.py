"""Batched log writer: rows from all requests share one transaction (group commit).

``durable`` mode: :meth:`LogWriter.write` returns only after the rows are committed, so a
response is never sent for a prediction the store does not hold. ``fast`` mode: rows wait in a
bounded queue flushed every ``interval`` and at shutdown; a full queue raises
:class:`QueueFull` so the server answers 503 instead of growing without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from concurrent.futures import Future
from typing import Any, NamedTuple

from driftloop.store import Store

__all__ = [
    "FAILING_FOR",
    "STORE_REFUSES",
    "TRIES",
    "LogBatch",
    "LogUnavailable",
    "LogWriter",
    "QueueFull",
    "failing",
    "tries",
]

log = logging.getLogger("driftloop.serving")
STOP_WAIT = 60.0  # seconds a stopping writer keeps trying a store that cannot be written
FAILING_FOR = 10.0  # seconds a failed commit keeps GET /ready at 503 (then traffic may try again)
STORE_REFUSES = "the store cannot be written (the server's log says why)"
TRIES = 5  # tries of a durable commit (about 1.5 s) before its requests get 503


def tries(gave_up_at: float) -> int:
    """How many tries a durable commit gets: :data:`TRIES`, or one while the store is known to
    refuse writes (a commit gave up less than ``FAILING_FOR`` seconds ago, none has succeeded
    since), so requests get their 503 at once instead of after the same 1.5 s each, and a store
    that is down is not sent five times the traffic. Every commit still tries, so the first one
    after the store is back succeeds.

    >>> tries(0.0), tries(time.monotonic())
    (5, 1)
    """
    return 1 if gave_up_at and time.monotonic() - gave_up_at < FAILING_FOR else TRIES


def failing(error: str | None, at: float) -> str | None:
    """What ``GET /ready`` says about a commit that failed at ``at`` (monotonic seconds): for
    ``FAILING_FOR`` seconds after the newest failure, unless a commit has succeeded since
    (``error`` is then ``None``). After that traffic may try again, so a store that came back
    while no request was sent does not keep the server out of a load balancer for good. The
    route is open, so the database's own words (hosts, paths) stay in the server's log."""
    if error is None or time.monotonic() - at > FAILING_FOR:
        return None
    return STORE_REFUSES


class QueueFull(Exception):
    """The fast-mode log queue is full."""


class LogUnavailable(Exception):
    """Rows cannot be logged durably now: the store refuses them, or the log writer is not running.

    Its message goes to the client, so it never carries the database's own words: those can
    name hosts and paths, and quote rows of other requests that shared the commit."""


class LogBatch(NamedTuple):
    """One request's log rows, column by column: what they share is stored once.

    The request handler only fills the columns; the writer builds the store's rows. A tuple, so
    it encodes in one ``marshal.dumps`` call for the writer process.

    >>> batch = LogBatch("loan", "3", "req-1", 0.0, 1.5, ["no", "yes"], {"tenant": "a"},
    ...                  ["id1"], [{"x": 1.0}], ["yes"], [0.8], [[0.2, 0.8]], None)
    >>> row = batch.rows()[0]
    >>> row["probabilities"], row["meta"]
    ({'no': 0.2, 'yes': 0.8}, {'tenant': 'a'})
    """

    model: str
    model_version: str
    request_id: str
    ts: float
    latency_ms: float
    classes: list[str]
    meta: dict[str, Any] | None  # request metadata, shared by every row
    ids: list[str]
    inputs: list[dict[str, Any]]
    labels: list[str]
    confidences: list[float | None]  # None for a task without confidence
    probabilities: list[list[float]]  # aligned with ``classes`` ([] for a task without classes)
    metrics: list[dict[str, float]] | None  # custom metrics sent per record ({} for none)

    def rows(self) -> list[dict[str, Any]]:
        """The rows as :meth:`Store.insert_predictions` takes them."""
        shared = self.meta or None
        return [
            {
                "prediction_id": pid,
                "model": self.model,
                "model_version": self.model_version,
                "request_id": self.request_id,
                "ts": self.ts,
                "inputs": self.inputs[i],
                "prediction": self.labels[i],
                "confidence": self.confidences[i],
                "probabilities": dict(zip(self.classes, self.probabilities[i], strict=True)),
                "latency_ms": self.latency_ms,
                "meta": (
                    {**(self.meta or {}), "metrics": self.metrics[i]}
                    if self.metrics and self.metrics[i]
                    else shared
                ),
            }
            for i, pid in enumerate(self.ids)
        ]


_Waiter = Future[None] | asyncio.Future[None] | None


def _settle(waiters: list[asyncio.Future[None]], error: Exception | None) -> None:
    for waiter in waiters:
        if not waiter.done():  # a request whose client left is cancelled already
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(error)


Rows = list[dict[str, Any]] | LogBatch


def row_count(rows: Rows) -> int:
    return len(rows.ids) if isinstance(rows, LogBatch) else len(rows)


class LogWriter:
    def __init__(
        self,
        store: Store,
        *,
        mode: str = "durable",
        max_queue: int = 100_000,
        interval: float = 0.02,
        max_batch_rows: int = 20_000,
    ) -> None:
        self.store, self.mode, self.interval, self.max_batch_rows = store, mode, interval, max_batch_rows
        self._queue: queue.Queue[tuple[Rows, _Waiter]] = queue.Queue()
        self._max_queue = max_queue
        self._pending_rows = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.rows_written = 0
        self.batches_written = 0
        self.rows_lost = 0  # fast-mode rows dropped after every retry failed
        self.failing: str | None = None  # the newest commit failure, until a commit succeeds
        self._failed_at = 0.0
        self._gave_up_at = 0.0  # when a commit last gave up (0.0: the newest one succeeded)
        self._stop_at = 0.0

    @property
    def depth(self) -> int:
        return self._pending_rows

    @property
    def problem(self) -> str | None:
        """Why rows cannot be logged now (``None``: they can), for ``GET /ready``."""
        if self._thread is None or self._stop.is_set():
            return "the log writer thread is not running"
        return failing(self.failing, self._failed_at)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="driftloop-log-writer", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Flush everything queued, then stop (waiting up to ``STOP_WAIT`` seconds for a store
        that cannot be written)."""
        self._stop_at = time.monotonic()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=STOP_WAIT + 10)
            self._thread = None

    def submit(self, rows: Rows) -> Future[None] | None:
        """Queue rows from any thread; in durable mode the future completes when they are committed."""
        future: Future[None] | None = Future() if self.mode == "durable" else None
        self._put(rows, future)
        return future

    async def write(self, rows: Rows) -> None:
        """Queue rows from the event loop; in durable mode return once they are committed."""
        if self.mode != "durable":
            self._put(rows, None)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._put(rows, future)
        await future

    def _put(self, rows: Rows, waiter: _Waiter) -> None:
        if self._thread is None:
            raise RuntimeError("The log writer is not running; call start() first.")
        with self._lock:
            if self.mode == "fast" and self._pending_rows + row_count(rows) > self._max_queue:
                raise QueueFull(
                    f"The log queue holds {self._pending_rows} rows, its limit is {self._max_queue}."
                )
            self._pending_rows += row_count(rows)
        self._queue.put((rows, waiter))

    def _run(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=self.interval)
            except queue.Empty:
                if self._stop.is_set():
                    return
                continue
            batch = [first]
            count = row_count(first[0])
            while count < self.max_batch_rows:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                batch.append(item)
                count += row_count(item[0])
            self._flush(batch, count)

    def _flush(self, batch: list[tuple[Rows, _Waiter]], count: int) -> None:
        rows = [row for item, _ in batch for row in (item.rows() if isinstance(item, LogBatch) else item)]
        error: Exception | None = None
        # fast mode: these rows were answered for already, so keep trying until the writer stops
        keep_trying = all(waiter is None for _, waiter in batch)
        attempt, delay, limit = 0, 0.05, tries(self._gave_up_at)
        while True:
            try:
                self.store.insert_predictions(rows)
                error = None
                if self.failing is not None:
                    log.warning("The log writer is writing to the store again.")
                    self.failing = None
                break
            except Exception as exc:  # database busy, full or gone: retry, then fail the waiting requests
                error, attempt = exc, attempt + 1
                if self.failing is None:
                    log.error("The log writer cannot write to the store (retrying): %s", exc)
                self.failing = f"writing {len(rows)} log rows failed: {exc}"
                self._failed_at = time.monotonic()
                if attempt <= 5 or attempt % 60 == 0:
                    log.warning("Writing %d log rows failed (attempt %d): %s", len(rows), attempt, exc)
                if self._stop.is_set():  # stopping: up to a minute more for the store to come back
                    time.sleep(delay)
                else:
                    self._stop.wait(delay)
                delay = min(delay * 2, 5.0)
                stopped_long = self._stop.is_set() and time.monotonic() - self._stop_at > STOP_WAIT
                if attempt >= limit and (not keep_trying or stopped_long):
                    break
        self._gave_up_at = 0.0 if error is None else time.monotonic()
        with self._lock:
            self._pending_rows -= count
        if error is None:
            self.rows_written += len(rows)
            self.batches_written += 1
        # one wake-up per event loop for the whole batch, not one per request
        by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
        refused = None if error is None else LogUnavailable(STORE_REFUSES)  # the words stay in the log
        for _, waiter in batch:
            if isinstance(waiter, asyncio.Future):
                by_loop.setdefault(waiter.get_loop(), []).append(waiter)
            elif waiter is not None:
                if refused is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(refused)
        for loop, waiters in by_loop.items():
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
                loop.call_soon_threadsafe(_settle, waiters, refused)
        if error is not None and all(f is None for _, f in batch):
            self.rows_lost += len(rows)
            log.error("Dropped %d fast-mode log rows after retries: %s", len(rows), error)
