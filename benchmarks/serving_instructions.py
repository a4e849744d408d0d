"""What driftloop's own code costs per request, counted in instructions instead of seconds.

On a shared machine a request's time moves by tens of percent from one run to the next; the
number of instructions it executes does not. This drives the bare endpoint of ``serving.py`` and
driftloop (one model call per request on the event loop, as bare makes it; validation and
durable logging on) in-process through ASGI, no HTTP and no client, under
``valgrind --tool=callgrind``, at two run lengths; the difference divided by the extra requests
is what one request executes, start-up excluded. The log writer process is counted on its own.

What it cannot show is the time a request waits for the commit, or what the writer process
takes from the others on a small machine: ``serving.py`` measures those.

    python benchmarks/serving_instructions.py   # about 30 minutes: valgrind runs ~50x slower
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from serving import VARIANTS, prepare, variant  # the timed benchmark's set-up (this folder)

from driftloop.project import Project

RUNS = {"single": (20, 120), "batch100": (10, 50)}  # requests in the short and the long run


def inner(app_name: str, payload: str, n: int, folder: Path) -> None:
    """In the process valgrind watches: start the app, warm it up, then ``n`` requests."""
    records = json.loads((folder / "records.json").read_text())
    body = json.dumps(records[0] if payload == "single" else {"records": records[:100]}).encode()
    app: Any
    if app_name == "bare":
        sys.path.insert(0, str(folder))
        from bare import app  # type: ignore[no-redef]
    else:
        from driftloop.serving import create_app

        app = create_app(Project.load(folder / "project-dl" / "driftloop.toml"), background=False)

    async def call() -> None:
        sent: list[dict[str, Any]] = []
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/predict",
            "raw_path": b"/predict",
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"bench"), *headers],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 2),
            "state": {},
        }

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await app(scope, receive, send)
        assert sent[0]["status"] == 200, sent

    async def main() -> None:
        started = asyncio.Event()

        async def receive() -> dict[str, Any]:
            if not started.is_set():
                return {"type": "lifespan.startup"}
            await asyncio.Event().wait()  # never shut down: the process exits below
            return {}

        async def send(message: dict[str, Any]) -> None:
            started.set()

        lifespan = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send))
        await started.wait()
        for _ in range(n + 10):  # 10 warm-up requests in both runs: they cancel out
            await call()
        lifespan.cancel()

    asyncio.run(main())
    sys.stdout.flush()
    os._exit(0)  # skip the shutdown: the log writer exits when this process's socket closes


def count(folder: Path, app_name: str, payload: str, n: int) -> tuple[int, int]:
    """Instructions of the server process and of its log writer process, for one run."""
    out = folder / f"cg-{app_name}-{payload}-{n}"
    out.mkdir()
    subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--trace-children=yes",
            f"--callgrind-out-file={out}/%p",
            sys.executable,
            __file__,
            "--inner",
            app_name,
            payload,
            str(n),
            str(folder),
        ],
        check=True,
        capture_output=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    totals = {}
    for path in out.iterdir():
        text = path.read_text(errors="replace")
        command = re.search(r"^cmd: (.*)$", text, re.M)
        total = re.search(r"^(?:summary|totals): (\d+)", text, re.M)
        if command and total:
            totals[command.group(1)] = int(total.group(1))
    server = sum(v for k, v in totals.items() if "--inner" in k)
    writer = sum(v for k, v in totals.items() if "driftloop.serving.logproc" in k)
    return server, writer


def main() -> None:
    if shutil.which("valgrind") is None:
        sys.exit("This benchmark needs valgrind (Debian: apt-get install valgrind).")
    folder = Path(tempfile.mkdtemp(prefix="driftloop-instructions-"))
    (folder / "records.json").write_text(json.dumps(prepare(folder)))
    variant(folder, "project-dl", *VARIANTS["dl unbatched"])  # one model call per request, as bare
    print(f"{'payload':<10}{'app':<12}{'server process':>22}{'log writer':>16}{'vs bare':>10}")
    for payload, (short, long) in RUNS.items():
        per_request: dict[str, float] = {}
        for app_name in ("bare", "driftloop"):
            (s1, w1), (s2, w2) = (count(folder, app_name, payload, n) for n in (short, long))
            server, writer = (s2 - s1) / (long - short), (w2 - w1) / (long - short)
            per_request[app_name] = server
            versus = f"{server / per_request['bare'] - 1:+.1%}" if app_name != "bare" else ""
            written = f"{writer / 1e6:.2f} M" if app_name != "bare" else "-"
            print(f"{payload:<10}{app_name:<12}{server / 1e6:>12.2f} M instr.{written:>16}{versus:>10}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--inner"]:
        inner(sys.argv[2], sys.argv[3], int(sys.argv[4]), Path(sys.argv[5]))
    else:
        main()
