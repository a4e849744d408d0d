"""What a request body may hold beyond its schema, checked before anything is predicted or
stored: the ``metadata`` object (and the X-Tenant / X-Client-Id headers), a feedback item's id
and source, and :class:`BadRequest`, a body that cannot be read at all (too large, not JSON),
which the app answers, counts and stores like every invalid request."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

__all__ = [
    "MAX_META_CHARS",
    "MAX_META_KEYS",
    "BadRequest",
    "feedback_problems",
    "is_text",
    "request_metadata",
]

MAX_META_KEYS = 16
MAX_META_CHARS = 256


def is_text(value: str) -> bool:
    """Whether ``value`` can be written as UTF-8 (JSON lets a client send lone surrogates)."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def request_metadata(sent: Any, request: Request) -> tuple[dict[str, str], list[str]]:
    """Request metadata from the body's ``"metadata"`` and the X-Tenant / X-Client-Id headers."""
    found = {
        key: request.headers[header]
        for key, header in (("tenant", "x-tenant"), ("client_id", "x-client-id"))
        if header in request.headers
    }
    if sent is None:
        return found, []
    if not isinstance(sent, dict):
        return found, [f"'metadata' must be an object of strings. Got {type(sent).__name__} instead."]
    if len(sent) > MAX_META_KEYS:
        return found, [f"'metadata' may hold at most {MAX_META_KEYS} keys. Got {len(sent)}."]
    problems = []
    for key, value in sent.items():
        if not is_text(key) or (isinstance(value, str) and not is_text(value)):
            problems.append(  # a lone surrogate ("\\ud800") cannot be stored as UTF-8
                f"'metadata' keys and values must be valid Unicode text. "
                f"Got {key[:64]!a}: {ascii(value)[:80]} instead."
            )
        elif key == "metrics":
            problems.append("'metadata' must not use the reserved key 'metrics'.")
        elif not isinstance(value, str) or len(value) > MAX_META_CHARS or len(key) > 64:
            problems.append(
                f"'metadata.{key[:64]}' must be a string of at most {MAX_META_CHARS} characters "
                f"(keys at most 64). Got {value!r:.80} instead."
            )
        else:
            found[key] = value
    return found, problems


def feedback_problems(item: Any, i: int) -> list[dict[str, Any]]:
    """What is wrong with one feedback item's id and source (FastAPI's error shape, one per
    problem); :func:`driftloop.annotations.parse_item` checks what it says."""
    if not isinstance(item, dict):
        return [{"loc": ["feedback", i], "type": "model_type", "msg": f"Item {i} must be an object."}]
    problems: list[dict[str, Any]] = []
    pid, source = item.get("prediction_id"), item.get("source")
    if not isinstance(pid, str) or not pid:
        problems.append(
            {
                "loc": ["feedback", i, "prediction_id"],
                "type": "missing",
                "msg": f"Item {i}: 'prediction_id' is required (the id /predict returned).",
            }
        )
    elif (
        len(pid) > 64
        or not is_text(pid)
        or (source is not None and not (isinstance(source, str) and is_text(source)))
    ):
        problems.append(
            {
                "loc": ["feedback", i],
                "type": "string_unicode",
                "msg": f"Item {i}: 'prediction_id' (at most 64 characters) and 'source' must be valid "
                f"Unicode text. Got {ascii(pid)[:80]} and {ascii(source)[:80]} instead.",
            }
        )
    return problems


class BadRequest(Exception):
    """A body that cannot be read: counted and stored like every invalid request."""

    def __init__(self, status: int, message: str, loc: tuple[str, ...] = ("body",), kind: str = "") -> None:
        super().__init__(message)
        self.status, self.message, self.loc = status, message, list(loc)
        self.kind = kind or ("too_large" if status == 413 else "json_invalid")
