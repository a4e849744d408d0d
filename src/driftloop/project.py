"""A project: its settings plus the store, registry and schema built from them, made once."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from driftloop.config import Settings
from driftloop.store import Store

if TYPE_CHECKING:
    from driftloop.archive import LogArchive
    from driftloop.registry import MlflowRegistry
    from driftloop.schema import FeatureSchema
    from driftloop.tasks import Task

__all__ = ["Project"]


class Project:
    """Everything a command needs, opened lazily: ``project.store``, ``project.registry``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @cached_property
    def schema(self) -> FeatureSchema:
        from driftloop.schema import FeatureSchema  # pandas: not needed by read-only commands

        return FeatureSchema(self.settings.features, root=self.settings.root)

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
        return Store(
            self.settings.store.url, synchronous=self.settings.store.sqlite_synchronous, archive=self.archive
        )

    @cached_property
    def archive(self) -> LogArchive:
        """Where closed windows' rows go when they leave the store (:mod:`driftloop.archive`)."""
        from driftloop.archive import LogArchive

        return LogArchive(self.settings.archive.url)

    @cached_property
    def task(self) -> Task:
        """What differs between kinds of model (:mod:`driftloop.tasks`)."""
        from driftloop.tasks import make_task

        return make_task(self.settings)

    @cached_property
    def lower_is_better(self) -> frozenset[str]:
        """The metrics that improve by falling: the task's errors and the scorers configured with
        ``better = "lower"``, for everything that compares two models or a model and a limit."""
        return self.settings.lower_is_better(self.task.lower_is_better)

    @cached_property
    def registry(self) -> MlflowRegistry:
        from driftloop.registry import MlflowRegistry, model_key

        r = self.settings.registry
        return MlflowRegistry(
            r.uri, r.artifacts, r.experiment or f"driftloop-{self.name}", ledger=self.store, key=model_key()
        )

    def champion(self) -> str | None:
        return self.registry.alias(self.name, "champion")

    def close(self) -> None:
        if "store" in self.__dict__:
            self.store.close()
