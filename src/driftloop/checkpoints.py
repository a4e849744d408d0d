"""How a retrain's checkpoints are written to the workflow database: as JSON, never as pickle.

DBOS records each workflow's inputs and each step's output (or exception) so that a run killed
mid-way resumes where it stopped. By default it pickles them, and it unpickles whatever a row
says was pickled (``serialization = 'py_pickle'``) whatever serializer it was given: anyone
who can write the workflow database (on PostgreSQL, driftloop's store) could then run code in
every process that resumes a run. driftloop gives DBOS :class:`JsonCheckpoints` instead, and
:func:`refuse_pickles` makes DBOS refuse a pickled row with an error that says so, so nothing
in the workflow database is ever unpickled.

The values are what the steps return: dicts, lists and tuples of strings, numbers, booleans
and ``None``, with the odd numpy scalar, set or datetime. Those round-trip exactly (a tuple
comes back a tuple); anything else is a ``TypeError`` when it is written, never a surprise
when it is read. An exception comes back as the same driftloop exception when it was one
(``WorkflowError("...")``), else as a :class:`CheckpointedError` naming its type.

>>> codec = JsonCheckpoints()
>>> text = codec.serialize({"rows": (3, 4.5), "at": None, "ok": True})
>>> codec.deserialize(text)
{'rows': (3, 4.5), 'at': None, 'ok': True}
>>> codec.deserialize(codec.serialize(ValueError("bad")))
CheckpointedError('ValueError: bad')
"""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any

from dbos._serialization import Serializer

from driftloop import exceptions
from driftloop.exceptions import DriftloopError

__all__ = ["CheckpointedError", "JsonCheckpoints", "refuse_pickles"]

_TAG = "__driftloop__"


class CheckpointedError(DriftloopError, RuntimeError):
    """An exception a step raised, as read back from its checkpoint: its type's name and message."""


def _encode(value: Any) -> Any:
    if value is None or isinstance(value, bool | str | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {_TAG: ["float", repr(value)]}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, tuple):
        return {_TAG: ["tuple", [_encode(v) for v in value]]}
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value) and _TAG not in value:
            return {k: _encode(v) for k, v in value.items()}
        return {_TAG: ["dict", [[_encode(k), _encode(v)] for k, v in value.items()]]}
    if isinstance(value, set | frozenset):
        return {_TAG: ["set", [_encode(v) for v in value]]}
    if isinstance(value, dt.datetime):
        return {_TAG: ["datetime", value.isoformat()]}
    if isinstance(value, dt.date):
        return {_TAG: ["date", value.isoformat()]}
    if isinstance(value, BaseException):
        kind = type(value)
        return {_TAG: ["error", [f"{kind.__module__}.{kind.__qualname__}", str(value)]]}
    if hasattr(value, "item") and getattr(value, "shape", None) == ():  # a numpy scalar
        return _encode(value.item())
    raise TypeError(
        f"A workflow checkpoint holds JSON values, tuples, sets, datetimes and exceptions. "
        f"Got a {type(value).__module__}.{type(value).__qualname__} instead."
    )


def _error(kind: str, message: str) -> Exception:
    module, _, name = kind.rpartition(".")
    cls = getattr(exceptions, name, None) if module == exceptions.__name__ else None
    if isinstance(cls, type) and issubclass(cls, DriftloopError):
        return cls(message)
    return CheckpointedError(f"{name}: {message}")


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if _TAG not in value:
        return {k: _decode(v) for k, v in value.items()}
    tag, payload = value[_TAG]
    if tag == "tuple":
        return tuple(_decode(v) for v in payload)
    if tag == "dict":
        return {_decode(k): _decode(v) for k, v in payload}
    if tag == "set":
        return {_decode(v) for v in payload}
    if tag == "float":
        return float(payload)
    if tag == "datetime":
        return dt.datetime.fromisoformat(payload)
    if tag == "date":
        return dt.date.fromisoformat(payload)
    if tag == "error":
        return _error(*payload)
    raise ValueError(f"A workflow checkpoint has an unknown tag {tag!r}.")


class JsonCheckpoints(Serializer):
    """DBOS's serializer for driftloop: tagged JSON in, the same values out; no code runs."""

    def serialize(self, data: Any) -> str:
        return json.dumps(_encode(data), separators=(",", ":"), allow_nan=False)

    def deserialize(self, serialized_data: str) -> Any:
        return _decode(json.loads(serialized_data))

    def name(self) -> str:
        return "driftloop_json"


class _NoPickles(Serializer):
    """Stands in for DBOS's pickle serializer: a pickled row is refused, not loaded."""

    def serialize(self, data: Any) -> str:
        raise TypeError("driftloop writes workflow checkpoints as JSON, never as pickle.")

    def deserialize(self, serialized_data: str) -> Any:
        raise DriftloopError(
            "A row of the workflow database says it holds a pickle (serialization 'py_pickle'); "
            "driftloop never unpickles what it reads there, because anyone who can write that "
            "database could run code with it. A run recorded before driftloop wrote its checkpoints "
            "as JSON cannot be resumed: start it again."
        )

    def name(self) -> str:
        return "py_pickle"


def refuse_pickles() -> None:
    """Make DBOS refuse rows recorded as pickles instead of unpickling them. DBOS picks the
    decoder by the name a row carries, not by the serializer it was given, so the pickle
    decoder itself is replaced (``dbos._serialization.DBOSDefaultSerializer``)."""
    import dbos._serialization as serialization

    serialization.DBOSDefaultSerializer = _NoPickles()
