"""The schema: serving frames equal training frames; validation names fields; redaction."""

from __future__ import annotations

import pandas as pd
import pytest

from driftloop import SchemaError
from driftloop.config import FeatureSettings
from driftloop.demo.data import applicants
from driftloop.schema import FeatureSchema

SCHEMA = FeatureSchema(
    {
        "income": FeatureSettings(type="numeric", min=0),
        "employment": FeatureSettings(type="categorical", allowed=["salaried", "contractor"]),
        "note": FeatureSettings(type="text", required=False, max_length=20),
    }
)


def test_frame_from_records_equals_frame_from_a_dataframe() -> None:
    schema = FeatureSchema(
        {
            name: FeatureSettings(type=kind)  # type: ignore[arg-type]
            for name, kind in {
                "income": "numeric",
                "age": "numeric",
                "employment": "categorical",
                "purpose": "categorical",
            }.items()
        }
    )
    df = applicants(50, "A", seed=3)
    from_records = schema.frame(df.drop(columns="approved").to_dict(orient="records"))
    pd.testing.assert_frame_equal(from_records, schema.frame(df))
    assert list(from_records.dtypes.astype(str)) == ["float64", "float64", "object", "object"]


def test_optional_fields_and_missing_required_ones() -> None:
    frame = SCHEMA.frame([{"income": 1.0, "employment": "salaried"}])
    assert frame["note"].tolist() == [None]
    with pytest.raises(SchemaError, match="required feature 'income'"):
        SCHEMA.frame([{"employment": "salaried"}])
    assert SCHEMA.frame([{"employment": "salaried"}], strict=False)["income"].isna().all()


def test_validation_errors_name_the_record_the_field_and_the_value() -> None:
    records, errors = SCHEMA.validate([{"income": "abc", "employment": "pilot", "note": "x" * 21}, 7])
    assert records == []
    by_loc = {tuple(e["loc"]): e["msg"] for e in errors}
    assert "'abc'" in by_loc[("records", 0, "income")]
    assert "'pilot'" in by_loc[("records", 0, "employment")]
    assert "at most 20 characters" in by_loc[("records", 0, "note")]
    assert "must be a JSON object" in by_loc[("records", 1)]
