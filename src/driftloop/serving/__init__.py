"""Serving: the FastAPI app, model slots, dynamic batching and the batched log writers.

The names load on first use, so the log writer process (``driftloop.serving.logproc``) starts
without importing the web stack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from driftloop._lazy import lazy_names

if TYPE_CHECKING:
    from driftloop.serving.app import create_app, parse_api_keys
    from driftloop.serving.batcher import Batcher, Scored
    from driftloop.serving.logproc import ProcessLogWriter
    from driftloop.serving.slots import LoadedModel, ModelSlot
    from driftloop.serving.writer import LogBatch, LogWriter, QueueFull

__all__ = [
    "Batcher",
    "LoadedModel",
    "LogBatch",
    "LogWriter",
    "ModelSlot",
    "ProcessLogWriter",
    "QueueFull",
    "Scored",
    "create_app",
    "parse_api_keys",
]

__getattr__ = lazy_names(
    "driftloop.serving",
    {
        "create_app": "driftloop.serving.app",
        "parse_api_keys": "driftloop.serving.app",
        "Batcher": "driftloop.serving.batcher",
        "Scored": "driftloop.serving.batcher",
        "LoadedModel": "driftloop.serving.slots",
        "ModelSlot": "driftloop.serving.slots",
        "LogBatch": "driftloop.serving.writer",
        "LogWriter": "driftloop.serving.writer",
        "QueueFull": "driftloop.serving.writer",
        "ProcessLogWriter": "driftloop.serving.logproc",
    },
)
