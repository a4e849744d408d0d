"""driftloop keeps a deployed model accurate while the world it sees drifts.

serve -> log -> feedback -> monitor -> alert -> retrain -> evaluate -> gate -> promote or reject.

>>> import driftloop
>>> sorted(driftloop.__all__)[:3]
['ArchiveError', 'ConfigError', 'DriftloopError']
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from driftloop._lazy import lazy_names
from driftloop.exceptions import (
    ArchiveError,
    ConfigError,
    DriftloopError,
    NotFittedError,
    NotFoundError,
    RegistryError,
    SchemaError,
    TrainerError,
    WorkflowError,
)

if TYPE_CHECKING:
    from driftloop.config import Settings
    from driftloop.profiles import Profile, ProfileSpec
    from driftloop.schema import FeatureSchema

# loaded on first use: a process that needs only the store (the log writer) skips pandas
__getattr__ = lazy_names(
    "driftloop",
    {
        "Settings": "driftloop.config",
        "Profile": "driftloop.profiles",
        "ProfileSpec": "driftloop.profiles",
        "FeatureSchema": "driftloop.schema",
    },
)


__version__ = "0.1.0"

__all__ = [
    "ArchiveError",
    "ConfigError",
    "DriftloopError",
    "FeatureSchema",
    "NotFittedError",
    "NotFoundError",
    "Profile",
    "ProfileSpec",
    "RegistryError",
    "SchemaError",
    "Settings",
    "TrainerError",
    "WorkflowError",
    "__version__",
]
