"""Serving overhead: the same scikit-learn model behind a bare FastAPI endpoint and behind
``driftloop serve`` (validation + durable logging), both under uvicorn on 127.0.0.1, with the
same bounded number of concurrent clients; then the log writer's raw ingest rate on SQLite.

The servers:

- "bare": the endpoint a user would write, one ``predict_proba`` call per request;
- "driftloop": the defaults: durable logging (SQLite fsyncs every commit), dynamic batching
  (requests waiting at the same moment share one model call) on the prediction thread;
- "dl unbatched": driftloop with one model call per request on the event loop, the way bare
  calls it: what validation and durable logging cost on their own;
- "dl unbat. normal": the same with ``store.sqlite_synchronous = "normal"`` (no fsync per
  commit: an acknowledged prediction survives a crash of the server, not of the machine).

"server CPU" is the server's CPU time per request, all threads and child processes (driftloop's
log writer) included: on a shared, noisy machine it is steadier than throughput, which also
depends on what else gets the cores.

    python benchmarks/serving.py [--seconds 3] [--rounds 5] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from driftloop.demo.data import applicants
from driftloop.demo.project import write_example
from driftloop.demo.scenario import free_port
from driftloop.ids import new_ids
from driftloop.project import Project
from driftloop.serving.logproc import ProcessLogWriter
from driftloop.serving.writer import LogBatch, LogWriter
from driftloop.store import Store
from driftloop.training import train

BARE = """
import pickle
import shutil
import pandas as pd
from fastapi import FastAPI, Request
model = pickle.load(open({path!r}, "rb"))
app = FastAPI()

@app.post("/predict")
async def predict(request: Request):
    body = await request.json()
    rows = body["records"] if isinstance(body, dict) and "records" in body else [body]
    probs = model.predict_proba(pd.DataFrame(rows))
    return {{"predictions": [{{"label": str(model.classes_[p.argmax()]), "confidence": float(p.max())}}
                            for p in probs]}}
"""


def wait_ready(url: str) -> None:
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


async def load(
    url: str, body: dict[str, object], seconds: float, concurrency: int
) -> tuple[int, list[float], int]:
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds
    async with httpx.AsyncClient(
        base_url=url, timeout=30, limits=httpx.Limits(max_connections=concurrency)
    ) as client:

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < stop:
                t = time.perf_counter()
                r = await client.post("/predict", json=body)
                latencies.append(time.perf_counter() - t)
                errors += r.status_code != 200

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(latencies), latencies, errors


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, its threads and its child processes such as driftloop's
    log writer (Linux /proc; NaN elsewhere)."""
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stats[int(entry.name)] = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
    if pid not in stats:
        return float("nan")
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        total += (int(stats[current][11]) + int(stats[current][12])) / tick
        todo += [p for p, fields in stats.items() if int(fields[1]) == current]
    return total


def compare(
    servers: dict[str, tuple[str, int]],
    seconds: float,
    rounds: int,
    concurrency: int,
    records: list[dict[str, object]],
) -> None:
    """Load each server in turn, ``rounds`` times per payload, so both see the same machine.

    Throughput and CPU are medians over rounds; "of bare" is the median of the per-round ratios
    (each round's two runs are seconds apart); p50/p99 pool every request of every round.
    """
    payloads: list[tuple[str, dict[str, object]]] = [
        ("single", records[0]),
        ("batch100", {"records": records[:100]}),
    ]
    for label, body in payloads:
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in servers}
        latencies: dict[str, list[float]] = {name: [] for name in servers}
        errors = dict.fromkeys(servers, 0)
        for url, _ in servers.values():
            asyncio.run(load(url, body, 1.0, concurrency))  # warm-up
        for _ in range(rounds):
            for name, (url, pid) in servers.items():
                cpu = cpu_seconds(pid)
                n, lat, errs = asyncio.run(load(url, body, seconds, concurrency))
                runs[name].append((n / seconds, (cpu_seconds(pid) - cpu) / n * 1000))
                latencies[name] += lat
                errors[name] += errs
        bare = [throughput for throughput, _ in runs["bare"]]
        for name in servers:
            throughput = [t for t, _ in runs[name]]
            share = float(np.median([t / b for t, b in zip(throughput, bare, strict=True)]))
            p50, p99 = np.percentile(latencies[name], [50, 99]) * 1000
            cpu_ms = float(np.median([c for _, c in runs[name]]))
            print(
                f"{name:<18}{label:<10}{np.median(throughput):>10.0f} req/s{share:>8.0%}"
                f"{p50:>9.2f} ms{p99:>9.2f} ms{cpu_ms:>9.2f} ms{errors[name]:>7} errors"
            )


INPUTS = {
    "income": 52000.0,
    "debt_ratio": 0.3,
    "credit_score": 700.0,
    "age": 40.0,
    "employment": "salaried",
    "purpose": "car",
}


def log_batches(count: int, size: int) -> list[LogBatch]:
    """Requests' log rows, built before the clock starts: the ingest figures time the writers."""
    return [
        LogBatch(
            "m",
            "1",
            "r",
            0.0,
            1.0,
            ["no", "yes"],
            None,
            new_ids(size),
            [INPUTS] * size,
            ["yes"] * size,
            [0.9] * size,
            [[0.1, 0.9]] * size,
            None,
        )
        for _ in range(count)
    ]


def ingest(folder: Path, rows: int = 200_000, batch: int = 100, threads: int = 4) -> float:
    """The in-process writer thread, fed by ``threads`` producer threads."""
    store = Store(f"sqlite:///{folder}/ingest.db")
    writer = LogWriter(store, mode="durable")
    writer.start()
    batches = [log_batches(rows // threads // batch, batch) for _ in range(threads)]

    def producer(mine: list[LogBatch]) -> None:
        futures = [writer.submit(b) for b in mine]
        for f in futures:
            assert f is not None
            f.result()

    t = time.perf_counter()
    workers = [threading.Thread(target=producer, args=(batches[i],)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - t
    writer.stop()
    assert store.count_predictions("m") == rows
    store.close()
    return rows / elapsed


def ingest_process(folder: Path, rows: int = 200_000, batch: int = 100, in_flight: int = 64) -> float:
    """The default writer: frames over a socket to the child process, committed in groups."""
    url = f"sqlite:///{folder}/ingest-process.db"
    Store(url).close()  # create the tables, as the server does before starting the child
    batches = log_batches(rows // batch, batch)

    async def run() -> float:
        writer = ProcessLogWriter(url, mode="durable")
        await writer.start()
        gate = asyncio.Semaphore(in_flight)

        async def one(b: LogBatch) -> None:
            async with gate:
                await writer.write(b)

        t = time.perf_counter()
        await asyncio.gather(*(one(b) for b in batches))
        elapsed = time.perf_counter() - t
        await writer.stop()
        return elapsed

    elapsed = asyncio.run(run())
    store = Store(url)
    assert store.count_predictions("m") == rows
    store.close()
    return rows / elapsed


VARIANTS = {  # server name -> lines added to [serving] and [store] of the example project
    "driftloop": ("", ""),
    "dl unbatched": ('dynamic_batching = false\npredict_in = "loop"\n', ""),
    "dl unbat. normal": (
        'dynamic_batching = false\npredict_in = "loop"\n',
        'sqlite_synchronous = "normal"\n',
    ),
}


def requests_per_call(url: str) -> float:
    """How many requests the server's model calls held on average (its /metrics counters)."""
    text = httpx.get(f"{url}/metrics").text

    def counter(name: str) -> float:
        found = re.search(rf"^{name}\S* (\S+)$", text, re.M)
        return float(found.group(1)) if found else float("nan")

    calls = counter("driftloop_model_calls_total")
    return counter("driftloop_model_call_requests_total") / calls if calls else float("nan")


def prepare(folder: Path) -> list[dict[str, object]]:
    """Train the example project in ``folder/project``, write its champion behind the bare
    endpoint (``folder/bare.py``), and return the 100 records the load sends."""
    project = Project.load(write_example(folder / "project"))
    train(project)
    model = project.registry.load(project.name, project.champion() or "1")
    project.close()
    (folder / "model.pkl").write_bytes(pickle.dumps(model))
    (folder / "bare.py").write_text(BARE.format(path=str(folder / "model.pkl")))
    records: list[dict[str, object]] = (
        applicants(100, "A", seed=1).drop(columns="approved").to_dict(orient="records")
    )
    return records


def variant(folder: Path, name: str, serving: str, store: str = "") -> Path:
    """A copy of the example project (same model, same data) with lines added to its
    ``[serving]`` and ``[store]`` sections; returns the copy's driftloop.toml."""
    shutil.copytree(folder / "project", folder / name)
    config = folder / name / "driftloop.toml"
    text = config.read_text().replace("[serving]\n", f"[serving]\n{serving}")
    config.write_text(text.replace("[store]\n", f"[store]\n{store}"))
    return config


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0, help="per run")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="driftloop-bench-"))
    records = prepare(folder)
    # one OpenMP thread per server process: the same for both, and what serving wants
    env = {**os.environ, "PYTHONPATH": str(folder), "OMP_NUM_THREADS": "1"}
    print(
        f"{args.rounds} rounds of {args.seconds:g} s per server and payload, {args.concurrency} clients\n"
        f"{'server':<18}{'payload':<10}{'throughput':>14}{'of bare':>8}{'p50':>12}{'p99':>12}"
        f"{'server CPU':>12}"
    )
    bare_port = free_port()
    bare = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "bare:app", "--port", str(bare_port), "--log-level", "warning"],
        env=env,
        cwd=folder,
    )
    processes, servers = [bare], {"bare": (f"http://127.0.0.1:{bare_port}", bare.pid)}
    configs = []
    for i, (name, (serving, store)) in enumerate(VARIANTS.items()):
        config = variant(folder, f"project-{i}", serving, store)
        port = free_port()
        command = [sys.executable, "-m", "driftloop.cli", "serve", "-c", str(config), "--port", str(port)]
        processes.append(subprocess.Popen([*command, "--no-monitor"], env=env))
        servers[name] = (f"http://127.0.0.1:{port}", processes[-1].pid)
        configs.append(config)
    try:
        wait_ready(f"{servers['bare'][0]}/docs")
        for name in VARIANTS:
            wait_ready(f"{servers[name][0]}/health")
        compare(servers, args.seconds, args.rounds, args.concurrency, records)
        print()
        for name in VARIANTS:
            print(f"{name}: {requests_per_call(servers[name][0]):.2f} requests per model call")
    finally:
        for process in processes:
            process.terminate()
            process.wait()
    logged = 0
    for config in configs:
        served = Project.load(config)
        logged += served.store.count_predictions(served.name)
        served.close()
    print(f"\ndriftloop logged {logged:,} predictions durably during the run")
    print(
        f"log writer raw ingest (SQLite, durable, batches of 100): "
        f"process writer (default, 64 requests in flight) {ingest_process(folder):,.0f} rows/s; "
        f"thread writer (4 producer threads) {ingest(folder):,.0f} rows/s"
    )


if __name__ == "__main__":
    main()
