"""Traffic through the real app (uvicorn on 127.0.0.1) for monitor and workflow tests, and
projects reloaded with other serving settings."""

from __future__ import annotations

import contextlib
import itertools
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from typing import Any

import httpx
import numpy as np
import pytest

from driftloop.demo.data import applicants
from driftloop.demo.scenario import serve_in_thread
from driftloop.project import Project
from driftloop.serving import create_app


def send(project: Project, n: int, concept: str, seed: int, label_share: float = 0.0) -> list[str]:
    """Predict ``n`` applicants through the API; label a share of them with the truth."""
    df = applicants(n, concept, seed=seed)
    records = df.drop(columns="approved").to_dict(orient="records")
    rng = np.random.default_rng(seed)
    ids: list[str] = []
    with serve_in_thread(create_app(project, background=False)) as url, httpx.Client(base_url=url) as client:
        for start in range(0, n, 500):
            r = client.post("/predict", json={"records": records[start : start + 500]})
            assert r.status_code == 200, r.text
            ids += [p["prediction_id"] for p in r.json()["predictions"]]
        chosen = [
            {"prediction_id": pid, "label": label}
            for pid, label, keep in zip(ids, df["approved"], rng.random(n) < label_share, strict=True)
            if keep
        ]
        for start in range(0, len(chosen), 500):
            assert client.post("/feedback", json={"feedback": chosen[start : start + 500]}).status_code == 200
    return ids


def multi_worker_round(project: Project, workers: int = 2, threads: int = 8, batches: int = 10) -> None:
    """``driftloop serve --workers N`` under concurrent load: every acknowledged id is stored,
    several processes answered, and exactly one of them ran monitoring (no duplicate windows)."""
    import os
    import signal
    import subprocess
    import threading
    import time

    from driftloop.demo.scenario import free_port

    from .conftest import cli_env

    port = free_port()
    config = str(project.settings.root / "driftloop.toml")
    proc = subprocess.Popen(
        ["driftloop", "serve", "-c", config, "--workers", str(workers), "--port", str(port)],
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    ids: list[str] = []
    pids: set[int] = set()
    errors: list[str] = []
    lock = threading.Lock()
    records = applicants(50, "A", seed=5).drop(columns="approved").to_dict(orient="records")
    try:
        # up when every worker has answered (a worker still importing under CPU load would
        # otherwise leave all the traffic to the first one ready)
        deadline, ready = time.time() + 90, set()
        while time.time() < deadline and len(ready) < workers:
            try:
                health = httpx.get(f"{url}/health", timeout=1).json()  # a new connection each time
                if health["status"] == "ok":
                    ready.add(health["worker"])
            except (httpx.HTTPError, ValueError):
                time.sleep(0.2)
        if not ready:
            raise AssertionError("the multi-worker server did not come up")

        def client() -> None:
            # a new connection per request, so the kernel spreads them over the workers
            no_reuse = httpx.Limits(max_keepalive_connections=0)
            with httpx.Client(base_url=url, timeout=30, limits=no_reuse) as c:
                for _ in range(batches):
                    r = c.post("/predict", json={"records": records})
                    h = c.get("/health").json()
                    with lock:
                        if r.status_code != 200:
                            errors.append(r.text)
                        else:
                            ids.extend(p["prediction_id"] for p in r.json()["predictions"])
                        pids.add(h["worker"])

        pool = [threading.Thread(target=client) for _ in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        time.sleep(2.5)  # a few monitoring passes
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    assert not errors, errors[:3]
    assert len(ids) == threads * batches * len(records)
    assert len(pids) >= 2, f"several workers answered, got {pids}; server output:\n{output[-2000:]}"
    assert project.store.existing_prediction_ids(ids) == set(ids), "every acknowledged id is stored"
    windows = project.store.windows(project.name, limit=1000)
    spans = [(w["start_seq"], w["end_seq"]) for w in windows]
    assert spans, "the monitoring worker closed windows"
    assert all(a[1] < b[0] for a, b in itertools.pairwise(spans)), "one monitor: no overlaps"


def with_serving(project: Project, **settings: object) -> Project:
    """The project reloaded with extra ``[serving]`` settings."""
    path = project.settings.root / "driftloop.toml"
    text = path.read_text()
    for key, value in settings.items():
        line = f"{key} = {value!r}".replace("'", '"')
        text, found = re.subn(rf"^{key} = .*$", line, text, flags=re.MULTILINE)
        if not found:
            text = text.replace("[serving]\n", f"[serving]\n{line}\n")
    path.write_text(text)
    project.close()
    return Project.load(path)


def serve_subprocess(config: str, port: int, *extra: str, output: bool = False) -> subprocess.Popen[str]:
    """``driftloop serve`` as a process of its own (no monitoring), once ``/health`` names a
    champion. With ``output`` its stdout (and stderr) can be read."""
    from .conftest import cli_env

    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "driftloop.cli",
            "serve",
            "-c",
            config,
            "--port",
            str(port),
            "--no-monitor",
            *extra,
        ],
        env=cli_env(),
        stdout=subprocess.PIPE if output else subprocess.DEVNULL,
        stderr=subprocess.STDOUT if output else subprocess.DEVNULL,
        text=True,
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).json()["champion"]:
                return server
        except (httpx.HTTPError, ValueError):
            time.sleep(0.1)
    server.kill()
    raise AssertionError(f"driftloop serve on port {port} did not come up")


# how the browser tests start Debian's Chromium (headless, nothing fetched in the background)
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def browser_or_skip() -> tuple[str, Any]:
    """Chromium's path and Playwright's sync API; the test is skipped, saying how to get them,
    where either is missing."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extra)")
    if browser is None:
        pytest.skip("needs Chromium: apt-get install -y chromium (.ci/run installs it)")
    return browser, sync_api


@contextlib.contextmanager
def chromium_on(project: Project) -> Iterator[tuple[str, Any]]:
    """``project`` served on 127.0.0.1 (no background work, no monitor) and a Chromium to look at
    it with: ``(url, browser)``, the browser closed afterwards; skipped without Chromium."""
    browser, sync_api = browser_or_skip()
    with (
        serve_in_thread(create_app(project, background=False, monitor=False)) as url,
        sync_api.sync_playwright() as pw,
    ):
        chromium = launch_chromium(pw, browser)
        try:
            yield url, chromium
        finally:
            chromium.close()


def sign_in(page: Any, url: str, key: str) -> None:
    """Sign a browser page in as a person does: ``key`` typed on ``url``'s /login, then Enter."""
    page.goto(url + "/login")
    page.fill("#key", key)
    page.keyboard.press("Enter")


def wait_for_text(page: Any, selector: str, text: str, *, changed: bool = False) -> None:
    """Wait until ``selector`` shows exactly ``text`` (or, with ``changed``, anything else).
    Playwright's locator assertions run without ``eval``, which the pages' policy forbids."""
    from playwright.sync_api import expect

    shown = expect(page.locator(selector))
    if changed:
        shown.not_to_have_text(text)
    else:
        shown.to_have_text(text)


def launch_chromium(pw: Any, executable: str) -> Any:
    """Chromium through Playwright, with :data:`CHROMIUM_ARGS`."""
    return pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)


class _Nesting(HTMLParser):
    """Tags as a page opens and closes them, with what the HTML content model forbids."""

    VOID = frozenset(
        ["area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"]
    )
    PHRASING = frozenset(
        ["a", "abbr", "b", "button", "code", "em", "i", "label", "small", "span", "strong", "sub", "sup"]
    )
    HOLDS_PHRASING = PHRASING | frozenset(["p", "h1", "h2", "h3", "h4", "h5", "h6", "pre"])
    BLOCK = frozenset(
        [
            "address",
            "article",
            "aside",
            "details",
            "dialog",
            "div",
            "dl",
            "fieldset",
            "figure",
            "footer",
            "form",
            "h1",
            "h2",
            "h3",
            "h4",
            "h5",
            "h6",
            "header",
            "hr",
            "main",
            "nav",
            "ol",
            "p",
            "pre",
            "section",
            "table",
            "ul",
        ]
    )

    def __init__(self) -> None:
        super().__init__()
        self.open: list[tuple[str, int]] = []
        self.problems: list[str] = []

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        line = self.getpos()[0]
        inline = next((t for t, _ in reversed(self.open) if t in self.HOLDS_PHRASING), None)
        if tag in self.BLOCK and inline is not None:
            self.problems.append(f"line {line}: <{tag}> inside <{inline}>, which holds only phrasing content")
        if tag not in self.VOID:
            self.open.append((tag, line))

    def handle_endtag(self, tag: str) -> None:
        line = self.getpos()[0]
        if tag in self.VOID:
            return
        if not self.open or self.open[-1][0] != tag:
            top = f"<{self.open[-1][0]}> from line {self.open[-1][1]}" if self.open else "nothing"
            self.problems.append(f"line {line}: </{tag}> closes {top}")
            if any(t == tag for t, _ in self.open):  # recover at the matching tag
                while self.open.pop()[0] != tag:
                    pass
            return
        self.open.pop()


def html_problems(page: str) -> list[str]:
    """What is wrong with a page's nesting: a tag closed out of order, one never closed, a block
    (a section, a table, a heading) inside phrasing content such as a ``<span>``. A browser
    renders such a page anyway, with the block moved where it was never meant to be."""
    parser = _Nesting()
    parser.feed(page)
    parser.close()
    return parser.problems + [f"<{t}> from line {n} is never closed" for t, n in parser.open]
