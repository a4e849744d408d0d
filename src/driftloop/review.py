"""The review queue: which predictions deserve a person's time, and what each reviewer answered
(how far reviewers agree is :mod:`driftloop.agreement`).

``fill`` queues the day's items by the strategies of ``[review]`` (the least sure predictions,
those the shadow challenger answered otherwise, and a uniform audit share); ``next_item`` gives
a reviewer the most useful item they have not answered (another reviewer's answer stays hidden);
``answer`` records a label (as feedback whose source is the reviewer's key name, so the existing
feedback hygiene and quarantine apply) or a skip; ``undo`` takes a reviewer's last answer back,
feedback row included.

>>> uncertainty({"yes": 0.9, "no": 0.1}, "least"), uncertainty({"yes": 0.5, "no": 0.5}, "margin")
(0.09999999999999998, 1.0)
"""

from __future__ import annotations

import datetime as dt
import math
import re
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
from sqlalchemy import and_, func, insert, select, update
from sqlalchemy import delete as sql_delete
from sqlalchemy.exc import IntegrityError

from driftloop.datasets import stable_fraction
from driftloop.exceptions import DriftloopError, NotFoundError, SchemaError
from driftloop.project import Project
from driftloop.store import tables as t

__all__ = [
    "answer",
    "fill",
    "next_item",
    "queue_state",
    "uncertainty",
    "undo",
]

ORDER = (
    "disagreement",
    "unusual",
    "low_score",
    "uncertain",
    "audit",
)  # a prediction two want goes to the first
UNUSUAL_CANDIDATES = 5000  # the newest rows scored for rarity (their inputs are read)
RARE_SHARE = 0.01  # a value the reference saw in under this share of rows is named as unusual


def uncertainty(probabilities: dict[str, float] | None, how: str) -> float | None:
    """How unsure a prediction was (higher: more), from its logged class probabilities."""
    if not probabilities:
        return None
    p = sorted((float(v) for v in probabilities.values()), reverse=True)
    if how == "least":
        return 1.0 - p[0]
    if how == "margin":
        return 1.0 - (p[0] - (p[1] if len(p) > 1 else 0.0))
    return -sum(v * math.log(v) for v in p if v > 0)


def _day_start(now: float) -> float:
    day = dt.datetime.fromtimestamp(now, dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day.timestamp()


def fill(project: Project, now: float | None = None) -> dict[str, int]:
    """Queue new items for today, up to ``review.daily_budget``, by the strategies' shares (what
    one cannot fill passes to the next); returns how many each strategy added. Only unlabelled
    predictions of the last ``review.expire_after`` that are not queued already are considered."""
    now = time.time() if now is None else now
    rs, store, name = project.settings.review, project.store, project.name
    with store.engine.connect() as conn:
        queued_today = conn.execute(
            select(func.count())
            .select_from(t.review_items)
            .where(t.review_items.c.model == name, t.review_items.c.created_at >= _day_start(now))
        ).scalar_one()
        remaining = rs.daily_budget - int(queued_today)
        if remaining <= 0:
            return {}
        labelled = select(t.feedback.c.prediction_id)
        queued = select(t.review_items.c.prediction_id).where(t.review_items.c.model == name)
        rows = conn.execute(
            select(
                t.predictions.c.prediction_id,
                t.predictions.c.prediction,
                t.predictions.c.probabilities,
            )
            .where(
                t.predictions.c.model == name,
                t.predictions.c.ts >= now - rs.expire_after,
                t.predictions.c.prediction_id.not_in(labelled),
                t.predictions.c.prediction_id.not_in(queued),
            )
            .order_by(t.predictions.c.seq.desc())
            .limit(50_000)
        ).all()
        ids = [r.prediction_id for r in rows]
        disagreeing: set[str] = set()
        if rs.strategies.get("disagreement", 0) > 0 and ids:
            served = {r.prediction_id: r.prediction for r in rows}
            for start in range(0, len(ids), 500):
                for sid, shadow in conn.execute(
                    select(t.shadow_predictions.c.prediction_id, t.shadow_predictions.c.prediction).where(
                        t.shadow_predictions.c.prediction_id.in_(ids[start : start + 500])
                    )
                ):
                    if shadow != served.get(sid):
                        disagreeing.add(sid)
    unusual: list[str] = []
    if rs.strategies.get("unusual", 0) > 0 and ids:
        unusual = _rarest(project, ids[:UNUSUAL_CANDIDATES])
    lowest: list[str] = []
    if rs.strategies.get("low_score", 0) > 0 and ids:
        lowest = _lowest_scored(project, ids[:UNUSUAL_CANDIDATES])
    if project.task.name == "extraction":  # per-field confidences: the least sure field decides
        scored = [
            (1.0 - min(r.probabilities.values()) if r.probabilities else None, r.prediction_id) for r in rows
        ]
    else:
        scored = [(uncertainty(r.probabilities, rs.uncertainty), r.prediction_id) for r in rows]
    ranked: dict[str, list[str]] = {
        "disagreement": sorted(disagreeing),
        "unusual": unusual,
        "low_score": lowest,
        "uncertain": [pid for u, pid in sorted(((u, p) for u, p in scored if u is not None), reverse=True)],
        "audit": sorted(ids, key=lambda pid: stable_fraction(f"{pid}:audit")),
    }
    shares: dict[str, float] = {str(k): v for k, v in rs.strategies.items()}
    quota = {s: math.floor(shares.get(s, 0.0) * remaining) for s in ORDER}
    quota["audit" if shares.get("audit", 0) > 0 else "uncertain"] += remaining - sum(quota.values())
    taken: set[str] = set()
    items: list[dict[str, Any]] = []
    carry = 0  # what a strategy could not fill passes to the next (no shadow: no disagreement)
    for strategy in ORDER:
        want = quota[strategy] + carry if shares.get(strategy, 0) > 0 or carry else 0
        chosen = [pid for pid in ranked[strategy] if pid not in taken][: max(want, 0)]
        carry = want - len(chosen)
        taken |= set(chosen)
        for rank, pid in enumerate(chosen):  # 1 for the first of each strategy: their queues interleave
            items.append(
                {
                    "model": name,
                    "prediction_id": pid,
                    "strategy": strategy,
                    "score": 1.0 - rank / max(len(chosen), 1),
                    "wanted": 2 if stable_fraction(f"{pid}:overlap") < rs.overlap else 1,
                    "created_at": now,
                    "expires_at": now + rs.expire_after,
                }
            )
    # another reviewer's request may be filling the queue at this moment, with the same items:
    # theirs stand, and what this call reports is what it queued itself
    added: dict[str, int] = {}
    for item, new in zip(items, store.insert_new(t.review_items, items), strict=True):
        if new:
            added[item["strategy"]] = added.get(item["strategy"], 0) + 1
    return added


def _rarest(project: Project, ids: list[str]) -> list[str]:
    """``ids`` from the most to the least unusual inputs against the champion's reference."""
    from driftloop.monitor import Monitor
    from driftloop.profiles import rarity

    with project.store.engine.connect() as conn:
        found = {
            r.prediction_id: r.inputs
            for r in conn.execute(
                select(t.predictions.c.prediction_id, t.predictions.c.inputs).where(
                    t.predictions.c.prediction_id.in_(ids)
                )
            )
        }
    ids = [i for i in ids if i in found]
    if not ids:
        return []
    schema = project.schema
    frame = schema.profile_frame(schema.frame([found[i] for i in ids], strict=False))
    scores = rarity(Monitor(project).reference().features, frame)
    return [ids[i] for i in np.argsort(-scores, kind="stable")]


def unusual_inputs(project: Project, inputs: dict[str, Any]) -> list[dict[str, Any]]:
    """What makes an item's inputs unusual, for the reviewer to see why it was chosen: the
    features whose values fell where under ``RARE_SHARE`` of the champion's reference rows did
    (the rarest one if none is that rare), rarest first, at most three. Each names the feature,
    what of it was rare when that is not the value itself (``length``, ``brightness``; an
    embedding's dimensions are ``embedding``), and the share, from its rarest profiled column.
    """
    from driftloop.monitor import Monitor
    from driftloop.profiles import shares

    schema = project.schema
    frame = schema.profile_frame(schema.frame([inputs], strict=False))
    found = sorted((float(v[0]), c) for c, v in shares(Monitor(project).reference().features, frame).items())
    rare = [(s, c) for s, c in found if s < RARE_SHARE] or found[:1]
    out: dict[str, dict[str, Any]] = {}
    for share, column in rare:  # rarest first: a feature's first column is its rarest
        feature, _, measure = column.partition(".")
        if feature not in out:
            what = "embedding" if re.fullmatch(r"e\d+", measure) else measure or None
            out[feature] = {"feature": feature, "measure": what, "share": round(share, 4)}
    return list(out.values())[:3]


def _lowest_scored(project: Project, ids: list[str]) -> list[str]:
    """``ids`` from the worst to the best value of the scorer ``review.score_metric`` (outputs it
    cannot score are left out)."""
    from driftloop.scoring import logged_scorer_values

    name = project.settings.review.score_metric
    assert name is not None
    with project.store.engine.connect() as conn:
        found = {
            r.prediction_id: (r.inputs, r.prediction)
            for r in conn.execute(
                select(
                    t.predictions.c.prediction_id, t.predictions.c.inputs, t.predictions.c.prediction
                ).where(t.predictions.c.prediction_id.in_(ids))
            )
        }
    ids = [i for i in ids if i in found]
    if not ids:
        return []
    inputs, outputs = [found[i][0] for i in ids], [found[i][1] for i in ids]
    values = logged_scorer_values(project, inputs, outputs, f"metric.{name}")
    worst = project.settings.metrics[name].better == "lower"  # then the highest values are the worst
    keep = np.flatnonzero(np.isfinite(values))
    order = keep[np.argsort(-values[keep] if worst else values[keep], kind="stable")]
    return [ids[i] for i in order]


def _answers(conn: Any, item_ids: Sequence[int]) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = defaultdict(list)
    if item_ids:
        for r in conn.execute(
            select(t.reviews).where(t.reviews.c.item_id.in_(list(item_ids)), t.reviews.c.undone.is_(False))
        ).mappings():
            out[r["item_id"]].append(dict(r))
    return out


def queue_state(project: Project, reviewer: str | None = None, now: float | None = None) -> dict[str, Any]:
    """Open items, answered today, and (for ``reviewer``) how many are left for them."""
    now = time.time() if now is None else now
    name = project.name
    with project.store.engine.connect() as conn:
        open_items = conn.execute(
            select(t.review_items.c.id, t.review_items.c.wanted).where(
                t.review_items.c.model == name, t.review_items.c.expires_at > now
            )
        ).all()
        answers = _answers(conn, [i.id for i in open_items])
        today = conn.execute(
            select(func.count())
            .select_from(t.reviews)
            .where(
                t.reviews.c.model == name,
                t.reviews.c.undone.is_(False),
                t.reviews.c.ts >= _day_start(now),
                *([t.reviews.c.reviewer == reviewer] if reviewer else []),
            )
        ).scalar_one()
    waiting = [
        i
        for i in open_items
        if sum(a["action"] == "label" for a in answers[i.id]) < i.wanted
        and not (reviewer and any(a["reviewer"] == reviewer for a in answers[i.id]))
    ]
    return {"open": len(open_items), "waiting": len(waiting), "answered_today": int(today)}


def next_item(project: Project, reviewer: str, now: float | None = None) -> dict[str, Any] | None:
    """The most useful open item ``reviewer`` has not answered, with what the model saw and said
    (never another reviewer's answer), or None when the queue has nothing for them."""
    now = time.time() if now is None else now
    name = project.name
    with project.store.engine.connect() as conn:
        items = (
            conn.execute(
                select(t.review_items)
                .where(t.review_items.c.model == name, t.review_items.c.expires_at > now)
                .order_by(t.review_items.c.score.desc(), t.review_items.c.id)
                .limit(2000)
            )
            .mappings()
            .all()
        )
        answers = _answers(conn, [i["id"] for i in items])
    for item in items:
        given = answers[item["id"]]
        if any(a["reviewer"] == reviewer for a in given):
            continue
        if sum(a["action"] == "label" for a in given) >= item["wanted"]:
            continue
        prediction = project.store.prediction(item["prediction_id"])
        if prediction is None:
            continue
        return {
            "item_id": item["id"],
            "strategy": item["strategy"],
            "expires_at": item["expires_at"],
            "overlap": item["wanted"] > 1,
            "prediction": {
                k: prediction[k]
                for k in (
                    "prediction_id",
                    "model_version",
                    "ts",
                    "inputs",
                    "prediction",
                    "confidence",
                    "probabilities",
                )
            },
            "labels": list(project.task.classes or []),
            **(
                {"unusual_inputs": unusual_inputs(project, prediction["inputs"])}
                if item["strategy"] == "unusual"
                else {}
            ),
            **(
                {
                    "generation": {
                        "tags": list(project.settings.generation.tags),
                        "rating_min": project.settings.generation.rating_min,
                        "rating_max": project.settings.generation.rating_max,
                    }
                }
                if project.task.name == "generation"
                else {"extraction": {"fields": {f: spec.type for f, spec in project.settings.fields.items()}}}
                if project.task.name == "extraction"
                else {}
            ),
            "progress": queue_state(project, reviewer, now),
        }
    return None


def answer(
    project: Project,
    item_id: int,
    reviewer: str,
    label: Any = None,
    *,
    skip: bool = False,
    rating: Any = None,
    tags: Any = None,
    now: float | None = None,
) -> dict[str, Any]:
    """Record ``reviewer``'s label (also written as feedback, source = reviewer) or skip of an
    item; returns the other reviewers' labels of it, now that this one has answered.

    For a generator the review is a ``rating`` and ``tags`` (an annotation) and, optionally, a
    preferred text as ``label``; the rating is what agreement compares."""
    now = time.time() if now is None else now
    store = project.store
    with store.begin() as conn:
        item = (
            conn.execute(
                select(t.review_items).where(
                    t.review_items.c.id == item_id, t.review_items.c.model == project.name
                )
            )
            .mappings()
            .first()
        )
        if item is None:
            raise NotFoundError(f"Review item {item_id} does not exist for model '{project.name}'.")
        if item["expires_at"] <= now:
            raise DriftloopError(f"Review item {item_id} expired; 'GET /review/next' gives an open one.")
        given = _answers(conn, [item_id])[item_id]
        answered_already = DriftloopError(
            f"Reviewer '{reviewer}' answered review item {item_id} already; undo it first to change it."
        )
        if any(a["reviewer"] == reviewer for a in given):
            raise answered_already
        feedback_id = annotation_id = None
        recorded = None if skip else label
        if not skip and project.task.name == "extraction":
            label = recorded = _extraction_review(project, item_id, item["prediction_id"], label)
        elif not skip and project.task.name == "generation":
            said = _generation_review(project, item_id, item["prediction_id"], label, rating, tags)
            label, recorded = said["label"], said["summary"]
            if said["rating"] is not None or said["tags"]:
                key = conn.execute(
                    insert(t.notes).values(
                        prediction_id=item["prediction_id"],
                        source=reviewer,
                        rating=said["rating"],
                        tags=said["tags"],
                        ts=now,
                    )
                ).inserted_primary_key
                annotation_id = int(key[0]) if key else None
        elif not skip:
            if label is None:
                raise SchemaError(f"A review of item {item_id} needs a 'label' (or a skip).")
            problem = project.task.label_error(label)
            if problem:
                raise SchemaError(f"Field 'label' of review item {item_id}: {problem}")
        if not skip and label is not None:
            key = conn.execute(
                insert(t.feedback).values(
                    prediction_id=item["prediction_id"], label=str(label), source=reviewer, ts=now
                )
            ).inserted_primary_key
            feedback_id = int(key[0]) if key else None
        try:
            conn.execute(
                insert(t.reviews).values(
                    item_id=item_id,
                    model=project.name,
                    reviewer=reviewer,
                    action="skip" if skip else "label",
                    label=None if recorded is None else str(recorded),
                    feedback_id=feedback_id,
                    annotation_id=annotation_id,
                    undone=False,
                    ts=now,
                )
            )
        except IntegrityError:  # the same answer, sent twice at once: the other was recorded first
            raise answered_already from None  # and this one's feedback rolls back with it
    others = [{"reviewer": a["reviewer"], "label": a["label"]} for a in given if a["action"] == "label"]
    return {"item_id": item_id, "action": "skip" if skip else "label", "label": recorded, "others": others}


def _extraction_review(project: Project, item_id: int, prediction_id: str, correction: Any) -> str:
    """An extractor's review (``{"fields": {...}, "confirm": "rest"}``) as the true fields it
    says, checked like its feedback; the label stored and compared for agreement."""
    from driftloop.annotations import parse_item, resolve

    sent = correction if isinstance(correction, dict) else {}
    said, problems = parse_item(
        {"prediction_id": prediction_id, **{k: v for k, v in sent.items() if k in ("fields", "confirm")}},
        0,
        project.settings,
        project.task,
    )
    if said is None or said["correction"] is None:
        why = " ".join(p["msg"].removeprefix("Item 0: ") for p in problems) or "it says nothing"
        raise SchemaError(f"The review of item {item_id} is invalid: {why}")
    served = project.store.served([prediction_id])[prediction_id]
    return project.task.parse_label(resolve(said["correction"], served, list(project.settings.fields)))


def _generation_review(
    project: Project, item_id: int, prediction_id: str, preferred: Any, rating: Any, tags: Any
) -> dict[str, Any]:
    """A generator's review checked like its feedback; ``summary`` is what agreement compares:
    the rating, else the tags, else ``rewrite``."""
    from driftloop.annotations import parse_item

    sent = {"prediction_id": prediction_id, "preferred": preferred, "rating": rating, "tags": tags}
    said, problems = parse_item(
        {k: v for k, v in sent.items() if v is not None}, 0, project.settings, project.task
    )
    if said is None:
        why = " ".join(p["msg"].removeprefix("Item 0: ") for p in problems)
        raise SchemaError(f"The review of item {item_id} is invalid: {why}")
    summary = (
        f"{said['rating']:g}"
        if said["rating"] is not None
        else "tags:" + ",".join(said["tags"])
        if said["tags"]
        else "rewrite"
    )
    return {**said, "summary": summary}


def undo(project: Project, reviewer: str) -> dict[str, Any] | None:
    """Take back ``reviewer``'s last answer (its feedback row too); the item is theirs to answer
    again. None when there is nothing to undo."""
    store = project.store
    with store.begin() as conn:
        last = (
            conn.execute(
                select(t.reviews)
                .where(
                    and_(
                        t.reviews.c.model == project.name,
                        t.reviews.c.reviewer == reviewer,
                        t.reviews.c.undone.is_(False),
                    )
                )
                .order_by(t.reviews.c.id.desc())
                .limit(1)
            )
            .mappings()
            .first()
        )
        if last is None:
            return None
        conn.execute(update(t.reviews).where(t.reviews.c.id == last["id"]).values(undone=True))
        if last["feedback_id"] is not None:
            conn.execute(sql_delete(t.feedback).where(t.feedback.c.id == last["feedback_id"]))
        if last["annotation_id"] is not None:
            conn.execute(sql_delete(t.notes).where(t.notes.c.id == last["annotation_id"]))
    return {"item_id": last["item_id"], "action": last["action"], "label": last["label"]}
