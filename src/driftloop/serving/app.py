"""The HTTP API: validate, predict, log durably, take feedback, report.

Routes: ``POST /predict``, ``POST /feedback``, ``GET /health``, ``GET /models``,
``POST /models/reload``, ``GET /metrics`` (Prometheus text); the monitoring reads ``GET /status``,
``/windows``, ``/alerts``, ``/runs``, ``/decisions``, ``/drift`` and ``/shadow`` (JSON, the
``read`` scope; the same dicts as ``--json`` on the commands, :mod:`driftloop.views`); the
dashboard ``GET /`` with its sign-in form (:mod:`driftloop.serving.pages`).

API keys come from the environment variable ``DRIFTLOOP_API_KEYS`` as
``name:key=scope+scope;name2:key2=scope`` with scopes ``predict``, ``feedback``, ``review``,
``read`` and ``admin`` (admin implies the others), sent as ``Authorization: Bearer <key>`` (the scheme in any
case) or ``X-API-Key: <key>``. With keys set every route but ``/health`` needs one, the OpenAPI
schema and the docs pages included; a label's stored source is the sending key's name
(:mod:`driftloop.identity`). When it is unset the API is open, for a laptop: then it answers
only requests whose Host header is a loopback name, and sources are whatever clients say.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import hmac
import json
import logging
import os
import random
import re
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from driftloop import custom, views
from driftloop.annotations import parse_item, resolve
from driftloop.config import parse_duration
from driftloop.datasets import stable_fraction
from driftloop.exceptions import ConfigError
from driftloop.identity import ApiKey, parse_api_keys, stored_source
from driftloop.ids import new_ids
from driftloop.locks import monitor_lock
from driftloop.project import Project
from driftloop.serving.background import monitor_when_holding
from driftloop.serving.batcher import Batcher
from driftloop.serving.bodies import (
    MAX_META_CHARS,
    MAX_META_KEYS,
    BadRequest,
    feedback_problems,
    request_metadata,
)
from driftloop.serving.http import Guard
from driftloop.serving.limits import KeyGuesses, RateLimiter, client, parse_rate, retry_after
from driftloop.serving.logproc import ProcessLogWriter
from driftloop.serving.metrics import Metrics, prometheus_text
from driftloop.serving.pages import SESSION_COOKIE, Revoked, session_identity
from driftloop.serving.slots import LoadedModel, ModelSlot
from driftloop.serving.writer import STORE_REFUSES, LogBatch, LogUnavailable, LogWriter, QueueFull
from driftloop.tasks import probability_keys
from driftloop.views import jsonable

__all__ = ["Scope", "app_from_environment", "create_app", "parse_api_keys"]

log = logging.getLogger("driftloop.serving")
Scope = str
JSON_TYPES = ("application/json", "application/")  # application/json, application/*+json


def _shadow_score(
    project: Project, model: LoadedModel, records: list[dict[str, Any]], ids: list[str], stats: Metrics
) -> None:
    """Score the same rows with the challenger; log its outputs against the same prediction ids."""
    try:
        labels, confidence, probs, _ = project.task.predict(model.model, project.schema.frame(records))
        now = time.time()
        project.store.insert_shadow(
            [
                {
                    "prediction_id": pid,
                    "model": project.name,
                    "model_version": model.version,
                    "ts": now,
                    "prediction": str(labels[i]),
                    "confidence": None if confidence[i] != confidence[i] else float(confidence[i]),
                    "probabilities": {}
                    if probs is None
                    else {
                        c: round(float(probs[i, j]), 6)
                        for j, c in enumerate(probability_keys(project.task))
                        if probs[i, j] == probs[i, j]
                    },
                }
                for i, pid in enumerate(ids)
            ]
        )
        with stats.lock:
            stats.shadow += len(ids)
    except Exception as exc:  # the shadow never hurts the served path
        with stats.lock:
            stats.shadow_errors += 1
        log.error("Shadow scoring with version %s failed: %s", model.version, exc)


# the API docs page: its own files and Swagger UI's inline start-up script only; never framed
DOCS_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self' 'unsafe-inline'; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
}


def create_app(project: Project, *, background: bool = True, monitor: bool = False) -> FastAPI:
    """The FastAPI app for a project. ``background`` starts the champion poller; ``monitor`` the
    scheduled monitoring pass (which can also queue retrains)."""
    settings = project.settings.serving
    keys = parse_api_keys(os.environ.get("DRIFTLOOP_API_KEYS"))
    pii_key = os.environ.get("DRIFTLOOP_PII_KEY", "").encode() or None
    if any(rule == "hash" for rule in project.schema.pii.values()) and pii_key is None:
        raise ConfigError(
            'Features marked pii = "hash" need a secret key: set the environment variable DRIFTLOOP_PII_KEY.'
        )
    unknown = sorted(set(settings.rate_limits) - {k.name for k in keys.values()})
    if keys and unknown:
        raise ConfigError(
            f"serving.rate_limits names {unknown}, which no key in DRIFTLOOP_API_KEYS has; the "
            f"keys are {sorted(k.name for k in keys.values())}."
        )
    limiter = RateLimiter(
        parse_rate(settings.rate_limit), {n: parse_rate(r) for n, r in settings.rate_limits.items()}
    )
    guesses = KeyGuesses(settings.auth_failures, settings.auth_lockout)
    revoked = Revoked(project.store)  # sessions signed out, on any worker
    slot = ModelSlot(project)
    challenger = ModelSlot(project, alias="challenger")  # shadow scoring and canary traffic
    routing: dict[str, Any] = {"canary": None}  # (version, share) of an active canary rollout

    def refresh_routing() -> None:
        active = project.store.rollout(project.name)
        routing["canary"] = (active["version"], float(active["share"])) if active else None
        if active or settings.shadow_share > 0 or challenger.current is not None:
            challenger.refresh()

    predictor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="driftloop-predict")
    batcher = Batcher(  # concurrent requests' records go to the model in one call
        project.schema.frame,
        project.task,
        max_rows=settings.dynamic_batch_rows if settings.dynamic_batching else 1,
        wait=settings.dynamic_batch_wait if settings.dynamic_batching else 0.0,
        executor=predictor if settings.predict_in == "thread" else None,
    )
    writer: LogWriter | ProcessLogWriter
    store = project.store
    if settings.log_writer == "process" and not store.url.endswith(":memory:"):
        writer = ProcessLogWriter(  # the child opens the store exactly as this process did
            store.url,
            mode=settings.log_mode,
            max_queue=settings.log_queue_size,
            synchronous=store.synchronous,
        )
    else:  # one process: a writer thread (an in-memory database cannot be shared with a child)
        writer = LogWriter(store, mode=settings.log_mode, max_queue=settings.log_queue_size)
    stats = Metrics()
    stop = threading.Event()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if isinstance(writer, ProcessLogWriter):
            await writer.start()
        else:
            writer.start()
        try:
            await run_in_threadpool(slot.refresh)
        except Exception as exc:
            log.error("No champion could be loaded at start: %s", exc)
        try:
            await run_in_threadpool(refresh_routing)
        except Exception as exc:
            log.error("No challenger could be loaded at start: %s", exc)
        # What is loaded by now (libraries, models) lives as long as the server: take it out of
        # the cyclic collector's view. Otherwise every full collection walks all of it, a pause
        # of 300 ms per collection measured with benchmarks/serving.py, the whole of its p99.
        gc.collect()
        gc.freeze()
        monitor_thread = None
        if background:
            slot.start(settings.reload_interval, also=refresh_routing)
        # one monitor per project, across processes and (on PostgreSQL) hosts: whoever holds the
        # lock monitors; the others try again every tick and take over when the holder stops
        lock = monitor_lock(project.settings.store.url, project.settings.state_dir, project.name)
        if monitor:
            monitor_thread = threading.Thread(
                target=monitor_when_holding,
                args=(project, lock, stop),
                daemon=True,
                name="driftloop-monitor",
            )
            monitor_thread.start()
        try:
            yield
        finally:
            stop.set()
            gc.unfreeze()
            slot.stop()
            challenger.stop()
            predictor.shutdown(wait=True)
            if isinstance(writer, ProcessLogWriter):
                await writer.stop()
            else:
                writer.stop()
            if monitor_thread is not None:
                monitor_thread.join(timeout=30)
                lock.release()
                from driftloop import workflow

                workflow.shutdown()  # the monitoring loop may have launched DBOS for retrains

    # the docs routes are added below, behind the same keys as everything else
    app = FastAPI(
        title=f"driftloop — {project.name}",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.add_middleware(Guard, settings=settings, keys=bool(keys), counts=stats.guard)
    app.state.project, app.state.slot, app.state.writer, app.state.stats = project, slot, writer, stats
    classes, name = project.task.classes, project.name
    keys_of_probabilities = probability_keys(project.task)  # classes, or an extractor's fields
    redact = project.schema.redact if project.schema.pii else None  # skipped when nothing is pii

    def throttle(who: str, key: bool) -> None:
        """429 when ``who`` (a key's name, or a client address) is past its rate
        (serving.rate_limit, serving.rate_limits)."""
        waited = limiter.wait(who)
        if waited > 0:
            shown = f"The key '{who}'" if key else f"The client {who}"
            with stats.lock:
                stats.guard["rate"] += 1
            named = "serving.rate_limits" if who in settings.rate_limits else "serving.rate_limit"
            raise HTTPException(
                429,
                f"{shown} is past its rate of {limiter.rate_of(who)} ({named}); retry in {waited:.1f} s.",
                headers={"Retry-After": retry_after(waited)},
            )

    def locked_out(address: str) -> None:
        """429 while ``address`` is locked out for sending wrong keys (serving.auth_failures)."""
        remaining = guesses.locked(address)
        if remaining > 0:
            with stats.lock:
                stats.guard["lockout"] += 1
            raise HTTPException(
                429,
                f"The client {address} sent {guesses.limit} wrong API keys within "
                f"{guesses.period:g} s (serving.auth_failures, serving.auth_lockout), so no key from "
                f"it is checked for {remaining:.0f} s more.",
                headers={"Retry-After": retry_after(remaining)},
            )

    def require(scope: Scope | None) -> Callable[[Request], Awaitable[ApiKey | None]]:
        """A dependency: the calling key (``None`` when the API is open), or 401/403.
        ``scope=None`` accepts any valid key."""

        async def check(request: Request) -> ApiKey | None:
            address = client(request)
            if not keys:
                throttle(address, key=False)
                return None
            header = request.headers.get("authorization", "")
            scheme, _, token = header.strip().partition(" ")
            given = token.strip() if scheme.lower() == "bearer" else request.headers.get("x-api-key", "")
            # a person signed in on a page (SameSite=Strict; the routes take JSON bodies only)
            cookie = None if given else request.cookies.get(SESSION_COOKIE)
            granted = session_identity(keys, cookie, revoked=revoked) if cookie else None
            if granted is None:
                if not given:
                    raise HTTPException(
                        401,
                        "This route needs an API key: send 'Authorization: Bearer <key>' or "
                        "'X-API-Key: <key>'.",
                        headers={"WWW-Authenticate": "Bearer"},
                    )
                locked_out(address)
                for key, identity in keys.items():
                    if hmac.compare_digest(key.encode(), given.encode()):
                        granted = identity
                if granted is None:
                    guesses.failed(address)
            if granted is None:
                raise HTTPException(401, "The API key is not valid.", headers={"WWW-Authenticate": "Bearer"})
            throttle(granted.name, key=True)
            if scope is not None and not granted.allows(scope):
                raise HTTPException(
                    403,
                    f"This route needs the '{scope}' scope; the key '{granted.name}' has "
                    f"{sorted(granted.scopes)}.",
                )
            return granted

        return check

    @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(require(None))])
    async def openapi_schema() -> JSONResponse:
        return JSONResponse(app.openapi())

    docs_files = {"swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png"}

    @app.get("/docs", include_in_schema=False, dependencies=[Depends(require(None))])
    async def swagger() -> Any:
        """Swagger UI from the installed ``swagger-ui-py`` package (the ``ui`` extra), so the
        page works offline; without it, a sentence saying what to install."""
        from fastapi.openapi.docs import get_swagger_ui_html

        if _swagger_folder() is None:
            return PlainTextResponse(
                "The API docs page needs the ui extra: pip install 'driftloop[ui]'. "
                "The schema itself is at /openapi.json.",
                status_code=501,
            )
        page = get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{app.title} — docs",
            swagger_js_url="/docs/assets/swagger-ui-bundle.js",
            swagger_css_url="/docs/assets/swagger-ui.css",
            swagger_favicon_url="/docs/assets/favicon-32x32.png",
        )
        page.headers.update(DOCS_HEADERS)
        return page

    @app.get("/docs/assets/{name}", include_in_schema=False, dependencies=[Depends(require(None))])
    async def swagger_asset(name: str) -> Any:
        from starlette.responses import FileResponse

        folder = _swagger_folder()
        if folder is None or name not in docs_files:
            raise HTTPException(404, f"No docs asset {name!r}.")
        return FileResponse(os.path.join(folder, name), headers={"Cache-Control": "max-age=86400"})

    async def read_json(request: Request) -> Any:
        """The body as JSON: 415 unless it is declared JSON, 413 past ``max_body_bytes``, 408 when
        it does not arrive within ``body_timeout``, 422 when it is not (reasonably nested) JSON."""
        kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if not (kind == JSON_TYPES[0] or (kind.startswith(JSON_TYPES[1]) and kind.endswith("+json"))):
            # a cross-site form or text/plain POST cannot send application/json without a preflight
            raise BadRequest(
                415,
                "The body must be sent as 'Content-Type: application/json'. "
                f"Got {kind[:80] or 'none'!r} instead.",
                ("header", "content-type"),
                "unsupported_media_type",
            )
        limit = settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise BadRequest(413, f"The request body is {declared} bytes; the limit is {limit} bytes.")
        body = bytearray()
        try:
            async with asyncio.timeout(settings.body_timeout):
                async for chunk in request.stream():
                    body += chunk
                    if len(body) > limit:
                        raise BadRequest(413, f"The request body exceeds the limit of {limit} bytes.")
        except TimeoutError:
            raise BadRequest(
                408,
                f"The request body did not arrive within serving.body_timeout ({settings.body_timeout:g}s).",
                kind="timeout",
            ) from None
        try:
            return json.loads(body)
        except RecursionError:
            raise BadRequest(422, "The body is JSON nested too deeply to read.") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequest(422, f"The body must be valid JSON: {exc}.") from None

    async def invalid(path: str, status: int, errors: list[Any]) -> JSONResponse:
        with stats.lock:
            stats.invalid += 1
            stats.requests[(path, status)] += 1
        try:
            await run_in_threadpool(
                functools.partial(
                    project.store.record_invalid,
                    project.name,
                    path,
                    status,
                    errors,
                    keep_rows=settings.invalid_retention_rows,
                    keep_seconds=settings.invalid_retention,
                )
            )
        except (DBAPIError, PoolTimeout) as exc:  # the record is for diagnosis: the client still hears why
            log.warning("An invalid request to %s could not be recorded: %s", path, exc)
        return JSONResponse({"detail": errors}, status_code=status)

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, exc: BadRequest) -> JSONResponse:
        return await invalid(
            request.url.path, exc.status, [{"loc": exc.loc, "msg": exc.message, "type": exc.kind}]
        )

    @app.exception_handler(DBAPIError)
    @app.exception_handler(PoolTimeout)
    async def store_down(request: Request, exc: Exception) -> JSONResponse:
        """The store refused a read or write (down, full, out of connections): 503 and retry, as
        for the log; the database's words go to the log only (they can name hosts and rows)."""
        log.error("%s %s: the store failed: %s", request.method, request.url.path, exc)
        route = request.scope.get("route")  # its template (/runs/{run_id}), not every id seen
        with stats.lock:
            stats.requests[(getattr(route, "path", "other"), 503)] += 1
        return JSONResponse(
            {"detail": f"{STORE_REFUSES.capitalize()}; retry shortly."},
            status_code=503,
            headers={"Retry-After": "1"},
        )

    record_schema = project.schema.record_model.model_json_schema()
    predict_body = {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "oneOf": [
                            record_schema,
                            {
                                "type": "object",
                                "required": ["records"],
                                "properties": {
                                    "records": {
                                        "type": "array",
                                        "items": record_schema,
                                        "maxItems": settings.max_batch,
                                    },
                                    "metrics": {
                                        "description": "Custom per-prediction metrics: one object "
                                        "for all records, or a list with one object per record.",
                                        "oneOf": [
                                            {"type": "object", "additionalProperties": {"type": "number"}},
                                            {
                                                "type": "array",
                                                "items": {
                                                    "type": "object",
                                                    "additionalProperties": {"type": "number"},
                                                },
                                            },
                                        ],
                                    },
                                    "metadata": {
                                        "description": "Request metadata logged with every record, "
                                        "such as tenant and client_id.",
                                        "type": "object",
                                        "maxProperties": MAX_META_KEYS,
                                        "additionalProperties": {
                                            "type": "string",
                                            "maxLength": MAX_META_CHARS,
                                        },
                                    },
                                },
                            },
                        ],
                    }
                }
            },
        }
    }

    async def shadow_task(model: LoadedModel, records: list[dict[str, Any]], ids: list[str]) -> None:
        await run_in_threadpool(_shadow_score, project, model, records, ids, stats)

    @app.post("/predict", dependencies=[Depends(require("predict"))], openapi_extra=predict_body)
    async def predict_route(request: Request) -> Any:
        """Predict one record (a JSON object) or a batch (``{"records": [...]}``); log every record."""
        started = time.perf_counter()
        body = await read_json(request)
        batch = isinstance(body, dict) and "records" in body
        rows = body["records"] if batch else body
        rows = [rows] if isinstance(rows, dict) else rows
        if not isinstance(rows, list) or not rows:
            raise BadRequest(
                422,
                'The body must be a record object or {"records": [...]} with at least one record.',
                kind="value_error",
            )
        if len(rows) > settings.max_batch:
            raise BadRequest(
                413,
                f"A batch may hold at most {settings.max_batch} records. Got {len(rows)}.",
                ("body", "records"),
                "too_long",
            )
        records, errors = project.schema.validate(rows)
        sent, problems = custom.validate_sent(
            project.settings, body.get("metrics") if batch else None, len(rows)
        )
        errors += [{"loc": ["body", "metrics"], "msg": m, "type": "value_error"} for m in problems]
        metadata, problems = request_metadata(body.get("metadata") if batch else None, request)
        errors += [{"loc": ["body", "metadata"], "msg": m, "type": "value_error"} for m in problems]
        if errors:
            return await invalid("/predict", 422, errors)
        loaded = slot.current
        if loaded is None:
            raise HTTPException(
                503, f"Model '{project.name}' has no champion to serve yet; run 'driftloop train'."
            )
        request_id = request.headers.get("x-request-id") or new_ids(1)[0]
        other = challenger.current
        canary = routing["canary"]
        if canary is not None and other is not None and other.version == canary[0]:
            # stable assignment: the same request key always lands on the same side
            key = request.headers.get("x-request-key") or metadata.get("client_id") or request_id
            if stable_fraction(f"{project.name}:{key}") < canary[1]:
                loaded = other
        # on the loop (no thread hop: fastest for small models) or on one long-lived thread
        # (predict_in = "thread": keeps the loop free), merged with other waiting requests
        try:
            label_strs, confidences, rounded = await batcher.predict(loaded.model, records)
        except Exception as exc:  # the model's own error: its text may quote inputs, pii included
            with stats.lock:
                stats.model_errors += 1
                stats.requests[("/predict", 500)] += 1
            log.error(
                "Version %s of '%s' failed on a request of %d records: %s",
                loaded.version,
                name,
                len(records),
                project.schema.scrub(str(exc), records),
            )
            return JSONResponse(
                {"detail": f"Version {loaded.version} failed on this request: {type(exc).__name__}."},
                status_code=500,
            )
        now = time.time()
        latency_ms = (time.perf_counter() - started) * 1000
        ids = new_ids(len(records))
        out: list[dict[str, Any]]
        if classes:
            out = [
                {
                    "prediction_id": pid,
                    "label": label_strs[i],
                    "confidence": confidences[i],
                    "probabilities": dict(zip(classes, rounded[i], strict=True)),
                }
                for i, pid in enumerate(ids)
            ]
        elif project.task.name == "extraction":  # each field's value and confidence
            values = [json.loads(text) for text in label_strs]
            out = [
                {
                    "prediction_id": pid,
                    "fields": {
                        f: {"value": values[i].get(f), "confidence": rounded[i][j]}
                        for j, f in enumerate(keys_of_probabilities)
                    },
                    "confidence": confidences[i],
                }
                for i, pid in enumerate(ids)
            ]
        elif project.task.name == "generation":  # the generated text
            out = [{"prediction_id": pid, "text": label_strs[i]} for i, pid in enumerate(ids)]
        else:  # a regression model: the predicted value
            out = [{"prediction_id": pid, "value": float(label_strs[i])} for i, pid in enumerate(ids)]
        log_batch = LogBatch(
            name,
            loaded.version,
            request_id[:64],
            now,
            latency_ms,
            keys_of_probabilities,
            metadata or None,
            ids,
            [redact(r, pii_key) for r in records] if redact is not None else records,
            label_strs,
            confidences,
            rounded,
            sent if any(sent) else None,
        )
        try:
            await writer.write(log_batch)
        except QueueFull as exc:
            raise HTTPException(
                503, f"The prediction log is full ({exc}); retry shortly.", headers={"Retry-After": "1"}
            ) from None
        except LogUnavailable as exc:
            raise HTTPException(
                503, f"The prediction could not be logged ({exc}); retry shortly.", {"Retry-After": "1"}
            ) from None
        stats.observe(loaded.version, time.perf_counter() - started, len(records))
        with stats.lock:
            stats.requests[("/predict", 200)] += 1
        shadow = None
        if (
            other is not None
            and other.version != loaded.version
            and settings.shadow_share > 0
            and (settings.shadow_share >= 1 or random.random() < settings.shadow_share)
        ):
            shadow = BackgroundTask(shadow_task, other, records, ids)
        return JSONResponse(
            {  # plain JSON types already: skip FastAPI's encoder on the hot path
                "model": project.name,
                "model_version": loaded.version,
                "request_id": request_id,
                "predictions": out,
            },
            background=shadow,  # runs after the response is sent: off the response path
        )

    @app.post("/log", dependencies=[Depends(require("predict"))])
    async def log_route(request: Request) -> Any:
        """Log outputs a model produced elsewhere, with their inputs: ``{"records": [...],
        "outputs": [...], "model_version": "..."}``, one output per record (a text for a
        generator, a number for a regressor, a class for a classifier). They are monitored,
        scored, reviewed and take feedback like served predictions; the answer gives each its
        ``prediction_id``."""
        body = await read_json(request)
        rows = body.get("records") if isinstance(body, dict) else None
        outputs = body.get("outputs") if isinstance(body, dict) else None
        version = body.get("model_version", "external") if isinstance(body, dict) else None
        if (
            not isinstance(rows, list)
            or not rows
            or not isinstance(outputs, list)
            or len(outputs) != len(rows)
        ):
            raise BadRequest(
                422,
                'The body must be {"records": [...], "outputs": [...]} with one output per record '
                "and at least one record.",
                kind="value_error",
            )
        if len(rows) > settings.max_batch:
            raise BadRequest(
                413,
                f"A batch may hold at most {settings.max_batch} records. Got {len(rows)}.",
                ("body", "records"),
            )
        records, errors = project.schema.validate(rows)
        if not isinstance(version, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}", version):
            errors.append(
                {
                    "loc": ["body", "model_version"],
                    "type": "string_pattern_mismatch",
                    "msg": "'model_version' must be 1 to 32 letters, digits, '.', '_' or '-'. "
                    f"Got {version!r:.80} instead.",
                }
            )
        errors += [
            {
                "loc": ["body", "outputs", i],
                "type": "value_error",
                "msg": f"Output {i}: " + re.sub(r"^'(label|preferred)'", "an output", wrong),
            }
            for i, value in enumerate(outputs)
            if (wrong := project.task.label_error(value)) is not None
        ]
        metadata, problems = request_metadata(body.get("metadata"), request)
        errors += [{"loc": ["body", "metadata"], "msg": m, "type": "value_error"} for m in problems]
        if errors:
            return await invalid("/log", 422, errors)
        assert isinstance(version, str)
        ids = new_ids(len(records))
        batch = LogBatch(
            name,
            version,
            (request.headers.get("x-request-id") or new_ids(1)[0])[:64],
            time.time(),
            0.0,
            [],
            metadata or None,
            ids,
            [redact(r, pii_key) for r in records] if redact is not None else records,
            [project.task.parse_label(v) for v in outputs],
            [None] * len(ids),
            [[] for _ in ids],
            None,
        )
        try:
            await writer.write(batch)
        except (QueueFull, LogUnavailable) as exc:
            raise HTTPException(
                503, f"The outputs could not be logged ({exc}); retry shortly.", {"Retry-After": "1"}
            ) from None
        with stats.lock:
            stats.requests[("/log", 200)] += 1
        return {"model": name, "model_version": version, "prediction_ids": ids}

    tags = project.settings.generation.tags
    tag_schema: dict[str, Any] = {"type": "string", **({"enum": tags} if tags else {})}
    feedback_body = {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "prediction_id": {"type": "string"},
                            **(
                                {
                                    "preferred": {"type": "string"},
                                    "rating": {"type": "number"},
                                    "tags": {
                                        "type": "array",
                                        "items": tag_schema,
                                    },
                                }
                                if project.task.name == "generation"
                                else {
                                    "label": {"type": "string", "enum": classes}
                                    if classes
                                    else {"type": "number"}
                                }
                            ),
                            "metrics": {"type": "object", "additionalProperties": {"type": "number"}},
                            "rationale": {"type": "string"},
                            "source": {"type": "string"},
                            "feedback": {"type": "array", "items": {"type": "object"}},
                        },
                    }
                }
            },
        }
    }

    @app.post("/feedback", openapi_extra=feedback_body)
    async def feedback_route(request: Request, key: ApiKey | None = Depends(require("feedback"))) -> Any:
        """Attach labels to logged predictions: one ``{prediction_id, label}``, or a batch as
        ``{"feedback": [...]}`` or a bare list (as ``/predict`` takes ``[...]``).

        A batch is answered item by item: valid labels for known predictions are stored, the rest
        come back with their index and why (``invalid`` or ``unknown``). With API keys the stored
        source is the key's name (plus the client's ``source`` as a sub-label)."""
        body = await read_json(request)
        single = isinstance(body, dict) and "feedback" not in body
        items = [body] if single else body["feedback"] if isinstance(body, dict) else body
        if not isinstance(items, list) or not items or len(items) > settings.max_batch:
            raise BadRequest(
                422,
                f'The body must be one feedback object, or {{"feedback": [...]}} or a list with 1 to '
                f"{settings.max_batch} items.",
                kind="value_error",
            )
        errors: list[dict[str, Any]] = []
        clean: list[tuple[int, dict[str, Any]]] = []
        for i, item in enumerate(items):
            problems = feedback_problems(item, i)
            said, more = parse_item(item, i, project.settings, project.task) if not problems else (None, [])
            if problems or more or said is None:
                errors += problems + more
                continue
            said["prediction_id"] = item["prediction_id"]
            said["source"] = stored_source(key, item.get("source"))
            clean.append((i, said))
        if errors and (single or not clean):
            return await invalid("/feedback", 422, errors)
        found = await run_in_threadpool(
            project.store.existing_prediction_ids, [c["prediction_id"] for _, c in clean]
        )
        unknown = [(i, c["prediction_id"]) for i, c in clean if c["prediction_id"] not in found]
        archived = (
            f" Predictions are archived {project.settings.archive.after / 86400:g} days after they are "
            "served (archive.after) and take no feedback after that."
            if unknown and project.settings.archive.after is not None
            else ""
        )
        if single and unknown:
            raise BadRequest(
                404,
                f"Unknown prediction id: {unknown[0][1][:64]!r}.{archived}",
                ("feedback", "prediction_id"),
                "not_found",
            )
        accepted = [c for _, c in clean if c["prediction_id"] in found]
        corrections = [c for c in accepted if c.get("correction")]
        if corrections:  # an extractor's correction: the true fields, from what was served
            served = await run_in_threadpool(project.store.served, [c["prediction_id"] for c in corrections])
            for c in corrections:
                fields = resolve(c["correction"], served[c["prediction_id"]], keys_of_probabilities)
                c["label"] = project.task.parse_label(fields)
        for c in accepted:
            c.pop("correction", None)
        if accepted:
            await run_in_threadpool(project.store.add_feedback, accepted, annotations=True)
        if errors:
            await run_in_threadpool(
                functools.partial(
                    project.store.record_invalid,
                    project.name,
                    "/feedback",
                    422,
                    errors,
                    keep_rows=settings.invalid_retention_rows,
                    keep_seconds=settings.invalid_retention,
                )
            )
        with stats.lock:
            stats.requests[("/feedback", 200 if accepted else 404)] += 1
            stats.invalid += bool(errors)
        if single:
            return {"accepted": len(accepted)}
        results: list[dict[str, Any]] = [
            {"index": i, "status": "accepted"} for i, c in clean if c["prediction_id"] in found
        ]
        results += [
            {"index": i, "status": "unknown", "msg": f"Unknown prediction id {pid[:64]!r}.{archived}"}
            for i, pid in unknown
        ]
        by_index: dict[int, list[str]] = {}
        for e in errors:
            by_index.setdefault(int(e["loc"][1]), []).append(e["msg"])
        results += [{"index": i, "status": "invalid", "msg": " ".join(m)} for i, m in by_index.items()]
        return JSONResponse(
            {
                "accepted": len(accepted),
                "unknown": len(unknown),
                "invalid": len(by_index),
                "items": sorted(results, key=lambda r: r["index"]),
            },
            status_code=200 if accepted else 404 if unknown else 422,
        )

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Liveness: the process answers (always 200). What it could not do is in the body."""
        loaded = slot.current
        return {
            "status": "ok" if loaded else "no-model",
            "model": project.name,
            "champion": loaded.version if loaded else None,
            "log_mode": settings.log_mode,
            "log_queue_depth": writer.depth,
            "log": writer.problem or "ok",
            "worker": os.getpid(),
        }

    @app.get("/ready")
    async def ready() -> JSONResponse:
        """Readiness, for a load balancer: 200 when this worker can predict and log, else 503
        with the reasons (no champion loaded; the log writer down or the store failing)."""
        unloaded = "no champion is loaded" if slot.current is None else None
        problems = [p for p in (unloaded, writer.problem) if p]
        body = {"ready": not problems, "problems": problems, "model": project.name, "worker": os.getpid()}
        if problems:
            return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})
        return JSONResponse(body)

    @app.get("/models", dependencies=[Depends(require("predict"))])
    async def models() -> dict[str, Any]:
        versions = await run_in_threadpool(project.registry.versions, project.name)
        loaded = slot.current
        other, canary = challenger.current, routing["canary"]
        return {
            "model": project.name,
            "serving": loaded.version if loaded else None,
            "challenger": other.version if other else None,
            "canary": {"version": canary[0], "share": canary[1]} if canary else None,
            "shadow_share": settings.shadow_share if other else 0.0,
            "versions": [
                {k: v for k, v in mv.items() if k != "tags"}
                | {"gate": mv["tags"].get("driftloop.gate"), "dataset": mv["tags"].get("driftloop.dataset")}
                for mv in versions
            ],
        }

    @app.get("/status", dependencies=[Depends(require("read"))])
    async def status_route() -> dict[str, Any]:
        """The champion and recent versions, windows, alerts, champion history, runs, the gate's
        calibration and the monitor's health (``driftloop status --json``)."""
        return jsonable(await run_in_threadpool(views.status_view, project))  # type: ignore[no-any-return]

    @app.get("/windows", dependencies=[Depends(require("read"))])
    async def windows_route(limit: int = Query(50, ge=1, le=5000)) -> dict[str, Any]:
        """The newest monitoring windows, oldest first: metrics by name and drift per feature."""
        rows = await run_in_threadpool(views.windows_view, project, limit)
        return {"model": project.name, "windows": jsonable(rows)}

    @app.get("/alerts", dependencies=[Depends(require("read"))])
    async def alerts_route(limit: int = Query(50, ge=1, le=5000)) -> dict[str, Any]:
        """The newest alerts, oldest first."""
        rows = await run_in_threadpool(views.alerts_view, project, limit)
        return {"model": project.name, "alerts": jsonable(rows)}

    @app.get("/decisions", dependencies=[Depends(require("read"))])
    async def decisions_route(limit: int = Query(50, ge=1, le=5000)) -> dict[str, Any]:
        """The newest gate decisions: every rule with both models' values, and the reasons."""
        rows = await run_in_threadpool(views.decisions_view, project, limit)
        return {"model": project.name, "decisions": jsonable(rows)}

    @app.get("/drift", dependencies=[Depends(require("read"))])
    async def drift_route(last: str = Query("1d", max_length=16)) -> dict[str, Any]:
        """Drift over the span ``last`` (such as ``1h`` or ``7d``) from the windows' stored profiles
        merged (``driftloop drift --json``); ``report`` is null when no window ended in it."""
        try:
            span = parse_duration(last)
        except ValueError as exc:
            raise HTTPException(422, f"Query parameter 'last': {exc}.") from None
        report = await run_in_threadpool(views.drift_view, project, time.time() - span)
        return {"model": project.name, "last": last, "report": jsonable(report)}

    @app.get("/shadow", dependencies=[Depends(require("read"))])
    async def shadow_report(version: str | None = Query(None, max_length=32)) -> dict[str, Any]:
        """The challenger in shadow against what was served, on the same requests: agreement, and
        the gate's metric of each (a scorer on every request, else on those with feedback)."""
        compared = await run_in_threadpool(views.shadow_view, project, version)
        return {"model": project.name, **jsonable(compared)}

    @app.get("/runs", dependencies=[Depends(require("read"))])
    async def runs(limit: int = Query(20, ge=1, le=500)) -> dict[str, Any]:
        """Recent retrain runs, each with its gate decision: every rule, both models' values, reasons."""

        def read() -> dict[str, Any]:
            rows = project.store.runs(project.name, limit=limit)
            decided = {d["run_id"]: d for d in project.store.decisions(project.name, limit=limit)}
            return {
                "model": project.name,
                "runs": [
                    {**r, "decision": decided.get(r["id"]), "steps": project.store.run_steps(r["id"])}
                    for r in rows
                ],
            }

        return await run_in_threadpool(read)

    @app.post("/models/reload", dependencies=[Depends(require("admin"))])
    async def reload() -> dict[str, Any]:
        swapped = await run_in_threadpool(slot.refresh)
        loaded = slot.current
        return {"swapped": swapped, "serving": loaded.version if loaded else None}

    @app.get("/metrics", dependencies=[Depends(require("read"))], response_class=PlainTextResponse)
    async def prometheus() -> str:
        return prometheus_text(project, slot, writer, stats, challenger, routing, batcher)

    from driftloop.serving.review import add_review_routes

    add_review_routes(app, project, require, read_json)
    try:
        from driftloop.serving.pages import add_pages

        add_pages(
            app, project, keys, throttle=throttle, locked_out=locked_out, guesses=guesses, revoked=revoked
        )
    except ConfigError as exc:  # no ui extra: the API serves, the page says what to install
        missing = str(exc)

        @app.get("/", include_in_schema=False, response_class=PlainTextResponse)
        async def no_pages() -> PlainTextResponse:
            return PlainTextResponse(missing, status_code=501)

    return app


@functools.cache
def _swagger_folder() -> str | None:
    """Where the installed swagger-ui-py keeps Swagger UI's files (5.x: OpenAPI 3.1), or None."""
    try:
        import swagger_ui
    except ImportError:
        return None
    return os.path.join(os.path.dirname(swagger_ui.__file__), "static")


def app_from_environment() -> FastAPI:
    """The app of the project named by ``DRIFTLOOP_CONFIG``: what each worker of a multi-process
    ``driftloop serve --workers N`` builds (monitoring runs in the worker that holds the lock)."""
    path = os.environ.get("DRIFTLOOP_CONFIG")
    if not path:
        raise ConfigError("DRIFTLOOP_CONFIG must name the driftloop.toml for a multi-worker server.")
    project = Project.load(path)
    wants_monitor = os.environ.get("DRIFTLOOP_SERVE_MONITOR", "1") == "1"
    return create_app(project, monitor=wants_monitor)  # the worker that gets the lock monitors
