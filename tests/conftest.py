"""Shared fixtures: real example projects (SQLite store, local MLflow, DBOS) in temp folders."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from driftloop import workflow
from driftloop.demo.project import write_example
from driftloop.demo.scenario import serve_in_thread
from driftloop.project import Project
from driftloop.serving import create_app
from driftloop.training import train

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def make_project(folder: Path, **kwargs: object) -> Project:
    options = {
        "rows": 1500,
        "window": "300 rows",
        "replay_fraction": 0.1,
        "reload_interval": "100ms",
        **kwargs,
    }
    return Project.load(write_example(folder, **options))  # type: ignore[arg-type]


def trained_with(folder: Path, **tables: str) -> Project:
    """A trained example project with TOML lines at the top of each named table (``retrain=``,
    ``gate=``, ...); a table the example lacks is added at the end."""
    make_project(folder)
    config = folder / "driftloop.toml"
    text = config.read_text()
    for table, lines in tables.items():
        header = f"[{table}]\n"
        if lines and header in text:
            text = text.replace(header, f"{header}{lines}\n")
        elif lines:
            text = f"{text}\n{header}{lines}\n"
    config.write_text(text)
    project = Project.load(config)
    train(project)
    return project


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    """A trained example project, shared by the tests of one module."""
    project = make_project(tmp_path_factory.mktemp("project"))
    train(project)
    yield project
    project.close()


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[Project]:
    """A trained example project of its own, for tests that change the champion."""
    project = make_project(tmp_path / "project")
    train(project)
    yield project
    workflow.shutdown()
    project.close()


@pytest.fixture
def served(fresh: Project) -> Iterator[tuple[Project, str]]:
    with serve_in_thread(create_app(fresh, background=True, monitor=False)) as url:
        yield fresh, url


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLOOP_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env
