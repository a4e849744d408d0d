"""What a feedback item may say about a prediction, checked: a label, and for any task late
scores; for a generator also a rating, tags and a preferred text.

One item is ``{"prediction_id": ..., "label": ...}`` for a classifier or a regressor; a
generator's item says any of ``"preferred"`` (a rewrite: the generator's label), ``"rating"``
(between ``generation.rating_min`` and ``rating_max``), ``"tags"`` (from ``generation.tags``);
any item may attach ``"metrics"`` (``{name: value}`` for configured custom metrics: a judge's or a
person's score, arriving after the prediction) with a ``"rationale"``. A label is stored as
feedback; the rest as an annotation, both under the same source, in one transaction.

>>> from driftloop.config import Settings
>>> from driftloop.tasks import make_task
>>> s = Settings.from_dict({"project": {"name": "b", "task": "generation", "target": "post"},
...     "features": {"prompt": {"type": "text"}}, "data": {"train": "t.csv"},
...     "trainer": {"entrypoint": "m:f"}, "generation": {"tags": ["dated"]},
...     "metrics": {"quality": {"min": 0, "max": 1}}}, root="/tmp")
>>> parse_item({"prediction_id": "p1", "rating": 4, "tags": ["dated"]}, 0, s, make_task(s))[0]
{'label': None, 'rating': 4.0, 'tags': ['dated'], 'scores': None, 'rationale': None}
>>> parse_item({"prediction_id": "p1", "tags": ["old"]}, 0, s, make_task(s))[1][0]["msg"]
"Item 0: every tag must be one of ['dated']. Got 'old' instead."
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from driftloop.config import Settings
    from driftloop.tasks import Task

__all__ = ["parse_item", "resolve"]

_COMMON = {"prediction_id", "source", "metrics", "rationale"}
_KEYS = {
    "generation": _COMMON | {"preferred", "rating", "tags"},
    "extraction": _COMMON | {"fields", "confirm"},
}
_MAX_RATIONALE = 4000


def _problem(i: int, key: str | None, kind: str, msg: str) -> dict[str, Any]:
    loc: list[Any] = ["feedback", i] + ([key] if key else [])
    return {"loc": loc, "type": kind, "msg": f"Item {i}: {msg}"}


def parse_item(
    item: dict[str, Any], i: int, settings: Settings, task: Task
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The label, rating, tags, scores and rationale of one feedback item (``prediction_id`` and
    ``source`` are checked by the caller), or the problems (FastAPI's error shape)."""
    generation = task.name == "generation"
    allowed = _KEYS.get(task.name, _COMMON | {"label"})
    problems = [
        _problem(
            i, key, "extra_forbidden", f"'{key[:64]}' is not a feedback key; the keys are {sorted(allowed)}."
        )
        for key in item
        if key not in allowed
    ]
    if task.name == "extraction":
        return _correction(item, i, task, problems, settings)
    label_key = "preferred" if generation else "label"
    label = item.get(label_key)
    if label is not None or (not generation and "metrics" not in item):
        wrong = task.label_error(label)
        if wrong is not None:
            problems.append(
                _problem(i, label_key, "enum" if task.name == "classification" else "value_error", wrong)
            )
    rating, tags = item.get("rating"), item.get("tags")
    policy = settings.generation
    if rating is not None and (
        isinstance(rating, bool)
        or not isinstance(rating, int | float)
        or not math.isfinite(rating)
        or not policy.rating_min <= rating <= policy.rating_max
    ):
        problems.append(
            _problem(
                i,
                "rating",
                "value_error",
                f"'rating' must be a number from {policy.rating_min:g} to {policy.rating_max:g}. "
                f"Got {rating!r:.80} instead.",
            )
        )
    if tags is not None:
        if not isinstance(tags, list) or len(tags) > len(policy.tags):
            problems.append(
                _problem(i, "tags", "list_type", f"'tags' must be a list of tags. Got {tags!r:.80} instead.")
            )
        else:
            problems += [
                _problem(i, "tags", "enum", f"every tag must be one of {policy.tags}. Got {t!r:.80} instead.")
                for t in tags
                if t not in policy.tags
            ]
    scores, rationale = item.get("metrics"), item.get("rationale")
    if scores is not None:
        problems += _score_problems(scores, i, settings)
    if rationale is not None and (not isinstance(rationale, str) or len(rationale) > _MAX_RATIONALE):
        problems.append(
            _problem(
                i,
                "rationale",
                "string_type",
                f"'rationale' must be a text of at most {_MAX_RATIONALE} characters. "
                f"Got {rationale!r:.80} instead.",
            )
        )
    if generation and label is None and rating is None and not tags and scores is None:
        problems.append(
            _problem(
                i, None, "missing", "a generator's feedback needs 'preferred', 'rating', 'tags' or 'metrics'."
            )
        )
    if problems:
        return None, problems
    return {
        "label": None if label is None else task.parse_label(label),
        "rating": None if rating is None else float(rating),
        "tags": sorted(set(tags)) if tags else None,
        "scores": None if scores is None else {k: float(v) for k, v in scores.items()},
        "rationale": rationale,
    }, []


def _correction(
    item: dict[str, Any], i: int, task: Task, problems: list[dict[str, Any]], settings: Settings
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """An extractor's correction: ``fields`` (corrected values; ``null`` is absent) and
    ``confirm`` (the fields whose served value was right: a list, ``"all"`` or ``"rest"``, every
    field not corrected). The label is built from the served prediction (:func:`resolve`)."""
    names = sorted(getattr(task, "fields", {}))
    fields, confirm = item.get("fields", {}), item.get("confirm", [])
    if not isinstance(fields, dict):
        problems.append(
            _problem(i, "fields", "dict_type", f"'fields' must be an object. Got {fields!r:.80} instead.")
        )
        fields = {}
    elif fields and (wrong := task.label_error(fields)) is not None:
        problems.append(_problem(i, "fields", "value_error", wrong))
    if not (confirm in ("all", "rest") or (isinstance(confirm, list) and all(c in names for c in confirm))):
        problems.append(
            _problem(
                i,
                "confirm",
                "value_error",
                f'\'confirm\' must be "all", "rest" or a list of fields from {names}. '
                f"Got {confirm!r:.80} instead.",
            )
        )
    elif isinstance(confirm, list) and set(confirm) & set(fields):
        both = sorted(set(confirm) & set(fields))
        problems.append(
            _problem(i, "confirm", "value_error", f"a field is corrected or confirmed, not both. Got {both}.")
        )
    if not fields and not confirm and "metrics" not in item:
        problems.append(_problem(i, None, "missing", "a correction needs 'fields', 'confirm' or 'metrics'."))
    scores, rationale = item.get("metrics"), item.get("rationale")
    if scores is not None:
        problems += _score_problems(scores, i, settings)
    if problems:
        return None, problems
    return {
        "label": None,
        "correction": {"fields": fields, "confirm": confirm} if fields or confirm else None,
        "rating": None,
        "tags": None,
        "scores": None if scores is None else {k: float(v) for k, v in scores.items()},
        "rationale": rationale,
    }, []


def resolve(correction: dict[str, Any], served: str, fields: list[str]) -> dict[str, str | None]:
    """The true fields a correction says, given the served prediction: corrected values, and the
    served value of every confirmed field.

    >>> fix = {"fields": {"dob": "1990-03-12"}, "confirm": "rest"}
    >>> resolve(fix, '{"dob": "1990", "name": "Ana"}', ["dob", "name"])
    {'name': 'Ana', 'dob': '1990-03-12'}
    """
    made = json.loads(served) if served else {}
    confirm = correction["confirm"]
    if confirm == "all":
        confirmed = fields
    elif confirm == "rest":
        confirmed = [f for f in fields if f not in correction["fields"]]
    else:
        confirmed = list(confirm)
    return {**{f: made.get(f) for f in confirmed}, **correction["fields"]}


def _score_problems(scores: Any, i: int, settings: Settings) -> list[dict[str, Any]]:
    if not isinstance(scores, dict) or not scores:
        return [
            _problem(
                i,
                "metrics",
                "dict_type",
                f"'metrics' must be an object of scores. Got {scores!r:.80} instead.",
            )
        ]
    problems = []
    for name, value in scores.items():
        spec = settings.metrics.get(name)
        if spec is None:
            problems.append(
                _problem(
                    i,
                    "metrics",
                    "enum",
                    f"metric {str(name)[:64]!r} is not configured; "
                    f"the metrics are {sorted(settings.metrics)}.",
                )
            )
        elif spec.kind == "categorical":
            problems.append(
                _problem(i, "metrics", "enum", f"metric '{name}' is categorical; a late score is a number.")
            )
        elif isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            problems.append(
                _problem(
                    i,
                    "metrics",
                    "value_error",
                    f"metric '{name}' must be a finite number. Got {value!r:.80} instead.",
                )
            )
        elif (spec.min is not None and value < spec.min) or (spec.max is not None and value > spec.max):
            problems.append(
                _problem(
                    i,
                    "metrics",
                    "value_error",
                    f"metric '{name}' must be between {spec.min} and {spec.max}. Got {value!r} instead.",
                )
            )
    return problems
