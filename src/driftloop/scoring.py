"""How a retrain scores champion and challengers on the same evaluation rows.

:func:`score_outputs` keeps, per model, the task's metrics, each row's score (1/0 right, or
the absolute error), its labels and probabilities and every custom scorer's value per row, so
:func:`subset` can restrict all of it to any rows (the half that chooses, the half that
judges, one backtest fold) without predicting again. :func:`paired_scores` compares two
models' scorer values, :func:`judge_pairs` asks a user's judge which output it prefers, and
:func:`selection_rows` says which rows choose among several candidates.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from driftloop.config import is_scorer
from driftloop.custom import metric_frame
from driftloop.evaluation import bootstrap_diff, wilcoxon
from driftloop.exceptions import WorkflowError
from driftloop.plugins import load_function
from driftloop.project import Project
from driftloop.tasks import Predictions

__all__ = [
    "is_scorer",
    "judge_pairs",
    "logged_score",
    "logged_scorer_values",
    "paired_scores",
    "score_outputs",
    "scorer_values",
    "selection_rows",
    "subset",
    "with_scorers",
]


def score_outputs(project: Project, y: Any, made: Predictions, raw: pd.DataFrame) -> dict[str, Any]:
    """One model's outputs on the evaluation rows, scored: metrics, per-row scores, labels,
    probabilities and custom scorers' values (``raw``: the inputs as stored)."""
    task = project.task
    return {
        "metrics": task.metrics(y, made.labels, made.probabilities),
        "rows": task.row_scores(y, made.labels),  # per row: 1/0 right, or the absolute error
        "labels": made.labels,
        "probabilities": made.probabilities,
        "scorers": scorer_values(project, raw, made),
    }


def scorer_values(project: Project, X: pd.DataFrame, made: Any) -> dict[str, np.ndarray]:
    """Every custom metric with a function (a scorer) on a model's outputs for ``X``, per row."""
    settings = project.settings
    if not any(m.function and m.kind == "numeric" for m in settings.metrics.values()):
        return {}
    outputs = project.task.output_frame(made.labels, made.confidence, made.probabilities)
    frame = metric_frame(settings, X.reset_index(drop=True), outputs)
    return {
        f"metric.{name}": frame[f"metric.{name}"].to_numpy("float64")
        for name, spec in settings.metrics.items()
        if spec.function and spec.kind == "numeric"
    }


def logged_scorer_values(project: Project, inputs: list[Any], outputs: list[Any], metric: str) -> np.ndarray:
    """The scorer ``metric`` (``metric.<name>``) of each logged output for its logged inputs (NaN
    where it cannot score one)."""
    if not inputs:
        return np.zeros(0)
    frame = project.schema.frame(inputs, strict=False, decode=False)  # as stored: what scorers see
    made = project.task.output_frame(outputs, [None] * len(outputs))
    values: np.ndarray = metric_frame(project.settings, frame, made)[metric].to_numpy("float64")
    return values


def logged_score(project: Project, rows: list[dict[str, Any]], metric: str) -> float | None:
    """``metric`` of outputs as they were logged (``rows`` with ``inputs``, ``prediction`` and, where
    known, ``label`` and ``probabilities``): a scorer (``metric.<name>``) on every row, labelled or
    not; a metric of the task on the rows with a label. None when no row can be scored."""
    if is_scorer(metric):
        values = logged_scorer_values(
            project, [r["inputs"] for r in rows], [r["prediction"] for r in rows], metric
        )
        return float(np.nanmean(values)) if np.isfinite(values).any() else None
    labelled = [r for r in rows if r.get("label") is not None]
    if not labelled:
        return None
    value = project.task.metrics(
        [r["label"] for r in labelled],
        [r["prediction"] for r in labelled],
        [r.get("probabilities") for r in labelled],
    ).get(metric)
    return None if value is None else float(value)


def with_scorers(metrics: dict[str, float], scorers: dict[str, np.ndarray]) -> dict[str, float]:
    means = {k: float(np.nanmean(v)) if np.isfinite(v).any() else float("nan") for k, v in scorers.items()}
    return {**metrics, **means}


def subset(project: Project, y: Any, scored: dict[str, Any], mask: np.ndarray) -> dict[str, Any]:
    """``scored`` restricted to the rows of ``mask``."""
    probabilities = scored["probabilities"]
    part = {
        "labels": scored["labels"][mask],
        "rows": scored["rows"][mask],
        "probabilities": None if probabilities is None else probabilities[mask],
        "scorers": {k: v[mask] for k, v in scored["scorers"].items()},
    }
    metrics = project.task.metrics(y[mask], part["labels"], part["probabilities"])
    return {"metrics": with_scorers(metrics, part["scorers"]), **part}


def paired_scores(a: np.ndarray, b: np.ndarray) -> tuple[float | None, tuple[float, float] | None]:
    """Wilcoxon p-value and the 95 % bootstrap interval of ``mean(b) - mean(a)`` for a scorer's
    values of two models on the same rows (rows either cannot score are left out).

    >>> a, b = np.array([0.1, 0.2, 0.3, 0.2, 0.1, 0.2]), np.array([0.6, 0.7, 0.8, 0.7, 0.9, 0.6])
    >>> p, ci = paired_scores(a, b)
    >>> round(p, 4), ci[0] > 0
    (0.0312, True)
    """
    both = np.isfinite(a) & np.isfinite(b)
    a, b = a[both], b[both]
    if not len(a):
        return None, None
    n, stacked = len(a), np.concatenate([a, b])
    rows = np.arange(n)
    return wilcoxon(a, b), bootstrap_diff(rows, rows, rows + n, lambda _, q: float(stacked[q].mean()))


def judge_pairs(
    project: Project, X: pd.DataFrame, champion: np.ndarray, challenger: np.ndarray
) -> dict[str, Any]:
    """The judge's pairwise preference (``gate.judge``) between champion and challenger outputs
    for the same inputs: wins, losses and ties of the challenger, its win rate (a tie is half a
    win), the two-sided sign test over the rows that were not ties, and the first rationales.

    The judge is called as ``judge(inputs, first, second)`` and returns, per row, ``"first"``,
    ``"second"`` or ``"tie"`` (or a dict with ``"preferred"`` and ``"rationale"``); on every
    other row the challenger is shown first, so a judge that favours a position favours neither.
    """
    policy = project.settings.gate
    assert policy.judge is not None
    fn = load_function(policy.judge, project.settings.root, "gate.judge")
    swap = np.arange(len(X)) % 2 == 1
    first = np.where(swap, challenger, champion).tolist()
    second = np.where(swap, champion, challenger).tolist()
    verdicts = list(fn(X.reset_index(drop=True), first, second))
    if len(verdicts) != len(X):
        raise WorkflowError(
            f"The judge {policy.judge!r} must return one verdict per row ({len(X)}). Got {len(verdicts)}."
        )
    wins = losses = ties = 0
    rationales: list[dict[str, Any]] = []
    for i, verdict in enumerate(verdicts):
        said = verdict.get("preferred") if isinstance(verdict, dict) else verdict
        if said not in ("first", "second", "tie"):
            raise WorkflowError(
                f"The judge {policy.judge!r} must answer 'first', 'second' or 'tie' for each row. "
                f"Got {said!r:.80} for row {i}."
            )
        picked = (
            "tie" if said == "tie" else ("challenger" if (said == "second") != bool(swap[i]) else "champion")
        )
        wins += picked == "challenger"
        losses += picked == "champion"
        ties += picked == "tie"
        if isinstance(verdict, dict) and verdict.get("rationale") and len(rationales) < 20:
            rationales.append({"row": i, "preferred": picked, "rationale": str(verdict["rationale"])[:500]})
    decided = wins + losses
    p = float(stats.binomtest(wins, decided, 0.5).pvalue) if decided else 1.0
    return {
        "wins": wins,
        "losses": losses,
        "ties": ties,
        "win_rate": (wins + ties / 2) / len(X) if len(X) else float("nan"),
        "p_value": p,
        "rationales": rationales,
    }


def selection_rows(production: np.ndarray, candidates: int, min_rows: int) -> np.ndarray | None:
    """Which evaluation rows choose among several candidates (every other production row in
    time order, so both halves cover the same period), or None when there is one candidate or
    too few rows to give each half ``min_rows``: then all rows choose and judge, with the p-value
    corrected for the number compared.

    >>> selection_rows(np.arange(6), candidates=3, min_rows=3).tolist()
    [0, 2, 4]
    >>> selection_rows(np.arange(5), candidates=3, min_rows=3) is None
    True
    """
    if candidates < 2 or len(production) < 2 * min_rows:
        return None
    return production[0::2]
