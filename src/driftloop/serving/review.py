"""The review queue over HTTP, for the review page and any other tool: ``GET /review/next``,
``POST /review/{item_id}`` (a label), ``POST /review/{item_id}/skip``, ``POST /review/undo``
(the ``review`` scope; the reviewer is the key's name, ``local`` on an open laptop API), and
``GET /review/queue`` and ``GET /review/agreement`` (the ``read`` scope)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Path, Request
from starlette.concurrency import run_in_threadpool

from driftloop import agreement, review
from driftloop.exceptions import DriftloopError, NotFoundError, SchemaError
from driftloop.identity import ApiKey
from driftloop.project import Project
from driftloop.views import jsonable

__all__ = ["add_review_routes"]

OPEN_REVIEWER = "local"
MAX_ID = 2**31 - 1  # an INTEGER column on PostgreSQL


def _json(value: Any) -> dict[str, Any]:
    out: dict[str, Any] = jsonable(value)
    return out


def add_review_routes(
    app: FastAPI,
    project: Project,
    require: Callable[[str | None], Callable[[Request], Awaitable[ApiKey | None]]],
    read_json: Callable[[Request], Awaitable[Any]],
) -> None:
    def who(key: ApiKey | None) -> str:
        return key.name if key is not None else OPEN_REVIEWER

    def fail(exc: DriftloopError) -> HTTPException:
        status = 404 if isinstance(exc, NotFoundError) else 422 if isinstance(exc, SchemaError) else 409
        return HTTPException(status, str(exc))

    @app.get("/review/next")
    async def review_next(key: ApiKey | None = Depends(require("review"))) -> dict[str, Any]:
        """The most useful open item this reviewer has not answered (the queue is topped up to the
        day's budget when it runs dry); ``item`` is null when there is nothing for them."""

        def pick() -> dict[str, Any]:
            item = review.next_item(project, who(key))
            if item is None:  # top the queue up; another reviewer's request may be doing so too
                review.fill(project)
                item = review.next_item(project, who(key))
            return {
                "reviewer": who(key),
                "item": item,
                "progress": item["progress"] if item else review.queue_state(project, who(key)),
            }

        return _json(await run_in_threadpool(pick))

    @app.post("/review/undo")
    async def review_undo(key: ApiKey | None = Depends(require("review"))) -> dict[str, Any]:
        """Take back this reviewer's last answer (its feedback row too)."""
        undone = await run_in_threadpool(review.undo, project, who(key))
        if undone is None:
            raise HTTPException(409, f"Reviewer '{who(key)}' has no answer to undo.")
        return _json(undone)

    @app.post("/review/{item_id}")
    async def review_submit(
        request: Request,
        item_id: int = Path(ge=1, le=MAX_ID),
        key: ApiKey | None = Depends(require("review")),
    ) -> dict[str, Any]:
        """Label the item (``{"label": ...}``; a generator's: ``{"rating": 4, "tags": [...],
        "preferred": "..."}``, any of them; an extractor's: a correction, ``{"fields": {...},
        "confirm": "rest"}``): stored as feedback (and an annotation) whose source
        is the reviewer; the answer shows the other reviewers' labels of it, hidden until now."""
        body = await read_json(request)
        generation, extraction = project.task.name == "generation", project.task.name == "extraction"
        keys = (
            {"preferred", "rating", "tags"}
            if generation
            else {"fields", "confirm"}
            if extraction
            else {"label"}
        )
        if not isinstance(body, dict) or not keys & set(body) or set(body) - keys:
            example = (
                '{"rating": 4, "tags": ["dated"]}'
                if generation
                else '{"fields": {"dob": "1990-03-12"}, "confirm": "rest"}'
                if extraction
                else '{"label": "yes"}'
            )
            raise HTTPException(
                422, f"The body must be an object with {sorted(keys)} only, such as {example}."
            )
        try:
            return _json(
                await run_in_threadpool(
                    lambda: review.answer(
                        project,
                        item_id,
                        who(key),
                        body if extraction else body.get("preferred" if generation else "label"),
                        rating=body.get("rating"),
                        tags=body.get("tags"),
                    )
                )
            )
        except DriftloopError as exc:
            raise fail(exc) from None

    @app.post("/review/{item_id}/skip")
    async def review_skip(
        item_id: int = Path(ge=1, le=MAX_ID), key: ApiKey | None = Depends(require("review"))
    ) -> dict[str, Any]:
        """Pass on the item; it stays in the queue for other reviewers."""
        try:
            return _json(
                await run_in_threadpool(lambda: review.answer(project, item_id, who(key), skip=True))
            )
        except DriftloopError as exc:
            raise fail(exc) from None

    @app.get("/review/queue", dependencies=[Depends(require("read"))])
    async def review_queue() -> dict[str, Any]:
        """Open items, items still waiting for a reviewer, answers today."""
        return {"model": project.name, **await run_in_threadpool(review.queue_state, project)}

    @app.get("/review/agreement", dependencies=[Depends(require("read"))])
    async def review_agreement() -> dict[str, Any]:
        """Each reviewer's Cohen's kappa with the others on shared items, and with trusted labels."""
        return _json(await run_in_threadpool(agreement.agreement, project))
