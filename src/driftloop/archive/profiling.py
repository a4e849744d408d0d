"""Profiling archived rows: a profile per file, a row group at a time, merged in this process or
as a ``dask.bag`` with a tree reduction on a Dask cluster."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from driftloop.archive.files import _META_JSON, INPUT_PREFIX, LogArchive
from driftloop.exceptions import ConfigError

if TYPE_CHECKING:  # pandas and pyarrow load when rows move, not for reading a manifest
    import pandas as pd

    from driftloop.profiles import Profile, ProfileSpec
    from driftloop.project import Project

_GOLDEN = 0.6180339887498949  # the monitor's hash of a sequence number, for the row sample


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
