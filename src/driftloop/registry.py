"""The model registry behind a small interface; the implementation is MLflow.

Aliases ``champion``, ``challenger`` and ``previous`` name the versions that matter. MLflow
keeps no history of alias moves, so every promotion is also a row in the store.

Models are stored as a pickle artifact whose sha256 is written on the registered version at
registration; :meth:`MlflowRegistry.load` refuses to unpickle any file whose digest differs,
so nothing is unpickled that did not come from this registry.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import re
import tempfile
import threading
from pathlib import Path
from typing import Any, Protocol

from driftloop.exceptions import NotFoundError, RegistryError

__all__ = ["MlflowRegistry", "ModelRegistry", "ModelVersion"]

log = logging.getLogger("driftloop.registry")
SHA_TAG = "driftloop.sha256"


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
    def set_tag(self, name: str, version: str, key: str, value: str) -> None: ...
    def log_decision(self, name: str, version: str, decision: dict[str, Any]) -> None: ...


class MlflowRegistry:
    """MLflow tracking + registry on any tracking URI (a local ``sqlite:///`` file by default)."""

    def __init__(self, uri: str, artifacts: str, experiment: str) -> None:
        self.uri = uri
        self.artifacts = artifacts
        self.experiment = experiment
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
                    Path(self.uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
                self._client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
            return self._client

    def _experiment(self) -> str:
        if self._experiment_id is None:
            existing = self.client.get_experiment_by_name(self.experiment)
            if existing is not None:
                self._experiment_id = existing.experiment_id
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
                client.log_artifact(run_id, str(path), "model")
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
        version = client.create_model_version(
            name, source=f"{run.info.artifact_uri}/model", run_id=run_id, tags={**tags, SHA_TAG: digest}
        )
        return str(version.version)

    def find(self, name: str, tag: str, value: str) -> str | None:
        """The first version of ``name`` whose tag ``tag`` equals ``value``."""
        try:
            found = self.client.search_model_versions(f"name='{name}' and tag.`{tag}`='{value}'")
        except Exception:
            return None
        versions = sorted(int(v.version) for v in found)
        return str(versions[0]) if versions else None

    def alias(self, name: str, alias: str) -> str | None:
        try:
            return str(self.client.get_model_version_by_alias(name, alias).version)
        except Exception:
            return None

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(name, alias, version)

    def delete_alias(self, name: str, alias: str) -> None:
        try:
            self.client.delete_registered_model_alias(name, alias)
        except Exception:
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
        except Exception:
            return []
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
        expected = mv.tags.get(SHA_TAG)
        if not expected:
            raise RegistryError(
                f"Version {version} of '{name}' was not registered by driftloop (no {SHA_TAG} tag); "
                "refusing to unpickle it."
            )
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(client.download_artifacts(mv.run_id, "model/model.pkl", tmp))
            blob = path.read_bytes()
        if hashlib.sha256(blob).hexdigest() != expected:
            raise RegistryError(
                f"The artifact of version {version} of '{name}' does not match its recorded sha256; "
                "refusing to unpickle it."
            )
        model = pickle.loads(blob)
        self._cache[key] = model
        return model
