"""The built-in scenario behind ``driftloop demo`` and the example project of ``driftloop init``."""

from driftloop.demo.data import applicants
from driftloop.demo.project import write_example

__all__ = ["applicants", "write_example"]
