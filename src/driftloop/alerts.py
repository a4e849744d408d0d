"""Alert rules (threshold, for N windows, cooldown) and sinks (log, webhook, Slack).

A rule fires once per breaching streak: when the last ``for`` windows with at least
``min_samples`` observations all breach, unless it already fired within this streak or
within ``cooldown``. That keeps one bad stretch from paging anyone twice. With ``confidence``
a window breaches only when its metric's Wilson interval lies wholly past the threshold, so a
window with few labels has to fall further before it counts.

>>> from driftloop.config import AlertRuleSettings
>>> rule = AlertRuleSettings.model_validate({"name": "acc", "metric": "accuracy", "op": "<",
...                                          "threshold": 0.8, "for": 2})
>>> series = [(1, 0.9, 100), (2, 0.7, 100), (3, 0.75, 100)]
>>> should_fire(rule, series, last_alert=None, now=0.0)
(True, 2)
>>> should_fire(rule, series, last_alert={"window_id": 3, "ts": 0.0}, now=10.0)
(False, 2)
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import operator
import time
from collections.abc import Callable
from statistics import NormalDist
from typing import Any, Protocol

import httpx

from driftloop.config import AlertRuleSettings, Settings, SinkSettings

__all__ = [
    "LogSink",
    "Sink",
    "SlackSink",
    "WebhookSink",
    "backoff",
    "breaches",
    "deliver",
    "judged",
    "make_sinks",
    "notify",
    "redact_url",
    "should_fire",
    "sink_key",
    "system_alert",
    "wilson",
]

log = logging.getLogger("driftloop.alerts")
_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def judged(rule: AlertRuleSettings, series: list[tuple[int, float, int]]) -> list[tuple[int, float, int]]:
    """The windows a rule judges: those with at least ``min_samples`` observations and a value.

    >>> from driftloop.config import AlertRuleSettings
    >>> rule = AlertRuleSettings(name="r", metric="accuracy", threshold=0.8, min_samples=30)
    >>> judged(rule, [(1, 0.5, 60), (2, 1.0, 15), (3, float("nan"), 90)])
    [(1, 0.5, 60)]
    """
    return [(w, v, n) for w, v, n in series if n >= rule.min_samples and v == v]


def breaches(rule: AlertRuleSettings, value: float, n: int) -> bool:
    """Whether one window's ``value`` over ``n`` rows breaches ``rule``: past its threshold, and
    with ``rule.confidence`` its Wilson interval wholly past it.

    >>> from driftloop.config import AlertRuleSettings
    >>> rule = AlertRuleSettings(name="r", metric="accuracy", threshold=0.85, confidence=0.9)
    >>> breaches(rule, 0.80, 50), breaches(rule, 0.80, 500), breaches(rule, 0.70, 50)
    (False, True, True)
    """
    if not _OPS[rule.op](value, rule.threshold):
        return False
    if rule.confidence is None:
        return True
    low, high = wilson(value, n, rule.confidence)
    return high < rule.threshold if rule.op in ("<", "<=") else low > rule.threshold


def wilson(share: float, n: int, confidence: float) -> tuple[float, float]:
    """The two-sided Wilson score interval of a proportion ``share`` observed over ``n`` rows.

    >>> [round(x, 3) for x in wilson(0.8, 50, 0.9)]
    [0.693, 0.877]
    """
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = min(max(share, 0.0), 1.0)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def should_fire(
    rule: AlertRuleSettings,
    series: list[tuple[int, float, int]],
    last_alert: dict[str, Any] | None,
    now: float,
) -> tuple[bool, int]:
    """``series`` is ``(window_id, value, n)`` oldest first. Returns (fire?, streak length), the
    streak counted in :func:`judged` windows."""
    usable = judged(rule, series)
    if rule.detector is not None:
        return _detector_fires(rule, usable, last_alert, now)
    streak: list[int] = []
    for window_id, value, n in reversed(usable):
        if not breaches(rule, value, n):
            break
        streak.append(window_id)
    if len(streak) < rule.for_windows:
        return False, len(streak)
    if last_alert is not None:
        if last_alert.get("window_id") in streak:
            since = streak.index(last_alert["window_id"])  # windows of the streak after that alert
            if rule.repeat_after is None or since < rule.repeat_after:
                return False, len(streak)
        if now - float(last_alert["ts"]) < rule.cooldown:
            return False, len(streak)
    return True, len(streak)


def _detector_fires(
    rule: AlertRuleSettings,
    usable: list[tuple[int, float, int]],
    last_alert: dict[str, Any] | None,
    now: float,
) -> tuple[bool, int]:
    """Replay the window series through a fresh detector; fire on a detection at the newest window."""
    from driftloop.drift.detectors import make_detector

    assert rule.detector is not None
    detector = make_detector(rule.detector, **rule.detector_params)
    detected_at = [w for w, value, _ in usable if detector.update(value).drift_detected]
    if not detected_at or detected_at[-1] != usable[-1][0]:
        return False, 0
    if last_alert is not None and (
        last_alert.get("window_id") == detected_at[-1] or now - float(last_alert["ts"]) < rule.cooldown
    ):
        return False, 1
    return True, 1


class Sink(Protocol):
    name: str

    def send(self, alert: dict[str, Any]) -> None: ...


class LogSink:
    name = "log"

    def send(self, alert: dict[str, Any]) -> None:
        log.warning("ALERT %s: %s", alert.get("rule"), alert.get("message"))


def redact_url(url: str) -> str:
    """A webhook URL as it may be shown: scheme and host only (the path and query are the secret).

    >>> redact_url("https://hooks.slack.com/services/T000/B000/XXXX?x=1")
    'https://hooks.slack.com/…'
    """
    scheme, sep, rest = url.partition("://")
    host = rest.split("/", 1)[0].split("?", 1)[0].rsplit("@", 1)[-1]  # no user:password either
    return f"{scheme}{sep}{host}/…" if sep else "…"


class _RedactSecrets(logging.Filter):
    """Replaces the sinks' secret URLs in records of the logger it is attached to (httpx logs
    every request's URL at INFO)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: dict[str, str] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if any(url in message for url in self.urls):
            for url, shown in self.urls.items():
                message = message.replace(url, shown)
            record.msg, record.args = message, None
        return True


_REDACT = _RedactSecrets()
logging.getLogger("httpx").addFilter(_REDACT)


class WebhookSink:
    """POST the alert as JSON; three tries with a short backoff. The URL is a secret: it is
    never logged or put in an error (only its scheme and host)."""

    name = "webhook"

    def __init__(self, url: str, timeout: float = 5.0, tries: int = 3) -> None:
        self.url, self.timeout, self.tries = url, timeout, tries
        _REDACT.urls[url] = redact_url(url)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({redact_url(self.url)!r})"

    def payload(self, alert: dict[str, Any]) -> dict[str, Any]:
        return alert

    def send(self, alert: dict[str, Any]) -> None:
        body = json.loads(json.dumps(self.payload(alert), default=str))
        error = ""
        for attempt in range(self.tries):
            try:
                response = httpx.post(self.url, json=body, timeout=self.timeout)
                response.raise_for_status()
                return
            except httpx.HTTPStatusError as exc:
                error = f"HTTP {exc.response.status_code}"
            except httpx.HTTPError as exc:  # its text may hold the URL: keep only its kind
                error = type(exc).__name__
            time.sleep(0.2 * 2**attempt)
        raise RuntimeError(
            f"The {self.name} sink could not deliver to {redact_url(self.url)} after {self.tries} tries "
            f"({error})."
        )


class SlackSink(WebhookSink):
    """Slack incoming webhook: the alert as one readable message."""

    name = "slack"

    def payload(self, alert: dict[str, Any]) -> dict[str, Any]:
        return {
            "text": f":rotating_light: *{alert.get('model')}* — {alert.get('rule')}: {alert.get('message')}"
        }


def make_sinks(settings: Settings) -> list[Sink]:
    sinks: list[Sink] = []
    for sink in settings.sinks:
        sinks.append(_make(sink, settings))
    return sinks


def _make(sink: SinkSettings, settings: Settings) -> Sink:
    if sink.type == "log":
        return LogSink()
    url = settings.sink_url(sink)
    if not url:
        log.warning(
            "The %s sink has no URL: environment variable %r is not set; alerts go to the log.",
            sink.type,
            sink.url_env,
        )
        return LogSink()
    return SlackSink(url) if sink.type == "slack" else WebhookSink(url)


RETRY_FOR = 86_400.0  # seconds a delivery is retried after its alert fired; then given up, and shown
LEASE = 300.0  # seconds a claimed delivery is left to the process sending it
_SENT = ("id", "ts", "model", "rule", "metric", "value", "threshold", "window_id", "message", "run_id")


def backoff(tries: int) -> float:
    """Seconds before a delivery that failed ``tries`` times is tried again: 30 s, doubling, at
    most an hour.

    >>> [backoff(n) for n in (1, 2, 3, 9)]
    [30.0, 60.0, 120.0, 3600.0]
    """
    return float(min(30 * 2 ** (tries - 1), 3600))


def notify(store: Any, sinks: list[Sink], **values: Any) -> dict[str, Any]:
    """Store an alert with a pending delivery to each sink, in one transaction, then deliver it.

    A sink that does not take it now (Slack down, a webhook answering 500) is tried again by
    :func:`deliver` on each monitoring pass, backing off (:func:`backoff`) for up to
    ``RETRY_FOR``; a process that dies in between loses nothing. Delivery is at least once: a
    receiver may see an alert twice (by its ``id``) if a process dies between sending it and
    recording that it was sent."""
    alert_id = store.add_alert(deliver_to=[sink_key(s) for s in sinks], **values)
    deliver(store, sinks, values["model"], alert_id=alert_id)
    return {**values, "id": alert_id}


def deliver(
    store: Any, sinks: list[Sink], model: str, *, alert_id: int | None = None, now: float | None = None
) -> int:
    """Send the deliveries that are due (of one alert, or of every alert of ``model``) to the
    configured sinks; returns how many were made. A sink that fails is not tried again in this
    call (a host that drops packets would otherwise hold the pass for a timeout per alert),
    and a delivery to a sink that is no longer configured is given up at once."""
    now = time.time() if now is None else now
    by_key = {sink_key(s): s for s in sinks}
    down: dict[str, Exception] = {}  # sinks that failed in this call, and how
    made = 0
    for row in store.claim_deliveries(model, now=now, lease=LEASE, alert_id=alert_id):
        sink, tries = by_key.get(row["sink"]), int(row["tries"]) + 1
        try:
            if sink is None:
                raise LookupError("the sink is no longer in the configuration")
            if row["sink"] in down:
                raise down[row["sink"]]
            sink.send({k: row[k] for k in _SENT})
        except Exception as exc:
            down[row["sink"]] = exc
            give_up = sink is None or now + backoff(tries) - float(row["ts"]) > RETRY_FOR
            log.error(
                "Alert %d (%s) was not delivered to %s (try %d%s): %s",
                row["id"],
                row["rule"],
                row["sink"],
                tries,
                "; given up" if give_up else f"; trying again in {backoff(tries):g} s",
                exc,
            )
            store.delivery_failed(
                row["id"], row["sink"], error=str(exc), next_at=now + backoff(tries), give_up=give_up
            )
        else:
            store.delivered(row["id"], row["sink"])
            made += 1
    return made


def sink_key(sink: Sink) -> str:
    """Which sink a delivery is for, stable across restarts: its kind, and for a URL's a hash
    of the URL (the URL is a secret, so it is not stored).

    >>> sink_key(LogSink()), sink_key(SlackSink("https://hooks.slack.com/services/T/B/X"))
    ('log', 'slack:95e173ff3087')
    """
    url = getattr(sink, "url", None)
    return sink.name if url is None else f"{sink.name}:{hashlib.sha256(url.encode()).hexdigest()[:12]}"


def system_alert(
    store: Any,
    sinks: list[Sink],
    model: str,
    rule: str,
    message: str,
    *,
    metric: str = "pipeline",
    run_id: str | None = None,
) -> dict[str, Any]:
    """An alert about the pipeline itself (not a window's metric), stored and sent to every sink."""
    return notify(
        store,
        sinks,
        model=model,
        rule=rule,
        metric=metric,
        value=None,
        threshold=None,
        window_id=None,
        message=message,
        run_id=run_id,
    )
