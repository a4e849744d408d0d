"""The review queue: strategies and budget, answers as feedback from the reviewer's key, hidden
answers on overlap items, undo, expiry, and reviewer agreement."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from driftloop import review, workflow
from driftloop.agreement import agreement
from driftloop.demo.data import applicants
from driftloop.demo.scenario import serve_in_thread
from driftloop.project import Project
from driftloop.serving import create_app
from driftloop.training import train

from .conftest import cli_env, make_project
from .helpers import browser_or_skip, chromium_on, html_problems, send, sign_in, wait_for_text


def _project(folder: Path, review_settings: str, feedback: str = "") -> Project:
    make_project(folder)
    config = folder / "driftloop.toml"
    config.write_text(config.read_text() + f"\n[review]\n{review_settings}" + feedback)
    project = Project.load(config)
    train(project)
    return project


def test_the_queue_mixes_strategies_within_the_budget_and_expires(tmp_path: Path) -> None:
    project = _project(
        tmp_path / "p",
        'daily_budget = 40\nstrategies = { uncertain = 0.5, audit = 0.5 }\nexpire_after = "1h"\n',
    )
    ids = send(project, 400, "A", seed=71, label_share=0.25)  # about 100 labelled: never queued
    added = review.fill(project)
    assert added == {"uncertain": 20, "audit": 20}
    assert review.fill(project) == {}, "the day's budget is spent"
    labelled = {r["prediction_id"] for r in project.store.labelled(project.name)}
    with project.store.engine.connect() as conn:
        from sqlalchemy import select

        from driftloop.store import tables as t

        items = conn.execute(select(t.review_items)).mappings().all()
    assert len(items) == 40 and not {i["prediction_id"] for i in items} & labelled
    unlabelled = [project.store.prediction(pid) for pid in ids if pid not in labelled]
    least = sorted(unlabelled, key=lambda p: p["confidence"])[:20]  # type: ignore[index]
    chosen = {i["prediction_id"] for i in items if i["strategy"] == "uncertain"}
    assert chosen == {p["prediction_id"] for p in least}  # type: ignore[index]
    first = review.next_item(project, "anna")
    assert first is not None and first["strategy"] in ("uncertain", "audit")
    assert first["prediction"]["inputs"] and first["labels"] == list(project.task.classes or [])
    later = first["expires_at"] + 1
    assert review.next_item(project, "anna", now=later) is None, "an expired item leaves the queue"
    with pytest.raises(Exception, match="expired"):
        review.answer(project, first["item_id"], "anna", "yes", now=later)
    project.close()


def test_reviewers_answer_over_http_as_their_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = _project(tmp_path / "p", "daily_budget = 30\noverlap = 1.0\n")
    send(project, 200, "A", seed=72)
    monkeypatch.setenv("DRIFTLOOP_API_KEYS", "anna:ka=review;ben:kb=review;grafana:kg=read;app:kp=predict")
    anna, ben = {"x-api-key": "ka"}, {"x-api-key": "kb"}
    with (
        serve_in_thread(create_app(project, background=False, monitor=False)) as url,
        httpx.Client(base_url=url) as c,
    ):
        assert c.get("/review/next", headers={"x-api-key": "kp"}).status_code == 403
        got = c.get("/review/next", headers=anna).json()
        assert got["reviewer"] == "anna" and got["item"]["overlap"] is True
        item = got["item"]
        bad = c.post(f"/review/{item['item_id']}", json={"label": "maybe"}, headers=anna)
        assert (
            bad.status_code == 422 and "'label'" in bad.json()["detail"] and "maybe" in bad.json()["detail"]
        )
        done = c.post(f"/review/{item['item_id']}", json={"label": "yes"}, headers=anna).json()
        assert done["others"] == []
        again = c.post(f"/review/{item['item_id']}", json={"label": "no"}, headers=anna)
        assert again.status_code == 409 and "undo it first" in again.json()["detail"]
        feedback = project.store.resolved_labels(project.name)[0]
        assert [(r["prediction_id"], r["label"]) for r in feedback] == [
            (item["prediction"]["prediction_id"], "yes")
        ]
        # ben gets the same overlap item without anna's answer, and sees it once he has answered
        theirs = c.get("/review/next", headers=ben).json()["item"]
        assert theirs["item_id"] == item["item_id"] and "yes" not in str(theirs["progress"])
        seen = c.post(f"/review/{item['item_id']}", json={"label": "no"}, headers=ben).json()
        assert seen["others"] == [{"reviewer": "anna", "label": "yes"}]
        # the item has its two labels: neither gets it again
        assert c.get("/review/next", headers=anna).json()["item"]["item_id"] != item["item_id"]
        # skip, then undo: the item comes back; undoing a label deletes its feedback row
        other = c.get("/review/next", headers=ben).json()["item"]
        assert c.post(f"/review/{other['item_id']}/skip", headers=ben).status_code == 200
        assert c.get("/review/next", headers=ben).json()["item"]["item_id"] != other["item_id"]
        assert c.post("/review/undo", headers=ben).json()["action"] == "skip"
        assert c.get("/review/next", headers=ben).json()["item"]["item_id"] == other["item_id"]
        assert c.post("/review/undo", headers=ben).json() == {
            "item_id": item["item_id"],
            "action": "label",
            "label": "no",
        }
        assert {r["source"] for r in _feedback_rows(project)} == {"anna"}
        assert c.post("/review/undo", headers=ben).status_code == 409
        state = c.get("/review/queue", headers={"x-api-key": "kg"}).json()
        assert state["open"] == 30 and state["answered_today"] == 1
        assert (
            c.get("/review/agreement", headers={"x-api-key": "kg"}).json()["reviewers"][0]["reviewer"]
            == "anna"
        )
    project.close()


def _feedback_rows(project: Project) -> list[dict[str, object]]:
    from sqlalchemy import select

    from driftloop.store import tables as t

    with project.store.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(t.feedback)).mappings()]


def test_agreement_flags_a_reviewer_who_disagrees(tmp_path: Path) -> None:
    project = _project(
        tmp_path / "p",
        "daily_budget = 40\noverlap = 1.0\nmin_overlap_items = 10\nmin_agreement = 0.6\nquarantine = true\n",
        '\n[feedback]\ntrusted_sources = ["truth"]\n',
    )
    ids = send(project, 300, "A", seed=73)
    truth = dict(zip(ids, applicants(300, "A", seed=73)["approved"], strict=True))
    flip = {"yes": "no", "no": "yes"}
    review.fill(project)
    for reviewer, n, honest in (("anna", 40, True), ("ben", 20, True), ("carl", 20, False)):
        for _ in range(n):
            item = review.next_item(project, reviewer)
            assert item is not None, reviewer
            right = truth[item["prediction"]["prediction_id"]]
            review.answer(project, item["item_id"], reviewer, right if honest else flip[right])
    reviewed = {r["prediction_id"] for r in _feedback_rows(project)}
    project.store.add_feedback([{"prediction_id": p, "label": truth[p], "source": "truth"} for p in reviewed])
    result = {r["reviewer"]: r for r in agreement(project)["reviewers"]}
    assert result["ben"]["kappa"] == 1.0 and result["ben"]["agreed"] == 1.0 and not result["ben"]["flagged"]
    assert result["carl"]["agreed"] == 0.0 and result["carl"]["kappa"] < 0 and result["carl"]["flagged"]
    assert result["anna"]["overlap_items"] == 40 and result["anna"]["agreed"] == 0.5
    assert not result["anna"]["flagged"], "half her partners were careless: the trusted labels clear her"
    assert [result[r]["agreed_with_confirmed"] for r in ("anna", "ben", "carl")] == [1.0, 1.0, 0.0]
    # quarantine: the next monitoring pass stops using the flagged reviewers' labels, and says so
    carl = {r["prediction_id"] for r in _feedback_rows(project) if r["source"] == "carl"}
    resolved = {r["prediction_id"]: r["label"] for r in project.store.resolved_labels(project.name)[0]}
    assert all(resolved[p] == truth[p] for p in carl)  # truth came last: the latest wins
    project.store.add_feedback(
        [{"prediction_id": p, "label": flip[truth[p]], "source": "carl"} for p in carl]
    )
    workflow.monitor_and_trigger(project)
    assert "carl" in project.store.quarantined(project.name) and "ben" not in project.store.quarantined(
        project.name
    )
    assert any("Reviewer 'carl' is quarantined" in a["message"] for a in project.store.alerts(project.name))
    resolved = {r["prediction_id"]: r["label"] for r in project.store.resolved_labels(project.name)[0]}
    assert all(resolved[p] == truth[p] for p in carl), "carl's later labels are not used"
    config = str(project.settings.root / "driftloop.toml")
    listed = subprocess.run(
        [sys.executable, "-m", "driftloop.cli", "reviewers", "-c", config, "--json"],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert listed.returncode == 0, listed.stderr
    assert {r["reviewer"]: r["quarantined"] for r in json.loads(listed.stdout)["reviewers"]}["carl"] is True
    released = subprocess.run(
        [sys.executable, "-m", "driftloop.cli", "reviewers", "-c", config, "--release", "carl"],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert released.returncode == 0 and "used again" in released.stdout, released.stdout + released.stderr
    assert project.store.quarantined(project.name) == {}
    project.close()


def test_the_review_page_is_keyboard_first_in_a_real_browser(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    browser_or_skip()  # before the set-up
    project = _project(tmp_path / "p", "daily_budget = 10\noverlap = 0.0\n")
    send(project, 100, "A", seed=74)
    monkeypatch.setenv("DRIFTLOOP_API_KEYS", "anna:ka=review;grafana:kg=read")
    classes = list(project.task.classes or [])
    with chromium_on(project) as (url, chromium):
        page = chromium.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url + "/review")
        assert page.url == url + "/login"
        page.fill("#key", "ka")
        page.keyboard.press("Enter")
        page.wait_for_selector("#item:not([hidden])")
        assert page.url == url + "/review"  # a reviewer's key lands on the review page
        for path in ("/review", "/login"):  # as served, before the browser repairs anything
            assert html_problems(page.request.get(url + path).text()) == [], path
        assert page.locator("#labels button").all_text_contents() == [
            f"{i + 1}{c}" for i, c in enumerate(classes)
        ]
        assert page.locator("#inputs th").count() == len(project.settings.features)
        first = page.text_content("#item-id")
        page.keyboard.press("Enter")  # nothing chosen yet: a clear message, nothing stored
        page.wait_for_selector("#status.error")
        assert "Choose a label first" in page.text_content("#status")  # type: ignore[operator]
        page.keyboard.press("2")
        assert page.get_attribute("#labels button:nth-child(2)", "aria-pressed") == "true"
        page.keyboard.press("Enter")
        wait_for_text(page, "#item-id", first, changed=True)
        assert f": {classes[1]}" in page.text_content("#status")  # type: ignore[operator]
        assert [(r["source"], r["label"]) for r in _feedback_rows(project)] == [("anna", classes[1])]
        from driftloop.monitor import Monitor

        Monitor(project).run(flush=True)  # the label the page sent reaches the monitor's window
        assert project.store.windows(project.name, limit=1)[-1]["metrics"]["labelled"]["n"] == 1
        page.screenshot(path=str(tmp_path / "review.png"), full_page=True)
        assert "1 answered today" in page.text_content("#progress")  # type: ignore[operator]
        second = page.text_content("#item-id")
        page.keyboard.press(" ")  # skip
        wait_for_text(page, "#item-id", second, changed=True)
        page.keyboard.press("z")  # undo the skip: the skipped item is back
        wait_for_text(page, "#item-id", second)
        page.keyboard.press("z")  # undo the label: its feedback row is gone
        wait_for_text(page, "#item-id", first)
        assert _feedback_rows(project) == []
        assert page.is_hidden("#help")
        page.keyboard.press("?")
        assert page.is_visible("#help")
        assert errors == []
    project.close()


def test_pages_run_only_their_own_script_and_refuse_to_be_framed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Script injected into a page (say, through text a model produced) does not run: only the
    script the server rendered the page with, by its nonce. No page loads inside another site's
    frame, where its buttons could be overlaid. Nothing a page asks for is missing (its icon is
    inline)."""
    browser_or_skip()  # before the set-up
    project = _project(tmp_path / "p", "daily_budget = 10\noverlap = 0.0\n")
    send(project, 100, "A", seed=75)
    monkeypatch.setenv("DRIFTLOOP_API_KEYS", "anna:ka=review+read")
    with chromium_on(project) as (url, chromium):
        page = chromium.new_page()
        failed: list[str] = []
        page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
        page.on("requestfailed", lambda r: failed.append(f"failed {r.url}"))
        page.on("console", lambda m: failed.append(m.text) if m.type == "error" else None)
        sign_in(page, url, "ka")
        page.wait_for_url(url + "/")  # a key that may read lands on the dashboard
        page.goto(url + "/review")
        page.wait_for_selector("#item:not([hidden])")  # the page's own script ran
        scripts = []
        for path in ("/login", "/", "/review", "/review"):
            headers = page.request.get(url + path).headers
            policy = headers["content-security-policy"]
            assert "frame-ancestors 'none'" in policy and headers["x-frame-options"] == "DENY", path
            scripts.append(policy.split("script-src ")[1].split(";")[0])
        assert scripts[:2] == ["'none'", "'none'"], scripts  # no script on the sign-in page and dashboard
        assert all(s.startswith("'nonce-") for s in scripts[2:]) and scripts[2] != scripts[3]  # fresh nonces
        ran = page.evaluate(
            """() => { const s = document.createElement("script"); s.textContent = "window.injected = 1";
                       document.body.append(s); return window.injected === 1; }"""
        )
        assert ran is False, "an injected script ran"
        failed.clear()  # the browser reported the refused script
        for path in ("/login", "/", "/review"):
            page.goto(url + path)
            page.wait_for_load_state("load")
            icon = page.locator("link[rel=icon]").get_attribute("href") or ""
            assert icon.startswith("data:image/svg+xml,"), (path, icon)  # not a request for /favicon.ico
        assert failed == []
        frame_host = chromium.new_page()
        frame_host.set_content(f'<iframe src="{url}/login" width="400" height="300"></iframe>')
        frame_host.wait_for_timeout(500)
        framed = frame_host.frames[1]
        assert framed.query_selector("#key") is None, "the sign-in page loaded inside a frame"
    project.close()


def _with_unusual_incomes(folder: Path) -> tuple[Project, set[str]]:
    """300 ordinary applicants, then 5 with incomes far beyond anything the reference saw; the
    queue takes only unusual inputs. Returns the project and the 5 prediction ids."""
    project = _project(folder, "daily_budget = 5\nstrategies = { unusual = 1.0 }\n")
    send(project, 300, "A", seed=75)
    odd = applicants(5, "A", seed=76).drop(columns="approved")
    odd["income"] = odd["income"] * 40
    with serve_in_thread(create_app(project, background=False)) as url, httpx.Client(base_url=url) as c:
        made = c.post("/predict", json={"records": odd.to_dict(orient="records")})
        assert made.status_code == 200, made.text
    return project, {p["prediction_id"] for p in made.json()["predictions"]}


def test_unusual_inputs_are_queued_by_their_rarity_against_the_reference(tmp_path: Path) -> None:
    project, unusual = _with_unusual_incomes(tmp_path / "p")
    assert review.fill(project) == {"unusual": 5}
    with project.store.engine.connect() as conn:
        from sqlalchemy import select

        from driftloop.store import tables as t

        queued = {r.prediction_id for r in conn.execute(select(t.review_items.c.prediction_id))}
    assert queued == unusual
    item = review.next_item(project, "anna")  # says which input made it unusual, and how rare
    assert item is not None and item["strategy"] == "unusual"
    rare = item["unusual_inputs"]
    assert rare[0]["feature"] == "income" and rare[0]["measure"] is None and rare[0]["share"] < 0.01, rare
    assert all(r["share"] < review.RARE_SHARE for r in rare) and len(rare) <= 3
    project.close()


def test_the_review_page_marks_what_made_an_item_unusual_in_a_real_browser(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    browser_or_skip()  # before the set-up
    project, _ = _with_unusual_incomes(tmp_path / "p")
    review.fill(project)
    monkeypatch.setenv("DRIFTLOOP_API_KEYS", "anna:ka=review")
    with chromium_on(project) as (url, chromium):
        page = chromium.new_page()
        sign_in(page, url, "ka")
        page.wait_for_selector("#item:not([hidden])")
        assert page.text_content("#strategy") == "its inputs are unusual"
        assert page.locator("#inputs tr.unusual th").all_text_contents() == ["income"]
        note = page.text_content("#inputs tr.unusual .rare") or ""
        assert "seen in" in note and "of the reference" in note, note
    project.close()
