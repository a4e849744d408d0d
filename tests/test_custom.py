"""Text embeddings and custom per-prediction metrics, from the request to the window's verdict."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from driftloop import ConfigError
from driftloop.config import Settings
from driftloop.demo.data import applicants
from driftloop.demo.project import write_example
from driftloop.demo.scenario import serve_in_thread
from driftloop.monitor import Monitor
from driftloop.project import Project
from driftloop.serving import create_app
from driftloop.training import train

from .conftest import cli_env

OLD_NOTES = ["steady job and savings", "renting near work", "first car loan", "family home", "paid off card"]
NEW_NOTES = [
    "crypto staking yield",
    "gig platform payouts",
    "bnpl consolidation",
    "nft collateral",
    "ai startup",
]

QUALITY = '''
def margin(inputs, outputs):
    """How far from a coin toss each prediction is: a function-computed metric."""
    return (outputs["confidence"] - 0.5) * 2
'''


def notes(n: int, pool: list[str], seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [
        f"{pool[i]} #{j}" for i, j in zip(rng.integers(0, len(pool), n), rng.integers(0, 9, n), strict=True)
    ]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    folder = tmp_path_factory.mktemp("custom")
    config = write_example(folder, rows=1500, window="300 rows")
    text = config.read_text()
    text = text.replace(
        "[store]",
        '[features.note]\ntype = "text"\nembedding = "driftloop.embeddings:hashing"\n\n'
        '[metrics.freshness]\nmin = 0\nmax = 1\n\n[metrics.margin]\nfunction = "quality:margin"\n\n[store]',
    )
    config.write_text(text)
    (folder / "quality.py").write_text(QUALITY)
    trainer = (folder / "trainer.py").read_text()  # the model ignores the free text; monitoring does not
    (folder / "trainer.py").write_text(
        trainer.replace("if c not in numeric]", 'if c not in numeric and c != "note"]')
    )
    data = pd.read_csv(folder / "data" / "train.csv")
    data["note"] = notes(len(data), OLD_NOTES, 0)
    data.to_csv(folder / "data" / "train.csv", index=False)
    made = Project.load(config)
    train(made)
    return made


def batch(n: int, pool: list[str], seed: int) -> list[dict[str, object]]:
    records = applicants(n, "A", seed=seed).drop(columns="approved").to_dict(orient="records")
    for record, note in zip(records, notes(n, pool, seed), strict=True):
        record["note"] = note
    return records


def test_metrics_and_metadata_are_validated_and_logged(project: Project) -> None:
    records = batch(3, OLD_NOTES, 1)
    with serve_in_thread(create_app(project, background=False)) as url, httpx.Client(base_url=url) as client:
        ok = client.post(
            "/predict",
            json={
                "records": records,
                "metrics": [{"freshness": 0.9}, {"freshness": 0.1}, {}],
                "metadata": {"tenant": "hospital-a", "client_id": "scanner-7"},
            },
            headers={"x-tenant": "overridden"},
        )
        assert ok.status_code == 200, ok.text
        bad = client.post(
            "/predict",
            json={
                "records": records,
                "metrics": [{"freshness": 1.5}, {"margin": 0.2}, {"freshness": "high"}],
                "metadata": {"tenant": 7},
            },
        )
        wrong_length = client.post("/predict", json={"records": records, "metrics": [{"freshness": 0.5}]})
    assert bad.status_code == 422 and wrong_length.status_code == 422
    messages = [e["msg"] for e in bad.json()["detail"]]
    assert "Metric 'freshness' of record 0 must be between 0 and 1. Got 1.5 instead." in messages
    assert any("'margin' of record 1 is not a metric sent with requests" in m for m in messages)
    assert any("'freshness' of record 2 must be a finite number" in m for m in messages)
    assert any("'metadata.tenant' must be a string" in m for m in messages)
    assert "one object per record (3)" in wrong_length.json()["detail"][0]["msg"]
    ids = [p["prediction_id"] for p in ok.json()["predictions"]]
    stored = [project.store.prediction(pid) for pid in ids]
    assert [s["meta"] for s in stored if s] == [
        {"tenant": "hospital-a", "client_id": "scanner-7", "metrics": {"freshness": 0.9}},
        {"tenant": "hospital-a", "client_id": "scanner-7", "metrics": {"freshness": 0.1}},
        {"tenant": "hospital-a", "client_id": "scanner-7"},
    ]


def test_new_vocabulary_and_metric_drift_show_in_windows(project: Project) -> None:
    rng = np.random.default_rng(3)
    Monitor(project).run(flush=True)  # earlier tests' rows make their own window
    with serve_in_thread(create_app(project, background=False)) as url, httpx.Client(base_url=url) as client:
        for pool, freshness, seed in ((OLD_NOTES, 0.8, 10), (NEW_NOTES, 0.3, 11)):
            records = batch(300, pool, seed)
            sent = [{"freshness": float(np.clip(rng.normal(freshness, 0.05), 0, 1))} for _ in records]
            r = client.post("/predict", json={"records": records, "metrics": sent})
            assert r.status_code == 200, r.text
    Monitor(project).run(flush=True)
    windows = project.store.windows(project.name)[-2:]
    before, after = (w["metrics"] for w in windows)
    embedding_flags = [k for k, m in after.items() if k.startswith("drift.note.e") and m["flagged"]]
    assert not any(m["flagged"] for k, m in before.items() if k.startswith("drift.note.e"))
    assert embedding_flags, "new vocabulary moves the text embedding"
    assert before["metric.freshness"]["value"] == pytest.approx(0.8, abs=0.02)
    assert after["metric.freshness"]["value"] == pytest.approx(0.3, abs=0.02)
    assert before["metric.freshness"]["n"] == 300
    # the function metric has a reference (computed on held-out rows), so its drift is tested
    assert "drift.metric.margin" in before and 0 < before["metric.margin"]["value"] <= 1
    assert "drift.metric.freshness" not in before  # a sent metric has no reference values
    # and the window profile keeps the metric's histogram, mergeable like any column's
    profile = project.store.window_profiles(project.name)[-1]["profile"]["custom"]
    assert sum(profile["numeric"]["metric.freshness"]["hist"]) == 300
    # `driftloop drift` reports the span by merging those window profiles
    config = str(project.settings.root / "driftloop.toml")
    out = subprocess.run(
        ["driftloop", "drift", "--last", "1h", "-c", config], env=cli_env(), capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert "rows merged from the windows' profiles" in out.stdout and "note.e0" in out.stdout
    bad = subprocess.run(
        ["driftloop", "drift", "--last", "-5m", "-c", config], env=cli_env(), capture_output=True, text=True
    )
    assert bad.returncode == 2
    assert "'--last': must be a positive duration" in " ".join((bad.stdout + bad.stderr).split())


def test_bad_custom_settings_name_key_rule_and_value(tmp_path: Path) -> None:
    base = {
        "project": {"name": "m", "target": "y", "classes": ["a", "b"]},
        "features": {"x": {"type": "numeric"}},
        "data": {"train": "t.csv"},
        "trainer": {"entrypoint": "t:train"},
    }
    with pytest.raises(ConfigError, match=r"'metrics.freshness' setting .* needs 'min' and 'max'"):
        Settings.from_dict({**base, "metrics": {"freshness": {"max": 1}}}, root=tmp_path)
    with pytest.raises(ConfigError, match="custom metric names must be letters"):
        Settings.from_dict({**base, "metrics": {"bad name": {"min": 0, "max": 1}}}, root=tmp_path)
    with pytest.raises(ConfigError, match="'embedding' applies to text and image features only"):
        Settings.from_dict(
            {**base, "features": {"x": {"type": "numeric", "embedding": "m:f"}}}, root=tmp_path
        )
