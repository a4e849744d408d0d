"""The archive's files: the layout, rows to Arrow and back, and :class:`LogArchive`, which
writes batches and their manifests and reads only what a manifest lists."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from driftloop.exceptions import ArchiveError, ConfigError

if TYPE_CHECKING:  # pandas and pyarrow load when rows move, not for reading a manifest
    import pandas as pd
    import pyarrow as pa


log = logging.getLogger("driftloop.archive")

KINDS = ("predictions", "feedback", "annotations")
INPUT_PREFIX = "inputs."
_JSON_COLUMNS = {
    "predictions": ("probabilities", "meta"),
    "feedback": (),
    "annotations": ("tags", "scores"),
}
_META_JSON = b"driftloop.json_columns"


def _day(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d")


def _column(values: list[Any]) -> tuple[pa.Array, bool]:
    """One column as Arrow, typed if its values allow, else as JSON text (True: JSON)."""
    import pyarrow as pa

    if any(isinstance(v, (dict, list, tuple)) for v in values):
        return pa.array([None if v is None else json.dumps(v) for v in values], pa.string()), True
    try:
        return pa.array(values), False
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):  # mixed types: keep each as it was
        return pa.array([None if v is None else json.dumps(v) for v in values], pa.string()), True


def to_table(kind: str, rows: Sequence[dict[str, Any]]) -> pa.Table:
    """Store rows of one kind as an Arrow table (JSON columns as text, inputs one per column)."""
    import pyarrow as pa

    names = [k for k in rows[0] if k != "inputs"] if rows else []
    arrays: dict[str, pa.Array] = {}
    encoded: list[str] = []
    for name in names:
        values = [r.get(name) for r in rows]
        if name in _JSON_COLUMNS[kind]:
            arrays[name] = pa.array([None if v is None else json.dumps(v) for v in values], pa.string())
            encoded.append(name)
        else:
            arrays[name], is_json = _column(values)
            if is_json:
                encoded.append(name)
    if kind == "predictions":
        keys: dict[str, None] = {}
        for r in rows:
            keys.update(dict.fromkeys(r["inputs"]))
        for key in keys:
            name = INPUT_PREFIX + key
            arrays[name], is_json = _column([r["inputs"].get(key) for r in rows])
            if is_json:
                encoded.append(name)
    table = pa.table(arrays)
    return table.replace_schema_metadata({_META_JSON: json.dumps(encoded).encode()})


def from_table(table: pa.Table) -> list[dict[str, Any]]:
    """Rows as the store returns them (``inputs`` a dict again, JSON columns decoded)."""
    meta = table.schema.metadata or {}
    encoded = set(json.loads(meta.get(_META_JSON, b"[]")))
    inputs = [n for n in table.column_names if n.startswith(INPUT_PREFIX)]
    plain = [n for n in table.column_names if not n.startswith(INPUT_PREFIX)]
    columns = {n: table.column(n).to_pylist() for n in table.column_names}
    for name in encoded:
        columns[name] = [None if v is None else json.loads(v) for v in columns[name]]
    out: list[dict[str, Any]] = []
    for i in range(table.num_rows):
        row = {n: columns[n][i] for n in plain}
        if inputs:
            row["inputs"] = {
                n[len(INPUT_PREFIX) :]: columns[n][i] for n in inputs if columns[n][i] is not None
            }
        out.append(row)
    return out


class LogArchive:
    """The archive at ``url`` (a folder or an fsspec URL).

    >>> import tempfile
    >>> archive = LogArchive(tempfile.mkdtemp())
    >>> archive.archived_through("loans"), archive.manifests("loans")
    (0, [])
    """

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        import fsspec

        self.url = url
        self.storage_options = dict(storage_options or {})
        self.fs, self.root = fsspec.core.url_to_fs(url, **self.storage_options)
        self.root = self.root.rstrip("/")
        self._manifests: dict[str, dict[str, dict[str, Any]]] = {}  # model -> file -> manifest

    def __repr__(self) -> str:
        return f"LogArchive({self.url!r})"

    def _path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    # -- reading the manifests -------------------------------------------------------------
    def manifests(self, model: str) -> list[dict[str, Any]]:
        """Every batch of ``model``, oldest first. The folder is listed on every call, so a
        reader sees a batch as soon as its manifest is written; each manifest is parsed once."""
        folder = self._path("_manifest", model)
        try:
            names = sorted(str(p) for p in self.fs.ls(folder, detail=False) if str(p).endswith(".json"))
        except FileNotFoundError:
            names = []
        parsed = self._manifests.setdefault(model, {})
        for name in names:
            if name not in parsed:
                with self.fs.open(name, "rb") as f:
                    try:
                        parsed[name] = json.loads(f.read())
                    except json.JSONDecodeError as exc:
                        raise ArchiveError(
                            f"The archive manifest '{name}' is not valid JSON: {exc}."
                        ) from None
        for gone in set(parsed) - set(names):
            del parsed[gone]
        return sorted(parsed.values(), key=lambda m: int(m["first_seq"]))

    def archived_through(self, model: str) -> int:
        """The highest sequence number of ``model`` in the archive (0: nothing archived)."""
        batches = self.manifests(model)
        return int(batches[-1]["last_seq"]) if batches else 0

    def files(
        self,
        model: str,
        kind: str = "predictions",
        *,
        since: float | None = None,
        until: float | None = None,
        start_seq: int = 0,
        end_seq: int | None = None,
        batches: Sequence[dict[str, Any]] | None = None,
    ) -> list[dict[str, Any]]:
        """The manifest entries of ``kind``'s files whose rows may fall in the span, oldest first
        (from ``batches`` when the caller listed the manifests already)."""
        out = []
        for batch in self.manifests(model) if batches is None else batches:
            if batch["last_seq"] < start_seq or (end_seq is not None and batch["first_seq"] > end_seq):
                continue
            for f in batch["files"]:
                if f["kind"] != kind:
                    continue
                if since is not None and f["max_ts"] < since:
                    continue
                if until is not None and f["min_ts"] >= until:
                    continue
                out.append(f)
        return out

    def read(self, entry: dict[str, Any], columns: Sequence[str] | None = None) -> pa.Table:
        import pyarrow.parquet as pq

        with self.fs.open(self._path(entry["path"]), "rb") as f:
            return pq.read_table(f, columns=list(columns) if columns else None)

    def rows(self, model: str, kind: str, **span: Any) -> list[dict[str, Any]]:
        """Every archived row of ``kind`` in the span, as the store would return it."""
        out: list[dict[str, Any]] = []
        for entry in self.files(model, kind, **span):
            out += from_table(self.read(entry))
        return out

    def verify(self, model: str) -> list[str]:
        """Problems found re-reading every file against its manifest (empty: all intact)."""
        problems = []
        for batch in self.manifests(model):
            for f in batch["files"]:
                try:
                    with self.fs.open(self._path(f["path"]), "rb") as fh:
                        digest = hashlib.sha256(fh.read()).hexdigest()
                except FileNotFoundError:
                    problems.append(f"{f['path']}: missing")
                    continue
                if digest != f["sha256"]:
                    problems.append(
                        f"{f['path']}: SHA-256 {digest[:12]}…, the manifest says {f['sha256'][:12]}…"
                    )
        return problems

    # -- writing ----------------------------------------------------------------------------
    def _put(self, path: str, data: bytes) -> None:
        """Write ``data`` durably at ``path``: to a temporary name, synced, then renamed (a local
        rename is atomic; on object storage one PUT is)."""
        from fsspec.implementations.local import LocalFileSystem

        full = self._path(path)
        self.fs.makedirs(full.rsplit("/", 1)[0], exist_ok=True)
        if isinstance(self.fs, LocalFileSystem):
            tmp = full + ".tmp"
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, full)
            fd = os.open(full.rsplit("/", 1)[0], os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            return
        with self.fs.open(full, "wb") as f:
            f.write(data)

    def write_batch(
        self, model: str, tables: dict[str, pa.Table], *, first_seq: int, last_seq: int, **extra: Any
    ) -> dict[str, Any]:
        """Write one batch's tables (each with a ``day`` column to partition on, dropped from the
        files) and then its manifest; returns the manifest."""
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        name = f"{first_seq:012d}-{last_seq:012d}"
        entries = []
        for kind, table in tables.items():
            if table.num_rows == 0:
                continue
            days = table.column("day")
            data = table.drop_columns(["day"])
            for day in sorted(pc.unique(days).to_pylist()):
                part = data.filter(pc.equal(days, day))
                sink = pa.BufferOutputStream()
                pq.write_table(part, sink, compression="zstd", row_group_size=256_000)
                blob = sink.getvalue().to_pybytes()
                path = f"{kind}/model={model}/day={day}/{name}.parquet"
                self._put(path, blob)
                ts = part.column("ts")
                entries.append(
                    {
                        "kind": kind,
                        "path": path,
                        "day": day,
                        "rows": part.num_rows,
                        "bytes": len(blob),
                        "sha256": hashlib.sha256(blob).hexdigest(),
                        "min_ts": float(pc.min(ts).as_py()),
                        "max_ts": float(pc.max(ts).as_py()),
                    }
                )
        manifest = {
            "model": model,
            "first_seq": first_seq,
            "last_seq": last_seq,
            "created_at": time.time(),
            "files": entries,
            **extra,
        }
        self._put(f"_manifest/{model}/{name}.json", json.dumps(manifest, indent=1).encode())
        self._manifests.pop(model, None)
        return manifest

    def write_inputs(
        self, model: str, inputs: pd.DataFrame, *, first_seq: int, ts: Sequence[float]
    ) -> dict[str, Any]:
        """Archive a frame of past requests' inputs as ``model``'s predictions ``first_seq``
        onward (served at ``ts``): logs from before driftloop, or a synthetic load. Batches
        continue the archive, so ``first_seq`` must follow its last; and since readers take
        every row up to the archive's last sequence number from it, those numbers must not be
        in use in the store (a model that never logged through it, or a store started after).

        >>> import tempfile, pandas as pd
        >>> archive = LogArchive(tempfile.mkdtemp())
        >>> m = archive.write_inputs("m", pd.DataFrame({"x": [1.0, 2.0]}), first_seq=1, ts=[0.0, 90000.0])
        >>> [(f["day"], f["rows"]) for f in m["files"]], archive.archived_through("m")
        ([('1970-01-01', 1), ('1970-01-02', 1)], 2)
        """
        import numpy as np
        import pyarrow as pa

        through = self.archived_through(model)
        if first_seq != through + 1:
            raise ConfigError(
                f"An archive batch must start right after the last one: first_seq must be {through + 1} "
                f"for model '{model}'. Got {first_seq} instead."
            )
        times = np.asarray(ts, dtype="float64")
        if len(times) != len(inputs):
            raise ConfigError(f"ts must have one time per row: {len(inputs)} rows. Got {len(times)} instead.")
        table = pa.table(
            {
                "seq": pa.array(np.arange(first_seq, first_seq + len(inputs), dtype=np.int64)),
                "ts": pa.array(times),
                **{INPUT_PREFIX + str(c): pa.array(inputs[c].to_numpy()) for c in inputs.columns},
                "day": pa.array([_day(t) for t in np.unique(times)], pa.string()).take(
                    pa.array(np.searchsorted(np.unique(times), times))
                ),
            }
        )
        return self.write_batch(
            model, {"predictions": table}, first_seq=first_seq, last_seq=first_seq + len(inputs) - 1
        )

    def prune(self, model: str, before: float) -> int:
        """Delete the batches whose every row is older than ``before`` (retention); the manifest
        goes first, so a crash part-way leaves only unlisted files. Returns batches deleted."""
        gone = 0
        for batch in self.manifests(model):
            newest = max((f["max_ts"] for f in batch["files"]), default=0.0)
            if newest >= before:
                break  # batches are in sequence order, so roughly in time order: stop at the first kept
            name = f"{batch['first_seq']:012d}-{batch['last_seq']:012d}"
            self.fs.rm(self._path("_manifest", model, name + ".json"))
            for f in batch["files"]:
                with contextlib.suppress(FileNotFoundError):
                    self.fs.rm(self._path(f["path"]))
            gone += 1
        self._manifests.pop(model, None)
        return gone
