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

from driftloop.archive.files import INPUT_PREFIX, KINDS, LogArchive, from_table, to_table
from driftloop.archive.moving import ArchiveBusy, ArchiveResult, archive_logs, archived_joined
from driftloop.archive.profiling import profile_archive, profile_file, profile_files

__all__ = [
    "INPUT_PREFIX",
    "KINDS",
    "ArchiveBusy",
    "ArchiveResult",
    "LogArchive",
    "archive_logs",
    "archived_joined",
    "from_table",
    "profile_archive",
    "profile_file",
    "profile_files",
    "to_table",
]
