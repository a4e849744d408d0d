"""The threads a server runs beside its requests: the scheduled monitoring pass (in the one
worker that holds the project's monitoring lock, taken over when its holder stops) and the
watchdog that alerts when monitoring has not succeeded for ``monitor.stale_after``."""

from __future__ import annotations

import logging
import threading

from driftloop.locks import Lock
from driftloop.project import Project

__all__ = ["monitor_loop", "monitor_when_holding", "watchdog_loop"]

log = logging.getLogger("driftloop.serving")


def monitor_when_holding(project: Project, lock: Lock, stop: threading.Event) -> None:
    """Monitor while holding the project's monitoring lock; without it, try again every tick and
    take over when the holder stops (or its host does); step down if the lock is lost."""
    waited, watching = False, False
    try:
        while not stop.is_set():
            if lock.acquire():
                if waited:
                    log.warning("Took over monitoring of '%s': the previous holder stopped.", project.name)
                if not watching and project.settings.monitor.stale_after is not None:
                    watching = True
                    threading.Thread(
                        target=watchdog_loop, args=(project, stop), daemon=True, name="driftloop-watchdog"
                    ).start()
                try:
                    monitor_loop(project, stop, lock)
                except Exception as exc:  # it could not start (the workflow database is down, say)
                    log.error(
                        "Monitoring of '%s' could not start: %s; stepping down, trying again.",
                        project.name,
                        exc,
                    )
                    lock.release()  # another worker may start where this one cannot
                    stop.wait(project.settings.monitor.schedule)
                    continue
                if stop.is_set():
                    break
                log.error("Lost the monitoring lock of '%s'; stepping down, trying again.", project.name)
            elif not waited:
                log.info(
                    "Another process is monitoring '%s' (%s); this one serves and takes over if it stops.",
                    project.name,
                    lock.holder() or "the lock's holder",
                )
            waited = True
            stop.wait(project.settings.monitor.schedule)
    finally:
        lock.release()


def monitor_loop(project: Project, stop: threading.Event, lock: Lock | None = None) -> None:
    """Monitoring passes on the schedule until ``stop``, or until ``lock`` is no longer held."""
    from driftloop import workflow
    from driftloop.agreement import enforce as enforce_agreement
    from driftloop.monitor import Monitor

    monitor = Monitor(project)
    needs_workflow = (
        any(rule.retrain for rule in project.settings.alerts) or project.settings.retrain.schedule
    )
    if needs_workflow:
        workflow.launch(project)
    while not stop.wait(project.settings.monitor.schedule):
        if lock is not None and not lock.held:
            return
        try:
            if needs_workflow:
                workflow.monitor_and_trigger(project, monitor)
            else:
                monitor.run()
                workflow.post_deploy_watch(project, monitor)
                enforce_agreement(project)
        except Exception as exc:
            log.error("Scheduled monitoring failed: %s", exc)


def watchdog_loop(project: Project, stop: threading.Event) -> None:
    """Alert when monitoring has not succeeded for ``monitor.stale_after`` (its own thread, so a
    hung or crashed monitoring loop is noticed too)."""
    from driftloop.monitor import Monitor

    limit = project.settings.monitor.stale_after
    assert limit is not None
    monitor = Monitor(project)
    while not stop.wait(min(max(limit / 4, 0.05), 60.0)):
        try:
            monitor.check_stale()
        except Exception as exc:
            log.error("The monitoring watchdog failed: %s", exc)
