"""driftloop against a real MLflow tracking server (``mlflow server`` on 127.0.0.1, started here):
versions registered, aliased and loaded through it, artifacts uploaded to the server's store."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from driftloop import workflow
from driftloop.demo.data import applicants
from driftloop.demo.scenario import free_port, serve_in_thread
from driftloop.exceptions import RegistryError
from driftloop.project import Project
from driftloop.serving import create_app
from driftloop.serving.slots import ModelSlot
from driftloop.training import train

from .conftest import BIN, cli_env, make_project

pytestmark = pytest.mark.slow


def _start_server(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``mlflow server`` on a free port of 127.0.0.1, storing in ``folder``, once it answers."""
    if importlib.util.find_spec("flask") is None or not (BIN / "mlflow").exists():
        pytest.skip("needs the full mlflow package for 'mlflow server': pip install -e '.[mlflow]'")
    port = free_port()
    proc = subprocess.Popen(
        [
            str(BIN / "mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{folder}/mlflow.db",
            "--artifacts-destination",
            str(folder / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=(folder / "server.log").open("w"),
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            pytest.fail(f"mlflow server exited: {(folder / 'server.log').read_text()[-2000:]}")
        time.sleep(0.3)
    _stop(proc)
    pytest.fail("mlflow server did not answer /health within 120 s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop the server and its workers: MLflow before 3 serves through gunicorn, whose workers
    outlive a terminated ``mlflow`` process and keep answering on the port."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _project_on(url: str, folder: Path) -> Project:
    config = make_project(folder).settings.root / "driftloop.toml"
    text = config.read_text().replace('uri = "sqlite:///.driftloop/mlflow.db"', f'uri = "{url}"')
    assert url in text
    config.write_text(text)
    return Project.load(config)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    folder = tmp_path_factory.mktemp("mlflow-server")
    proc, url = _start_server(folder)
    try:
        yield url, folder / "artifacts"
    finally:
        _stop(proc)


def test_register_alias_and_load_through_a_tracking_server(
    tmp_path: Path, mlflow_server: tuple[str, Path]
) -> None:
    url, served_artifacts = mlflow_server
    project = _project_on(url, tmp_path / "p")
    config = project.settings.root / "driftloop.toml"
    try:
        assert train(project).version == "1"
        assert project.registry.alias("loan", "champion") == "1"
        # the artifact went to the server's artifact store, not a local folder
        assert list(served_artifacts.rglob("model.pkl")), "no artifact uploaded through the server"
        assert not (tmp_path / "p" / ".driftloop" / "artifacts").exists()
        # a second version, aliased and loaded back through the server
        model = project.registry.load("loan", "1")
        again = train(project).version
        assert again == "2" and project.registry.alias("loan", "champion") == "1"
        project.registry.set_alias("loan", "challenger", again)
        assert project.registry.alias("loan", "challenger") == "2"
        assert [v["version"] for v in project.registry.versions("loan")] == ["1", "2"]
        records = applicants(20, "A", seed=3).drop(columns="approved")
        assert len(model.predict_proba(project.schema.frame(records.to_dict(orient="records")))) == 20
        # serving loads the champion from the server and answers
        with (
            serve_in_thread(create_app(project, background=False, monitor=False)) as api,
            httpx.Client(base_url=api) as client,
        ):
            r = client.post("/predict", json={"records": records.to_dict(orient="records")})
            assert (
                r.status_code == 200
                and r.json()["model_version"] == "1"
                and len(r.json()["predictions"]) == 20
            )
        # an artifact changed on the server is refused before anything is unpickled
        run_id = next(v["run_id"] for v in project.registry.versions("loan") if v["version"] == "2")
        (path,) = [p for p in served_artifacts.rglob("model.pkl") if run_id in str(p)]
        path.write_bytes(path.read_bytes() + b"\0")
        fresh = Project.load(config)
        try:
            with pytest.raises(RegistryError, match="does not match the sha256"):
                fresh.registry.load("loan", "2")
        finally:
            fresh.close()
    finally:
        workflow.shutdown()
        project.close()
    shutil.rmtree(tmp_path / "p", ignore_errors=True)


def test_a_registry_outage_is_not_taken_for_no_champion(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the tracking server down, "which version is champion?" fails with a clear error:
    the serving slot keeps its model, and nothing reads the outage as "no champion yet"."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # refused at once, not after backoff
    (tmp_path / "server").mkdir()
    proc, url = _start_server(tmp_path / "server")
    try:
        project = _project_on(url, tmp_path / "p")
        assert train(project).version == "1"
        slot = ModelSlot(project)
        assert slot.refresh() and slot.current is not None and slot.current.version == "1"
        assert project.registry.alias("loan", "challenger") is None  # not set: nothing, no error
    finally:
        _stop(proc)
    try:
        said = re.escape(f"champion alias of 'loan' from the registry at {url}")
        with pytest.raises(RegistryError, match=said):
            project.champion()
        with pytest.raises(RegistryError):
            slot.refresh()  # the poller logs it and keeps serving
        assert slot.current is not None and slot.current.version == "1"
        with pytest.raises(RegistryError, match="Searching the versions"):
            project.registry.find("loan", "driftloop.run_key", "any")
    finally:
        workflow.shutdown()
        project.close()
