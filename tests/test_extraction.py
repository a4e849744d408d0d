"""Extraction on the task seam: a real token tagger served over HTTP, corrected field by field,
monitored per field with and without labels, retrained on a targeted set and gated per field
(the forms scenario end to end)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from rich.console import Console
from sqlalchemy import select

from driftloop import ConfigError, Settings, workflow
from driftloop.config import GateSettings
from driftloop.demo.forms import forms
from driftloop.demo.forms_scenario import correction, run_forms
from driftloop.demo.project import write_example
from driftloop.demo.scenario import serve_in_thread
from driftloop.gate import decide
from driftloop.monitor import Monitor
from driftloop.project import Project
from driftloop.serving import create_app
from driftloop.store import tables
from driftloop.tasks import Extraction
from driftloop.training import train

from .helpers import browser_or_skip, chromium_on, html_problems, sign_in


@pytest.fixture
def intake(tmp_path: Path) -> Iterator[Project]:
    config = write_example(tmp_path / "forms", template="forms", rows=600, window="100 rows")
    project = Project.load(config)
    train(project)
    yield project
    workflow.shutdown()
    project.close()


def test_an_extractor_is_served_corrected_field_by_field_and_monitored(intake: Project) -> None:
    df = forms(100, "B", seed=3)  # the new layout: dob, provider and amount are missed
    truth = [json.loads(f) for f in df["fields"]]
    with serve_in_thread(create_app(intake, background=False)) as url, httpx.Client(base_url=url) as client:
        r = client.post(
            "/predict", json={"records": df.drop(columns=["fields", "doc_type"]).to_dict(orient="records")}
        )
        assert r.status_code == 200, r.text
        served = r.json()["predictions"]
        first = served[0]
        assert set(first) == {"prediction_id", "fields", "confidence"}
        assert set(first["fields"]) == {"patient_name", "dob", "provider", "reference", "amount"}
        assert first["fields"]["patient_name"]["value"] == truth[0]["patient_name"]
        assert 0.0 <= first["fields"]["dob"]["confidence"] <= 1.0
        fixes = [
            {"prediction_id": p["prediction_id"], **correction(p["fields"], t)}
            for p, t in zip(served[:60], truth[:60], strict=True)
        ]
        assert fixes[0]["confirm"] == "rest" and "dob" in fixes[0]["fields"]  # a partial correction
        r = client.post("/feedback", json={"feedback": fixes})
        assert r.status_code == 200 and r.json()["accepted"] == 60, r.text
        pid = served[60]["prediction_id"]
        bad = {
            "label": ({"label": "x"}, "'label' is not a feedback key"),
            "field": ({"fields": {"ssn": "1"}}, "Every field must be one of"),
            "confirm": ({"confirm": "some"}, '\'confirm\' must be \\"all\\", \\"rest\\" or a list'),
            "both": ({"fields": {"dob": None}, "confirm": ["dob"]}, "corrected or confirmed, not both"),
            "empty": ({}, "a correction needs 'fields', 'confirm' or 'metrics'"),
        }
        for name, (body, message) in bad.items():
            r = client.post("/feedback", json={"prediction_id": pid, **body})
            assert r.status_code == 422 and message in r.text, (name, r.text)
    with intake.store.engine.connect() as conn:
        stored = [
            json.loads(f.label) for f in conn.execute(select(tables.feedback).order_by(tables.feedback.c.id))
        ]
    assert stored[0] == truth[0]  # the corrected fields plus the confirmed served ones
    Monitor(intake).run()
    window = intake.store.windows(intake.name, limit=1)[-1]["metrics"]
    assert window["f1.patient_name"]["value"] == 1.0 and window["f1.dob"]["value"] < 0.5
    assert window["f1.patient_name"]["n"] == 60
    assert window["presence.dob"]["value"] < 0.5 and window["presence.patient_name"]["value"] == 1.0
    assert window["drift.field.dob.presence"]["flagged"]  # seen without a single label
    assert not window["drift.field.patient_name.presence"]["flagged"]
    low, mid, high = (window[f"estimated_precision.patient_name{s}"]["value"] for s in ("_low", "", "_high"))
    assert low <= mid <= high
    fired = {a["rule"] for a in intake.store.alerts(intake.name, limit=10)}
    assert "dob-missing" in fired and "dob-f1-drop" not in fired  # that one waits for two windows
    from driftloop.ui import render_report

    page = render_report(intake)  # the per-field heat map, with its numbers
    assert html_problems(page) == []
    assert "Fields: F1 from corrections" in page and '<td class="num bad">0.000</td>' in page


def test_field_metrics_normalise_and_count_a_boundary_fix_as_partial() -> None:
    task = Extraction({"name": "text", "dob": "date", "amount": "amount"})
    truth = [
        '{"amount": null, "dob": "1990-03-12", "name": "Ana Ruiz"}',
        '{"amount": "1,200.00", "dob": "02/01/1980", "name": "Ben Okafor"}',
    ]
    made = [
        '{"amount": "5.00", "dob": "12 March 1990", "name": "ana ruiz"}',  # spurious amount; dob, name right
        '{"amount": "EUR 1200", "dob": null, "name": "Ben"}',  # amount right; dob missed; name partial
    ]
    m = task.metrics(truth, made)
    assert m["f1.dob"] == pytest.approx(2 / 3) and m["recall.dob"] == 0.5 and m["precision.dob"] == 1.0
    assert m["f1.amount"] == pytest.approx(2 / 3) and m["precision.amount"] == 0.5
    assert m["f1.name"] == pytest.approx(0.75) and m["exact_f1.name"] == 0.0
    assert m["doc_exact_match"] == 0.0
    assert list(task.strata(truth, made)) == ["field:amount", "field:dob"]
    assert task.corrected(truth, [truth[0], made[1]]).tolist() == [False, True]
    assert (
        task.label_error({"ssn": "1"})
        == "Every field must be one of ['amount', 'dob', 'name']. Got ['ssn'] instead."
    )


def test_the_gate_judges_every_field() -> None:
    policy = GateSettings(
        primary_metric="f1_micro", min_value={"f1.dob": 0.8}, max_field_regression=0.05, min_eval_rows=10
    )
    champion = {"f1_micro": 0.80, "f1.dob": 0.90, "f1.name": 0.95}
    better_but_forgets_names = {"f1_micro": 0.85, "f1.dob": 0.99, "f1.name": 0.85}
    d = decide(policy, champion, better_but_forgets_names, n=100)
    assert not d.accepted
    assert d.reasons == ["Field name lost 0.1000 F1 (0.9500 -> 0.8500), more than the tolerated 0.0500."]


def test_extraction_settings_are_checked(tmp_path: Path) -> None:
    base = {
        "project": {"name": "x", "task": "extraction", "target": "fields"},
        "features": {"text": {"type": "text"}},
        "data": {"train": "t.csv"},
        "trainer": {"entrypoint": "m:f"},
    }
    with pytest.raises(ConfigError, match="an extraction project needs"):
        Settings.from_dict(base, root=tmp_path)
    with pytest.raises(ConfigError, match="'date', 'amount' or 'identifier'|literal_error|Input should be"):
        Settings.from_dict({**base, "fields": {"dob": {"type": "when"}}}, root=tmp_path)
    ok = Settings.from_dict(
        {
            **base,
            "fields": {"dob": {"type": "date"}},
            "alerts": [{"name": "a", "metric": "presence.dob", "threshold": 0.9}],
        },
        root=tmp_path,
    )
    assert "estimated_precision.dob_low" in ok.window_metrics()


def test_the_forms_scenario_loses_fields_catches_a_careless_reviewer_and_refuses_a_blind_candidate(
    tmp_path: Path,
) -> None:
    result = run_forms(
        tmp_path / "run", windows=6, drift_at=2, window_rows=100, train_rows=400, console=Console(quiet=True)
    )
    before, after, repaired = result.f1["f1.dob"]
    assert before > 0.9 > 0.5 > after and repaired > 0.9, result.summary
    assert min(result.f1["f1.patient_name"]) > 0.9, result.summary  # unchanged by the new layout
    assert result.promoted >= 1 and result.rejected >= 1, result.summary
    project = Project.load(tmp_path / "run" / "driftloop.toml")
    try:
        runs = project.store.runs(project.name)
        promoted = next(r for r in runs if r["status"] == "promoted")
        reasons = " ".join(project.store.decision(promoted["id"])["reasons"])
        assert "The challenger's f1.dob" in reasons and "The largest field regression" in reasons
        manifests = [d["manifest"] for d in project.store.datasets(project.name) if d["kind"] == "train"]
        most = max(manifests, key=lambda m: m.get("sampling", {}).get("feedback", {}).get("corrected", -1))
        sampling = most["sampling"]
        errors = sampling["error_rate_by_class"]  # 1 - F1 of each field on the lookback's corrections
        assert errors["field:dob"] > 0.1 and errors["field:patient_name"] == 0.0, sampling  # the broken field
        weights, rows = sampling["weights"]["by_class"], sampling["rows_by_class"]
        worst = max((k for k in errors if k.startswith("field:")), key=lambda k: errors[k])
        assert worst in ("field:dob", "field:provider", "field:amount") and rows[worst] > 0, sampling
        per_row = {k: weights[k] / rows[k] for k in (worst, "confirmed")}
        assert per_row[worst] > per_row["confirmed"], sampling  # the weakest field's documents weigh more
        assert sampling["feedback"]["corrected_kept"] > 0 and "confirmed_kept" in sampling["feedback"]
        blind = next(r for r in runs if r["trigger"] == "manual:forgets-dob")
        decision = project.store.decision(blind["id"])
        assert blind["status"] == "rejected"
        # whatever else it fails (over the backtest's folds it is not 0.01 better overall), the
        # floor of the critical field refuses it
        assert "The challenger's f1.dob 0.0000 is below the floor 0.8000." in decision["reasons"]
        floor = next(r for r in decision["rules"] if r["rule"] == "min_value" and r["metric"] == "f1.dob")
        assert not floor["passed"] and floor["challenger"] == 0.0
        assert result.quarantined == ["temp"] and "temp" in project.store.quarantined(project.name)
        # the document classifier in the same store: its own windows, labels and accuracy
        assert min(result.doc_type_accuracy) > 0.9, result.summary
        typed = project.store.windows("doc-types", limit=20)
        assert len(typed) >= 6 and typed[-1]["metrics"]["accuracy"]["value"] > 0.9
        extracted = project.store.windows(project.name, limit=20)
        assert extracted and not {w["id"] for w in typed} & {w["id"] for w in extracted}
    finally:
        project.close()
    assert (tmp_path / "run" / "summary.txt").read_text().startswith("f1_micro")


def test_fields_are_corrected_inline_on_the_review_page_in_a_real_browser(
    intake: Project, monkeypatch: pytest.MonkeyPatch
) -> None:

    from driftloop import review

    browser_or_skip()  # before the set-up
    df = forms(40, "B", seed=11)
    truth = {}
    monkeypatch.setenv("DRIFTLOOP_API_KEYS", "cleo:kc=review;ops:ko=predict")
    with chromium_on(intake) as (url, chromium):
        r = httpx.post(
            url + "/predict",
            json={"records": df.drop(columns=["fields", "doc_type"]).to_dict(orient="records")},
            headers={"Authorization": "Bearer ko"},
        )
        assert r.status_code == 200, r.text
        for p, fields in zip(r.json()["predictions"], df["fields"], strict=True):
            truth[p["prediction_id"]] = (p, json.loads(fields))
        assert review.fill(intake)  # the least sure field ranks a document for review
        page = chromium.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        sign_in(page, url, "kc")
        page.wait_for_selector("#extraction:not([hidden])")
        assert html_problems(page.request.get(url + "/review").text()) == []  # as served
        item = int(page.text_content("#item-id").lstrip("#"))  # type: ignore[union-attr]
        with intake.store.engine.connect() as conn:
            pid = conn.execute(
                select(tables.review_items.c.prediction_id).where(tables.review_items.c.id == item)
            ).scalar_one()
        served, true = truth[pid]
        marked = page.locator("#document mark").all_text_contents()
        assert any(true["patient_name"] in m for m in marked)  # the served name is highlighted
        assert page.input_value("#field-patient_name") == served["fields"]["patient_name"]["value"]
        assert page.is_hidden("#labels")  # the fields are the answer here, numbered 1-9
        page.screenshot(path=str(intake.settings.root / "review-extraction.png"), full_page=True)
        page.keyboard.press("2")  # the second field (dob): typing goes into it
        page.keyboard.type(true["dob"])
        page.keyboard.press("Enter")
        page.wait_for_selector("text=Saved")
        assert "corrected dob, confirmed the rest" in page.text_content("#status")  # type: ignore[operator]
        with intake.store.engine.connect() as conn:
            labels = [(f.source, json.loads(f.label)) for f in conn.execute(select(tables.feedback))]
        expected = {f: v["value"] for f, v in served["fields"].items()} | {"dob": true["dob"]}
        assert labels == [("cleo", expected)]
        assert errors == []
