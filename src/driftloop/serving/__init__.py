"""Serving: the FastAPI app, model slots and the batched log writer."""

from driftloop.serving.app import create_app, parse_api_keys
from driftloop.serving.slots import LoadedModel, ModelSlot
from driftloop.serving.writer import LogWriter, QueueFull

__all__ = ["LoadedModel", "LogWriter", "ModelSlot", "QueueFull", "create_app", "parse_api_keys"]
