"""What stands between a socket and the app: connection limits, deadlines, Host and load checks.

- :class:`TimedH11Protocol`: uvicorn's h11 protocol with a deadline for a request's headers
  (``serving.header_timeout``). uvicorn closes idle keep-alive connections but never a
  connection that trickles its headers one byte at a time (slowloris).
- :class:`Guard`: a pure ASGI middleware that answers before the app runs: 400 for a Host
  header outside ``serving.allowed_hosts`` (DNS rebinding), 503 with ``Retry-After`` when
  ``serving.max_concurrent_requests`` requests are in the app or their bodies would hold more
  than ``serving.max_inflight_bytes`` (a body is counted from its Content-Length, a chunked
  one at ``max_body_bytes``, until its response is sent).
- :func:`uvicorn_config`: the one place the server's settings become uvicorn's, for
  ``driftloop serve`` and the tests alike.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from driftloop.config import ServingSettings

__all__ = ["Guard", "TimedH11Protocol", "uvicorn_config"]


class TimedH11Protocol(H11Protocol):
    """Closes a connection whose next request's headers have not all arrived in time."""

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.header_timeout = float(getattr(config, "header_timeout", 10.0))
        self._header_timer: asyncio.TimerHandle | None = None
        self._armed_for: object = None

    def _arm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        self._armed_for = self.cycle  # a new request (a new cycle) disarms it
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)

    def _headers_late(self) -> None:
        self._header_timer = None
        waiting = self.cycle is None or (self.cycle is self._armed_for and self.cycle.response_complete)
        if waiting and not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()  # the next request's headers get the same deadline

    def connection_lost(self, exc: Exception | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().connection_lost(exc)


def _reject(status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None) -> Any:
    body = json.dumps({"detail": message}).encode()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    *(headers or []),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return app


def _host_name(value: bytes) -> str:
    """``b"127.0.0.1:8000"`` -> ``"127.0.0.1"``; ``b"[::1]:8000"`` -> ``"::1"``."""
    text = value.decode("latin-1").strip().lower()
    if text.startswith("["):
        return text[1:].split("]", 1)[0]
    return text.rsplit(":", 1)[0] if text.count(":") == 1 else text


class Guard:
    """Host allow-list, concurrency cap and in-flight body budget, before the app runs."""

    def __init__(
        self, app: Any, settings: ServingSettings, *, keys: bool, counts: dict[str, int] | None = None
    ) -> None:
        self.app = app
        self.counts: dict[str, int] = counts if counts is not None else {}
        hosts = settings.hosts(keys)
        self.hosts = None if hosts is None else {h.strip("[]").lower() for h in hosts}
        self.max_requests = settings.max_concurrent_requests
        self.max_bytes = settings.max_inflight_bytes
        self.max_body = settings.max_body_bytes
        self.active = 0
        self.inflight = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        reserve = 0
        host = None
        for name, value in scope["headers"]:
            if name == b"host":
                host = value
            elif name == b"content-length":
                reserve = min(int(value) if value.isdigit() else self.max_body, self.max_body)
            elif name == b"transfer-encoding":
                reserve = self.max_body
        if self.hosts is not None and (host is None or _host_name(host) not in self.hosts):
            self.counts["host"] = self.counts.get("host", 0) + 1
            shown = host.decode("latin-1")[:100] if host else "none"
            await _reject(
                400,
                f"The Host header must name this server ({sorted(self.hosts)}; serving.allowed_hosts). "
                f"Got {shown!r} instead.",
            )(scope, receive, send)
            return
        if self.active >= self.max_requests or (reserve and self.inflight + reserve > self.max_bytes):
            self.counts["overload"] = self.counts.get("overload", 0) + 1
            what = (
                f"{self.active} requests are in progress (serving.max_concurrent_requests)"
                if self.active >= self.max_requests
                else f"request bodies of {self.inflight} bytes are in progress (serving.max_inflight_bytes "
                f"is {self.max_bytes})"
            )
            await _reject(
                503, f"The server is at its limit: {what}; retry shortly.", [(b"retry-after", b"1")]
            )(scope, receive, send)
            return
        self.active += 1
        self.inflight += reserve
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1
            self.inflight -= reserve


def uvicorn_config(
    app: Any, settings: ServingSettings, *, host: str | None = None, port: int | None = None, **extra: Any
) -> uvicorn.Config:
    """uvicorn's config from the serving settings: the timed protocol, the connection cap, the
    keep-alive timeout. ``extra`` passes on (``workers``, ``factory``, ...)."""
    config = uvicorn.Config(
        app,
        host=host or settings.host,
        port=settings.port if port is None else port,
        http=TimedH11Protocol,
        limit_concurrency=settings.max_connections,
        timeout_keep_alive=max(int(settings.keep_alive_timeout), 1),
        log_level="warning",
        **extra,
    )
    config.header_timeout = settings.header_timeout  # type: ignore[attr-defined]  # read by TimedH11Protocol
    return config
