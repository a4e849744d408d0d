"""The local registry's start: a copy of an empty MLflow database migrated once per machine."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import mlflow
import pytest

from driftloop.registry import MlflowRegistry, cache_dir, start_from_template
from driftloop.store import Store


def _registry(folder: Path) -> MlflowRegistry:
    store = Store(f"sqlite:///{folder}/driftloop.db")
    return MlflowRegistry(
        f"sqlite:///{folder}/.driftloop/mlflow.db", str(folder / "artifacts"), "loan", ledger=store
    )


def _default_location(folder: Path) -> str:
    with closing(sqlite3.connect(folder / ".driftloop" / "mlflow.db")) as db:
        return str(
            db.execute("SELECT artifact_location FROM experiments WHERE experiment_id = 0").fetchone()[0]
        )


def test_a_new_registry_starts_as_a_copy_of_the_migrated_template(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DRIFTLOOP_CACHE_DIR", str(tmp_path / "cache"))
    assert cache_dir() == tmp_path / "cache"
    for name in ("first", "second"):
        registry = _registry(tmp_path / name)
        version = registry.register(
            "loan", {"weights": [1, 2]}, params={}, metrics={"accuracy": 0.5}, tags={}
        )
        assert registry.load("loan", version) == {"weights": [1, 2]}
        # MLflow itself would point the unused Default experiment at ./mlruns in the working folder
        assert _default_location(tmp_path / name) == (tmp_path / name / "artifacts" / "0").as_uri()
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [
        f"mlflow-{mlflow.__version__}-empty.db"
    ]  # one template, no temporary files left behind


def test_an_unusable_cache_leaves_mlflow_to_create_the_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "not-a-folder").write_text("")
    monkeypatch.setenv("DRIFTLOOP_CACHE_DIR", str(tmp_path / "not-a-folder"))
    monkeypatch.chdir(tmp_path)
    registry = _registry(tmp_path / "project")
    version = registry.register("loan", [3], params={}, metrics={}, tags={})
    assert registry.load("loan", version) == [3]
    assert Path(_default_location(tmp_path / "project")).parent == tmp_path / "mlruns"  # MLflow's own


def test_a_cached_template_that_is_no_mlflow_database_is_made_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DRIFTLOOP_CACHE_DIR", str(tmp_path / "cache"))
    template = tmp_path / "cache" / f"mlflow-{mlflow.__version__}-empty.db"
    template.parent.mkdir()
    template.write_bytes(b"not a database")
    target = tmp_path / "project" / "mlflow.db"
    target.parent.mkdir()
    assert start_from_template(target, tmp_path / "artifacts") is True
    for db in (template, target):
        with closing(sqlite3.connect(db)) as conn:
            assert conn.execute("SELECT version_num FROM alembic_version").fetchone()
    assert start_from_template(target, tmp_path / "artifacts") is False  # never over an existing one
    assert sorted(p.name for p in target.parent.iterdir()) == ["mlflow.db"]
