"""How long the read-only CLI commands take from start to exit, on a trained example project.

Each command runs ``--rounds`` times as a fresh process (what a person or a script pays); the
median and the fastest are printed beside the cost of importing the libraries the commands
avoid on their read-only paths (pandas, MLflow), measured the same way in the same run.

    .venv/bin/python benchmarks/cli_startup.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def timed(command: list[str], cwd: Path, rounds: int) -> tuple[float, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLOOP_")}
    seconds = []
    for _ in range(rounds):
        started = time.perf_counter()
        done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
        seconds.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}")
    return statistics.median(seconds), min(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp()) / "loan"
    driftloop = str(BIN / "driftloop")
    subprocess.run([driftloop, "init", str(folder)], check=True, capture_output=True)
    subprocess.run([driftloop, "train"], cwd=folder, check=True, capture_output=True)
    commands = {
        "driftloop --version": [driftloop, "--version"],
        "driftloop status": [driftloop, "status"],
        "driftloop runs": [driftloop, "runs"],
        "driftloop datasets list": [driftloop, "datasets", "list"],
        "(peer) python -c 'import pandas'": [sys.executable, "-c", "import pandas"],
        "(peer) python -c 'import mlflow'": [sys.executable, "-c", "import mlflow"],
        "(peer) python -c 'pass'": [sys.executable, "-c", "pass"],
    }
    print(f"{args.rounds} fresh processes each, on a trained example project")
    print(f"{'command':40} {'median':>9} {'fastest':>9}")
    for name, command in commands.items():
        median, fastest = timed(command, folder, args.rounds)
        print(f"{name:40} {median * 1000:7.0f} ms {fastest * 1000:7.0f} ms")


if __name__ == "__main__":
    main()
