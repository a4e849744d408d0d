"""Machine-readable everywhere: ``--json`` on the commands, the JSON read routes behind the
``read`` scope, and Prometheus gauges of the newest window, all from one set of views."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from html import escape
from pathlib import Path
from typing import Any

import httpx
import pytest

from driftloop import workflow
from driftloop.demo.scenario import serve_in_thread
from driftloop.monitor import Monitor
from driftloop.project import Project
from driftloop.serving import create_app
from driftloop.training import train

from .conftest import cli_env, make_project
from .helpers import browser_or_skip, chromium_on, html_problems, launch_chromium, send


@pytest.fixture(scope="module")
def monitored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    """A project with quiet and drifted windows, alerts, and one retrain run with its decision."""
    project = make_project(tmp_path_factory.mktemp("views"))
    train(project)
    send(project, 600, "A", seed=61, label_share=0.5)
    send(project, 900, "B", seed=62, label_share=0.8)
    Monitor(project).run()
    try:
        workflow.wait(workflow.start_retrain(project, "manual"))
    finally:
        workflow.shutdown()
    send(project, 600, "B", seed=63, label_share=0.5)  # windows against the new champion's reference
    Monitor(project).run()
    yield project
    project.close()


def _cli(project: Project, *args: str) -> object:
    config = str(project.settings.root / "driftloop.toml")
    done = subprocess.run(
        [sys.executable, "-m", "driftloop.cli", *args, "-c", config, "--json"],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)  # the whole output is one JSON document


def _rows_against_current_reference(project: Project) -> int:
    windows = project.store.windows(project.name, limit=100)
    return sum(w["n"] for w in windows if w["reference_id"] == windows[-1]["reference_id"])


def test_json_on_the_commands_matches_the_store(monitored: Project) -> None:
    store, name = monitored.store, monitored.name
    status = _cli(monitored, "status")
    assert isinstance(status, dict)
    assert status["champion"] == store.champion(name)
    assert [w["id"] for w in status["windows"]] == [w["id"] for w in store.windows(name, limit=10)]
    drifted = [w for w in status["windows"] if w["drifted"]]
    assert drifted, "concept B moves the income distribution"
    for w in drifted:
        assert all(w["drift"][f]["drifted"] for f in w["drifted"])
        assert w["metrics"]["drift_share"]["value"] == pytest.approx(len(w["drifted"]) / len(w["drift"]))
    assert [a["rule"] for a in status["alerts"]] == [a["rule"] for a in store.alerts(name, limit=10)]
    runs = _cli(monitored, "runs")
    assert isinstance(runs, list) and len(runs) == 1
    run = runs[0]
    assert run["status"] in ("promoted", "rejected") and run["decision"]["run_id"] == run["id"]
    assert {r["rule"] for r in run["decision"]["rules"]} >= {"min_eval_rows", "min_improvement"}
    one = _cli(monitored, "runs", run["id"])
    assert isinstance(one, dict) and [s["step"] for s in one["steps"]][:2] == ["plan", "snapshot"]
    datasets = _cli(monitored, "datasets", "list")
    assert isinstance(datasets, list)
    assert {d["id"] for d in datasets} == {d["id"] for d in store.datasets(name)}
    drift = _cli(monitored, "drift", "--last", "1d")
    assert isinstance(drift, dict)
    assert drift["rows"] == _rows_against_current_reference(monitored)
    assert set(drift["drifted"]) <= {c["column"] for c in drift["columns"]}


def test_read_routes_and_gauges(monitored: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLOOP_API_KEYS", "grafana:rd-1=read;app:pk-2=predict")
    reader, app_key = {"x-api-key": "rd-1"}, {"x-api-key": "pk-2"}
    store, name = monitored.store, monitored.name
    with (
        serve_in_thread(create_app(monitored, background=False, monitor=False)) as url,
        httpx.Client(base_url=url) as client,
    ):
        for route in ("/status", "/windows", "/alerts", "/runs", "/decisions", "/drift", "/metrics"):
            assert client.get(route, headers=app_key).status_code == 403, route
            assert client.get(route, headers=reader).status_code == 200, route
        assert client.post("/predict", json={"records": []}, headers=reader).status_code == 403
        windows = client.get("/windows", params={"limit": 2}, headers=reader).json()["windows"]
        newest = store.windows(name, limit=2)
        assert [w["id"] for w in windows] == [w["id"] for w in newest]
        for got, row in zip(windows, newest, strict=True):
            assert got["drifted"] == sorted(
                k.removeprefix("drift.")
                for k, m in row["metrics"].items()
                if k.startswith("drift.") and m["flagged"]
            )
        decisions = client.get("/decisions", headers=reader).json()["decisions"]
        assert [d["run_id"] for d in decisions] == [d["run_id"] for d in store.decisions(name)]
        alerts = client.get("/alerts", headers=reader).json()["alerts"]
        assert len(alerts) == len(store.alerts(name, limit=50))
        drift = client.get("/drift", params={"last": "7d"}, headers=reader).json()
        assert drift["report"]["rows"] == _rows_against_current_reference(monitored)
        bad = client.get("/drift", params={"last": "soon"}, headers=reader)
        assert bad.status_code == 422 and "'last'" in bad.json()["detail"], bad.text
        metrics = client.get("/metrics", headers=reader).text
    last = store.windows(name, limit=1)[0]
    accuracy = last["metrics"]["accuracy"]["value"]
    assert f'driftloop_window_metric{{model="{name}",metric="accuracy"}} {float(accuracy)!r}' in metrics
    assert f'driftloop_window_metric{{model="{name}",metric="estimated_accuracy"}}' in metrics
    flagged = [k for k, m in last["metrics"].items() if k.startswith("drift.") and m["flagged"]]
    features = [k for k in last["metrics"] if k.startswith("drift.")]
    share = len(flagged) / len(features)
    assert f'driftloop_window_drifted_feature_share{{model="{name}"}} {share:.6f}' in metrics
    for rule, n in store.alert_counts(name).items():
        assert f'driftloop_alerts_total{{model="{name}",rule="{rule}"}} {n}' in metrics
    assert store.alert_counts(name), "the drifted windows raised alerts"


def test_json_for_a_project_with_nothing_yet(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p")
    train(project)
    assert _cli(project, "drift") is None
    assert _cli(project, "runs") == []
    status = _cli(project, "status")
    assert isinstance(status, dict) and status["windows"] == [] and status["gate_optimism"] is None
    project.close()


def _report(project: Project, out: Path) -> str:
    config = str(project.settings.root / "driftloop.toml")
    done = subprocess.run(
        [sys.executable, "-m", "driftloop.cli", "report", "-c", config, "--out", str(out)],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Wrote" in done.stdout
    return out.read_text()


def test_the_report_is_one_offline_file_of_the_stored_views(monitored: Project, tmp_path: Path) -> None:
    html = _report(monitored, tmp_path / "report.html")
    assert html_problems(html) == []
    store, name = monitored.store, monitored.name
    # nothing is fetched: no script, style sheet, image or font from anywhere
    assert "<script" not in html and "<link" not in html and "@import" not in html and "url(" not in html
    assert re.findall(r"(?:src|href)=", html) == []
    assert set(re.findall(r"https?://[^\s\"'<>]+", html)) == {"http://www.w3.org/2000/svg"}  # a namespace
    assert html.count("<svg") == 3  # performance, drift heat map, confidence and prediction drift
    windows = store.windows(name, limit=1000)
    for w in windows:
        assert f"<td>#{w['id']}</td>" in html
    last = windows[-1]
    accuracy = last["metrics"]["accuracy"]["value"]
    assert f'<td class="num">{accuracy:.4f}</td>' in html
    decision = store.decisions(name)[-1]
    for rule in decision["rules"]:
        assert escape(rule["sentence"], quote=False) in html
    rows = next(r for r in decision["rules"] if r["metric"] == "rows")  # a count, not a score
    assert f'<td class="num">{int(rows["challenger"])}</td>' in html
    for a in store.alerts(name, limit=200):
        assert escape(a["message"], quote=False) in html
    flagged = sum(m["flagged"] for w in windows for k, m in w["metrics"].items() if k.startswith("drift."))
    assert html.count(" drifted</title></rect>") == flagged > 0
    assert "<td>" + escape(last["model_versions"][0]) in html


def test_the_report_renders_in_a_real_browser(monitored: Project, tmp_path: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("needs Chromium: apt-get install -y chromium (.ci/run installs it)")
    out = _report(monitored, tmp_path / "report.html")
    assert out
    run = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--dump-dom",
            (tmp_path / "report.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    dom = run.stdout
    assert dom.count("<svg") == 3 and "<polyline" in dom and "<rect" in dom
    shot = tmp_path / "report.png"
    subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--window-size=1000,2400",
            f"--screenshot={shot}",
            (tmp_path / "report.html").as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert shot.stat().st_size > 20_000  # a page with charts, not a blank one
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extra)")
    with sync_api.sync_playwright() as pw:  # from file:// with the network blocked: nothing is missed
        chromium = launch_chromium(pw, browser)
        page = chromium.new_page()
        blocked: list[str] = []

        def only_the_file(route: Any) -> None:
            if route.request.url.startswith("file:"):
                route.continue_()
            else:
                blocked.append(route.request.url)
                route.abort()

        page.route("**/*", only_the_file)
        page.goto((tmp_path / "report.html").as_uri())
        assert page.locator("svg.chart").count() == 3 and blocked == []
        page.screenshot(path=str(tmp_path / "report-offline.png"), full_page=True)
        chromium.close()


def test_the_dashboard_signs_in_with_a_key_in_a_real_browser(
    monitored: Project, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DRIFTLOOP_API_KEYS", "grafana:rd-1=read;app:pk-2=predict")
    with chromium_on(monitored) as (url, chromium):
        page = chromium.new_page()
        fetched: list[str] = []
        page.on("request", lambda r: fetched.append(r.url))
        page.goto(url + "/")
        assert page.url == url + "/login"  # no session: the sign-in form
        page.fill("#key", "not-a-key")
        page.click("button[type=submit]")
        assert "That key is not valid." in page.text_content("[role=alert]")  # type: ignore[operator]
        page.fill("#key", "pk-2")
        page.click("button[type=submit]")
        assert "needs 'read'" in page.text_content("[role=alert]")  # type: ignore[operator]
        page.fill("#key", "rd-1")
        page.keyboard.press("Enter")
        page.wait_for_selector("#user")
        assert page.url == url + "/" and page.text_content("#user") == "grafana"
        assert html_problems(page.request.get(url + "/").text()) == []  # as served, before repairs
        assert page.locator("svg.chart").count() == 3
        stored = {
            f"#{w['id']}": w["metrics"]["accuracy"]["value"]
            for w in monitored.store.windows(monitored.name, limit=1000)
            if (w["metrics"].get("accuracy") or {}).get("value") is not None
        }
        shown = {  # every point of the accuracy line is a stored window's value
            t.split(":")[0]: float(t.rsplit(" ", 1)[1])
            for t in page.locator("svg.chart circle title").all_text_contents()
            if "accuracy from feedback" in t
        }
        assert shown.keys() == stored.keys() and all(abs(shown[k] - stored[k]) < 1e-4 for k in stored)
        page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
        assert (
            page.locator("section[aria-label='retrain runs'] td").filter(has_text="min_eval_rows").count()
            == 1
        )
        cookie = next(c for c in page.context.cookies() if c["name"] == "driftloop_session")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and "rd-1" not in cookie["value"]
        assert all(u.startswith(url) for u in fetched), fetched  # nothing from the internet
        assert not any("rd-1" in u for u in fetched)  # the key never in a URL
        page.click("text=Sign out")
        assert page.url == url + "/login"
        page.goto(url + "/")
        assert page.url == url + "/login"
    with serve_in_thread(create_app(monitored, background=False, monitor=False)) as url:
        forged = httpx.get(
            url + "/", cookies={"driftloop_session": "grafana|9999999999|00"}, follow_redirects=False
        )
        assert forged.status_code == 303 and forged.headers["location"] == "/login"


def test_the_api_docs_page_works_offline_in_a_real_browser(monitored: Project) -> None:
    with chromium_on(monitored) as (url, chromium):
        page = chromium.new_page()
        fetched: list[str] = []
        errors: list[str] = []
        page.on("request", lambda r: fetched.append(r.url))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        response = page.goto(url + "/docs")
        assert (
            response is not None and "frame-ancestors 'none'" in response.headers["content-security-policy"]
        )
        page.wait_for_selector(".opblock-summary-path")
        paths = set(page.locator(".opblock-summary-path").all_text_contents())
        assert {"/predict", "/feedback", "/review/next", "/windows"} <= {
            p.replace("\u200b", "") for p in paths
        }
        assert fetched and all(u.startswith(url) for u in fetched), fetched  # no CDN
        assert errors == []  # nothing the page needs is refused by its policy


def test_a_heat_map_keeps_every_row_name_inside_the_chart_in_a_real_browser() -> None:
    """An extractor's rows are long (``field.patient_name.confidence``): each name gets the room
    it needs, and one too long for a third of the chart keeps its end, in full on hover."""
    from driftloop.ui.charts import heatmap

    browser, sync_api = browser_or_skip()
    for n in range(1, 46):  # every name that a third of the chart holds is shown whole
        assert "…" not in heatmap(["x" * n], ["#1"], [[0.5]], [[False]]), n
    names = ["age", "field.patient_name.confidence", "field.provider.presence", "embedding." + "x" * 80]
    svg = heatmap(names, ["#1", "#2"], [[0.2, 1.0]] * len(names), [[False, True]] * len(names))
    with sync_api.sync_playwright() as pw:
        chromium = launch_chromium(pw, browser)
        page = chromium.new_page(viewport={"width": 1000, "height": 600})
        style = "<style>body { font: 14px system-ui, sans-serif } svg .tick { font-size: 10px }</style>"
        page.set_content(f"{style}<body>{svg}</body>")  # the report's fonts
        boxes = page.evaluate(
            "n => [...document.querySelectorAll('svg > text')].slice(0, n)"
            ".map(t => { const b = t.getBBox(); return [t.textContent, b.x, b.x + b.width]; })",
            len(names),
        )
        chromium.close()
    for text, start, end in boxes:
        assert start >= 0 and end <= 880, f"{text!r} drawn from x={start:.1f} to {end:.1f}"
    assert [text for text, _, _ in boxes][:3] == names[:3]  # short enough: whole
    assert (
        boxes[3][0].startswith("…") and boxes[3][0].endswith("x" * 20) and names[3] in boxes[3][0]
    )  # the title


def test_the_gate_calibration_chart_shades_the_side_where_the_gate_promised_too_much() -> None:
    """In a real browser: a promotion that delivered less than the gate's estimate falls in the
    shaded half (below the line for a score, above it for an error), one that delivered more
    outside it; every label stays inside the chart."""
    from driftloop.ui.charts import calibration_chart

    browser, sync_api = browser_or_skip()
    points = [("run-over", 0.90, 0.84, 400), ("run-under", 0.80, 0.86, 40), ("run-exact", 0.85, 0.85, 90)]
    charts = {
        "score": calibration_chart(points, metric="accuracy"),
        "error": calibration_chart(points, metric="mae", lower_is_better=True),
    }
    found: dict[str, Any] = {}
    with sync_api.sync_playwright() as pw:
        chromium = launch_chromium(pw, browser)
        page = chromium.new_page(viewport={"width": 800, "height": 800})
        style = (  # the report's fonts
            "<style>body { font: 14px system-ui, sans-serif } svg .tick { font-size: 10px } "
            "svg .legend { font-size: 11px }</style>"
        )
        for kind, svg in charts.items():
            page.set_content(f"{style}<body>{svg}</body>")
            found[kind] = page.evaluate(
                """() => {
                  const svg = document.querySelector('svg'), shade = svg.querySelector('polygon');
                  const inside = [...svg.querySelectorAll('circle')].map(c => {
                    const p = svg.createSVGPoint(); p.x = c.cx.baseVal.value; p.y = c.cy.baseVal.value;
                    return [c.querySelector('title').textContent.split(':')[0], shade.isPointInFill(p)];
                  });
                  const width = svg.viewBox.baseVal.width;
                  const out = [...svg.querySelectorAll('text')].filter(t => {
                    const b = t.getBBox(); return b.x < 0 || b.x + b.width > width;
                  }).map(t => t.textContent);
                  return {inside, out};
                }"""
            )
        chromium.close()
    # run-exact sits on the line, the polygon's edge: which side it counts on is not asserted
    assert dict(found["score"]["inside"]) | {"run-exact": None} == {
        "run-over": True,
        "run-under": False,
        "run-exact": None,
    }
    # for an error the same numbers mean the opposite: 0.84 against a promised 0.90 is better
    assert dict(found["error"]["inside"]) | {"run-exact": None} == {
        "run-over": False,
        "run-under": True,
        "run-exact": None,
    }
    assert found["score"]["out"] == [] and found["error"]["out"] == [], found
