"""Dynamic batching: the records of requests that wait at the same moment go to the model in one call.

A scikit-learn pipeline spends most of a small call on fixed costs: column checks, pandas
indexing, one joblib dispatch per transformer. On the demo's pipeline (2-core benchmark machine,
one OpenMP thread) one row took 5.3 ms, sixteen rows 5.5 ms and a hundred 7.1 ms. Under
concurrent load requests queue for the model anyway; the batcher hands that queue to the model
as one frame and gives each request its own rows back, so the fixed cost is paid once per queue
instead of once per request.

A lone request is never held back: with the default ``wait`` of 0 a batch is whatever is already
waiting when the model is free. Requests for different models (champion and canary) are
predicted in separate calls, each with the model the request chose, so a hot swap mid-batch
cannot mix versions. If a merged call fails, each request in it is predicted alone, so one bad
request fails alone.

>>> import asyncio
>>> from sklearn.dummy import DummyClassifier
>>> import pandas as pd
>>> model = DummyClassifier(strategy="prior").fit([[0], [1], [1]], ["no", "yes", "yes"])
>>> from driftloop.tasks import Classification
>>> batcher = Batcher(lambda records: pd.DataFrame(records), Classification(["no", "yes"]))
>>> async def two_requests():
...     return await asyncio.gather(batcher.predict(model, [{"x": 1}]),
...                                 batcher.predict(model, [{"x": 2}, {"x": 3}]))
>>> first, second = asyncio.run(two_requests())
>>> first.labels, second.labels, second.probabilities[0]
(['yes'], ['yes', 'yes'], [0.333333, 0.666667])
>>> batcher.calls, batcher.requests
(1, 2)
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, NamedTuple

import pandas as pd

from driftloop.tasks import Task

__all__ = ["Batcher", "Scored"]

log = logging.getLogger("driftloop.serving")


class Scored(NamedTuple):
    """One request's predictions, as plain Python lists (ready for JSON and the log)."""

    labels: list[str]
    confidences: list[float | None]  # None where the task has no confidence (regression)
    probabilities: list[list[float]]  # rounded to 6 places, aligned with the task's classes ([] if none)


class _Waiting(NamedTuple):
    model: Any
    records: list[dict[str, Any]]
    future: asyncio.Future[Scored]


class Batcher:
    """Merges concurrent requests' records into one prediction call per model.

    Parameters
    ----------
    frame
        Records -> the DataFrame the model takes (the schema's :meth:`FeatureSchema.frame`).
    task
        The project's task (:mod:`driftloop.tasks`): it predicts, and its classes order the
        probabilities.
    max_rows
        The most rows one call may hold. A single request larger than this is still predicted
        whole; ``1`` turns merging off (every request is its own call).
    wait
        Seconds the first waiting request may be held so that others can join. ``0`` (the
        default) batches only what is already waiting and never delays a lone request.
    executor
        Where calls run: ``None`` runs them on the event loop (fastest for small models), an
        executor keeps the loop free while a slow model predicts.
    """

    def __init__(
        self,
        frame: Callable[[list[dict[str, Any]]], pd.DataFrame],
        task: Task,
        *,
        max_rows: int = 1000,
        wait: float = 0.0,
        executor: Executor | None = None,
    ) -> None:
        if max_rows < 1:
            raise ValueError(f"The 'max_rows' of a Batcher must be at least 1. Got {max_rows!r} instead.")
        if wait < 0:
            raise ValueError(f"The 'wait' of a Batcher must be 0 or more seconds. Got {wait!r} instead.")
        self.frame, self.task = frame, task
        self.max_rows, self.wait, self.executor = max_rows, wait, executor
        self._waiting: deque[_Waiting] = deque()
        self._drainer: asyncio.Task[None] | None = None
        self.calls = 0  # model calls made
        self.requests = 0  # requests those calls held (requests / calls: how well merging works)

    async def predict(self, model: Any, records: list[dict[str, Any]]) -> Scored:
        """Predict ``records`` with ``model``, in one call with whatever else is waiting."""
        if self.max_rows == 1 and self.executor is None:  # merging off: no queue, no task hop
            (result,) = await self._call(model, [records])
            return result
        future: asyncio.Future[Scored] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Waiting(model, records, future))
        if self._drainer is None:
            self._drainer = asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            if self.wait:
                await asyncio.sleep(self.wait)
            while self._waiting:
                await self._run(self._take())
                if self._waiting and self.executor is None:
                    # the loop was busy predicting: let it read the requests that arrived meanwhile
                    await asyncio.sleep(0)
        finally:
            self._drainer = None

    def _take(self) -> list[_Waiting]:
        """The oldest waiting requests, up to ``max_rows`` rows (always at least one request)."""
        taken = [self._waiting.popleft()]
        rows = len(taken[0].records)
        while self._waiting and rows + len(self._waiting[0].records) <= self.max_rows:
            rows += len(self._waiting[0].records)
            taken.append(self._waiting.popleft())
        return taken

    async def _run(self, taken: list[_Waiting]) -> None:
        try:
            await self._run_groups(taken)
        except BaseException:  # cancelled at shutdown: no request may wait forever
            for item in (*taken, *self._waiting):
                _fail(item.future, RuntimeError("The server stopped before this request was predicted."))
            self._waiting.clear()
            raise

    async def _run_groups(self, taken: list[_Waiting]) -> None:
        groups: dict[int, list[_Waiting]] = {}
        for item in taken:  # one call per model object: a request keeps the model it chose
            groups.setdefault(id(item.model), []).append(item)
        for group in groups.values():
            try:
                results = await self._call(group[0].model, [item.records for item in group])
            except Exception as exc:
                if len(group) == 1:
                    _fail(group[0].future, exc)
                    continue
                log.warning(  # only the error's kind: its text may quote inputs (pii)
                    "A merged call for %d requests failed (%s); predicting each alone.",
                    len(group),
                    type(exc).__name__,
                )
                for item in group:
                    try:
                        (result,) = await self._call(item.model, [item.records])
                    except Exception as alone:
                        _fail(item.future, alone)
                    else:
                        _settle(item.future, result)
                continue
            for item, result in zip(group, results, strict=True):
                _settle(item.future, result)

    async def _call(self, model: Any, parts: list[list[dict[str, Any]]]) -> list[Scored]:
        self.calls += 1
        self.requests += len(parts)
        if self.executor is None:
            return self._score(model, parts)
        return await asyncio.get_running_loop().run_in_executor(self.executor, self._score, model, parts)

    def _score(self, model: Any, parts: list[list[dict[str, Any]]]) -> list[Scored]:
        records = parts[0] if len(parts) == 1 else [r for part in parts for r in part]
        labels, confidence, probs, _ = self.task.predict(model, self.frame(records))
        # one conversion to plain lists for the whole call, then slices per request
        label_list = [str(label) for label in labels]
        confidences = [None if c != c else c for c in confidence.tolist()]  # NaN: the task has none
        rounded = probs.round(6).tolist() if probs is not None else [[] for _ in label_list]
        out, start = [], 0
        for part in parts:
            end = start + len(part)
            out.append(Scored(label_list[start:end], confidences[start:end], rounded[start:end]))
            start = end
        return out


def _settle(future: asyncio.Future[Scored], result: Scored) -> None:
    if not future.done():  # a request whose client left may be cancelled already
        future.set_result(result)


def _fail(future: asyncio.Future[Scored], exc: Exception) -> None:
    if not future.done():
        future.set_exception(exc)
