"""Public names a package loads on first use, so a process that needs little imports little."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_names(package: str, where: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``where[name]`` (a module path) when ``name`` is used.

    >>> getattr_ = lazy_names("demo", {"dumps": "json"})
    >>> getattr_("dumps").__name__
    'dumps'
    """

    def __getattr__(name: str) -> Any:
        if name in where:
            return getattr(importlib.import_module(where[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
