"""Image features: base64 PNG/JPEG in, decoded arrays to the model, descriptors (and an optional
embedding) monitored, bad images refused with a clear 422 and nothing logged."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from driftloop import images, review, workflow
from driftloop.demo.project import write_example
from driftloop.demo.scenario import serve_in_thread
from driftloop.demo.shapes import shapes
from driftloop.exceptions import SchemaError
from driftloop.monitor import Monitor
from driftloop.project import Project
from driftloop.serving import create_app
from driftloop.training import snapshot_training_data, train

from .helpers import browser_or_skip, chromium_on, sign_in

EMBEDDING = '''\
import numpy as np


def mean_colour(images):
    """A tiny image embedding: each picture's mean red, green and blue."""
    return np.array([np.asarray(i, dtype="float64").reshape(-1, 3).mean(axis=0) for i in images])
'''


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    folder = tmp_path_factory.mktemp("shapes")
    config = write_example(folder, template="images", rows=600, window="200 rows", reload_interval="100ms")
    (folder / "embeddings.py").write_text(EMBEDDING)
    text = config.read_text().replace(
        "max_bytes = 200000", 'max_bytes = 200000\nmax_pixels = 10000\nembedding = "embeddings:mean_colour"'
    )
    config.write_text(text)
    project = Project.load(config)
    train(project)
    yield project
    workflow.shutdown()
    project.close()


def _png(width: int, height: int) -> str:
    return images.encode(np.full((height, width, 3), 128, dtype=np.uint8))


def test_the_model_gets_decoded_rgb_arrays_as_its_trainer_did(pictures: Project) -> None:
    grey = np.zeros((5, 7), dtype=np.uint8)  # greyscale in, RGB out
    X = pictures.schema.frame([{"image": images.encode(grey)}])
    (cell,) = X["image"]
    assert isinstance(cell, np.ndarray) and cell.shape == (5, 7, 3) and cell.dtype == np.uint8
    stored = pictures.schema.frame([{"image": images.encode(grey)}], decode=False)
    assert isinstance(stored["image"].iloc[0], str), "snapshots and logs keep the base64 text"
    buffer = io.BytesIO()
    from PIL import Image

    Image.fromarray(np.full((4, 4, 3), 200, dtype=np.uint8)).save(buffer, format="JPEG")
    assert pictures.schema.frame([{"image": images.encode(buffer.getvalue())}])["image"][0].shape == (4, 4, 3)


def test_bad_images_get_a_clear_422_and_nothing_is_logged(pictures: Project) -> None:
    gif = base64.b64encode(b"GIF89a" + b"\0" * 40).decode()
    truncated = images.encode(np.zeros((8, 8, 3), np.uint8))[:60]
    cases = {
        "not base64 !!": "base64 text of a PNG or JPEG",
        gif: "must be a PNG or JPEG file",
        truncated: "the image file is truncated or corrupt",
        _png(200, 100): "at most 10,000 pixels; it is 200 x 100",
        "A" * 300_000: "at most 200,000 bytes",
    }
    valid = shapes(1, "A", seed=3)["image"].iloc[0]
    before = pictures.store.count_predictions(pictures.name)
    with (
        serve_in_thread(create_app(pictures, background=False, monitor=False)) as url,
        httpx.Client(base_url=url) as client,
    ):
        for value, message in cases.items():
            r = client.post("/predict", json={"records": [{"image": valid}, {"image": value}]})
            assert r.status_code == 422, (message, r.text)
            assert message in r.text and "image" in r.text, r.text
        ok = client.post("/predict", json={"records": [{"image": valid}]})
        assert ok.status_code == 200, ok.text
        (p,) = ok.json()["predictions"]
        assert p["label"] in ("circle", "square", "triangle") and 0 < p["confidence"] <= 1
    assert pictures.store.count_predictions(pictures.name) == before + 1, "only the valid request is logged"


def test_a_new_visual_style_moves_the_descriptors_and_the_embedding(pictures: Project) -> None:
    columns = set(Monitor(pictures).reference().features.spec.columns)
    assert {f"image.{d}" for d in images.DESCRIPTORS} <= columns
    assert {"image.e0", "image.e1", "image.e2"} <= columns, "the embedding's dimensions are profiled"
    assert Monitor(pictures).reference_gaps() == []
    with (
        serve_in_thread(create_app(pictures, background=False, monitor=False)) as url,
        httpx.Client(base_url=url) as client,
    ):
        for concept, seed in (("A", 11), ("B", 12)):
            records = shapes(200, concept, seed=seed)[["image"]].to_dict(orient="records")
            assert client.post("/predict", json={"records": records}).status_code == 200
    Monitor(pictures).run()
    *_, same, new = pictures.store.windows(pictures.name)
    for name in ("drift.image.brightness", "drift.image.sharpness", "drift.image.e2"):
        assert not same["metrics"][name]["flagged"], (name, same["metrics"][name])
        assert new["metrics"][name]["flagged"], (name, new["metrics"][name])


def test_descriptors_measure_what_they_name() -> None:
    light = np.full((10, 10, 3), 230, dtype=np.uint8)
    dark = np.full((10, 20, 3), 20, dtype=np.uint8)
    red = np.zeros((10, 10, 3), dtype=np.uint8)
    red[..., 0] = 255
    stripes = np.zeros((10, 10, 3), dtype=np.uint8)
    stripes[::2] = 255
    d = images.descriptors([light, dark, red, stripes, None])
    assert d.loc[0, "brightness"] > 0.85 > 0.1 > d.loc[1, "brightness"]
    assert d.loc[1, "aspect"] == 2.0 and d.loc[1, "width"] == 20.0
    assert d.loc[2, "saturation"] == 1.0 and d.loc[2, "hue_bin0"] == 1.0 and d.loc[0, "saturation"] == 0.0
    assert d.loc[3, "sharpness"] > 1.0 > d.loc[0, "sharpness"] == 0.0
    assert d.loc[3, "contrast"] == 0.5
    assert d.loc[4].isna().all(), "a missing image is a missing row of descriptors"


def test_training_images_may_be_files_beside_the_labels_and_snapshots_stay_content_addressed(
    tmp_path: Path,
) -> None:
    config = write_example(tmp_path / "p", template="images", rows=60)
    folder = tmp_path / "p" / "data"
    df = pd.read_csv(folder / "train.csv")
    (folder / "pictures").mkdir()
    for i, text in enumerate(df["image"]):
        (folder / "pictures" / f"{i}.png").write_bytes(base64.b64decode(text))
    inline = df.copy()
    files = df.assign(image=[f"pictures/{i}.png" for i in range(len(df))])
    project = Project.load(config)
    try:
        first = snapshot_training_data(project)
        files.to_csv(folder / "train.csv", index=False)
        second = snapshot_training_data(project)
        assert second.id == first.id, "the same pictures, inline or as files, are the same snapshot"
        assert pd.read_parquet(second.path)["image"].tolist() == inline["image"].tolist()
        files.assign(image=["../../outside.png"] * len(df)).to_csv(folder / "train.csv", index=False)
        with pytest.raises(SchemaError, match="must stay inside"):
            snapshot_training_data(project)
        files.assign(image=["pictures/missing.png"] * len(df)).to_csv(folder / "train.csv", index=False)
        with pytest.raises(SchemaError, match="'pictures/missing.png' does not exist"):
            snapshot_training_data(project)
    finally:
        project.close()


def test_an_optional_image_missing_from_every_row_still_profiles(pictures: Project) -> None:
    frame = pictures.schema.profile_frame(pd.DataFrame({"image": [None, None]}))
    assert {"image.brightness", "image.e0", "image.e2"} <= set(frame.columns)
    assert frame["image.e1"].isna().all() and frame["image.sharpness"].isna().all()


def test_a_small_picture_is_enlarged_on_the_review_page_in_a_real_browser(
    pictures: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 24 × 24 picture at its own size is a smudge a reviewer cannot label; the page shows it
    at least 120 pixels wide, its pixels kept sharp."""
    browser_or_skip()  # before the set-up
    with serve_in_thread(create_app(pictures, background=False, monitor=False)) as url:
        records = shapes(50, "B", seed=21)[["image"]].to_dict(orient="records")
        assert httpx.post(f"{url}/predict", json={"records": records}).status_code == 200
    assert review.fill(pictures)
    monkeypatch.setenv("DRIFTLOOP_API_KEYS", "anna:ka=review")
    with chromium_on(pictures) as (url, chromium):
        page = chromium.new_page()
        sign_in(page, url, "ka")
        page.wait_for_selector("#item:not([hidden]) img.feature")
        natural = page.evaluate("document.querySelector('img.feature').naturalWidth")
        box = page.locator("img.feature").bounding_box()
    assert natural == 24 and box is not None and box["width"] >= 120, (natural, box)
