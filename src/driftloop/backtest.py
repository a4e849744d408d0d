"""A rolling-origin backtest of each candidate training window, so the gate judges on every row
the champion never saw rather than on the newest few.

With ``retrain.folds = k`` the out-of-time evaluation rows are ``k`` consecutive folds of time
(:func:`driftloop.candidates.out_of_time_split`). The newest fold is predicted by the final
candidates, which learn from every row before it and are registered; each earlier fold by the
same window refitted on the rows before *that* fold, so no row is ever predicted by a model that
learned from it or from anything later. The champion predicts every fold (it saw none). The gate
then compares the two on ``k`` times the rows a single holdout gives, which at a low label rate
is the difference between a coin flip and a decision.

What is judged is the *recipe* (a window over the labelled history, the trainer): the backtest
shows what it would have served had it been deployed at each fold's start. A fold where the
window would have had too few rows is served by the champion, as it would have been.

>>> import numpy as np
>>> from driftloop.tasks import ROW, Predictions, predictions_frame, read_predictions
>>> made = Predictions(np.array(["a", "b"], dtype=object), np.array([0.9, 0.6]),
...                    np.array([[0.9, 0.1], [0.4, 0.6]]))
>>> frame = predictions_frame(np.array([3, 5]), made)
>>> back = read_predictions(frame)
>>> back.labels.tolist(), back.probabilities.tolist()
(['a', 'b'], [[0.9, 0.1], [0.4, 0.6]])
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from driftloop.candidates import FOLD, candidate_sets, recipe_key
from driftloop.project import Project
from driftloop.tasks import ROW, Predictions, predictions_frame, read_predictions
from driftloop.training import fit_model, labelled_frame, record_snapshot

__all__ = ["assemble", "backtest_sets", "fit_folds", "negatives_frame"]


def negatives_frame(project: Project, negatives: list[dict[str, Any]]) -> pd.DataFrame | None:
    """A generator's bad-tagged outputs as training rows marked ``__negative__`` (None if none)."""
    if not negatives:
        return None
    target = project.settings.project.target
    return labelled_frame(
        project, pd.DataFrame([{**r["inputs"], target: r["label"]} for r in negatives]), "bad-tagged outputs"
    ).assign(__key__=[f"negative:{r['prediction_id']}" for r in negatives], __negative__=True)


def backtest_sets(
    project: Project,
    candidates: list[dict[str, Any]],
    pools: list[pd.DataFrame],
    starts: list[int],
    original: pd.DataFrame,
    negatives: list[dict[str, Any]],
    plan: dict[str, Any],
    common: dict[str, Any],
) -> None:
    """Each final candidate's training set for every earlier fold: its window over the rows
    before the fold (``pools``; ``starts`` the folds' first sequence numbers), built as the run
    builds its own and written as a content-addressed snapshot, or ``path: None`` and ``why``
    where the window was left out or would have had too few rows (the champion stands in for
    that fold). Sets ``candidate["backtest"]``."""
    rt = project.settings.retrain
    for c in candidates:
        c["backtest"] = []
    for fold, (pool, start) in enumerate(zip(pools, starts, strict=True)):
        made, left_out = candidate_sets(
            pool,
            original,
            rt,
            project.settings.project.target,
            now=plan["planned_at"],
            task=project.task,
            since_seq=plan.get("since_seq"),
        )
        bad = negatives_frame(project, [r for r in negatives if r["seq"] < start])
        by_name, why_not = {m["name"]: m for m in made}, {m["name"]: m["reason"] for m in left_out}
        for c in candidates:
            window = by_name.get(c["name"])
            if window is None or len(window["frame"]) < rt.min_train_rows:
                why = (  # the champion stands in for this fold: say why, as the run saw it
                    f"was left out before this fold: {why_not.get(c['name'], 'no such window')}"
                    if window is None
                    else f"had {len(window['frame'])} rows before this fold, fewer than "
                    f"retrain.min_train_rows ({rt.min_train_rows})"
                )
                c["backtest"].append({"fold": fold, "rows": 0, "snapshot": None, "path": None, "why": why})
                continue
            training = window["frame"].drop(columns=["__seq__"], errors="ignore")
            if bad is not None:
                training = pd.concat([training.assign(__negative__=False), bad], ignore_index=True)
            ds = record_snapshot(
                project,
                training,
                {
                    **common,
                    "kind": "backtest",
                    "candidate": c["name"],
                    "fold": fold,
                    "window": window["sentence"],
                },
                add=False,
            )
            c["backtest"].append(
                {"fold": fold, "rows": len(training), "snapshot": ds.id, "path": str(ds.path)}
            )


def _write(frame: pd.DataFrame, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".tmp{os.getpid()}")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, out)


def fit_folds(
    project: Project,
    candidate: dict[str, Any],
    evaluation: pd.DataFrame,
    out: Path,
    trainer: str | None,
    params: dict[str, Any] | None = None,
    shared: Path | None = None,
) -> bool:
    """Fit ``candidate``'s window for each earlier fold and write its predictions of that fold's
    rows to ``out`` (atomically; nothing is registered). False when there is nothing to fit.

    ``trainer`` and ``params`` are the candidate's recipe (:func:`driftloop.training.fit_model`).
    With ``shared`` (a folder of the run's), each fold's predictions are kept there by training
    set and recipe: windows that hold the same rows for a fold (the whole history and its newest
    part, while the history is short) are fitted once per run."""
    folds = [f for f in candidate.get("backtest") or [] if f["path"] is not None]
    if not folds:
        return False
    X = project.schema.frame(evaluation)
    fold_of = evaluation[FOLD].to_numpy()
    parts = []
    recipe = recipe_key(candidate.get("recipe"))
    for f in folds:
        key = f"{f['snapshot']}-{recipe}-{f['fold']}" if recipe else f"{f['snapshot']}-{f['fold']}"
        kept = shared / f"{key}.parquet" if shared is not None else None
        if kept is not None and kept.exists():
            parts.append(pd.read_parquet(kept))
            continue
        rows = np.flatnonzero(fold_of == f["fold"])
        model = fit_model(project, pd.read_parquet(f["path"]), trainer, params)
        parts.append(predictions_frame(rows, project.task.predict(model, X.iloc[rows])))
        if kept is not None:
            _write(parts[-1], kept)
    _write(pd.concat(parts, ignore_index=True), out)
    return True


def assemble(standin: Predictions, *parts: pd.DataFrame | None) -> Predictions:
    """One model's predictions of every evaluation row: the champion's (``standin``, every row)
    overwritten by each part's rows (:func:`predictions_frame`): the final candidate's of the
    newest fold and the golden set, the backtest's of the earlier folds. A row no part covers is
    the champion's: an earlier fold the window could not have been trained for."""
    out: dict[str, np.ndarray | None] = {
        name: None if v is None else v.copy() for name, v in standin._asdict().items()
    }
    for part in parts:
        if part is None or not len(part):
            continue
        rows, made = part[ROW].to_numpy(), read_predictions(part)
        for name, values in made._asdict().items():
            column = out[name]
            if values is not None and column is not None:
                column[rows] = values
    labels, confidence = out.pop("labels"), out.pop("confidence")
    assert labels is not None and confidence is not None  # every task gives both
    return Predictions(labels, confidence, **out)
