"""Regression tests for the holes a hostile client, a careless user and a crash found (issue 11).

Each test names the item it covers. Everything is real: uvicorn on 127.0.0.1, SQLite, a local
MLflow store, DBOS, subprocesses killed with real signals.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import httpx
import pandas as pd
import pytest

from driftloop import ConfigError, RegistryError, Settings, TrainerError, workflow
from driftloop.alerts import SlackSink, WebhookSink, notify
from driftloop.config import GateSettings
from driftloop.demo.data import applicants
from driftloop.demo.scenario import free_port, serve_in_thread
from driftloop.gate import decide
from driftloop.monitor import Monitor
from driftloop.project import Project
from driftloop.serving import create_app
from driftloop.serving.logproc import _FRAME
from driftloop.serving.writer import LogBatch
from driftloop.store import Store
from driftloop.training import train

from .conftest import ROOT, cli_env, make_project
from .helpers import send, serve_subprocess, with_serving
from .test_serving import GOOD


def _edit(project: Project, old: str, new: str) -> Project:
    path = project.settings.root / "driftloop.toml"
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new))
    project.close()
    return Project.load(path)


def _driftloop(*args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "driftloop.cli", *args],
        env=cli_env(**env),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )


class _Evil:
    """A pickle that runs code when loaded: it creates the folder named by ``marker``."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.makedirs, (self.marker,))


def _artifact_path(project: Project, version: str) -> Path:
    client = project.registry.client
    run = client.get_run(client.get_model_version(project.name, version).run_id)
    return Path(run.info.artifact_uri.removeprefix("file://")) / "model" / "model.pkl"


# -- 1: the digest serving trusts is not writable through the registry ------------------------------
def test_item1_replaced_artifact_with_rewritten_tag_is_refused(fresh: Project, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    blob = pickle.dumps(_Evil(str(marker)))
    _artifact_path(fresh, "1").write_bytes(blob)
    # the attacker can write the registry: the sha256 tag now matches the malicious artifact
    fresh.registry.set_tag(fresh.name, "1", "driftloop.sha256", hashlib.sha256(blob).hexdigest())
    again = Project.load(fresh.settings.root / "driftloop.toml")
    with pytest.raises(RegistryError, match="does not match the sha256 driftloop recorded"):
        again.registry.load(fresh.name, "1")
    assert not marker.exists(), "nothing was unpickled"
    again.close()


def test_item1_signed_digests_resist_a_writer_of_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DRIFTLOOP_MODEL_KEY", "model-signing-secret")
    project = make_project(tmp_path / "p")
    train(project)
    assert project.store.artifact(project.name, "1")["signature"]
    marker = tmp_path / "pwned"
    blob = pickle.dumps(_Evil(str(marker)))
    _artifact_path(project, "1").write_bytes(blob)
    with project.store.begin() as conn:  # the attacker can write the store too, but has no key
        conn.exec_driver_sql(
            "UPDATE model_artifacts SET sha256 = ? WHERE version = '1'", (hashlib.sha256(blob).hexdigest(),)
        )
    fresh_project = Project.load(project.settings.root / "driftloop.toml")
    with pytest.raises(RegistryError, match="not signed by DRIFTLOOP_MODEL_KEY"):
        fresh_project.registry.load(project.name, "1")
    assert not marker.exists()
    fresh_project.close()
    project.close()


def test_item1_unsigned_versions_are_refused_until_signed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DRIFTLOOP_MODEL_KEY", raising=False)
    project = make_project(tmp_path / "p")
    train(project)
    config = str(project.settings.root / "driftloop.toml")
    monkeypatch.setenv("DRIFTLOOP_MODEL_KEY", "turned-on-later")
    later = Project.load(config)
    with pytest.raises(RegistryError, match="registered without DRIFTLOOP_MODEL_KEY"):
        later.registry.load(later.name, "1")
    signed = _driftloop("sign", "-c", config, DRIFTLOOP_MODEL_KEY="turned-on-later")
    assert signed.returncode == 0 and "1 version(s)" in signed.stdout, signed.stdout + signed.stderr
    assert Project.load(config).registry.load(later.name, "1") is not None
    later.close()
    project.close()


def test_item1_a_refused_champion_is_an_alert_and_the_server_keeps_its_model(fresh: Project) -> None:
    send(fresh, 60, "A", seed=3)
    blob = pickle.dumps({"not": "a model"})
    with serve_in_thread(create_app(fresh, background=True)) as url, httpx.Client(base_url=url) as client:
        # a second, genuine version (rejected by the gate, so the champion stays 1) ...
        v2 = workflow.wait(workflow.start_retrain(fresh, "manual", trainer="trainer:careless"))[
            "challenger_version"
        ]
        assert v2 is not None
        _artifact_path(fresh, v2).write_bytes(blob)  # ... whose artifact is then replaced
        fresh.registry._cache.clear()
        fresh.registry.set_alias(fresh.name, "champion", v2)
        deadline = time.time() + 20
        while time.time() < deadline and not fresh.store.alerts(fresh.name, rule="model-refused"):
            time.sleep(0.1)
        assert client.post("/predict", json=GOOD).json()["model_version"] == "1"
    (alert,) = fresh.store.alerts(fresh.name, rule="model-refused")
    assert f"version {v2}" in alert["message"] and "still serving 1" in alert["message"]


# -- 2: a label's source is the key that sent it --------------------------------------------------
def test_item2_sources_are_key_names_and_quarantine_is_normalised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = make_project(tmp_path / "p")
    project = _edit(
        project,
        "[gate]",
        '[feedback]\nconflict_rule = "trusted"\ntrusted_sources = ["Anna"]\n'
        'quarantined_sources = [" SPAMMER "]\n\n[gate]',
    )
    train(project)
    monkeypatch.setenv("DRIFTLOOP_API_KEYS", "anna:k-anna=predict+feedback;spammer:k-spam=feedback")
    with serve_in_thread(create_app(project, background=False)) as url, httpx.Client(base_url=url) as client:
        anna = {"Authorization": "Bearer k-anna"}
        pid = client.post("/predict", json=GOOD, headers=anna).json()["predictions"][0]["prediction_id"]
        assert (
            client.post(
                "/feedback", json={"prediction_id": pid, "label": "no", "source": "phone"}, headers=anna
            ).status_code
            == 200
        )
        for claimed in ("anna", "Anna ", "reviewer", "spammer "):  # the spammer claims other names
            r = client.post(
                "/feedback",
                json={"prediction_id": pid, "label": "yes", "source": claimed},
                headers={"Authorization": "Bearer k-spam"},
            )
            assert r.status_code == 200, r.text
    with project.store.engine.connect() as conn:
        sources = [row[0] for row in conn.exec_driver_sql("SELECT source FROM feedback ORDER BY id")]
    assert sources == ["anna/phone", "spammer/anna", "spammer/anna", "spammer/reviewer", "spammer"]
    labels, stats = project.store.resolved_labels(project.name, policy=project.settings.feedback)
    assert [r["label"] for r in labels] == ["no"], "every spoofed label is quarantined"
    assert stats["quarantined"] == 4
    project.close()


# -- 3: no value of a pii field is written in clear; stored errors are bounded --------------------
def test_item3_pii_values_never_reach_errors_logs_or_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("DRIFTLOOP_PII_KEY", "pii-secret")
    project = make_project(tmp_path / "p")
    project = _edit(
        project,
        '[features.purpose]\ntype = "categorical"',
        '[features.purpose]\ntype = "categorical"\npii = "hash"',
    )
    project = _edit(
        project, '[features.age]\ntype = "numeric"', '[features.age]\ntype = "numeric"\npii = "drop"'
    )
    train(project)
    project = with_serving(project, invalid_retention_rows=60)
    secret, other = "yacht-of-jane.doe@example.com", "A" * 4_000_000
    caplog.set_level(logging.DEBUG)
    with serve_in_thread(create_app(project, background=False)) as url, httpx.Client(base_url=url) as client:
        r = client.post("/predict", json={**GOOD, "purpose": secret, "age": {"dob": secret}})
        assert r.status_code == 422 and secret not in r.text
        assert "pii feature 'purpose' (not shown)" in r.text and "pii feature 'age'" in r.text
        big = client.post("/predict", json={**GOOD, "employment": other})
        assert big.status_code == 422 and len(big.content) < 5000
        for _ in range(130):  # the table stays bounded
            client.post("/predict", json={**GOOD, "income": -1})
    with project.store.engine.connect() as conn:
        rows = [json.loads(r[0]) for r in conn.exec_driver_sql("SELECT errors FROM invalid_requests")]
    assert 0 < len(rows) <= 110
    assert all(len(json.dumps(e)) < 5000 for e in rows)
    database = b"".join(p.read_bytes() for p in project.settings.state_dir.glob("driftloop.db*"))
    assert secret.encode() not in database
    assert not any(secret in record.getMessage() for record in caplog.records)
    project.close()


def test_item3_a_model_error_quoting_a_pii_value_is_scrubbed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("DRIFTLOOP_PII_KEY", "pii-secret")
    project = make_project(tmp_path / "p")
    project = _edit(
        project,
        '[features.purpose]\ntype = "categorical"\nallowed = ["home", "car", "education", "business"]',
        '[features.purpose]\ntype = "categorical"\npii = "hash"',
    )
    (project.settings.root / "trainer.py").write_text(
        (project.settings.root / "trainer.py").read_text()
        + "\n\nclass Picky:\n    classes_ = ['no', 'yes']\n\n    def predict_proba(self, X):\n"
        "        bad = [v for v in X['purpose'] if v not in ('home', 'car', 'education', 'business', '')]\n"
        "        if bad:\n            raise ValueError(f'unknown purpose {bad[0]!r}')\n"
        "        import numpy as np\n        return np.full((len(X), 2), 0.5)\n\n\n"
        "def picky(X, y, **params):\n    return Picky()\n"
    )
    project = _edit(project, 'entrypoint = "trainer:train"', 'entrypoint = "trainer:picky"')
    train(project)
    caplog.set_level(logging.DEBUG)
    with serve_in_thread(create_app(project, background=False)) as url, httpx.Client(base_url=url) as client:
        r = client.post("/predict", json={**GOOD, "purpose": "jane@example.com"})
        assert r.status_code == 500 and "jane@example.com" not in r.text and "ValueError" in r.text
    logged = [record.getMessage() for record in caplog.records]
    assert any("<pii purpose>" in m for m in logged) and not any("jane@example.com" in m for m in logged)
    project.close()


# -- 4: JSON only, a Host allow-list, no open server on a public address --------------------------
def test_item4_content_type_and_host_header_are_checked(served: tuple[Project, str]) -> None:
    project, url = served
    with httpx.Client(base_url=url) as client:
        form = client.post("/predict", content=json.dumps(GOOD), headers={"content-type": "text/plain"})
        assert form.status_code == 415 and "application/json" in form.text
        fb = client.post(
            "/feedback", content=b"{}", headers={"content-type": "application/x-www-form-urlencoded"}
        )
        assert fb.status_code == 415
        assert client.post("/predict", json=GOOD, headers={"host": "localhost:8000"}).status_code == 200
        rebound = client.post("/predict", json=GOOD, headers={"host": "attacker.example"})
        assert rebound.status_code == 400 and "serving.allowed_hosts" in rebound.text
        assert client.get("/health", headers={"host": "attacker.example"}).status_code == 400
    assert project.store.count_predictions(project.name) == 1


def test_item4_keys_lift_the_host_check_and_public_binds_need_keys(
    fresh: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DRIFTLOOP_API_KEYS", "svc:k1=predict")
    with serve_in_thread(create_app(fresh, background=False)) as url:
        r = httpx.post(
            f"{url}/predict", json=GOOD, headers={"host": "api.example", "authorization": "Bearer k1"}
        )
        assert r.status_code == 200
    config = str(fresh.settings.root / "driftloop.toml")
    refused = _driftloop("serve", "-c", config, "--host", "0.0.0.0", "--port", str(free_port()))
    assert refused.returncode == 1 and "--allow-open" in refused.stdout and "Traceback" not in refused.stderr
    # keys a guesser could find are refused beyond loopback (the key is never shown, its name is)
    weak = "svc:k1=predict;ops:k-ops-0123456789abcdef=admin"
    args = ("serve", "-c", config, "--host", "0.0.0.0", "--port", str(free_port()))
    refused = _driftloop(*args, DRIFTLOOP_API_KEYS=weak)
    shown = refused.stdout + refused.stderr
    assert refused.returncode == 1 and "at least 16 characters" in shown and "['svc']" in shown, shown
    assert "k1" not in shown.replace("token_urlsafe", "") and "Traceback" not in shown


# -- 5: secrets never reach the logs --------------------------------------------------------------
class _Failing(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        self.send_response(500)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_item5_a_failed_delivery_never_shows_the_secret_url(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    server = HTTPServer(("127.0.0.1", 0), _Failing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    secret = "T0000/B0000/SECRET-TOKEN-123"
    caplog.set_level(logging.DEBUG)
    store = Store(f"sqlite:///{tmp_path}/db.sqlite")
    try:
        notify(
            store,
            [
                SlackSink(f"http://127.0.0.1:{server.server_address[1]}/services/{secret}", tries=2),
                WebhookSink(f"http://127.0.0.1:9/hooks/{secret}", tries=1),
            ],
            model="m",
            rule="r",
            metric="pipeline",
            message="x",
        )
    finally:
        server.shutdown()
        server.server_close()
    failures = [f"{d['sink']}: {d['error']}" for d in store.undelivered("m")]  # kept, and shown by status
    assert len(failures) == 2 and all("HTTP 500" in f or "ConnectError" in f for f in failures), failures
    shown = "\n".join([*failures, *(r.getMessage() for r in caplog.records)])
    assert "SECRET-TOKEN" not in shown and "127.0.0.1" in shown


# -- 6: the auth surface is what the docs say ------------------------------------------------------
def test_item6_docs_need_a_key_and_both_headers_work(fresh: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLOOP_API_KEYS", "ops:k-admin=admin;app:k-app=predict")
    with serve_in_thread(create_app(fresh, background=False)) as url, httpx.Client(base_url=url) as client:
        for path in ("/docs", "/docs/assets/swagger-ui.css", "/openapi.json"):
            assert client.get(path).status_code == 401, path
            assert client.get(path, headers={"x-api-key": "k-app"}).status_code == 200, path
        assert (
            client.post("/predict", json=GOOD, headers={"authorization": "bearer k-app"}).status_code == 200
        )
        assert (
            client.post("/predict", json=GOOD, headers={"authorization": "BEARER  k-app"}).status_code == 200
        )
        forbidden = client.get("/metrics", headers={"x-api-key": "k-app"})
        assert forbidden.status_code == 403 and "'app'" in forbidden.text


# -- 7: fast mode re-sends what a dead writer child never confirmed -----------------------------------
def test_item7_fast_mode_loses_nothing_when_the_writer_child_dies(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p")
    train(project)
    project = with_serving(project, log_mode="fast")
    app = create_app(project, background=False)
    acknowledged: list[str] = []
    stop = threading.Event()
    errors: list[str] = []
    records = applicants(20, "A", seed=5).drop(columns="approved").to_dict(orient="records")
    with serve_in_thread(app) as url:

        def load() -> None:
            with httpx.Client(base_url=url, timeout=30) as client:
                while not stop.is_set():
                    r = client.post("/predict", json={"records": records})
                    if r.status_code == 200:
                        acknowledged.extend(p["prediction_id"] for p in r.json()["predictions"])
                    else:
                        errors.append(f"{r.status_code} {r.text}")

        threads = [threading.Thread(target=load) for _ in range(3)]
        for t in threads:
            t.start()
        for _ in range(4):  # kill the child four times under load
            time.sleep(0.4)
            child = app.state.writer._process
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=10)
            deadline = time.time() + 30
            while app.state.writer._process in (None, child) and time.time() < deadline:
                time.sleep(0.05)
        time.sleep(0.4)
        stop.set()
        for t in threads:
            t.join()
        metrics = httpx.get(f"{url}/metrics").text
    assert not errors, errors[:3]
    assert len(acknowledged) > 200
    assert project.store.existing_prediction_ids(acknowledged) == set(acknowledged)
    assert project.store.count_predictions(project.name) == len(acknowledged), "nothing twice"
    assert 'driftloop_log_rows_lost_total{model="loan"} 0' in metrics
    project.close()


# -- 8: a run recorded but never enqueued does not block retraining for good ----------------------
def test_item8_a_run_killed_before_its_enqueue_is_resumed(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p")
    train(project)
    send(project, 600, "A", seed=24, label_share=0.5)
    config = str(project.settings.root / "driftloop.toml")
    marker = tmp_path / "crashed"
    crashed = _driftloop(
        "retrain", "-c", config, DRIFTLOOP_CRASH_AT="start:after-row", DRIFTLOOP_CRASH_MARKER=str(marker)
    )
    assert crashed.returncode == 137, crashed.stdout + crashed.stderr
    (stuck,) = project.store.runs(project.name)
    assert stuck["status"] == "queued"
    started = time.time()
    resumed = _driftloop("retrain", "-c", config)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert time.time() - started < 120
    row = project.store.run(stuck["id"])
    assert row is not None and row["status"] in ("promoted", "rejected"), row
    assert len(project.store.runs(project.name)) == 1, "the stuck run itself finished"
    project.close()


# -- 9: memory per request is bounded ------------------------------------------------------------------
def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@pytest.mark.slow
def test_item9_forty_concurrent_8mib_bodies_keep_memory_bounded(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p")
    train(project)
    port = free_port()
    server = serve_subprocess(str(project.settings.root / "driftloop.toml"), port)
    url = f"http://127.0.0.1:{port}"
    try:
        start = _peak_rss_mb(server.pid)
        record = json.dumps({**GOOD, "income": 52000.5}).encode()
        body = b'{"records": [' + b",".join([record] * (8 * 1024 * 1024 // (len(record) + 1) - 10)) + b"]}"
        statuses: list[int] = []

        def post() -> None:
            with httpx.Client(timeout=120) as client:
                try:
                    r = client.post(
                        f"{url}/predict", content=body, headers={"content-type": "application/json"}
                    )
                    statuses.append(r.status_code)
                except httpx.TransportError:  # answered 503 and closed while the body was still going out
                    statuses.append(503)

        threads = [threading.Thread(target=post) for _ in range(40)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        peak = _peak_rss_mb(server.pid)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    assert set(statuses) <= {413, 503} and 503 in statuses, statuses
    # 40 such bodies took the server from 438 MB to 3.4 GB before the in-flight bound
    assert peak - start < 700, f"peak RSS grew by {peak - start:.0f} MB (from {start:.0f} MB)"
    project.close()


# -- 10: deeply nested JSON is a 422 -----------------------------------------------------------------
def test_item10_deeply_nested_json_is_a_counted_422(served: tuple[Project, str]) -> None:
    project, url = served
    nested = b'{"records": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with httpx.Client(base_url=url) as client:
        r = client.post("/predict", content=nested, headers={"content-type": "application/json"})
        assert r.status_code == 422 and "nested too deeply" in r.text
        fb = client.post("/feedback", content=b"[" * 100_000, headers={"content-type": "application/json"})
        assert fb.status_code == 422
    assert project.store.count_invalid(project.name) == 2


# -- 11: slow and idle connections are closed ----------------------------------------------------------
def test_item11_slow_headers_slow_bodies_and_idle_sockets_are_closed(fresh: Project) -> None:
    project = with_serving(fresh, header_timeout="1s", body_timeout="1s", keep_alive_timeout="1s")
    with serve_in_thread(create_app(project, background=False)) as url:
        port = int(url.rsplit(":", 1)[1])
        slow_headers = [socket.create_connection(("127.0.0.1", port)) for _ in range(30)]
        for s in slow_headers:
            s.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        slow_body = socket.create_connection(("127.0.0.1", port))
        slow_body.sendall(
            b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            b"content-length: 1000\r\n\r\n{"
        )
        idle = socket.create_connection(("127.0.0.1", port))
        started = time.time()
        closed: set[int] = set()
        answer = b""
        while time.time() - started < 6 and len(closed) < len(slow_headers) + 2:
            for i, s in enumerate([*slow_headers, slow_body, idle]):
                if i in closed:
                    continue
                try:
                    if i < len(slow_headers):
                        s.sendall(b"X-Trickle: 1\r\n")
                    elif s is slow_body:
                        s.sendall(b" ")
                    s.settimeout(0.01)
                    data = s.recv(4096)
                    if i == len(slow_headers):
                        answer += data
                    if not data:
                        closed.add(i)
                except (TimeoutError, BlockingIOError):
                    pass
                except OSError:
                    closed.add(i)
            time.sleep(0.2)
        elapsed = time.time() - started
        for s in [*slow_headers, slow_body, idle]:
            s.close()
    assert len(closed) == len(slow_headers) + 2, f"{len(closed)} of {len(slow_headers) + 2} closed"
    assert elapsed < 5
    assert b"408" in answer.split(b"\r\n", 1)[0], answer[:200]
    project.close()


# -- 12: the writer child commits what it read when the server dies -------------------------------
class _DyingSocket:
    """A server socket that delivers some frames, then resets (the server was SIGKILLed)."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.sent: list[bytes] = []

    def recv(self, size: int, flags: int = 0) -> bytes:
        if self.chunks:  # the first frame on the blocking read, the second while draining ...
            return self.chunks.pop(0)
        raise ConnectionResetError(104, "Connection reset by peer")  # ... then the reset

    def sendall(self, data: bytes) -> None:
        self.sent.append(data)


def test_item12_writer_child_commits_read_frames_on_a_reset(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    import marshal

    from driftloop.serving.logproc import serve
    from driftloop.store import Store

    url = f"sqlite:///{tmp_path}/db.sqlite"
    Store(url).close()
    frames = []
    for seq in (1, 2):
        batch = LogBatch(
            "m",
            "1",
            f"r{seq}",
            0.0,
            1.0,
            ["no", "yes"],
            None,
            [f"id{seq}"],
            [{"x": 1.0}],
            ["yes"],
            [0.8],
            [[0.2, 0.8]],
            None,
        )
        payload = marshal.dumps(tuple(batch))
        frames.append(_FRAME.pack(seq, len(payload)) + payload)
    serve(url, _DyingSocket(frames), "full")  # type: ignore[arg-type]
    store = Store(url)
    assert store.existing_prediction_ids(["id1", "id2"]) == {"id1", "id2"}
    assert "Traceback" not in capfd.readouterr().err
    store.close()


# -- 13: a retrain never trains on almost nothing --------------------------------------------------
def test_item13_after_one_label_the_challenger_trains_on_enough_rows(fresh: Project) -> None:
    send(fresh, 1, "A", seed=1, label_share=1.0)
    row = workflow.wait(workflow.start_retrain(fresh, "manual"))
    training = row["options"]["training"]
    assert training["rows"] >= fresh.settings.retrain.min_train_rows
    assert training["by_source"].get("replay", 0) >= fresh.settings.retrain.min_train_rows - 1
    shown = _driftloop("runs", row["id"], "-c", str(fresh.settings.root / "driftloop.toml"))
    assert "training set:" in shown.stdout and f"{training['rows']} rows" in shown.stdout, shown.stdout


def test_item13_a_run_with_too_little_data_is_skipped_with_a_sentence(fresh: Project) -> None:
    project = _edit(fresh, "lookback = 20000", "lookback = 20000\nmin_train_rows = 100000")
    run_id = workflow.start_retrain(project, "manual")
    row = workflow.wait(run_id)
    assert row["status"] == "skipped" and row["challenger_version"] is None
    assert "fewer than retrain.min_train_rows (100000)" in row["error"]
    assert project.registry.alias(project.name, "champion") == "1"
    workflow.shutdown()
    project.close()


# -- 14: one pass closing many windows scores every one of them -------------------------------
def test_item14_every_window_of_a_long_pass_gets_its_accuracy(fresh: Project) -> None:
    send(fresh, 2400, "A", seed=14, label_share=1.0)  # 8 windows of 300 rows in one pass
    Monitor(fresh).run()
    windows = fresh.store.windows(fresh.name, limit=100)
    assert len(windows) == 8
    assert all("accuracy" in w["metrics"] for w in windows), [sorted(w["metrics"])[:3] for w in windows]


# -- 15: one monitor at a time, also from the CLI -------------------------------------------------
def test_item15_cli_monitor_says_another_process_monitors(fresh: Project) -> None:
    config = str(fresh.settings.root / "driftloop.toml")
    with serve_in_thread(create_app(fresh, background=False, monitor=True)):
        busy = _driftloop("monitor", "-c", config)
    assert busy.returncode == 1, busy.stdout + busy.stderr
    assert "Another process" in busy.stdout and "is monitoring 'loan'" in busy.stdout
    assert "IntegrityError" not in busy.stdout + busy.stderr
    done = _driftloop("monitor", "-c", config)  # the server is gone: the lock is free
    assert done.returncode == 0, done.stdout + done.stderr


# -- 16: an alert on an unknown metric is refused at load --------------------------------------------
def test_item16_unknown_alert_metric_is_refused_listing_the_known_ones(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    project = make_project(folder)
    project.close()
    config = folder / "driftloop.toml"
    config.write_text(config.read_text().replace('metric = "accuracy"', 'metric = "acuracy"', 1))
    with pytest.raises(ConfigError) as info:
        Settings.load(config)
    message = str(info.value)
    assert "alerts[0] 'accuracy-drop'" in message and "'acuracy'" in message
    assert "'accuracy'" in message and "'drift.income'" in message


# -- 17: usage errors are one message with exit code 2 ---------------------------------------------
@pytest.mark.parametrize("args", [[], ["frobnicate"], ["serve", "--port", "abc"]])
def test_item17_usage_errors_are_one_message(args: list[str]) -> None:
    done = _driftloop(*args)
    out = done.stdout + done.stderr
    assert done.returncode == 2, out
    assert "Traceback" not in out, out
    if args:  # a mistake: one short message
        assert len(out.splitlines()) < 8, out
    else:  # no command at all: the help, which names every command
        assert "Usage:" in out and "promote" in out and "monitor" in out, out


def test_item17_version() -> None:
    from driftloop import __version__

    done = _driftloop("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"driftloop {__version__}"


def test_every_command_has_a_one_line_summary() -> None:
    """The command list shows each command's first paragraph as written: a summary that runs
    over a line breaks mid-sentence there."""
    import inspect

    from driftloop.cli import app, datasets_app

    long = {
        c.name or c.callback.__name__: first
        for typer_app in (app, datasets_app)
        for c in typer_app.registered_commands
        if c.callback is not None and "\n" in (first := (inspect.getdoc(c.callback) or "").split("\n\n")[0])
    }
    assert not long, long


# -- 18: a feedback batch is answered item by item ----------------------------------------------------
def test_item18_feedback_batch_answers_per_item_and_keeps_the_valid(served: tuple[Project, str]) -> None:
    project, url = served
    with httpx.Client(base_url=url) as client:
        pid = client.post("/predict", json=GOOD).json()["predictions"][0]["prediction_id"]
        r = client.post(
            "/feedback",
            json={
                "feedback": [
                    {"prediction_id": pid, "label": "yes"},
                    {"prediction_id": "0" * 32, "label": "no"},
                    {"prediction_id": pid, "label": "maybe"},
                ]
            },
        )
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["accepted"], body["unknown"], body["invalid"]) == (1, 1, 1)
    assert [(i["index"], i["status"]) for i in body["items"]] == [
        (0, "accepted"),
        (1, "unknown"),
        (2, "invalid"),
    ]
    assert "0" * 32 in body["items"][1]["msg"] and "'maybe'" in body["items"][2]["msg"]
    assert [x["label"] for x in project.store.labelled(project.name)] == ["yes"]
    with httpx.Client(base_url=url) as client:  # a bare list is a batch, as /predict takes one
        listed = client.post("/feedback", json=[{"prediction_id": pid, "label": "no"}, {"label": "no"}])
        empty = client.post("/feedback", json=[])
    assert listed.status_code == 200 and listed.json()["accepted"] == 1, listed.text
    assert "'prediction_id' is required" in listed.json()["items"][1]["msg"]
    assert empty.status_code == 422 and "a list with 1 to" in empty.text, empty.text


# -- 19: promote a version by hand ---------------------------------------------------------------------
def test_item19_promote_through_the_gate_or_forced_with_a_reason(fresh: Project) -> None:
    send(fresh, 900, "A", seed=19, label_share=0.6)
    careless = workflow.wait(workflow.start_retrain(fresh, "manual", trainer="trainer:careless"))
    v2 = careless["challenger_version"]
    workflow.shutdown()
    config = str(fresh.settings.root / "driftloop.toml")
    gated = _driftloop("promote", v2, "-c", config)
    assert gated.returncode == 0 and "rejected" in gated.stdout, gated.stdout + gated.stderr
    assert fresh.registry.alias(fresh.name, "champion") == "1"
    no_reason = _driftloop("promote", v2, "--force", "-c", config)
    assert no_reason.returncode == 1 and "--reason" in no_reason.stdout
    forced = _driftloop("promote", v2, "--force", "--reason", "customer asked for it", "-c", config)
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert fresh.registry.alias(fresh.name, "champion") == v2
    last = fresh.store.promotions(fresh.name)[-1]
    assert last["action"] == "manual-promote" and "customer asked for it" in last["reason"]
    assert fresh.store.reference(fresh.name, v2) is not None


# -- 20: a tie keeps the champion ---------------------------------------------------------------------
def test_item20_a_tie_keeps_the_champion_by_default() -> None:
    same = {"accuracy": 0.8, "f1_macro": 0.79}
    tie = decide(GateSettings(), same, dict(same), n=500, p_value=1.0)
    assert not tie.accepted and "a tie keeps the champion" in tie.reasons[0]
    tolerant = decide(GateSettings(min_improvement=-0.01), same, dict(same), n=500)
    assert tolerant.accepted


# -- 21: one dtype contract for int-coded categories ------------------------------------------------
def test_item21_int_coded_categories_serve_retrain_and_monitor(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p")
    codes = {"salaried": 0, "self_employed": 1, "contractor": 2, "unemployed": 3}
    data = project.settings.root / "data" / "train.csv"
    df = pd.read_csv(data)
    df["employment"] = df["employment"].map(codes)
    df.to_csv(data, index=False)
    project = _edit(
        project,
        'allowed = ["salaried", "self_employed", "contractor", "unemployed"]',
        "allowed = [0, 1, 2, 3]",
    )
    result = train(project)
    test = applicants(600, "A", seed=21)
    truth = test.pop("approved").tolist()
    test["employment"] = test["employment"].map(codes)  # the client sends the codes as JSON numbers
    with serve_in_thread(create_app(project, background=False)) as url, httpx.Client(base_url=url) as client:
        r = client.post("/predict", json={"records": test.to_dict(orient="records")})
        assert r.status_code == 200, r.text
        ids = [p["prediction_id"] for p in r.json()["predictions"]]
        served = [p["label"] for p in r.json()["predictions"]]
        client.post(
            "/feedback",
            json={"feedback": [{"prediction_id": i, "label": y} for i, y in zip(ids, truth, strict=True)]},
        )
    accuracy = sum(a == b for a, b in zip(served, truth, strict=True)) / len(truth)
    assert accuracy > result.metrics["validation_accuracy"] - 0.05, (accuracy, result.metrics)
    Monitor(project).run(flush=True)
    flagged = [k for k, m in project.store.windows(project.name)[-1]["metrics"].items() if m["flagged"]]
    assert "drift.employment" not in flagged, "the served codes are the reference's categories"
    row = workflow.wait(workflow.start_retrain(project, "manual"))
    assert row["status"] in ("promoted", "rejected"), row["error"]
    workflow.shutdown()
    project.close()


# -- 22: a class with a single row -------------------------------------------------------------------
def test_item22_a_single_row_class_trains_or_fails_with_a_sentence(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p")
    project = _edit(project, 'classes = ["no", "yes"]', 'classes = ["no", "yes", "maybe"]')
    data = project.settings.root / "data" / "train.csv"
    df = pd.read_csv(data)
    df.loc[7, "approved"] = "maybe"
    df.to_csv(data, index=False)
    result = train(project)  # the default trainer copes: the lone row stays in training
    assert result.version == "1"
    (project.settings.root / "trainer.py").write_text(
        (project.settings.root / "trainer.py").read_text() + "\n\ndef strict(X, y, **params):\n"
        "    from sklearn.model_selection import train_test_split\n"
        "    train_test_split(X, y, stratify=y, test_size=0.2)\n"
        "    return train(X, y)\n"
    )
    project = _edit(project, 'entrypoint = "trainer:train"', 'entrypoint = "trainer:strict"')
    with pytest.raises(TrainerError, match=r"\['maybe'\] have a single training row"):
        train(project)
    project.close()


# -- 23: first-run polish ----------------------------------------------------------------------------
def test_item23_serve_prints_its_url_and_a_busy_port_is_one_sentence(fresh: Project) -> None:
    config = str(fresh.settings.root / "driftloop.toml")
    port = free_port()
    server = serve_subprocess(config, port, output=True)
    try:
        assert server.stdout is not None
        first = server.stdout.readline()
        assert f"http://127.0.0.1:{port}" in first, first
        busy = _driftloop("serve", "-c", config, "--port", str(port))
        assert busy.returncode == 1 and f"Port {port}" in busy.stdout, busy.stdout + busy.stderr
        assert len((busy.stdout + busy.stderr).strip().splitlines()) <= 2
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)


def test_item23_no_mlflow_info_lines_and_docs_stand_on_their_own(tmp_path: Path) -> None:
    init = _driftloop("init", str(tmp_path / "p"))
    assert init.returncode == 0
    trained = _driftloop("train", "-c", str(tmp_path / "p" / "driftloop.toml"))
    out = trained.stdout + trained.stderr
    assert trained.returncode == 0 and "now the champion" in out
    assert not re.search(r"\bINFO\b", out), out
    # the read-only status stays off the heavy path (it took 3 s when it imported the watch)
    config = str(tmp_path / "p" / "driftloop.toml")
    probe = (
        "import sys\nfrom driftloop.cli import app\ntry:\n    app(['status', '-c', sys.argv[1]])\n"
        "except SystemExit as e:\n    assert not e.code, e.code\n"
        "print(sorted(m for m in ('pandas', 'scipy', 'sklearn', 'mlflow', 'dbos') if m in sys.modules))"
    )
    shown = subprocess.run(
        [sys.executable, "-c", probe, config], env=cli_env(), capture_output=True, text=True, timeout=120
    )
    assert shown.returncode == 0 and shown.stdout.strip().endswith("[]"), shown.stdout + shown.stderr
    for doc in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        assert "DESIGN.md" not in doc.read_text(), f"{doc.name} cites a file outside the repository"


def test_item11_open_connections_are_capped(fresh: Project) -> None:
    project = with_serving(fresh, max_connections=4)
    with serve_in_thread(create_app(project, background=False)) as url:
        port = int(url.rsplit(":", 1)[1])
        held = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
        time.sleep(0.2)
        try:
            over = httpx.get(f"{url}/health", timeout=5)
        finally:
            for s in held:
                s.close()
        assert over.status_code == 503
        time.sleep(0.2)
        assert httpx.get(f"{url}/health", timeout=5).status_code == 200
    project.close()
