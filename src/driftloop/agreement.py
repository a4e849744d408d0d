"""How far reviewers agree, and what happens to one who does not.

``agreement`` gives each reviewer's Cohen's kappa with the others on the items two of them
labelled, and with the trusted sources' labels, and flags those below ``review.min_agreement``;
``enforce`` quarantines the flagged ones when ``review.quarantine`` asks for it (their labels are
then left out of monitoring and retraining, by the feedback hygiene every reader goes through).

>>> round(kappa(["a", "a", "b", "b"], ["a", "a", "b", "a"]), 3)
0.5
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select

from driftloop.project import Project
from driftloop.store import tables as t

__all__ = ["agreement", "enforce", "kappa"]


def kappa(a: Sequence[str], b: Sequence[str]) -> float:
    """Cohen's kappa of two raters' labels on the same items (1: perfect, 0: chance)."""
    n = len(a)
    if n == 0:
        return float("nan")
    observed = sum(x == y for x, y in zip(a, b, strict=True)) / n
    classes = set(a) | set(b)
    expected = sum((list(a).count(c) / n) * (list(b).count(c) / n) for c in classes)
    if expected >= 1.0:
        return 1.0 if observed == 1.0 else 0.0
    return (observed - expected) / (1.0 - expected)


def agreement(project: Project) -> dict[str, Any]:
    """Per reviewer: Cohen's kappa and the share agreed with the other reviewers on items both
    labelled, and with the trusted sources' labels of the same predictions; ``flagged`` when the
    kappa is below ``review.min_agreement`` over at least ``review.min_overlap_items`` items:
    the kappa with the trusted labels where there are that many (they say who is right), else
    the kappa with the other reviewers."""
    rs, name = project.settings.review, project.name
    trusted = set(project.settings.feedback.trusted_sources)
    quarantined = set(project.store.quarantined(name))
    with project.store.engine.connect() as conn:
        rows = conn.execute(
            select(
                t.reviews.c.item_id, t.reviews.c.reviewer, t.reviews.c.label, t.review_items.c.prediction_id
            )
            .join(t.review_items, t.review_items.c.id == t.reviews.c.item_id)
            .where(t.reviews.c.model == name, t.reviews.c.undone.is_(False), t.reviews.c.action == "label")
        ).all()
        pids = sorted({r.prediction_id for r in rows})
        confirmed: dict[str, str] = {}
        if trusted and pids:
            for start in range(0, len(pids), 500):
                for f in conn.execute(
                    select(t.feedback.c.prediction_id, t.feedback.c.label, t.feedback.c.source)
                    .where(t.feedback.c.prediction_id.in_(pids[start : start + 500]))
                    .order_by(t.feedback.c.id)
                ):
                    if f.source.split("/", 1)[0] in trusted:
                        confirmed[f.prediction_id] = f.label
    by_item: dict[int, list[Any]] = defaultdict(list)
    for r in rows:
        by_item[r.item_id].append(r)
    pairs: dict[str, tuple[list[str], list[str]]] = defaultdict(lambda: ([], []))
    for answers in by_item.values():
        for mine in answers:
            for other in answers:
                if other.reviewer != mine.reviewer:
                    pairs[mine.reviewer][0].append(mine.label)
                    pairs[mine.reviewer][1].append(other.label)
    reviewers = sorted({r.reviewer for r in rows})
    out = []
    for who in reviewers:
        mine, theirs = pairs[who]
        truth = [
            (r.label, confirmed[r.prediction_id])
            for r in rows
            if r.reviewer == who and r.prediction_id in confirmed
        ]
        k = kappa(mine, theirs) if mine else None
        k_truth = kappa([a for a, _ in truth], [b for _, b in truth]) if truth else None
        # trusted labels, where enough exist, say who is right; two reviewers alone cannot, so an
        # honest reviewer paired with a careless one is judged by the trusted labels when possible
        judged_by_truth = k_truth is not None and len(truth) >= rs.min_overlap_items
        basis = k_truth if judged_by_truth else k
        enough = judged_by_truth or len(mine) >= rs.min_overlap_items
        out.append(
            {
                "reviewer": who,
                "labels": sum(r.reviewer == who for r in rows),
                "overlap_items": len(mine),
                "kappa": None if k is None or math.isnan(k) else round(k, 4),
                "agreed": round(sum(a == b for a, b in zip(mine, theirs, strict=True)) / len(mine), 4)
                if mine
                else None,
                "confirmed_items": len(truth),
                "agreed_with_confirmed": round(sum(a == b for a, b in truth) / len(truth), 4)
                if truth
                else None,
                "kappa_with_confirmed": None if k_truth is None or math.isnan(k_truth) else round(k_truth, 4),
                "judged_on": "confirmed" if judged_by_truth else "overlap",
                "flagged": basis is not None
                and enough
                and not math.isnan(basis)
                and basis < rs.min_agreement,
                "quarantined": who in quarantined,
            }
        )
    return {"model": name, "min_agreement": rs.min_agreement, "reviewers": out}


def enforce(project: Project) -> list[str]:
    """With ``review.quarantine``, quarantine every flagged reviewer not quarantined yet (an
    alert says so); returns their names."""
    if not project.settings.review.quarantine:
        return []
    from driftloop.monitor import Monitor

    done = []
    for r in agreement(project)["reviewers"]:
        if not r["flagged"]:
            continue
        on_truth = r["judged_on"] == "confirmed"
        reason = (
            f"Cohen's kappa {r['kappa_with_confirmed' if on_truth else 'kappa']:.3f} with "
            + (
                f"the trusted labels over {r['confirmed_items']} items"
                if on_truth
                else f"the other reviewers over {r['overlap_items']} shared items"
            )
            + f", below review.min_agreement {project.settings.review.min_agreement:g}"
        )
        if project.store.quarantine(project.name, r["reviewer"], reason):
            Monitor(project).system_alert(
                "reviewer-quarantined",
                f"Reviewer '{r['reviewer']}' is quarantined: {reason}; their labels are not used until "
                f"'driftloop reviewers --release {r['reviewer']}'.",
            )
            done.append(r["reviewer"])
    return done
