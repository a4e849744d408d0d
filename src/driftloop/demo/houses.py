"""The ``regression`` template: a seeded house-price generator whose market moves mid-stream.

Concept A: price follows floor area, rooms, age and district, with a premium for good energy
labels. Concept B, after the market turns: smaller, newer flats are sold (covariate drift),
the riverside district gains a large premium and each square metre is worth more (concept
drift), so a model trained on A under-prices B.

>>> df = houses(500, "A", seed=1)
>>> sorted(df.columns)
['age_years', 'district', 'energy_label', 'price', 'rooms', 'size_m2']
>>> bool((df["price"] > 0).all())
True
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["CONFIG", "TRAINER", "houses"]

DISTRICTS = ["centre", "riverside", "suburb", "harbour"]
LABELS = ["A", "B", "C", "D"]


def houses(n: int, concept: str = "A", seed: int | np.random.Generator = 0) -> pd.DataFrame:
    """``n`` sold homes under concept ``"A"`` or ``"B"``, with their ``price`` (thousands)."""
    if concept not in ("A", "B"):
        raise ValueError(f"The 'concept' parameter of houses must be 'A' or 'B'. Got {concept!r} instead.")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    b = concept == "B"
    size = np.clip(rng.normal(68 if b else 85, 22 if b else 25, n), 20, 250)
    rooms = np.clip(np.round(size / 25 + rng.normal(0, 0.7, n)), 1, 8)
    age = np.clip(rng.gamma(2.0, 8.0 if b else 15.0, n), 0, 120)
    district = rng.choice(DISTRICTS, n, p=[0.25, 0.35, 0.25, 0.15] if b else [0.3, 0.2, 0.35, 0.15])
    energy = rng.choice(LABELS, n, p=[0.35, 0.35, 0.2, 0.1] if b else [0.15, 0.3, 0.35, 0.2])
    per_m2 = 4.2 if b else 3.0
    premium = pd.Series(district).map(
        {"centre": 90.0, "riverside": 160.0 if b else 30.0, "suburb": 0.0, "harbour": 50.0}
    )
    label_bonus = pd.Series(energy).map({"A": 30.0, "B": 15.0, "C": 0.0, "D": -20.0})
    price = (
        40.0
        + per_m2 * size
        + 12.0 * rooms
        - 0.9 * age
        + premium.to_numpy()
        + label_bonus.to_numpy()
        + rng.normal(0, 18.0, n)
    )
    return pd.DataFrame(
        {
            "size_m2": size.round(1),
            "rooms": rooms,
            "age_years": age.round(0),
            "district": district,
            "energy_label": energy,
            "price": np.maximum(price, 20.0).round(1),
        }
    )


CONFIG = """\
# driftloop project: a house-price regressor. Every setting is documented in docs/config.md.
[project]
name = "houses"
task = "regression"
target = "price"

[data]
train = "data/train.csv"

[trainer]
entrypoint = "trainer:train"
params = {{ max_iter = 200, learning_rate = 0.1 }}

[features.size_m2]
type = "numeric"
min = 5
max = 1000

[features.rooms]
type = "numeric"
min = 1
max = 30

[features.age_years]
type = "numeric"
min = 0
max = 300

[features.district]
type = "categorical"
allowed = ["centre", "riverside", "suburb", "harbour"]

[features.energy_label]
type = "categorical"
allowed = ["A", "B", "C", "D"]

[serving]
host = "127.0.0.1"
port = {port}
reload_interval = "{reload_interval}"

[monitor]
window = "{window}"
schedule = "30s"

# thresholds relative to the champion's own held-out MAE (in thousands), so they suit every model
[[alerts]]
name = "error-rise"
metric = "mae"
op = ">"
threshold = 10
relative_to = "reference"
for = 2
cooldown = "10m"
min_samples = 50
retrain = true

[[alerts]]
name = "estimated-error-rise"
metric = "estimated_mae"
op = ">"
threshold = 10
relative_to = "reference"
for = 2

[retrain]
lookback = 20000
replay_fraction = {replay_fraction}
holdout_fraction = 0.3

[gate]
primary_metric = "mae"
min_improvement = 1.0
max_regression = {{ rmse = 2.0 }}
min_eval_rows = 100
"""

TRAINER = '''\
"""The project's trainer: driftloop calls train(X, y, **params) and registers what it returns."""

from pandas.api.types import is_numeric_dtype
from sklearn.compose import ColumnTransformer
from sklearn.dummy import DummyRegressor
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder


def train(X, y, max_iter=200, learning_rate=0.1):
    numeric = [c for c in X.columns if is_numeric_dtype(X[c])]
    categorical = [c for c in X.columns if c not in numeric]
    features = ColumnTransformer([
        ("num", "passthrough", numeric),
        ("cat", OneHotEncoder(handle_unknown="ignore"), categorical),
    ])
    model = HistGradientBoostingRegressor(max_iter=max_iter, learning_rate=learning_rate, random_state=0)
    return make_pipeline(features, model).fit(X, y)


def careless(X, y, **params):
    """A deliberately bad candidate (always the mean price): the gate must reject it."""
    return DummyRegressor(strategy="mean").fit(X, y)
'''
