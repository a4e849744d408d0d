"""Versioned snapshots: content-addressed Parquet plus a JSON manifest, and stable splits.

The same rows give the same id, so a replayed step finds the snapshot it already wrote.
Files are written to a temporary name and renamed, so a crash leaves no half-written snapshot.

>>> stable_fraction("abc") == stable_fraction("abc")
True
>>> 0 <= stable_fraction("abc") < 1
True
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from driftloop.exceptions import ConfigError, NotFoundError

__all__ = ["Dataset", "content_id", "file_sha256", "read_table", "stable_fraction", "write_snapshot"]


@dataclass(frozen=True)
class Dataset:
    id: str
    path: Path
    rows: int
    manifest: dict[str, Any]

    def load(self) -> pd.DataFrame:
        if not self.path.is_file():
            raise NotFoundError(f"The snapshot file of dataset {self.id} is missing at '{self.path}'.")
        return pd.read_parquet(self.path)


def stable_fraction(key: str) -> float:
    """A number in [0, 1) fixed by ``key``: the basis of splits that never move."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def content_id(df: pd.DataFrame, extra: dict[str, Any] | None = None) -> str:
    """sha256 over column names, dtypes and row hashes (independent of Parquet encoding)."""
    h = hashlib.sha256()
    h.update(json.dumps([[str(c), str(t)] for c, t in df.dtypes.items()]).encode())
    h.update(np.ascontiguousarray(pd.util.hash_pandas_object(df, index=False).to_numpy()).tobytes())
    if extra:
        h.update(json.dumps(extra, sort_keys=True, default=str).encode())
    return h.hexdigest()


def read_table(path: Path, setting: str = "data.train") -> pd.DataFrame:
    """Read the CSV or Parquet file named in the config under ``setting``."""
    if not path.is_file():
        raise ConfigError(f"The '{setting}' file must exist. Got '{path}', which does not.")
    if path.suffix.lower() == ".parquet":
        return pd.read_parquet(path)
    return pd.read_csv(path)


def write_snapshot(folder: Path, df: pd.DataFrame, manifest: dict[str, Any]) -> Dataset:
    """Write ``df`` as ``<id>.parquet`` with ``<id>.json`` beside it; idempotent by content."""
    df = df.reset_index(drop=True)
    digest = content_id(df)  # hash the rows once: the id is its prefix
    dataset_id = digest[:32]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{dataset_id}.parquet"
    manifest = {**manifest, "id": dataset_id, "rows": len(df), "sha256": digest}
    if not path.is_file():
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        df.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    meta = folder / f"{dataset_id}.json"
    if not meta.is_file():
        tmp = meta.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(manifest, indent=2, default=str))
        os.replace(tmp, meta)
    return Dataset(dataset_id, path, len(df), manifest)
