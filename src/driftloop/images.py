"""Image features: ``[features.photo] type = "image"``.

**On the wire and in training data** an image is the base64 text of a PNG or JPEG file, in
the JSON body of ``/predict`` and in a column of the training CSV or Parquet (so a snapshot
stays one content-addressed file, and logged requests are training rows as they stand).
:func:`encode` turns a file, bytes or an array into that text. In the training file a cell
may instead name a ``.png``/``.jpg`` file relative to that file's folder (a folder of pictures
plus a labels CSV): the snapshot inlines it, so it is still addressed by its content.
Nothing is fetched from a URL.

**The model receives** each image decoded by Pillow as a ``numpy.uint8`` array of shape
``(height, width, 3)`` in RGB (greyscale, palette and alpha images are converted), one array
per cell of the feature's column: exactly what the trainer saw, at serving time as in training.

**Monitoring** profiles each image as descriptors, compared like numeric features
(``photo.brightness``, ...): the checks image teams run for new visual styles, exposure and
colour: :data:`DESCRIPTORS`. An ``embedding = "module:function"`` (a list of arrays in, an
``(n, d)`` array out) adds ``photo.e0`` ... for the univariate and multivariate tests.

>>> import numpy as np
>>> dark = np.zeros((8, 8, 3), dtype=np.uint8); dark[2:6, 2:6] = (200, 30, 30)
>>> text = encode(dark)
>>> bool((decode(text) == dark).all())
True
>>> d = descriptors([decode(text)])
>>> d.loc[0, ["width", "aspect", "red", "hue_bin0"]].tolist(), round(float(d.loc[0, "brightness"]), 3)
([8.0, 1.0, 0.196078, 1.0], 0.079)
"""

from __future__ import annotations

import base64
import binascii
import io
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from driftloop.exceptions import ConfigError

__all__ = ["DESCRIPTORS", "check", "decode", "descriptors", "encode", "inline", "pixels"]

DESCRIPTORS: tuple[str, ...] = (
    "width",
    "height",
    "aspect",  # width / height
    "brightness",  # mean luma, 0-1
    "contrast",  # standard deviation of luma, 0-1
    "saturation",  # mean HSV saturation, 0-1
    "hue",  # circular mean hue of coloured pixels, 0-1 (red 0, green 1/3, blue 2/3)
    "colourfulness",  # Hasler and Süsstrunk's metric, 0-1 scaled
    "sharpness",  # variance of the Laplacian of luma (blur lowers it)
    "red",
    "green",
    "blue",  # channel means, 0-1
    *(f"hue_bin{i}" for i in range(6)),  # share of coloured pixels in each sixth of the hue circle
)
_MAGIC = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG"}


def _pillow() -> Any:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - the images extra is installed with dev
        raise ConfigError(
            "Image features need Pillow: install driftloop with the images extra "
            "(pip install 'driftloop[images]')."
        ) from None
    return Image


def encode(image: str | Path | bytes | np.ndarray, format: str = "PNG") -> str:
    """The base64 text of an image file (a path or its bytes), or of an array encoded as PNG."""
    if isinstance(image, np.ndarray):
        buffer = io.BytesIO()
        _pillow().fromarray(np.asarray(image, dtype=np.uint8)).save(buffer, format=format)
        data = buffer.getvalue()
    elif isinstance(image, bytes):
        data = image
    else:
        data = Path(image).read_bytes()
    return base64.b64encode(data).decode("ascii")


_SUFFIXES = (".png", ".jpg", ".jpeg")


def inline(values: list[Any], folder: Path, what: str) -> list[Any]:
    """Cells naming an image file (``.png``/``.jpg``/``.jpeg``, relative to ``folder``, inside
    it) replaced by the file's base64 text; other cells as they are."""
    out: list[Any] = []
    root = folder.resolve()
    for i, value in enumerate(values):
        if isinstance(value, str) and value.lower().endswith(_SUFFIXES):
            path = (root / value).resolve()
            if not path.is_relative_to(root):
                raise ValueError(f"{what}, row {i}: an image path must stay inside {root}. Got {value!r}")
            if not path.is_file():
                raise ValueError(f"{what}, row {i}: the image file {value!r} does not exist in {root}")
            value = encode(path)
        out.append(value)
    return out


def _open(text: str, max_bytes: int, max_pixels: int) -> Any:
    """Decode and check one image; ``ValueError`` with the rule it broke."""
    if len(text) > (max_bytes * 4) // 3 + 4:
        raise ValueError(f"the image must be at most {max_bytes:,} bytes; its base64 text is longer")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("an image must be base64 text of a PNG or JPEG file") from None
    if not any(data.startswith(magic) for magic in _MAGIC):
        raise ValueError("an image must be a PNG or JPEG file; these bytes are neither")
    Image = _pillow()
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            if width * height > max_pixels:
                raise ValueError(
                    f"the image must have at most {max_pixels:,} pixels; it is {width} x {height}"
                )
            img.load()
            return img.convert("RGB")
    except ValueError:
        raise
    except Exception as exc:  # Pillow's errors for truncated or corrupt files
        raise ValueError(f"the image file is truncated or corrupt ({type(exc).__name__}: {exc})") from None


def check(text: str, max_bytes: int = 5_000_000, max_pixels: int = 16_000_000) -> str:
    """``text`` if it is a valid image within the limits, else ``ValueError`` naming the rule."""
    _open(text, max_bytes, max_pixels)
    return text


def decode(text: str, max_bytes: int = 5_000_000, max_pixels: int = 16_000_000) -> np.ndarray:
    """The image as an RGB ``uint8`` array of shape ``(height, width, 3)``."""
    return np.asarray(_open(text, max_bytes, max_pixels), dtype=np.uint8)


def _one(image: np.ndarray) -> list[float]:
    rgb = np.asarray(image, dtype="float64") / 255.0
    height, width = rgb.shape[:2]
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    luma = 0.299 * r + 0.587 * g + 0.114 * b
    high, low = rgb.max(axis=2), rgb.min(axis=2)
    chroma = high - low
    saturation = np.divide(chroma, high, out=np.zeros_like(high), where=high > 0)
    # hue in [0, 1) from the RGB hexcone, for pixels with colour
    hue = np.zeros_like(high)
    safe = np.where(chroma > 0, chroma, 1.0)
    hue = np.where(high == r, ((g - b) / safe) % 6, hue)
    hue = np.where(high == g, (b - r) / safe + 2, hue)
    hue = np.where(high == b, (r - g) / safe + 4, hue)
    hue = hue / 6.0
    coloured = saturation > 0.2
    if coloured.any():
        angle = 2 * np.pi * hue[coloured]
        mean_hue = float(np.arctan2(np.sin(angle).mean(), np.cos(angle).mean()) / (2 * np.pi)) % 1.0
        bins = np.bincount(np.minimum((hue[coloured] * 6).astype(int), 5), minlength=6) / coloured.sum()
    else:
        mean_hue, bins = 0.0, np.zeros(6)
    rg, yb = r - g, 0.5 * (r + g) - b
    colourfulness = float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))
    if height >= 3 and width >= 3:
        laplacian = luma[:-2, 1:-1] + luma[2:, 1:-1] + luma[1:-1, :-2] + luma[1:-1, 2:] - 4 * luma[1:-1, 1:-1]
        sharpness = float(laplacian.var())
    else:
        sharpness = 0.0
    return [
        float(width),
        float(height),
        width / height if height else 0.0,
        float(luma.mean()),
        float(luma.std()),
        float(saturation.mean()),
        mean_hue,
        colourfulness,
        sharpness,
        float(r.mean()),
        float(g.mean()),
        float(b.mean()),
        *(float(v) for v in bins),
    ]


def descriptors(images: list[Any]) -> pd.DataFrame:
    """One row of :data:`DESCRIPTORS` per image (an array, or ``None`` for a missing image)."""
    rows = [_one(img) if img is not None else [np.nan] * len(DESCRIPTORS) for img in images]
    return pd.DataFrame(rows, columns=list(DESCRIPTORS), dtype="float64").round(6)


def pixels(X: pd.DataFrame, column: str = "image", size: int = 16) -> np.ndarray:
    """An image column (decoded arrays, as a trainer gets it) as one row of pixel values per
    image, each resized to ``size`` x ``size`` and scaled to 0-1: the input of a simple pixel
    classifier. Use it in ``FunctionTransformer(pixels, kw_args=...)``; it pickles by reference
    to driftloop, so serving never needs the project's own module to load the model.

    >>> import numpy as np, pandas as pd
    >>> X = pd.DataFrame({"image": [np.zeros((30, 20, 3), np.uint8), np.full((8, 8, 3), 255, np.uint8)]})
    >>> m = pixels(X, size=4); m.shape, float(m[0].max()), float(m[1].min())
    ((2, 48), 0.0, 1.0)
    """
    Image = _pillow()
    rows = []
    for image in X[column]:
        if image is None:
            rows.append(np.zeros(size * size * 3))
            continue
        small = Image.fromarray(np.asarray(image, dtype=np.uint8)).resize((size, size), Image.BILINEAR)
        rows.append(np.asarray(small, dtype="float64").ravel() / 255.0)
    return np.vstack(rows) if rows else np.zeros((0, size * size * 3))
