"""Model slots: the champion is loaded and warmed beside the old one, then swapped atomically.

A request reads ``slot.current`` once and keeps that object, so in-flight requests finish on
the model they started with while new ones get the new champion.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from driftloop.exceptions import RegistryError
from driftloop.project import Project

__all__ = ["LoadedModel", "ModelSlot"]

log = logging.getLogger("driftloop.serving")


@dataclass(frozen=True)
class LoadedModel:
    version: str
    model: Any


class ModelSlot:
    def __init__(self, project: Project, alias: str = "champion") -> None:
        self.project, self.alias = project, alias
        self.current: LoadedModel | None = None
        self.swaps = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.refused: set[str] = set()  # versions whose artifact failed verification (alerted once)

    def refresh(self) -> bool:
        """Load the version the alias points to, if it changed. True when a swap happened."""
        with self._lock:
            version = self.project.registry.alias(self.project.name, self.alias)
            if version is None:
                changed, self.current = self.current is not None, None  # the alias was removed
                return changed
            if self.current is not None and self.current.version == version:
                return False
            try:
                model = self.project.registry.load(self.project.name, version)
            except RegistryError as exc:
                self._refuse(version, exc)
                raise
            self.project.task.predict(model, self._warmup_frame())  # fail here, not on a request
            old = self.current
            self.current = LoadedModel(version, model)
            self.swaps += 1
            log.info(
                "Serving %s version %s (was %s)", self.project.name, version, old.version if old else None
            )
            return True

    def _refuse(self, version: str, exc: RegistryError) -> None:
        """A version whose artifact cannot be trusted: a clear log line and one alert; the slot
        keeps the model it has."""
        keeping = self.current.version if self.current else None
        log.error(
            "Refusing %s version %s of '%s'; still serving %s: %s",
            self.alias,
            version,
            self.project.name,
            keeping,
            exc,
        )
        if version in self.refused:
            return
        self.refused.add(version)
        from driftloop.alerts import make_sinks, system_alert

        try:
            system_alert(
                self.project.store,
                make_sinks(self.project.settings),
                self.project.name,
                "model-refused",
                f"The {self.alias} alias of '{self.project.name}' points at version {version}, whose "
                f"artifact failed verification; still serving {keeping}. {exc}",
                metric="registry",
            )
        except Exception as alert_error:  # the refusal stands even if the alert cannot be sent
            log.error("Raising the model-refused alert failed: %s", alert_error)

    def _warmup_frame(self) -> pd.DataFrame:
        row: dict[str, Any] = {}
        for name, f in self.project.settings.features.items():
            if f.type == "numeric":
                row[name] = f.min if f.min is not None else 0.0
            elif f.type == "categorical":
                row[name] = f.allowed[0] if f.allowed else ""
            elif f.type == "image":
                from driftloop.images import encode

                row[name] = encode(np.full((8, 8, 3), 128, dtype=np.uint8))
            else:
                row[name] = ""
        return self.project.schema.frame([row])

    def start(self, interval: float, *, also: Callable[[], None] | None = None) -> None:
        """Poll the alias every ``interval`` seconds (and call ``also``, on the same thread)."""

        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    self.refresh()
                except Exception as exc:  # keep serving the current model
                    log.error(
                        "Loading the new %s failed; still serving %s: %s",
                        self.alias,
                        self.current.version if self.current else None,
                        exc,
                    )
                if also is not None:  # after the champion: a finished canary ends once its model serves
                    try:
                        also()
                    except Exception as exc:
                        log.error("Refreshing the routing state failed: %s", exc)

        self._thread = threading.Thread(target=loop, name="driftloop-model-poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
