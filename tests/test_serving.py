"""The HTTP API over a real uvicorn server on 127.0.0.1 with a real SQLite store."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from driftloop.demo.data import applicants
from driftloop.demo.scenario import serve_in_thread
from driftloop.project import Project
from driftloop.serving import create_app, parse_api_keys
from driftloop.training import fit_and_register, snapshot_training_data, split_validation

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
        assert many.json() == {"accepted": 2}
        labelled = project.store.labelled(project.name)
        assert [r["label"] for r in labelled] == ["yes", "no", "no"]

        unknown = client.post("/feedback", json={"prediction_id": "f" * 32, "label": "yes"})
        assert unknown.status_code == 404 and "f" * 32 in unknown.text
        bad_label = client.post("/feedback", json={"prediction_id": ids[0], "label": "maybe"})
        assert bad_label.status_code == 422 and "'maybe'" in bad_label.text


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
        too_many = client.post("/predict", json={"records": [GOOD] * 1001})
        assert too_many.status_code == 413 and "1000" in too_many.text
        huge = client.post(
            "/predict", content=b"x" * (9 * 1024 * 1024), headers={"content-type": "application/json"}
        )
        assert huge.status_code == 413 and "limit" in huge.text
        metrics = client.get("/metrics").text
    assert project.store.count_predictions(project.name) == 0, "nothing from invalid requests is logged"
    assert project.store.count_invalid(project.name) == 5
    assert 'driftloop_invalid_requests_total{model="loan"} 5' in metrics


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
    open_routes = {"/health", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
    with serve_in_thread(app) as url, httpx.Client(base_url=url) as client:
        for route in app.routes:
            path, methods = getattr(route, "path", ""), getattr(route, "methods", set()) or set()
            if path in open_routes:
                continue
            for method in methods - {"HEAD", "OPTIONS"}:
                r = client.request(method, path, json=GOOD)
                assert r.status_code == 401, f"{method} {path} is open without a key"
        assert client.get("/health").status_code == 200
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
    for _ in range(3):  # promote and roll back while traffic flows
        project.registry.set_alias(project.name, "champion", v2)
        time.sleep(0.4)
        project.registry.set_alias(project.name, "champion", "1")
        time.sleep(0.4)
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
