"""The log archive: closed windows' rows moved from the store to Parquet, so the store stays small.

Predictions, and the labels and annotations people gave them, move in batches of consecutive
sequence numbers, oldest first, to files partitioned by model and day (the day a prediction was
served), through `fsspec <https://filesystem-spec.readthedocs.io>`_: a local folder by default,
object storage (``s3://...``) with the ``s3`` extra::

    <archive>/predictions/model=<name>/day=<YYYY-MM-DD>/<first seq>-<last seq>.parquet
    <archive>/feedback/model=<name>/day=...       the labels of those predictions
    <archive>/annotations/model=<name>/day=...    their ratings, tags and scores
    <archive>/_manifest/<name>/<first seq>-<last seq>.json

A batch is written in this order: every data file, then its manifest (rows, bytes and a SHA-256
per file), then, in one store transaction, the rows are deleted from the store. Readers trust
only files a manifest lists, so a crash part-way leaves nothing a reader sees: files without a
manifest are rewritten by the next run, and a manifest whose rows are still in the store (a crash
before the delete) makes the next run delete them. Batches cover consecutive sequence numbers
from the oldest, so "archived through seq N" is one number per model; readers take rows up to N
from the archive and the rest from the store.

A prediction's inputs are stored one column per input (``inputs.<name>``), typed where the
values allow (numbers, text, booleans) and as JSON text otherwise, so a profile of an archive
reads only the columns it needs. See :func:`profile_archive` for profiling one on Dask.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from driftloop.exceptions import ArchiveError, ConfigError

if TYPE_CHECKING:  # pandas and pyarrow load when rows move, not for reading a manifest
    import pandas as pd
    import pyarrow as pa

    from driftloop.profiles import Profile, ProfileSpec
    from driftloop.project import Project

__all__ = ["ArchiveResult", "LogArchive", "archive_logs", "profile_archive"]

log = logging.getLogger("driftloop.archive")

KINDS = ("predictions", "feedback", "annotations")
INPUT_PREFIX = "inputs."
_JSON_COLUMNS = {
    "predictions": ("probabilities", "meta"),
    "feedback": (),
    "annotations": ("tags", "scores"),
}
_META_JSON = b"driftloop.json_columns"
_GOLDEN = 0.6180339887498949  # the monitor's hash of a sequence number, for the row sample


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


@dataclass
class ArchiveResult:
    """What one archiving pass did."""

    batches: int = 0
    predictions: int = 0
    feedback: int = 0
    annotations: int = 0
    bytes: int = 0
    through_seq: int = 0
    pruned_batches: int = 0
    recovered: int = 0  # rows a crashed earlier pass had archived but not yet deleted
    seconds: float = 0.0
    files: list[str] = field(default_factory=list)


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
        self._manifests: dict[str, tuple[float, list[dict[str, Any]]]] = {}

    def __repr__(self) -> str:
        return f"LogArchive({self.url!r})"

    def _path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    # -- reading the manifests -------------------------------------------------------------
    def manifests(self, model: str) -> list[dict[str, Any]]:
        """Every batch of ``model``, oldest first (cached for a second: many reads, few writes)."""
        cached = self._manifests.get(model)
        if cached is not None and time.monotonic() - cached[0] < 1.0:
            return cached[1]
        folder = self._path("_manifest", model)
        found: list[dict[str, Any]] = []
        try:
            names = sorted(p for p in self.fs.ls(folder, detail=False) if str(p).endswith(".json"))
        except FileNotFoundError:
            names = []
        for name in names:
            with self.fs.open(name, "rb") as f:
                try:
                    found.append(json.loads(f.read()))
                except json.JSONDecodeError as exc:
                    raise ArchiveError(f"The archive manifest '{name}' is not valid JSON: {exc}.") from None
        found.sort(key=lambda m: m["first_seq"])
        self._manifests[model] = (time.monotonic(), found)
        return found

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
    ) -> list[dict[str, Any]]:
        """The manifest entries of ``kind``'s files whose rows may fall in the span, oldest first."""
        out = []
        for batch in self.manifests(model):
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
        continue the archive, so ``first_seq`` must follow its last.

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


def _with_day(kind: str, rows: list[dict[str, Any]], days: dict[str, str]) -> pa.Table:
    import pyarrow as pa

    table = to_table(kind, rows)
    return table.append_column("day", pa.array([days[r["prediction_id"]] for r in rows], pa.string()))


def archive_logs(
    project: Project,
    *,
    older_than: float | None = None,
    now: float | None = None,
    limit: int | None = None,
    progress: bool = False,
) -> ArchiveResult:
    """Move ``project``'s closed windows' rows older than ``older_than`` seconds (default:
    ``archive.after``) to the archive, then apply ``archive.retention``. Safe to run at any
    time: one pass per project runs at once (:func:`driftloop.locks.archive_lock`; another
    raises :class:`ArchiveBusy`), and a crash part-way is finished by the next pass."""
    from driftloop.locks import archive_lock

    lock = archive_lock(project.settings.store.url, project.settings.state_dir, project.name)
    if not lock.acquire():
        holder = lock.holder()
        raise ArchiveBusy(
            f"Another process{f' ({holder})' if holder else ''} is archiving the logs of "
            f"'{project.name}'; this pass would move the same rows, so it does not run."
        )
    try:
        return _archive_logs(project, older_than=older_than, now=now, limit=limit, progress=progress)
    finally:
        lock.release()


class ArchiveBusy(ArchiveError):
    """Another process holds the project's archiving lock."""


def _archive_logs(
    project: Project, *, older_than: float | None, now: float | None, limit: int | None, progress: bool
) -> ArchiveResult:
    settings = project.settings.archive
    archive, store, name = project.archive, project.store, project.name
    started = time.time()
    now = started if now is None else now
    age = settings.after if older_than is None else older_than
    result = ArchiveResult()
    through = archive.archived_through(name)
    result.recovered = store.delete_archived(name, through, archive.manifests(name)[-1:] or None)
    last = store.last_window(name)
    closed = int(last["end_seq"]) if last else 0
    if age is not None and closed > through:
        cutoff = now - age
        bar = None
        if progress:
            from rich.progress import Progress

            bar = Progress(transient=True)
            bar.start()
            task = bar.add_task(f"archiving {name}", total=closed - through)
        try:
            while limit is None or result.predictions < limit:
                size = (
                    settings.batch_rows
                    if limit is None
                    else min(settings.batch_rows, limit - result.predictions)
                )
                rows = store.predictions_after(name, through, size)
                rows = [r for r in rows if r["seq"] <= closed]
                cut = next((i for i, r in enumerate(rows) if r["ts"] >= cutoff), len(rows))
                rows = rows[:cut]  # consecutive from the oldest: stop at the first row too young
                if not rows:
                    break
                manifest = _archive_batch(project, rows)
                result.batches += 1
                result.predictions += len(rows)
                result.feedback += manifest["counts"]["feedback"]
                result.annotations += manifest["counts"]["annotations"]
                result.bytes += sum(f["bytes"] for f in manifest["files"])
                result.files += [f["path"] for f in manifest["files"]]
                through = int(rows[-1]["seq"])
                if bar is not None:
                    bar.update(task, advance=len(rows))
                if cut < len(rows) or len(rows) < size:
                    break
        finally:
            if bar is not None:
                bar.stop()
    if settings.retention is not None:
        result.pruned_batches = archive.prune(name, now - settings.retention)
    result.through_seq = archive.archived_through(name)
    result.seconds = time.time() - started
    if result.batches:
        log.info(
            "Archived %d predictions, %d labels and %d annotations of '%s' (%d bytes) through seq %d.",
            result.predictions,
            result.feedback,
            result.annotations,
            name,
            result.bytes,
            result.through_seq,
        )
    return result


def _archive_batch(project: Project, rows: list[dict[str, Any]]) -> dict[str, Any]:
    store, name = project.store, project.name
    max_feedback, max_annotation = store.max_feedback_id(), store.max_annotation_id()
    ids = [r["prediction_id"] for r in rows]
    days = {r["prediction_id"]: _day(r["ts"]) for r in rows}
    labels = store.feedback_of(ids, max_id=max_feedback)
    notes = store.annotations_of(ids, max_id=max_annotation)
    tables = {"predictions": _with_day("predictions", rows, days)}
    if labels:
        tables["feedback"] = _with_day("feedback", labels, days)
    if notes:
        tables["annotations"] = _with_day("annotations", notes, days)
    manifest = project.archive.write_batch(
        name,
        tables,
        first_seq=int(rows[0]["seq"]),
        last_seq=int(rows[-1]["seq"]),
        max_feedback_id=max_feedback,
        max_annotation_id=max_annotation,
        counts={"predictions": len(rows), "feedback": len(labels), "annotations": len(notes)},
    )
    store.delete_archived(name, int(rows[-1]["seq"]), [manifest])
    return manifest


# -- joined reads: what the store's label queries add from the archive --------------------------
def archived_joined(
    archive: LogArchive,
    model: str,
    kind: str,
    *,
    start_seq: int,
    end_seq: int | None,
    max_id: int | None,
    orphans: Iterable[dict[str, Any]] = (),
    columns: Sequence[str],
    pick: dict[str, str],
) -> list[dict[str, Any]]:
    """Archived predictions in the sequence range (their ``columns``) joined with their archived
    ``kind`` rows (``feedback`` or ``annotations``, ids up to ``max_id``; their ``pick`` columns,
    renamed) and with ``orphans``: rows of that kind still in the store whose prediction was
    archived meanwhile. Ordered by seq, then the row's id, as the store's own joins are."""
    span: dict[str, Any] = {"start_seq": start_seq, "end_seq": end_seq}
    extra = archive.rows(model, kind, **span) + list(orphans)
    if max_id is not None:
        extra = [r for r in extra if r["id"] <= max_id]
    if not extra:
        return []
    wanted = {r["prediction_id"] for r in extra}
    predictions: dict[str, dict[str, Any]] = {}
    for entry in archive.files(model, "predictions", **span):
        for row in from_table(_only(archive.read(entry), wanted)):
            if row["seq"] >= start_seq and (end_seq is None or row["seq"] <= end_seq):
                predictions[row["prediction_id"]] = row
    joined = []
    seen: set[tuple[str, int]] = set()
    for r in extra:
        p = predictions.get(r["prediction_id"])
        if p is not None and (r["prediction_id"], r["id"]) not in seen:
            seen.add((r["prediction_id"], r["id"]))
            joined.append(({c: p[c] for c in columns} | {new: r[old] for old, new in pick.items()}, r["id"]))
    joined.sort(key=lambda item: (item[0]["seq"], item[1]))
    return [row for row, _ in joined]


def _only(table: pa.Table, ids: set[str]) -> pa.Table:
    import pyarrow as pa
    import pyarrow.compute as pc

    return table.filter(pc.is_in(table.column("prediction_id"), value_set=pa.array(sorted(ids))))


# -- profiling an archive, in this process or on Dask ----------------------------------------------
def profile_file(
    archive: LogArchive,
    entry: dict[str, Any],
    spec: ProfileSpec,
    prepare: Callable[[pd.DataFrame], pd.DataFrame],
    *,
    since: float | None = None,
    until: float | None = None,
) -> Profile:
    """The profile of one archived file's rows, a row group at a time (memory flat in its size)."""
    import numpy as np
    import pyarrow.parquet as pq

    from driftloop.profiles import Profile

    wanted = [INPUT_PREFIX + c for c in spec.columns]
    with archive.fs.open(archive._path(entry["path"]), "rb") as f:
        parquet = pq.ParquetFile(f)
        present = set(parquet.schema_arrow.names)
        columns = ["seq", "ts", *(c for c in wanted if c in present)]
        meta = parquet.schema_arrow.metadata or {}
        encoded = set(json.loads(meta.get(_META_JSON, b"[]")))
        merged: Profile | None = None
        for i in range(parquet.num_row_groups):
            frame = parquet.read_row_group(i, columns=columns).to_pandas()
            if since is not None or until is not None:
                keep = np.ones(len(frame), bool)
                if since is not None:
                    keep &= frame["ts"].to_numpy() >= since
                if until is not None:
                    keep &= frame["ts"].to_numpy() < until
                frame = frame[keep]
            if frame.empty:
                continue
            for name in encoded & set(frame.columns):
                frame[name] = [None if v is None else json.loads(v) for v in frame[name]]
            keys = (frame["seq"].to_numpy("float64") * _GOLDEN) % 1.0
            inputs = frame.drop(columns=["seq", "ts"]).rename(columns=lambda c: c[len(INPUT_PREFIX) :])
            part = Profile.from_frame(spec, prepare(inputs), keys=keys)
            merged = part if merged is None else merged.merge(part)
    return merged if merged is not None else _empty(spec)


def _empty(spec: ProfileSpec) -> Profile:
    import pandas as pd

    from driftloop.profiles import Profile

    columns = {c: pd.Series(dtype="float64") for c in spec.numeric}
    columns |= {c: pd.Series(dtype="object") for c in spec.categorical}
    return Profile.from_frame(spec, pd.DataFrame(columns))


@dataclass
class _Prepare:
    """Inputs -> the columns profiles see, as the monitor computes them; rebuilt on a Dask worker
    from the features' settings (a schema holds a generated pydantic model that does not pickle)."""

    features: dict[str, Any]
    root: Any
    _schema: Any = field(default=None, repr=False, compare=False)

    def __call__(self, inputs: pd.DataFrame) -> pd.DataFrame:
        if self._schema is None:
            from driftloop.schema import FeatureSchema

            self._schema = FeatureSchema(self.features, root=self.root)
        return self._schema.profile_frame(self._schema.frame(inputs, strict=False, decode=False))

    def __getstate__(self) -> dict[str, Any]:
        return {"features": self.features, "root": self.root, "_schema": None}


def profile_files(
    archive: LogArchive,
    entries: Sequence[dict[str, Any]],
    spec: ProfileSpec,
    prepare: Callable[[pd.DataFrame], pd.DataFrame],
    *,
    engine: str = "local",
    scheduler: Any = None,
    split_every: int = 8,
    since: float | None = None,
    until: float | None = None,
    progress: bool = False,
) -> Profile:
    """One profile of the rows of ``entries``: a profile per file, merged.

    ``engine="local"`` profiles the files one after another in this process; ``"dask"`` maps
    them over a Dask cluster (``scheduler``: a ``distributed.Client``, a scheduler address, or
    ``None`` for the current client or Dask's default scheduler) as a ``dask.bag`` and merges
    the profiles by a tree reduction, ``split_every`` at a time. Profiles merge exactly, so both
    give the same profile and the same verdict.
    """
    entries = [
        e
        for e in entries
        if (since is None or e["max_ts"] >= since) and (until is None or e["min_ts"] < until)
    ]
    if not entries:
        return _empty(spec)
    if engine == "local":
        merged: Profile | None = None
        if progress:
            from rich.progress import track

            items: Iterable[dict[str, Any]] = track(entries, description="profiling", transient=True)
        else:
            items = entries
        for entry in items:
            part = profile_file(archive, entry, spec, prepare, since=since, until=until)
            merged = part if merged is None else merged.merge(part)
        assert merged is not None
        return merged
    if engine != "dask":
        raise ConfigError(f"The profiling engine must be 'local' or 'dask', not {engine!r}.")
    try:
        import dask.bag as db
    except ImportError:
        raise ConfigError(
            "Profiling on Dask needs the 'dask' extra: pip install 'driftloop[dask]'."
        ) from None
    fs_archive = LogArchive(archive.url, archive.storage_options)  # a fresh copy, without caches
    parts = db.from_sequence(list(entries), npartitions=len(entries))  # type: ignore[no-untyped-call]
    bag = parts.map(lambda e: profile_file(fs_archive, e, spec, prepare, since=since, until=until))
    total = bag.fold(_merge, split_every=split_every)
    client = scheduler
    if isinstance(scheduler, str):
        from distributed import Client

        with Client(scheduler) as connected:  # type: ignore[no-untyped-call]
            return _compute(total, connected, progress)
    return _compute(total, client, progress)


def _merge(a: Profile, b: Profile) -> Profile:
    return a.merge(b)


def _compute(total: Any, client: Any, progress: bool) -> Profile:
    if client is None:
        return total.compute()  # type: ignore[no-any-return]
    future = client.compute(total)
    if progress:
        from distributed import progress as show

        show(future)  # type: ignore[no-untyped-call]
    return future.result()  # type: ignore[no-any-return]


def profile_archive(
    project: Project,
    *,
    since: float | None = None,
    until: float | None = None,
    engine: str = "local",
    scheduler: Any = None,
    progress: bool = False,
) -> tuple[int, Any]:
    """Drift of the archived rows served in ``[since, until)`` against the champion's reference,
    profiled from the Parquet files (in this process or on Dask, see :func:`profile_files`):
    ``(rows, report)``, the same verdict as a profile of all those rows in one go; the report
    is None when no archived row falls in the span."""
    from driftloop.drift import compare
    from driftloop.monitor import Monitor

    ref = Monitor(project).reference()
    entries = project.archive.files(project.name, "predictions", since=since, until=until)
    prepare = _Prepare(dict(project.settings.features), project.settings.root)
    address = scheduler if scheduler is not None else project.settings.archive.dask_scheduler
    profile = profile_files(
        project.archive,
        entries,
        ref.features.spec,
        prepare,
        engine=engine,
        scheduler=address,
        since=since,
        until=until,
        progress=progress,
    )
    if profile.n == 0:
        return 0, None
    m = project.settings.monitor
    report = compare(ref.features, profile, fdr=m.fdr, min_ks=m.min_ks, min_linf=m.min_linf)
    return profile.n, report
