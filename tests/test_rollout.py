"""Shadow scoring and canary rollouts on a live server: the challenger meets real traffic first."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import numpy as np

from driftloop import workflow
from driftloop.demo.data import applicants
from driftloop.demo.scenario import serve_in_thread
from driftloop.project import Project
from driftloop.serving import create_app
from driftloop.training import train

from .conftest import make_project
from .helpers import html_problems, send


def _project(tmp_path: Path, extra: str, gate: str = "") -> Project:
    folder = tmp_path / "p"
    make_project(folder)
    config = folder / "driftloop.toml"
    text = config.read_text() + extra
    if gate:  # a gate that lets anything through, so only the canary can catch a bad challenger
        text = (
            text.replace("min_improvement = 0.01", "min_improvement = -1.0")
            .replace("max_regression = { f1_macro = 0.02 }", "max_regression = { f1_macro = 1.0 }")
            .replace("[gate]\n", "[gate]\nmax_newest_fold_regression = 1.0\n")
        )
    config.write_text(text)
    project = Project.load(config)
    train(project)
    return project


def _wait_for_canary(url: str, deadline: float) -> None:
    """Until the server routes to the canary: the rollout began and its model is loaded."""
    while time.time() < deadline:
        models = httpx.get(f"{url}/models").json()
        if models["canary"] and models["challenger"] == models["canary"]["version"]:
            return
        time.sleep(0.05)
    raise AssertionError("the server never picked up the canary")


def _traffic(url: str, n: int, seed: int, key: str | None = None) -> list[tuple[str, str, str]]:
    """Send ``n`` concept-B applicants one by one, label each at once; (request key, version, id)."""
    df = applicants(n, "B", seed=seed)
    out = []
    with httpx.Client(base_url=url) as client:
        for i, record in enumerate(df.drop(columns="approved").to_dict(orient="records")):
            request_key = key or f"user-{i % 40}"
            r = client.post("/predict", json=record, headers={"x-request-key": request_key})
            assert r.status_code == 200, r.text
            body = r.json()
            pid = body["predictions"][0]["prediction_id"]
            out.append((request_key, body["model_version"], pid))
            fb = client.post("/feedback", json={"prediction_id": pid, "label": df["approved"].iloc[i]})
            assert fb.status_code == 200, fb.text
    return out


def test_shadow_scores_every_request_off_the_response_path(tmp_path: Path) -> None:
    project = _project(tmp_path, "", gate="")
    text = (project.settings.root / "driftloop.toml").read_text()
    (project.settings.root / "driftloop.toml").write_text(
        text.replace('log_mode = "durable"', 'log_mode = "durable"\nshadow_share = 1.0')
    )
    project = Project.load(project.settings.root / "driftloop.toml")
    send(project, 900, "B", seed=60, label_share=0.6)
    from driftloop.training import fit_and_register, snapshot_training_data

    data = applicants(1500, "B", seed=61)
    data["__key__"] = [f"b{i}" for i in range(len(data))]
    dataset = snapshot_training_data(project)
    version, _ = fit_and_register(project, data, data.iloc[:0], dataset_id=dataset.id, run_key="shadow-test")
    project.registry.set_alias(project.name, "challenger", version)
    with serve_in_thread(create_app(project, background=True)) as url:
        sent = _traffic(url, 200, seed=62)
        deadline = time.time() + 10
        while time.time() < deadline and len(project.store.shadow_pairs(project.name)) < 200:
            time.sleep(0.1)
        report = httpx.get(f"{url}/shadow").json()
        models = httpx.get(f"{url}/models").json()
        metrics = httpx.get(f"{url}/metrics").text
    assert {v for _, v, _ in sent} == {"1"}, "the champion answers every request"
    assert models["challenger"] == version and models["shadow_share"] == 1.0
    assert report["requests"] == 200 and report["versions"] == [version] and report["labelled"] == 200
    assert report["metric"] == "accuracy"
    assert report["shadow"] > report["served"], "trained on concept B, it is better on B"
    assert 0 < report["agreement"] < 1
    assert f'driftloop_challenger_info{{model="loan",version="{version}"}} 1' in metrics
    assert 'driftloop_shadow_predictions_total{model="loan"} 200' in metrics
    project.close()


def test_canary_steps_up_with_stable_assignment_then_promotes(tmp_path: Path) -> None:
    project = _project(
        tmp_path,
        '\n[rollout]\ncanary_steps = [0.3, 0.6]\nstep_labels = 30\ncheck_interval = "200ms"\n',
    )
    send(project, 1000, "B", seed=63, label_share=0.6)
    run_id = workflow.start_retrain(project, "manual")
    try:
        with serve_in_thread(create_app(project, background=True)) as url:
            deadline = time.time() + 60
            _wait_for_canary(url, deadline)
            sent = []
            while time.time() < deadline and (project.store.run(run_id) or {})["status"] == "running":
                sent += _traffic(url, 40, seed=64 + len(sent))
            row = workflow.wait(run_id)
    finally:
        workflow.shutdown()
    assert row["status"] == "promoted", row
    versions = {v for _, v, _ in sent}
    assert versions == {"1", "2"}, "both sides answered during the canary"
    by_key: dict[str, list[str]] = {}
    for key, version, _ in sent:
        by_key.setdefault(key, []).append(version)
    # stable assignment: a key moves to the canary at most once (when the share grows), never back
    assert all(seen == sorted(seen) for seen in by_key.values()), by_key
    first = [seen[0] for seen in by_key.values()]
    assert "1" in first and "2" in first, "at the first step some keys are on the canary, most are not"
    rollout = project.store.rollout(project.name, run_id)
    assert rollout is not None and rollout["status"] == "promoted" and rollout["share"] == 1.0
    assert project.champion() == "2"
    project.close()


def test_a_worse_canary_is_rolled_back_and_the_champion_stays(tmp_path: Path) -> None:
    project = _project(
        tmp_path,
        '\n[rollout]\ncanary_steps = [0.5]\nstep_labels = 40\ncheck_interval = "200ms"\n',
        gate="permissive",
    )
    send(project, 1000, "A", seed=70, label_share=0.6)
    run_id = workflow.start_retrain(project, "manual", trainer="trainer:careless")
    try:
        with serve_in_thread(create_app(project, background=True)) as url:
            deadline = time.time() + 60
            _wait_for_canary(url, deadline)
            sent = []
            while time.time() < deadline and (project.store.run(run_id) or {})["status"] == "running":
                df = applicants(40, "A", seed=71 + len(sent))
                with httpx.Client(base_url=url) as client:
                    for i, record in enumerate(df.drop(columns="approved").to_dict(orient="records")):
                        r = client.post("/predict", json=record, headers={"x-request-key": f"k{len(sent)}"})
                        pid = r.json()["predictions"][0]["prediction_id"]
                        sent.append(r.json()["model_version"])
                        client.post("/feedback", json={"prediction_id": pid, "label": df["approved"].iloc[i]})
            row = workflow.wait(run_id)
    finally:
        workflow.shutdown()
    assert row["status"] == "rejected" and project.champion() == "1"
    share = np.mean([v == "2" for v in sent])
    assert 0.3 < share < 0.7, f"about half the keys went to the canary, got {share:.2f}"
    rollout = project.store.rollout(project.name, run_id)
    assert rollout is not None and rollout["status"] == "rolled-back" and rollout["share"] == 0.0
    assert "more than 0.03 worse" in rollout["reason"]
    from driftloop.ui import render_report

    page = render_report(project)  # the dashboard's canary comparison
    assert "Canary rollouts" in page and "rolled-back" in page and "more than 0.03 worse" in page
    assert html_problems(page) == []  # a section of its own, not inside a summary card
    alerts = [a for a in project.store.alerts(project.name) if a["rule"] == "canary-rollback"]
    assert len(alerts) == 1 and "the champion stays" in alerts[0]["message"]
    assert project.registry.alias(project.name, "challenger") is None
    project.close()
