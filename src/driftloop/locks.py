"""One monitor per project: whoever closes windows holds the monitoring lock.

Windows are cut from the log by sequence number, so two processes monitoring the same project
would close the same window twice. ``driftloop serve`` (each worker tries; one wins) and
``driftloop monitor`` take the same lock: an ``fcntl`` lock on ``.driftloop/monitor.lock``,
released by the kernel when its holder exits, however it exits. It is per host.

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

import fcntl
import os
from pathlib import Path
from typing import IO

__all__ = ["MonitorLock"]


class MonitorLock:
    """A non-blocking, process-wide lock file in the project's state folder."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / "monitor.lock"
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
        """The pid written by the holder, or '' when unknown."""
        try:
            return self.path.read_text().strip()
        except OSError:
            return ""

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None
