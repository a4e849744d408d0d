"""Dynamic batching: concurrent requests share model calls, and each gets exactly its own rows."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from driftloop.demo.data import applicants
from driftloop.demo.scenario import serve_in_thread
from driftloop.project import Project
from driftloop.serving import Batcher, Scored, create_app
from driftloop.tasks import Classification
from driftloop.training import train

from .conftest import make_project
from .helpers import with_serving

CLASSES = ["no", "yes"]
TASK = Classification(CLASSES)


class Logistic:
    """A fitted classifier of one column ``x``: P(yes) = sigmoid(scale * x). Raises on x < 0."""

    classes_ = np.array(CLASSES)

    def __init__(self, scale: float = 1.0, gate: threading.Event | None = None) -> None:
        self.scale, self.gate = scale, gate
        self.calls: list[int] = []  # rows per call, recorded before the call can fail

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        if self.gate is not None:
            self.gate.wait(10)
        self.calls.append(len(X))
        x = X["x"].to_numpy(dtype=float)
        if (x < 0).any():
            raise ValueError(f"x must not be negative. Got {x.min()} instead.")
        p = 1 / (1 + np.exp(-self.scale * x))
        return np.c_[1 - p, p]


def frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame({"x": [r["x"] for r in records]})


def alone(model: Logistic, records: list[dict[str, Any]]) -> Scored:
    """What one call with only these records gives: the reference every merged answer must equal
    (made by a twin of ``model``, so the calls counted on ``model`` are the batcher's alone)."""
    labels, confidence, probs, _ = TASK.predict(Logistic(model.scale), frame(records))
    return Scored([str(v) for v in labels], confidence.tolist(), probs.round(6).tolist())


async def concurrently(batcher: Batcher, work: list[tuple[Any, list[dict[str, Any]]]]) -> list[Any]:
    return await asyncio.gather(*(batcher.predict(m, r) for m, r in work), return_exceptions=True)


def test_concurrent_requests_share_one_call_and_get_their_own_rows() -> None:
    model = Logistic()
    batcher = Batcher(frame, TASK)
    work = [(model, [{"x": float(i)}, {"x": i + 0.5}][: 1 + i % 2]) for i in range(6)]
    results = asyncio.run(concurrently(batcher, work))
    assert results == [alone(model, records) for _, records in work]
    assert model.calls == [9] and (batcher.calls, batcher.requests) == (1, 6)


def test_the_demo_pipeline_gives_identical_answers_merged_or_alone(trained: Project) -> None:
    model = trained.registry.load(trained.name, "1")
    records, _ = trained.schema.validate(
        applicants(40, "B", seed=3).drop(columns="approved").to_dict(orient="records")
    )
    parts = [records[i : i + n] for i, n in zip(range(0, 40, 10), (1, 3, 10, 7), strict=True)]
    batcher = Batcher(trained.schema.frame, trained.task)
    merged = asyncio.run(concurrently(batcher, [(model, part) for part in parts]))
    assert batcher.calls == 1
    for part, result in zip(parts, merged, strict=True):
        labels, confidence, probs, _ = trained.task.predict(model, trained.schema.frame(part))
        assert result.labels == [str(v) for v in labels]
        assert result.confidences == confidence.tolist()
        assert result.probabilities == probs.round(6).tolist()


def test_a_request_that_breaks_the_model_fails_alone() -> None:
    model = Logistic()
    batcher = Batcher(frame, TASK)
    work = [(model, [{"x": 1.0}]), (model, [{"x": 2.0}, {"x": -1.0}]), (model, [{"x": 3.0}])]
    first, broken, third = asyncio.run(concurrently(batcher, work))
    assert first == alone(model, [{"x": 1.0}]) and third == alone(model, [{"x": 3.0}])
    assert isinstance(broken, ValueError) and "Got -1.0 instead" in str(broken)
    assert model.calls == [4, 1, 2, 1]  # the merged call failed, then each request alone


def test_requests_for_different_models_never_share_a_call() -> None:
    champion, canary = Logistic(scale=1.0), Logistic(scale=-2.0)
    batcher = Batcher(frame, TASK)
    work = [(champion if i % 2 else canary, [{"x": float(i)}]) for i in range(6)]
    results = asyncio.run(concurrently(batcher, work))
    assert results == [alone(m, r) for m, r in work]
    assert champion.calls == [3] and canary.calls == [3]


def test_max_rows_caps_a_call_but_a_large_request_stays_whole() -> None:
    model = Logistic()
    batcher = Batcher(frame, TASK, max_rows=5)
    work = [(model, [{"x": 1.0}, {"x": 2.0}]) for _ in range(4)] + [(model, [{"x": 0.5}] * 7)]
    results = asyncio.run(concurrently(batcher, work))
    assert results == [alone(m, r) for m, r in work]
    assert model.calls == [4, 4, 7]


def test_merging_off_makes_one_call_per_request() -> None:
    model = Logistic()
    batcher = Batcher(frame, TASK, max_rows=1)
    asyncio.run(concurrently(batcher, [(model, [{"x": 1.0}, {"x": 2.0}])] * 3))
    assert model.calls == [2, 2, 2] and batcher.calls == 3


def test_wait_holds_the_first_request_so_later_ones_join() -> None:
    async def staggered(wait: float) -> list[int]:
        model = Logistic()
        batcher = Batcher(frame, TASK, wait=wait)
        first = asyncio.ensure_future(batcher.predict(model, [{"x": 1.0}]))
        await asyncio.sleep(0.02)
        await asyncio.gather(first, batcher.predict(model, [{"x": 2.0}]))
        return model.calls

    assert asyncio.run(staggered(0.5)) == [2]
    assert asyncio.run(staggered(0.0)) == [1, 1], "with no wait a lone request is not held back"


def test_in_a_thread_requests_arriving_during_a_call_join_the_next() -> None:
    gate = threading.Event()
    model = Logistic(gate=gate)

    async def run() -> list[Scored]:
        with ThreadPoolExecutor(1) as executor:
            batcher = Batcher(frame, TASK, executor=executor)
            first = asyncio.ensure_future(batcher.predict(model, [{"x": 1.0}]))
            await asyncio.sleep(0.05)  # the first call is running (held at the gate)
            later = [asyncio.ensure_future(batcher.predict(model, [{"x": float(i)}])) for i in range(3)]
            await asyncio.sleep(0.05)
            gate.set()
            return list(await asyncio.gather(first, *later))

    results = asyncio.run(run())
    assert model.calls == [1, 3]
    assert results[1:] == [alone(model, [{"x": float(i)}]) for i in range(3)]


def test_a_cancelled_drain_leaves_no_request_waiting_forever() -> None:
    gate = threading.Event()
    model = Logistic(gate=gate)

    async def run() -> list[Any]:
        with ThreadPoolExecutor(1) as executor:
            batcher = Batcher(frame, TASK, executor=executor)
            running = asyncio.ensure_future(batcher.predict(model, [{"x": 1.0}]))
            await asyncio.sleep(0.05)
            queued = asyncio.ensure_future(batcher.predict(model, [{"x": 2.0}]))
            await asyncio.sleep(0)
            assert batcher._drainer is not None
            batcher._drainer.cancel()
            out = await asyncio.wait_for(asyncio.gather(running, queued, return_exceptions=True), 5)
            gate.set()
            await batcher.predict(model, [{"x": 3.0}])  # the next request starts a new drain
            return out

    for outcome in asyncio.run(run()):
        assert isinstance(outcome, RuntimeError) and "stopped before" in str(outcome)
    assert model.calls == [1, 1], "the failed requests left the queue: only the new one ran"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_rows": 0}, "The 'max_rows' of a Batcher must be at least 1. Got 0 instead."),
        ({"wait": -0.1}, "The 'wait' of a Batcher must be 0 or more seconds. Got -0.1 instead."),
    ],
)
def test_bad_parameters_raise_the_standard_sentence(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as info:
        Batcher(frame, TASK, **options)
    assert str(info.value) == message


def test_over_http_concurrent_requests_are_merged_logged_and_answered_exactly(tmp_path: Path) -> None:
    # a short wait makes merging certain in this test; under real load it happens without one
    project = with_serving(make_project(tmp_path / "project"), dynamic_batch_wait="50ms")
    train(project)
    model = project.registry.load(project.name, "1")
    records = applicants(64, "B", seed=11).drop(columns="approved").to_dict(orient="records")
    answers: dict[int, dict[str, Any]] = {}
    with serve_in_thread(create_app(project, background=False)) as url:

        def client(start: int) -> None:
            with httpx.Client(base_url=url, timeout=30) as c:
                for i in range(start, 64, 8):
                    body = records[i] if i % 3 else {"records": [records[i]]}
                    r = c.post("/predict", json=body)
                    assert r.status_code == 200, r.text
                    answers[i] = r.json()["predictions"][0]

        threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        metrics = httpx.get(f"{url}/metrics").text
    calls = int(next(v for k, v in _samples(metrics) if k.startswith("driftloop_model_calls_total")))
    merged = int(next(v for k, v in _samples(metrics) if k.startswith("driftloop_model_call_requests_total")))
    assert merged == 64 and calls < 64, (calls, merged)
    clean, _ = project.schema.validate(records)
    labels, confidence, _, _ = project.task.predict(model, project.schema.frame(clean))
    for i in range(64):
        assert answers[i]["label"] == labels[i] and answers[i]["confidence"] == confidence[i]
        stored = project.store.prediction(answers[i]["prediction_id"])
        assert stored is not None and stored["inputs"] == clean[i] and stored["prediction"] == labels[i]
    project.close()


def _samples(metrics: str) -> list[tuple[str, str]]:
    return [tuple(line.rsplit(" ", 1)) for line in metrics.splitlines() if line and not line.startswith("#")]  # type: ignore[misc]
