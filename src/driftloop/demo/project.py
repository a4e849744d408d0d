"""The example projects written by ``driftloop init --template NAME`` and used by ``driftloop demo``.

Templates: ``loan`` (a tabular classifier, the default), ``images`` (an image classifier),
``documents`` (a document classifier on text), ``regression`` (house prices), ``blog`` (a
post generator judged by its scorers) and ``forms`` (entity extraction from intake documents).
"""

from __future__ import annotations

from pathlib import Path

from driftloop.demo import blog, documents, forms, houses, shapes
from driftloop.demo.data import applicants
from driftloop.exceptions import ConfigError

__all__ = ["CONFIG", "TEMPLATES", "TRAINER", "write_example"]

CONFIG = """\
# driftloop project: a loan-approval classifier. Every setting is documented in docs/config.md.
[project]
name = "loan"
task = "classification"
target = "approved"
classes = ["no", "yes"]

[data]
train = "data/train.csv"

[trainer]
entrypoint = "trainer:train"
params = {{ max_iter = 150, learning_rate = 0.1 }}

[features.income]
type = "numeric"
min = 0

[features.debt_ratio]
type = "numeric"
min = 0
max = 1

[features.credit_score]
type = "numeric"
min = 300
max = 850

[features.age]
type = "numeric"
min = 18
max = 120

[features.employment]
type = "categorical"
allowed = ["salaried", "self_employed", "contractor", "unemployed"]

[features.purpose]
type = "categorical"
allowed = ["home", "car", "education", "business"]

[store]
url = "sqlite:///.driftloop/driftloop.db"

[registry]
uri = "sqlite:///.driftloop/mlflow.db"

[serving]
host = "127.0.0.1"
port = {port}
reload_interval = "{reload_interval}"
log_mode = "durable"

[monitor]
window = "{window}"
schedule = "30s"

[[alerts]]
name = "accuracy-drop"
metric = "accuracy"
op = "<"
threshold = 0.85
for = 2
cooldown = "10m"
min_samples = 50
retrain = true

[[alerts]]
name = "feature-drift"
metric = "drift_share"
op = ">="
threshold = 0.3
for = 2
cooldown = "1h"

[[sinks]]
type = "log"

[retrain]
lookback = 20000
replay_fraction = {replay_fraction}
holdout_fraction = 0.3

[gate]
primary_metric = "accuracy"
min_improvement = 0.01
max_regression = {{ f1_macro = 0.02 }}
min_eval_rows = 100
"""

TRAINER = '''\
"""The project's trainer: driftloop calls train(X, y, **params) and registers what it returns."""

from pandas.api.types import is_numeric_dtype
from sklearn.compose import ColumnTransformer
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder


def train(X, y, max_iter=150, learning_rate=0.1):
    numeric = [c for c in X.columns if is_numeric_dtype(X[c])]
    categorical = [c for c in X.columns if c not in numeric]
    features = ColumnTransformer([
        ("num", "passthrough", numeric),
        ("cat", OneHotEncoder(handle_unknown="ignore"), categorical),
    ])
    model = HistGradientBoostingClassifier(max_iter=max_iter, learning_rate=learning_rate, random_state=0)
    return make_pipeline(features, model).fit(X, y)


def careless(X, y, **params):
    """A deliberately bad candidate (always the most frequent class): the gate must reject it."""
    return DummyClassifier(strategy="prior").fit(X, y)
'''


def write_example(
    folder: Path,
    *,
    seed: int = 7,
    rows: int = 5000,
    port: int = 8000,
    window: str = "1000 rows",
    replay_fraction: float = 0.25,
    reload_interval: str = "2s",
    template: str = "loan",
) -> Path:
    """Write driftloop.toml, trainer.py and data/train.csv (concept A) of ``template`` into ``folder``."""
    if template not in TEMPLATES:
        raise ConfigError(f"The template must be one of {sorted(TEMPLATES)}. Got {template!r} instead.")
    config_text, trainer, data = TEMPLATES[template]
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "driftloop.toml"
    config.write_text(
        config_text.format(
            port=port, window=window, replay_fraction=replay_fraction, reload_interval=reload_interval
        )
    )
    (folder / "trainer.py").write_text(trainer)
    for name, text in FILES.get(template, {}).items():
        (folder / name).write_text(text)
    (folder / "data").mkdir(exist_ok=True)
    data(rows, "A", seed=seed).to_csv(folder / "data" / "train.csv", index=False)
    return config


# name -> (driftloop.toml, trainer.py, the data generator: (rows, concept, seed) -> frame)
TEMPLATES = {
    "loan": (CONFIG, TRAINER, applicants),
    "regression": (houses.CONFIG, houses.TRAINER, houses.houses),
    "images": (shapes.CONFIG, shapes.TRAINER, shapes.shapes),
    "documents": (documents.CONFIG, documents.TRAINER, documents.documents),
    "blog": (blog.CONFIG, blog.TRAINER, blog.posts),
    "forms": (forms.CONFIG, forms.TRAINER, forms.forms),
}
FILES = {"blog": blog.FILES}  # a template's files beside trainer.py
