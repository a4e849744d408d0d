"""Every Python snippet in docs/ runs; the public surface is what __all__ says."""

from __future__ import annotations

import importlib
import re
import tomllib
from pathlib import Path

import pytest

import driftloop

from .conftest import ROOT

SNIPPETS = [
    pytest.param(code, id=f"{path.name}:{i}")
    for path in sorted((ROOT / "docs").glob("*.md"))
    for i, code in enumerate(re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S))
]


@pytest.mark.parametrize("code", SNIPPETS)
def test_docs_snippet_runs(code: str) -> None:
    exec(compile(code, "<docs>", "exec"), {})


@pytest.mark.parametrize(
    "module",
    [
        "driftloop",
        "driftloop.drift",
        "driftloop.profiles",
        "driftloop.serving",
        "driftloop.config",
        "driftloop.exceptions",
        "driftloop.alerts",
        "driftloop.gate",
    ],
)
def test_every_public_name_exists(module: str) -> None:
    mod = importlib.import_module(module)
    for name in mod.__all__:
        assert hasattr(mod, name), f"{module}.__all__ lists {name!r}, which does not exist"


def test_architecture_names_every_module() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text()
    package = Path(driftloop.__file__).parent
    for path in package.iterdir():
        if path.name.startswith("_") or path.name in ("py.typed", "__pycache__", "ui"):
            continue
        name = path.stem if path.suffix == ".py" else path.name + "/"
        assert f"`{name}" in text, f"docs/architecture.md does not mention {name}"


def test_exception_tree() -> None:
    assert issubclass(driftloop.ConfigError, ValueError)
    assert issubclass(driftloop.NotFoundError, LookupError)
    assert all(
        issubclass(getattr(driftloop, n), driftloop.DriftloopError)
        for n in driftloop.__all__
        if n.endswith("Error")
    )


def test_store_head_is_the_newest_migration() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from driftloop.store import _MIGRATIONS, HEAD

    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    assert ScriptDirectory.from_config(cfg).get_current_head() == HEAD


def test_the_candidates_example_in_the_config_reference_is_valid() -> None:
    from driftloop import Settings

    text = (ROOT / "docs" / "config.md").read_text().split("## Candidates that compare models")[1]
    sample = tomllib.loads(text.split("```toml")[1].split("```")[0])
    settings = Settings.from_dict(
        {
            "project": {"name": "m", "target": "y", "classes": ["a", "b"]},
            "features": {"x": {"type": "numeric"}},
            "data": {"train": "t.csv"},
            "trainer": {"entrypoint": "trainer:train", "params": {"max_iter": 150, "learning_rate": 0.1}},
            **sample,
        }
    )
    recipes = {c.name: c.recipe(settings.trainer) for c in settings.retrain.candidate_windows()}
    assert recipes == {
        "all": None,
        "recent": None,
        "recent-deeper": {"trainer": None, "params": {"max_iter": 300, "learning_rate": 0.1}},
        "recent-linear": {"trainer": "trainer:linear", "params": {}},
    }
