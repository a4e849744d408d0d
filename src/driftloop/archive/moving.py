"""Moving closed windows' rows from the store to the archive, and the joined reads the store's
label queries take from it."""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from driftloop.archive.files import LogArchive, _day, from_table, to_table
from driftloop.exceptions import ArchiveError

if TYPE_CHECKING:  # pandas and pyarrow load when rows move, not for reading a manifest
    import pyarrow as pa

    from driftloop.project import Project

log = logging.getLogger("driftloop.archive")


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
    batches = archive.manifests(name)
    through = int(batches[-1]["last_seq"]) if batches else 0
    if batches and batches[-1].get("source") == "store":  # a crash may have left its rows behind
        result.recovered = store.delete_archived(name, batches[-1], **_held(archive, name, batches[-1]))
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
                page = store.predictions_after(name, through, size)
                # consecutive from the oldest, in closed windows, up to the first row too young
                rows = list(itertools.takewhile(lambda r: r["seq"] <= closed and r["ts"] < cutoff, page))
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
                if len(rows) < size:  # a row too young, the last closed window, or the log's end
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
        source="store",  # rows moved out of the store (not write_inputs): the store deletes them
        max_feedback_id=max_feedback,
        max_annotation_id=max_annotation,
        counts={"predictions": len(rows), "feedback": len(labels), "annotations": len(notes)},
    )
    store.delete_archived(
        name,
        manifest,
        feedback_ids=[int(r["id"]) for r in labels],
        annotation_ids=[int(r["id"]) for r in notes],
    )
    return manifest


def _held(archive: LogArchive, name: str, manifest: dict[str, Any]) -> dict[str, list[int]]:
    """The ids of the labels and annotations a written batch holds, read from its files."""
    span: dict[str, Any] = {
        "start_seq": int(manifest["first_seq"]),
        "end_seq": int(manifest["last_seq"]),
        "batches": [manifest],
    }
    return {
        "feedback_ids": [int(r["id"]) for r in archive.rows(name, "feedback", **span)],
        "annotation_ids": [int(r["id"]) for r in archive.rows(name, "annotations", **span)],
    }


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
    batches: Sequence[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Archived predictions in the sequence range (their ``columns``) joined with their archived
    ``kind`` rows (``feedback`` or ``annotations``, ids up to ``max_id``; their ``pick`` columns,
    renamed) and with ``orphans``: rows of that kind still in the store whose prediction was
    archived meanwhile. Ordered by seq, then the row's id, as the store's own joins are.
    ``batches``: the manifests, when the caller listed them already (one listing per query)."""
    span: dict[str, Any] = {"start_seq": start_seq, "end_seq": end_seq, "batches": batches}
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
