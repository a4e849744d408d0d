"""How well regression's label-free estimate (DLE) tracks the realised MAE on a seeded stream.

A house-price regressor is trained on the template's concept A, in a market where large homes'
prices are harder to tell (the noise grows with floor area), then scored on windows whose mix
of sizes, ages and districts moves step by step towards large homes (covariate shift: the same
market, other homes), so the realised MAE rises although nothing about the market changed.
Per window it prints the realised MAE, driftloop's DLE estimate, and the two baselines a team
without DLE has: the reference MAE carried forward, and NannyML's DLE when ``nannyml`` is
installed (``benchmarks/requirements-peers.txt``). The summary is each estimator's mean
absolute error against the realised MAE, and how often it moves the right way between windows.

    .venv/bin/python benchmarks/dle_estimation.py [--windows 12] [--rows 2000] [--seed 0]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingRegressor

from driftloop.demo.houses import DISTRICTS, houses
from driftloop.drift.dle import DLE

FEATURES = ["size_m2", "rooms", "age_years", "district_code"]


def market(n: int, rng: np.random.Generator) -> pd.DataFrame:
    """Concept A homes whose price noise grows with floor area (0.35 thousand per m²)."""
    df = houses(n, "A", seed=rng)
    return df.assign(price=df["price"] + rng.normal(0, 0.35 * df["size_m2"].to_numpy()))


def frame(df: pd.DataFrame) -> pd.DataFrame:
    out = df[["size_m2", "rooms", "age_years"]].copy()
    # the model sees the district only as an ordinal code: it fits some districts badly
    out["district_code"] = df["district"].map({d: i for i, d in enumerate(DISTRICTS)}).astype("float64")
    return out


def window(pool: pd.DataFrame, step: int, steps: int, rows: int, rng: np.random.Generator) -> pd.DataFrame:
    """Rows of the pool, drawn with weights that move from its mix towards large, old riverside
    homes as ``step`` goes from 0 to ``steps - 1``."""
    t = step / max(steps - 1, 1)
    tilt = (
        t * 1.0 * (pool["district"] == "riverside")
        + t * 2.0 * (pool["size_m2"] - pool["size_m2"].mean()) / pool["size_m2"].std()
        + t * 0.5 * (pool["age_years"] - pool["age_years"].mean()) / pool["age_years"].std()
    )
    weights = np.exp(tilt.to_numpy())
    picks = rng.choice(len(pool), size=rows, replace=False, p=weights / weights.sum())
    return pool.iloc[picks]


def nannyml_estimates(
    reference: pd.DataFrame, windows: list[pd.DataFrame]
) -> list[float] | None:  # pragma: no cover - only with the peer installed
    try:
        import nannyml
    except ImportError:
        return None
    chunk = len(windows[0])
    analysis = pd.concat(windows, ignore_index=True)
    estimator = nannyml.DLE(
        feature_column_names=FEATURES,
        y_pred="y_pred",
        y_true="y_true",
        metrics=["mae"],
        chunk_size=chunk,
    )
    estimator.fit(reference)
    result = estimator.estimate(analysis.drop(columns=["y_true"])).filter(period="analysis").to_df()
    return [float(v) for v in result[("mae", "value")].tolist()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=12)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    train = market(8000, rng)
    model = HistGradientBoostingRegressor(max_iter=60, max_depth=3, random_state=0)
    model.fit(frame(train), train["price"])
    held_out = market(4000, rng)
    ref_pred = model.predict(frame(held_out))
    started = time.perf_counter()
    dle = DLE().fit(frame(held_out), ref_pred, held_out["price"].to_numpy())
    fit_seconds = time.perf_counter() - started
    reference_mae = float(np.abs(ref_pred - held_out["price"]).mean())
    pool = market(60_000, rng)
    realised, ours, carried = [], [], []
    peer_frames = []
    estimate_seconds = 0.0
    for step in range(args.windows):
        rows = window(pool, step, args.windows, args.rows, rng)
        features = frame(rows)
        pred = model.predict(features)
        realised.append(float(np.abs(pred - rows["price"]).mean()))
        started = time.perf_counter()
        ours.append(dle.estimate(features, pred))
        estimate_seconds += time.perf_counter() - started
        carried.append(reference_mae)
        peer_frames.append(features.assign(y_pred=pred, y_true=rows["price"].to_numpy()))
    peer = nannyml_estimates(
        frame(held_out).assign(y_pred=ref_pred, y_true=held_out["price"].to_numpy()), peer_frames
    )
    columns = {"driftloop DLE": ours, "reference MAE carried": carried}
    if peer is not None:
        columns["NannyML DLE"] = peer
    print(f"{args.windows} windows of {args.rows} rows, covariate shift growing by window (seed {args.seed})")
    print(f"{'window':>6} {'realised MAE':>13} " + " ".join(f"{name:>22}" for name in columns))
    for i, value in enumerate(realised):
        print(f"{i:>6} {value:>13.2f} " + " ".join(f"{col[i]:>22.2f}" for col in columns.values()))
    print()
    print(f"{'estimator':22} {'mean |estimate - realised|':>27} {'right direction':>16}")
    moves = np.sign(np.diff(realised))
    for name, col in columns.items():
        error = float(np.mean(np.abs(np.array(col) - np.array(realised))))
        direction = float(np.mean(np.sign(np.diff(col)) == moves)) if len(moves) else float("nan")
        print(f"{name:22} {error:>27.2f} {direction:>15.0%}")
    if peer is None:
        print("NannyML DLE: not installed (pip install -r benchmarks/requirements-peers.txt to compare)")
    print(
        f"driftloop DLE: fitted on {len(held_out)} rows in {fit_seconds * 1000:.0f} ms; "
        f"estimates {args.windows * args.rows / max(estimate_seconds, 1e-9):,.0f} rows/s"
    )


if __name__ == "__main__":
    main()
