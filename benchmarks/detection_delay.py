"""Sequential detectors on streams with known change points: delay, false alarms and misses.

    python benchmarks/detection_delay.py [--runs 50]

Streams: a mean shift of 1 sd, a mean shift of 0.5 sd, a variance doubling, and a Bernoulli
accuracy stream dropping from 0.90 to 0.80 (what feedback looks like). Each run has one change
at a random point in [1000, 3000) of a 5000-long stream. A detection before the change is a false
alarm; none within 1000 steps after it is a miss; the delay is counted from the change.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from driftloop.drift.detectors import DETECTORS


def stream(kind: str, rng: np.random.Generator, change: int, n: int = 5000) -> np.ndarray:
    before, after = change, n - change
    if kind == "mean +1sd":
        return np.concatenate([rng.normal(0, 1, before), rng.normal(1, 1, after)])
    if kind == "mean +0.5sd":
        return np.concatenate([rng.normal(0, 1, before), rng.normal(0.5, 1, after)])
    if kind == "variance x2":
        return np.concatenate([rng.normal(0, 1, before), rng.normal(0, np.sqrt(2), after)])
    return np.concatenate([rng.random(before) < 0.9, rng.random(after) < 0.8]).astype(float)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    print(
        f"{'stream':<16}{'detector':<14}{'median delay':>14}"
        f"{'false alarms/run':>18}{'missed':>8}{'µs/update':>11}"
    )
    for kind in ("mean +1sd", "mean +0.5sd", "variance x2", "accuracy .9→.8"):
        for name, make in sorted(DETECTORS.items()):
            delays, false_alarms, missed, updates, seconds = [], 0, 0, 0, 0.0
            for run in range(args.runs):
                rng = np.random.default_rng(run)
                change = int(rng.integers(1000, 3000))
                xs = stream(kind, rng, change)
                detector = make()
                t = time.perf_counter()
                hits = [i for i, x in enumerate(xs) if detector.update(float(x)).drift_detected]
                seconds += time.perf_counter() - t
                updates += xs.size
                false_alarms += sum(h < change for h in hits)
                after = [h - change for h in hits if change <= h < change + 1000]
                if after:
                    delays.append(after[0])
                else:
                    missed += 1
            median = f"{np.median(delays):.0f}" if delays else "-"
            print(
                f"{kind:<16}{name:<14}{median:>14}{false_alarms / args.runs:>18.2f}{missed:>8}"
                f"{seconds / updates * 1e6:>11.2f}"
            )


if __name__ == "__main__":
    main()
