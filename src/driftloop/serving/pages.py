"""The pages ``driftloop serve`` shows people: ``GET /`` (the dashboard), ``GET /review`` (the
review page), ``GET``/``POST /login`` and ``POST /logout``. A signed-in page calls the JSON
routes with its session cookie (``SameSite=Strict``, and they take JSON bodies only, so another
site cannot make a browser send them).

**Signing in.** With ``DRIFTLOOP_API_KEYS`` set, a person signs in by typing their key into
the form (``POST /login``, never in a URL); the server answers with a session cookie that
names the key and its expiry, signed with HMAC-SHA256 under a secret derived from the configured
keys (``HttpOnly``, ``SameSite=Strict``, ``Secure`` over HTTPS). The cookie holds no key, every
worker process can check it, and changing the keys signs everyone out. It also holds a random
nonce: signing out records it in the store (``revoked_sessions``, until the cookie would have
expired), so a copy of the cookie is refused at once by the worker that signed it out and within
a second by every other (:class:`Revoked` reads the store at most once a second, and only for
requests that carry a cookie).
Without keys (a laptop) the pages are open, on a loopback host only, like the API. A wrong key
on the form counts toward its address's lock-out (``serving.auth_failures``) like one in a
header, and a page draws on its key's rate (``serving.rate_limit``) like the API. A sign-in or
sign-out form whose ``Origin`` is another site is refused (login CSRF: a reviewer signed in
as the attacker's key would give the attacker their labels).

**What a page may do.** Every page is sent with a Content-Security-Policy that allows only its
own inline styles, ``data:`` pictures, requests back to this server and, on the review page, the
one script the server rendered it with (a fresh nonce per response), and that forbids framing
(``frame-ancestors 'none'``, ``X-Frame-Options: DENY``, so another site cannot overlay the
review page's buttons); text a model produced or a reviewer typed can never run as script.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Container, Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from driftloop.identity import ApiKey
from driftloop.project import Project
from driftloop.serving.limits import KeyGuesses, client
from driftloop.store import Store

__all__ = [
    "SESSION_COOKIE",
    "Revoked",
    "add_pages",
    "page_headers",
    "session_identity",
    "session_parts",
    "session_token",
]

SESSION_COOKIE = "driftloop_session"
SESSION_SECONDS = 12 * 3600
MAX_FORM_BYTES = 4096


def page_headers(nonce: str | None = None) -> dict[str, str]:
    """The headers every page is sent with: no caching, and what the page may load and run
    (scripts only with ``nonce``; nothing from another origin; never inside a frame).

    >>> page_headers("n0")["Content-Security-Policy"].split("; ")[:2]
    ["default-src 'none'", "script-src 'nonce-n0'"]
    """
    script = f"'nonce-{nonce}'" if nonce else "'none'"
    policy = (
        f"default-src 'none'; script-src {script}; style-src 'unsafe-inline'; img-src data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )
    return {
        "Cache-Control": "no-store",
        "Content-Security-Policy": policy,
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
    }


def _secret(keys: dict[str, ApiKey]) -> bytes:
    return hashlib.sha256(b"driftloop-session\0" + "\0".join(sorted(keys)).encode()).digest()


def session_token(keys: dict[str, ApiKey], name: str, now: float | None = None) -> str:
    """A signed cookie value naming key ``name`` until ``SESSION_SECONDS`` from now, with a
    random nonce by which signing out revokes it.

    >>> keys = {"sk-1": ApiKey("anna", frozenset({"read"}))}
    >>> token = session_token(keys, "anna", now=0.0)
    >>> session_identity(keys, token, now=60.0), session_identity(keys, token, now=SESSION_SECONDS + 1)
    (ApiKey(name='anna', scopes=frozenset({'read'})), None)
    >>> session_identity(keys, token.replace("anna", "ops"), now=60.0) is None
    True
    >>> session_identity(keys, token, now=60.0, revoked={session_parts(token)[2]}) is None
    True
    """
    expiry = int((time.time() if now is None else now) + SESSION_SECONDS)
    message = f"{name}|{expiry}|{secrets.token_hex(16)}"
    signature = hmac.new(_secret(keys), message.encode(), hashlib.sha256).hexdigest()
    return f"{message}|{signature}"


def session_parts(token: str | None) -> tuple[str, int, str] | None:
    """(key name, expiry, nonce) of a well-formed cookie value; its signature is not checked."""
    parts = (token or "").split("|")
    if len(parts) != 4 or not parts[1].isdigit():
        return None
    return parts[0], int(parts[1]), parts[2]


def session_identity(
    keys: dict[str, ApiKey],
    token: str | None,
    now: float | None = None,
    revoked: Container[str] = (),
) -> ApiKey | None:
    """The key a session cookie names, if its signature holds, it has not expired and it was
    not signed out (its nonce is not in ``revoked``)."""
    parts = session_parts(token)
    if parts is None or token is None:
        return None
    message, _, signature = token.rpartition("|")
    expected = hmac.new(_secret(keys), message.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature):
        return None
    name, expiry, nonce = parts
    if expiry < (time.time() if now is None else now) or nonce in revoked:
        return None
    return next((k for k in keys.values() if k.name == name), None)


class Revoked:
    """The nonces of signed-out sessions, read from the store at most every ``ttl`` seconds:
    a session signed out on one worker is refused by every other within ``ttl``, and by the
    one that signed it out at once."""

    def __init__(self, store: Store, ttl: float = 1.0) -> None:
        self.store, self.ttl = store, ttl
        self.nonces: set[str] = set()
        self.read_at = -float("inf")

    def __contains__(self, nonce: object) -> bool:
        if time.monotonic() - self.read_at > self.ttl:
            self.nonces, self.read_at = self.store.revoked_sessions(), time.monotonic()
        return nonce in self.nonces

    def revoke(self, token: str | None) -> None:
        """Sign out the session of ``token`` everywhere (a cookie that does not parse: nothing)."""
        parts = session_parts(token)
        if parts is not None:
            self.store.revoke_session(parts[2], float(parts[1]))
            self.nonces.add(parts[2])


def add_pages(
    app: FastAPI,
    project: Project,
    keys: dict[str, ApiKey],
    *,
    throttle: Callable[[str, bool], None],
    locked_out: Callable[[str], None],
    guesses: KeyGuesses,
    revoked: Revoked,
) -> None:
    """Mount the dashboard and the sign-in pages on ``app``. ``throttle`` and ``locked_out``
    raise the API's 429s (a caller past its rate; an address that sent too many wrong keys),
    and a wrong key on the form counts in ``guesses``."""
    from driftloop.ui import environment, report_context

    env = environment()

    def signed_in(request: Request) -> ApiKey | None:
        return session_identity(keys, request.cookies.get(SESSION_COOKIE), revoked=revoked)

    def login_page(
        message: str | None = None, status: int = 200, headers: Mapping[str, str] | None = None
    ) -> HTMLResponse:
        html = env.get_template("login.html.j2").render(model=project.name, message=message)
        return HTMLResponse(html, status_code=status, headers={**page_headers(), **(headers or {})})

    def refused(request: Request, scope: str, what: str) -> tuple[ApiKey | None, Response | None]:
        """(who is signed in, None), or the sign-in redirect, the page that says which scope,
        or the one that says the caller is past its rate."""
        who = signed_in(request) if keys else None
        if keys and who is None:
            return None, RedirectResponse("/login", status_code=303)
        if who is not None and not who.allows(scope):
            message = f"The key '{who.name}' has the scopes {sorted(who.scopes)}; {what} needs '{scope}'."
            return who, login_page(message, 403)
        try:
            if who is None:
                throttle(client(request), False)
            else:
                throttle(who.name, True)
        except HTTPException as exc:
            headers = {**page_headers(), **(exc.headers or {})}
            return who, PlainTextResponse(str(exc.detail), status_code=exc.status_code, headers=headers)
        return who, None

    @app.get("/", include_in_schema=False)
    async def dashboard(request: Request) -> Response:
        who, refusal = refused(request, "read", "the dashboard")
        if refusal is not None:
            return refusal
        context: dict[str, Any] = await run_in_threadpool(report_context, project, windows=500)
        html = env.get_template("report.html.j2").render(**context, page=True, user=who.name if who else None)
        return HTMLResponse(html, headers=page_headers())

    @app.get("/review", include_in_schema=False)
    async def review_page(request: Request) -> Response:
        """One item at a time, keyboard first; it talks to the review routes with the session."""
        who, refusal = refused(request, "review", "reviewing")
        if refusal is not None:
            return refusal
        images = sorted(n for n, f in project.settings.features.items() if f.type == "image")
        texts = sorted(n for n, f in project.settings.features.items() if f.type == "text")
        nonce = secrets.token_urlsafe(16)
        html = env.get_template("review.html.j2").render(
            model=project.name,
            user=who.name if who else "local",
            image_features=images,
            text_features=texts,
            nonce=nonce,
        )
        return HTMLResponse(html, headers=page_headers(nonce))

    @app.get("/login", include_in_schema=False)
    async def login_form() -> Response:
        return login_page() if keys else RedirectResponse("/", status_code=303)

    def cross_site(request: Request) -> Response | None:
        """403 for a form another site posted (login CSRF: signing a reviewer in as the
        attacker's key, so the labels they give count as the attacker's)."""
        origin = request.headers.get("origin")
        if origin is None or urlsplit(origin).netloc.lower() == request.headers.get("host", "").lower():
            return None  # a browser names the origin of every cross-site POST
        shown = origin[:100]
        return login_page(f"This form must be sent from this server's own page, not from {shown!r}.", 403)

    @app.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        if not keys:
            return RedirectResponse("/", status_code=303)
        if (refusal := cross_site(request)) is not None:
            return refusal
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                return login_page(f"The form is larger than {MAX_FORM_BYTES} bytes.", 413)
        given = (parse_qs(body.decode("utf-8", "replace")).get("key") or [""])[0].strip()
        if not given:
            return login_page("Type your API key to sign in.", 401)
        try:
            locked_out(client(request))
        except HTTPException as exc:
            return login_page(str(exc.detail), exc.status_code, exc.headers)
        granted = next((v for k, v in keys.items() if hmac.compare_digest(k.encode(), given.encode())), None)
        if granted is None:
            guesses.failed(client(request))
            return login_page("That key is not valid.", 401)
        home = "/" if granted.allows("read") or not granted.allows("review") else "/review"
        response = RedirectResponse(home, status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            session_token(keys, granted.name),
            max_age=SESSION_SECONDS,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    @app.post("/logout", include_in_schema=False)
    async def logout(request: Request) -> Response:
        if keys and (refusal := cross_site(request)) is not None:
            return refusal
        if keys and signed_in(request) is not None:  # a copy of the cookie must not outlive this
            await run_in_threadpool(revoked.revoke, request.cookies.get(SESSION_COOKIE))
        response = RedirectResponse("/login" if keys else "/", status_code=303)
        response.delete_cookie(SESSION_COOKIE)
        return response
