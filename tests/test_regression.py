"""Regression on the task seam, end to end: serve numbers, take numeric labels, monitor MAE and its
label-free estimate (DLE), retrain, gate on errors with a paired Wilcoxon test, promote or reject."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from driftloop import ConfigError, Settings, workflow
from driftloop.cli import app
from driftloop.config import GateSettings
from driftloop.demo.houses import houses
from driftloop.demo.project import write_example
from driftloop.demo.scenario import serve_in_thread
from driftloop.drift.dle import DLE
from driftloop.gate import decide
from driftloop.monitor import Monitor
from driftloop.project import Project
from driftloop.serving import create_app
from driftloop.tasks import Regression
from driftloop.training import fit_and_register, snapshot_training_data, train


@pytest.fixture
def homes(tmp_path: Path) -> Iterator[Project]:
    config = write_example(
        tmp_path / "houses", template="regression", rows=2000, window="400 rows", reload_interval="100ms"
    )
    project = Project.load(config)
    train(project)
    yield project
    workflow.shutdown()
    project.close()


def send(project: Project, n: int, concept: str, seed: int, label_share: float) -> list[float]:
    """Predict ``n`` homes over HTTP, label a share with the true price; return the served values."""
    df = houses(n, concept, seed=seed)
    truth = df.pop("price").tolist()
    rng = np.random.default_rng(seed)
    served: list[float] = []
    with serve_in_thread(create_app(project, background=False)) as url, httpx.Client(base_url=url) as client:
        records = df.to_dict(orient="records")
        ids: list[str] = []
        for start in range(0, n, 400):
            r = client.post("/predict", json={"records": records[start : start + 400]})
            assert r.status_code == 200, r.text
            for p in r.json()["predictions"]:
                assert set(p) == {"prediction_id", "value"}
                ids.append(p["prediction_id"])
                served.append(p["value"])
        labels = [
            {"prediction_id": pid, "label": price}
            for pid, price, keep in zip(ids, truth, rng.random(n) < label_share, strict=True)
            if keep
        ]
        for start in range(0, len(labels), 500):
            r = client.post("/feedback", json={"feedback": labels[start : start + 500]})
            assert r.status_code == 200 and r.json()["invalid"] == 0, r.text
        bad = client.post("/feedback", json={"prediction_id": ids[0], "label": "expensive"})
        assert bad.status_code == 422 and "finite number" in bad.text
        assert bad.json()["detail"][0]["type"] == "value_error", bad.text  # a number, not one of a set
    return served


def test_a_regression_model_is_served_monitored_retrained_and_gated(homes: Project) -> None:
    served = send(homes, 800, "A", seed=1, label_share=0.5)
    assert all(isinstance(v, float) and v > 0 for v in served)
    stored = homes.store.predictions_after(homes.name, 0, 10)[0]
    assert stored["confidence"] is None and stored["probabilities"] == {}
    monitor = Monitor(homes)
    assert monitor.run().alerts == [], "concept A: the error stays where it was"
    before = homes.store.windows(homes.name)
    assert all(w["metrics"]["mae"]["value"] < 25 for w in before)
    assert all(not w["metrics"]["prediction_drift"]["flagged"] for w in before)
    # the market turns: errors rise, and the label-free estimate sees the covariate part of it
    send(homes, 1200, "B", seed=2, label_share=0.5)
    fired = workflow.monitor_and_trigger(homes).alerts
    after = homes.store.windows(homes.name)[len(before) :]
    assert min(w["metrics"]["mae"]["value"] for w in after) > 25
    assert "error-rise" in [a["rule"] for a in fired]
    estimated = [w["metrics"]["estimated_mae"]["value"] for w in before + after]
    assert all(e is not None and e > 0 for e in estimated)
    assert any(w["metrics"]["drift.size_m2"]["flagged"] for w in after)
    # the residuals: like the reference's before the turn, shifted after it (B is under-priced)
    assert not any(w["metrics"]["error_drift"]["flagged"] for w in before)
    assert all(w["metrics"]["error_drift"]["flagged"] for w in after)
    (run,) = homes.store.runs(homes.name)
    row = workflow.wait(run["id"])
    assert row["status"] == "promoted", (row, homes.store.decision(run["id"]))
    decision = homes.store.decision(run["id"])
    assert decision is not None
    primary = next(r for r in decision["rules"] if r["rule"] == "min_improvement")
    assert primary["metric"] == "mae" and primary["challenger"] < primary["champion"] - 1.0
    assert "Wilcoxon p" in primary["sentence"] and "an improvement of +" in primary["sentence"]
    assert homes.registry.alias(homes.name, "champion") == decision["challenger_version"] != "1"
    # a careless candidate (always the mean price) is rejected with the rule that failed
    careless = workflow.wait(workflow.start_retrain(homes, "manual", trainer="trainer:careless"))
    assert careless["status"] == "rejected"
    reasons = " ".join(homes.store.decision(careless["id"])["reasons"])
    assert "below the required" in reasons and "mae changed by +" in reasons
    # `driftloop status` shows each window's mae (the gate's metric), not an empty accuracy column
    shown = CliRunner().invoke(
        app, ["status", "-c", str(homes.settings.root / "driftloop.toml")], env={"COLUMNS": "200"}
    )
    assert shown.exit_code == 0, shown.output
    windows = shown.output.split("recent windows")[1].split("recent alerts")[0]
    assert "mae" in windows and "accuracy" not in windows
    newest = homes.store.windows(homes.name, limit=1)[-1]
    assert f"{newest['metrics']['mae']['value']:.3f}" in windows


def test_a_shadow_regressor_is_compared_on_mae_not_on_equal_numbers(homes: Project) -> None:
    """Two regressors' numbers are rarely equal, so the shadow report gives them no agreement; it
    compares the two on the gate's metric (mae) over the labelled requests, which an equality of
    served and labelled numbers had made 0 for both."""
    config = homes.settings.root / "driftloop.toml"
    config.write_text(config.read_text().replace("[serving]\n", "[serving]\nshadow_share = 1.0\n"))
    project = Project.load(config)
    data = houses(600, "A", seed=5)
    data["__key__"] = [f"h{i}" for i in range(len(data))]
    dataset = snapshot_training_data(project)
    careless, _ = fit_and_register(
        project, data, data.iloc[:0], dataset_id=dataset.id, run_key="shadow", trainer="trainer:careless"
    )
    project.registry.set_alias(project.name, "challenger", careless)
    df = houses(150, "A", seed=6)
    truth = df.pop("price").tolist()
    with serve_in_thread(create_app(project, background=True)) as url, httpx.Client(base_url=url) as client:
        r = client.post("/predict", json={"records": df.to_dict(orient="records")})
        made = r.json()["predictions"]
        labels = [{"prediction_id": p["prediction_id"], "label": y} for p, y in zip(made, truth, strict=True)]
        assert client.post("/feedback", json={"feedback": labels[:100]}).status_code == 200
        deadline = time.time() + 10
        while time.time() < deadline and len(project.store.shadow_pairs(project.name)) < 150:
            time.sleep(0.1)
        report = client.get("/shadow").json()
    served = np.array([p["value"] for p in made[:100]])
    mae_served = float(np.mean(np.abs(served - np.array(truth[:100]))))
    assert report["requests"] == 150 and report["labelled"] == 100 and report["versions"] == [careless]
    assert report["agreement"] is None and report["metric"] == "mae"
    assert report["served"] == pytest.approx(mae_served, rel=1e-6)
    assert report["shadow"] > 2 * report["served"], report  # the mean price for every home
    project.close()


def test_dle_tracks_the_error_of_a_shifted_window() -> None:
    rng = np.random.default_rng(3)
    ref = houses(3000, "A", seed=rng)
    y = ref.pop("price").to_numpy()
    from sklearn.linear_model import LinearRegression

    numeric = ref[["size_m2", "rooms", "age_years"]]
    model = LinearRegression().fit(numeric, y)  # misses the districts: errs more where they matter
    dle = DLE().fit(ref, model.predict(numeric), y)
    pool = houses(20000, "A", seed=4)  # the same market, other mixes of districts: covariate shift
    realised, estimated = [], []
    for district in ("suburb", "centre", "riverside"):
        window = pool[pool["district"] == district].head(800)
        truth = window.pop("price").to_numpy()
        pred = model.predict(window[["size_m2", "rooms", "age_years"]])
        realised.append(float(np.abs(truth - pred).mean()))
        estimated.append(dle.estimate(window, pred))
    assert np.argsort(estimated).tolist() == np.argsort(realised).tolist(), (estimated, realised)
    assert all(abs(e - r) / r < 0.25 for e, r in zip(estimated, realised, strict=True)), (estimated, realised)
    back = DLE.from_dict(dle.to_dict())
    assert back.estimate(ref, model.predict(numeric)) == pytest.approx(
        dle.estimate(ref, model.predict(numeric))
    )


def test_regression_metrics_and_the_gate_by_hand() -> None:
    task = Regression()
    m = task.metrics([10.0, 20.0, 0.0, 40.0], [12.0, 18.0, 1.0, 40.0])
    assert m["mae"] == pytest.approx(1.25) and m["rmse"] == pytest.approx(np.sqrt(9 / 4))
    assert m["mape"] == pytest.approx((0.2 + 0.1 + 0.0) / 3), "rows labelled 0 are left out of MAPE"
    assert m["r2"] == pytest.approx(1 - 9 / 875)
    p, ci = task.paired(np.arange(100.0), np.arange(100.0) + 5, np.arange(100.0) + 1, "mae")
    assert p is not None and p < 1e-6 and ci is not None and ci[0] == ci[1] == pytest.approx(-4.0)
    policy = GateSettings(primary_metric="mae", max_regression={"rmse": 0.5}, min_value={"mae": 3.0})
    worse_rmse = decide(
        policy,
        {"mae": 4.0, "rmse": 5.0},
        {"mae": 3.5, "rmse": 6.0},
        n=500,
        lower_is_better=task.lower_is_better,
    )
    assert not worse_rmse.accepted
    assert worse_rmse.reasons == [
        "rmse rose by 1.0000 (5.0000 -> 6.0000), more than the tolerated 0.5000.",
        "The challenger's mae 3.5000 is above the ceiling 3.0000.",
    ]


def test_regression_settings_are_checked(tmp_path: Path) -> None:
    base = {
        "project": {"name": "h", "task": "regression", "target": "price"},
        "features": {"x": {"type": "numeric"}},
        "data": {"train": "t.csv"},
        "trainer": {"entrypoint": "m:f"},
    }
    settings = Settings.from_dict(base)
    assert settings.gate.primary_metric == "mae" and settings.watch.metric == "mae"
    with pytest.raises(ConfigError, match=r"'gate.primary_metric' setting must name a metric a regression"):
        Settings.from_dict({**base, "gate": {"primary_metric": "accuracy"}})
    with pytest.raises(ConfigError, match="does not apply to a regression project"):
        Settings.from_dict({**base, "project": {**base["project"], "classes": ["a", "b"]}})
    with pytest.raises(ConfigError, match="'estimated_accuracy'"):
        Settings.from_dict(
            {**base, "alerts": [{"name": "a", "metric": "estimated_accuracy", "threshold": 1}]}
        )
