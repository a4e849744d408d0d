"""What a task's bootstrap costs: the paired interval the gate and the watch compute, and the
watch's one-sided bounds of a kept model's scores, on the same labelled rows.

Each is timed two ways on the same resamples, with the figures checked equal: every resample
scored by the task's ``metrics`` afresh (what driftloop did before ``Task.subset_metrics``, and
what a bootstrap around any metric function does), and the per-row work done once
(``subset_metrics``; the extractor's paired test stacking both models' field counts). An entity
extractor's metrics match every field of every document, which dominates; a classifier's are
counts already, so its gain is small.

    .venv/bin/python benchmarks/bootstrap_speed.py [--rows 600]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from driftloop.demo.forms import FIELDS, TokenTagger, forms
from driftloop.evaluation import bootstrap_bounds, bootstrap_diff
from driftloop.tasks import Classification, Extraction, Task


def extraction(rows: int) -> tuple[Task, np.ndarray, np.ndarray, np.ndarray, None, str]:
    """Two taggers (one trained on layout A, one on B) on layout-B documents."""
    task = Extraction(FIELDS)
    docs = forms(rows, "B", seed=1)
    made = []
    for layout, seed in (("A", 0), ("B", 2)):
        train = forms(300, layout, seed=seed)
        made.append(task.predict(TokenTagger().fit(train[["text"]], train["fields"]), docs[["text"]]).labels)
    return task, docs["fields"].to_numpy(object), made[0], made[1], None, "f1_micro"


def classification(rows: int) -> tuple[Task, np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    rng = np.random.default_rng(0)
    classes = ["approve", "review", "deny"]
    probs = rng.dirichlet(np.ones(3), rows)
    made = np.array(classes, dtype=object)[probs.argmax(axis=1)]
    truth = np.where(rng.random(rows) < 0.7, made, rng.choice(classes, rows)).astype(object)
    other = np.where(rng.random(rows) < 0.8, made, rng.choice(classes, rows)).astype(object)
    return Classification(classes), truth, made, other, probs, "f1_macro"


def timed(work: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = work()
    return out, time.perf_counter() - start


def compare(
    task: Task, y: np.ndarray, a: np.ndarray, b: np.ndarray, probs: np.ndarray | None, metric: str
) -> list[tuple[str, float, float, bool]]:
    """(what, seconds afresh, seconds once, same figures) for the paired interval and the bounds."""
    slow_ci, slow = timed(lambda: bootstrap_diff(y, a, b, lambda t, q: task.metrics(t, q)[metric]))
    (_, fast_ci), fast = timed(lambda: task.paired(y, a, b, metric))
    out = [(f"paired interval of {metric}", slow, fast, bool(np.allclose(slow_ci, fast_ci)))]

    def afresh(rows: np.ndarray) -> dict[str, float]:
        return task.metrics(y[rows], b[rows], None if probs is None else probs[rows])

    slow_bounds, slow = timed(lambda: bootstrap_bounds(len(y), afresh, 0.95))
    fast_bounds, fast = timed(lambda: bootstrap_bounds(len(y), task.subset_metrics(y, b, probs), 0.95))
    same = json.dumps(slow_bounds, sort_keys=True) == json.dumps(fast_bounds, sort_keys=True)
    return [*out, ("watch bounds of every metric", slow, fast, same)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=600, help="labelled rows (default 600)")
    args = parser.parse_args()
    print(f"{args.rows} labelled rows, 500 resamples, seconds")
    print(f"{'task':<16}{'what':<34}{'afresh':>9}{'once':>9}{'faster':>8}  same figures")
    for make in (extraction, classification):
        task, *case = make(args.rows)
        for what, slow, fast, same in compare(task, *case):
            print(f"{task.name:<16}{what:<34}{slow:>9.2f}{fast:>9.3f}{slow / fast:>7.0f}x  {same}")


if __name__ == "__main__":
    main()
