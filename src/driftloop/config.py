"""driftloop.toml -> typed settings; the one place settings are read.

>>> s = Settings.from_dict({
...     "project": {"name": "loan", "target": "approved", "classes": ["no", "yes"]},
...     "features": {"income": {"type": "numeric", "min": 0}},
...     "data": {"train": "train.csv"},
...     "trainer": {"entrypoint": "trainer:train"},
... }, root="/tmp/p")
>>> s.project.name, s.monitor.window.rows, s.store.url
('loan', 1000, 'sqlite:////tmp/p/.driftloop/driftloop.db')
>>> parse_duration("90s"), parse_duration("5m"), parse_duration("1h")
(90.0, 300.0, 3600.0)
"""

from __future__ import annotations

import os
import re
import tomllib
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from driftloop.exceptions import ConfigError

__all__ = [
    "AlertRuleSettings",
    "ArchiveSettings",
    "CustomMetricSettings",
    "FeatureSettings",
    "FeedbackSettings",
    "FieldSettings",
    "GateSettings",
    "GenerationSettings",
    "MonitorSettings",
    "RetrainSettings",
    "RolloutSettings",
    "Settings",
    "WatchSettings",
    "Window",
    "parse_duration",
]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str | int | float, *, allow_zero: bool = False) -> float:
    """Seconds in a duration such as ``"30s"``, ``"5m"``, ``"1.5h"`` or ``"2d"``; with
    ``allow_zero``, ``"0s"`` too (an age limit meaning "any age").

    >>> parse_duration("250ms"), parse_duration("0s", allow_zero=True)
    (0.25, 0.0)
    """
    if isinstance(text, int | float) and not isinstance(text, bool):
        if text < 0 or (text == 0 and not allow_zero):
            raise ValueError(f"must be a positive duration. Got {text!r} instead")
        return float(text)
    match = _DURATION.match(str(text))
    if not match or float(match.group(1)) < 0 or (float(match.group(1)) == 0 and not allow_zero):
        raise ValueError(
            f"must be a positive duration such as '30s', '5m', '1h' or '2d'. Got {text!r} instead"
        )
    return float(match.group(1)) * _UNITS[match.group(2)]


def category_text(value: Any) -> str:
    """A category as the text every part of driftloop uses for it: ``1``, ``1.0`` and ``"1"``
    are all ``"1"`` (a CSV column of codes reads as integers, or as floats when it has gaps).

    >>> category_text(3), category_text(3.0), category_text(2.5), category_text("a")
    ('3', '3', '2.5', 'a')
    """
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _numbers_as_text(value: Any) -> Any:
    """A list's numbers as category text (``[1, 2.0]`` -> ``["1", "2"]``); anything else as it is."""
    if not isinstance(value, list):
        return value
    return [category_text(v) if isinstance(v, int | float) and not isinstance(v, bool) else v for v in value]


# what each task scores from labels (its first is the gate's default primary metric); the task
# modules (driftloop.tasks) compute them, this light module only names them
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("accuracy", "f1_macro"),
    "regression": ("mae", "rmse", "mape", "r2", "abs_error_p50", "abs_error_p90"),
    "generation": ("token_f1", "rouge_l"),
    "extraction": ("f1_micro", "f1_macro", "doc_exact_match"),
}


PROPORTIONS = frozenset({"accuracy", "top_k_accuracy", "doc_exact_match"})


def is_scorer(metric: str) -> bool:
    """Whether ``metric`` names a scorer (``metric.<name>``), which reads only inputs and outputs
    and so needs no label, rather than a metric of the task.

    >>> is_scorer("metric.freshness"), is_scorer("accuracy")
    (True, False)
    """
    return metric.startswith("metric.")


def is_proportion(metric: str) -> bool:
    """Whether a window metric is a share of the window's rows (a Wilson interval applies).

    >>> is_proportion("accuracy"), is_proportion("tag.stale"), is_proportion("f1_macro")
    (True, True, False)
    """
    return metric in PROPORTIONS or metric.startswith("tag.")


def classification_metrics(classes: list[str], positive_class: str | None = None) -> tuple[str, ...]:
    """Every metric a classifier is scored on from labels, in the order reports show them.

    >>> classification_metrics(["no", "yes"], "yes")[:6]
    ('accuracy', 'f1_macro', 'roc_auc', 'precision', 'recall', 'f1')
    >>> classification_metrics(["a", "b", "c"])[:5]
    ('accuracy', 'f1_macro', 'roc_auc', 'top_k_accuracy', 'precision.a')
    """
    names: list[str] = [*TASK_METRICS["classification"], "roc_auc"]
    if len(classes) > 2:
        names.append("top_k_accuracy")  # with two classes the top 2 always hold the truth
    if positive_class is not None:
        names += ["precision", "recall", "f1"]
    names += [f"{m}.{c}" for c in classes for m in ("precision", "recall", "f1")]
    return tuple(names)


# every window metric the monitor computes for a task (per-column ones are listed by pattern)
_COMMON_WINDOW_METRICS = (
    "labelled",
    "rows",
    "drift_share",
    "drift_score",
    "prediction_drift",
    "multivariate_auc",
    "multivariate_mmd",
)
WINDOW_METRICS: dict[str, tuple[str, ...]] = {
    "classification": (
        *TASK_METRICS["classification"],
        *_COMMON_WINDOW_METRICS,
        "confidence_drift",
        "mean_confidence",
        "estimated_accuracy",
        "estimated_accuracy_low",
        "estimated_accuracy_high",
        "estimated_f1_macro",
    ),
    "regression": (
        *TASK_METRICS["regression"],
        *_COMMON_WINDOW_METRICS,
        "estimated_mae",
        "estimated_mae_low",
        "estimated_mae_high",
        "error_drift",
    ),
    "extraction": (
        *TASK_METRICS["extraction"],
        *_COMMON_WINDOW_METRICS,
        "mean_confidence",
        "confidence_drift",
    ),
    "generation": (
        *TASK_METRICS["generation"],
        *_COMMON_WINDOW_METRICS,
        "output_drift",
        "novelty",
        "rating",
        "rated",
    ),
}


ENTRYPOINT = r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"  # module:function, for every setting naming one


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Window(_Model):
    """A monitoring window: a fixed number of predictions or a fixed span of time."""

    rows: int | None = None
    seconds: float | None = None

    @classmethod
    def parse(cls, value: Any) -> Window:
        """``500``, ``"500 rows"``, ``"1h"`` -> a window.

        >>> Window.parse("250 rows").rows, Window.parse("10m").seconds
        (250, 600.0)
        """
        if isinstance(value, Window):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            if value <= 0:
                raise ValueError(f"must be a positive number of rows. Got {value!r} instead")
            return cls(rows=value)
        text = str(value).strip()
        match = re.match(r"^(\d+)\s*rows?$", text)
        if match:
            return cls.parse(int(match.group(1)))
        try:
            return cls(seconds=parse_duration(text))
        except ValueError:
            raise ValueError(
                "must be a number of rows such as '1000 rows' or a positive duration such as "
                f"'1h'. Got {value!r} instead"
            ) from None

    def __str__(self) -> str:
        return f"{self.rows} rows" if self.rows else f"{self.seconds:g}s"


class FeatureSettings(_Model):
    """One input feature: its type and optional constraints."""

    type: Literal["numeric", "categorical", "text", "image"]
    required: bool = True
    min: float | None = None
    max: float | None = None
    allowed: list[str] | None = None
    max_length: int | None = None
    pii: Literal["hash", "drop"] | None = None
    embedding: str | None = Field(default=None, pattern=ENTRYPOINT)
    max_bytes: int = Field(default=5_000_000, gt=0)  # an image's file size, decoded from base64
    max_pixels: int = Field(default=16_000_000, gt=0)  # width x height, against decompression bombs

    @model_validator(mode="before")
    @classmethod
    def _text_is_embedded_by_default(cls, data: Any) -> Any:
        """A text feature is monitored through its length and, unless ``embedding = "none"``,
        the built-in hashing embedding, so new vocabulary shows as drift without any set-up."""
        if isinstance(data, dict) and data.get("type") == "text":
            chosen = data.get("embedding", DEFAULT_TEXT_EMBEDDING)
            data = {**data, "embedding": None if chosen == "none" else chosen}
        elif isinstance(data, dict) and data.get("embedding") == "none":
            data = {**data, "embedding": None}
        return data

    @field_validator("allowed", mode="before")
    @classmethod
    def _allowed_as_text(cls, value: Any) -> Any:
        # categories are text everywhere (training frames, requests, snapshots, profiles), so
        # ``allowed = [1, 2]`` means the categories "1" and "2"
        return _numbers_as_text(value)

    @model_validator(mode="after")
    def _check(self) -> FeatureSettings:
        if self.embedding is not None and self.type not in ("text", "image"):
            raise ValueError(f"'embedding' applies to text and image features only. Got type {self.type!r}")
        if self.type == "image" and self.pii:
            raise ValueError("an image feature cannot be marked 'pii'; leave it out of the schema instead")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"'min' must not exceed 'max'. Got min={self.min}, max={self.max}")
        if self.allowed is not None and self.type != "categorical":
            raise ValueError(f"'allowed' applies to categorical features only. Got type {self.type!r}")
        if (self.min is not None or self.max is not None) and self.type != "numeric":
            raise ValueError(f"'min' and 'max' apply to numeric features only. Got type {self.type!r}")
        return self


class FieldSettings(_Model):
    """One field an extractor returns (``task = "extraction"``): its type, which decides its
    normaliser and format check (``text``: case and white space; ``date``: any common format,
    compared as ISO; ``amount``: digits with two decimals, separators and currency dropped;
    ``identifier``: upper case without spaces or separators), and whether it is ``critical``
    (the gate holds it to ``gate.critical_min_f1``)."""

    type: Literal["text", "date", "amount", "identifier"] = "text"
    critical: bool = False


class ProjectSettings(_Model):
    """The model: its name, what kind of model it is (``task``), its label column and classes."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    task: Literal["classification", "regression", "generation", "extraction"] = "classification"
    target: str
    classes: list[str] = Field(default_factory=list)
    positive_class: str | None = None  # scores precision, recall and F1 for this class
    top_k: int = Field(default=2, ge=1)  # top_k_accuracy: the truth among the k likeliest classes

    @field_validator("positive_class", mode="before")
    @classmethod
    def _positive_as_text(cls, value: Any) -> Any:
        return category_text(value) if isinstance(value, int | float) else value

    @field_validator("classes", mode="before")
    @classmethod
    def _classes_as_text(cls, value: Any) -> Any:
        return _numbers_as_text(value)

    @model_validator(mode="after")
    def _classes_fit_the_task(self) -> ProjectSettings:
        if self.task == "classification" and len(set(self.classes)) < 2:
            raise ValueError(
                "The 'classes' setting of a classification project must list at least two distinct "
                f"classes. Got {self.classes} instead"
            )
        if self.task != "classification" and self.classes:
            raise ValueError(
                f"The 'classes' setting does not apply to a {self.task} project. Got {self.classes} instead"
            )
        if self.positive_class is not None and self.positive_class not in self.classes:
            raise ValueError(
                f"The 'positive_class' setting must be one of the classes {self.classes}. "
                f"Got {self.positive_class!r} instead"
            )
        if self.task == "classification" and len(self.classes) > 2 and self.top_k >= len(self.classes):
            raise ValueError(
                f"The 'top_k' setting must be smaller than the number of classes ({len(self.classes)}). "
                f"Got {self.top_k} instead"
            )
        return self


class DataSettings(_Model):
    train: str
    golden: str | None = None  # a fixed, labelled evaluation set scored in every gate decision

    @field_validator("train", "golden")
    @classmethod
    def _suffix(cls, value: str | None) -> str | None:
        if value is not None and not value.lower().endswith((".csv", ".parquet")):
            raise ValueError(f"must name a .csv or .parquet file. Got {value!r} instead")
        return value


class TrainerSettings(_Model):
    """The function that fits a model (``entrypoint``, ``module:function``) and its keyword
    arguments (``params``).

    ``refit``: ``driftloop train`` scores a fit without the validation rows on them, as always,
    then fits again on every row and registers that: the first champion learns from all of its
    data, as a retrain's winner does with ``retrain.refit``. Its validation scores and its
    monitoring reference stay those of the first fit, on rows it did not learn from."""

    entrypoint: str = Field(pattern=ENTRYPOINT)
    params: dict[str, Any] = Field(default_factory=dict)
    refit: bool = False


def no_password(url: str, setting: str, instead: str) -> None:
    """Refuse a URL with a password in it: secrets come from the environment, never the config
    file (the message names the setting and ``instead``, never the URL).

    >>> no_password("postgresql://dl@db/dl", "store.url", "PGPASSWORD")
    >>> no_password("postgresql://dl:pw@db/dl", "store.url", "set PGPASSWORD")
    Traceback (most recent call last):
    ...
    ValueError: The 'store.url' setting must not hold a password (...): take it out and set PGPASSWORD.
    """
    if urlsplit(url).password:
        raise ValueError(
            f"The '{setting}' setting must not hold a password (it would sit in the config file): "
            f"take it out and {instead}."
        )


class StoreSettings(_Model):
    url: str = "sqlite:///.driftloop/driftloop.db"
    # "full": a commit is on disk when it returns (survives power loss); "normal": it survives a
    # crash of any driftloop process, not of the machine, and skips an fsync per commit
    sqlite_synchronous: Literal["full", "normal"] = "full"
    # the versioned snapshots' folder: shared storage, at the same path on every host, when
    # servers on several hosts may resume each other's retrain runs
    snapshots: str = ".driftloop/datasets"

    @model_validator(mode="after")
    def _no_password(self) -> StoreSettings:
        no_password(
            self.url, "store.url", "set PGPASSWORD, or use a ~/.pgpass file, for every driftloop process"
        )
        return self


class RegistrySettings(_Model):
    uri: str = "sqlite:///.driftloop/mlflow.db"
    artifacts: str = ".driftloop/artifacts"
    experiment: str | None = None

    @model_validator(mode="after")
    def _no_password(self) -> RegistrySettings:
        no_password(self.uri, "registry.uri", "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD")
        return self


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
DEFAULT_TEXT_EMBEDDING = "driftloop.embeddings:hashing"


class ServingSettings(_Model):
    """How ``driftloop serve`` listens, what it accepts, and how it logs.

    Limits that keep one client from taking the server down: ``max_body_bytes`` per request,
    ``max_inflight_bytes`` of request bodies held at once and ``max_concurrent_requests``
    (503 with ``Retry-After`` past either), ``max_connections`` open at once, a request's
    headers within ``header_timeout`` and its body within ``body_timeout`` (else the
    connection is closed, or 408), and idle keep-alive connections closed after
    ``keep_alive_timeout``.

    ``allowed_hosts`` is the Host-header allow-list (DNS rebinding): loopback names by default
    when the API is open, any host when API keys are set (a page cannot forge a key).

    Limits per caller: ``rate_limit`` requests per period for each key (each client address
    when the API is open), ``rate_limits`` for named keys, 429 with ``Retry-After`` past it;
    ``auth_failures`` wrong keys from one address within ``auth_lockout`` lock that address
    out of every key check for the rest of the period.
    """

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    reload_interval: float = 2.0
    max_batch: int = Field(default=1000, ge=1)
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    max_inflight_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    max_concurrent_requests: int = Field(default=256, ge=1)
    max_connections: int = Field(default=1024, ge=1)
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    keep_alive_timeout: float = 5.0
    allowed_hosts: list[str] | None = None
    invalid_retention_rows: int = Field(default=10_000, ge=1)
    invalid_retention: float = 7 * 86400.0
    log_mode: Literal["durable", "fast"] = "durable"
    log_queue_size: int = Field(default=100_000, ge=1)
    log_writer: Literal["process", "thread"] = "process"  # where log rows are committed
    shadow_share: float = Field(default=0.0, ge=0, le=1)
    workers: int = Field(default=1, ge=1, le=64)
    predict_in: Literal["loop", "thread"] = "thread"  # where model calls run; "loop" skips a thread hop
    # merge the records of requests waiting at the same moment into one model call
    dynamic_batching: bool = True
    dynamic_batch_rows: int = Field(default=1000, ge=1)  # the most rows one merged call holds
    dynamic_batch_wait: float = 0.0  # hold the first request this long for others (0: never)
    rate_limit: str = "unlimited"  # per key, e.g. "100/s"; per client address when the API is open
    rate_limits: dict[str, str] = Field(default_factory=dict)  # key name -> its own rate
    auth_failures: int = Field(default=20, ge=1)
    auth_lockout: float = 60.0

    @field_validator(
        "reload_interval",
        "header_timeout",
        "body_timeout",
        "keep_alive_timeout",
        "invalid_retention",
        "auth_lockout",
        mode="before",
    )
    @classmethod
    def _dur(cls, value: Any) -> float:
        return parse_duration(value)

    @field_validator("rate_limit")
    @classmethod
    def _rate(cls, value: str) -> str:
        from driftloop.serving.limits import parse_rate

        parse_rate(value)
        return value.strip()

    @field_validator("rate_limits")
    @classmethod
    def _rates(cls, value: dict[str, str]) -> dict[str, str]:
        from driftloop.serving.limits import parse_rate

        for name, rate in value.items():
            try:
                parse_rate(rate)
            except ValueError as exc:
                raise ValueError(f"the rate of key {name!r} {exc}") from None
        return {name.strip().casefold(): rate.strip() for name, rate in value.items()}

    def hosts(self, keys: bool) -> list[str] | None:
        """The Host names accepted (``None``: any), as ``allowed_hosts`` or its default."""
        if self.allowed_hosts is not None:
            return None if "*" in self.allowed_hosts else list(self.allowed_hosts)
        return None if keys else list(LOOPBACK_HOSTS)

    @field_validator("dynamic_batch_wait", mode="before")
    @classmethod
    def _wait(cls, value: Any) -> float:
        zero = _DURATION.match(str(value))
        if not isinstance(value, bool) and (value in (0, "0") or (zero and float(zero.group(1)) == 0)):
            return 0.0  # "0", "0s" and "0ms" all mean: never hold a request back
        try:
            seconds = parse_duration(value)
        except ValueError:
            seconds = -1.0
        if not 0 < seconds <= 1.0:
            raise ValueError(
                f"must be 0 or a duration of at most 1s such as '2ms' (a request may wait this long). "
                f"Got {value!r} instead"
            )
        return seconds


class MonitorSettings(_Model):
    window: Window = Window(rows=1000)
    schedule: float = 60.0
    bins: int = Field(default=50, ge=2, le=1000)
    sample_size: int = Field(default=2000, ge=0)
    relabel_windows: int = Field(default=5, ge=0)
    fdr: float = Field(default=0.05, gt=0, lt=1)
    min_ks: float = Field(default=0.025, gt=0, lt=1)
    min_linf: float = Field(default=0.02, gt=0, lt=1)
    multivariate: bool = True
    min_auc_effect: float = Field(default=0.05, ge=0, lt=0.5)
    stale_after: float | None = None  # alert when no monitoring pass succeeded for this long
    commit_lag: float | None = None  # rows newer than this wait (default: 0 on SQLite, 5s elsewhere)
    mmd: bool = True
    mmd_permutations: int = Field(default=200, ge=20, le=10_000)
    mmd_max_rows: int = Field(default=500, ge=10, le=5000)

    @field_validator("window", mode="before")
    @classmethod
    def _window(cls, value: Any) -> Window:
        return Window.parse(value)

    @field_validator("schedule", mode="before")
    @classmethod
    def _dur(cls, value: Any) -> float:
        return parse_duration(value)

    @field_validator("stale_after", "commit_lag", mode="before")
    @classmethod
    def _stale(cls, value: Any) -> float | None:
        return None if value is None else parse_duration(value)


class AlertRuleSettings(_Model):
    """``metric op threshold`` for ``for_windows`` consecutive windows, then quiet for ``cooldown``.

    With ``detector`` (``page_hinkley``, ``cusum``, ``adwin`` or ``ewma``) the rule fires instead
    when that sequential detector, run over the metric's window series, detects a change at the
    newest window; ``op`` and ``threshold`` are then not needed.

    With ``relative_to = "reference"`` the threshold is a change from the champion's own
    held-out score (``accuracy``, ``f1_macro`` and their ``estimated_`` forms) or a custom
    metric's mean on the reference rows (``metric.<name>``), so ``threshold = -0.05`` fires five
    points below what the champion scored at its gate; with ``change = "fraction"`` the
    threshold is a share of it (``-0.10``: ten percent below).

    With ``over = "24h"`` the metric is the row-weighted mean of the windows that ended in the
    last 24 hours, not the newest window's alone: "mean coherence over 24 h below ...".

    A rule fires once per streak of breaching windows; ``repeat_after = N`` fires it again
    after N more windows of the same streak (say, when a retrain it queued was rejected).

    With ``confidence`` (say ``0.9``) a window breaches only when the metric's Wilson interval at
    that level, from the window's value and its number of rows, lies wholly past the threshold:
    a drop that 50 labels cannot tell from noise does not fire, the same drop over 500 does. It
    needs a proportion metric (``accuracy``, ``top_k_accuracy``, ``doc_exact_match``, a
    ``tag.<name>`` share), whose value is a share of the window's rows.
    """

    name: str
    metric: str
    op: Literal["<", "<=", ">", ">="] = "<"
    threshold: float = float("nan")
    detector: Literal["page_hinkley", "cusum", "adwin", "ewma"] | None = None
    detector_params: dict[str, float] = Field(default_factory=dict)
    relative_to: Literal["reference"] | None = None
    change: Literal["absolute", "fraction"] = "absolute"
    over: float | None = None
    repeat_after: int | None = Field(default=None, ge=1)
    for_windows: int = Field(default=1, ge=1, alias="for")
    cooldown: float = 0.0
    min_samples: int = Field(default=1, ge=1)
    confidence: float | None = Field(default=None, gt=0, lt=1)
    retrain: bool = False

    @field_validator("cooldown", mode="before")
    @classmethod
    def _dur(cls, value: Any) -> float:
        return 0.0 if value in (0, "0") else parse_duration(value)

    @field_validator("over", mode="before")
    @classmethod
    def _span(cls, value: Any) -> float | None:
        return None if value is None else parse_duration(value)

    @model_validator(mode="after")
    def _threshold_or_detector(self) -> AlertRuleSettings:
        if self.detector is None and self.threshold != self.threshold:
            raise ValueError(f"alert rule {self.name!r} needs a 'threshold' (or a 'detector')")
        if self.confidence is not None and self.detector is not None:
            raise ValueError(
                f"alert rule {self.name!r} takes a 'confidence' or a 'detector', not both. "
                f"Got detector {self.detector!r} and confidence {self.confidence:g}"
            )
        if self.confidence is not None and not is_proportion(self.metric):
            raise ValueError(
                f"The 'confidence' setting of alert rule {self.name!r} needs a proportion metric "
                f"(accuracy, top_k_accuracy, doc_exact_match or a tag.<name> share). Got {self.metric!r} "
                "instead"
            )
        return self


class CustomMetricSettings(_Model):
    """A per-prediction quality score (freshness, coherence, ...) profiled and monitored like a column.

    Without ``function`` it is sent with each request (``"metrics"`` beside ``"records"``) and
    needs ``min`` and ``max``: the range it is validated against and its fixed histogram bins.
    With ``function`` (``module:function``, called as ``function(inputs, outputs)`` on a window's
    frames and returning one number per row) the monitor computes it, also on the reference, so
    its drift is tested too.
    """

    function: str | None = Field(default=None, pattern=ENTRYPOINT)
    params: dict[str, Any] = Field(default_factory=dict)  # keyword arguments of the function
    better: Literal["higher", "lower"] = "higher"  # which way the gate counts an improvement
    kind: Literal["numeric", "categorical"] = "numeric"
    categories: list[str] = Field(default_factory=list)  # a categorical scorer's labels
    min: float | None = None
    max: float | None = None
    bins: int = Field(default=20, ge=2, le=1000)

    @model_validator(mode="after")
    def _check(self) -> CustomMetricSettings:
        if self.kind == "categorical":
            if self.function is None or len(set(self.categories)) < 2:
                raise ValueError(
                    "a categorical metric needs a 'function' (returning one label per row) and at "
                    f"least two distinct 'categories'. Got function={self.function!r}, "
                    f"categories={self.categories}"
                )
            return self
        if self.categories:
            raise ValueError(f"'categories' apply to kind = 'categorical' only. Got {self.categories}")
        if self.function is None and (self.min is None or self.max is None):
            raise ValueError(
                "a metric sent with requests needs 'min' and 'max' (its valid range and fixed bins), "
                f"or a 'function' that computes it. Got min={self.min}, max={self.max}"
            )
        if self.min is not None and self.max is not None and self.min >= self.max:
            raise ValueError(f"'min' must be below 'max'. Got min={self.min}, max={self.max}")
        if self.params and self.function is None:
            raise ValueError(f"'params' are a function's arguments; set 'function' too. Got {self.params}")
        return self


class GenerationSettings(_Model):
    """What people say about generated text (``task = "generation"``).

    ``tags`` is the vocabulary reviewers tag outputs with (``"dated"``, ``"off-topic"``, ...);
    ``bad_tags`` those that mark an output bad; ratings run from ``rating_min`` to
    ``rating_max``. A retrain learns from preferred texts (rewrites) and from outputs rated at
    least ``accept_rating`` with no bad tag (as their own targets); bad-tagged outputs are never
    targets: they are left out (``negatives = "exclude"``) or given to a trainer that takes a
    ``negatives`` argument (``"trainer"``: a frame of their inputs and texts, the text under the
    target's name).
    """

    tags: list[str] = Field(default_factory=list)
    bad_tags: list[str] = Field(default_factory=list)
    rating_min: float = 1.0
    rating_max: float = 5.0
    accept_rating: float | None = None
    negatives: Literal["exclude", "trainer"] = "exclude"

    @model_validator(mode="after")
    def _check(self) -> GenerationSettings:
        bad = [t for t in self.tags if not re.match(r"^[a-z][a-z0-9_-]{0,39}$", t)]
        if bad:
            raise ValueError(f"tags must be lower-case letters, digits, '-' and '_' (at most 40). Got {bad}")
        unknown = sorted(set(self.bad_tags) - set(self.tags))
        if unknown:
            raise ValueError(f"every bad tag must be one of the tags {self.tags}. Got {unknown}")
        if self.rating_min >= self.rating_max:
            raise ValueError(
                f"'rating_min' must be below 'rating_max'. Got {self.rating_min} and {self.rating_max}"
            )
        if self.accept_rating is not None and not self.rating_min <= self.accept_rating <= self.rating_max:
            raise ValueError(
                f"'accept_rating' must be between rating_min and rating_max. Got {self.accept_rating}"
            )
        return self


class SinkSettings(_Model):
    type: Literal["log", "webhook", "slack"]
    url: str | None = None
    url_env: str | None = None

    @model_validator(mode="after")
    def _check(self) -> SinkSettings:
        """Secrets come from the environment: a Slack webhook's URL is its secret, and a URL
        with a password in it holds one, so neither may be written in the config file."""
        if self.type != "log" and not (self.url or self.url_env):
            raise ValueError(f"a {self.type} sink needs 'url' or 'url_env' (the environment variable)")
        if self.url and self.type == "slack":
            raise ValueError(
                "a slack sink's URL is its secret, so it comes from the environment: set url_env "
                "to the name of the variable that holds it, not url"
            )
        if self.url:
            no_password(self.url, "sinks[].url", "put the URL in an environment variable named by url_env")
        return self


class CandidateSettings(_Model):
    """One candidate of a retrain run: which labelled rows a challenger learns from, and how.

    ``rows``: the newest this many labelled production rows (none: every row of the lookback);
    ``since_alert``: only rows from the triggering alert's first window on (a candidate that
    is left out when the run has no alert or too few such rows); ``replay_fraction`` and
    ``recency_half_life``: this candidate's own, else the ``[retrain]`` values.

    ``trainer`` and ``params``: this candidate's own recipe, so a run compares models as well as
    windows. ``params`` alone is merged over ``[trainer].params`` (the project's trainer with,
    say, deeper trees); with ``trainer`` (``module:function``) the candidate's ``params`` are
    that function's only keyword arguments.

    >>> c = CandidateSettings(name="deep", params={"max_depth": 8})
    >>> c.recipe(TrainerSettings(entrypoint="t:train", params={"max_depth": 3, "seed": 0}))
    {'trainer': None, 'params': {'max_depth': 8, 'seed': 0}}
    >>> CandidateSettings(name="all").recipe(TrainerSettings(entrypoint="t:train")) is None
    True
    """

    name: str = Field(pattern=r"^[A-Za-z0-9][\w.-]{0,31}$")
    rows: int | None = Field(default=None, ge=1)
    since_alert: bool = False
    replay_fraction: float | None = Field(default=None, ge=0, le=1)
    recency_half_life: float | None = None
    trainer: str | None = Field(default=None, pattern=ENTRYPOINT)
    params: dict[str, Any] | None = None

    def recipe(self, project_trainer: TrainerSettings) -> dict[str, Any] | None:
        """The trainer and keyword arguments this candidate fits with (None: the project's own)."""
        if self.trainer is None and self.params is None:
            return None
        if self.trainer is None:
            return {"trainer": None, "params": {**project_trainer.params, **(self.params or {})}}
        return {"trainer": self.trainer, "params": dict(self.params or {})}

    @field_validator("recency_half_life", mode="before")
    @classmethod
    def _half_life(cls, value: Any) -> float | None:
        return None if value is None else parse_duration(value)


class RetrainSettings(_Model):
    """What a retrain reads, and how often automatic triggers may start one.

    Triggers: ``schedule`` (cron), alert rules with ``retrain = true``, ``every_new_labels``
    (a run each time this many new labels arrived since the last run's data), ``label_growth``
    (a run once the new labels reach this multiple of the champion's training rows, whichever
    of the two comes first), and by hand.

    Every run, manual ones too, trains on at least ``min_train_rows`` rows: replay of the
    previous training data fills what the labelled production rows leave short (beyond its
    ``replay_fraction`` share), and a run that still has fewer is skipped with a sentence.

    **Evaluation out of time** (``evaluation = "out_of_time"``, the default): champion and
    challengers are scored on the newest labelled rows that came after the champion's own
    training data, which no candidate trains on; ``holdout_fraction`` of the lookback's rows,
    at least ``gate.min_eval_rows``. ``"random"`` holds out a stable hash share instead (rows
    from the same period the challenger learns from, which flatters it). An automatic trigger
    with fewer such rows than ``gate.min_eval_rows`` waits for them (up to ``max_wait``, then
    the run is skipped) instead of training a challenger the gate cannot judge.

    **Backtest** (``folds``): with ``folds = k`` the evaluation is ``k`` consecutive folds of
    that size, newest last, as many as the rows after the champion's data hold. The registered
    candidates learn from everything before the newest fold; each earlier fold is predicted by
    the same window refitted on the rows before it (nothing registered), so the gate judges on
    ``k`` times the rows, none predicted by a model that learned from it (:mod:`driftloop.backtest`).

    **Candidates**: every run trains one challenger per entry of ``candidates`` (default: all
    rows of the lookback; its newest half; its newest quarter; the rows since the alert, for an
    alert's run), and with ``previous_champions = N`` the last N champions compete again as they are
    (a concept that comes back finds its model; nothing is trained for them). All are scored on
    the same rows and only the best goes to the gate, whose significance test is corrected for
    having chosen it (``gate.choose_on = "half"`` chooses on every other row and judges on the
    rest instead). With ``refit = true`` the accepted winner's recipe is fitted again on its rows
    plus the newest evaluation fold, and that model is deployed; the run records which version
    was evaluated and which deployed.
    """

    schedule: str | None = None
    min_new_labels: int = Field(default=0, ge=0)
    every_new_labels: int | None = Field(default=None, ge=1)
    label_growth: float | None = Field(default=None, gt=0)
    cooldown: float = 0.0
    max_per_day: int | None = Field(default=None, ge=1)
    lookback: int = Field(default=5000, ge=1)
    min_train_rows: int = Field(default=200, ge=1)
    replay_fraction: float = Field(default=0.25, ge=0, le=1)
    holdout_fraction: float = Field(default=0.3, gt=0, lt=1)
    folds: int = Field(default=3, ge=1, le=20)
    previous_champions: int = Field(default=2, ge=0, le=20)
    corrected_share: float | None = Field(default=None, ge=0, le=1)
    error_oversampling: float = Field(default=0.0, ge=0, le=100)
    recency_half_life: float | None = None
    max_per_class: int | None = Field(default=None, ge=1)
    seed: int = 0
    evaluation: Literal["out_of_time", "random"] = "out_of_time"
    candidates: list[CandidateSettings] | None = None
    refit: bool = False
    max_wait: float = 7 * 86400.0

    @field_validator("cooldown", mode="before")
    @classmethod
    def _dur(cls, value: Any) -> float:
        return 0.0 if value in (0, "0") else parse_duration(value)

    @field_validator("max_wait", mode="before")
    @classmethod
    def _wait(cls, value: Any) -> float:
        return parse_duration(value)

    @field_validator("candidates")
    @classmethod
    def _distinct(cls, value: list[CandidateSettings] | None) -> list[CandidateSettings] | None:
        if value is not None:
            if not value:
                raise ValueError('needs at least one candidate, such as [{ name = "all" }]')
            names = [c.name for c in value]
            if len(set(names)) != len(names):
                raise ValueError(f"candidate names must differ. Got {names}")
        return value

    def candidate_windows(self) -> list[CandidateSettings]:
        """The configured candidates, else the default four (small enough for a laptop)."""
        if self.candidates is not None:
            return self.candidates
        return [
            CandidateSettings(name="all"),
            CandidateSettings(name="half", rows=max(self.min_train_rows, self.lookback // 2)),
            CandidateSettings(name="recent", rows=max(self.min_train_rows, self.lookback // 4)),
            CandidateSettings(name="since-alert", since_alert=True),
        ]

    @field_validator("recency_half_life", mode="before")
    @classmethod
    def _half_life(cls, value: Any) -> float | None:
        return None if value is None else parse_duration(value)


class RolloutSettings(_Model):
    """Canary rollout of an accepted challenger before promotion.

    With ``canary_steps`` (shares of traffic, increasing, such as ``[0.1, 0.5]``) the challenger
    answers that share of requests, assigned stably by request key, one step at a time. A step
    passes when its canary traffic has ``step_labels`` labels and the challenger's accuracy on
    them is within ``tolerance`` of the champion's on the same period; an alert during the step,
    or a worse challenger, rolls the canary back (the champion stays). A step that gets no
    labelled canary traffic within ``step_timeout`` fails too. Empty: promote at once.
    """

    canary_steps: list[float] = Field(default_factory=list)
    step_labels: int = Field(default=100, ge=1)
    tolerance: float = Field(default=0.03, ge=0, lt=1)
    step_timeout: float = 3600.0
    check_interval: float = 5.0

    @field_validator("step_timeout", "check_interval", mode="before")
    @classmethod
    def _dur(cls, value: Any) -> float:
        return parse_duration(value)

    @field_validator("canary_steps")
    @classmethod
    def _steps(cls, value: list[float]) -> list[float]:
        if any(not 0 < v < 1 for v in value) or any(b <= a for a, b in pairwise(value)):
            raise ValueError(
                f"must be increasing shares between 0 and 1, such as [0.1, 0.5]. Got {value} instead"
            )
        return value


ReviewStrategy = Literal["uncertain", "disagreement", "unusual", "low_score", "audit"]


def _default_strategies() -> dict[ReviewStrategy, float]:
    return {"uncertain": 0.6, "disagreement": 0.1, "unusual": 0.1, "audit": 0.2}


class ReviewSettings(_Model):
    """The review queue: which predictions deserve a person's time.

    ``strategies`` mixes shares (summing to 1) of ``uncertain`` (the least sure predictions by
    ``uncertainty``: ``least`` confidence, smallest ``margin`` between the top two classes, or
    highest ``entropy``), ``disagreement`` (the shadow challenger answered otherwise),
    ``unusual`` (inputs the champion's reference rarely saw: the largest surprisal of a value's
    histogram bin or category, :func:`driftloop.profiles.rarity`), ``low_score`` (the outputs
    a scorer, ``score_metric``, rates worst: a generator's stalest posts) and ``audit`` (a uniform
    random share that keeps the estimate of accuracy honest). At most ``daily_budget`` items are
    queued per day; an item unanswered for ``expire_after`` leaves the queue. ``overlap`` of the
    items go to two reviewers, whose agreement (Cohen's kappa) is measured; a reviewer below
    ``min_agreement`` over at least ``min_overlap_items`` items is flagged (judged against the
    trusted sources' labels where there are that many, since two reviewers alone cannot say
    which of them is wrong; else against the other reviewers) and, with ``quarantine = true``,
    quarantined by the next monitoring pass: their labels are no longer used (as with
    ``feedback.quarantined_sources``) until ``driftloop reviewers --release NAME``.
    """

    strategies: dict[ReviewStrategy, float] = Field(default_factory=_default_strategies)
    uncertainty: Literal["least", "margin", "entropy"] = "least"
    daily_budget: int = Field(default=200, ge=1)
    expire_after: float = 2 * 86400.0
    overlap: float = Field(default=0.1, ge=0, le=1)
    min_agreement: float = Field(default=0.6, ge=-1, le=1)
    min_overlap_items: int = Field(default=20, ge=1)
    quarantine: bool = False
    score_metric: str | None = None  # the custom metric with a function that low_score ranks by

    @field_validator("expire_after", mode="before")
    @classmethod
    def _dur(cls, value: Any) -> float:
        return parse_duration(value)

    @field_validator("strategies")
    @classmethod
    def _shares(cls, value: dict[ReviewStrategy, float]) -> dict[ReviewStrategy, float]:
        if any(v < 0 for v in value.values()) or abs(sum(value.values()) - 1.0) > 1e-6:
            raise ValueError(f"the shares must be at least 0 and sum to 1. Got {value}")
        return value


class WatchSettings(_Model):
    """The post-deploy watch, paired: after a promotion, the previous champion scores the same
    live rows the new one served (its predictions made from the logged inputs), and the two are
    compared with the task's paired test on the rows that got labels, on ``metric`` (by default
    the gate's primary metric, so a promotion is watched on what it was promoted for). A scorer
    (``metric.<name>``) needs no label: it scores both models' outputs on every row the new one
    served, the first ``max_rows`` of them, so a generator is judged without waiting for
    reviewers. The promotion is rolled back only on significant evidence of harm: the new model
    worse by more than ``tolerance`` with a p-value below ``alpha``; else it is kept.

    The verdict comes once the first ``windows`` windows are in and they hold at least
    ``min_labels`` labelled rows (served rows, for a scorer); with fewer, the label-free
    estimates of both may raise the question (an alert), never decide it, and after
    ``max_windows`` windows the model is kept. ``windows = 0`` turns the watch off.

    A kept model whose live score proved better than its held-out score has its reference
    raised: when, on at least as many labelled rows as the held-out score had, the one-sided
    bootstrap bound of the live score at ``anchor_confidence`` (below it for a score, above it
    for an error) is better than the held-out score, alert rules ``relative_to = "reference"``
    on that metric (and on the watch's) judge the windows after the watch against the bound.
    A gate that judged a young concept on few of its rows scores the winner below what it
    serves at, and a rule five points below that score would stay silent through a real fall.
    The reference is never lowered this way: a concept change right after a promotion lowers
    the live score too, and is what the rule is there to catch. ``anchor_confidence = 0``
    turns it off.
    """

    windows: int = Field(default=3, ge=0)
    max_windows: int = Field(default=12, ge=1)
    min_labels: int = Field(default=50, ge=1)
    max_rows: int = Field(default=1000, ge=1)
    tolerance: float = Field(default=0.0, ge=0)
    alpha: float = Field(default=0.05, gt=0, lt=1)
    metric: str = "accuracy"
    anchor_confidence: float = Field(default=0.95, ge=0, lt=1)


class ArchiveSettings(_Model):
    """Where closed windows' rows go when they leave the store (see :mod:`driftloop.archive`).

    ``url``: a folder (relative to the config file) or an fsspec URL such as
    ``s3://bucket/driftloop`` (the ``s3`` extra; credentials come from the environment, as
    s3fs reads them, never from this file). ``after``: each monitoring pass moves the rows of
    closed windows older than this to the archive (none: only ``driftloop archive`` does); a
    prediction takes feedback until it is archived. ``retention``: archived batches older than
    this are deleted (none: kept). ``dask_scheduler``: the address ``driftloop drift --engine
    dask`` connects to (none: a cluster on this machine).
    """

    url: str = ".driftloop/archive"
    after: float | None = None
    retention: float | None = None
    batch_rows: int = Field(default=100_000, ge=100, le=10_000_000)
    dask_scheduler: str | None = None

    @field_validator("after", "retention", mode="before")
    @classmethod
    def _durations(cls, value: Any) -> float | None:
        return None if value is None else parse_duration(value)

    @model_validator(mode="after")
    def _check(self) -> ArchiveSettings:
        if self.after is not None and self.retention is not None and self.retention <= self.after:
            raise ValueError(
                f"retention ({self.retention:g}s) must be longer than after ({self.after:g}s): "
                "rows would be deleted before they were archived"
            )
        return self


class FeedbackSettings(_Model):
    """How labels become training and monitoring truth.

    ``conflict_rule`` picks one label when a prediction has several: the ``latest``, the
    ``majority`` (ties to the latest) or the latest from a ``trusted_sources`` source (else the
    latest). Labels from ``quarantined_sources`` are never used, only counted.
    """

    conflict_rule: Literal["latest", "majority", "trusted"] = "latest"
    trusted_sources: list[str] = Field(default_factory=list)
    quarantined_sources: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> FeedbackSettings:
        if self.conflict_rule == "trusted" and not self.trusted_sources:
            raise ValueError("conflict_rule 'trusted' needs at least one entry in 'trusted_sources'")
        both = sorted(set(self.trusted_sources) & set(self.quarantined_sources))
        if both:
            raise ValueError(f"a source cannot be both trusted and quarantined. Got {both} in both")
        return self


class GateSettings(_Model):
    """The explicit policy a challenger must pass. Metric names are the task's (accuracy and
    f1_macro for classification; mae, rmse, mape, r2, abs_error_p50, abs_error_p90 for
    regression); ``primary_metric`` defaults to the task's first. For an error metric
    ``min_improvement`` is how much it must fall and ``min_value`` is a ceiling.

    **How many rows decide.** ``min_eval_rows`` is the floor. With ``min_effect`` (a change of a
    proportion metric such as accuracy worth detecting, e.g. ``0.05``), the gate needs as many
    rows as a two-sided test at ``alpha`` needs to see that change with probability ``power``,
    from the champion's own held-out score (see :func:`driftloop.gate.rows_needed`); automatic
    triggers wait for them, so with few labels retrains are rarer and each is judged.

    **Choosing among candidates** (``choose_on``): ``"all"`` scores every candidate on all the
    evaluation rows, and the one-sided p-value of the winner's improvement is corrected for
    having chosen it (max-T by sign flips, :func:`driftloop.evaluation.max_t`); ``"half"``
    chooses on every other row and judges on the rest, so the recorded estimate is free of the
    winner's curse, at the cost of half the rows for each (on the project's drifting streams it
    chose worse: see docs/architecture.md).

    **Significance** (``require_significance``): the corrected one-sided p-value must be below
    ``alpha``. ``alpha = 0.05`` asks for strong evidence; ``alpha = 0.5`` asks only that the winner
    gain more than the luckiest of equally good candidates would by chance, which removes the
    winner's curse from the point-estimate rule and costs little power.

    **Newest fold** (``max_newest_fold_regression``, with a backtest): the challenger may lose
    to the champion on the newest fold by at most this much, so a window that wins over the
    whole backtest on a concept that has just ended is not promoted into the new one (a value
    above any possible loss, such as 1 for accuracy, turns the rule off)."""

    primary_metric: str = "accuracy"
    min_improvement: float = 0.0
    max_regression: dict[str, float] = Field(default_factory=dict)
    min_value: dict[str, float] = Field(default_factory=dict)
    min_eval_rows: int = Field(default=50, ge=1)
    slices: list[str] = Field(default_factory=list)
    max_slice_regression: float | None = Field(default=None, ge=0)
    min_slice_rows: int = Field(default=30, ge=1)
    require_significance: bool = False
    alpha: float = Field(default=0.05, gt=0, lt=1)
    min_effect: float | None = Field(default=None, gt=0, lt=1)
    power: float = Field(default=0.8, gt=0, lt=1)
    choose_on: Literal["all", "half"] = "all"
    judge: str | None = Field(default=None, pattern=ENTRYPOINT)
    judge_min_win_rate: float = Field(default=0.5, ge=0, le=1)
    critical_min_f1: float | None = Field(
        default=None, ge=0, le=1
    )  # extraction: floor of each critical field
    max_field_regression: float | None = Field(default=None, ge=0)  # extraction: the largest field F1 drop
    max_newest_fold_regression: float | None = Field(default=0.0, ge=0)  # a backtest's newest fold


class Settings(_Model):
    """Everything in one driftloop.toml, with paths resolved against the file's folder."""

    root: Path
    project: ProjectSettings
    features: dict[str, FeatureSettings] = Field(min_length=1)
    data: DataSettings
    trainer: TrainerSettings
    store: StoreSettings = StoreSettings()
    registry: RegistrySettings = RegistrySettings()
    serving: ServingSettings = ServingSettings()
    monitor: MonitorSettings = MonitorSettings()
    metrics: dict[str, CustomMetricSettings] = Field(default_factory=dict)
    alerts: list[AlertRuleSettings] = Field(default_factory=list)
    sinks: list[SinkSettings] = Field(default_factory=lambda: [SinkSettings(type="log")])
    retrain: RetrainSettings = RetrainSettings()
    feedback: FeedbackSettings = FeedbackSettings()
    archive: ArchiveSettings = ArchiveSettings()
    gate: GateSettings = GateSettings()
    watch: WatchSettings = WatchSettings()
    review: ReviewSettings = ReviewSettings()
    rollout: RolloutSettings = RolloutSettings()
    generation: GenerationSettings = GenerationSettings()
    fields: dict[str, FieldSettings] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _task_defaults(cls, data: Any) -> Any:
        """The gate's primary metric defaults to the task's first metric, and the watch's metric to
        the gate's primary one: a promotion is watched on what it was promoted for (a generator
        promoted on a scorer is not rolled back on its word overlap with rewrites)."""
        if not isinstance(data, dict) or not isinstance(data.get("project"), dict):
            return data
        first = TASK_METRICS.get(str(data["project"].get("task", "classification")), ("accuracy",))[0]
        data = dict(data)
        gate, watch = data.get("gate", {}), data.get("watch", {})
        if isinstance(gate, dict) and "primary_metric" not in gate:
            data["gate"] = gate = {**gate, "primary_metric": first}
        if isinstance(watch, dict) and "metric" not in watch:
            primary = gate.get("primary_metric", first) if isinstance(gate, dict) else first
            data["watch"] = {**watch, "metric": primary}
        return data

    @model_validator(mode="after")
    def _cross_checks(self) -> Settings:
        if self.project.target in self.features:
            raise ValueError(f"the target {self.project.target!r} must not also be listed under [features]")
        bad = [m for m in self.metrics if not re.match(r"^[A-Za-z][A-Za-z0-9_]{0,39}$", m)]
        if bad:
            raise ValueError(
                "custom metric names must be letters, digits and underscores (at most 40, starting "
                f"with a letter). Got {bad}"
            )
        scorer = self.metrics.get(self.review.score_metric or "")
        if self.review.strategies.get("low_score", 0) > 0 and (
            scorer is None or scorer.function is None or scorer.kind != "numeric"
        ):
            computed = sorted(n for n, m in self.metrics.items() if m.function and m.kind == "numeric")
            raise ValueError(
                "The 'review.score_metric' setting must name a numeric custom metric with a function "
                f"when the low_score strategy has a share: one of {computed}. "
                f"Got {self.review.score_metric!r} instead"
            )
        after = self.archive.after
        if after is not None and after < self.review.expire_after:
            raise ValueError(
                f"The 'archive.after' setting must be at least 'review.expire_after' "
                f"({self.review.expire_after:g}s): a queued review item's prediction must stay in the "
                f"store until the item expires. Got {after:g}s instead"
            )
        names = [rule.name for rule in self.alerts]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"alert rule names must be unique. Got {duplicates} more than once")
        task = self.project.task
        if (task == "extraction") != bool(self.fields):
            raise ValueError(
                "an extraction project needs [fields.<name>] (the fields it extracts), and only an "
                f"extraction project has them. Got task {task!r} with fields {sorted(self.fields)}"
            )
        bad_fields = [f for f in self.fields if not re.match(r"^[A-Za-z][A-Za-z0-9_]{0,39}$", f)]
        if bad_fields:
            raise ValueError(f"field names must be letters, digits and underscores. Got {bad_fields}")
        scored = self.scored_metrics()
        for key, metric in (
            ("gate.primary_metric", self.gate.primary_metric),
            ("watch.metric", self.watch.metric),
            *((f"gate.max_regression.{m}", m) for m in self.gate.max_regression),
            *((f"gate.min_value.{m}", m) for m in self.gate.min_value),
        ):
            if metric not in scored:
                raise ValueError(
                    f"The '{key}' setting must name a metric a {task} project scores: {list(scored)}. "
                    f"Got {metric!r} instead"
                )
        known = self.window_metrics()
        for i, rule in enumerate(self.alerts):
            if not self.is_window_metric(rule.metric):
                raise ValueError(
                    f"The 'metric' setting of alerts[{i}] {rule.name!r} must name a metric driftloop "
                    f"computes per window. Got {rule.metric!r} instead; known metrics are "
                    f"{sorted(known)}"
                )
        return self

    def profiled_columns(self) -> list[str]:
        """The columns monitoring profiles: features as they are, text as its length and, with an
        embedding, its dimensions ``name.e0`` ... (pii features are never profiled)."""
        columns: list[str] = []
        for name, feature in self.features.items():
            if feature.pii:
                continue
            if feature.type == "text":
                columns.append(f"{name}.length")
            elif feature.type == "image":
                from driftloop.images import DESCRIPTORS

                columns += [f"{name}.{d}" for d in DESCRIPTORS]
            else:
                columns.append(name)
        return columns

    def scored_metrics(self) -> tuple[str, ...]:
        """Every metric the project's task scores from labels (the gate can judge any of them)."""
        computed = tuple(
            f"metric.{n}" for n, m in self.metrics.items() if m.function is not None and m.kind == "numeric"
        )
        if self.project.task == "classification":
            return classification_metrics(list(self.project.classes), self.project.positive_class) + computed
        if self.project.task == "extraction":
            per_field = tuple(
                f"{m}.{f}" for f in self.fields for m in ("f1", "precision", "recall", "exact_f1")
            )
            return TASK_METRICS["extraction"] + per_field + computed
        return TASK_METRICS[self.project.task] + computed

    def lower_is_better(self, task_lower: frozenset[str]) -> frozenset[str]:
        """The task's error metrics plus the custom metrics configured with ``better = "lower"``."""
        return task_lower | {f"metric.{n}" for n, m in self.metrics.items() if m.better == "lower"}

    def window_metrics(self) -> set[str]:
        """Every metric name an alert rule can watch for this project."""
        known = set(WINDOW_METRICS[self.project.task])
        if self.project.task == "classification":  # each also estimated by CBPE, with its band
            for m in self.scored_metrics():
                known |= {m, f"estimated_{m}", f"estimated_{m}_low", f"estimated_{m}_high"}
        for column in self.profiled_columns():
            known |= {f"drift.{column}", f"psi.{column}", f"missing.{column}"}
        for name, feature in self.features.items():
            if feature.type == "text" and not feature.pii:
                known.add(f"vocabulary.{name}")  # the Jensen-Shannon distance of its terms
        for name, spec in self.metrics.items():
            if spec.kind == "categorical":  # the share of each label, and the distribution's drift
                known |= {f"metric.{name}.{c}" for c in spec.categories} | {f"drift.metric.{name}"}
                continue
            known |= {f"metric.{name}", f"drift.metric.{name}", f"scored.{name}"}
        if self.project.task == "generation":
            known |= {f"tag.{t}" for t in self.generation.tags}
        if self.project.task == "extraction":  # from labels, and per field without them
            known |= set(self.scored_metrics())
            for f in self.fields:
                known |= {f"{m}.{f}" for m in ("presence", "confidence", "validity")}
                known |= {f"estimated_precision.{f}{s}" for s in ("", "_low", "_high")}
                known |= {f"drift.field.{f}.{c}" for c in ("presence", "confidence", "length", "valid")}
        return known

    def is_window_metric(self, metric: str) -> bool:
        """``metric`` is computed per window (embedding dimensions ``drift.body.e3`` included)."""
        if metric in self.window_metrics():
            return True
        match = re.match(r"^(drift|psi|missing)\.(.+)\.e\d+$", metric)
        feature = self.features.get(match.group(2)) if match else None
        return bool(feature and feature.embedding and not feature.pii)

    # -- loading ---------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any], root: str | Path = ".", source: str = "config") -> Settings:
        """Validate a parsed config; raise one :class:`ConfigError` listing every problem."""
        raw = dict(data)
        raw["root"] = Path(root).resolve()
        try:
            settings = cls.model_validate(raw)
        except ValidationError as exc:
            problems = [_sentence(error, source, raw) for error in exc.errors()]
            message = "\n".join(problems)
            raise ConfigError(message, problems) from None
        return settings._resolved()

    @classmethod
    def load(cls, path: str | Path = "driftloop.toml") -> Settings:
        """Read and validate a driftloop.toml file."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(
                f"The config file '{path}' must exist. Run 'driftloop init' to create one, "
                "or pass --config PATH."
            )
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"The config file '{path}' must be valid TOML. {exc}.") from None
        return cls.from_dict(data, root=path.resolve().parent, source=path.name)

    def _resolved(self) -> Settings:
        def url(value: str) -> str:
            prefix = "sqlite:///"
            if value.startswith(prefix) and not value.startswith(prefix + "/"):
                return prefix + str(self.root / value[len(prefix) :])
            return value

        return self.model_copy(
            update={
                "store": self.store.model_copy(
                    update={"url": url(self.store.url), "snapshots": str(self.path(self.store.snapshots))}
                ),
                "archive": self.archive.model_copy(
                    update={
                        "url": self.archive.url
                        if "://" in self.archive.url
                        else str(self.path(self.archive.url))
                    }
                ),
                "registry": self.registry.model_copy(
                    update={
                        "uri": url(self.registry.uri),
                        "artifacts": str(self.path(self.registry.artifacts)),
                    }
                ),
            }
        )

    # -- helpers -----------------------------------------------------------------------------
    def path(self, relative: str) -> Path:
        """A path from the config resolved against the config file's folder."""
        p = Path(relative)
        return p if p.is_absolute() else self.root / p

    @property
    def state_dir(self) -> Path:
        """``.driftloop/`` beside the config: databases, snapshots, artifacts."""
        return self.root / ".driftloop"

    @property
    def workflow_db_url(self) -> str:
        """The DBOS system database: beside the store (SQLite) or the same server (PostgreSQL)."""
        if self.store.url.startswith("sqlite"):
            return "sqlite:///" + str(self.state_dir / "workflows.sqlite")
        return self.store.url

    def sink_url(self, sink: SinkSettings) -> str | None:
        """The sink's URL: from the config, or from the named environment variable (secrets)."""
        if sink.url_env:
            return os.environ.get(sink.url_env)
        return sink.url


def _location(parts: tuple[Any, ...], raw: dict[str, Any]) -> tuple[str, str]:
    """``("alerts", 1, "threshold")`` -> ``("threshold", " of alerts[1] 'accuracy-drop'")``: a key
    inside a list item is named with the item's index and, for alert rules and sinks, its name."""
    owner, key = "", list[str]()
    node: Any = raw
    for part in parts:
        if isinstance(part, int):
            item = node[part] if isinstance(node, list) and part < len(node) else None
            label = (item.get("name") or item.get("type")) if isinstance(item, dict) else None
            owner = ".".join(key) + f"[{part}]" + (f" {label!r}" if isinstance(label, str) else "")
            key, node = [], item
        else:
            key.append(str(part))
            node = node.get(part) if isinstance(node, dict) else None
    return ".".join(key), f" of {owner}" if owner else ""


def _sentence(error: Any, source: str, raw: dict[str, Any] | None = None) -> str:
    """One pydantic error -> one sentence naming the key, the rule and the value seen."""
    key, owner = _location(tuple(error["loc"]), raw or {})
    loc = key or "(top level)"
    msg = str(error["msg"]).removeprefix("Value error, ")
    if msg.startswith("The '"):  # a check that words its own sentence
        return msg if msg.endswith(".") else msg + "."
    kind = error["type"]
    value = error.get("input")
    if not key and owner:  # a check of the whole item
        return f"The setting {owner.removeprefix(' of ')} in {source} is invalid: {msg}."
    if kind == "missing":
        return f"The '{loc}' setting{owner} in {source} is required but missing."
    if kind == "extra_forbidden":
        return f"The '{loc}' setting{owner} in {source} is not a known setting. Check its spelling."
    if " Got " in msg:
        return f"The '{loc}' setting{owner} in {source} {msg}."
    shown = value if not isinstance(value, dict) else "a table"
    return (
        f"The '{loc}' setting{owner} in {source} is invalid: {msg[0].lower() + msg[1:]}. "
        f"Got {shown!r} instead."
    )
