"""Feature schema -> request model, validation and column types.

>>> from driftloop.config import FeatureSettings
>>> schema = FeatureSchema({
...     "income": FeatureSettings(type="numeric", min=0),
...     "purpose": FeatureSettings(type="categorical", allowed=["car", "home"]),
... })
>>> records, errors = schema.validate([{"income": 10, "purpose": "car"}, {"income": -1, "purpose": "boat"}])
>>> records, [e["loc"] for e in errors]
([{'income': 10.0, 'purpose': 'car'}], [['records', 1, 'income'], ['records', 1, 'purpose']])
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    create_model,
)

from driftloop.config import FeatureSettings, category_text
from driftloop.exceptions import SchemaError
from driftloop.plugins import load_function

__all__ = ["FeatureSchema"]

DEFAULT_MAX_TEXT = 10_000


def _number_as_category(value: Any) -> Any:
    return category_text(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


def _as_text(column: pd.Series) -> pd.Series:
    """A categorical or text column as object strings (``None`` where missing): codes read from a
    CSV as integers, or as floats when the column has gaps, become the text a request carries."""
    present = column.notna()
    if pd.api.types.is_object_dtype(column) or pd.api.types.is_string_dtype(column):
        values = column.astype("object")
        if pd.api.types.infer_dtype(values, skipna=True) in ("string", "empty"):
            return values.where(present, None)
    else:
        values = column.astype("object")
    return pd.Series(
        [
            category_text(v) if keep else None
            for v, keep in zip(values.tolist(), present.tolist(), strict=True)
        ],
        index=column.index,
        dtype=object,
    )


class FeatureSchema:
    """The model's inputs: names, types and constraints, and the pydantic model built from them."""

    def __init__(self, features: dict[str, FeatureSettings], root: Path | None = None) -> None:
        self.features = dict(features)
        self.root = root  # where the project's own modules (embedding functions) are imported from
        self.record_model = self._build_model()
        self._batch: TypeAdapter[list[Any]] = TypeAdapter(list[self.record_model])  # type: ignore[name-defined]
        self._embedders: dict[str, Callable[[list[Any]], Any]] = {}
        self._pii = {n: f.pii for n, f in self.features.items() if f.pii}

    @property
    def numeric(self) -> list[str]:
        return [n for n, f in self.features.items() if f.type == "numeric"]

    @property
    def categorical(self) -> list[str]:
        return [n for n, f in self.features.items() if f.type == "categorical"]

    @property
    def text(self) -> list[str]:
        return [n for n, f in self.features.items() if f.type == "text"]

    @property
    def images(self) -> list[str]:
        return [n for n, f in self.features.items() if f.type == "image"]

    def _build_model(self) -> type[BaseModel]:
        fields: dict[str, Any] = {}
        for name, feature in self.features.items():
            annotation: Any
            if feature.type == "numeric":
                annotation = float
                constraint = Field(ge=feature.min, le=feature.max, allow_inf_nan=False)
            elif feature.type == "image":
                from driftloop import images

                # one parameter: pydantic before 2.7 hands a validator of two its ValidationInfo
                checked = functools.partial(
                    images.check, max_bytes=feature.max_bytes, max_pixels=feature.max_pixels
                )
                annotation = Annotated[str, AfterValidator(checked)]
                constraint = Field()
            elif feature.type == "categorical":
                # a category is text: 1, 1.0 and "1" are the same category "1" everywhere
                allowed = Literal[tuple(feature.allowed)] if feature.allowed else str
                annotation = Annotated[allowed, BeforeValidator(_number_as_category)]
                constraint = Field(max_length=feature.max_length or DEFAULT_MAX_TEXT)
            else:
                annotation = str
                constraint = Field(max_length=feature.max_length or DEFAULT_MAX_TEXT)
            if feature.required:
                fields[name] = (annotation, constraint)
            else:
                constraint.default = None
                fields[name] = (annotation | None, constraint)
        config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)
        return create_model("Record", __config__=config, **fields)

    def validate(self, rows: list[Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Split rows into clean records and errors (FastAPI's 422 shape, one per bad field)."""
        try:  # the common case, all valid: one call into pydantic-core for the whole batch
            return self._batch.dump_python(self._batch.validate_python(rows)), []
        except ValidationError:
            pass  # find and word every problem, record by record
        records: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        model = self.record_model
        for index, row in enumerate(rows):
            if not isinstance(row, dict):
                errors.append(
                    {
                        "loc": ["records", index],
                        "msg": f"Record {index} must be a JSON object of feature values. "
                        f"Got {type(row).__name__} instead.",
                        "type": "model_type",
                    }
                )
                continue
            try:
                records.append(model.model_validate(row).model_dump())
            except ValidationError as exc:
                for err in exc.errors(include_url=False, include_input=False):
                    field = ".".join(str(p) for p in err["loc"])[:64]
                    errors.append(
                        {
                            "loc": ["records", index, *err["loc"]],
                            "msg": f"Feature '{field}' of record {index} is required but missing."
                            if err["type"] == "missing"
                            else f"Feature '{field}' of record {index}: {err['msg']}. "
                            f"Got {self._shown(str(err['loc'][0]), row.get(err['loc'][0]))} instead.",
                            "type": err["type"],
                        }
                    )
        return records, errors

    def _shown(self, name: str, value: Any) -> str:
        """A bad value as an error may quote it: never a pii feature's value, and at most 80
        characters of any other (a 4 MB string is not copied into every error)."""
        if name in self._pii:
            return f"a value of the pii feature '{name}' (not shown)"
        text = repr(value)
        return text if len(text) <= 80 else f"{text[:60]}… ({len(text)} characters)"

    def scrub(self, text: str, records: list[dict[str, Any]]) -> str:
        """``text`` (a model's error, say) with every value of a pii feature in ``records`` replaced.

        >>> from driftloop.config import FeatureSettings
        >>> s = FeatureSchema({"email": FeatureSettings(type="text", pii="hash")})
        >>> s.scrub("could not parse 'a@b.c'", [{"email": "a@b.c"}])
        "could not parse '<pii email>'"
        """
        for name in self._pii:
            for record in records:
                value = record.get(name)
                if value is not None and str(value):
                    text = text.replace(str(value), f"<pii {name}>")
        return text[:2000]

    @property
    def pii(self) -> dict[str, str]:
        """Features marked ``pii``: name -> ``"hash"`` or ``"drop"``."""
        return dict(self._pii)

    def redact(self, record: dict[str, Any], key: bytes | None) -> dict[str, Any]:
        """The record as it may be written: ``pii = "hash"`` fields keyed-hashed, ``"drop"`` removed.

        >>> from driftloop.config import FeatureSettings
        >>> s = FeatureSchema({"email": FeatureSettings(type="text", pii="hash"),
        ...                    "ssn": FeatureSettings(type="text", pii="drop")})
        >>> sorted(s.redact({"email": "a@b.c", "ssn": "1"}, b"k"))
        ['email']
        """
        marked = self._pii
        if not marked:
            return record
        out = {}
        for name, value in record.items():
            rule = marked.get(name)
            if rule == "drop":
                continue
            if rule == "hash" and value is not None:
                if key is None:
                    raise SchemaError(
                        f"Feature '{name}' is marked pii = \"hash\" but DRIFTLOOP_PII_KEY is not set."
                    )
                value = "h:" + hmac.new(key, str(value).encode(), hashlib.sha256).hexdigest()[:32]
            out[name] = value
        return out

    def frame(
        self, records: list[dict[str, Any]] | pd.DataFrame, strict: bool = True, decode: bool = True
    ) -> pd.DataFrame:
        """Records -> a DataFrame with the schema's columns, in order, with stable dtypes: what a
        model is given. Image features are decoded to RGB arrays, unless ``decode=False`` (data
        to store, such as snapshots, keeps each image as its base64 text).

        ``strict=False`` fills missing columns with nulls (logged rows whose pii fields were dropped).
        """
        if not isinstance(records, pd.DataFrame):
            return self._frame_from_records(records, strict, decode)
        df = records
        missing = [name for name in self.features if name not in df.columns]
        required_missing = [n for n in missing if self.features[n].required] if strict else []
        if required_missing:
            raise SchemaError(
                f"The data must have a column for every required feature. "
                f"Missing {sorted(required_missing)}; got columns {sorted(map(str, df.columns))}."
            )
        out = pd.DataFrame(index=df.index)
        for name, feature in self.features.items():
            column = df[name] if name in df.columns else pd.Series(None, index=df.index)
            if feature.type == "numeric":
                out[name] = pd.to_numeric(column, errors="coerce").astype("float64")
            elif feature.type == "image" and decode:
                out[name] = self._decoded(name, column.tolist(), index=df.index)
            else:
                out[name] = _as_text(column)
        return out

    def _decoded(self, name: str, values: list[Any], index: Any = None) -> pd.Series:
        """An image feature's base64 texts as decoded RGB arrays (``None`` where missing)."""
        from driftloop import images

        feature = self.features[name]
        arrays: list[Any] = []
        for i, value in enumerate(values):
            if value is None or (isinstance(value, float) and np.isnan(value)):
                arrays.append(None)
                continue
            if isinstance(value, np.ndarray):  # decoded already
                arrays.append(value)
                continue
            try:
                arrays.append(images.decode(str(value), feature.max_bytes, feature.max_pixels))
            except ValueError as exc:
                raise SchemaError(f"Image feature '{name}', row {i}: {exc}.") from None
        return pd.Series(arrays, index=index, dtype=object)

    def _frame_from_records(
        self, records: list[dict[str, Any]], strict: bool, decode: bool = True
    ) -> pd.DataFrame:
        """The hot path of serving: plain lists to columns, one DataFrame at the end."""
        columns: dict[str, Any] = {}
        for name, feature in self.features.items():
            values = [r.get(name) for r in records]
            if strict and feature.required and any(v is None for v in values):
                raise SchemaError(f"Every record must have the required feature '{name}'.")
            if feature.type == "numeric":
                columns[name] = np.array(values, dtype="float64")  # None becomes NaN
            elif feature.type == "image" and decode:
                columns[name] = self._decoded(name, values)
            else:
                columns[name] = pd.Series(values, dtype=object)  # object, as the training frames have
        return pd.DataFrame(columns, copy=False)

    def embed(self, name: str, values: pd.Series) -> np.ndarray:
        """The configured embedding of feature ``name``: an ``(n, d)`` float array (a text
        feature's function gets strings, an image feature's the decoded arrays)."""
        entrypoint = self.features[name].embedding
        assert entrypoint is not None
        embedder = self._embedders.get(name)
        if embedder is None:
            embedder = load_function(entrypoint, self.root, f"features.{name}.embedding")
            self._embedders[name] = embedder
        if self.features[name].type == "image":
            texts = values.tolist()
            what = "images"
        else:
            texts = values.astype(object).where(values.notna(), "").tolist()
            what = "texts"
        out = np.asarray(embedder(texts), dtype="float64")
        if out.ndim != 2 or out.shape[0] != len(texts):
            raise SchemaError(
                f"The embedding function {entrypoint!r} of feature '{name}' must return an array of "
                f"shape (n, d) for n {what}. Got shape {out.shape} for {len(texts)} {what}."
            )
        return out

    def profile_frame(self, df: pd.DataFrame) -> pd.DataFrame:
        """The columns monitoring profiles: numeric and categorical as-is, text as its length and,
        where an ``embedding`` is configured, its dimensions ``name.e0``, ``name.e1``, ...

        Features marked ``pii`` are not profiled: what is logged of them is hashed or absent.
        """
        marked = self.pii
        out = df[[c for c in (*self.numeric, *self.categorical) if c not in marked]].copy()
        for name in (n for n in self.text if n not in marked):
            out[f"{name}.length"] = df[name].astype("string").str.len().astype("float64")
            if self.features[name].embedding:
                vectors = self.embed(name, df[name])
                for i in range(vectors.shape[1]):
                    out[f"{name}.e{i}"] = vectors[:, i]
        for name in self.images:
            from driftloop.images import descriptors

            cells = self._decoded(name, df[name].tolist()).tolist()  # text or arrays
            described = descriptors(cells)
            for column in described.columns:
                out[f"{name}.{column}"] = described[column].to_numpy()
            if self.features[name].embedding:
                present = [i for i, c in enumerate(cells) if c is not None]
                if present:
                    vectors = self.embed(name, pd.Series([cells[i] for i in present], dtype=object))
                else:  # no image in these rows: the embedding's width, from one blank pixel
                    blank = pd.Series([np.zeros((1, 1, 3), dtype=np.uint8)], dtype=object)
                    vectors = self.embed(name, blank)[:0]
                for i in range(vectors.shape[1]):
                    full = np.full(len(cells), np.nan)
                    full[present] = vectors[:, i]
                    out[f"{name}.e{i}"] = full
        return out
