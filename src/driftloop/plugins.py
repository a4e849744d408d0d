"""Import the user's functions (trainer, embeddings, custom metrics) from ``module:function``."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from driftloop.exceptions import ConfigError

__all__ = ["load_function"]

_LOADED: dict[str, int] = {}  # module -> modification time of the file it was imported from


def load_function(entrypoint: str, root: Path | None, setting: str) -> Callable[..., Any]:
    """Import ``module:function``, with the project folder ``root`` first on ``sys.path``.

    ``setting`` names the config key the entrypoint came from, for the error message.

    >>> load_function("math:sqrt", None, "example")(9.0)
    3.0
    """
    module_name, _, func_name = entrypoint.partition(":")
    if root is not None:
        folder = str(root)
        if folder in sys.path:
            sys.path.remove(folder)
        sys.path.insert(0, folder)  # this project's modules win over another project's of the same name
    importlib.invalidate_caches()
    try:
        module = sys.modules.get(module_name)
        origin = getattr(module, "__file__", None) or ""
        local = (root / (module_name.replace(".", "/") + ".py")) if root is not None else None
        if module is not None and local is not None and local.is_file():
            if Path(origin).resolve() != local.resolve():
                del sys.modules[module_name]  # another project's module of the same name
            elif _LOADED.get(module_name) != local.stat().st_mtime_ns:
                module = importlib.reload(module)  # the file changed since it was imported
        module = importlib.import_module(module_name)
        if local is not None and local.is_file():
            _LOADED[module_name] = local.stat().st_mtime_ns
    except ImportError as exc:
        raise ConfigError(
            f"The '{setting}' setting must name an importable module. "
            f"Got {entrypoint!r}; importing {module_name!r} failed: {exc}."
        ) from exc
    func = getattr(module, func_name, None)
    if not callable(func):
        raise ConfigError(
            f"The '{setting}' setting must name a function in {module_name!r}. "
            f"Got {entrypoint!r}, and {func_name!r} is not a function there."
        )
    return func  # type: ignore[no-any-return]
