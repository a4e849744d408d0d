"""Serving: the FastAPI app, model slots and the batched log writers.

The names load on first use, so the log writer process (``driftloop.serving.logproc``) starts
without importing the web stack.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from driftloop.serving.app import create_app, parse_api_keys
    from driftloop.serving.logproc import ProcessLogWriter
    from driftloop.serving.slots import LoadedModel, ModelSlot
    from driftloop.serving.writer import LogBatch, LogWriter, QueueFull

__all__ = [
    "LoadedModel",
    "LogBatch",
    "LogWriter",
    "ModelSlot",
    "ProcessLogWriter",
    "QueueFull",
    "create_app",
    "parse_api_keys",
]

_WHERE = {
    "create_app": "app",
    "parse_api_keys": "app",
    "LoadedModel": "slots",
    "ModelSlot": "slots",
    "LogBatch": "writer",
    "LogWriter": "writer",
    "QueueFull": "writer",
    "ProcessLogWriter": "logproc",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"driftloop.serving.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'driftloop.serving' has no attribute {name!r}")
