"""driftloop keeps a deployed model accurate while the world it sees drifts.

serve -> log -> feedback -> monitor -> alert -> retrain -> evaluate -> gate -> promote or reject.

>>> import driftloop
>>> sorted(driftloop.__all__)[:3]
['ConfigError', 'DriftloopError', 'FeatureSchema']
"""

from driftloop.config import Settings
from driftloop.exceptions import (
    ConfigError,
    DriftloopError,
    NotFittedError,
    NotFoundError,
    RegistryError,
    SchemaError,
    WorkflowError,
)
from driftloop.profiles import Profile, ProfileSpec
from driftloop.schema import FeatureSchema

__version__ = "0.1.0"

__all__ = [
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
    "WorkflowError",
    "__version__",
]
