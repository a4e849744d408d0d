"""A project: its settings plus the store, registry and schema built from them, made once."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from driftloop.config import Settings
from driftloop.registry import MlflowRegistry
from driftloop.schema import FeatureSchema
from driftloop.store import Store

__all__ = ["Project"]


class Project:
    """Everything a command needs, opened lazily: ``project.store``, ``project.registry``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.schema = FeatureSchema(settings.features, root=settings.root)

    @classmethod
    def load(cls, path: str | Path = "driftloop.toml") -> Project:
        return cls(Settings.load(path))

    @property
    def name(self) -> str:
        return self.settings.project.name

    @property
    def classes(self) -> list[str]:
        return list(self.settings.project.classes)

    @cached_property
    def store(self) -> Store:
        return Store(self.settings.store.url, synchronous=self.settings.store.sqlite_synchronous)

    @cached_property
    def registry(self) -> MlflowRegistry:
        r = self.settings.registry
        return MlflowRegistry(r.uri, r.artifacts, r.experiment or f"driftloop-{self.name}")

    def champion(self) -> str | None:
        return self.registry.alias(self.name, "champion")

    def close(self) -> None:
        if "store" in self.__dict__:
            self.store.close()
