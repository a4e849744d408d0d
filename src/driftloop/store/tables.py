"""The store's tables. Every arrow of the loop is a row here, so any step can be audited.

Times are UNIX seconds (float, UTC) so SQLite and PostgreSQL sort and subtract them alike.
Schema changes go through an Alembic revision in ``store/migrations/versions``.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

metadata = MetaData()

predictions = Table(
    "predictions",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("prediction_id", String(32), nullable=False, unique=True),
    Column("model", String(64), nullable=False),
    Column("model_version", String(32), nullable=False),
    Column("request_id", String(64), nullable=False),
    Column("ts", Float, nullable=False),
    Column("inputs", JSON, nullable=False),
    Column("prediction", Text, nullable=False),
    Column("confidence", Float, nullable=True),  # none for a regression model
    Column("probabilities", JSON, nullable=False),
    Column("latency_ms", Float, nullable=False),
    Column("meta", JSON, nullable=True),
    Column("inserted_at", Float, nullable=True),  # when the writer inserted it: the commit-lag guard
    Index("ix_predictions_model_seq", "model", "seq"),
)

invalid_requests = Table(
    "invalid_requests",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model", String(64), nullable=False),
    Column("ts", Float, nullable=False),
    Column("path", String(64), nullable=False),
    Column("status", Integer, nullable=False),
    Column("errors", JSON, nullable=False),
)

feedback = Table(
    "feedback",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("prediction_id", String(32), nullable=False, index=True),
    Column("label", Text, nullable=False),  # a class, a number, or a preferred text
    Column("source", String(64), nullable=False),
    Column("ts", Float, nullable=False),
)

# what people and judges say about an output besides a label: a rating, tags, late scores
notes = Table(
    "annotations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("prediction_id", String(32), nullable=False, index=True),
    Column("source", String(64), nullable=False),
    Column("rating", Float, nullable=True),
    Column("tags", JSON, nullable=True),
    Column("scores", JSON, nullable=True),  # {metric name: value}
    Column("rationale", Text, nullable=True),
    Column("ts", Float, nullable=False),
)

references = Table(
    "references",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model", String(64), nullable=False),
    Column("model_version", String(32), nullable=False),
    Column("dataset_id", String(64), nullable=False),
    Column("profile", JSON, nullable=False),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("model", "model_version", name="uq_references_model_version"),
)

windows = Table(
    "windows",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model", String(64), nullable=False),
    Column("reference_id", Integer, nullable=False),
    Column("start_seq", Integer, nullable=False),
    Column("end_seq", Integer, nullable=False),
    Column("start_ts", Float, nullable=False),
    Column("end_ts", Float, nullable=False),
    Column("n", Integer, nullable=False),
    Column("model_versions", JSON, nullable=False),
    Column("profile", JSON, nullable=False),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("model", "start_seq", name="uq_windows_model_start"),
)

metrics = Table(
    "metrics",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("window_id", Integer, nullable=False, index=True),
    Column("name", String(128), nullable=False),
    Column("value", Float, nullable=True),
    Column("n", Integer, nullable=False),
    Column("p_value", Float, nullable=True),
    Column("threshold", Float, nullable=True),
    Column("flagged", Boolean, nullable=False),
    Column("updated_at", Float, nullable=False),
    UniqueConstraint("window_id", "name", name="uq_metrics_window_name"),
)

alerts = Table(
    "alerts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model", String(64), nullable=False),
    Column("rule", String(128), nullable=False),
    Column("metric", String(128), nullable=False),
    Column("value", Float, nullable=True),
    Column("threshold", Float, nullable=True),
    Column("window_id", Integer, nullable=True),
    Column("message", Text, nullable=False),
    Column("run_id", String(64), nullable=True),
    Column("ts", Float, nullable=False),
    Index("ix_alerts_model_rule_ts", "model", "rule", "ts"),
)

datasets = Table(
    "datasets",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("model", String(64), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("path", Text, nullable=False),
    Column("rows", Integer, nullable=False),
    Column("manifest", JSON, nullable=False),
    Column("created_at", Float, nullable=False),
)

retrain_runs = Table(
    "retrain_runs",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("model", String(64), nullable=False),
    Column("trigger", String(256), nullable=False),
    Column("status", String(16), nullable=False),
    Column("step", String(32), nullable=True),
    Column("options", JSON, nullable=False),
    Column("challenger_version", String(32), nullable=True),
    Column("error", Text, nullable=True),
    Column("started_at", Float, nullable=False),
    Column("finished_at", Float, nullable=True),
    Index("ix_runs_model_started", "model", "started_at"),
)

shadow_predictions = Table(
    "shadow_predictions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("prediction_id", String(32), nullable=False, index=True),
    Column("model", String(64), nullable=False),
    Column("model_version", String(32), nullable=False),
    Column("ts", Float, nullable=False),
    Column("prediction", Text, nullable=False),
    Column("confidence", Float, nullable=True),
    Column("probabilities", JSON, nullable=False),
)

rollouts = Table(
    "rollouts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model", String(64), nullable=False),
    Column("run_id", String(64), nullable=False),
    Column("version", String(32), nullable=False),
    Column("share", Float, nullable=False),
    Column("status", String(16), nullable=False),  # canary, promoted, rolled-back
    Column("started_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("reason", Text, nullable=True),
    UniqueConstraint("run_id", name="uq_rollouts_run"),
)

run_steps = Table(
    "run_steps",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(64), nullable=False, index=True),
    Column("step", String(32), nullable=False),
    Column("started_at", Float, nullable=False),
)

monitor_runs = Table(
    "monitor_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model", String(64), nullable=False),
    Column("started_at", Float, nullable=False),
    Column("finished_at", Float, nullable=False),
    Column("ok", Boolean, nullable=False),
    Column("windows", Integer, nullable=False),
    Column("error", Text, nullable=True),
    Index("ix_monitor_runs_model_started", "model", "started_at"),
)

decisions = Table(
    "decisions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(64), nullable=False, unique=True),
    Column("model", String(64), nullable=False),
    Column("champion_version", String(32), nullable=False),
    Column("challenger_version", String(32), nullable=False),
    Column("accepted", Boolean, nullable=False),
    Column("rules", JSON, nullable=False),
    Column("reasons", JSON, nullable=False),
    Column("eval_rows", Integer, nullable=False),
    Column("eval_dataset", String(64), nullable=False),
    Column("ts", Float, nullable=False),
)

promotions = Table(
    "promotions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model", String(64), nullable=False),
    Column("action", String(16), nullable=False),
    Column("from_version", String(32), nullable=True),
    Column("to_version", String(32), nullable=False),
    Column("run_id", String(64), nullable=True),
    Column("reason", Text, nullable=False),
    Column("detail", JSON, nullable=True),  # what the verdict measured (a watch's live score)
    Column("ts", Float, nullable=False),
    UniqueConstraint("run_id", "action", name="uq_promotions_run_action"),
)

model_artifacts = Table(
    "model_artifacts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model", String(64), nullable=False),
    Column("version", String(32), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("signature", String(64), nullable=True),  # HMAC-SHA256 with DRIFTLOOP_MODEL_KEY
    Column("created_at", Float, nullable=False),
    UniqueConstraint("model", "version", name="uq_model_artifacts_version"),
)

review_items = Table(
    "review_items",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model", String(64), nullable=False),
    Column("prediction_id", String(32), nullable=False),
    Column("strategy", String(32), nullable=False),  # what picked it: confidence, disagreement, audit
    Column("score", Float, nullable=False),  # its priority within the strategy (higher first)
    Column("wanted", Integer, nullable=False),  # reviewers wanted: 2 for an overlap item
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    UniqueConstraint("model", "prediction_id", name="uq_review_items_prediction"),
    Index("ix_review_items_model_expires", "model", "expires_at"),
)

reviews = Table(
    "reviews",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("item_id", Integer, nullable=False, index=True),
    Column("model", String(64), nullable=False),
    Column("reviewer", String(64), nullable=False),  # the API key's name
    Column("action", String(8), nullable=False),  # label or skip
    Column("label", Text, nullable=True),
    Column("feedback_id", Integer, nullable=True),  # the feedback row a label wrote (undo deletes it)
    Column("annotation_id", Integer, nullable=True),  # the rating and tags a generator's review wrote
    Column("undone", Boolean, nullable=False, default=False),
    Column("ts", Float, nullable=False),
    Index("ix_reviews_model_reviewer", "model", "reviewer"),
    # one standing answer per reviewer and item (an undone one may be answered again), so that
    # two submissions of the same answer racing each other cannot both be recorded
    Index(
        "uq_reviews_item_reviewer_standing",
        "item_id",
        "reviewer",
        unique=True,
        sqlite_where=text("NOT undone"),
        postgresql_where=text("NOT undone"),
    ),
)

quarantined_sources = Table(
    "quarantined_sources",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model", String(64), nullable=False),
    Column("source", String(64), nullable=False),  # a principal: a key's name
    Column("reason", Text, nullable=False),
    Column("ts", Float, nullable=False),
    UniqueConstraint("model", "source", name="uq_quarantined_sources"),
)

revoked_sessions = Table(  # sign-in sessions signed out before their cookie expires
    "revoked_sessions",
    metadata,
    Column("nonce", String(32), primary_key=True),
    Column("expires", Float, nullable=False),
)

alert_deliveries = Table(  # the alerts a sink has not taken yet (an outbox): tried again until it does
    "alert_deliveries",
    metadata,
    Column("alert_id", Integer, primary_key=True),
    Column("sink", String(64), primary_key=True),  # the sink's key: its kind and a hash of its URL
    Column("model", String(64), nullable=False),
    Column("tries", Integer, nullable=False),
    Column("next_at", Float, nullable=False),  # when to try again (claimed by moving it on)
    Column("error", Text, nullable=True),  # the last failure, redacted: no URL
    Column("given_up", Boolean, nullable=False),  # past retrying: kept to be seen
    Index("ix_alert_deliveries_due", "model", "given_up", "next_at"),
)
