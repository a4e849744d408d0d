"""The HTTP API over a real uvicorn server on 127.0.0.1 with a real SQLite store."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from driftloop import ConfigError
from driftloop.demo.data import applicants
from driftloop.demo.scenario import free_port, serve_in_thread
from driftloop.monitor import Monitor
from driftloop.project import Project
from driftloop.serving import create_app, parse_api_keys
from driftloop.training import fit_and_register, snapshot_training_data, split_validation, train

from .conftest import make_project
from .helpers import serve_subprocess, with_serving

GOOD = {
    "income": 52000,
    "debt_ratio": 0.3,
    "credit_score": 700,
    "age": 40,
    "employment": "salaried",
    "purpose": "car",
}


def test_predict_log_feedback_round_trip(served: tuple[Project, str]) -> None:
    project, url = served
    with httpx.Client(base_url=url) as client:
        one = client.post("/predict", json=GOOD)
        assert one.status_code == 200, one.text
        body = one.json()
        assert body["model_version"] == "1" and len(body["predictions"]) == 1
        p = body["predictions"][0]
        assert p["label"] in ("no", "yes") and abs(sum(p["probabilities"].values()) - 1) < 1e-6
        batch = client.post("/predict", json={"records": [GOOD, {**GOOD, "income": 9000}]}).json()
        ids = [p["prediction_id"], *(x["prediction_id"] for x in batch["predictions"])]
        stored = project.store.prediction(ids[0])
        assert stored is not None
        assert stored["inputs"]["income"] == 52000 and stored["model_version"] == "1"
        assert stored["prediction"] == p["label"] and stored["confidence"] == pytest.approx(p["confidence"])
        assert stored["latency_ms"] > 0 and stored["request_id"] == body["request_id"]
        assert project.store.count_predictions(project.name) == 3

        ok = client.post("/feedback", json={"prediction_id": ids[0], "label": "yes", "source": "reviewer"})
        assert ok.status_code == 200 and ok.json() == {"accepted": 1}
        many = client.post(
            "/feedback", json={"feedback": [{"prediction_id": i, "label": "no"} for i in ids[1:]]}
        )
        assert many.json()["accepted"] == 2  # a batch is answered item by item
        labelled = project.store.labelled(project.name)
        assert [r["label"] for r in labelled] == ["yes", "no", "no"]

        unknown = client.post("/feedback", json={"prediction_id": "f" * 32, "label": "yes"})
        assert unknown.status_code == 404 and "f" * 32 in unknown.text
        bad_label = client.post("/feedback", json={"prediction_id": ids[0], "label": "maybe"})
        assert bad_label.status_code == 422 and "'maybe'" in bad_label.text
        surrogate = client.post(
            "/feedback",
            content=b'{"prediction_id": "%s", "label": "yes", "source": "x\\udc80"}' % ids[0].encode(),
            headers={"content-type": "application/json"},
        )
        assert surrogate.status_code == 422 and "valid Unicode text" in surrogate.text, surrogate.text


def test_invalid_requests_name_each_field_and_are_counted(served: tuple[Project, str]) -> None:
    project, url = served
    with httpx.Client(base_url=url) as client:
        r = client.post(
            "/predict",
            json={
                "records": [GOOD, {**GOOD, "income": -5, "purpose": "yacht", "colour": "red"}, {"age": 30}]
            },
        )
        assert r.status_code == 422
        locs = [tuple(e["loc"]) for e in r.json()["detail"]]
        assert ("records", 1, "income") in locs and ("records", 1, "purpose") in locs
        assert ("records", 1, "colour") in locs and ("records", 2, "income") in locs
        assert any("greater than or equal to 0" in e["msg"] and "-5" in e["msg"] for e in r.json()["detail"])
        assert (
            client.post(
                "/predict", content=b"{not json", headers={"content-type": "application/json"}
            ).status_code
            == 422
        )
        assert client.post("/predict", json=[]).status_code == 422
        surrogate = client.post(  # JSON may carry a lone surrogate, which UTF-8 cannot store
            "/predict",
            content=b'{"records": [{"income": 1, "debt_ratio": 0.1, "credit_score": 700, "age": 30, '
            b'"employment": "salaried", "purpose": "car"}], "metadata": {"tenant": "a\\ud800"}}',
            headers={"content-type": "application/json"},
        )
        assert surrogate.status_code == 422 and "valid Unicode text" in surrogate.text, surrogate.text
        too_many = client.post("/predict", json={"records": [GOOD] * 1001})
        assert too_many.status_code == 413 and "1000" in too_many.text
        huge = client.post(
            "/predict", content=b"x" * (9 * 1024 * 1024), headers={"content-type": "application/json"}
        )
        assert huge.status_code == 413 and "limit" in huge.text
        metrics = client.get("/metrics").text
    assert project.store.count_predictions(project.name) == 0, "nothing from invalid requests is logged"
    assert project.store.count_invalid(project.name) == 6
    assert 'driftloop_invalid_requests_total{model="loan"} 6' in metrics
    assert 'driftloop_retrain_runs_total{model="loan",status="promoted"} 0' in metrics


def test_health_and_models(served: tuple[Project, str]) -> None:
    _, url = served
    with httpx.Client(base_url=url) as client:
        assert client.get("/health").json()["champion"] == "1"
        models = client.get("/models").json()
        assert models["serving"] == "1"
        assert models["versions"][0]["aliases"] == ["champion"]


def test_api_keys_and_scopes(fresh: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLOOP_API_KEYS", "pk-123=predict;fb-456=feedback;ad-789=admin")
    app = create_app(fresh, background=False)
    # the docs and the OpenAPI schema need a key too; the pages answer with the sign-in form
    open_routes = {"/health", "/ready", "/", "/review", "/login", "/logout"}
    with serve_in_thread(app) as url, httpx.Client(base_url=url) as client:
        for route in app.routes:
            path, methods = getattr(route, "path", ""), getattr(route, "methods", set()) or set()
            if path in open_routes:
                continue
            for method in methods - {"HEAD", "OPTIONS"}:
                r = client.request(method, path, json=GOOD)
                assert r.status_code == 401, f"{method} {path} is open without a key"
        assert client.get("/health").status_code == 200
        assert client.get("/").status_code == 303 and client.get("/").headers["location"] == "/login"
        assert (
            client.get("/", headers={"Authorization": "Bearer ad-789"}).status_code == 303
        )  # pages: sign in
        assert "API key" in client.get("/login").text
        headers = {"Authorization": "Bearer pk-123"}
        assert client.post("/predict", json=GOOD, headers=headers).status_code == 200
        assert client.post("/feedback", json={}, headers=headers).status_code == 403
        assert client.get("/metrics", headers=headers).status_code == 403
        assert client.get("/metrics", headers={"Authorization": "Bearer ad-789"}).status_code == 200
        assert client.post("/predict", json=GOOD, headers={"x-api-key": "wrong"}).status_code == 401
    with pytest.raises(ValueError, match="scopes from"):
        parse_api_keys("k=root")


def test_hot_swap_while_requests_are_in_flight(served: tuple[Project, str]) -> None:
    project, url = served
    df = snapshot_training_data(project).load()
    train_df, _ = split_validation(df)
    v2, _ = fit_and_register(project, train_df, train_df.iloc[:0], dataset_id="x", run_key="swap-test")
    records = applicants(50, "A", seed=3).drop(columns="approved").to_dict(orient="records")
    failures: list[str] = []
    versions: list[str] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            while not stop.is_set():
                r = client.post("/predict", json={"records": records})
                if r.status_code != 200:
                    failures.append(r.text)
                else:
                    versions.append(r.json()["model_version"])

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    for _ in range(10):  # promote and roll back ten times while traffic flows
        project.registry.set_alias(project.name, "champion", v2)
        time.sleep(0.25)
        project.registry.set_alias(project.name, "champion", "1")
        time.sleep(0.25)
    project.registry.set_alias(project.name, "champion", v2)
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join()
    assert not failures
    assert set(versions) == {"1", v2}
    with httpx.Client(base_url=url) as client:
        deadline = time.time() + 10
        while client.get("/health").json()["champion"] != v2 and time.time() < deadline:
            time.sleep(0.05)
        assert client.post("/predict", json=GOOD).json()["model_version"] == v2
    logged = project.store.predictions_after(project.name, 0, 1_000_000)
    assert len(logged) == 50 * len(versions) + 1, "every answered record is in the log"


def test_pii_fields_are_hashed_or_dropped_before_they_are_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "p"
    make_project(folder)
    config = folder / "driftloop.toml"
    text = config.read_text()
    text = text.replace('[features.age]\ntype = "numeric"', '[features.age]\ntype = "numeric"\npii = "drop"')
    text = text.replace(
        '[features.purpose]\ntype = "categorical"', '[features.purpose]\ntype = "categorical"\npii = "hash"'
    )
    config.write_text(text)
    project = Project.load(config)
    train(project)
    monkeypatch.delenv("DRIFTLOOP_PII_KEY", raising=False)
    with pytest.raises(ConfigError, match="DRIFTLOOP_PII_KEY"):
        create_app(project)
    monkeypatch.setenv("DRIFTLOOP_PII_KEY", "test-secret")
    with serve_in_thread(create_app(project, background=False)) as url, httpx.Client(base_url=url) as client:
        body = client.post("/predict", json=GOOD, headers={"x-tenant": "acme"}).json()
        records = applicants(300, "A", seed=8).drop(columns="approved").to_dict(orient="records")
        assert client.post("/predict", json={"records": records}).status_code == 200
    stored = project.store.prediction(body["predictions"][0]["prediction_id"])
    assert stored is not None
    assert "age" not in stored["inputs"], "dropped fields never reach the store"
    assert stored["inputs"]["purpose"].startswith("h:") and "car" not in stored["inputs"]["purpose"]
    assert stored["inputs"]["income"] == 52000
    assert stored["meta"] == {"tenant": "acme"}
    Monitor(project).run()  # monitoring works on redacted rows and skips pii columns
    metrics = project.store.windows(project.name)[-1]["metrics"]
    assert "drift.age" not in metrics and "drift.purpose" not in metrics and "drift.income" in metrics
    project.close()


@pytest.mark.parametrize("log_writer", ["process", "thread"])
def test_durable_log_survives_sigkill_under_load(tmp_path: Path, log_writer: str) -> None:
    """Kill the server with SIGKILL mid-load, three times: every id a client got is in the store."""
    project = make_project(tmp_path / "p")
    train(project)
    project = with_serving(project, log_writer=log_writer)
    config = str(project.settings.root / "driftloop.toml")
    records = applicants(20, "A", seed=9).drop(columns="approved").to_dict(orient="records")
    acknowledged: list[str] = []
    for trial in range(3):
        port = free_port()
        server = serve_subprocess(config, port)
        url = f"http://127.0.0.1:{port}"
        stop = threading.Event()

        def load(url: str = url, stop: threading.Event = stop) -> None:
            with httpx.Client(base_url=url, timeout=10) as client:
                while not stop.is_set():
                    try:
                        r = client.post("/predict", json={"records": records})
                    except httpx.HTTPError:
                        return  # the server died mid-request: nothing was acknowledged
                    if r.status_code == 200:
                        acknowledged.extend(p["prediction_id"] for p in r.json()["predictions"])

        threads = [threading.Thread(target=load) for _ in range(6)]
        for t in threads:
            t.start()
        time.sleep(1.0 + 0.3 * trial)
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=30)
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert len(acknowledged) > 300, "the load was real"
    found = project.store.existing_prediction_ids(acknowledged)
    assert len(found) == len(set(acknowledged)), (
        f"{len(set(acknowledged)) - len(found)} acknowledged rows lost"
    )
    project.close()


def test_several_workers_share_one_sqlite_store(tmp_path: Path) -> None:
    from .helpers import multi_worker_round

    folder = tmp_path / "p"
    make_project(folder)
    config = folder / "driftloop.toml"
    config.write_text(
        config.read_text()
        .replace('schedule = "30s"', 'schedule = "500ms"')
        .replace('window = "300 rows"', 'window = "500 rows"')
    )
    project = Project.load(config)
    train(project)
    multi_worker_round(project)
    project.close()


@pytest.mark.parametrize("log_writer", ["process", "thread"])
def test_fast_mode_answers_503_when_full_and_flushes_on_shutdown(tmp_path: Path, log_writer: str) -> None:
    project = make_project(tmp_path / "p")
    train(project)
    project = with_serving(project, log_mode="fast", log_queue_size=150, log_writer=log_writer)
    records = applicants(200, "A", seed=4).drop(columns="approved").to_dict(orient="records")
    ids: list[str] = []
    with serve_in_thread(create_app(project, background=False)) as url, httpx.Client(base_url=url) as client:
        full = client.post("/predict", json={"records": records})
        assert full.status_code == 503
        assert full.headers["retry-after"] == "1"
        assert "limit is 150" in full.json()["detail"]
        for record in records[:120]:
            r = client.post("/predict", json=record)
            assert r.status_code == 200, r.text
            ids.append(r.json()["predictions"][0]["prediction_id"])
    # fast mode answers before the commit; a clean shutdown still writes every row
    assert project.store.existing_prediction_ids(ids) == set(ids)
    assert project.store.count_predictions(project.name) == 120
    project.close()


def test_a_killed_log_writer_process_is_restarted_and_nothing_acknowledged_is_lost(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p")
    train(project)
    app = create_app(project, background=False)
    acknowledged: list[str] = []
    statuses: set[int] = set()
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        for record in applicants(20, "A", seed=5).drop(columns="approved").to_dict(orient="records"):
            r = client.post("/predict", json=record)
            acknowledged.append(r.json()["predictions"][0]["prediction_id"])
        child = app.state.writer._process
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        deadline = time.time() + 60
        while time.time() < deadline:
            r = client.post("/predict", json=GOOD)
            statuses.add(r.status_code)
            if r.status_code == 503:
                assert r.headers["retry-after"] == "1"
                assert "could not be logged" in r.json()["detail"]
                time.sleep(0.05)
                continue
            assert r.status_code == 200, r.text
            acknowledged.append(r.json()["predictions"][0]["prediction_id"])
            if app.state.writer._process is not child and len(acknowledged) >= 30:
                break
        assert app.state.writer._process.pid != child.pid, "a new writer process took over"
    assert statuses <= {200, 503}
    assert project.store.existing_prediction_ids(acknowledged) == set(acknowledged)
    project.close()
