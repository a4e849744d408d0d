"""The retraining workflow and its triggers, durable on DBOS.

``retrain`` is a DBOS workflow of checkpointed steps::

    plan -> snapshot -> train -> evaluate -> gate -> promote | reject -> finish

A process that dies mid-run resumes at the step it was in when DBOS next launches with the
same application version; every step is idempotent (content-addressed snapshots, versions
found by run key, one decision and one promotion row per run), so a replayed step never
registers a second version or moves an alias twice. Runs go through a queue with a
concurrency of one: one retrain per model at a time, later ones wait their turn.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
from dbos import DBOS, DBOSConfig, SetWorkflowID

from driftloop import __version__
from driftloop.datasets import file_sha256, stable_fraction, write_snapshot
from driftloop.exceptions import NotFoundError, WorkflowError
from driftloop.gate import decide
from driftloop.monitor import Monitor, MonitorRun
from driftloop.project import Project
from driftloop.sampling import training_set
from driftloop.training import (
    build_reference,
    class_column,
    fit_and_register,
    golden_frame,
    labelled_frame,
    split_validation,
)

__all__ = [
    "launch",
    "monitor_and_trigger",
    "post_deploy_watch",
    "rollback",
    "shutdown",
    "start_retrain",
    "wait",
]

log = logging.getLogger("driftloop.workflow")
QUEUE = "driftloop_retrain"
_state: dict[str, Any] = {"project": None, "launched": False}


# -- lifecycle ---------------------------------------------------------------------------------
def launch(project: Project, *, schedules: bool = True) -> None:
    """Start DBOS for this project (recovering interrupted runs) and register its schedule."""
    if _state["launched"]:
        if _state["project"] is not project:
            raise WorkflowError(
                "DBOS is already launched for another project in this process; call shutdown() first."
            )
        return
    _state["project"] = project
    project.settings.state_dir.mkdir(parents=True, exist_ok=True)
    config: DBOSConfig = {
        "name": "driftloop",
        "system_database_url": project.settings.workflow_db_url,
        "application_version": f"driftloop-{__version__}",
        "scheduler_polling_interval_sec": 1.0,
        # we poll run status; DBOS's LISTEN connection on PostgreSQL races its own shutdown
        "use_listen_notify": False,
        "log_level": os.environ.get("DRIFTLOOP_DBOS_LOG_LEVEL", "WARNING"),
    }
    DBOS(config=config)
    DBOS.launch()
    DBOS.register_queue(QUEUE, global_concurrency=1, polling_interval_sec=0.2, on_conflict="always_update")
    _state["launched"] = True
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


def shutdown() -> None:
    if _state["launched"]:
        DBOS.destroy(destroy_registry=False)
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


def wait(run_id: str, timeout: float = 600.0) -> dict[str, Any]:
    """Block until a run ends; returns its row.

    A run is recorded in the store a moment before DBOS enqueues it (``start_retrain``), so a
    caller that found the row may ask before DBOS knows the id: that gap is waited out too.
    """
    store = _project().store
    if store.run(run_id) is None:
        raise NotFoundError(f"Retrain run {run_id!r} does not exist.")
    deadline = time.time() + timeout
    while time.time() < deadline:
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
    result = monitor.run(flush=flush)
    post_deploy_watch(project, monitor)
    for request in result.retrain_requests:
        active = project.store.runs(project.name, active_only=True)
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
        run_id = start_retrain(project, request["trigger"], since_seq=request["since_seq"])
        project.store.set_alert_run(request["alert_id"], run_id)
    _labels_trigger(project)
    return result


def _new_labels(project: Project) -> tuple[int, int | None]:
    """(labels since the last finished run's data, that run's ``since_seq``)."""
    runs = project.store.runs(project.name, limit=200)
    finished = [r for r in runs if r["status"] in ("promoted", "rejected", "skipped")]
    cutoff = finished[-1]["options"].get("cutoff_seq", 0) if finished else 0
    champion = project.champion()  # after a rollback, the run that made the current champion
    made = [r for r in runs if r["status"] == "promoted" and r["challenger_version"] == champion]
    since = made[-1]["options"].get("since_seq") if made else None
    new = project.store.labelled(project.name, start_seq=cutoff + 1, policy=project.settings.feedback)
    return len(new), since


def _labels_trigger(project: Project) -> str | None:
    """``retrain.every_new_labels``: retrain on the champion's data window once enough labels came."""
    every = project.settings.retrain.every_new_labels
    if every is None or project.store.runs(project.name, active_only=True):
        return None
    count, since = _new_labels(project)
    if count < every or automatic_retrain_blocked(project):
        return None
    # the same start as the run that made the current champion: its concept, with more labels
    return start_retrain(project, f"labels:{count}", since_seq=since)


def automatic_retrain_blocked(project: Project, now: float | None = None) -> str | None:
    """Why an alert or the schedule may not start a retrain now (cost control), or None.

    Manual runs are never blocked: a person asked for them.
    """
    rt, now = project.settings.retrain, time.time() if now is None else now
    runs = project.store.runs(project.name, limit=200)
    if any(r["status"] in ("queued", "running") for r in runs):
        return "a retrain is already queued or running"
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
    start_retrain(project, f"schedule:{project.settings.retrain.schedule}")


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
        version = train_step(run_id, data)
        scores = evaluate_step(run_id, data, version, plan["champion"])
        accepted = gate_step(run_id, scores, version, plan["champion"], data["eval_id"])
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
        "planned_at": time.time(),
        **row.get("options", {}),
    }


@DBOS.step()
def snapshot_step(run_id: str, plan: dict[str, Any]) -> dict[str, Any]:
    """Targeted training set and held-out evaluation set, both content-addressed."""
    project = _step(run_id, "snapshot")
    settings, store = project.settings, project.store
    rt = settings.retrain
    target = settings.project.target
    rows, hygiene = store.resolved_labels(
        project.name,
        start_seq=plan.get("since_seq") or 0,
        max_feedback_id=plan["cutoff_feedback"],
        policy=settings.feedback,
    )
    rows = rows[-rt.lookback :]
    base = store.dataset(project.registry.tags(project.name, plan["champion"]).get("driftloop.dataset", ""))
    if base is None:
        raise WorkflowError("The champion's training snapshot is missing from the store; retrain needs it.")
    original = pd.read_parquet(base["path"])
    original = (
        original[original["__key__"].astype(str).str.startswith("train:")]
        if "__key__" in original
        else original
    )
    prod = pd.DataFrame(
        [{**r["inputs"], target: r["label"], "__key__": f"pred:{r['prediction_id']}"} for r in rows]
    )
    if len(prod):
        prod = labelled_frame(project, prod, "labelled production rows").assign(
            __key__=prod["__key__"].to_numpy(),
            __prediction__=[r["prediction"] for r in rows],
            __ts__=[r["ts"] for r in rows],
        )
        holdout = prod["__key__"].map(lambda k: stable_fraction(k) < rt.holdout_fraction).to_numpy(bool)
        prod_train, evaluation = prod[~holdout], prod[holdout].drop(columns=["__prediction__", "__ts__"])
    else:
        prod_train, evaluation = prod, pd.DataFrame()
    if len(evaluation) == 0:  # no production labels yet: hold out the original validation rows
        original, evaluation = split_validation(original, class_column(project))
    golden = golden_frame(project)
    if len(golden):
        evaluation = pd.concat([evaluation, golden], ignore_index=True)
    # the run's clock is fixed by the plan, so a replayed step builds the same (content-addressed) set
    training, sampling = training_set(
        prod_train, original, rt, target, now=plan["planned_at"], task=project.task
    )
    replay_n = sampling["replay"]["rows"]
    cutoff_seq = rows[-1]["seq"] if rows else 0
    composition = {
        "rows": len(training),
        "by_source": sampling["rows_by_source"],
        "by_class": sampling["rows_by_class"],
        "eval_rows": len(evaluation),
    }
    store.update_run(run_id, options={**plan, "cutoff_seq": cutoff_seq, "training": composition})
    if plan.get("candidate") is None and len(training) < rt.min_train_rows:
        return {
            "skip": f"the training set would have {len(training)} rows ({sampling['rows_by_source']}), "
            f"fewer than retrain.min_train_rows ({rt.min_train_rows}); no challenger was trained."
        }
    folder = settings.state_dir / "datasets"
    common = {
        "model": project.name,
        "run_id": run_id,
        "champion": plan["champion"],
        "feedback_window": {
            "since_seq": plan.get("since_seq") or 0,
            "max_feedback_id": plan["cutoff_feedback"],
        },
    }
    train_ds = write_snapshot(
        folder,
        training,
        {
            **common,
            "kind": "train",
            "sources": [
                {"type": "dataset", "id": base["id"], "rows": replay_n},
                {"type": "feedback", "rows": sampling["rows_by_source"].get("feedback", 0)},
            ],
            "feedback_hygiene": {
                **hygiene,
                "conflict_rule": settings.feedback.conflict_rule,
                "quarantined_sources": settings.feedback.quarantined_sources,
            },
            "sampling": sampling,
            "class_counts": training[target].value_counts().sort_index().to_dict() if len(training) else {},
        },
    )
    eval_ds = write_snapshot(
        folder,
        evaluation,
        {
            **common,
            "kind": "eval",
            "split": f"stable hash of prediction id < {rt.holdout_fraction}",
            "golden": {
                "path": settings.data.golden,
                "sha256": file_sha256(settings.path(settings.data.golden)),
                "rows": len(golden),
            }
            if settings.data.golden
            else None,
            "class_counts": evaluation[target].value_counts().sort_index().to_dict()
            if len(evaluation)
            else {},
        },
    )
    for ds, kind in ((train_ds, "train"), (eval_ds, "eval")):
        store.add_dataset(
            id=ds.id, model=project.name, kind=kind, path=str(ds.path), rows=ds.rows, manifest=ds.manifest
        )
    _crashpoint("snapshot:end")
    return {
        "train_id": train_ds.id,
        "train_path": str(train_ds.path),
        "eval_id": eval_ds.id,
        "eval_path": str(eval_ds.path),
        "trainer": plan.get("trainer"),
        "candidate": plan.get("candidate"),
    }


@DBOS.step()
def train_step(run_id: str, data: dict[str, Any]) -> str:
    project = _step(run_id, "train")
    _crashpoint("train:before-register")
    if data.get("candidate"):  # driftloop promote VERSION: gate a registered version, train nothing
        version = str(data["candidate"])
        project.registry.tags(project.name, version)  # raises NotFoundError for an unknown version
    else:
        df = pd.read_parquet(data["train_path"])
        version, _ = fit_and_register(
            project, df, df.iloc[:0], dataset_id=data["train_id"], run_key=run_id, trainer=data.get("trainer")
        )
    _crashpoint("train:after-register")
    if not data.get("candidate"):
        project.registry.set_tag(project.name, version, "driftloop.eval_dataset", data["eval_id"])
    project.registry.set_alias(project.name, "challenger", version)
    project.store.update_run(run_id, challenger_version=version)
    return version


@DBOS.step()
def evaluate_step(run_id: str, data: dict[str, Any], challenger: str, champion: str) -> dict[str, Any]:
    """Both models on exactly the same held-out rows."""
    project = _step(run_id, "evaluate")
    df = pd.read_parquet(data["eval_path"])
    target = project.settings.project.target
    task = project.task
    X, y = project.schema.frame(df), task.targets(df[target], "evaluation set").to_numpy()
    out: dict[str, Any] = {"n": len(df)}
    correct, predicted, probabilities = {}, {}, {}
    for role, version in (("champion", champion), ("challenger", challenger)):
        made = task.predict(project.registry.load(project.name, version), X)
        labels = made.labels
        out[role] = task.metrics(y, labels, made.probabilities)
        correct[role] = task.row_scores(y, labels)  # per row: 1/0 right, or the absolute error
        predicted[role], probabilities[role] = labels, made.probabilities
    primary = project.settings.gate.primary_metric
    p_value, ci = task.paired(
        y,
        predicted["champion"],
        predicted["challenger"],
        primary,
        probabilities["champion"],
        probabilities["challenger"],
    )
    out["mcnemar_p"] = p_value  # the task's paired test (McNemar for classes)
    out["ci"] = ci
    slices: dict[str, dict[str, float]] = {}
    for name in project.settings.gate.slices:  # "class" (the true label) or a categorical feature
        keys = y if name == "class" else X[name].astype(str).to_numpy()
        for value in sorted(set(keys)):
            mask = keys == value
            slices[f"{name}={value}"] = {
                "n": int(mask.sum()),
                "champion": float(correct["champion"][mask].mean()),
                "challenger": float(correct["challenger"][mask].mean()),
            }
    if "__key__" in df:  # production holdout and golden rows, each judged as a slice too
        source = (
            df["__key__"].astype(str).str.partition(":")[0].map({"golden": "golden"}).fillna("production")
        )
        if (source == "golden").any():
            for value in ("production", "golden"):
                mask = (source == value).to_numpy()
                if mask.any():
                    slices[f"set={value}"] = {
                        "n": int(mask.sum()),
                        "champion": float(correct["champion"][mask].mean()),
                        "challenger": float(correct["challenger"][mask].mean()),
                    }
    out["slices"] = slices
    _crashpoint("evaluate:end")
    return out


@DBOS.step()
def gate_step(run_id: str, scores: dict[str, Any], challenger: str, champion: str, eval_id: str) -> bool:
    project = _step(run_id, "gate")
    decision = decide(
        project.settings.gate,
        scores["champion"],
        scores["challenger"],
        scores["n"],
        scores.get("mcnemar_p"),
        slices=scores.get("slices"),
        ci=scores.get("ci"),
        lower_is_better=project.task.lower_is_better,
        test=project.task.paired_test,
        slice_metric=project.task.slice_metric,
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
    """Judge a canary step on the labelled traffic since it began: ``wait``, ``pass`` or ``fail``."""
    project = _project()
    rollout, name = project.settings.rollout, project.name
    rule_names = {r.name for r in project.settings.alerts}
    alarms = [
        a
        for a in project.store.alerts(name, limit=50)
        if a["rule"] in rule_names and a["ts"] >= started["ts"]
    ]
    if alarms:
        return {
            "state": "fail",
            "reason": f"alert '{alarms[-1]['rule']}' during the {share:.0%} canary: {alarms[-1]['message']}",
        }
    rows = project.store.labelled(name, start_seq=started["seq"] + 1, policy=project.settings.feedback)
    pairs: dict[str, tuple[list[str], list[str], list[Any]]] = {
        challenger: ([], [], []),
        champion: ([], [], []),
    }
    for r in rows:
        if r["model_version"] in pairs:
            pairs[r["model_version"]][0].append(r["label"])
            pairs[r["model_version"]][1].append(r["prediction"])
            pairs[r["model_version"]][2].append(r.get("probabilities"))
    n_new, n_old = len(pairs[challenger][0]), len(pairs[champion][0])
    timed_out = time.time() - started["ts"] > rollout.step_timeout
    if n_new < rollout.step_labels and not (timed_out and n_new):
        if timed_out:
            return {"state": "fail", "reason": f"no labelled canary traffic within {rollout.step_timeout:g}s"}
        return {"state": "wait"}
    task, metric = project.task, project.settings.gate.primary_metric
    acc_new = task.metrics(*pairs[challenger])[metric]
    if n_old == 0:
        return {"state": "pass", "reason": f"canary {metric} {acc_new:.3f} on {n_new} rows"}
    acc_old = task.metrics(*pairs[champion])[metric]
    worse = acc_new - acc_old if metric in task.lower_is_better else acc_old - acc_new
    if worse > rollout.tolerance:
        return {
            "state": "fail",
            "reason": f"in the {share:.0%} canary, {challenger} scored {metric} {acc_new:.3f} on {n_new} "
            f"labelled requests against {champion}'s {acc_old:.3f} on {n_old}, more than "
            f"{rollout.tolerance:g} worse",
        }
    return {"state": "pass", "reason": f"{acc_new:.3f} against {acc_old:.3f}"}


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


# -- after the decision: the post-deploy watch ------------------------------------------------
def _live(windows: list[dict[str, Any]], metric: str, min_labels: int, labelled: bool) -> float | None:
    """Performance over windows: label-weighted feedback metric, or the mean label-free estimate."""
    if labelled:
        pairs = [
            (w["metrics"][metric]["value"], w["metrics"][metric]["n"])
            for w in windows
            if metric in w["metrics"] and w["metrics"][metric]["value"] is not None
        ]
        total = sum(n for _, n in pairs)
        return sum(v * n for v, n in pairs) / total if total >= min_labels else None
    values = [
        w["metrics"][f"estimated_{metric}"]["value"]
        for w in windows
        if (w["metrics"].get(f"estimated_{metric}") or {}).get("value") is not None
    ]
    return sum(values) / len(values) if values else None


def post_deploy_watch(project: Project, monitor: Monitor | None = None) -> dict[str, Any] | None:
    """Judge the newest promotion once its first ``watch.windows`` windows are in.

    Returns ``None`` while watching (or with nothing to watch), else the verdict: kept, or
    rolled back with an alert. Each promotion is judged once (a ``watch`` row in the history).
    """
    ws, store, name = project.settings.watch, project.store, project.name
    if ws.windows == 0:
        return None
    history = store.promotions(name)
    promoted = [r for r in history if r["action"] == "promote"]
    if not promoted:
        return None
    last = promoted[-1]
    if any(r["id"] > last["id"] for r in history) or project.champion() != last["to_version"]:
        return None  # judged already, rolled back by hand, or superseded
    new, old = last["to_version"], last["from_version"]
    windows = store.windows(name, limit=500)
    after = [w for w in windows if w["model_versions"] == [new] and w["start_ts"] >= last["ts"]]
    if len(after) < ws.windows:
        return None
    after = after[: ws.windows]
    live_new = _live(after, ws.metric, ws.min_labels, labelled=True)
    source = "feedback"
    if live_new is None:
        live_new, source = _live(after, ws.metric, ws.min_labels, labelled=False), "label-free estimate"
    # the old champion's score: on the gate's held-out rows (the freshest data it was judged on),
    # else over its last windows before the swap
    decision = store.decision(last["run_id"]) if last["run_id"] else None
    gate_scores = [
        r["champion"]
        for r in (decision or {}).get("rules", [])
        if r["metric"] == ws.metric and r["champion"] is not None
    ]
    live_old: float | None
    if gate_scores:
        live_old, basis = float(gate_scores[0]), "on the gate's held-out rows"
    else:
        before = [w for w in windows if w["model_versions"] == [old] and w["end_ts"] <= last["ts"]][
            -ws.windows :
        ]
        live_old = _live(before, ws.metric, ws.min_labels, labelled=source == "feedback")
        basis = f"over its last {len(before)} windows"
    if live_new is None or live_old is None:
        verdict = {"action": "watch-kept", "reason": f"no {ws.metric} to compare for {old} and {new}"}
    elif (
        live_new - live_old if ws.metric in project.task.lower_is_better else live_old - live_new
    ) > ws.tolerance:
        verdict = {
            "action": "watch-rollback",
            "reason": f"post-deploy watch: {ws.metric} ({source}) of {new} over its first {len(after)} "
            f"windows is {live_new:.3f}, more than {ws.tolerance:g} below {old}'s {live_old:.3f} {basis}",
        }
    else:
        verdict = {
            "action": "watch-kept",
            "reason": f"post-deploy watch: {ws.metric} ({source}) of {new} is {live_new:.3f} against "
            f"{old}'s {live_old:.3f} {basis} (tolerance {ws.tolerance:g})",
        }
    key = f"watch-{last['run_id'] or last['id']}"[:64]
    if verdict["action"] == "watch-rollback":
        rollback(project, verdict["reason"], run_id=key)
        (monitor or Monitor(project)).system_alert(
            "post-deploy-rollback", f"Rolled {new} back to {old}: {verdict['reason']}."
        )
    else:
        store.add_promotion(
            model=name,
            action="watch-kept",
            from_version=old,
            to_version=new,
            run_id=key,
            reason=verdict["reason"],
        )
    log.info("%s", verdict["reason"])
    return {**verdict, "new": new, "old": old, "source": source, "new_value": live_new, "old_value": live_old}
