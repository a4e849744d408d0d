"""Request rates per identity, and lock-outs for addresses that keep sending wrong keys.

- :class:`RateLimiter`: a token bucket per caller (a key's name; a client address when the API
  is open) that refills at ``serving.rate_limit`` and holds at most that many requests, with
  per-key rates from ``serving.rate_limits``. Past it the API answers 429 with ``Retry-After``.
- :class:`KeyGuesses`: failed key checks (a wrong API key, a wrong key on the sign-in form) per
  client address. Past ``serving.auth_failures`` within ``serving.auth_lockout`` the address
  gets 429 on every key check, right keys included, until its oldest counted failure is that
  old: a guesser learns nothing more, whatever it sends.

A client address is an IPv4 address or an IPv6 /64 (:func:`client`), since one host usually
has a whole /64 to take a fresh address from.

Both live in the worker process that counts, with no shared state: with
``serving.workers = N`` a caller whose connections reach every worker can go N times past a
rate, and a guesser N times past the failures. Each keeps at most ``max_tracked`` callers,
forgetting the least recently seen first, so many addresses cannot grow a server's memory.

>>> clock = [0.0]
>>> limiter = RateLimiter(Rate(2, 1.0), clock=lambda: clock[0])
>>> [limiter.wait("anna") for _ in range(3)]
[0.0, 0.0, 0.5]
>>> clock[0] = 0.5
>>> limiter.wait("anna"), limiter.wait("ops")
(0.0, 0.0)
"""

from __future__ import annotations

import ipaddress
import math
import re
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["KeyGuesses", "Rate", "RateLimiter", "client", "parse_rate", "retry_after"]

_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)?\s*(ms|s|m|h|d)\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_WORDS = {"m": "minute", "h": "hour", "d": "day", "s": "second"}


@dataclass(frozen=True)
class Rate:
    """``requests`` per ``seconds``: a bucket of ``requests`` that refills at that pace."""

    requests: int
    seconds: float

    def __str__(self) -> str:
        per = next((w for u, w in _WORDS.items() if _UNITS[u] == self.seconds), f"{self.seconds:g} s")
        return f"{self.requests} requests per {per}"


def parse_rate(text: object) -> Rate | None:
    """``"100/s"``, ``"6000/m"``, ``"20/10s"`` or ``"unlimited"`` as a :class:`Rate` (``None``: no limit).

    >>> parse_rate("100/s"), parse_rate("20/10s"), parse_rate("unlimited")
    (Rate(requests=100, seconds=1.0), Rate(requests=20, seconds=10.0), None)
    >>> parse_rate("fast")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: must be a rate such as '100/s', ... Got 'fast' instead
    """
    if isinstance(text, str) and text.strip().lower() == "unlimited":
        return None
    match = _RATE.match(text) if isinstance(text, str) else None
    if match is None or int(match.group(1)) < 1 or float(match.group(2) or 1) <= 0:
        raise ValueError(
            "must be a rate such as '100/s', '6000/m' or '20/10s' (requests per period), or "
            f"'unlimited'. Got {text!r} instead"
        )
    return Rate(int(match.group(1)), float(match.group(2) or 1) * _UNITS[match.group(3)])


class RateLimiter:
    """A token bucket per caller: ``rate.requests`` at once, refilled over ``rate.seconds``."""

    def __init__(
        self,
        rate: Rate | None,
        overrides: dict[str, Rate | None] | None = None,
        *,
        max_tracked: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate, self.overrides = rate, dict(overrides or {})
        self.max_tracked, self.clock = max_tracked, clock
        self.buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # caller -> (tokens, at)

    def rate_of(self, who: str) -> Rate | None:
        return self.overrides.get(who, self.rate)

    def wait(self, who: str) -> float:
        """0.0 and one request taken from ``who``'s bucket, or the seconds until it holds one."""
        rate = self.rate_of(who)
        if rate is None:
            return 0.0
        now, per_second = self.clock(), rate.requests / rate.seconds
        tokens, at = self.buckets.pop(who, (float(rate.requests), now))
        tokens = min(float(rate.requests), tokens + (now - at) * per_second)
        if tokens >= 1.0:
            tokens -= 1.0
            waited = 0.0
        else:
            waited = (1.0 - tokens) / per_second
        self.buckets[who] = (tokens, now)
        while len(self.buckets) > self.max_tracked:
            self.buckets.popitem(last=False)
        return waited


class KeyGuesses:
    """Failed key checks per client address, and how long an address is locked out.

    >>> clock = [0.0]
    >>> guesses = KeyGuesses(2, 60.0, clock=lambda: clock[0])
    >>> guesses.failed("10.0.0.5"); clock[0] = 10.0; guesses.failed("10.0.0.5")
    >>> guesses.locked("10.0.0.5"), guesses.locked("10.0.0.6")
    (50.0, 0.0)
    >>> clock[0] = 60.0
    >>> guesses.locked("10.0.0.5")
    0.0
    """

    def __init__(
        self,
        limit: int,
        period: float,
        *,
        max_tracked: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit, self.period = limit, period
        self.max_tracked, self.clock = max_tracked, clock
        self.failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, address: str) -> deque[float]:
        times = self.failures.get(address, deque())
        cutoff = self.clock() - self.period
        while times and times[0] <= cutoff:
            times.popleft()
        return times

    def locked(self, address: str) -> float:
        """Seconds until ``address`` may try a key again (0.0: it may now)."""
        times = self._recent(address)
        if not times:
            self.failures.pop(address, None)
            return 0.0
        if len(times) < self.limit:
            return 0.0
        return max(times[0] + self.period - self.clock(), 0.0)

    def failed(self, address: str) -> None:
        """Count one failed key check from ``address``."""
        times = self._recent(address)
        times.append(self.clock())
        while len(times) > self.limit:
            times.popleft()
        self.failures.pop(address, None)
        self.failures[address] = times
        while len(self.failures) > self.max_tracked:
            self.failures.popitem(last=False)


def client(request: Any) -> str:
    """Whom a request's client address counts as: itself for IPv4, its /64 for IPv6 (one host
    is usually given a whole /64, and could otherwise take a fresh address for every guess).

    >>> from types import SimpleNamespace as Req, SimpleNamespace as Addr
    >>> [client(Req(client=Addr(host=h))) for h in ("10.0.0.5", "2001:db8::1:2:3:4")]
    ['10.0.0.5', '2001:db8::/64']
    >>> client(Req(client=None))
    'unknown'
    """
    address = request.client.host if request.client else "unknown"
    if ":" not in address:
        return str(address)
    try:
        return str(ipaddress.IPv6Network(f"{address}/64", strict=False))
    except ValueError:
        return str(address)


def retry_after(seconds: float) -> str:
    """A ``Retry-After`` value: whole seconds, at least 1.

    >>> retry_after(0.2), retry_after(41.3)
    ('1', '42')
    """
    return str(max(1, math.ceil(seconds)))
