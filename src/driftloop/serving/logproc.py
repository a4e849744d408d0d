"""The prediction log written by a child process: group commit away from the server's GIL.

The server encodes each request's log rows as one ``marshal`` frame and writes it to a socket; the
child decodes every frame that has arrived, inserts them all in one transaction, commits, and
acknowledges the last frame it committed. In ``durable`` mode a request waits for that
acknowledgement, so a response is never sent for a row the store does not hold.

Why a process and not a thread: a writer thread needs the GIL to bind rows and to wake the
requests it has committed, and every hand-over of the GIL between it and the event loop costs
the loop time it would spend predicting. Measured on the benchmark machine (2 cores), a writer
thread that did nothing but wake its requests cost 0.6 ms of server CPU per single-record request
and 1.2 ms per 100-record request (medians of 5 runs); here the serving process's share of
logging is one ``marshal.dumps`` per request and a socket write.

Why ``marshal``: the frame is plain lists, dicts, strings and floats, and marshal writes floats
as 8 bytes instead of printing them as text: for a 100-record request 36 µs to encode instead of
265 µs for ``json``, and 56 µs instead of 258 µs to decode in the child (measured on the
benchmark machine). It is safe here because only this server writes the frames: what a client
sent is string and number values inside them, never the frame's structure; and both ends are
the same interpreter (the child is started with ``sys.executable``), so the format matches.

The child exits when the server's end of the socket closes: at shutdown after the last
acknowledgement, or when the server is killed (it still commits the frames it had read; none
of them was acknowledged, so nothing a client was told about is lost either way).

What each mode promises when a process dies:

- ``durable``: a request is answered only after its rows are committed. If the child dies, the
  requests waiting on it get 503 with ``Retry-After`` (their rows may or may not be stored;
  their ids were never given out) and the server starts a new child.
- ``fast``: a request is answered at once and its frame kept until the child acknowledges its
  commit. If the child dies, every unacknowledged frame is sent again to the new child (the
  insert skips ids already stored, so a frame committed just before the death is not doubled),
  and requests that arrive meanwhile are held in the same bounded queue. Rows are lost only if
  the server itself dies, or stops while no child can be started; ``/metrics`` counts them
  (``driftloop_log_rows_lost_total``).

When the store itself cannot be written (a full disk, a database that is down), ``durable``
requests get 503 after five tries (about 1.5 s), and ``fast`` frames wait for it, retried in
order as long as the server runs: past ``serving.log_queue_size`` requests get 503 (a server
stopped meanwhile waits up to a minute for the store, then counts what it could not write as
lost). Either way ``GET /ready`` answers 503 while commits fail, so a load balancer sends the
traffic elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import marshal
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections import deque
from typing import Any

from driftloop.serving.writer import STORE_REFUSES, TRIES, LogBatch, LogUnavailable, QueueFull, failing, tries

__all__ = ["LogUnavailable", "ProcessLogWriter"]

log = logging.getLogger("driftloop.serving")

_FRAME = struct.Struct("!QI")  # server -> child: sequence number, payload length
# child -> server: kind (R ready, A committed, F failed and retried, E given up), sequence, text size
_REPLY = struct.Struct("!cQI")
_MAX_COMMIT_ROWS = 20_000


class ProcessLogWriter:
    """The server's side: frames out, acknowledgements in, all on the event loop (no threads)."""

    def __init__(
        self, url: str, *, mode: str = "durable", max_queue: int = 100_000, synchronous: str = "full"
    ) -> None:
        self.url, self.mode, self._max_queue, self.synchronous = url, mode, max_queue, synchronous
        self.rows_written = 0
        self.batches_written = 0
        self._seq = 0
        self._pending_rows = 0
        # frames sent and not yet acknowledged: (sequence, rows, waiting request, payload kept in fast mode)
        self._inflight: deque[tuple[int, int, asyncio.Future[None] | None, bytes | None]] = deque()
        self.rows_lost = 0  # fast-mode rows that could not be committed
        self._transport: asyncio.Transport | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._ready: asyncio.Future[None] | None = None
        self._drained: asyncio.Event | None = None
        self._error: str | None = None
        self._stopping = False
        self._live = False  # a child is ready and has every kept frame: new frames go straight out
        self._restarting: asyncio.Task[None] | None = None
        self.failing: str | None = None  # the newest commit failure, until a commit succeeds
        self._failed_at = 0.0

    @property
    def depth(self) -> int:
        """Rows sent to the child and not yet committed."""
        return self._pending_rows

    @property
    def problem(self) -> str | None:
        """Why rows cannot be logged now (``None``: they can), for ``GET /ready``."""
        if self._stopping or not self._live or self._transport is None or self._transport.is_closing():
            return "the log writer process is not running"
        return failing(self.failing, self._failed_at)

    async def start(self, timeout: float = 120.0) -> None:
        self._stopping = False
        await self._spawn(timeout)

    async def _spawn(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        self._process = process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "driftloop.serving.logproc",
                self.url,
                self.synchronous,
                str(theirs.fileno()),
                self.mode,
            ],
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C meant for the server must not kill it before the flush
        )
        theirs.close()
        self._ready = loop.create_future()
        if self._drained is None:
            self._drained = asyncio.Event()
        if not self._inflight:
            self._drained.set()
        self._transport, _ = await loop.create_unix_connection(lambda: _Replies(self), sock=ours)
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), timeout)
        except BaseException:
            self._transport.close()
            process.kill()
            raise
        if self._transport.is_closing():  # it died between saying it was ready and now
            raise LogUnavailable("The log writer process stopped as it started.")
        self._error = None
        for seq, _, _, payload in self._inflight:  # fast mode: what the dead child never confirmed
            if payload is not None:
                self._transport.writelines((_FRAME.pack(seq, len(payload)), payload))
        self._live = True  # only now: a newer frame must never be acknowledged before an older one

    async def _restart(self) -> None:
        """The child died: start another, backing off, while requests get 503 + Retry-After."""
        delay = 0.2
        while not self._stopping:
            if self._process is not None:
                process, self._process = self._process, None
                await asyncio.get_running_loop().run_in_executor(None, process.wait)
            log.error("The log writer process stopped (%s); starting it again.", self._error)
            try:
                await self._spawn(120.0)
                log.warning("The log writer process is running again.")
                return
            except Exception as exc:
                log.error("Starting the log writer process failed: %s", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def write(self, batch: LogBatch) -> None:
        """Send one request's rows to the child; in durable mode return once they are committed.

        In fast mode the frame is kept until its commit is acknowledged; while the child is
        being restarted frames wait in the same bounded queue and go out when it is up."""
        fast = self.mode == "fast"
        down = not self._live or self._transport is None or self._transport.is_closing()
        # fast mode holds frames while the child is down (or its death is still being noticed:
        # a closing transport before connection_lost); they go out when a child is up again
        if down and (not fast or self._stopping or self._ready is None):
            raise LogUnavailable(f"The log writer process is not running ({self._error or 'stopped'}).")
        count = len(batch.ids)
        if fast and self._pending_rows + count > self._max_queue:
            raise QueueFull(f"The log queue holds {self._pending_rows} rows, its limit is {self._max_queue}.")
        payload = marshal.dumps(tuple(batch))  # plain values only: one C call
        self._seq += 1
        future = None if fast else asyncio.get_running_loop().create_future()
        self._inflight.append((self._seq, count, future, payload if fast else None))
        self._pending_rows += count
        assert self._drained is not None
        self._drained.clear()
        if not down:
            assert self._transport is not None
            self._transport.writelines((_FRAME.pack(self._seq, len(payload)), payload))
        if future is not None:
            await future

    async def stop(self, timeout: float = 60.0) -> None:
        """Wait for everything sent to be committed, then let the child exit. A child being
        started again is waited for first, so that the frames it is to take are not lost."""
        if self._restarting is not None and not self._restarting.done():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._restarting), timeout)
        self._stopping = True
        if self._restarting is not None:
            self._restarting.cancel()
        live = self._live and self._transport is not None and not self._transport.is_closing()
        if live and self._drained is not None:  # a child that is up commits what it was sent
            try:
                await asyncio.wait_for(self._drained.wait(), timeout)
            except TimeoutError:
                log.error("The log writer did not commit %d rows within %.0f s.", self._pending_rows, timeout)
        if self._transport is not None:
            self._transport.close()
        lost = sum(count for _, count, _, payload in self._inflight if payload is not None)
        if lost:
            self.rows_lost += lost
            log.error("The log writer stopped with %d fast-mode rows never committed.", lost)
            self._inflight.clear()
        if self._process is not None:
            process, self._process = self._process, None
            try:
                await asyncio.get_running_loop().run_in_executor(None, process.wait, timeout)
            except subprocess.TimeoutExpired:
                process.kill()

    # called by _Replies on the event loop
    def _reply(self, kind: bytes, seq: int, text: str) -> None:
        if kind == b"R":
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(None)
            return
        if kind == b"F":  # a commit failed and is being retried
            if self.failing is None:
                log.error("The log writer cannot write to the store (retrying): %s", text)
            self.failing, self._failed_at = text, time.monotonic()
            return
        if kind == b"A" and self.failing is not None:
            log.warning("The log writer is writing to the store again.")
            self.failing = None
        while self._inflight and self._inflight[0][0] <= seq:
            _, count, future, payload = self._inflight.popleft()
            self._pending_rows -= count
            if kind == b"A":
                self.rows_written += count
            elif payload is not None:
                self.rows_lost += count  # fast mode: the child gave up on them after retries
            if future is not None and not future.done():
                if kind == b"A":
                    future.set_result(None)
                else:  # the database's words (logged below) are not the client's to read
                    future.set_exception(LogUnavailable(STORE_REFUSES))
        if kind == b"A":
            self.batches_written += 1
        else:
            log.error("The log writer could not commit rows up to frame %d: %s", seq, text)
        if not self._inflight and self._drained is not None:
            self._drained.set()

    def _lost(self, exc: Exception | None) -> None:
        self._live = False
        ready = self._ready
        was_running = ready is not None and ready.done() and not ready.cancelled() and not ready.exception()
        self._error = f"its connection closed: {exc}" if exc else "its connection closed"
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(LogUnavailable(f"The log writer did not start ({self._error})."))
        kept: deque[tuple[int, int, asyncio.Future[None] | None, bytes | None]] = deque()
        for item in self._inflight:
            _, count, future, payload = item
            if payload is not None and not self._stopping:
                kept.append(item)  # fast mode: sent again to the next child
                continue
            self._pending_rows -= count
            if payload is not None:
                self.rows_lost += count
            if future is not None and not future.done():
                future.set_exception(LogUnavailable(f"The log writer process stopped ({self._error})."))
        if self._inflight:
            log.error(
                "The log writer process stopped with %d frames unacknowledged (%d kept to send again).",
                len(self._inflight),
                len(kept),
            )
        self._inflight = kept
        if self._drained is not None and not kept:
            self._drained.set()
        if was_running and not self._stopping and (self._restarting is None or self._restarting.done()):
            self._restarting = asyncio.get_running_loop().create_task(self._restart())


class _Replies(asyncio.Protocol):
    def __init__(self, writer: ProcessLogWriter) -> None:
        self.writer = writer
        self.buffer = bytearray()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= _REPLY.size:
            kind, seq, size = _REPLY.unpack_from(self.buffer)
            if len(self.buffer) < _REPLY.size + size:
                return
            text = bytes(self.buffer[_REPLY.size : _REPLY.size + size]).decode()
            del self.buffer[: _REPLY.size + size]
            self.writer._reply(kind, seq, text)

    def connection_lost(self, exc: Exception | None) -> None:
        self.writer._lost(exc)


# -- the child ---------------------------------------------------------------------------------


def _frames(buffer: bytearray) -> tuple[list[tuple[int, bytes]], int]:
    """Complete frames at the front of ``buffer`` and how many bytes they take."""
    frames, offset = [], 0
    while len(buffer) - offset >= _FRAME.size:
        seq, size = _FRAME.unpack_from(buffer, offset)
        end = offset + _FRAME.size + size
        if len(buffer) < end:
            break
        frames.append((seq, bytes(buffer[offset + _FRAME.size : end])))
        offset = end
    return frames, offset


def serve(url: str, sock: socket.socket, synchronous: str = "full", mode: str = "durable") -> None:
    """Commit frames from ``sock`` into the store at ``url`` until the server's end closes.

    A commit that fails is retried: in ``durable`` mode five times (the requests waiting on it
    then get 503; once a commit has given up, the next get one try each until one succeeds or
    ``FAILING_FOR`` seconds pass, see :func:`driftloop.serving.writer.tries`), in ``fast`` mode
    for as long as the server is there, because the server has answered for those rows already
    (frames queue behind it, bounded by the server's queue)."""
    from driftloop.store import Store

    store = Store(url, create=False, synchronous=synchronous)  # the server migrated it already
    insert = store.prediction_writer()

    def reply(kind: bytes, seq: int, text: str = "") -> None:
        data = text.encode()
        with contextlib.suppress(OSError):  # the server is gone: what it did not hear, it never acked
            sock.sendall(_REPLY.pack(kind, seq, len(data)) + data)

    reply(b"R", 0)
    buffer = bytearray()
    gave_up_at = 0.0  # when a commit last gave up (0.0: the newest commit succeeded)
    closed = False
    while not closed:
        try:
            chunk = sock.recv(1 << 20)  # block for the first bytes, then take all that is waiting
        except OSError:  # ECONNRESET: the server died; commit what was read all the same
            chunk = b""
        closed = not chunk
        buffer += chunk
        while not closed:
            try:
                chunk = sock.recv(1 << 20, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            except OSError:
                chunk = b""
            closed = not chunk  # b"": the server closed its end
            buffer += chunk
        frames, used = _frames(buffer)
        del buffer[:used]
        rows: list[dict[str, Any]] = []
        for i, (seq, payload) in enumerate(frames):
            rows.extend(LogBatch(*marshal.loads(payload)).rows())
            if len(rows) >= _MAX_COMMIT_ROWS or i == len(frames) - 1:
                done = _commit(
                    insert,
                    rows,
                    seq,
                    reply,
                    keep_trying=mode == "fast",
                    server_open=lambda: _open(sock),
                    tries=tries(gave_up_at),
                )
                gave_up_at = 0.0 if done else time.monotonic()
                rows = []
    store.close()


def _open(sock: socket.socket) -> bool:
    """Whether the server's end of ``sock`` is still open (a peek that takes nothing)."""
    try:
        return bool(sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except BlockingIOError:
        return True  # open, nothing waiting
    except OSError:
        return False


def _commit(
    insert: Any,
    rows: list[dict[str, Any]],
    seq: int,
    reply: Any,
    *,
    keep_trying: bool = False,
    server_open: Any = lambda: True,
    tries: int = TRIES,
) -> bool:
    """Insert ``rows`` and acknowledge frame ``seq`` (True). A failure is reported at once (``F``:
    the server's ``/ready`` says so) and retried, backing off to 5 s; ``E`` gives up (False):
    after ``tries`` tries, or with ``keep_trying`` only once the server has gone (no one is left
    to tell)."""
    attempt, delay = 0, 0.05
    while True:
        try:
            insert(rows)
            reply(b"A", seq)
            return True
        except Exception as exc:  # database busy, full or gone: retry, then fail the waiting requests
            attempt += 1
            text = f"writing {len(rows)} log rows failed: {exc}"
            reply(b"F", seq, text)
            if attempt <= 5 or attempt % 60 == 0:  # then about every 5 minutes, not every 5 s
                print(f"driftloop log writer: {text} (attempt {attempt})", file=sys.stderr)
            if attempt >= tries and (not keep_trying or not server_open()):
                reply(b"E", seq, text)
                return False
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def main(argv: list[str]) -> None:
    # Stop only when the server's end of the socket closes, after the last commit: a Ctrl-C or a
    # SIGTERM sent to the whole process group (systemd, a terminal) must not cut the final flush.
    # The child cannot outlive the server: the kernel closes the socket when the server exits.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    url, synchronous, fd = argv[0], argv[1], int(argv[2])
    mode = argv[3] if len(argv) > 3 else "durable"
    sock = socket.socket(fileno=fd)
    os.set_inheritable(fd, False)
    serve(url, sock, synchronous, mode)


if __name__ == "__main__":
    main(sys.argv[1:])
