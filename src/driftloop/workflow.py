"""The retraining workflow and its triggers, durable on DBOS.

``retrain`` is a DBOS workflow of checkpointed steps::

    plan -> snapshot -> train (one per candidate window) -> evaluate (all, out of time; the
    best is the challenger) -> gate -> [refit] -> [canary] -> promote | reject -> finish

A process that dies mid-run resumes at the step it was in when DBOS next launches with the
same application version; every step is idempotent (content-addressed snapshots, versions
found by run key, one decision and one promotion row per run), so a replayed step never
registers a second version or moves an alias twice. Runs go through a queue with a
concurrency of one: one retrain per model at a time, later ones wait their turn.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
from dbos import DBOS, DBOSConfig, SetWorkflowID

from driftloop import __version__
from driftloop.agreement import enforce as enforce_agreement
from driftloop.backtest import fit_folds
from driftloop.candidates import FOLD
from driftloop.checkpoints import JsonCheckpoints, refuse_pickles
from driftloop.comparison import compare
from driftloop.exceptions import NotFoundError, WorkflowError
from driftloop.gate import decide
from driftloop.monitor import Monitor, MonitorRun
from driftloop.project import Project
from driftloop.rollout import canary_verdict
from driftloop.snapshots import build, evidence, training_snapshot
from driftloop.tasks import ROW
from driftloop.training import (
    build_reference,
    fit_and_register,
    record_snapshot,
)
from driftloop.watch import post_deploy_watch

__all__ = [
    "launch",
    "monitor_and_trigger",
    "post_deploy_watch",
    "recover_orphans",
    "release_waiting",
    "rollback",
    "shutdown",
    "start_or_wait",
    "start_retrain",
    "wait",
]

log = logging.getLogger("driftloop.workflow")
QUEUE = "driftloop_retrain"
_state: dict[str, Any] = {"project": None, "launched": False}


# -- lifecycle ---------------------------------------------------------------------------------
def launch(project: Project, *, schedules: bool = True) -> None:
    """Start DBOS for this project (recovering interrupted runs) and register its schedule.

    All or nothing: if any part fails (the workflow database cannot be reached, say), what was
    started is stopped again and the error raised, so a later call starts afresh. DBOS counts
    itself launched even when its launch failed, and would refuse a second attempt."""
    if _state["launched"]:
        if _state["project"] is not project:
            raise WorkflowError(
                "DBOS is already launched for another project in this process; call shutdown() first."
            )
        return
    _state["project"] = project
    try:
        _launch(project, schedules)
    except BaseException:
        with contextlib.suppress(Exception):  # half launched: shutdown() stops only a launched DBOS
            DBOS.destroy(destroy_registry=False)
        shutdown()
        raise


def _launch(project: Project, schedules: bool) -> None:
    project.settings.state_dir.mkdir(parents=True, exist_ok=True)
    executor = _take_lease(project)
    config: DBOSConfig = {
        "name": "driftloop",
        "system_database_url": project.settings.workflow_db_url,
        "application_version": f"driftloop-{__version__}",
        "scheduler_polling_interval_sec": 1.0,
        # we poll run status; DBOS's LISTEN connection on PostgreSQL races its own shutdown
        "use_listen_notify": False,
        "log_level": os.environ.get("DRIFTLOOP_DBOS_LOG_LEVEL", "WARNING"),
        "serializer": JsonCheckpoints(),  # checkpoints as JSON: nothing read back is unpickled
    }
    refuse_pickles()
    if executor is not None:
        config["executor_id"] = executor
    DBOS(config=config)
    DBOS.launch()
    DBOS.register_queue(QUEUE, global_concurrency=1, polling_interval_sec=0.2, on_conflict="always_update")
    recover_orphans(project)
    reconcile(project)
    cron = project.settings.retrain.schedule
    schedule_name = f"retrain-{project.name}"
    existing = {s["schedule_name"] for s in DBOS.list_schedules()} if schedules else set()
    if schedules and cron:
        if schedule_name in existing:
            DBOS.delete_schedule(schedule_name)
        DBOS.create_schedule(
            schedule_name=schedule_name, workflow_fn=scheduled_retrain, schedule=cron, context=project.name
        )
    elif schedule_name in existing:
        DBOS.delete_schedule(schedule_name)
    _state["launched"] = True


def reconcile(project: Project) -> list[str]:
    """Enqueue every run the store holds as queued or running that DBOS has never heard of: a
    process killed between recording a run and enqueueing it. Enqueueing is idempotent by run
    id, so this is safe on every launch. Returns the ids enqueued."""
    queue = DBOS.retrieve_queue(QUEUE)
    assert queue is not None
    found = []
    for run in project.store.runs(project.name, limit=1000, active_only=True):
        if DBOS.get_workflow_status(run["id"]) is None:
            log.warning("Retrain run %s was recorded but never enqueued; enqueueing it now.", run["id"])
            with SetWorkflowID(run["id"]):
                queue.enqueue(retrain, run["id"])
            found.append(run["id"])
    return found


def _take_lease(project: Project) -> str | None:
    """On PostgreSQL, where several hosts share the workflow database: a unique executor id
    for this process and the advisory lock that says it is alive (released by the server when
    the process or its host dies). None on SQLite: one host, DBOS's own recovery at launch."""
    if not project.settings.store.url.startswith("postgresql"):
        return None
    from driftloop.locks import AdvisoryLock

    executor = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    lease = AdvisoryLock(project.settings.store.url, executor, kind="executor")
    if not lease.acquire():
        raise WorkflowError(
            f"Could not take the workflow executor lease {executor!r} on the store's PostgreSQL server."
        )
    _state["lease"] = lease
    return executor


def recover_orphans(project: Project) -> list[str]:
    """Resume here the retrain runs another process was running when it died.

    A run that a process dequeued is PENDING under that process's executor id until it ends.
    On PostgreSQL each process holds an advisory lock named by its executor id while it lives;
    a PENDING run whose executor's lock is free lost its process (or host), so it is handed to
    DBOS's recovery, which re-enqueues it: exactly one process dequeues it and it resumes at
    its last checkpointed step. Called at launch and before every monitoring pass. Returns the
    run ids recovered."""
    lease = _state.get("lease")
    if lease is None:
        return []
    from driftloop.locks import AdvisoryLock

    if not lease.held and lease.acquire():  # its connection was lost; others may have resumed its runs
        log.warning("Took the workflow executor lease again after losing its connection.")
    mine = DBOS.executor_id
    pending = DBOS.list_workflows(
        status="PENDING", name=retrain.__qualname__, load_input=False, load_output=False
    )
    dead: dict[str, list[str]] = {}
    for status in pending:
        owner = status.executor_id
        if not owner or owner == mine or owner in dead:
            if owner in dead:
                dead[owner].append(status.workflow_id)
            continue
        probe = AdvisoryLock(project.settings.store.url, owner, kind="executor")
        if probe.acquire():  # nobody holds the owner's lease: its process is gone
            probe.release()
            dead[owner] = [status.workflow_id]
    recovered: list[str] = []
    for owner, ids in dead.items():
        log.warning(
            "Resuming retrain run(s) %s here: their executor %s stopped mid-run.", ", ".join(ids), owner
        )
        recovered += [h.workflow_id for h in DBOS._recover_pending_workflows([owner])]
    return recovered


def shutdown() -> None:
    if _state["launched"]:
        DBOS.destroy(destroy_registry=False)
    lease = _state.pop("lease", None)
    if lease is not None:
        lease.release()
    _state.update(project=None, launched=False)


def _project() -> Project:
    project = _state["project"]
    if project is None:
        raise WorkflowError("The retraining workflow needs launch(project) first.")
    return project  # type: ignore[no-any-return]


def _crashpoint(name: str) -> None:
    """Fault injection for crash tests: exit hard at a named point, once per marker file."""
    points = os.environ.get("DRIFTLOOP_CRASH_AT", "")
    marker = os.environ.get("DRIFTLOOP_CRASH_MARKER")
    if name in points.split(",") and marker and not Path(marker).exists():
        Path(marker).write_text(name)
        os._exit(137)


# -- triggers ------------------------------------------------------------------------------------
def start_retrain(
    project: Project,
    trigger: str = "manual",
    *,
    trainer: str | None = None,
    since_seq: int | None = None,
    candidate: str | None = None,
) -> str:
    """Queue a retraining run; returns its id. Needs :func:`launch` first.

    With ``candidate`` (a registered version) nothing is trained: that version is evaluated and
    gated against the champion like a challenger (``driftloop promote VERSION``)."""
    launch(project)
    run_id = f"retrain-{project.name}-{uuid.uuid4().hex[:10]}"
    options = {"trainer": trainer, "since_seq": since_seq, "candidate": candidate}
    project.store.add_run(run_id, project.name, trigger, options)
    _crashpoint("start:after-row")  # a kill here leaves a queued run that launch() reconciles
    queue = DBOS.retrieve_queue(QUEUE)
    assert queue is not None
    with SetWorkflowID(run_id):
        queue.enqueue(retrain, run_id)
    return run_id


def start_or_wait(project: Project, trigger: str, *, since_seq: int | None = None) -> str:
    """An automatic trigger's run: queued when an out-of-time evaluation has the rows the gate
    needs, else recorded as ``waiting`` with the reason, and queued by a later monitoring pass
    once they arrived (:func:`release_waiting`). Manual runs never wait: a person asked."""
    launch(project)
    have, need = evidence(project)
    if have >= need or project.settings.retrain.evaluation != "out_of_time":
        return start_retrain(project, trigger, since_seq=since_seq)
    run_id = f"retrain-{project.name}-{uuid.uuid4().hex[:10]}"
    reason = (
        f"waiting for labels: {have} labelled rows came after the champion's training data, and the "
        f"gate needs {need} such rows to judge a challenger out of time ("
        + (
            f"gate.min_eval_rows {project.settings.gate.min_eval_rows}"
            if need == project.settings.gate.min_eval_rows
            else f"to see a change of gate.min_effect {project.settings.gate.min_effect:g} with power "
            f"{project.settings.gate.power:g}"
        )
        + ")"
    )
    project.store.add_run(
        run_id,
        project.name,
        trigger,
        {"trainer": None, "since_seq": since_seq, "candidate": None},
        status="waiting",
        error=reason,
    )
    log.info("Retrain run %s (%s) is %s.", run_id, trigger, reason)
    return run_id


def release_waiting(project: Project, now: float | None = None) -> list[str]:
    """Queue the waiting runs whose evidence has arrived; skip those that waited past
    ``retrain.max_wait``. Returns the ids queued."""
    now = time.time() if now is None else now
    queued: list[str] = []
    waiting = project.store.runs(project.name, limit=50, status="waiting")
    have, need = evidence(project) if waiting else (0, 0)
    for run in waiting:
        if have >= need:
            launch(project)
            project.store.update_run(run["id"], status="queued", step=None, error=None)
            queue = DBOS.retrieve_queue(QUEUE)
            assert queue is not None
            with SetWorkflowID(run["id"]):
                queue.enqueue(retrain, run["id"])
            log.info("Retrain run %s has its %d evaluation rows and is queued.", run["id"], have)
            queued.append(run["id"])
        elif now - run["started_at"] > project.settings.retrain.max_wait:
            project.store.update_run(
                run["id"],
                status="skipped",
                step="done",
                finished_at=now,
                error=f"waited longer than retrain.max_wait ({project.settings.retrain.max_wait:g}s): "
                f"{run['error']}",
            )
    return queued


def wait(run_id: str, timeout: float = 600.0) -> dict[str, Any]:
    """Block until a run ends, or is found waiting for evidence; returns its row.

    A run is recorded in the store a moment before DBOS enqueues it (``start_retrain``), so a
    caller that found the row may ask before DBOS knows the id: that gap is waited out too.
    """
    store = _project().store
    if store.run(run_id) is None:
        raise NotFoundError(f"Retrain run {run_id!r} does not exist.")
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (store.run(run_id) or {}).get("status") == "waiting":
            break  # not enqueued until its evaluation rows arrive
        found = DBOS.get_workflow_status(run_id)  # None until the run is enqueued
        if found is not None and found.status in (
            "SUCCESS",
            "ERROR",
            "CANCELLED",
            "MAX_RECOVERY_ATTEMPTS_EXCEEDED",
        ):
            break
        time.sleep(0.1)
    row = store.run(run_id)
    assert row is not None  # runs are never deleted
    return row


def monitor_and_trigger(
    project: Project, monitor: Monitor | None = None, *, flush: bool = False
) -> MonitorRun:
    """One monitoring pass; alert rules marked ``retrain = true`` queue a run (one at a time)."""
    monitor = monitor or Monitor(project)
    try:
        recover_orphans(project)
    except Exception as exc:  # the workflow database is unreachable: monitoring goes on regardless
        log.error("Looking for retrain runs to resume failed: %s", exc)
    result = monitor.run(flush=flush)
    post_deploy_watch(project, monitor)
    enforce_agreement(project)
    release_waiting(project)
    for request in result.retrain_requests:
        active = project.store.runs(project.name, active_only=True) or project.store.runs(
            project.name, status="waiting"
        )
        if active:
            log.info(
                "Alert %s: a retrain is already queued or running (%s)", request["trigger"], active[-1]["id"]
            )
            project.store.set_alert_run(request["alert_id"], active[-1]["id"])
            continue
        reason = automatic_retrain_blocked(project)
        if reason:
            log.info("Alert %s does not retrain: %s", request["trigger"], reason)
            continue
        run_id = start_or_wait(project, request["trigger"], since_seq=request["since_seq"])
        project.store.set_alert_run(request["alert_id"], run_id)
    _labels_trigger(project)
    return result


def _new_labels(project: Project) -> tuple[int, int | None]:
    """(labels since the last finished run's data, the ``since_seq`` of the run that made the
    champion)."""
    runs = project.store.runs(project.name, limit=200)
    finished = [r for r in runs if r["status"] in ("promoted", "rejected", "skipped")]
    cutoff = finished[-1]["options"].get("cutoff_seq", 0) if finished else 0
    champion = project.champion()  # after a rollback, the run that made the current champion
    made = [
        r
        for r in runs
        if r["status"] == "promoted"
        and champion in (r["challenger_version"], (r["options"] or {}).get("deployed_version"))
    ]
    since = made[-1]["options"].get("since_seq") if made else None
    new = project.store.labelled(project.name, start_seq=cutoff + 1, policy=project.settings.feedback)
    return len(new), since


def _labels_due(project: Project, count: int) -> bool:
    """``count`` new labels reach ``retrain.every_new_labels``, or ``retrain.label_growth``
    times the rows of the champion's training snapshot (looked up only when it can decide)."""
    rt = project.settings.retrain
    if rt.every_new_labels is not None and count >= rt.every_new_labels:
        return True
    champion = project.champion()
    if rt.label_growth is None or champion is None:
        return False
    learned = training_snapshot(project, champion)
    return learned is not None and count >= max(1, math.ceil(rt.label_growth * learned["rows"]))


def _labels_trigger(project: Project) -> str | None:
    """``retrain.every_new_labels`` and ``retrain.label_growth``: retrain on the champion's data
    window once enough labels came."""
    rt = project.settings.retrain
    if (rt.every_new_labels is None and rt.label_growth is None) or project.store.runs(
        project.name, active_only=True
    ):
        return None
    count, since = _new_labels(project)
    if not _labels_due(project, count) or automatic_retrain_blocked(project):
        return None
    # the same start as the run that made the current champion: its concept, with more labels
    return start_or_wait(project, f"labels:{count}", since_seq=since)


def automatic_retrain_blocked(project: Project, now: float | None = None) -> str | None:
    """Why an alert or the schedule may not start a retrain now (cost control), or None.

    Manual runs are never blocked: a person asked for them.
    """
    rt, now = project.settings.retrain, time.time() if now is None else now
    runs = project.store.runs(project.name, limit=200)
    if any(r["status"] in ("queued", "running") for r in runs):
        return "a retrain is already queued or running"
    if any(r["status"] == "waiting" for r in runs):
        return "a retrain is already waiting for labels"
    automatic = [r for r in runs if not r["trigger"].startswith("manual")]
    if automatic and rt.cooldown and now - automatic[-1]["started_at"] < rt.cooldown:
        return f"the last automatic retrain started less than retrain.cooldown ({rt.cooldown:g}s) ago"
    if rt.max_per_day is not None and sum(now - r["started_at"] < 86400 for r in automatic) >= rt.max_per_day:
        return f"retrain.max_per_day ({rt.max_per_day}) automatic retrains ran in the last 24 hours"
    if rt.min_new_labels > 0:
        count, _ = _new_labels(project)
        if count < rt.min_new_labels:
            return (
                f"{count} new labels since the last retrain, "
                f"fewer than retrain.min_new_labels ({rt.min_new_labels})"
            )
    return None


@DBOS.workflow()
def scheduled_retrain(scheduled_at: Any, context: Any) -> None:
    project = _project()
    reason = automatic_retrain_blocked(project)
    if reason:
        log.info("The scheduled retrain is skipped: %s", reason)
        return
    start_or_wait(project, f"schedule:{project.settings.retrain.schedule}")


# -- the workflow --------------------------------------------------------------------------------
@DBOS.workflow()
def retrain(run_id: str) -> str:
    store = _project().store
    try:
        plan = plan_step(run_id)
        data = snapshot_step(run_id, plan)
        if data.get("skip"):
            _alert(run_id, "retrain-skipped", f"Retrain run {run_id} was skipped: {data['skip']}")
            store.update_run(
                run_id, status="skipped", step="done", error=data["skip"], finished_at=time.time()
            )
            return "skipped"
        if data.get("candidate"):  # driftloop promote VERSION: gate a registered version, train nothing
            versions = [candidate_step(run_id, str(data["candidate"]))]
        else:
            versions = [train_step(run_id, data, i) for i in range(len(data["candidates"]))]
        backtests = [backtest_step(run_id, data, i) for i in range(len(data.get("candidates") or []))]
        scores = evaluate_step(run_id, data, versions, plan["champion"], backtests)
        version = str(scores["winner"])
        accepted = gate_step(run_id, scores, version, plan["champion"], data["eval_id"])
        winner = (data.get("candidates") or [{}])[int(scores["winner_index"])]
        if accepted and winner.get("version"):  # an earlier champion back in service: no refit
            store.merge_run_options(run_id, reused=version)
        elif accepted and _project().settings.retrain.refit and not data.get("candidate"):
            version = refit_step(run_id, data, int(scores["winner_index"]), version)
        if accepted and _project().settings.rollout.canary_steps:
            failure = _canary(run_id, version, plan["champion"])
            if failure is not None:
                outcome = canary_abort_step(run_id, version, failure)
                store.update_run(run_id, status=outcome, step="done", finished_at=time.time())
                return outcome
        outcome = (
            promote_step(run_id, version, plan["champion"]) if accepted else reject_step(run_id, version)
        )
    except Exception as exc:
        store.update_run(run_id, status="failed", error=str(exc)[:2000], finished_at=time.time())
        _alert(run_id, "retrain-failed", f"Retrain run {run_id} failed: {exc}")
        raise
    store.update_run(run_id, status=outcome, step="done", finished_at=time.time())
    return outcome


def _step(run_id: str, step: str) -> Project:
    project = _project()
    project.store.update_run(run_id, status="running", step=step)
    project.store.add_run_step(run_id, step)
    return project


@DBOS.step()
def plan_step(run_id: str) -> dict[str, Any]:
    """Fix what the run will read: the champion and the newest feedback row."""
    project = _step(run_id, "plan")
    champion = project.champion()
    if champion is None:
        raise WorkflowError(f"Model '{project.name}' has no champion; run 'driftloop train' first.")
    row = project.store.run(run_id) or {}
    if row.get("options", {}).get("candidate") == champion:
        raise WorkflowError(f"Version {champion} of '{project.name}' is the champion already.")
    return {
        "champion": champion,
        "cutoff_feedback": project.store.max_feedback_id(),
        "cutoff_annotation": project.store.max_annotation_id(),
        "planned_at": time.time(),
        **row.get("options", {}),
    }


@DBOS.step()
def snapshot_step(run_id: str, plan: dict[str, Any]) -> dict[str, Any]:
    """The evaluation set and one training set per candidate window (:func:`driftloop.snapshots.build`)."""
    project = _step(run_id, "snapshot")
    made = build(project, run_id, plan)
    _crashpoint("snapshot:end")
    return made


@DBOS.step()
def candidate_step(run_id: str, version: str) -> str:
    project = _step(run_id, "train")
    project.registry.tags(project.name, version)  # raises NotFoundError for an unknown version
    return version


def _recipe(data: dict[str, Any], candidate: dict[str, Any]) -> tuple[str | None, dict[str, Any] | None]:
    """The trainer and keyword arguments a candidate fits with: its own recipe's, else the run's
    trainer (``driftloop retrain --trainer``) or the project's, with ``[trainer].params``."""
    recipe = candidate.get("recipe") or {}
    return recipe.get("trainer") or data.get("trainer"), recipe.get("params")


@DBOS.step()
def train_step(run_id: str, data: dict[str, Any], index: int) -> str:
    """Fit and register candidate ``index`` (a replay finds the version by its run key)."""
    project = _step(run_id, "train")
    candidate = data["candidates"][index]
    if candidate.get("version"):  # an earlier champion: judged as it is
        project.registry.tags(project.name, candidate["version"])  # NotFoundError if it is gone
        return str(candidate["version"])
    _crashpoint("train:before-register")
    df = pd.read_parquet(candidate["train_path"])
    key = run_id if index == 0 else f"{run_id}/{candidate['name']}"
    trainer, params = _recipe(data, candidate)
    version, _ = fit_and_register(
        project,
        df,
        df.iloc[:0],
        dataset_id=candidate["train_id"],
        run_key=key,
        trainer=trainer,
        params=params,
    )
    _crashpoint("train:after-register")
    project.registry.set_tag(project.name, version, "driftloop.eval_dataset", data["eval_id"])
    project.registry.set_tag(project.name, version, "driftloop.candidate", candidate["name"])
    return version


@DBOS.step()
def backtest_step(run_id: str, data: dict[str, Any], index: int) -> str | None:
    """Candidate ``index``'s window refitted for each earlier fold of a backtest, predicting that
    fold (:mod:`driftloop.backtest`); the predictions' file, or None with one fold."""
    candidate = data["candidates"][index]
    if not any(f["path"] for f in candidate.get("backtest") or []):
        return None
    project = _step(run_id, "backtest")
    folder = Path(project.settings.store.snapshots) / "backtest"
    out = folder / f"{run_id}-{index}.parquet"
    evaluation = pd.read_parquet(data["eval_path"])
    fit_folds(project, candidate, evaluation, out, *_recipe(data, candidate), shared=folder / run_id)
    return str(out)


@DBOS.step()
def evaluate_step(
    run_id: str,
    data: dict[str, Any],
    versions: list[str],
    champion: str,
    backtests: list[str | None] | None = None,
) -> dict[str, Any]:
    """The champion and every candidate on exactly the same held-out rows
    (:func:`driftloop.comparison.compare`); the best candidate becomes the challenger, its
    held-out predictions the snapshot its reference is built from, and the others are tagged as
    not chosen."""
    project = _step(run_id, "evaluate")
    df = pd.read_parquet(data["eval_path"])
    compared = compare(project, df, versions, champion, data["candidates"], data.get("folds"), backtests)
    out, fixed, names, held_out = compared.scores, compared.earlier, compared.names, compared.held_out
    best, challenger = int(out["winner_index"]), str(out["winner"])
    for i, v in enumerate(versions):
        if i != best and not fixed[i]:  # an earlier champion keeps its own record
            project.registry.set_tag(
                project.name, v, "driftloop.status", f"not chosen: {names[best]} scored better"
            )
    if len(versions) and not fixed[best]:  # what the challenger's reference is built from
        ds = record_snapshot(
            project,
            held_out[best].sort_values(ROW, ignore_index=True),
            {"kind": "heldout", "model": project.name, "run_id": run_id, "eval": data["eval_id"]},
        )
        project.registry.set_tag(project.name, challenger, "driftloop.heldout", ds.id)
        out["heldout_id"] = ds.id
    project.registry.set_alias(project.name, "challenger", challenger)
    project.store.update_run(run_id, challenger_version=challenger)
    _crashpoint("evaluate:end")
    return out


@DBOS.step()
def refit_step(run_id: str, data: dict[str, Any], index: int, evaluated: str) -> str:
    """``retrain.refit``: the accepted window's rows plus the production evaluation rows, fitted
    with the same trainer; the version deployed instead of the one evaluated."""
    project = _step(run_id, "refit")
    candidate = data["candidates"][index]
    train_df = pd.read_parquet(candidate["train_path"])
    evaluation = pd.read_parquet(data["eval_path"])
    if "__key__" in evaluation:  # never the golden set: it stays a fixed yardstick
        evaluation = evaluation[~evaluation["__key__"].astype(str).str.startswith("golden:")]
    if FOLD in evaluation:  # a backtest's earlier folds are among the window's rows already
        evaluation = evaluation[evaluation[FOLD] == evaluation[FOLD].max()].drop(columns=[FOLD])
    rows = pd.concat([train_df, evaluation.assign(__source__="evaluation")], ignore_index=True)
    if "__weight__" in rows:
        rows["__weight__"] = rows["__weight__"].fillna(float(train_df["__weight__"].max()))
    ds = record_snapshot(
        project,
        rows,
        {
            "kind": "train",
            "model": project.name,
            "run_id": run_id,
            "candidate": candidate["name"],
            "refit_of": {"version": evaluated, "train": candidate["train_id"], "eval": data["eval_id"]},
        },
    )
    trainer, params = _recipe(data, candidate)
    version, _ = fit_and_register(
        project,
        rows,
        rows.iloc[:0],
        dataset_id=ds.id,
        run_key=f"{run_id}/refit",
        trainer=trainer,
        params=params,
    )
    heldout = project.registry.tags(project.name, evaluated).get("driftloop.heldout")
    for key, value in (
        ("driftloop.refit_of", evaluated),
        ("driftloop.gate", "accepted"),
        ("driftloop.eval_dataset", data["eval_id"]),
        *((("driftloop.heldout", heldout),) if heldout else ()),
    ):
        project.registry.set_tag(project.name, version, key, value)
    project.store.merge_run_options(run_id, evaluated_version=evaluated, deployed_version=version)
    project.registry.set_alias(project.name, "challenger", version)
    return version


@DBOS.step()
def gate_step(run_id: str, scores: dict[str, Any], challenger: str, champion: str, eval_id: str) -> bool:
    project = _step(run_id, "gate")
    policy = project.settings.gate
    critical = [f for f, spec in project.settings.fields.items() if spec.critical]
    if policy.critical_min_f1 is not None and critical:  # each critical field's F1 floor
        floors = {f"f1.{f}": policy.critical_min_f1 for f in critical}
        policy = policy.model_copy(update={"min_value": {**floors, **policy.min_value}})
    decision = decide(
        policy,
        scores["champion"],
        scores["challenger"],
        scores["n"],
        scores.get("mcnemar_p"),
        slices=scores.get("slices"),
        ci=scores.get("ci"),
        lower_is_better=project.lower_is_better,
        test=project.task.paired_test if scores.get("p_metric") is None else "Wilcoxon",
        compared=int(scores.get("compared", 1)),
        p_improvement=scores.get("p_improvement"),
        slice_metric=project.task.slice_metric,
        p_metric=scores.get("p_metric"),
        intervals=scores.get("intervals"),
        judge=scores.get("judge"),
        newest=scores["folds"][-1] if scores.get("folds") else None,
    )
    if scores.get("judge"):
        project.store.merge_run_options(run_id, judge=scores["judge"])
    if scores.get("folds"):  # the backtest, fold by fold, in the run's own record
        project.store.merge_run_options(run_id, folds=scores["folds"])
    if scores.get("estimate"):  # what the gate expects of the winner, its calibration's yardstick
        project.store.merge_run_options(run_id, gate_estimate=scores["estimate"])
    candidates = scores.get("candidates", [])
    if len(candidates) > 1:  # why this window won, in the run's own record
        primary = project.settings.gate.primary_metric
        chosen = next(c for c in candidates if c["chosen"])
        others = ", ".join(f"'{c['name']}' {c[primary]:.4f}" for c in candidates if not c["chosen"])
        rows = int(scores.get("chosen_on", scores["n"]))
        how = (
            f"on {rows} of the evaluation rows (every other one in time; the other {scores['n']} judged "
            "it against the champion, so choosing did not flatter it)"
            if scores.get("compared", 1) == 1
            else f"on all {scores['n']} evaluation rows ("
            + ("too few to split: " if project.settings.gate.choose_on == "half" else "")
            + f"the gate's one-sided p-value is corrected for choosing among {len(candidates)})"
        )
        estimate = scores.get("estimate") or {}
        own = int(estimate.get("rows", scores["n"])) < scores["n"]  # the champion stood in on a fold
        flattered = "".join(
            [
                f"; on the {estimate['rows']} rows its own recipe predicted (the champion stood in on the "
                f"rest) it scored {estimate['raw']:.4f}"
                if own
                else "",
                f"; choosing the best of {estimate['candidates']} flatters it by about "
                f"{estimate['selection_bias']:.4f} (bootstrap)"
                if estimate.get("selection_bias")
                else "",
            ]
        )
        if flattered:
            flattered += f", so the gate expects {estimate['value']:.4f}"
        project.store.merge_run_options(
            run_id,
            candidates=candidates,  # which version each candidate became, and which won
            chosen=f"candidate '{chosen['name']}' (version {chosen['version']}) scored {primary} "
            f"{chosen[primary]:.4f} {how}, best of {len(candidates)} (others: {others}){flattered}",
        )
    row = project.store.add_decision(
        run_id=run_id,
        model=project.name,
        champion_version=champion,
        challenger_version=challenger,
        accepted=decision.accepted,
        rules=decision.rules_as_dicts(),
        reasons=decision.reasons,
        eval_rows=scores["n"],
        eval_dataset=eval_id,
    )
    project.registry.set_tag(
        project.name, challenger, "driftloop.gate", "accepted" if row["accepted"] else "rejected"
    )
    project.registry.set_tag(
        project.name, challenger, "driftloop.gate_reasons", " | ".join(row["reasons"])[:4900]
    )
    project.registry.log_decision(
        project.name,
        challenger,
        {
            "run_id": run_id,
            "accepted": bool(row["accepted"]),
            "champion_version": champion,
            "challenger_version": challenger,
            "eval_rows": scores["n"],
            "eval_dataset": eval_id,
            "rules": row["rules"],
            "reasons": row["reasons"],
        },
    )
    _crashpoint("gate:end")
    return bool(row["accepted"])


def _canary(run_id: str, challenger: str, champion: str) -> str | None:
    """Step the challenger's share of live traffic up; the reason it failed, or None (workflow code:
    each share change and check is a step, each wait a durable sleep)."""
    rollout = _project().settings.rollout
    for share in rollout.canary_steps:
        started = canary_share_step(run_id, challenger, share)
        while True:
            verdict = canary_check_step(run_id, challenger, champion, share, started)
            if verdict["state"] == "fail":
                return str(verdict["reason"])
            if verdict["state"] == "pass":
                break
            DBOS.sleep(rollout.check_interval)
    return None


@DBOS.step()
def canary_share_step(run_id: str, challenger: str, share: float) -> dict[str, Any]:
    """Serve ``share`` of traffic from the challenger; returns where the step's evidence starts."""
    project = _step(run_id, f"canary {share:.0%}")
    project.store.start_rollout(project.name, run_id, challenger, share)
    project.store.update_rollout(run_id, share=share, status="canary")
    return {"seq": project.store.max_seq(project.name), "ts": time.time()}


@DBOS.step()
def canary_check_step(
    run_id: str, challenger: str, champion: str, share: float, started: dict[str, Any]
) -> dict[str, Any]:
    """Judge a canary step on the traffic since it began: ``wait``, ``pass`` or ``fail``; a pass
    is recorded on the rollout with what it measured."""
    project = _project()
    verdict = canary_verdict(project, challenger, champion, share, started)
    if verdict["state"] == "pass":
        project.store.update_rollout(
            run_id, reason=f"the {share:.0%} step passed: {verdict['reason']}"[:2000]
        )
    return verdict


@DBOS.step()
def canary_abort_step(run_id: str, challenger: str, reason: str) -> str:
    project = _step(run_id, "canary rollback")
    project.store.update_rollout(run_id, share=0.0, status="rolled-back", reason=reason[:2000])
    project.registry.set_tag(project.name, challenger, "driftloop.status", "canary-failed")
    project.registry.delete_alias(project.name, "challenger")
    _alert(
        run_id,
        "canary-rollback",
        f"The canary of version {challenger} was rolled back; the champion stays: {reason}.",
    )
    return "rejected"


@DBOS.step()
def promote_step(run_id: str, challenger: str, champion: str) -> str:
    project = _step(run_id, "promote")
    registry, name = project.registry, project.name
    if registry.alias(name, "champion") != challenger:
        registry.set_alias(name, "previous", champion)
        registry.set_alias(name, "champion", challenger)
    _crashpoint("promote:after-alias")
    if project.store.rollout(name, run_id) is not None:
        project.store.update_rollout(run_id, share=1.0, status="promoted")
    registry.delete_alias(name, "challenger")
    decision = project.store.decision(run_id) or {}
    project.store.add_promotion(
        model=name,
        action="promote",
        from_version=champion,
        to_version=challenger,
        run_id=run_id,
        reason=" ".join(decision.get("reasons", [])),
    )
    build_reference(project, challenger)  # monitoring now compares with the new champion's data
    _alert(
        run_id,
        "promoted",
        f"Version {challenger} replaced {champion} as champion: " + " ".join(decision.get("reasons", [])),
    )
    return "promoted"


@DBOS.step()
def reject_step(run_id: str, challenger: str) -> str:
    project = _step(run_id, "reject")
    project.registry.set_tag(project.name, challenger, "driftloop.status", "rejected")
    project.registry.delete_alias(project.name, "challenger")
    decision = project.store.decision(run_id) or {}
    _alert(
        run_id,
        "retrain-rejected",
        f"Challenger version {challenger} was rejected; the champion stays. "
        + " ".join(decision.get("reasons", [])),
    )
    return "rejected"


def _alert(run_id: str, rule: str, message: str) -> None:
    project = _project()
    if any(
        a["run_id"] == run_id and a["rule"] == rule
        for a in project.store.alerts(project.name, limit=50, rule=rule)
    ):
        return  # a replayed step does not alert twice
    Monitor(project).system_alert(rule, message, metric="retrain", run_id=run_id)


def rollback(project: Project, reason: str = "manual rollback", *, run_id: str | None = None) -> str:
    """Move ``champion`` back to ``previous`` at once; recorded in the promotions history."""
    registry, name = project.registry, project.name
    previous, current = registry.alias(name, "previous"), registry.alias(name, "champion")
    if previous is None or current is None:
        raise NotFoundError(f"Model '{name}' has no previous champion to roll back to.")
    registry.set_alias(name, "champion", previous)
    registry.set_alias(name, "previous", current)
    project.store.add_promotion(
        model=name,
        action="rollback",
        from_version=current,
        to_version=previous,
        run_id=run_id or f"rollback-{uuid.uuid4().hex[:10]}",
        reason=reason,
    )
    build_reference(project, previous)
    return previous


def force_promote(project: Project, version: str, reason: str) -> str | None:
    """Make ``version`` the champion at once, without the gate (``driftloop promote --force``);
    recorded in the champion history with ``reason``. Returns the old champion."""
    registry, name = project.registry, project.name
    registry.verified_digest(name, version)  # only a version whose artifact can be trusted
    current = registry.alias(name, "champion")
    if current == version:
        raise WorkflowError(f"Version {version} of '{name}' is the champion already.")
    build_reference(project, version)  # before the move: monitoring never lacks a reference
    if current is not None:
        registry.set_alias(name, "previous", current)
    registry.set_alias(name, "champion", version)
    project.store.add_promotion(
        model=name,
        action="manual-promote",
        from_version=current,
        to_version=version,
        run_id=f"manual-{uuid.uuid4().hex[:10]}",
        reason=f"promoted by hand, without the gate: {reason}",
    )
    return current
