"""The durable retraining workflow on DBOS: promote, reject, one at a time, crash and resume."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from driftloop import NotFoundError, workflow
from driftloop.demo.data import applicants
from driftloop.demo.scenario import serve_in_thread
from driftloop.project import Project
from driftloop.serving import create_app
from driftloop.training import train

from .conftest import cli_env, make_project, trained_with
from .helpers import send


def test_alert_triggers_retrain_that_is_promoted(fresh: Project) -> None:
    send(fresh, 1500, "B", seed=21, label_share=0.5)
    workflow.launch(fresh)
    result = workflow.monitor_and_trigger(fresh)
    assert "accuracy-drop" in [a["rule"] for a in result.alerts]
    runs = fresh.store.runs(fresh.name)
    assert len(runs) == 1 and runs[0]["trigger"] == "alert:accuracy-drop"
    row = workflow.wait(runs[0]["id"])
    assert row["status"] == "promoted", row
    assert fresh.registry.alias(fresh.name, "champion") == "2"
    assert fresh.registry.alias(fresh.name, "previous") == "1"
    assert fresh.registry.alias(fresh.name, "challenger") is None
    decision = fresh.store.decision(row["id"])
    assert decision and decision["accepted"] and decision["challenger_version"] == "2"
    assert decision["eval_rows"] >= 100 and any("accuracy changed by +" in r for r in decision["reasons"])
    rules = {r["rule"]: r for r in decision["rules"]}
    assert rules["min_improvement"]["challenger"] > rules["min_improvement"]["champion"]
    assert [p["action"] for p in fresh.store.promotions(fresh.name)] == ["initial", "promote"]
    reference = fresh.store.reference(fresh.name, "2")
    assert reference is not None, "monitoring reference resets on promotion"
    manifest = fresh.store.dataset(decision["eval_dataset"])["manifest"]
    assert manifest["kind"] == "eval" and manifest["rows"] == decision["eval_rows"]
    # the new reference is of the evaluation period, not the training rows: its features are every
    # request served over it; its outputs the new model's on those it did not learn from (the
    # newest fold's and the unlabelled ones); its calibration (CBPE) is on held-out rows
    period, newest = manifest["period"], manifest["out_of_time"]["folds"][-1]["rows"]
    assert reference["profile"]["features"]["n"] == period["rows"]
    assert newest < reference["profile"]["outputs"]["n"] < period["rows"]
    assert min(reference["profile"]["estimator"]["y"]) < 1.0
    alerts = [a["rule"] for a in fresh.store.alerts(fresh.name)]
    assert "promoted" in alerts and alerts.count("accuracy-drop") == 1
    # the decision is logged to MLflow on the challenger's run, and served by the API
    client = fresh.registry.client
    run = client.get_run(client.get_model_version(fresh.name, "2").run_id)
    assert run.data.tags["driftloop.gate"] == "accepted"
    assert run.data.metrics["gate.min_improvement.accuracy.challenger"] == pytest.approx(
        rules["min_improvement"]["challenger"]
    )
    with tempfile.TemporaryDirectory() as tmp:
        logged = json.loads(
            Path(client.download_artifacts(run.info.run_id, "gate/decision.json", tmp)).read_text()
        )
    assert logged["reasons"] == decision["reasons"] and logged["accepted"] is True
    with serve_in_thread(create_app(fresh, background=False)) as url:
        listed = httpx.get(f"{url}/runs").json()["runs"]
    assert listed[-1]["id"] == row["id"] and listed[-1]["decision"]["reasons"] == decision["reasons"]
    assert [s["step"] for s in listed[-1]["steps"]] == [
        "plan",
        "snapshot",
        "train",
        "backtest",  # the earlier folds of the out-of-time evaluation
        "evaluate",
        "gate",
        "promote",
    ]


def test_worse_candidate_is_rejected_and_champion_stays(fresh: Project) -> None:
    send(fresh, 1000, "A", seed=22, label_share=0.6)
    run_id = workflow.start_retrain(fresh, "manual", trainer="trainer:careless")
    row = workflow.wait(run_id)
    assert row["status"] == "rejected"
    assert fresh.registry.alias(fresh.name, "champion") == "1"
    decision = fresh.store.decision(run_id)
    assert decision is not None and not decision["accepted"]
    assert any("below the required" in r for r in decision["reasons"])
    tags = fresh.registry.tags(fresh.name, row["challenger_version"])
    assert tags["driftloop.status"] == "rejected" and tags["driftloop.gate"] == "rejected"
    rejected = [a for a in fresh.store.alerts(fresh.name) if a["rule"] == "retrain-rejected"]
    assert len(rejected) == 1 and "champion stays" in rejected[0]["message"]


def test_gate_refuses_to_decide_on_too_few_rows(fresh: Project) -> None:
    send(fresh, 40, "B", seed=23, label_share=1.0)
    row = workflow.wait(workflow.start_retrain(fresh, "manual"))
    decision = fresh.store.decision(row["id"])
    assert row["status"] == "rejected" and decision is not None
    assert (
        decision["reasons"][0].startswith("The evaluation set has")
        and "needs at least 100" in decision["reasons"][0]
    )


def test_runs_queue_one_at_a_time_and_none_is_dropped(fresh: Project) -> None:
    first = workflow.start_retrain(fresh, "manual")
    second = workflow.start_retrain(fresh, "manual")
    a, b = workflow.wait(first), workflow.wait(second)
    assert {a["status"], b["status"]} <= {"promoted", "rejected"}
    assert a["finished_at"] <= b["finished_at"]
    assert sorted([a["challenger_version"], b["challenger_version"]]) == ["2", "3"]


@pytest.mark.parametrize(
    "point",
    [
        "snapshot:end",
        "train:before-register",
        "train:after-register",
        "evaluate:end",
        "gate:end",
        "promote:after-alias",
    ],
)
def test_killed_mid_step_resumes_without_duplicates(tmp_path: Path, point: str) -> None:
    project = make_project(tmp_path / "p")
    train(project)
    send(project, 900, "B", seed=24, label_share=0.6)
    marker = tmp_path / "crashed"
    env = cli_env(DRIFTLOOP_CRASH_AT=point, DRIFTLOOP_CRASH_MARKER=str(marker))
    config = str(project.settings.root / "driftloop.toml")
    crashed = subprocess.run(
        [sys.executable, "-m", "driftloop.cli", "retrain", "-c", config],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert crashed.returncode == 137, crashed.stdout + crashed.stderr
    assert marker.read_text() == point
    runs = project.store.runs(project.name)
    assert len(runs) == 1 and runs[0]["status"] == "running"
    resumed = subprocess.run(
        [sys.executable, "-m", "driftloop.cli", "retrain", "-c", config],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"Resuming retrain run {runs[0]['id']}" in resumed.stdout
    row = project.store.run(runs[0]["id"])
    assert row is not None and row["status"] in ("promoted", "rejected"), row
    versions = [v["version"] for v in project.registry.versions(project.name)]
    assert versions == ["1", "2"], "no duplicate version was registered"
    assert len(project.store.decisions(project.name)) == 1
    assert len(project.store.runs(project.name)) == 1
    steps = project.store.run_steps(runs[0]["id"])
    names = [s["step"] for s in steps]
    assert names.count(point.split(":")[0]) == 2, f"the interrupted step was entered twice: {names}"
    assert all(s["seconds"] is not None and s["seconds"] >= 0 for s in steps)
    shown = subprocess.run(
        [sys.executable, "-m", "driftloop.cli", "runs", runs[0]["id"], "-c", config],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0 and "steps of" in shown.stdout and "evaluate" in shown.stdout, shown.stdout
    kinds = sorted(d["kind"] for d in project.store.datasets(project.name))
    # the first model's training set, the run's training and evaluation sets, the requests served
    # over the evaluation period and the winner's held-out predictions (its monitoring
    # reference), each once
    assert kinds == ["eval", "heldout", "period", "train", "train"], f"no duplicate snapshot: {kinds}"
    promotions = [p for p in project.store.promotions(project.name) if p["action"] == "promote"]
    assert len(promotions) == (1 if row["status"] == "promoted" else 0)
    champion = project.registry.alias(project.name, "champion")
    assert champion == "1" or project.registry.tags(project.name, champion)["driftloop.gate"] == "accepted"
    project.close()


class _Evil:
    """A pickle that runs code when loaded: it creates the folder named by ``marker``."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.makedirs, (self.marker,))


def test_a_pickle_planted_in_the_workflow_database_is_refused_not_loaded(tmp_path: Path) -> None:
    """Whoever can write the workflow database must not get code run by a process that resumes
    a run: checkpoints are JSON, and a row that says it holds a pickle is refused."""
    import base64
    import pickle
    import sqlite3

    project = make_project(tmp_path / "p")
    train(project)
    send(project, 900, "B", seed=24, label_share=0.6)
    marker = tmp_path / "crashed"
    env = cli_env(DRIFTLOOP_CRASH_AT="snapshot:end", DRIFTLOOP_CRASH_MARKER=str(marker))
    config = str(project.settings.root / "driftloop.toml")
    retrain = [sys.executable, "-m", "driftloop.cli", "retrain", "-c", config]
    crashed = subprocess.run(retrain, env=env, capture_output=True, text=True, timeout=300)
    assert crashed.returncode == 137, crashed.stdout + crashed.stderr
    run_id = project.store.runs(project.name)[0]["id"]
    path = project.settings.workflow_db_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:
        written = {k for (k,) in db.execute("SELECT DISTINCT serialization FROM operation_outputs")}
        written |= {k for (k,) in db.execute("SELECT DISTINCT serialization FROM workflow_status")}
        assert written == {"driftloop_json"}, written
        step = "WHERE workflow_uuid = ? AND function_name LIKE '%plan_step'"
        planned = db.execute(f"SELECT output FROM operation_outputs {step}", (run_id,)).fetchone()
        assert planned is not None and json.loads(planned[0])["champion"] == "1"
        # the attacker's row: the plan step's checkpoint replaced by a pickle that runs code
        pwned = tmp_path / "pwned"
        evil = base64.b64encode(pickle.dumps(_Evil(str(pwned)))).decode()
        db.execute(
            f"UPDATE operation_outputs SET output = ?, serialization = 'py_pickle' {step}", (evil, run_id)
        )
    db.close()
    resumed = subprocess.run(retrain, env=env, capture_output=True, text=True, timeout=300)
    assert not pwned.exists(), "the planted pickle was loaded"
    row = project.store.run(run_id)
    assert row is not None and row["status"] == "failed", row
    assert "never unpickles" in row["error"], row["error"]
    assert "Traceback" not in resumed.stdout
    project.close()


def test_rollback_restores_previous(fresh: Project) -> None:
    send(fresh, 1000, "B", seed=25, label_share=0.6)
    row = workflow.wait(workflow.start_retrain(fresh, "manual"))
    assert row["status"] == "promoted"
    assert workflow.rollback(fresh) == "1"
    assert fresh.registry.alias(fresh.name, "champion") == "1"
    assert fresh.store.promotions(fresh.name)[-1]["action"] == "rollback"


def test_cli_env_keeps_the_path() -> None:
    assert os.pathsep in cli_env()["PATH"]


def test_cron_schedule_starts_a_retrain(tmp_path: Path) -> None:
    project = trained_with(tmp_path / "p", retrain='schedule = "*/2 * * * * *"')
    try:
        workflow.launch(project)
        deadline = time.time() + 30
        while not project.store.runs(project.name) and time.time() < deadline:
            time.sleep(0.2)
        runs = project.store.runs(project.name)
        assert runs and runs[0]["trigger"] == "schedule:*/2 * * * * *"
        # no labels yet: the run waits (and says why) instead of training what the gate can't judge
        row = workflow.wait(runs[0]["id"])
        assert row["status"] == "waiting" and "0 labelled rows came after" in row["error"], row
        time.sleep(2.5)
        assert len(project.store.runs(project.name)) == 1, "the schedule does not pile up waiting runs"
        send(project, 300, "A", seed=31, label_share=0.5)
        workflow.monitor_and_trigger(project)
        assert workflow.wait(runs[0]["id"])["status"] in ("promoted", "rejected")
    finally:
        workflow.shutdown()
    project.close()


def test_wait_outlasts_the_gap_between_the_store_row_and_the_enqueue(fresh: Project) -> None:
    """A run is in the store a moment before DBOS knows it; a caller that found the row (a
    scheduled run seen by another thread) may ask in that moment and must not get an error."""
    import threading

    from dbos import DBOS, SetWorkflowID

    workflow.launch(fresh, schedules=False)
    run_id = f"retrain-{fresh.name}-gapgapgap0"
    fresh.store.add_run(run_id, fresh.name, "manual", {"trainer": None, "since_seq": None})

    def enqueue_later() -> None:
        time.sleep(0.5)
        queue = DBOS.retrieve_queue(workflow.QUEUE)
        assert queue is not None
        with SetWorkflowID(run_id):
            queue.enqueue(workflow.retrain, run_id)

    late = threading.Thread(target=enqueue_later)
    late.start()
    try:
        assert DBOS.get_workflow_status(run_id) is None, "the gap is real when wait() is called"
        assert workflow.wait(run_id)["status"] in ("promoted", "rejected")
    finally:
        late.join()
    with pytest.raises(NotFoundError, match="'retrain-loan-nosuchrun' does not exist"):
        workflow.wait("retrain-loan-nosuchrun")


def _monitored_every_200ms(tmp_path: Path) -> Project:
    """A trained example project whose server monitors every 200 ms."""
    config = tmp_path / "p" / "driftloop.toml"
    make_project(config.parent)
    config.write_text(config.read_text().replace('schedule = "30s"', 'schedule = "200ms"'))
    project = Project.load(config)
    train(project)
    return project


def test_serve_monitors_on_its_schedule(tmp_path: Path) -> None:
    project = _monitored_every_200ms(tmp_path)
    records = applicants(600, "A", seed=4).drop(columns="approved").to_dict(orient="records")
    try:
        with (
            serve_in_thread(create_app(project, background=True, monitor=True)) as url,
            httpx.Client(base_url=url) as client,
        ):
            assert client.post("/predict", json={"records": records}).status_code == 200
            deadline = time.time() + 30
            while len(project.store.windows(project.name)) < 2 and time.time() < deadline:
                time.sleep(0.1)
    finally:
        workflow.shutdown()
    assert [w["n"] for w in project.store.windows(project.name)] == [300, 300]
    project.close()


def test_monitoring_that_cannot_start_steps_down_and_starts_when_it_can(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The workflow database cannot be opened when the server starts (here a folder stands where
    its file goes): the monitor says so, steps down and tries again on its schedule, and starts
    when it can, instead of ending its thread and leaving the server unmonitored until a restart."""
    project = _monitored_every_200ms(tmp_path)
    blocker = Path(project.settings.workflow_db_url.removeprefix("sqlite:///"))
    blocker.mkdir(parents=True)
    records = applicants(600, "A", seed=4).drop(columns="approved").to_dict(orient="records")
    caplog.set_level(logging.WARNING, logger="driftloop.serving")
    try:
        with (
            serve_in_thread(create_app(project, background=True, monitor=True)) as url,
            httpx.Client(base_url=url) as client,
        ):
            assert client.post("/predict", json={"records": records}).status_code == 200

            def failed() -> list[str]:
                return [r.getMessage() for r in caplog.records if "could not start" in r.getMessage()]

            deadline = time.time() + 30
            while time.time() < deadline and len(failed()) < 2:
                time.sleep(0.1)
            assert len(failed()) >= 2, "the monitor did not try again"
            assert "Monitoring of 'loan' could not start" in failed()[0]
            assert project.store.windows(project.name) == []
            blocker.rmdir()
            deadline = time.time() + 30
            while len(project.store.windows(project.name)) < 2 and time.time() < deadline:
                time.sleep(0.1)
    finally:
        workflow.shutdown()
    assert [w["n"] for w in project.store.windows(project.name)] == [300, 300]
    assert not any("Took over" in r.getMessage() for r in caplog.records)  # nobody else held it
    project.close()


def test_datasets_commands_list_show_and_diff(fresh: Project) -> None:
    from typer.testing import CliRunner

    from driftloop.cli import app

    send(fresh, 1000, "B", seed=26, label_share=0.6)
    run_id = workflow.start_retrain(fresh, "manual")
    workflow.wait(run_id)
    config = str(fresh.settings.root / "driftloop.toml")
    runner = CliRunner()
    listed = runner.invoke(app, ["datasets", "list", "-c", config], terminal_width=200)
    assert listed.exit_code == 0, listed.output
    ids = [d["id"] for d in fresh.store.datasets(fresh.name)]
    # the first training set; the run's training, evaluation, period and held-out sets
    assert len(ids) == 5 and all(i[:12] in listed.output for i in ids)
    train_id = next(
        d["id"]
        for d in fresh.store.datasets(fresh.name)
        if d["manifest"].get("run_id") == run_id and d["kind"] == "train"
    )
    shown = runner.invoke(app, ["datasets", "show", train_id[:8], "-c", config])
    assert shown.exit_code == 0 and '"replay_fraction": 0.1' in shown.output and run_id in shown.output
    hygiene = fresh.store.dataset(train_id)["manifest"]["feedback_hygiene"]  # type: ignore[index]
    assert hygiene["conflict_rule"] == "latest" and hygiene["quarantined"] == 0 and hygiene["feedback"] > 0
    diff = runner.invoke(
        app, ["datasets", "diff", ids[0][:8], train_id[:8], "-c", config], terminal_width=200
    )
    assert diff.exit_code == 0 and "feature drift between them" in diff.output
    assert "yes" in diff.output.split("feature drift between them")[1], "concept B data differs from A"


def test_gate_applies_slice_and_significance_rules_in_the_workflow(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    make_project(folder)
    config = folder / "driftloop.toml"
    config.write_text(
        config.read_text().replace(
            "min_eval_rows = 100\n",
            'min_eval_rows = 100\nslices = ["class", "employment"]\nmax_slice_regression = 0.5\n'
            "require_significance = true\n",
        )
    )
    project = Project.load(config)
    train(project)
    send(project, 1000, "B", seed=27, label_share=0.6)
    try:
        row = workflow.wait(workflow.start_retrain(project, "manual"))
    finally:
        workflow.shutdown()
    decision = project.store.decision(row["id"])
    assert decision is not None
    rules = {r["rule"]: r for r in decision["rules"]}
    assert {"significance", "max_slice_regression"} <= set(rules)
    assert rules["max_slice_regression"]["metric"].split("=")[0] in ("class", "employment")
    assert row["status"] == ("promoted" if all(r["passed"] for r in rules.values()) else "rejected")
    project.close()


def test_cost_controls_block_automatic_retrains_only(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    make_project(folder)
    config = folder / "driftloop.toml"
    config.write_text(
        config.read_text().replace("[retrain]\n", '[retrain]\ncooldown = "1h"\nmax_per_day = 2\n')
    )
    project = Project.load(config)
    store = project.store
    assert workflow.automatic_retrain_blocked(project) is None
    store.add_run("r-manual", project.name, "manual", {})
    store.update_run("r-manual", status="promoted")
    assert workflow.automatic_retrain_blocked(project) is None, "manual runs do not count"
    store.add_run("r1", project.name, "alert:accuracy-drop", {})
    assert workflow.automatic_retrain_blocked(project) == "a retrain is already queued or running"
    store.update_run("r1", status="rejected")
    assert "retrain.cooldown (3600s)" in (workflow.automatic_retrain_blocked(project) or "")
    now = time.time()
    assert workflow.automatic_retrain_blocked(project, now=now + 3601) is None
    store.add_run("r2", project.name, "schedule:0 3 * * *", {})
    store.update_run("r2", status="promoted", started_at=now - 7200)
    store.update_run("r1", started_at=now - 10800)
    assert "retrain.max_per_day (2)" in (workflow.automatic_retrain_blocked(project, now=now) or "")
    project.close()
