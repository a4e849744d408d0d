"""What a retrain learns from and is judged on: the out-of-time evaluation rows and the
candidate training windows.

**Out of time.** A challenger must be judged on the future it will serve, not on rows from the
period it learned from: a random holdout of that period flatters it (measured on drifting
streams: gate 0.871 against 0.747 live). So the evaluation rows are the *newest* labelled rows
that came after the champion's own training data (``seq`` above its run's cutoff), which no
candidate trains on: at least ``gate.min_eval_rows``, else ``retrain.holdout_fraction`` of the
lookback. Both models meet them for the first time.

**Candidates.** How much history to learn from is a bet on how the world changed: after an
abrupt change only the rows since it help, after a gradual one a long window with recency
weights does, after a recurring concept the old rows come back into use. Rather than guess,
each run trains one challenger per window of ``retrain.candidates`` (duplicates, whose rows are
the same, once), scores all on the same evaluation rows, and sends the best to the gate: chosen on
every other row and judged on the rest when there are enough, else chosen and judged on all with
the p-value of its improvement corrected for the choice (max-T), so trying more windows cannot
buy a promotion (``workflow.evaluate_step``).

**Folds.** With ``retrain.folds`` the evaluation rows are several folds of time, each predicted
by models that learned only from the rows before it (:mod:`driftloop.backtest`), so the gate
judges on several times the rows a single holdout leaves.

>>> import pandas as pd
>>> prod = pd.DataFrame({"__seq__": range(1, 11), "y": list("ababababab")})
>>> train_pool, evaluation, why = out_of_time_split(prod, champion_cutoff=0, min_rows=3, fraction=0.2)
>>> evaluation["__seq__"].tolist(), train_pool["__seq__"].tolist()[-1], why["rows"]
([8, 9, 10], 7, 3)
>>> _, evaluation, _ = out_of_time_split(prod, champion_cutoff=0, min_rows=1, fraction=0.5, since_seq=7)
>>> evaluation["__seq__"].tolist()  # half of the rows since the alert, not half of all
[9, 10]
>>> _, evaluation, why = out_of_time_split(prod, champion_cutoff=9, min_rows=3, fraction=0.2)
>>> evaluation["__seq__"].tolist(), why["from_champion_period"]
([8, 9, 10], 2)
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
import pandas as pd

from driftloop.config import CandidateSettings, RetrainSettings
from driftloop.sampling import training_set
from driftloop.tasks import Task

__all__ = ["FOLD", "candidate_sets", "fold_pools", "out_of_time_split", "recipe_key", "recipe_sentence"]


FOLD = "__fold__"  # an evaluation row's backtest fold: 0 the oldest, the newest judged by the final models


def out_of_time_split(
    prod: pd.DataFrame,
    *,
    champion_cutoff: int,
    min_rows: int,
    fraction: float,
    since_seq: int | None = None,
    folds: int = 1,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """(rows the final candidates train on, evaluation rows, the manifest's account).

    A fold is the newest ``max(min_rows, fraction * len(recent))`` rows after ``champion_cutoff``,
    where ``recent`` is the rows since the alert (``since_seq``) when there are at least
    ``min_rows`` of them, else every row after the champion's data: the new period is split in
    time, its older part left to learn from, so an abrupt change does not send all its rows to
    the evaluation set. With ``folds`` above one, as many folds of that size as the rows after the
    champion's data hold come before it (a rolling-origin backtest): the evaluation rows carry
    their fold in ``__fold__`` (0 the oldest), each earlier fold is predicted by its candidates
    refitted on the rows before it (:func:`fold_pools`), and the newest by the final candidates,
    which learn from everything before it. The champion saw none of them.
    """
    unseen = prod[prod["__seq__"] > champion_cutoff]
    recent = unseen[unseen["__seq__"] >= since_seq] if since_seq is not None else unseen
    if len(recent) < min_rows:
        recent = unseen
    per_fold = max(min_rows, round(fraction * len(recent)))
    evaluation = unseen.tail(min(per_fold * folds, len(unseen)))
    # too few rows the champion never saw (a run by hand right after a promotion; automatic
    # triggers wait instead): the newest older rows make up the gate's minimum. The champion
    # may have learned from those, which favours it, never the challenger. One fold then.
    topped = min(max(min_rows - len(evaluation), 0), len(prod) - len(unseen))
    if topped:
        evaluation = (
            prod[prod["__seq__"] <= champion_cutoff].tail(topped).pipe(lambda e: pd.concat([e, evaluation]))
        )
    # folds of per_fold rows from the newest back; the oldest takes what is left (one fold if topped)
    k = 1 if topped or not len(evaluation) else min(folds, -(-len(evaluation) // per_fold))
    from_newest = np.arange(len(evaluation))[::-1] // per_fold
    evaluation = evaluation.assign(**{FOLD: (k - 1 - np.minimum(from_newest, k - 1)).astype("int64")})
    # the evaluation rows are the newest tail of prod, so this is every row before the last fold
    train_pool = prod.drop(index=evaluation.index[evaluation[FOLD] == k - 1])
    first, last = (
        (int(evaluation["__seq__"].min()), int(evaluation["__seq__"].max())) if len(evaluation) else (0, 0)
    )
    spans = [
        {
            "fold": j,
            "rows": int((evaluation[FOLD] == j).sum()),
            "first_seq": int(evaluation.loc[evaluation[FOLD] == j, "__seq__"].min()),
            "last_seq": int(evaluation.loc[evaluation[FOLD] == j, "__seq__"].max()),
        }
        for j in range(k)
        if len(evaluation)
    ]
    backtest = (
        f" in {k} folds of time, each predicted by the candidates trained on the rows before it"
        if k > 1
        else ""
    )
    if not len(evaluation):
        sentence = f"no labelled rows after the champion's training data (seq > {champion_cutoff})"
    elif topped:
        sentence = (
            f"the newest {len(evaluation)} labelled rows (seq {first}-{last}); only "
            f"{len(evaluation) - topped} came after the champion's training data (seq > "
            f"{champion_cutoff}), so {topped} are from its period, which favours the champion; "
            "no candidate trains on them"
        )
    else:
        sentence = (
            f"the newest {len(evaluation)} labelled rows (seq {first}-{last}), all after the champion's "
            f"training data (seq > {champion_cutoff}){backtest}; no candidate trains on a row it is "
            "judged on"
        )
    why = {
        "split": "out of time",
        "rows": len(evaluation),
        "wanted": per_fold * folds,
        "folds": spans,
        "after_champion_seq": champion_cutoff,
        "unseen_by_champion": len(unseen),
        "from_champion_period": topped,
        "first_seq": first if len(evaluation) else None,
        "last_seq": last if len(evaluation) else None,
        "sentence": sentence,
    }
    return train_pool, evaluation, why


def fold_pools(prod: pd.DataFrame, evaluation: pd.DataFrame) -> list[pd.DataFrame]:
    """The rows each earlier backtest fold's candidates learn from: every labelled row older than
    the fold's first row (``[]`` for a single fold)."""
    if FOLD not in evaluation or not len(evaluation):
        return []
    k = int(evaluation[FOLD].max()) + 1
    return [
        prod[prod["__seq__"] < int(evaluation.loc[evaluation[FOLD] == j, "__seq__"].min())]
        for j in range(k - 1)
    ]


def _window(pool: pd.DataFrame, c: CandidateSettings, since_seq: int | None) -> tuple[pd.DataFrame, str]:
    rows, parts = pool, []
    if c.since_alert:
        rows = rows[rows["__seq__"] >= (since_seq or 0)]
        parts.append(f"the {len(rows)} labelled rows since the alert's first window (seq >= {since_seq})")
    if c.rows is not None:
        rows = rows.tail(c.rows)
        parts.append(f"the newest {len(rows)} of at most {c.rows} labelled rows")
    if not parts:
        parts.append(f"all {len(rows)} labelled rows of the lookback")
    return rows, ", ".join(parts)


def candidate_sets(
    pool: pd.DataFrame,
    previous: pd.DataFrame,
    rt: RetrainSettings,
    target: str,
    *,
    now: float,
    task: Task,
    since_seq: int | None,
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """The training set of each candidate window: ``([{name, frame, sampling, sentence}],
    [{name, reason}] for the ones left out)``. ``pool`` is the labelled rows left after the
    evaluation rows were taken, oldest first; ``previous`` the champion's training data."""
    made: list[dict[str, Any]] = []
    left_out: list[dict[str, str]] = []
    for c in rt.candidate_windows():
        if c.since_alert and since_seq is None:
            left_out.append({"name": c.name, "reason": "the run was not started by an alert"})
            continue
        rows, sentence = _window(pool, c, since_seq)
        if c.since_alert and not len(rows):
            left_out.append({"name": c.name, "reason": "no labelled rows since the alert yet"})
            continue
        own = rt.model_copy(
            update={
                k: v
                for k, v in (
                    ("replay_fraction", c.replay_fraction),
                    ("recency_half_life", c.recency_half_life),
                )
                if v is not None
            }
        )
        frame, sampling = training_set(rows, previous, own, target, now=now, task=task)
        replay = sampling["replay"]["rows"]
        made.append(
            {
                "name": c.name,
                "frame": frame,
                "sampling": sampling,
                "sentence": f"{sentence}, plus {replay} replayed rows of the champion's data"
                if replay
                else sentence,
            }
        )
    return made, left_out


def recipe_sentence(recipe: dict[str, Any] | None) -> str:
    """How a candidate with its own recipe is fitted, to follow its window's sentence ('' for the
    project's trainer as configured).

    >>> recipe_sentence({"trainer": "models:linear", "params": {"C": 0.5}})
    ", fitted by models:linear with {'C': 0.5}"
    >>> recipe_sentence({"trainer": None, "params": {"max_depth": 8}})
    ", fitted by the project's trainer with {'max_depth': 8}"
    """
    if recipe is None:
        return ""
    by = recipe["trainer"] or "the project's trainer"
    return f", fitted by {by} with {recipe['params']}" if recipe["params"] else f", fitted by {by}"


def recipe_key(recipe: dict[str, Any] | None) -> str:
    """A short, stable name for a recipe, so fits of different recipes on the same rows are
    kept apart ('' for the project's trainer).

    >>> recipe_key(None), recipe_key({"trainer": "m:f", "params": {"b": 1, "a": 2}}) == recipe_key(
    ...     {"trainer": "m:f", "params": {"a": 2, "b": 1}})
    ('', True)
    """
    if recipe is None:
        return ""
    text = json.dumps(recipe, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]
