"""Config errors name the key, the rule and the value; many problems come back at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from driftloop import ConfigError, Settings
from driftloop.config import Window, parse_duration

BASE = {
    "project": {"name": "loan", "target": "approved", "classes": ["no", "yes"]},
    "features": {"income": {"type": "numeric", "min": 0}},
    "data": {"train": "train.csv"},
    "trainer": {"entrypoint": "trainer:train"},
}


def with_(section: str, value: object) -> dict[str, object]:
    return {**BASE, section: value}


def test_defaults_resolve_paths_against_the_config_folder(tmp_path: Path) -> None:
    s = Settings.from_dict(BASE, root=tmp_path)
    assert s.store.url == f"sqlite:///{tmp_path}/.driftloop/driftloop.db"
    assert s.registry.artifacts == str(tmp_path / ".driftloop" / "artifacts")
    assert s.store.snapshots == str(tmp_path / ".driftloop" / "datasets")
    assert s.archive.url == str(tmp_path / ".driftloop" / "archive")
    assert s.monitor.window.rows == 1000
    assert s.workflow_db_url.endswith(".driftloop/workflows.sqlite")


def test_the_watch_judges_on_what_the_gate_promoted_for_unless_told_otherwise() -> None:
    assert Settings.from_dict(BASE).watch.metric == "accuracy"  # the task's first metric, as the gate's
    gated = with_("gate", {"primary_metric": "f1_macro"})
    assert Settings.from_dict(gated).watch.metric == "f1_macro"
    told = {**gated, "watch": {"metric": "accuracy", "windows": 2}}
    assert Settings.from_dict(told).watch.metric == "accuracy"


def test_negative_window_is_one_clear_sentence() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_dict(with_("monitor", {"window": "-5m"}))
    message = str(info.value)
    assert "'monitor.window'" in message and "'-5m'" in message and "Got" in message


def test_every_problem_is_reported_at_once() -> None:
    bad = {
        **BASE,
        "features": {"income": {"type": "numbr"}},
        "data": {"train": "train.xlsx"},
        "alerts": [{"name": "a", "metric": "accuracy", "op": "<<", "threshold": 0.8}],
        "surprise": 1,
    }
    with pytest.raises(ConfigError) as info:
        Settings.from_dict(bad)
    problems = info.value.problems
    joined = "\n".join(problems)
    assert len(problems) == 4, joined
    assert "'features.income.type'" in joined and "'numbr'" in joined
    assert "'data.train'" in joined and "train.xlsx" in joined
    assert "The 'op' setting of alerts[0] 'a'" in joined and "'<<'" in joined
    assert "'surprise'" in joined and "not a known setting" in joined


def test_missing_required_section() -> None:
    data = {k: v for k, v in BASE.items() if k != "trainer"}
    with pytest.raises(ConfigError, match="'trainer' setting in config is required but missing"):
        Settings.from_dict(data)


def test_constraints_and_cross_checks() -> None:
    with pytest.raises(ConfigError, match="'min' must not exceed 'max'"):
        Settings.from_dict(with_("features", {"x": {"type": "numeric", "min": 5, "max": 1}}))
    with pytest.raises(ConfigError, match="target 'approved' must not also be listed"):
        Settings.from_dict(with_("features", {"approved": {"type": "categorical"}}))
    with pytest.raises(ConfigError, match="'trainer.entrypoint'"):
        Settings.from_dict(with_("trainer", {"entrypoint": "no-colon"}))
    with pytest.raises(ConfigError, match="needs 'url' or 'url_env'"):
        Settings.from_dict(with_("sinks", [{"type": "webhook"}]))
    with pytest.raises(
        ConfigError,
        match=r"'archive.after' setting must be at least 'review.expire_after' "
        r"\(172800s\).*Got 3600s instead",
    ):
        Settings.from_dict(with_("archive", {"after": "1h"}))
    with pytest.raises(ConfigError, match=r"retention \(86400s\) must be longer than after \(172800s\)"):
        Settings.from_dict(with_("archive", {"after": "2d", "retention": "1d"}))
    archived = Settings.from_dict(
        with_("archive", {"url": "s3://bucket/logs", "after": "30d"}), root=Path("/p")
    )
    assert (archived.archive.url, archived.archive.after) == ("s3://bucket/logs", 30 * 86400.0)
    assert Settings.from_dict(BASE, root=Path("/p")).archive.url == "/p/.driftloop/archive"


def test_missing_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must exist. Run 'driftloop init'"):
        Settings.load(tmp_path / "nope.toml")
    broken = tmp_path / "driftloop.toml"
    broken.write_text("[project\nname=")
    with pytest.raises(ConfigError, match="must be valid TOML"):
        Settings.load(broken)


def test_durations_and_windows() -> None:
    assert parse_duration("2d") == 172800.0
    assert Window.parse(300).rows == 300
    assert Window.parse("1h").seconds == 3600.0
    for bad in ("0s", "5 parsecs", "-1h", 0):
        with pytest.raises(ValueError, match="must be a"):
            Window.parse(bad) if not isinstance(bad, str) or "parsec" in bad else parse_duration(bad)


def test_secrets_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    s = Settings.from_dict(with_("sinks", [{"type": "slack", "url_env": "SLACK_HOOK_FOR_TEST"}]))
    monkeypatch.delenv("SLACK_HOOK_FOR_TEST", raising=False)
    assert s.sink_url(s.sinks[0]) is None
    monkeypatch.setenv("SLACK_HOOK_FOR_TEST", "http://127.0.0.1:9/hook")
    assert s.sink_url(s.sinks[0]) == "http://127.0.0.1:9/hook"
    # a secret written in the file is refused, and the error does not repeat it
    for sink in (
        {"type": "slack", "url": "https://hooks.slack.com/services/T0/B0/SECRET-1"},
        {"type": "webhook", "url": "https://ops:SECRET-2@hooks.example/alerts"},
    ):
        with pytest.raises(ConfigError) as info:
            Settings.from_dict(with_("sinks", [sink]))
        assert "url_env" in str(info.value) and "SECRET" not in str(info.value), str(info.value)
    assert Settings.from_dict(with_("sinks", [{"type": "webhook", "url": "https://hooks.example/a"}]))
    for table, key, url, fix in (
        ("store", "url", "postgresql://dl:SECRET-3@db/dl", "PGPASSWORD"),
        ("registry", "uri", "http://ops:SECRET-4@mlflow:5000", "MLFLOW_TRACKING_PASSWORD"),
    ):
        with pytest.raises(ConfigError) as info:
            Settings.from_dict(with_(table, {key: url}))
        shown = str(info.value)
        assert f"'{table}.{key}'" in shown and fix in shown and "SECRET" not in shown, shown
    assert Settings.from_dict(with_("store", {"url": "postgresql://dl@db/dl"})).store.url.endswith("/dl")


def test_sqlite_synchronous_reaches_every_connection(tmp_path: Path) -> None:
    from driftloop.store import Store

    with pytest.raises(ConfigError) as info:
        Settings.from_dict(with_("store", {"sqlite_synchronous": "off"}))
    assert "'store.sqlite_synchronous'" in str(info.value) and "'off'" in str(info.value)
    for setting, pragma in (("full", 2), ("normal", 1)):
        settings = Settings.from_dict(with_("store", {"sqlite_synchronous": setting}), root=tmp_path)
        store = Store(settings.store.url, synchronous=settings.store.sqlite_synchronous)
        with store.engine.connect() as connection:  # every connection, pooled or raw, gets it
            assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == pragma
        store.close()


def test_dynamic_batching_settings_defaults_and_errors() -> None:
    serving = Settings.from_dict(BASE).serving
    assert (serving.dynamic_batching, serving.dynamic_batch_rows, serving.dynamic_batch_wait) == (
        True,
        1000,
        0,
    )
    assert serving.predict_in == "thread"
    assert Settings.from_dict(
        {**BASE, "serving": {"dynamic_batch_wait": "2ms"}}
    ).serving.dynamic_batch_wait == (pytest.approx(0.002))
    for zero in (0, "0", "0s", "0ms", 0.0):
        assert (
            Settings.from_dict({**BASE, "serving": {"dynamic_batch_wait": zero}}).serving.dynamic_batch_wait
            == 0
        )
    for bad in ("-5ms", "3s", True, "soon"):
        with pytest.raises(ConfigError) as info:
            Settings.from_dict({**BASE, "serving": {"dynamic_batch_wait": bad}})
        assert "'serving.dynamic_batch_wait'" in str(info.value) and f"Got {bad!r} instead" in str(info.value)
    with pytest.raises(ConfigError, match="'serving.dynamic_batch_rows'"):
        Settings.from_dict({**BASE, "serving": {"dynamic_batch_rows": 0}})
