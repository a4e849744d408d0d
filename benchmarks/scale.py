"""Profiling an archive past one machine's memory: driftloop in one process and on Dask.

    python benchmarks/scale.py [--rows 100000000] [--rows-per-file 1000000] [--workers 2]

Writes an archive of ``--rows`` rows x 25 columns (20 numeric, 5 categorical; the drift of
issue 3 injected in 7 of them) as one Parquet file per day, in the archive's own layout
(``LogArchive.write_inputs``), then profiles it against a 100,000-row reference:

* driftloop in one process (``engine="local"``: a file at a time, a row group at a time), on a
  tenth of the files and on all of them, each in a fresh process so its peak memory is its own;
* driftloop on a Dask ``LocalCluster`` of ``--workers`` single-threaded worker processes
  (``engine="dask"``: a profile per file, a tree reduction of merges);
* for contrast, what a pandas-only tool must do first: read a tenth of the files into one
  frame (its peak memory grows with the rows).

Prints seconds, rows per second and peak memory (ru_maxrss) of each process, whether the
single-process and Dask verdicts are identical, and what a 1B-row day would cost on N workers
from the measured per-file cost. Writing the archive is timed apart.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _data import CATEGORICAL, DRIFTED, NUMERIC, chunks, frame

from driftloop import Profile, ProfileSpec
from driftloop.archive import LogArchive, profile_files
from driftloop.drift import compare

MODEL = "scale"
DAY = 86_400.0


def peak_mib() -> float:
    """This process's peak resident memory: VmHWM, which exec resets (ru_maxrss keeps the
    forking parent's peak on Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def identity(frame: Any) -> Any:
    return frame


def _warm() -> None:
    import driftloop.archive
    import driftloop.profiles  # noqa: F401


def reference() -> Profile:
    ref = frame(100_000, drift=False, seed=1)
    spec = ProfileSpec.fit(ref, numeric=NUMERIC, categorical=CATEGORICAL, bins=50, sample_size=2000)
    return Profile.from_frame(spec, ref)


def write(folder: Path, rows: int, per_file: int) -> tuple[float, int]:
    from rich.progress import track

    archive = LogArchive(str(folder))
    start = time.perf_counter()
    seq = 1
    total = -(-rows // per_file)
    for day, chunk in track(
        enumerate(chunks(rows, drift=True, seed=2, size=per_file)), total=total, description="writing"
    ):
        ts = 1_700_006_400.0 + day * DAY + np.linspace(0, DAY - 1, len(chunk))  # a UTC midnight on
        archive.write_inputs(MODEL, chunk, first_seq=seq, ts=ts)
        seq += len(chunk)
    size = sum(f.stat().st_size for f in folder.rglob("*.parquet"))
    return time.perf_counter() - start, size


def verdict(ref: Profile, profile: Profile) -> dict[str, Any]:
    report = compare(ref, profile)
    return {
        "rows": profile.n,
        "drifted": sorted(report.drifted),
        "columns": [[c.column, round(c.effect, 12), c.drifted] for c in report.columns],
    }


def child(mode: str, folder: str, share: float, workers: int) -> None:
    """One measurement in this process, printed as JSON."""
    ref = reference()
    archive = LogArchive(folder)
    entries = archive.files(MODEL)
    entries = entries[: max(1, round(len(entries) * share))]
    base = peak_mib()
    out: dict[str, Any] = {"mode": mode, "files": len(entries), "baseline_mib": base}
    start = time.perf_counter()
    if mode == "local":
        profile = profile_files(archive, entries, ref.spec, identity, engine="local")
        out.update(verdict(ref, profile))
    elif mode == "dask":
        from distributed import Client, LocalCluster

        with (
            LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0"
            ) as cluster,
            Client(cluster) as client,
        ):
            client.run(_warm)  # each worker imports driftloop once, as a long-lived cluster has
            out["cluster_seconds"] = time.perf_counter() - start
            started = time.perf_counter()
            profile = profile_files(archive, entries, ref.spec, identity, engine="dask", scheduler=client)
            out["compute_seconds"] = time.perf_counter() - started
            out["worker_peak_mib"] = sorted(client.run(peak_mib).values())
        out.update(verdict(ref, profile))
    elif mode == "pandas":
        import pandas as pd

        frames = [archive.read(e).to_pandas() for e in entries]
        whole = pd.concat(frames, ignore_index=True)
        del frames
        for name in NUMERIC:  # what a per-column tool computes once the frame is in memory
            np.histogram(whole[f"inputs.{name}"].to_numpy(), bins=50)
        out["rows"] = len(whole)
    out["seconds"] = out.get("compute_seconds", time.perf_counter() - start)
    out["peak_mib"] = peak_mib()
    print(json.dumps(out))


def run(mode: str, folder: Path, share: float, workers: int) -> dict[str, Any]:
    done = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            mode,
            "--dir",
            str(folder),
            "--share",
            str(share),
            "--workers",
            str(workers),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise SystemExit(f"{mode} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000_000)
    parser.add_argument("--rows-per-file", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--dir", help="an archive folder to reuse or create (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the archive afterwards")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--share", type=float, default=1.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.dir, args.share, args.workers)
        return
    folder = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="driftloop-scale-"))
    try:
        if not any(folder.rglob("*.json")):
            seconds, size = write(folder, args.rows, args.rows_per_file)
            print(
                f"wrote {args.rows:,} rows x 25 columns in {seconds:.1f}s: "
                f"{size / 2**30:.2f} GiB of Parquet (zstd) in {folder}"
            )
        tenth = run("local", folder, 0.1, args.workers)
        local = run("local", folder, 1.0, args.workers)
        dask = run("dask", folder, 1.0, args.workers)
        pandas = run("pandas", folder, 0.1, args.workers)
        rows = local["rows"]
        print()
        print(f"{'engine':<34}{'rows':>14}{'seconds':>10}{'rows/s':>14}{'peak MiB':>22}")
        print(f"{'(before any rows: imports and the reference)':<72}{local['baseline_mib']:>22,.0f}")
        for name, r in (
            ("driftloop, one process (1/10)", tenth),
            ("driftloop, one process", local),
            (f"driftloop on Dask ({args.workers} workers)", dask),
            ("pandas: read 1/10 into one frame", pandas),
        ):
            peak = f"{r['peak_mib']:,.0f}"
            if "worker_peak_mib" in r:
                peak = f"{r['peak_mib']:,.0f} + " + " + ".join(f"{w:,.0f}" for w in r["worker_peak_mib"])
            print(
                f"{name:<34}{r['rows']:>14,}{r['seconds']:>10.1f}{r['rows'] / r['seconds']:>14,.0f}{peak:>22}"
            )
        print()
        started = dask["cluster_seconds"]
        print(f"(the Dask cluster took {started:.1f}s to start and import driftloop, not counted above)")
        same = local["columns"] == dask["columns"] and local["drifted"] == dask["drifted"]
        print(f"verdicts identical (one process vs Dask): {same}; drifted: {', '.join(dask['drifted'])}")
        print(
            f"flagged {len(set(dask['drifted']) & DRIFTED)} of the {len(DRIFTED)} drifted columns, "
            f"{len(set(dask['drifted']) - DRIFTED)} of the {25 - len(DRIFTED)} undrifted"
        )
        print(
            f"memory flat in rows: one process peaked at {tenth['peak_mib']:,.0f} MiB on "
            f"{tenth['rows']:,} rows and {local['peak_mib']:,.0f} MiB on {rows:,}"
        )
        per_file = dask["compute_seconds"] * args.workers / dask["files"]  # worker-seconds per file
        per_row = per_file / args.rows_per_file
        print(
            f"measured cost: {per_row * 1e9:,.0f} worker-seconds per 1B rows "
            f"({per_file:.2f}s per {args.rows_per_file:,}-row file on one worker)"
        )
        single = rows / local["seconds"]
        print(
            f"one process: {single:,.0f} rows/s, so a 1B-row day takes {1e9 / single / 60:,.1f} minutes on it"
        )
        for n in (2, 8, 32, 128):
            print(f"  a 1B-row day on {n:>3} workers: about {per_row * 1e9 / n / 60:,.1f} minutes")
    finally:
        if not args.keep and not args.dir:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
