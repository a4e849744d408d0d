"""Limits per caller: a rate per key (per client address when the API is open), and a lock-out
for an address that keeps sending wrong keys. A real uvicorn on 127.0.0.1; the second client
address is 127.0.0.2, which Linux routes to the same loopback interface."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from driftloop import ConfigError, Settings
from driftloop.demo.scenario import serve_in_thread
from driftloop.project import Project
from driftloop.serving import create_app

from .conftest import trained_with
from .test_config import BASE
from .test_serving import GOOD

KEYS = "anna:k-anna-0123456789=predict+review;ops:k-ops-0123456789=admin"
SERVING = 'rate_limit = "3/m"\nrate_limits = { ops = "unlimited" }\nauth_failures = 3\nauth_lockout = "1m"'


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    project = trained_with(tmp_path_factory.mktemp("limited"), serving=SERVING)
    yield project
    project.close()


def _client(url: str, address: str = "127.0.0.1") -> httpx.Client:
    return httpx.Client(base_url=url, transport=httpx.HTTPTransport(local_address=address), timeout=30)


def _metric(client: httpx.Client, reason: str) -> int:
    text = client.get("/metrics", headers={"x-api-key": "k-ops-0123456789"}).text
    line = next(x for x in text.splitlines() if f'reason="{reason}"' in x)
    return int(line.rsplit(" ", 1)[1])


def test_a_key_past_its_rate_gets_429_and_other_keys_do_not(
    limited: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DRIFTLOOP_API_KEYS", KEYS)
    anna = {"authorization": "Bearer k-anna-0123456789"}
    with serve_in_thread(create_app(limited, background=False)) as url, _client(url) as client:
        answers = [client.post("/predict", json=GOOD, headers=anna) for _ in range(4)]
        assert [r.status_code for r in answers] == [200, 200, 200, 429]
        refused = answers[-1]
        assert 1 <= int(refused.headers["retry-after"]) <= 20  # a token every 20 s
        detail = refused.json()["detail"]
        assert "'anna'" in detail and "3 requests per minute" in detail and "serving.rate_limit" in detail
        # the key's session on the review page shares its bucket
        assert client.get("/review/next", headers=anna).status_code == 429
        # ops has a rate of its own (unlimited), and anna's bucket is not the client's address
        ops = {"x-api-key": "k-ops-0123456789"}
        assert all(client.post("/predict", json=GOOD, headers=ops).status_code == 200 for _ in range(10))
        assert _metric(client, "rate") == 2
        assert client.get("/health").status_code == 200  # probes are never limited


def test_an_address_that_guesses_keys_is_locked_out_even_with_the_right_key(
    limited: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DRIFTLOOP_API_KEYS", KEYS)
    right = {"x-api-key": "k-ops-0123456789"}
    with (
        serve_in_thread(create_app(limited, background=False)) as url,
        _client(url) as guesser,
        _client(url, "127.0.0.2") as neighbour,
    ):
        for guess in ("k-ops-0", "k-ops-1", "k-ops-2"):
            assert guesser.post("/predict", json=GOOD, headers={"x-api-key": guess}).status_code == 401
        locked = guesser.post("/predict", json=GOOD, headers=right)
        assert locked.status_code == 429, locked.text
        assert "127.0.0.1" in locked.json()["detail"] and "serving.auth_failures" in locked.json()["detail"]
        assert 55 <= int(locked.headers["retry-after"]) <= 60
        form = guesser.post("/login", data={"key": "k-ops-0123456789"}, follow_redirects=False)
        assert form.status_code == 429 and "serving.auth_failures" in form.text
        assert "driftloop_session" not in form.cookies
        # another address is not locked out, and counts what the guesser was refused
        assert neighbour.post("/predict", json=GOOD, headers=right).status_code == 200
        assert _metric(neighbour, "lockout") == 2


def test_wrong_keys_on_the_sign_in_form_count_too(limited: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLOOP_API_KEYS", KEYS)
    with serve_in_thread(create_app(limited, background=False)) as url, _client(url) as client:
        for guess in ("a", "b", "c"):
            assert client.post("/login", data={"key": guess}, follow_redirects=False).status_code == 401
        assert client.post("/login", data={"key": "k-anna-0123456789"}).status_code == 429
        assert client.get("/metrics", headers={"x-api-key": "k-ops-0123456789"}).status_code == 429


def test_an_open_api_limits_each_client_address(limited: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DRIFTLOOP_API_KEYS", raising=False)
    with (
        serve_in_thread(create_app(limited, background=False)) as url,
        _client(url) as first,
        _client(url, "127.0.0.2") as second,
    ):
        codes = [first.post("/predict", json=GOOD).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        assert "The client 127.0.0.1" in first.post("/predict", json=GOOD).json()["detail"]
        assert second.post("/predict", json=GOOD).status_code == 200


def test_rates_are_checked_when_the_config_loads() -> None:
    with pytest.raises(ConfigError) as info:
        bad = {"rate_limit": "100 per second", "rate_limits": {"ops": "fast"}}
        Settings.from_dict({**BASE, "serving": bad})
    joined = "\n".join(info.value.problems)
    assert "'serving.rate_limit'" in joined and "'100 per second'" in joined and "'100/s'" in joined
    assert "key 'ops'" in joined and "'fast'" in joined


def test_a_rate_for_a_key_that_does_not_exist_is_refused(
    limited: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DRIFTLOOP_API_KEYS", "anna:k-anna-0123456789=predict")
    with pytest.raises(ConfigError, match=r"serving\.rate_limits names \['ops'\].*\['anna'\]"):
        create_app(limited, background=False)


def test_another_site_cannot_sign_a_reviewer_in_or_out(
    limited: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Login CSRF: a page elsewhere that posts the form would sign the reviewer in as the
    attacker's key, and their labels would count as the attacker's."""
    monkeypatch.setenv("DRIFTLOOP_API_KEYS", KEYS)
    with serve_in_thread(create_app(limited, background=False)) as url, _client(url) as client:
        form = {"key": "k-anna-0123456789"}
        forged = client.post("/login", data=form, headers={"origin": "https://evil.example"})
        assert forged.status_code == 403 and "driftloop_session" not in forged.cookies
        assert "https://evil.example" in forged.text and "own page" in forged.text
        assert client.post("/logout", headers={"origin": "null"}).status_code == 403
        own = client.post("/login", data=form, headers={"origin": url}, follow_redirects=False)
        assert own.status_code == 303 and "driftloop_session" in own.cookies
        # a client that names no origin (curl, a script) is not a browser posting across sites
        assert client.post("/login", data=form, follow_redirects=False).status_code == 303


def test_a_signed_out_session_is_refused_by_every_worker(
    limited: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Signing out revokes the session, not only the browser's cookie: a copy of the cookie
    (taken from the machine, say) is refused by this worker at once and by the others within
    a second. Two apps on one store stand for two workers."""
    monkeypatch.setenv("DRIFTLOOP_API_KEYS", KEYS)
    with (
        serve_in_thread(create_app(limited, background=False)) as first,
        serve_in_thread(create_app(limited, background=False)) as second,
        _client(first) as browser,
    ):
        browser.post("/login", data={"key": "k-anna-0123456789"}, follow_redirects=False)
        copied = {"driftloop_session": browser.cookies["driftloop_session"]}

        def status(url: str) -> int:
            return httpx.get(f"{url}/review/next", cookies=copied, timeout=30).status_code

        assert status(first) != 401 and status(second) != 401
        assert browser.post("/logout", headers={"origin": first}, follow_redirects=False).status_code == 303
        assert status(first) == 401
        deadline = time.monotonic() + 10
        while status(second) != 401:
            assert time.monotonic() < deadline, "the other worker still takes the signed-out session"
            time.sleep(0.2)
        page = httpx.get(f"{second}/", cookies=copied, follow_redirects=False)
        assert page.status_code == 303 and page.headers["location"] == "/login"
        # signing in again opens a new session
        browser.post("/login", data={"key": "k-anna-0123456789"}, follow_redirects=False)
        assert browser.get("/review/next").status_code != 401
