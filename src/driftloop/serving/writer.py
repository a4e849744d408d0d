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
from concurrent.futures import Future
from typing import Any

from driftloop.store import Store

__all__ = ["LogWriter", "QueueFull"]

log = logging.getLogger("driftloop.serving")


class QueueFull(Exception):
    """The fast-mode log queue is full."""


_Waiter = Future[None] | asyncio.Future[None] | None


def _settle(waiters: list[asyncio.Future[None]], error: Exception | None) -> None:
    for waiter in waiters:
        if not waiter.done():  # a request whose client left is cancelled already
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(error)


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
        self._queue: queue.Queue[tuple[list[dict[str, Any]], _Waiter]] = queue.Queue()
        self._max_queue = max_queue
        self._pending_rows = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.rows_written = 0
        self.batches_written = 0

    @property
    def depth(self) -> int:
        return self._pending_rows

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="driftloop-log-writer", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Flush everything queued, then stop."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
            self._thread = None

    def submit(self, rows: list[dict[str, Any]]) -> Future[None] | None:
        """Queue rows from any thread; in durable mode the future completes when they are committed."""
        future: Future[None] | None = Future() if self.mode == "durable" else None
        self._put(rows, future)
        return future

    async def write(self, rows: list[dict[str, Any]]) -> None:
        """Queue rows from the event loop; in durable mode return once they are committed."""
        if self.mode != "durable":
            self._put(rows, None)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._put(rows, future)
        await future

    def _put(self, rows: list[dict[str, Any]], waiter: _Waiter) -> None:
        if self._thread is None:
            raise RuntimeError("The log writer is not running; call start() first.")
        with self._lock:
            if self.mode == "fast" and self._pending_rows + len(rows) > self._max_queue:
                raise QueueFull(
                    f"The log queue holds {self._pending_rows} rows, its limit is {self._max_queue}."
                )
            self._pending_rows += len(rows)
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
            count = len(first[0])
            while count < self.max_batch_rows:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                batch.append(item)
                count += len(item[0])
            self._flush(batch, count)

    def _flush(self, batch: list[tuple[list[dict[str, Any]], _Waiter]], count: int) -> None:
        rows = [row for rows, _ in batch for row in rows]
        error: Exception | None = None
        for attempt in range(5):
            try:
                self.store.insert_predictions(rows)
                error = None
                break
            except Exception as exc:  # database busy or gone: retry, then fail the waiting requests
                error = exc
                log.warning("Writing %d log rows failed (attempt %d): %s", len(rows), attempt + 1, exc)
                self._stop.wait(0.05 * 2**attempt)
        with self._lock:
            self._pending_rows -= count
        if error is None:
            self.rows_written += len(rows)
            self.batches_written += 1
        # one wake-up per event loop for the whole batch, not one per request
        by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
        for _, waiter in batch:
            if isinstance(waiter, asyncio.Future):
                by_loop.setdefault(waiter.get_loop(), []).append(waiter)
            elif waiter is not None:
                if error is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(error)
        for loop, waiters in by_loop.items():
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
                loop.call_soon_threadsafe(_settle, waiters, error)
        if error is not None and all(f is None for _, f in batch):
            log.error("Dropped %d fast-mode log rows after retries: %s", len(rows), error)
