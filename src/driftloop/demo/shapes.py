"""The ``images`` template: a seeded picture generator whose visual style changes mid-stream.

Each picture is a 24 x 24 PNG, drawn by this module with Pillow (nothing is downloaded): a
circle, a square or a triangle on a background. Concept A is the daylight style: light
backgrounds, warm saturated colours, crisp edges. Concept B is the new style: dark, low-exposure
backgrounds, cool desaturated colours, softer edges and smaller shapes, so a pixel classifier
trained on A confuses the classes; the image descriptors (brightness, contrast, hue,
sharpness, ...) show the change before any label arrives.

>>> df = shapes(6, "A", seed=1)
>>> sorted(df.columns), sorted(set(df["shape"])) <= ["circle", "square", "triangle"]
(['image', 'shape'], True)
>>> from driftloop.images import decode
>>> decode(df["image"].iloc[0]).shape
(24, 24, 3)
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from driftloop.images import encode

__all__ = ["CONFIG", "TRAINER", "shapes"]

SHAPES = ["circle", "square", "triangle"]
SIZE = 24


def _draw(kind: str, concept: str, rng: np.random.Generator) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFilter

    b = concept == "B"
    if b:
        background = tuple(int(v) for v in rng.integers(10, 60, 3))
        colour = tuple(int(v) for v in (rng.integers(40, 110), rng.integers(90, 170), rng.integers(120, 200)))
    else:
        background = tuple(int(v) for v in rng.integers(190, 250, 3))
        colour = tuple(int(v) for v in (rng.integers(170, 255), rng.integers(20, 120), rng.integers(0, 60)))
    img = Image.new("RGB", (SIZE, SIZE), background)
    draw = ImageDraw.Draw(img)
    half = rng.uniform(5.5, 7.5) if b else rng.uniform(6.5, 9.5)
    cx, cy = SIZE / 2 + rng.uniform(-3, 3), SIZE / 2 + rng.uniform(-3, 3)
    box = [cx - half, cy - half, cx + half, cy + half]
    if kind == "circle":
        draw.ellipse(box, fill=colour)
    elif kind == "square":
        draw.rectangle(box, fill=colour)
    else:
        draw.polygon([(cx, cy - half), (cx - half, cy + half), (cx + half, cy + half)], fill=colour)
    if b:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.6, 1.2)))
    pixels = np.asarray(img, dtype="float64") + rng.normal(0, 12 if b else 30, (SIZE, SIZE, 3))
    return np.clip(pixels, 0, 255).astype(np.uint8)


def shapes(n: int, concept: str = "A", seed: int | np.random.Generator = 0) -> pd.DataFrame:
    """``n`` pictures (base64 PNG in ``image``) of style ``"A"`` or ``"B"`` with their ``shape``."""
    if concept not in ("A", "B"):
        raise ValueError(f"The 'concept' parameter of shapes must be 'A' or 'B'. Got {concept!r} instead.")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    kinds = rng.choice(SHAPES, n)
    return pd.DataFrame(
        {"image": [encode(_draw(str(k), concept, rng)) for k in kinds], "shape": kinds.astype(object)}
    )


CONFIG = """\
# driftloop project: an image classifier (circle, square, triangle). Every setting is in docs/config.md.
[project]
name = "shapes"
task = "classification"
target = "shape"
classes = ["circle", "square", "triangle"]
top_k = 2

[data]
train = "data/train.csv"   # the image column holds each PNG as base64 text, as /predict takes it

[trainer]
entrypoint = "trainer:train"
params = {{ size = 16 }}

[features.image]
type = "image"
max_bytes = 200000

[serving]
host = "127.0.0.1"
port = {port}
reload_interval = "{reload_interval}"

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
name = "style-change"
metric = "drift.image.brightness"
op = ">"
threshold = 0.3
for = 1
cooldown = "1h"

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
"""The project's trainer: driftloop calls train(X, y, **params) and registers what it returns.

X["image"] holds each picture decoded as an RGB uint8 array of shape (height, width, 3).
"""

from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from driftloop.images import pixels


def train(X, y, size=16):
    to_pixels = FunctionTransformer(pixels, kw_args={"column": "image", "size": size})
    model = LogisticRegression(C=0.05, max_iter=500)
    return make_pipeline(to_pixels, StandardScaler(), model).fit(X, y)


def careless(X, y, **params):
    """A deliberately bad candidate (always the most frequent shape): the gate must reject it."""
    return DummyClassifier(strategy="prior").fit(X, y)
'''
