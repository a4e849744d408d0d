"""One monitor per project: whoever closes windows holds the monitoring lock.

Windows are cut from the log by sequence number, so two processes monitoring the same project
would close the same window twice. ``driftloop serve`` (each worker tries; one wins, the others
try again on every monitoring tick and take over when the holder stops) and ``driftloop
monitor`` take the same lock, chosen by the store (:func:`monitor_lock`):

- SQLite (one host): an ``fcntl`` lock on ``.driftloop/monitor.lock``, released by the kernel
  when its holder exits, however it exits.
- PostgreSQL (any number of hosts): a session advisory lock on a key derived from the project's
  name, held by one dedicated connection. The server releases it when that connection ends,
  so a holder that dies, or whose host does, hands over: TCP keepalives on the connection bound
  how long a vanished host holds it (about 30 s), and the holder checks its connection before
  every pass, stepping down if it was lost.

>>> import tempfile
>>> from pathlib import Path
>>> folder = Path(tempfile.mkdtemp())
>>> a, b = MonitorLock(folder), MonitorLock(folder)
>>> a.acquire(), b.acquire()
(True, False)
>>> a.release(); b.acquire()
True
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import socket
from pathlib import Path
from typing import IO, Any, Protocol

__all__ = ["AdvisoryLock", "Lock", "MonitorLock", "advisory_key", "archive_lock", "monitor_lock"]


class Lock(Protocol):
    """What the monitor needs of a lock: take it without waiting, know it is still held, say who."""

    @property
    def held(self) -> bool: ...

    def acquire(self) -> bool: ...

    def holder(self) -> str: ...

    def release(self) -> None: ...


class MonitorLock:
    """A non-blocking, process-wide lock file in the project's state folder."""

    def __init__(self, state_dir: Path, filename: str = "monitor.lock") -> None:
        self.path = Path(state_dir) / filename
        self._handle: IO[str] | None = None

    @property
    def held(self) -> bool:
        return self._handle is not None

    def acquire(self) -> bool:
        """Take the lock if nobody holds it; True when this object now holds it."""
        if self._handle is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115  (kept open: the lock lives with it)
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")  # who holds it, for a person looking
        handle.flush()
        self._handle = handle
        return True

    def holder(self) -> str:
        """``pid N`` of the holder (as it wrote it), or '' when unknown."""
        try:
            pid = self.path.read_text().strip()
        except OSError:
            return ""
        return f"pid {pid}" if pid else ""

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


def advisory_key(name: str, kind: str = "monitor") -> int:
    """The advisory lock key of a project's monitor (or another ``kind`` of holder, such as a
    workflow executor's lease): 64 bits of a hash, stable across processes and hosts.

    >>> advisory_key("loan") == advisory_key("loan") != advisory_key("blog")
    True
    >>> advisory_key("loan") != advisory_key("loan", kind="executor")
    True
    """
    return int.from_bytes(
        hashlib.sha256(f"driftloop-{kind}:{name}".encode()).digest()[:8], "big", signed=True
    )


class AdvisoryLock:
    """A PostgreSQL session advisory lock held by its own connection (``url`` in SQLAlchemy form;
    psycopg 3 through the ``postgres`` extra). ``kind`` names what it guards: the project's
    ``monitor``, or a workflow ``executor``'s lease (held while that process lives)."""

    def __init__(self, url: str, name: str, kind: str = "monitor") -> None:
        self.url, self.name, self.kind, self.key = url, name, kind, advisory_key(name, kind)
        self._conn: Any = None

    def _connect(self) -> Any:
        import psycopg

        dsn = self.url.replace("postgresql+psycopg://", "postgresql://", 1)
        return psycopg.connect(
            dsn,
            autocommit=True,
            application_name=f"driftloop {self.kind} {socket.gethostname()} pid {os.getpid()}"[:63],
            keepalives=1,
            keepalives_idle=10,
            keepalives_interval=5,
            keepalives_count=3,
            connect_timeout=10,
        )

    @property
    def held(self) -> bool:
        """True while the holding connection is alive (a round trip, so a lost server shows)."""
        if self._conn is None:
            return False
        try:
            self._conn.execute("SELECT 1")
        except Exception:
            self._drop()
            return False
        return True

    def acquire(self) -> bool:
        if self._conn is not None:
            return self.held
        try:
            conn = self._connect()
            got = bool(conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()[0])
        except Exception:
            return False
        if not got:
            conn.close()
            return False
        self._conn = conn
        return True

    def holder(self) -> str:
        """The holding session's application name (host and pid) and address, or ''.

        Advisory locks belong to a database, and ``pg_locks`` lists those of every database on
        the server: only this database's holder is named, not that of a project of the same
        name whose store is another database on the same server."""
        try:
            with self._connect() as conn:
                row = conn.execute(
                    "SELECT a.application_name, a.client_addr FROM pg_locks l "
                    "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' "
                    "AND l.granted AND ((l.classid::bigint << 32) | l.objid::bigint) = %s "
                    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                    (self.key,),
                ).fetchone()
        except Exception:
            return ""
        return "" if row is None else f"{row[0]} ({row[1] or 'local socket'})"

    def _drop(self) -> None:
        with contextlib.suppress(Exception):
            self._conn.close()
        self._conn = None

    def release(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
            self._drop()


def monitor_lock(store_url: str, state_dir: Path, name: str) -> Lock:
    """The monitoring lock a project's store calls for: an advisory lock on PostgreSQL, else the
    lock file in ``state_dir``."""
    if store_url.startswith("postgresql"):
        return AdvisoryLock(store_url, name)
    return MonitorLock(state_dir)


def archive_lock(store_url: str, state_dir: Path, name: str) -> Lock:
    """The lock one archiving pass of a project holds (``driftloop archive`` or a monitoring
    pass), so two never move the same batch: chosen by the store like :func:`monitor_lock`."""
    if store_url.startswith("postgresql"):
        return AdvisoryLock(store_url, name, kind="archive")
    return MonitorLock(state_dir, "archive.lock")
