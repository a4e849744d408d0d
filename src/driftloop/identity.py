"""Who is calling: API keys with names and scopes, and the feedback source a key may claim.

``DRIFTLOOP_API_KEYS`` holds ``name:key=scope+scope`` entries separated by ``;``, such as
``anna:sk-1=feedback+review;ops:sk-2=admin``. A key's *name* is its identity: the source stored
with a label is the name of the key that sent it, so a client can never claim to be another
key. A client may add a sub-label (``"source": "phone"`` is stored as ``anna/phone``); trusted
and quarantined sources in ``[feedback]`` name keys and are compared after normalisation
(case, surrounding and repeated white space), on the part before the ``/``.

An entry without a name (``key=scopes``, the 0.1 format) is named ``key-`` plus the first 8 hex
digits of the key's sha256: stable, and no secret. Without any keys the API is open and a
label's source is whatever the client says (laptop mode: unauthenticated).

>>> keys = parse_api_keys("anna:sk-1=feedback;ops:sk-2=admin")
>>> keys["sk-1"].name, sorted(keys["sk-2"].scopes)
('anna', ['admin'])
>>> stored_source(keys["sk-1"], "Phone ")
'anna/phone'
>>> stored_source(keys["sk-1"], "ops"), principal(" Spammer  ")
('anna/ops', 'spammer')
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

__all__ = [
    "MIN_PUBLIC_KEY",
    "SCOPES",
    "ApiKey",
    "normalise_source",
    "parse_api_keys",
    "principal",
    "stored_source",
]

SCOPES = ("predict", "feedback", "review", "read", "admin")
MIN_PUBLIC_KEY = 16  # characters a key needs on a server that listens beyond loopback
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,47}$")
MAX_SOURCE = 64


@dataclass(frozen=True)
class ApiKey:
    """One API key's identity (``name``) and what it may do (``scopes``; admin implies all)."""

    name: str
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


def normalise_source(text: str) -> str:
    """Lower case, white space trimmed and collapsed: ``" Spammer  A"`` -> ``"spammer a"``."""
    return " ".join(str(text).split()).casefold()


def principal(source: str) -> str:
    """The identity a stored source names: its normalised part before the first ``/``."""
    return normalise_source(source).split("/", 1)[0].strip()


def stored_source(key: ApiKey | None, sent: object) -> str:
    """The source stored with a label: the key's name, plus the client's sub-label if any.

    Without a key (open API) the client's own text, normalised, or ``"api"``.
    """
    sub = normalise_source(sent) if isinstance(sent, str) else ""
    if key is None:
        return (sub or "api")[:MAX_SOURCE]
    sub = sub.replace("/", "-")
    return (f"{key.name}/{sub}" if sub and sub != key.name else key.name)[:MAX_SOURCE]


def parse_api_keys(text: str | None) -> dict[str, ApiKey]:
    """``"name:key=scope+scope;..."`` -> ``{key: ApiKey(name, scopes)}``.

    >>> parse_api_keys("abc=predict+feedback")["abc"].name
    'key-ba7816bf'
    """
    keys: dict[str, ApiKey] = {}
    names: set[str] = set()
    for part in (text or "").split(";"):
        entry = part.strip()
        if not entry:
            continue
        head, _, scopes = entry.partition("=")
        name, sep, key = head.partition(":")
        if not sep:
            name, key = "", head
        name = name.strip().casefold() or "key-" + hashlib.sha256(key.encode()).hexdigest()[:8]
        wanted = {s.strip() for s in scopes.split("+") if s.strip()}
        unknown = wanted - set(SCOPES)
        shown = (name + ":" if sep else "") + key[:4] + "…"
        if not key or not wanted or unknown:
            raise ValueError(
                f"Each entry of DRIFTLOOP_API_KEYS must be 'name:key=scope+scope' with scopes from "
                f"{list(SCOPES)}. Got {shown!r} with scopes {sorted(wanted)}."
            )
        if not _NAME.match(name):
            raise ValueError(
                "The name of each DRIFTLOOP_API_KEYS entry must be lower-case letters, digits, '.', "
                f"'_' or '-' (at most 48, starting with a letter or digit). Got {name!r} instead."
            )
        if name in names or key in keys:
            raise ValueError(
                f"Each DRIFTLOOP_API_KEYS entry must have its own name and key. Got {name!r} twice."
            )
        names.add(name)
        keys[key] = ApiKey(name, frozenset(wanted))
    return keys
