"""Feedback hygiene: conflicting labels resolved by rule and counted; quarantined sources unused."""

from __future__ import annotations

from pathlib import Path

import pytest

from driftloop import ConfigError, Settings
from driftloop.config import FeedbackSettings
from driftloop.store import Store


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(f"sqlite:///{tmp_path}/db.sqlite")
    s.insert_predictions(
        [
            {
                "prediction_id": pid,
                "model": "m",
                "model_version": "1",
                "request_id": "r",
                "ts": 0.0,
                "inputs": {"x": 1},
                "prediction": "no",
                "confidence": 0.9,
                "probabilities": {},
                "latency_ms": 1.0,
                "meta": None,
            }
            for pid in ("p1", "p2", "p3")
        ]
    )
    # p1: two reviewers say yes, then the bot says no; p2: only the flaky source; p3: agreement
    for pid, label, source in [
        ("p1", "yes", "alice"),
        ("p1", "yes", "bob"),
        ("p1", "no", "bot"),
        ("p2", "yes", "flaky"),
        ("p3", "no", "alice"),
        ("p3", "no", "bot"),
    ]:
        s.add_feedback([{"prediction_id": pid, "label": label, "source": source}])
    return s


def labels(store: Store, **policy: object) -> tuple[dict[str, str], dict[str, int]]:
    rows, stats = store.resolved_labels("m", policy=FeedbackSettings.model_validate(policy))
    return {r["prediction_id"]: r["label"] for r in rows}, stats


def test_latest_wins_by_default(store: Store) -> None:
    resolved, stats = labels(store)
    assert resolved == {"p1": "no", "p2": "yes", "p3": "no"}
    assert stats == {"feedback": 6, "quarantined": 0, "conflicts": 1}


def test_majority_and_trusted_rules(store: Store) -> None:
    assert labels(store, conflict_rule="majority")[0]["p1"] == "yes"
    assert labels(store, conflict_rule="trusted", trusted_sources=["bot"])[0]["p1"] == "no"
    assert labels(store, conflict_rule="trusted", trusted_sources=["alice"])[0] == {
        "p1": "yes",
        "p2": "yes",
        "p3": "no",
    }


def test_quarantined_sources_are_counted_not_used(store: Store) -> None:
    resolved, stats = labels(store, quarantined_sources=["flaky", "bot"])
    assert resolved == {"p1": "yes", "p3": "no"}
    assert stats == {"feedback": 6, "quarantined": 3, "conflicts": 0}


def test_policy_mistakes_are_sentences() -> None:
    base = {
        "project": {"name": "m", "target": "y", "classes": ["a", "b"]},
        "features": {"x": {"type": "numeric"}},
        "data": {"train": "t.csv"},
        "trainer": {"entrypoint": "t:f"},
    }
    with pytest.raises(ConfigError, match="needs at least one entry in 'trusted_sources'"):
        Settings.from_dict({**base, "feedback": {"conflict_rule": "trusted"}})
    with pytest.raises(ConfigError, match=r"both trusted and quarantined. Got \['x'\]"):
        Settings.from_dict({**base, "feedback": {"trusted_sources": ["x"], "quarantined_sources": ["x"]}})
