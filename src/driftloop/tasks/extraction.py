"""Extraction: a model reads a document and returns, per configured field, a value (or nothing)
with a confidence; a label is the corrected set of fields.

A trainer returns a model whose ``predict(X)`` gives, per row, ``{field: {"value": str | None,
"confidence": float}}``. The served prediction is logged as the canonical JSON of the values
(``{"dob": "1990-03-12", "provider": null}``) and the per-field confidences go where a
classifier's class probabilities go. A label is the same JSON, built from a correction: per field
the corrected value, ``null`` (absent) or ``"confirmed"`` (see :mod:`driftloop.annotations`).

Metrics, per field and over fields, after each field's normaliser (case and white space; dates
and amounts in any common format; identifiers without separators): precision, recall and F1 where
a value that only differs at its boundary (one contains the other) counts half right rather
than as a miss plus a spurious value; ``exact_f1`` on the raw strings; document exact match; and
micro and macro F1. Without labels: per field, presence rate, mean confidence, value length and
format validity, and ``estimated_precision.<field>`` from the confidences calibrated on the
reference (in the spirit of CBPE) with a 95 % band.

>>> task = Extraction({"name": "text", "dob": "date"})
>>> truth = ['{"dob": "1990-03-12", "name": "Ana Ruiz"}']
>>> m = task.metrics(truth, ['{"dob": "12/03/1990", "name": "Ruiz"}'])
>>> m["f1.dob"], m["exact_f1.dob"], m["f1.name"], m["f1_micro"], m["doc_exact_match"]
(1.0, 0.0, 0.5, 0.75, 0.0)
>>> normalise("amount", "EUR 1,234.5"), normalise("date", "12 March 1990"), normalise("identifier", "ab-12 3")
('1234.50', '1990-03-12', 'AB123')
"""

from __future__ import annotations

import json
import math
import re
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from driftloop.evaluation import bootstrap_diff, wilcoxon
from driftloop.exceptions import SchemaError, TrainerError
from driftloop.tasks._base import Predictions

if TYPE_CHECKING:
    from collections.abc import Callable

    from driftloop.config import Settings
    from driftloop.profiles import ProfileSpec

__all__ = ["Extraction", "field_counts", "normalise", "valid"]

MAX_VALUE = 2000
_DATE_FORMATS = (
    "%Y-%m-%d",
    "%d/%m/%Y",
    "%d.%m.%Y",
    "%d-%m-%Y",
    "%d %B %Y",
    "%d %b %Y",
    "%B %d, %Y",
    "%b %d, %Y",
)
CALIBRATION_BINS = 10


def _date(text: str) -> date | None:
    cleaned = " ".join(text.replace(",", ", ").split()).replace(" ,", ",")
    for fmt in _DATE_FORMATS:
        try:
            return datetime.strptime(cleaned, fmt).date()
        except ValueError:
            continue
    return None


def _amount(text: str) -> Decimal | None:
    digits = re.sub(r"[^\d.,-]", "", text)
    if "," in digits and "." in digits:
        digits = (
            digits.replace(",", "")
            if digits.rfind(".") > digits.rfind(",")
            else digits.replace(".", "").replace(",", ".")
        )
    elif "," in digits:
        head, _, tail = digits.rpartition(",")
        digits = head.replace(",", "") + ("." + tail if len(tail) == 2 else tail)
    try:
        return Decimal(digits).quantize(Decimal("0.01")) if digits else None
    except InvalidOperation:
        return None


def normalise(kind: str, value: str | None) -> str | None:
    """A field's value as compared: text case- and space-folded, trailing punctuation dropped;
    a date as ISO; an amount with two decimals; an identifier upper case without separators.
    A date or amount that does not parse is compared as text."""
    if value is None:
        return None
    text = " ".join(str(value).split()).strip(" .,;:")
    if kind == "date" and (d := _date(text)) is not None:
        return d.isoformat()
    if kind == "amount" and (a := _amount(text)) is not None:
        return str(a)
    if kind == "identifier":
        return re.sub(r"[\s\-_/.]", "", text).upper()
    return text.casefold()


def valid(kind: str, value: str | None) -> float:
    """1.0 when ``value`` has its field type's format (a date that parses, an amount with
    digits), 0.0 when not, NaN when there is no value."""
    if value is None:
        return math.nan
    if kind == "date":
        return float(_date(" ".join(str(value).split())) is not None)
    if kind == "amount":
        return float(_amount(str(value)) is not None)
    if kind == "identifier":
        return float(
            bool(re.fullmatch(r"[A-Za-z0-9\-_/. ]+", str(value))) and any(c.isdigit() for c in str(value))
        )
    return float(bool(str(value).strip()))


def _parse(text: Any) -> dict[str, str | None]:
    if isinstance(text, dict):
        return text
    try:
        value = json.loads(str(text))
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def field_counts(kind: str, truth: str | None, made: str | None) -> tuple[float, float, float]:
    """(right, predicted, actual) for one field of one document, after normalising: a value
    that only differs at its boundary (one contains the other) is half right.

    >>> field_counts("text", "Ana Ruiz", "ana  ruiz"), field_counts("text", "Ana Ruiz", "Ruiz")
    ((1.0, 1.0, 1.0), (0.5, 1.0, 1.0))
    >>> field_counts("text", None, "Ruiz"), field_counts("text", "Ruiz", None)
    ((0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
    """
    t, m = normalise(kind, truth), normalise(kind, made)
    predicted, actual = float(m is not None), float(t is not None)
    if t is None or m is None:
        return 0.0, predicted, actual
    if t == m:
        return 1.0, 1.0, 1.0
    return (0.5 if (t in m or m in t) and min(len(t), len(m)) > 0 else 0.0), 1.0, 1.0


def _f1(right: float, predicted: float, actual: float) -> tuple[float, float, float]:
    precision = right / predicted if predicted else (1.0 if not actual else 0.0)
    recall = right / actual if actual else (1.0 if not predicted else 0.0)
    f1 = 2 * right / (predicted + actual) if predicted + actual else 1.0
    return precision, recall, f1


class Extraction:
    """A model of fields in a document."""

    name = "extraction"
    primary_metric = "f1_micro"
    lower_is_better: frozenset[str] = frozenset()
    slice_metric = "f1_micro"
    paired_test = "Wilcoxon"
    classes: list[str] = []

    def __init__(self, fields: dict[str, str]) -> None:
        self.fields = dict(fields)  # name -> type
        names = list(self.fields)
        self.metric_names = (
            "f1_micro",
            "f1_macro",
            "doc_exact_match",
            *(f"{m}.{f}" for f in names for m in ("f1", "precision", "recall", "exact_f1")),
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> Extraction:
        return cls({name: f.type for name, f in settings.fields.items()})

    # -- the model -----------------------------------------------------------------------------
    def check_model(self, model: Any, entrypoint: str) -> None:
        if not hasattr(model, "predict"):
            raise TrainerError(
                f"The trainer {entrypoint!r} must return a fitted extractor with 'predict' (one "
                f"{{field: {{value, confidence}}}} per row). Got a {type(model).__name__} without it."
            )

    def predict(self, model: Any, X: pd.DataFrame) -> Predictions:
        rows = list(model.predict(X))
        if len(rows) != len(X):
            raise TrainerError(
                f"An extractor's predict must return one dict per row ({len(X)}). Got {len(rows)}."
            )
        labels, confidence, per_field = [], [], []
        for row in rows:
            values, sure = {}, []
            for f in self.fields:
                got = row.get(f) if isinstance(row, dict) else None
                value = got.get("value") if isinstance(got, dict) else None
                values[f] = None if value is None else str(value)[:MAX_VALUE]
                p = float(got.get("confidence", 0.0)) if isinstance(got, dict) else 0.0
                sure.append(p if math.isfinite(p) else 0.0)  # no confidence: none at all
            labels.append(json.dumps(values, sort_keys=True, ensure_ascii=False))
            per_field.append(sure)
            finite = [p for p in sure if p == p]
            confidence.append(min(finite) if finite else math.nan)
        return Predictions(
            np.asarray(labels, dtype=object), np.asarray(confidence, dtype="float64"), np.asarray(per_field)
        )

    # -- labels ------------------------------------------------------------------------------
    def targets(self, values: pd.Series, what: str) -> pd.Series:
        out = []
        for v in values.tolist():
            wrong = self.label_error(v if isinstance(v, dict) else _parse(v) if isinstance(v, str) else v)
            if wrong is not None:
                raise SchemaError(f"Every label in the {what} must be a JSON object of fields. {wrong}")
            out.append(self.parse_label(v if isinstance(v, dict) else _parse(v)))
        return pd.Series(out, index=values.index, dtype=object)

    def label_error(self, value: Any) -> str | None:
        if isinstance(value, str):
            value = _parse(value) or value
        if not isinstance(value, dict) or not value:
            return f"'fields' must be an object of field values. Got {value!r:.80} instead."
        unknown = sorted(set(value) - set(self.fields))
        if unknown:
            return f"Every field must be one of {sorted(self.fields)}. Got {unknown[:5]} instead."
        bad = [
            k for k, v in value.items() if v is not None and (not isinstance(v, str) or len(v) > MAX_VALUE)
        ]
        if bad:
            return f"A field's value must be a text of at most {MAX_VALUE} characters or null. Got {bad[:5]}."
        return None

    def parse_label(self, value: Any) -> str:
        fields = _parse(value)
        return json.dumps({k: fields[k] for k in sorted(fields)}, sort_keys=True, ensure_ascii=False)

    # -- metrics -----------------------------------------------------------------------------
    def _counts(self, y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(right, predicted, actual, raw-right) per document and field; a field the label does
        not mention (not corrected or confirmed) counts nowhere (NaN)."""
        truth, made = (
            [_parse(t) for t in np.asarray(y_true, dtype=object)],
            [_parse(p) for p in np.asarray(y_pred, dtype=object)],
        )
        shape = (len(truth), len(self.fields))
        right, predicted, actual, raw = (np.full(shape, np.nan) for _ in range(4))
        for i, (t, m) in enumerate(zip(truth, made, strict=True)):
            for j, (f, kind) in enumerate(self.fields.items()):
                if f not in t:
                    continue
                right[i, j], predicted[i, j], actual[i, j] = field_counts(kind, t[f], m.get(f))
                raw[i, j] = float(t[f] is not None and t[f] == m.get(f))
        return right, predicted, actual, raw

    def metrics(self, y_true: Any, y_pred: Any, probabilities: Any = None) -> dict[str, float]:
        return self._from_counts(*self._counts(y_true, y_pred))

    def subset_metrics(
        self, y_true: Any, y_pred: Any, probabilities: Any = None
    ) -> Callable[[np.ndarray], dict[str, float]]:
        """Field matching is done once per document; a subset only sums its counts."""
        counts = self._counts(y_true, y_pred)
        return lambda rows: self._from_counts(*(c[rows] for c in counts))

    def _from_counts(
        self, right: np.ndarray, predicted: np.ndarray, actual: np.ndarray, raw: np.ndarray
    ) -> dict[str, float]:
        """Every metric from the documents' :meth:`_counts`."""
        if not len(right):
            return dict.fromkeys(self.metric_names, float("nan"))
        out: dict[str, float] = {}
        f1s = []
        judged = np.isfinite(right)
        sums = [np.nansum(x, axis=0) for x in (right, predicted, actual, raw)]
        for j, f in enumerate(self.fields):
            if not judged[:, j].any():
                continue
            r, p, a, exact_right = (float(x[j]) for x in sums)
            precision, recall, f1 = _f1(r, p, a)
            exact = _f1(exact_right, p, a)[2]
            out |= {f"precision.{f}": precision, f"recall.{f}": recall, f"f1.{f}": f1, f"exact_f1.{f}": exact}
            f1s.append(f1)
        out["f1_micro"] = _f1(*(float(x.sum()) for x in sums[:3]))[2]
        out["f1_macro"] = float(np.mean(f1s)) if f1s else float("nan")
        # a document matches exactly when every field its label judges is right (or rightly empty)
        fine = (right == 1.0) | ((predicted == 0) & (actual == 0)) | ~judged
        documents = judged.any(axis=1)
        exact_docs = fine.all(axis=1)[documents]
        out["doc_exact_match"] = float(exact_docs.mean()) if documents.any() else float("nan")
        return out

    def row_scores(self, y_true: Any, y_pred: Any) -> np.ndarray:
        """Each document's micro F1 over the fields its label judges."""
        right, predicted, actual, _ = self._counts(y_true, y_pred)
        return np.array(
            [
                _f1(*(float(np.nansum(x[i])) for x in (right, predicted, actual)))[2]
                for i in range(len(right))
            ],
            dtype="float64",
        )

    def paired(
        self,
        y_true: Any,
        pred_a: Any,
        pred_b: Any,
        metric: str,
        probabilities_a: Any = None,
        probabilities_b: Any = None,
    ) -> tuple[float | None, tuple[float, float] | None]:
        y = np.asarray(y_true, dtype=object)
        if not len(y):
            return None, None
        a, b = np.asarray(pred_a, dtype=object), np.asarray(pred_b, dtype=object)
        p = wilcoxon(1 - self.row_scores(y, a), 1 - self.row_scores(y, b))
        # each model's field matches once, both stacked; a resample picks row numbers of each
        counts = [np.concatenate(pair) for pair in zip(self._counts(y, a), self._counts(y, b), strict=True)]
        rows = np.arange(len(y))

        def score(_: np.ndarray, q: np.ndarray) -> float:
            return self._from_counts(*(c[q] for c in counts)).get(metric, float("nan"))

        return p, bootstrap_diff(rows, rows, rows + len(y), score)

    def corrected(self, y_true: Any, y_pred: Any) -> np.ndarray:
        right, predicted, actual, _ = self._counts(y_true, y_pred)
        wrong = np.isfinite(right) & ~((right == 1.0) | ((predicted == 0) & (actual == 0)))
        return np.asarray(wrong.any(axis=1), dtype=bool)

    def strata(self, y_true: Any, y_pred: Any) -> np.ndarray:
        """The field a document's correction touched that scores worst over these rows
        (``field:<name>``), or ``confirmed``: retraining oversamples by it."""
        right, predicted, actual, _ = self._counts(y_true, y_pred)
        names = list(self.fields)
        f1 = [
            _f1(*(float(np.nansum(x[:, j])) for x in (right, predicted, actual)))[2]
            for j in range(len(names))
        ]
        out = []
        for i in range(len(right)):
            wrong = [
                j
                for j in range(len(names))
                if np.isfinite(right[i, j])
                and not (right[i, j] == 1.0 or (predicted[i, j] == 0 and actual[i, j] == 0))
            ]
            out.append(f"field:{names[min(wrong, key=lambda j: f1[j])]}" if wrong else "confirmed")
        return np.asarray(out, dtype=object)

    def stratum_errors(self, y_true: Any, y_pred: Any) -> dict[str, float]:
        """Per stratum, how badly its field does: ``1 - F1`` of the field (0 for ``confirmed``)."""
        m = self.metrics(y_true, y_pred)
        return {f"field:{f}": round(1.0 - m[f"f1.{f}"], 4) for f in self.fields if f"f1.{f}" in m} | {
            "confirmed": 0.0
        }

    # -- monitoring --------------------------------------------------------------------------
    def output_frame(self, labels: Any, confidence: Any, probabilities: Any = None) -> pd.DataFrame:
        """Per field: presence (0/1), confidence, value length and format validity
        (``field.<name>.presence`` ...), and the number of fields found (``__prediction__``)."""
        parsed = [_parse(t) for t in np.asarray(labels, dtype=object)]
        per_field = _confidences(probabilities, len(parsed), list(self.fields))
        columns: dict[str, Any] = {
            "__prediction__": np.array(
                [sum(v is not None for v in p.values()) for p in parsed], dtype="float64"
            )
        }
        columns["__text__"] = np.asarray([json.dumps(p, sort_keys=True) for p in parsed], dtype=object)
        columns["__confidence__"] = np.asarray(
            [math.nan if c is None else float(c) for c in confidence], dtype="float64"
        )
        for j, (f, kind) in enumerate(self.fields.items()):
            values = [p.get(f) for p in parsed]
            columns[f"field.{f}.presence"] = np.array([float(v is not None) for v in values])
            columns[f"field.{f}.confidence"] = per_field[:, j]
            columns[f"field.{f}.length"] = np.array(
                [math.nan if v is None else float(len(v)) for v in values]
            )
            columns[f"field.{f}.valid"] = np.array([valid(kind, v) for v in values])
        return pd.DataFrame(columns)

    def output_spec(self, outputs: pd.DataFrame, bins: int) -> ProfileSpec:
        from driftloop.profiles import ProfileSpec

        # presence and validity are yes/no: profiled as categories (quantile bins of a 0/1 column
        # that is constant on the reference would hide a change)
        flags = [c for c in outputs if c.startswith("field.") and c.endswith((".presence", ".valid"))]
        numeric = [
            c
            for c in outputs
            if c in ("__prediction__", "__confidence__") or (c.startswith("field.") and c not in flags)
        ]
        return ProfileSpec(
            numeric=ProfileSpec.fit(outputs, numeric, [], bins=bins).numeric,
            categorical={c: ["0.0", "1.0"] for c in flags},
            sample_size=0,
        )

    def fit_estimator(self, features: pd.DataFrame, outputs: pd.DataFrame, y_true: Any) -> dict[str, Any]:
        """Per field, the rate at which a predicted value was right in each confidence bin of
        the reference's held-out rows (a histogram calibration, smoothed towards the field's
        overall rate): what ``estimated_precision.<field>`` reads a window's confidences with."""
        truth = [_parse(t) for t in np.asarray(y_true, dtype=object)]
        made = [_parse(t) for t in outputs["__text__"]]
        edges = np.linspace(0.0, 1.0, CALIBRATION_BINS + 1)
        out: dict[str, Any] = {"edges": edges.tolist(), "fields": {}}
        for f, kind in self.fields.items():
            conf = outputs[f"field.{f}.confidence"].to_numpy("float64")
            rows = [
                (c, field_counts(kind, t.get(f), m.get(f))[0])
                for c, t, m in zip(conf, truth, made, strict=True)
                if m.get(f) is not None and np.isfinite(c) and f in t
            ]
            if len(rows) < 10:
                continue
            c, ok = np.array([r[0] for r in rows]), np.array([r[1] for r in rows])
            overall = float(ok.mean())
            which = np.clip(np.searchsorted(edges, c, side="right") - 1, 0, CALIBRATION_BINS - 1)
            rate = [
                float((ok[which == b].sum() + 2 * overall) / ((which == b).sum() + 2))
                for b in range(CALIBRATION_BINS)
            ]
            out["fields"][f] = {"rate": rate, "overall": overall, "rows": len(rows)}
        return out

    def estimates(
        self, estimator: dict[str, Any], features: pd.DataFrame, outputs: pd.DataFrame
    ) -> dict[str, float | None]:
        """Per field: presence rate, mean confidence, format validity and the estimated
        precision of its values with a 95 % band (each value right with its calibrated chance)."""
        edges = np.asarray(estimator.get("edges", np.linspace(0, 1, CALIBRATION_BINS + 1)))
        out: dict[str, float | None] = {}
        for f in self.fields:
            present = outputs[f"field.{f}.presence"].to_numpy("float64")
            conf = outputs[f"field.{f}.confidence"].to_numpy("float64")
            validity = outputs[f"field.{f}.valid"].to_numpy("float64")
            out[f"presence.{f}"] = float(present.mean()) if len(present) else None
            finite = conf[(present == 1) & np.isfinite(conf)]
            out[f"confidence.{f}"] = float(finite.mean()) if len(finite) else None
            out[f"validity.{f}"] = float(np.nanmean(validity)) if np.isfinite(validity).any() else None
            calibration = estimator.get("fields", {}).get(f)
            if calibration is None or not len(finite):
                continue
            which = np.clip(np.searchsorted(edges, finite, side="right") - 1, 0, len(calibration["rate"]) - 1)
            p = np.asarray(calibration["rate"])[which]
            spread = 1.96 * math.sqrt(float((p * (1 - p)).sum())) / len(p)
            out[f"estimated_precision.{f}"] = float(p.mean())
            out[f"estimated_precision.{f}_low"] = max(0.0, float(p.mean()) - spread)
            out[f"estimated_precision.{f}_high"] = min(1.0, float(p.mean()) + spread)
        return out

    def label_drift(self, estimator: dict[str, Any], y_true: Any, y_pred: Any) -> dict[str, dict[str, Any]]:
        return {}


def _confidences(probabilities: Any, n: int, fields: list[str]) -> np.ndarray:
    """Per-field confidences as an ``(n, fields)`` matrix, from a matrix or logged ``{field: p}``."""
    if (
        isinstance(probabilities, np.ndarray)
        and probabilities.ndim == 2
        and probabilities.shape == (n, len(fields))
    ):
        return probabilities.astype("float64")
    out = np.full((n, len(fields)), np.nan)
    if probabilities is None:
        return out
    for i, row in enumerate(list(probabilities)[:n]):
        if isinstance(row, dict):
            out[i] = [float(row.get(f, math.nan)) for f in fields]
    return out
