"""What every task promises beside its own metrics: the fast paths give the slow paths' figures."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from driftloop.demo.forms import FIELDS, forms
from driftloop.tasks import Classification, Extraction, Generation, Regression, Task

WORDS = ["deploy", "docker", "kubernetes", "today", "the", "cluster", "with", "rust", "async", "model"]


def _edited(rng: np.random.Generator, fields: dict[str, Any]) -> dict[str, Any]:
    """A prediction of ``fields`` with some fields missed, invented, cut short or wrong."""
    out: dict[str, Any] = {}
    for name, value in fields.items():
        draw = rng.random()
        if draw < 0.15:
            out[name] = None  # missed
        elif draw < 0.25:
            out[name] = "12.00" if value is None else str(value)[: max(1, len(str(value)) // 2)]
        elif draw < 0.35:
            out[name] = "X99-0000"
        else:
            out[name] = value
    return out


def _cases(n: int) -> list[tuple[Task, Any, Any, Any]]:
    """(task, labels, predictions, probabilities) of ``n`` rows for every task."""
    rng = np.random.default_rng(7)
    classes = ["a", "b", "c"]
    probs = rng.dirichlet(np.ones(3), n)
    made = np.array(classes, dtype=object)[probs.argmax(axis=1)]
    truth = np.where(rng.random(n) < 0.7, made, rng.choice(classes, n)).astype(object)
    y = rng.normal(50, 10, n)
    documents = [json.loads(f) for f in forms(n, "A", seed=3)["fields"]]
    extracted = [_edited(rng, d) for d in documents]
    # a correction names only the fields the reviewer looked at: some are judged, some not
    judged = [{k: v for k, v in d.items() if rng.random() < 0.8} or d for d in documents]
    texts = [" ".join(rng.choice(WORDS, int(rng.integers(0, 9)))) for _ in range(2 * n)]
    return [
        (Classification(classes, positive_class="c"), truth, made, probs),
        (Regression(), y, y + rng.normal(0, 5, n), None),
        (
            Extraction(FIELDS),
            np.array([json.dumps(d) for d in judged], dtype=object),
            np.array([json.dumps(d) for d in extracted], dtype=object),
            None,
        ),
        (Generation(), np.array(texts[:n], dtype=object), np.array(texts[n:], dtype=object), None),
    ]


@pytest.mark.parametrize("case", range(4), ids=["classification", "regression", "extraction", "generation"])
def test_a_tasks_subset_metrics_are_its_metrics_of_the_subset(case: int) -> None:
    """The post-deploy watch bounds a kept model's scores by resampling row numbers through
    ``subset_metrics``, which does the per-row work once: each resample must get exactly what
    ``metrics`` gives for those rows (repeats included), and an empty one what an empty set does."""
    task, truth, made, probs = _cases(120)[case]
    of = task.subset_metrics(truth, made, probs)
    rng = np.random.default_rng(1)
    for rows in [rng.integers(0, 120, 120) for _ in range(5)] + [
        np.arange(120),
        np.arange(3),
        np.array([], int),
    ]:
        chosen = None if probs is None else probs[rows]
        expected = task.metrics(truth[rows], made[rows], chosen)
        got = of(rows)
        assert got.keys() == expected.keys(), task.name
        for name, value in expected.items():
            assert got[name] == pytest.approx(value, nan_ok=True, abs=1e-12), (task.name, name, len(rows))


def test_an_extractors_paired_interval_is_that_of_its_metric_on_each_resample() -> None:
    """Extraction's paired test stacks both models' field counts once; its interval is the one
    the metric computed afresh on each of the same resamples gives (as bootstrap_diff draws them)."""
    task, truth, made, _ = _cases(80)[2]
    rng = np.random.default_rng(2)
    other = np.array([json.dumps(_edited(rng, json.loads(m))) for m in made], dtype=object)
    draws = np.random.default_rng(0)  # bootstrap_diff's resamples
    resamples = [draws.integers(0, 80, 80) for _ in range(500)]
    slow = [(task.metrics(truth[r], made[r]), task.metrics(truth[r], other[r])) for r in resamples]
    for metric in ("f1_micro", "doc_exact_match", "recall.dob"):
        _, ci = task.paired(truth, made, other, metric)
        diffs = [b[metric] - a[metric] for a, b in slow]
        assert ci == pytest.approx(tuple(np.quantile(diffs, [0.025, 0.975])), abs=1e-12), metric


def test_roc_auc_is_sklearns_per_class_with_ties() -> None:
    """The classifier's ROC AUC (ranks, every class against the rest) is scikit-learn's."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(4)
    task = Classification(["a", "b", "c"])
    probs = np.round(rng.dirichlet(np.ones(3), 300), 1)  # rounded: many ties
    truth = rng.choice(["a", "b", "c"], 300, p=[0.5, 0.3, 0.2]).astype(object)
    expected = np.mean([roc_auc_score(truth == c, probs[:, j]) for j, c in enumerate(task.classes)])
    assert task.metrics(truth, truth, probs)["roc_auc"] == pytest.approx(expected, abs=1e-12)
    two = Classification(["no", "yes"])
    p = np.c_[1 - probs[:, 0], probs[:, 0]]
    y = np.where(truth == "a", "yes", "no").astype(object)
    assert two.metrics(y, y, p)["roc_auc"] == pytest.approx(roc_auc_score(y == "yes", p[:, 1]), abs=1e-12)
    only = np.full(300, "a", dtype=object)  # one class alone: no AUC to take
    assert np.isnan(task.metrics(only, only, probs)["roc_auc"])
