"""How fast ``driftloop report`` draws, and a browser opens, a report of many windows.

    python benchmarks/report_speed.py [--windows 1000] [--rows-per-window 20]

Builds the loan example, logs ``windows x rows-per-window`` predictions (half labelled, the
second half from the drifted concept) straight into the store, closes every window with the
monitor, then times ``render_report`` (stored aggregates only), prints the file's size, and,
when Chromium and Playwright are installed, the time a headless Chromium takes from navigation
to the load event and to the first paint of the charts. No peer tool writes a comparable
report from stored window aggregates, so only driftloop's figures are printed.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

from rich.console import Console
from rich.progress import track

from driftloop.demo.data import applicants
from driftloop.demo.project import write_example
from driftloop.monitor import Monitor
from driftloop.project import Project
from driftloop.training import train
from driftloop.ui import render_report

console = Console()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--windows", type=int, default=1000)
    parser.add_argument("--rows-per-window", type=int, default=20)
    args = parser.parse_args()
    os.environ.setdefault("DRIFTLOOP_DBOS_LOG_LEVEL", "ERROR")
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    folder = Path(tempfile.mkdtemp(prefix="driftloop-report-"))
    try:
        project = Project.load(write_example(folder, rows=2000, window=f"{args.rows_per_window} rows"))
        train(project)
        model = project.registry.load(project.name, project.champion())  # type: ignore[arg-type]
        n = args.windows * args.rows_per_window
        frames = [applicants(n // 2, "A", seed=1), applicants(n - n // 2, "B", seed=2)]
        for part, df in enumerate(frames):
            records = df.drop(columns="approved").to_dict(orient="records")
            made = project.task.predict(model, project.schema.frame(records))
            ids = [uuid.uuid4().hex for _ in records]
            for start in track(
                range(0, len(records), 5000), description=f"logging part {part + 1}", console=console
            ):
                stop = start + 5000
                project.store.insert_predictions(
                    [
                        {
                            "prediction_id": ids[i],
                            "model": project.name,
                            "model_version": project.champion(),
                            "request_id": "bench",
                            "ts": time.time(),
                            "inputs": records[i],
                            "prediction": str(made.labels[i]),
                            "confidence": float(made.confidence[i]),
                            "probabilities": {
                                c: float(made.probabilities[i, j]) for j, c in enumerate(project.classes)
                            },
                            "latency_ms": 0.0,
                            "meta": None,
                        }
                        for i in range(start, min(stop, len(records)))
                    ]
                )
            project.store.add_feedback(
                [
                    {"prediction_id": ids[i], "label": str(df["approved"].iloc[i]), "source": "bench"}
                    for i in range(0, len(ids), 2)
                ]
            )
        started = time.perf_counter()
        with console.status("monitoring…"):
            closed = len(Monitor(project).run(flush=True).windows)
        monitored = time.perf_counter() - started
        started = time.perf_counter()
        html = render_report(project, windows=args.windows)
        drawn = time.perf_counter() - started
        out = folder / "report.html"
        out.write_text(html, encoding="utf-8")
        console.print(
            f"{closed} windows closed in {monitored:.1f} s; report drawn in {drawn:.2f} s, "
            f"{len(html.encode()) / 1024:.0f} KiB, {html.count('<rect') + html.count('<circle')} SVG shapes",
            highlight=False,
        )
        browser = shutil.which("chromium") or shutil.which("chromium-browser")
        try:
            from playwright.sync_api import sync_playwright
        except ImportError:
            browser = None
        if browser is None:
            console.print("Chromium or Playwright not installed: no browser figures.")
            return
        with sync_playwright() as pw:
            chromium = pw.chromium.launch(executable_path=browser, args=["--no-sandbox"])
            page = chromium.new_page()
            loads, paints = [], []
            for _ in range(3):
                page.goto(out.as_uri(), wait_until="load")
                timing = page.evaluate(
                    "() => { const n = performance.getEntriesByType('navigation')[0];"
                    " const p = performance.getEntriesByName('first-contentful-paint')[0];"
                    " return [n.loadEventEnd, p ? p.startTime : null]; }"
                )
                loads.append(timing[0])
                paints.append(timing[1])
            chromium.close()
        console.print(
            f"headless Chromium, 3 loads: load event {min(loads):.0f}-{max(loads):.0f} ms, "
            f"first contentful paint {min(p for p in paints if p):.0f}-{max(p for p in paints if p):.0f} ms",
            highlight=False,
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
