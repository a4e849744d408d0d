"""Fuzz every operation of the live OpenAPI schema with schemathesis, with requests that follow
the schema and requests that break it: no input gives a 5xx."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable

from driftloop.demo.scenario import serve_in_thread
from driftloop.project import Project
from driftloop.serving import create_app

schemathesis = pytest.importorskip("schemathesis", reason="pip install -e '.[dev]' brings schemathesis")


def test_no_generated_request_gives_a_server_error(trained: Project) -> None:
    with serve_in_thread(create_app(trained, background=False)) as url:
        schema: Any = schemathesis.openapi.from_url(f"{url}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        paths = sorted(f"{op.method.upper()} {op.path}" for op in operations)
        assert {"POST /predict", "POST /feedback", "GET /health", "GET /metrics"} <= set(paths), paths
        calls: dict[str, int] = {}

        def fuzz_one(operation: Any, mode: Any) -> None:
            name = f"{operation.method.upper()} {operation.path} ({mode.value})"

            @settings(
                max_examples=40,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def fuzz(case: Any) -> None:
                response = case.call(base_url=url, timeout=30)
                calls[name] = calls.get(name, 0) + 1
                assert response.status_code < 500, (
                    f"{name} answered {response.status_code} to {case.body!r}: {response.text[:500]}"
                )

            try:
                fuzz()
            except Unsatisfiable:
                assert mode.value == "negative", name  # nothing to break in an operation without inputs

        for operation in operations:  # valid requests, then requests that break the schema
            for mode in schemathesis.GenerationMode:
                fuzz_one(operation, mode)
    for route in ("POST /predict", "POST /feedback"):
        for mode in ("positive", "negative"):
            assert calls.get(f"{route} ({mode})", 0) >= 20, calls
