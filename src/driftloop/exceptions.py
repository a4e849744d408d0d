"""Every error driftloop raises on purpose.

The tree::

    DriftloopError
     ├── ArchiveError (RuntimeError)     the log archive is unreadable or differs from its manifest
     ├── ConfigError (ValueError)        a setting in driftloop.toml or a parameter is invalid
     ├── SchemaError (ValueError)        a record does not match the model's feature schema
     ├── NotFoundError (LookupError)     a prediction, model version, dataset or run does not exist
     ├── NotFittedError (RuntimeError)   an object is used before it learned what it needs
     ├── RegistryError (RuntimeError)    the model registry refused or failed an operation
     ├── TrainerError (RuntimeError)     the user's trainer failed or returned an unusable model
     └── WorkflowError (RuntimeError)    a retraining run could not start or finish

Messages follow one shape: name the thing, the rule, and the value seen, e.g.
"The 'window' setting of monitor 'accuracy' must be a positive duration. Got '-5m' instead."
"""

from __future__ import annotations

__all__ = [
    "ArchiveError",
    "ConfigError",
    "DriftloopError",
    "NotFittedError",
    "NotFoundError",
    "RegistryError",
    "SchemaError",
    "TrainerError",
    "WorkflowError",
]


class DriftloopError(Exception):
    """Root of every error driftloop raises on purpose."""


class ArchiveError(DriftloopError, RuntimeError):
    """The log archive is unreadable or does not match its manifest."""


class ConfigError(DriftloopError, ValueError):
    """A setting or parameter is invalid.

    ``problems`` lists one sentence per problem when several were found at once.
    """

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or [message]


class SchemaError(DriftloopError, ValueError):
    """A record does not match the model's feature schema."""


class NotFoundError(DriftloopError, LookupError):
    """Something that was asked for does not exist."""


class NotFittedError(DriftloopError, RuntimeError):
    """An object was used before it learned what it needs."""


class RegistryError(DriftloopError, RuntimeError):
    """The model registry refused or failed an operation."""


class TrainerError(DriftloopError, RuntimeError):
    """The user's trainer raised, or returned something that cannot serve."""


class WorkflowError(DriftloopError, RuntimeError):
    """A retraining run could not start or finish."""
