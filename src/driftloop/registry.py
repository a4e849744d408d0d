"""The model registry behind a small interface; the implementation is MLflow.

Aliases ``champion``, ``challenger`` and ``previous`` name the versions that matter. MLflow
keeps no history of alias moves, so every promotion is also a row in the store.

Models are stored as a pickle artifact. Its sha256 is recorded at registration in
driftloop's own store (the *ledger*, table ``model_artifacts``), not only as an MLflow tag:
whoever can write the registry (MLflow has no authentication by default) can replace an
artifact and its tags, but not the ledger. With ``DRIFTLOOP_MODEL_KEY`` set, each ledger row
also carries an HMAC-SHA256 of ``model, version, sha256`` under that key, so even someone who
can write the store cannot vouch for an artifact. :meth:`MlflowRegistry.load` checks both before
it unpickles anything; a refused artifact raises :class:`RegistryError` and is never loaded.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import pickle
import re
import shutil
import sqlite3
import tempfile
import threading
import time
from contextlib import closing
from pathlib import Path
from typing import Any, Protocol

from driftloop.exceptions import NotFoundError, RegistryError

__all__ = [
    "ArtifactLedger",
    "MlflowRegistry",
    "ModelRegistry",
    "ModelVersion",
    "cache_dir",
    "model_key",
    "sign",
    "start_from_template",
]

log = logging.getLogger("driftloop.registry")
SHA_TAG = "driftloop.sha256"  # informational only: the digest trusted is the ledger's
KEY_ENV = "DRIFTLOOP_MODEL_KEY"


def model_key() -> bytes | None:
    """The artifact-signing key from ``DRIFTLOOP_MODEL_KEY`` (``None`` when unset)."""
    return os.environ.get(KEY_ENV, "").encode() or None


def sign(key: bytes, name: str, version: str, sha256: str) -> str:
    """HMAC-SHA256 of a version's artifact digest under ``key``.

    >>> digest = "ab" * 32
    >>> sign(b"k", "loan", "1", digest) == sign(b"k", "loan", "1", digest) != sign(b"k", "loan", "2", digest)
    True
    """
    return hmac.new(key, f"{name}\n{version}\n{sha256}".encode(), hashlib.sha256).hexdigest()


def cache_dir() -> Path:
    """Where driftloop keeps what it can rebuild: ``DRIFTLOOP_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/driftloop``, else ``~/.cache/driftloop``."""
    if os.environ.get("DRIFTLOOP_CACHE_DIR"):
        return Path(os.environ["DRIFTLOOP_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "driftloop"


def _is_mlflow_store(path: Path) -> bool:
    try:
        with closing(sqlite3.connect(path)) as db:
            return db.execute("SELECT version_num FROM alembic_version").fetchone() is not None
    except sqlite3.Error:
        return False


def _empty_registry() -> Path:
    """An empty MLflow database that this MLflow version created and migrated, made once per
    machine in :func:`cache_dir` (written beside, then renamed into place); a file there that is
    not a migrated MLflow store is made again."""
    import mlflow
    from mlflow import MlflowClient

    template = cache_dir() / f"mlflow-{mlflow.__version__}-empty.db"
    if template.exists() and _is_mlflow_store(template):
        return template
    template.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=".mlflow-", suffix=".db", dir=template.parent)
    os.close(fd)
    os.unlink(name)  # MLflow creates the file itself
    try:
        uri = f"sqlite:///{name}"
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        client.search_experiments()  # creates and migrates the tracking tables
        client.search_registered_models()  # and the registry's (the same database)
        os.replace(name, template)
    finally:
        Path(name).unlink(missing_ok=True)
    return template


def start_from_template(path: Path, artifacts: Path) -> bool:
    """Start a new local registry database at ``path`` as a copy of :func:`_empty_registry`,
    so MLflow's migrations (seconds) run once per MLflow version per machine, not once per
    project. The copy's unused ``Default`` experiment is pointed into ``artifacts``. Returns
    False, leaving ``path`` as it was for MLflow to create as usual, when the cache cannot be
    used or another process created ``path`` first.
    """
    try:
        template = _empty_registry()
        fd, name = tempfile.mkstemp(prefix=".mlflow-", suffix=".db", dir=path.parent)
        os.close(fd)
        try:
            shutil.copyfile(template, name)
            now = int(time.time() * 1000)
            with closing(sqlite3.connect(name)) as db, db:
                db.execute(
                    "UPDATE experiments SET artifact_location = ?, creation_time = ?, last_update_time = ?"
                    " WHERE experiment_id = 0",
                    ((artifacts.resolve() / "0").as_uri(), now, now),
                )
            os.link(name, path)  # fails, rather than replace it, if another process made one meanwhile
        finally:
            os.unlink(name)
    except Exception as exc:  # a speed-up only: MLflow creates the database as usual
        log.debug("The empty MLflow registry template was not used for %s: %s", path, exc)
        return False
    return True


class ArtifactLedger(Protocol):
    """Where the digests that loading trusts live (driftloop's :class:`~driftloop.store.Store`)."""

    def record_artifact(self, model: str, version: str, sha256: str, signature: str | None) -> None: ...
    def artifact(self, model: str, version: str) -> dict[str, Any] | None: ...


class ModelVersion(dict[str, Any]):
    """``version``, ``aliases``, ``tags``, ``run_id``, ``created``."""


class ModelRegistry(Protocol):
    def register(
        self,
        name: str,
        model: Any,
        *,
        params: dict[str, Any],
        metrics: dict[str, float],
        tags: dict[str, str],
    ) -> str: ...
    def find(self, name: str, tag: str, value: str) -> str | None: ...
    def alias(self, name: str, alias: str) -> str | None: ...
    def set_alias(self, name: str, alias: str, version: str) -> None: ...
    def versions(self, name: str) -> list[ModelVersion]: ...
    def load(self, name: str, version: str) -> Any: ...
    def verified_digest(self, name: str, version: str) -> str: ...
    def set_tag(self, name: str, version: str, key: str, value: str) -> None: ...
    def log_decision(self, name: str, version: str, decision: dict[str, Any]) -> None: ...


def _missing(exc: Exception) -> bool:
    """MLflow's answer for a model, version or alias that does not exist (as opposed to a
    registry that could not be read: a server down, a store locked)."""
    return getattr(exc, "error_code", None) in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


class MlflowRegistry:
    """MLflow tracking + registry on any tracking URI (a local ``sqlite:///`` file by default).

    A model, version or alias that does not exist reads as None (or nothing); a registry that
    cannot be read raises :class:`RegistryError`, so that an outage is never taken for "no
    champion" (which would unload a serving model, or make a new version champion unjudged).
    """

    def __init__(
        self,
        uri: str,
        artifacts: str,
        experiment: str,
        *,
        ledger: ArtifactLedger,
        key: bytes | None = None,
    ) -> None:
        self.uri = uri
        self.artifacts = artifacts
        self.experiment = experiment
        self.ledger, self.key = ledger, key
        self._client: Any = None
        self._experiment_id: str | None = None
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, str], Any] = {}

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                from mlflow import MlflowClient

                if self.uri.startswith("sqlite:///"):
                    path = Path(self.uri.removeprefix("sqlite:///"))
                    path.parent.mkdir(parents=True, exist_ok=True)
                    if not path.exists():
                        start_from_template(path, Path(self.artifacts))
                self._client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
            return self._client

    def _experiment(self) -> str:
        if self._experiment_id is None:
            existing = self.client.get_experiment_by_name(self.experiment)
            if existing is not None:
                self._experiment_id = existing.experiment_id
            elif self.uri.startswith(("http://", "https://")):  # a tracking server keeps the artifacts
                self._experiment_id = self.client.create_experiment(self.experiment)
            else:
                Path(self.artifacts).mkdir(parents=True, exist_ok=True)
                self._experiment_id = self.client.create_experiment(
                    self.experiment, artifact_location=Path(self.artifacts).resolve().as_uri()
                )
        return str(self._experiment_id)

    def register(
        self,
        name: str,
        model: Any,
        *,
        params: dict[str, Any],
        metrics: dict[str, float],
        tags: dict[str, str],
    ) -> str:
        """Log a run with the model artifact and register it as a new version of ``name``."""
        client = self.client
        blob = pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
        digest = hashlib.sha256(blob).hexdigest()
        run = client.create_run(self._experiment(), tags=tags, run_name=tags.get("driftloop.run_name"))
        run_id = run.info.run_id
        try:
            for key, value in params.items():
                client.log_param(run_id, key, str(value)[:500])
            for key, metric in metrics.items():
                client.log_metric(run_id, key, float(metric))
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "model.pkl"
                path.write_bytes(blob)
                self._artifacts(run.info.artifact_uri).log_artifact(str(path), "model")
            client.set_terminated(run_id)
        except Exception as exc:
            client.set_terminated(run_id, status="FAILED")
            raise RegistryError(f"Logging the model run for '{name}' failed: {exc}") from exc
        try:
            client.get_registered_model(name)
        except Exception:
            try:
                client.create_registered_model(name)
            except Exception:  # created concurrently
                client.get_registered_model(name)
        version = str(
            client.create_model_version(
                name, source=f"{run.info.artifact_uri}/model", run_id=run_id, tags={**tags, SHA_TAG: digest}
            ).version
        )
        signature = sign(self.key, name, version, digest) if self.key else None
        self.ledger.record_artifact(name, version, digest, signature)
        return version

    def _artifacts(self, artifact_uri: str) -> Any:
        """The artifact repository of a run, reached through this registry's tracking URI.
        A tracking server's proxied artifacts (``mlflow-artifacts:``) are resolved against
        ``self.uri`` here: MLflow clients before 3.7 resolved them against the process-wide
        tracking URI, which driftloop never sets (a file store there fails every upload)."""
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
        from mlflow.store.artifact.mlflow_artifacts_repo import MlflowArtifactsRepository

        if artifact_uri.startswith("mlflow-artifacts:"):
            resolve: Any = MlflowArtifactsRepository.resolve_uri  # untyped in MLflow
            artifact_uri = resolve(artifact_uri, self.uri)
        return get_artifact_repository(artifact_uri)

    def find(self, name: str, tag: str, value: str) -> str | None:
        """The first version of ``name`` whose tag ``tag`` equals ``value`` and whose artifact
        digest is in the ledger (a version registered by a process that died before recording
        it can never be loaded, so it is passed over)."""
        try:
            found = self.client.search_model_versions(f"name='{name}' and tag.`{tag}`='{value}'")
        except Exception as exc:
            if _missing(exc):
                return None
            raise RegistryError(
                f"Searching the versions of '{name}' in the registry at {self.uri} failed: {exc}"
            ) from exc
        versions = sorted(int(v.version) for v in found)
        usable = [v for v in versions if self.ledger.artifact(name, str(v)) is not None]
        return str(usable[0]) if usable else None

    def alias(self, name: str, alias: str) -> str | None:
        try:
            return str(self.client.get_model_version_by_alias(name, alias).version)
        except Exception as exc:
            if _missing(exc):
                return None
            raise RegistryError(
                f"Reading the {alias} alias of '{name}' from the registry at {self.uri} failed: {exc}"
            ) from exc

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(name, alias, version)

    def delete_alias(self, name: str, alias: str) -> None:
        try:
            self.client.delete_registered_model_alias(name, alias)
        except Exception as exc:
            if not _missing(exc):
                raise RegistryError(
                    f"Removing the {alias} alias of '{name}' from the registry at {self.uri} failed: {exc}"
                ) from exc
            log.debug("alias %s of %s was not set", alias, name)

    def set_tag(self, name: str, version: str, key: str, value: str) -> None:
        self.client.set_model_version_tag(name, version, key, value)

    def log_decision(self, name: str, version: str, decision: dict[str, Any]) -> None:
        """The gate's decision on the version's run: ``gate/decision.json`` (every rule, both
        models' values, the reasons) and one metric per rule and model. Safe to repeat."""
        client = self.client
        run_id = client.get_model_version(name, version).run_id
        client.log_dict(run_id, decision, "gate/decision.json")
        for rule in decision.get("rules", []):
            for role in ("champion", "challenger"):
                value = rule.get(role)
                if isinstance(value, int | float) and value == value:
                    key = re.sub(r"[^\w./ -]", "_", f"gate.{rule['rule']}.{rule['metric']}.{role}")[:250]
                    client.log_metric(run_id, key, float(value), step=0)
        client.set_tag(run_id, "driftloop.gate", "accepted" if decision.get("accepted") else "rejected")

    def versions(self, name: str) -> list[ModelVersion]:
        client = self.client
        try:
            aliases = client.get_registered_model(name).aliases
        except Exception as exc:
            if _missing(exc):
                return []
            raise RegistryError(f"Reading '{name}' from the registry at {self.uri} failed: {exc}") from exc
        by_version: dict[str, list[str]] = {}
        for alias, version in aliases.items():
            by_version.setdefault(str(version), []).append(alias)
        out = []
        for v in client.search_model_versions(f"name='{name}'"):
            out.append(
                ModelVersion(
                    version=str(v.version),
                    aliases=sorted(by_version.get(str(v.version), [])),
                    tags=dict(v.tags),
                    run_id=v.run_id,
                    created=v.creation_timestamp / 1000.0,
                )
            )
        return sorted(out, key=lambda v: int(v["version"]))

    def tags(self, name: str, version: str) -> dict[str, str]:
        return dict(self.client.get_model_version(name, version).tags)

    def metrics(self, name: str, version: str) -> dict[str, float]:
        mv = self.client.get_model_version(name, version)
        return dict(self.client.get_run(mv.run_id).data.metrics)

    def verified_digest(self, name: str, version: str) -> str:
        """The sha256 the version's artifact must have: from the ledger, its signature checked
        when a key is set. Raises :class:`RegistryError` when it cannot be trusted."""
        row = self.ledger.artifact(name, version)
        if row is None:
            raise RegistryError(
                f"Version {version} of '{name}' has no artifact digest in driftloop's store, so it was "
                "not registered by this project; refusing to unpickle it."
            )
        if self.key is not None:
            expected = sign(self.key, name, version, row["sha256"])
            if row["signature"] is None:
                raise RegistryError(
                    f"Version {version} of '{name}' was registered without {KEY_ENV}, so its artifact "
                    "cannot be verified with the key now set; refusing to unpickle it (retrain it, or "
                    "run 'driftloop sign' to vouch for the digests in the store)."
                )
            if not hmac.compare_digest(str(row["signature"]), expected):
                raise RegistryError(
                    f"The recorded digest of version {version} of '{name}' is not signed by "
                    f"{KEY_ENV}; refusing to unpickle it."
                )
        return str(row["sha256"])

    def load(self, name: str, version: str) -> Any:
        """The model object of a version, after checking its artifact against the recorded sha256."""
        key = (name, version)
        if key in self._cache:
            return self._cache[key]
        client = self.client
        try:
            mv = client.get_model_version(name, version)
        except Exception as exc:
            raise NotFoundError(
                f"Model '{name}' has no version {version!r} in the registry at {self.uri}."
            ) from exc
        expected = self.verified_digest(name, version)
        with tempfile.TemporaryDirectory() as tmp:
            artifacts = self._artifacts(client.get_run(mv.run_id).info.artifact_uri)
            path = Path(artifacts.download_artifacts("model/model.pkl", tmp))
            blob = path.read_bytes()
        if hashlib.sha256(blob).hexdigest() != expected:
            raise RegistryError(
                f"The artifact of version {version} of '{name}' does not match the sha256 driftloop "
                "recorded when it registered the version; refusing to unpickle it."
            )
        model = pickle.loads(blob)  # verified above: this is the artifact driftloop registered
        self._cache[key] = model
        return model
