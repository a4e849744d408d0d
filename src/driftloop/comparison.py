"""The champion against every candidate on the same held-out rows: the heart of a retrain's
evaluate step, apart from what the step records.

:func:`compare` predicts the evaluation rows with the champion and each candidate (a candidate's
predictions of the newest fold and the golden set are its own; of a backtest's earlier folds,
its window's refits on the rows before each fold; an earlier champion predicts every row
itself), scores them all (:func:`driftloop.scoring.score_outputs`), chooses the best on the
choosing rows and judges it against the champion on the judging rows. By default
(``gate.choose_on = "all"``) all rows choose and judge, and the one-sided p-value of the winner's
improvement is corrected for the choice (max-T, :func:`driftloop.evaluation.max_t`); with
``"half"``, several candidates and enough rows, every other production row in time chooses and
the rest, with the golden set, judge, so the gate's estimate is free of the winner's curse. The
estimate the gate records is the winner's score less what choosing it flattered it by
(:func:`driftloop.evaluation.selection_bias`), read on the rows the winner's recipe predicted: a
backtest fold its window could not be trained for is the champion's on both sides.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from driftloop.backtest import assemble
from driftloop.candidates import FOLD
from driftloop.evaluation import max_t, selection_bias
from driftloop.project import Project
from driftloop.scoring import judge_pairs, paired_scores, score_outputs, selection_rows, subset
from driftloop.tasks import ROW, predictions_frame

__all__ = ["Comparison", "compare"]


@dataclass(frozen=True)
class Comparison:
    """What :func:`compare` found: ``scores`` (what the gate reads: both models' metrics, the
    winner and its index, every candidate's score, p-values, intervals, slices, folds, the
    estimate), each candidate's ``held_out`` predictions (the winner's become its reference),
    which candidates were ``earlier`` champions (judged as they are) and their ``names``."""

    scores: dict[str, Any]
    held_out: list[pd.DataFrame]
    earlier: list[bool]
    names: list[str]


def compare(
    project: Project,
    df: pd.DataFrame,
    versions: list[str],
    champion: str,
    candidates: list[dict[str, Any]],
    folds: list[dict[str, Any]] | None = None,
    backtests: list[str | None] | None = None,
) -> Comparison:
    """The champion and the candidates ``versions`` (described by ``candidates``, as the run's
    snapshot made them) on the evaluation rows ``df``; ``backtests``: each candidate's stored
    predictions of the earlier folds, ``folds``: their spans."""
    settings, task = project.settings, project.task
    target, primary = settings.project.target, settings.gate.primary_metric
    X, y = project.schema.frame(df), task.targets(df[target], "evaluation set").to_numpy()
    golden = (
        df["__key__"].astype(str).str.startswith("golden:").to_numpy()
        if "__key__" in df
        else np.zeros(len(df), dtype=bool)
    )
    k = len(versions)
    chooser = (
        selection_rows(np.flatnonzero(~golden), k, settings.gate.min_eval_rows)
        if settings.gate.choose_on == "half"
        else None
    )
    judged = np.ones(len(df), dtype=bool)
    choosing = np.ones(len(df), dtype=bool)
    if chooser is not None:
        judged[chooser] = False
        choosing = ~judged & ~golden
    raw = project.schema.frame(df, decode=False)  # what scorers see, as in monitoring
    # the champion saw no evaluation row; a final candidate only the newest fold's (and golden)
    # rows, the earlier folds' are its window's backtest (driftloop.backtest)
    fold_of = df[FOLD].to_numpy() if FOLD in df and len(df) else np.zeros(len(df), dtype="int64")
    newest = np.flatnonzero(fold_of == fold_of.max()) if len(df) else np.zeros(0, dtype="int64")
    base_made = task.predict(project.registry.load(project.name, champion), X)
    # an earlier champion (or a version promoted by hand) learned from no evaluation row
    fixed = [bool(c.get("version")) for c in candidates] or [True] * len(versions)
    held_out = [  # each candidate's predictions of the rows it (or its fold's refit) never saw
        pd.concat(
            [
                predictions_frame(own, task.predict(project.registry.load(project.name, v), X.iloc[own])),
                *([pd.read_parquet(b)] if b else []),
            ],
            ignore_index=True,
        )
        for v, b, own in zip(
            versions,
            backtests or [None] * len(versions),
            [np.arange(len(df)) if f else newest for f in fixed],
            strict=True,
        )
    ]
    made_all = [assemble(base_made, part) for part in held_out]
    base_all = score_outputs(project, y, base_made, raw)
    scored_all = [score_outputs(project, y, made, raw) for made in made_all]
    lower = primary in project.lower_is_better
    values = [float(subset(project, y, s, choosing)["metrics"][primary]) for s in scored_all]
    ranked = sorted(range(len(versions)), key=lambda i: (values[i] if lower else -values[i], i))
    best = ranked[0] if ranked else 0
    challenger = versions[best]
    base, won = subset(project, y, base_all, judged), subset(project, y, scored_all[best], judged)
    y, X, df, raw = y[judged], X[judged], df[judged], raw[judged]
    names = [c["name"] for c in candidates] or [f"version {v}" for v in versions]
    out: dict[str, Any] = {
        "n": len(df),
        "champion": base["metrics"],
        "challenger": won["metrics"],
        "winner": challenger,
        "winner_index": best,
        "chosen_on": int(choosing.sum()),
        "candidates": [
            {
                "name": names[i],
                "version": v,
                primary: round(values[i], 6),
                "chosen": i == best,
                "earlier": fixed[i],
            }
            for i, v in enumerate(versions)
        ],
    }
    if fold_of.max(initial=0) > 0:  # a backtest: the winner and the champion fold by fold
        judged_folds = np.where(golden[judged], -1, fold_of[judged])  # production rows only
        spans = {f["fold"]: f for f in folds or []}
        out["folds"] = [
            {
                "fold": int(j),
                "rows": int((judged_folds == j).sum()),
                "first_seq": spans.get(int(j), {}).get("first_seq"),
                "last_seq": spans.get(int(j), {}).get("last_seq"),
                "champion": subset(project, y, base, judged_folds == j)["metrics"].get(primary),
                "challenger": subset(project, y, won, judged_folds == j)["metrics"].get(primary),
            }
            for j in np.unique(judged_folds[judged_folds >= 0])
        ]
    p_value, ci = (
        task.paired(y, base["labels"], won["labels"], primary, base["probabilities"], won["probabilities"])
        if primary in task.metric_names
        else (None, None)  # a scorer: paired below
    )
    corrected = k if chooser is None else 1  # rows that chose the winner do not judge it
    out["p_raw"] = p_value
    out["mcnemar_p"] = p_value
    out["compared"] = corrected
    out["ci"] = ci
    # the one-sided p of the winner's improvement, corrected for choosing it among the candidates
    # (max-T by sign flips), from the per-row gains of every candidate that chose on these rows
    if primary in base["scorers"]:  # a scorer as the primary metric: its per-row values
        per_row = [s["scorers"][primary] for s in scored_all]
        champion_rows, sign = base_all["scorers"][primary], -1.0 if lower else 1.0
    else:
        per_row = [s["rows"] for s in scored_all]
        champion_rows = base_all["rows"]
        sign = -1.0 if task.slice_metric in project.lower_is_better else 1.0
    columns = range(k) if chooser is None else [best]
    gains = np.nan_to_num(np.column_stack([sign * (per_row[i] - champion_rows)[judged] for i in columns]))
    out["p_improvement"] = (
        max_t(gains, list(columns).index(best))  # a fixed seed: the same rows, the same verdict
        if len(versions) and len(gains)
        else None
    )
    # the gate's estimate of the winner, less what choosing it among k flattered it by (the
    # bootstrap's winner's curse), read on the rows the winner's recipe predicted: on a fold its
    # window could not be trained for, the champion's prediction judges the recipe but says
    # nothing of the model deployed; per-row scores exist for the task's row metric and scorers
    if len(versions) and (primary in base["scorers"] or primary == task.slice_metric):
        own = np.column_stack([sign * per_row[i][judged] for i in columns])
        covered = np.zeros(len(judged), dtype=bool)
        covered[held_out[best][ROW].to_numpy()] = True
        report = covered[judged]
        if not report.any():  # no row of the winner's own among the judged: read them all
            report = np.ones(len(df), dtype=bool)
        bias = selection_bias(own, report=report) if len(own) else 0.0
        raw_value = float(subset(project, y, won, report)["metrics"][primary])
        out["estimate"] = {
            "metric": primary,
            "raw": round(raw_value, 6),
            "selection_bias": bias,
            "value": round(raw_value + bias if lower else raw_value - bias, 6),
            "candidates": len(columns),
            "rows": int(report.sum()),
            "champion": round(float(subset(project, y, base, report)["metrics"][primary]), 6),
        }
    out["slices"] = _slices(project, y, X, df, correct={"champion": base["rows"], "challenger": won["rows"]})
    intervals: dict[str, Any] = {}
    for name in base["scorers"]:  # each scorer's change, paired on the same rows
        p_scorer, ci_scorer = paired_scores(base["scorers"][name], won["scorers"][name])
        intervals[name] = ci_scorer
        if name == primary:
            out["mcnemar_p"] = p_scorer
            out["p_metric"], out["ci"] = name, ci_scorer
    out["intervals"] = intervals
    if settings.gate.judge:
        out["judge"] = judge_pairs(project, raw, base["labels"], won["labels"])  # inputs as stored
    return Comparison(out, held_out, fixed, names)


def _slices(
    project: Project, y: np.ndarray, X: pd.DataFrame, df: pd.DataFrame, correct: dict[str, np.ndarray]
) -> dict[str, dict[str, float]]:
    """Both models' row scores per slice: ``gate.slices`` (``class``, the true label, or a
    categorical feature) and, with a golden set, the production and golden rows."""
    slices: dict[str, dict[str, float]] = {}
    for name in project.settings.gate.slices:  # "class" (the true label) or a categorical feature
        keys = y if name == "class" else X[name].astype(str).to_numpy()
        for value in sorted(set(keys)):
            mask = keys == value
            slices[f"{name}={value}"] = {
                "n": int(mask.sum()),
                "champion": float(correct["champion"][mask].mean()),
                "challenger": float(correct["challenger"][mask].mean()),
            }
    if "__key__" in df:  # production holdout and golden rows, each judged as a slice too
        source = (
            df["__key__"].astype(str).str.partition(":")[0].map({"golden": "golden"}).fillna("production")
        )
        if (source == "golden").any():
            for value in ("production", "golden"):
                mask = (source == value).to_numpy()
                if mask.any():
                    slices[f"set={value}"] = {
                        "n": int(mask.sum()),
                        "champion": float(correct["champion"][mask].mean()),
                        "challenger": float(correct["challenger"][mask].mean()),
                    }
    return slices
