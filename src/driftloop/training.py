"""The Trainer protocol; runs the user's trainer; logs and registers the result.

A trainer is any function ``train(X: pandas.DataFrame, y: pandas.Series, **params)`` that
returns a fitted classifier with ``predict_proba`` and ``classes_`` (a scikit-learn
estimator or pipeline, or anything shaped like one). It is named in driftloop.toml as
``module:function``, imported relative to the project folder.
"""

from __future__ import annotations

import inspect
import subprocess
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from driftloop.candidates import FOLD
from driftloop.custom import metric_frame, metric_spec
from driftloop.datasets import Dataset, file_sha256, read_table, stable_fraction, write_snapshot
from driftloop.exceptions import ConfigError, SchemaError, TrainerError
from driftloop.plugins import load_function
from driftloop.profiles import Profile, ProfileSpec
from driftloop.profiles.terms import TermCounts
from driftloop.project import Project
from driftloop.sampling import WEIGHT, resample_by_weight
from driftloop.tasks import ROW, Predictions, predictions_frame, read_predictions

__all__ = [
    "TrainResult",
    "Trainer",
    "build_reference",
    "fit_and_register",
    "fit_model",
    "load_trainer",
    "snapshot_training_data",
    "train",
]

VALIDATION_SHARE = 0.2


class Trainer(Protocol):
    def __call__(self, X: pd.DataFrame, y: pd.Series, **params: Any) -> Any: ...


@dataclass(frozen=True)
class TrainResult:
    version: str
    dataset: Dataset
    metrics: dict[str, float]
    champion: bool
    validated_by: str | None = None  # trainer.refit: the fit the validation scores are of


def load_trainer(entrypoint: str, project: Project) -> Callable[..., Any]:
    """Import ``module:function``, with the project folder first on ``sys.path``."""
    return load_function(entrypoint, project.settings.root, "trainer.entrypoint")


def labelled_frame(project: Project, df: pd.DataFrame, what: str) -> pd.DataFrame:
    """Schema columns plus the target as strings; rows with unknown labels are an error."""
    target = project.settings.project.target
    if target not in df.columns:
        raise SchemaError(
            f"The {what} must have the target column '{target}'. Got columns {sorted(map(str, df.columns))}."
        )
    X = project.schema.frame(df, decode=False)  # as stored: an image stays its base64 text
    X[target] = project.task.targets(df[target], what).to_numpy()
    return X


def snapshot_training_data(project: Project) -> Dataset:
    """Snapshot the configured training file as a content-addressed dataset."""
    path = project.settings.path(project.settings.data.train)
    raw = read_table(path)
    for name in project.schema.images:  # a folder of pictures plus a labels file: inline them
        if name in raw.columns:
            from driftloop.images import inline

            try:
                raw[name] = inline(
                    raw[name].tolist(), path.parent, f"Image feature '{name}' of '{path.name}'"
                )
            except ValueError as exc:
                raise SchemaError(f"{exc}.") from None
    df = labelled_frame(project, raw, f"training data '{path.name}'")
    df["__key__"] = [f"train:{i}" for i in range(len(df))]
    target = project.settings.project.target
    manifest = {
        "kind": "train",
        "sources": [{"type": "file", "path": str(path), "sha256": file_sha256(path), "rows": len(df)}],
        "class_counts": label_counts(project, df[target]),
    }
    return record_snapshot(project, df, manifest)


def record_snapshot(
    project: Project, df: pd.DataFrame, manifest: dict[str, Any], *, add: bool = True
) -> Dataset:
    """Write ``df`` as a content-addressed snapshot (``manifest["kind"]`` says train or eval) and,
    with ``add``, record it in the store (idempotent: the same rows are the same dataset)."""
    dataset = write_snapshot(Path(project.settings.store.snapshots), df, manifest)
    if add:
        record_dataset(project, dataset)
    return dataset


def record_dataset(project: Project, dataset: Dataset) -> None:
    project.store.add_dataset(
        id=dataset.id,
        model=project.name,
        kind=dataset.manifest["kind"],
        path=str(dataset.path),
        rows=dataset.rows,
        manifest=dataset.manifest,
    )


def label_counts(project: Project, labels: pd.Series) -> dict[str, int]:
    """Rows per class for a manifest (a task without classes: just the row count)."""
    if not project.task.classes:
        return {"rows": len(labels)}
    return {str(k): int(v) for k, v in labels.astype(str).value_counts().sort_index().items()}


def class_column(project: Project) -> str | None:
    """The target, when it holds classes (rare classes are kept out of validation splits)."""
    return project.settings.project.target if project.task.classes else None


def golden_frame(project: Project) -> pd.DataFrame:
    """The fixed golden evaluation set (``data.golden``), keyed ``golden:<row>``; empty if none."""
    path = project.settings.data.golden
    if path is None:
        return pd.DataFrame()
    df = labelled_frame(
        project, read_table(project.settings.path(path), "data.golden"), f"golden set '{path}'"
    )
    return df.assign(__key__=[f"golden:{i}" for i in range(len(df))])


MIN_CLASS_ROWS = 5  # a class with fewer rows is never held out: the trainer needs all of them


def split_validation(df: pd.DataFrame, target: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stable split by row key: the same rows are always held out. With ``target`` (a class
    column), the rows of a class with fewer than ``MIN_CLASS_ROWS`` rows all stay in training."""
    mask = df["__key__"].map(lambda k: stable_fraction(str(k)) < VALIDATION_SHARE).to_numpy(bool)
    if target is not None and target in df:
        counts = df[target].astype(str).value_counts()
        rare = set(counts[counts < MIN_CLASS_ROWS].index)
        if rare:
            mask = mask & ~df[target].astype(str).isin(rare).to_numpy()
    return df[~mask], df[mask]


def _git_revision(project: Project) -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=project.settings.root, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


NEGATIVE = "__negative__"  # a generator's bad-tagged output in a training snapshot


def fit_model(
    project: Project,
    train_df: pd.DataFrame,
    trainer: str | None = None,
    params: dict[str, Any] | None = None,
) -> Any:
    """Run the trainer (``trainer``, else the project's) with its keyword arguments (``params``,
    else ``[trainer].params``) on a training snapshot's rows (weights, negatives and dtypes as
    serving passes them) and check what it returns; nothing is registered."""
    entrypoint = trainer or project.settings.trainer.entrypoint
    kwargs = project.settings.trainer.params if params is None else params
    fit = load_trainer(entrypoint, project)
    target = project.settings.project.target
    extra: dict[str, Any] = {}
    if NEGATIVE in train_df:  # bad-tagged outputs: a frame of inputs and texts for a trainer that takes them
        bad = train_df[NEGATIVE].fillna(False).astype(bool).to_numpy()
        negatives, train_df = train_df[bad], train_df[~bad].drop(columns=[NEGATIVE])
        if "negatives" in inspect.signature(fit).parameters:
            extra["negatives"] = project.schema.frame(negatives).assign(
                **{target: negatives[target].to_numpy()}
            )
        if WEIGHT in train_df:
            train_df = train_df.assign(**{WEIGHT: train_df[WEIGHT].fillna(1.0)})
    if WEIGHT in train_df:  # sampling weights: passed when the trainer takes them, else realised
        if "sample_weight" in inspect.signature(fit).parameters:
            extra["sample_weight"] = train_df[WEIGHT].to_numpy("float64")
        else:
            train_df = resample_by_weight(train_df, seed=0)
    # the trainer sees exactly the dtypes serving will pass to predict_proba
    y = project.task.targets(train_df[target], "training data")
    try:
        model = fit(project.schema.frame(train_df), y, **kwargs, **extra)
    except Exception as exc:
        counts = label_counts(project, y)
        rare = sorted(c for c, n in counts.items() if n < 2) if project.task.classes else []
        hint = (
            f" Class(es) {rare} have a single training row, which breaks stratified splits and "
            "cross-validation inside a trainer; gather more rows of them or drop them from project.classes."
            if rare
            else ""
        )
        raise TrainerError(
            f"The trainer {entrypoint!r} failed on {len(train_df)} rows ({counts}): "
            f"{type(exc).__name__}: {str(exc)[:500]}.{hint}"
        ) from exc
    project.task.check_model(model, entrypoint)
    return model


def fit_and_register(
    project: Project,
    train_df: pd.DataFrame,
    valid_df: pd.DataFrame,
    *,
    dataset_id: str,
    run_key: str,
    trainer: str | None = None,
    params: dict[str, Any] | None = None,
    validated: tuple[dict[str, float], int] | None = None,
    tags: dict[str, str] | None = None,
) -> tuple[str, dict[str, float]]:
    """Fit the trainer (``trainer`` and ``params`` as :func:`fit_model` takes them) and register
    a version with ``tags``, once per ``run_key`` (a replay finds it). ``validated``: the
    validation scores and row count already measured by a fit without those rows, for a refit on
    all of them."""
    registry, name = project.registry, project.name
    existing = registry.find(name, "driftloop.run_key", run_key)
    if existing is not None:
        return existing, registry.metrics(name, existing)
    entrypoint = trainer or project.settings.trainer.entrypoint
    target = project.settings.project.target
    model = fit_model(project, train_df, trainer, params)
    scores: dict[str, float] = {}
    if validated is not None:
        scores = {f"validation_{k}": v for k, v in validated[0].items()}
    elif len(valid_df):
        out = project.task.predict(model, project.schema.frame(valid_df))
        metrics = project.task.metrics(valid_df[target].to_numpy(), out.labels, out.probabilities)
        scores = {f"validation_{k}": v for k, v in metrics.items()}
    tags = {
        **(tags or {}),
        "driftloop.run_key": run_key,
        "driftloop.dataset": dataset_id,
        "driftloop.trainer": entrypoint,
        "driftloop.git_revision": _git_revision(project),
        "driftloop.run_name": f"{name}-{run_key}",
    }
    logged = {
        **(project.settings.trainer.params if params is None else params),
        "train_rows": len(train_df)
        - (int(train_df[NEGATIVE].fillna(False).astype(bool).sum()) if NEGATIVE in train_df else 0),
        "validation_rows": validated[1] if validated is not None else len(valid_df),
    }
    version = registry.register(name, model, params=logged, metrics=scores, tags=tags)
    return version, scores


def train(project: Project, *, force_champion: bool = False) -> TrainResult:
    """``driftloop train``: snapshot, fit, register; alias ``champion`` if none exists."""
    dataset = snapshot_training_data(project)
    df = dataset.load()
    train_df, valid_df = split_validation(df, class_column(project))
    run_key = f"train-{uuid.uuid4().hex[:12]}"
    validated_by = None
    if project.settings.trainer.refit and len(valid_df) and len(train_df):
        version, scores, validated_by = _validate_then_refit(
            project, dataset, df, train_df, valid_df, run_key
        )
    else:
        version, scores = fit_and_register(
            project, train_df, valid_df, dataset_id=dataset.id, run_key=run_key
        )
    previous = project.champion()
    champion = force_champion or previous is None
    if champion:
        project.registry.set_alias(project.name, "champion", version)
        project.store.add_promotion(
            model=project.name,
            action="initial",
            from_version=previous,
            to_version=version,
            run_id=None,
            reason="first trained version",
        )
        build_reference(project, version)
    return TrainResult(version, dataset, scores, champion, validated_by)


def _validate_then_refit(
    project: Project,
    dataset: Dataset,
    df: pd.DataFrame,
    train_df: pd.DataFrame,
    valid_df: pd.DataFrame,
    run_key: str,
) -> tuple[str, dict[str, float], str]:
    """``trainer.refit``: score a fit without the validation rows on them, then fit again on
    every row and register that (its version, validation scores and which fit they are of). The
    validation scores, and the held-out predictions its monitoring reference is built from, are
    the first fit's: a score of the refit on rows it learned from would be a training score (see
    :func:`build_reference`)."""
    target = project.settings.project.target
    made = project.task.predict(fit_model(project, train_df), project.schema.frame(valid_df))
    scores = project.task.metrics(valid_df[target].to_numpy(), made.labels, made.probabilities)
    validated_by = f"a fit on the {len(train_df)} rows without the {len(valid_df)} validation rows"
    common = {"model": project.name, "train": dataset.id, "validated_by": validated_by}
    held_out = record_snapshot(project, valid_df.reset_index(drop=True), {**common, "kind": "validation"})
    predicted = record_snapshot(
        project,
        predictions_frame(np.arange(len(valid_df)), made),
        {**common, "kind": "heldout", "eval": held_out.id},
    )
    tags = {  # what build_reference reads, as a retrain's refitted winner carries them
        "driftloop.eval_dataset": held_out.id,
        "driftloop.heldout": predicted.id,
        "driftloop.validated_by": validated_by,
    }
    version, logged = fit_and_register(
        project,
        df,
        df.iloc[:0],
        dataset_id=dataset.id,
        run_key=run_key,
        validated=(scores, len(valid_df)),
        tags=tags,
    )
    return version, logged, validated_by


def reference_profiles(
    project: Project,
    df: pd.DataFrame,
    model: Any,
    held_out: pd.DataFrame | None = None,
    made: Predictions | None = None,
    population: pd.DataFrame | None = None,
    own: tuple[pd.DataFrame, Predictions] | None = None,
) -> dict[str, Any]:
    """The reference as stored: the feature profile (and text terms) of ``population``, else of
    all rows of ``df``; the output profile (prediction, confidence) of the validation rows; the
    model's scores on them and the label-free estimator's calibration (on a backtest's newest
    fold only); with custom metrics configured, their profile; and ``sources``, a sentence per
    part saying which rows it rests on.

    ``made``: predictions of ``held_out`` already made by models that never saw those rows (a
    backtest's), used instead of ``model``'s. ``population``: the requests served over the
    evaluation rows' period (:func:`period_snapshot`), labelled or not. ``own``: the requests of
    that period the evaluated model did not learn from and its outputs on them, which the output
    and custom metric profiles are of instead: the held-out predictions of a backtest are
    partly its refits', on fewer rows and less sure."""
    settings = project.settings.monitor
    # logged requests may lack a pii field that was dropped from the log
    requests, strict = (population, False) if population is not None and len(population) else (df, True)
    features = project.schema.profile_frame(project.schema.frame(requests, strict=strict))
    spec = ProfileSpec.fit(
        features,
        numeric=[c for c in features if features[c].dtype.kind == "f"],
        categorical=[c for c in features if features[c].dtype.kind != "f"],
        bins=settings.bins,
        sample_size=settings.sample_size,
    )
    feature_profile = Profile.from_frame(spec, features)
    texts = project.schema.frame(requests, strict=strict, decode=False)
    terms = {
        name: TermCounts.fit(texts[name].tolist()).to_dict()
        for name in project.schema.text
        if name not in project.schema.pii
    }
    # outputs and calibration need rows the model did not learn from: the run's held-out
    # evaluation set, else the training snapshot's stable validation split
    valid = (
        held_out
        if held_out is not None and len(held_out)
        else split_validation(df, class_column(project))[1]
        if "__key__" in df
        else df
    )
    if not len(valid):
        valid = df
    task, target = project.task, project.settings.project.target
    predictions = (
        made
        if made is not None and valid is held_out
        else project.task.predict(model, project.schema.frame(valid))
    )
    outputs = project.task.output_frame(predictions.labels, predictions.confidence, predictions.probabilities)
    shown, shown_outputs = (
        (valid, outputs)
        if own is None
        else (own[0], task.output_frame(own[1].labels, own[1].confidence, own[1].probabilities))
    )
    out_spec = task.output_spec(shown_outputs, settings.bins)
    y_valid = task.targets(valid[target], "held-out rows").to_numpy()
    valid_features = project.schema.profile_frame(project.schema.frame(valid))
    # the estimator calibrates this model's confidence (its errors, for DLE): a backtest's
    # earlier folds were predicted by its window's refits on older rows, which a change of
    # concept can leave sure and wrong; its own predictions are the newest fold's
    own_fold = np.ones(len(valid), dtype=bool)
    if made is not None and held_out is not None and valid is held_out and FOLD in held_out:
        own_fold = (held_out[FOLD] == held_out[FOLD].max()).to_numpy()
    scores = task.metrics(y_valid, predictions.labels, predictions.probabilities)
    reference: dict[str, Any] = {
        "features": feature_profile.to_dict(),
        "outputs": Profile.from_frame(out_spec, shown_outputs).to_dict(),
        # the label-free estimator (CBPE, DLE), fitted on rows the model did not learn from
        "estimator": task.fit_estimator(
            valid_features[own_fold], outputs[own_fold].reset_index(drop=True), y_valid[own_fold]
        ),
        "scores": {k: round(v, 6) for k, v in scores.items() if v == v},
        "scored_rows": len(valid),  # what a watch needs as many of to replace them
        **({"terms": terms} if terms else {}),
        "sources": {
            "features": f"the {len(features)} requests served over its evaluation period, labelled or not"
            if requests is population
            else f"the {len(features)} rows of its training snapshot",
            "outputs": f"its outputs on the {len(shown)} of those requests it did not learn from"
            if own is not None
            else f"the {len(valid)} held-out rows",
            "scores": f"the {len(valid)} held-out rows",
            "calibration": f"the {int(own_fold.sum())} rows of the newest fold, which it predicted itself"
            if not own_fold.all()
            else f"the {len(valid)} held-out rows",
        },
    }
    if project.settings.metrics:
        values = metric_frame(
            project.settings,
            project.schema.frame(shown, strict=own is None).reset_index(drop=True),
            shown_outputs.reset_index(drop=True),
        )
        reference["custom"] = Profile.from_frame(metric_spec(project.settings, values), values).to_dict()
    return reference


def output_frame(project: Project, model: Any, df: pd.DataFrame) -> pd.DataFrame:
    out = project.task.predict(model, project.schema.frame(df))
    return project.task.output_frame(out.labels, out.confidence, out.probabilities)


def period_snapshot(project: Project, split: dict[str, Any], common: dict[str, Any]) -> dict[str, Any] | None:
    """Every request served over the out-of-time evaluation rows' span, labelled or not (the
    newest ``retrain.lookback`` of them), recorded as a ``period`` snapshot: the population the
    winner is judged on, which its monitoring reference profiles (:func:`build_reference`).
    None for a random split or without production rows."""
    folds = split.get("folds") or []
    if not folds:
        return None
    first, last = int(folds[0]["first_seq"]), int(folds[-1]["last_seq"])
    served = project.store.served_inputs(project.name, first, last, project.settings.retrain.lookback)
    if not served:
        return None
    frame = pd.DataFrame([{**r["inputs"], "__key__": f"pred:{r['prediction_id']}"} for r in served])
    ds = record_snapshot(project, frame, {**common, "kind": "period", "first_seq": first, "last_seq": last})
    return {"id": ds.id, "rows": len(frame), "first_seq": first, "last_seq": last}


def _unseen_outputs(
    project: Project, version: str, tags: dict[str, str], df: pd.DataFrame, population: pd.DataFrame
) -> tuple[pd.DataFrame, Predictions] | None:
    """The period's requests that the model evaluated for ``version`` (itself, or the one it is a
    refit of) did not learn from, and its outputs on them; None if it learned from them all."""
    evaluated = tags.get("driftloop.refit_of") or version
    if evaluated != version:
        row = project.store.dataset(
            project.registry.tags(project.name, evaluated).get("driftloop.dataset", "")
        )
        if row is None:
            return None
        df = pd.read_parquet(row["path"], columns=["__key__"])
    learned = set(df["__key__"].astype(str)) if "__key__" in df else set()
    unseen = population[~population["__key__"].astype(str).isin(learned)]
    if not len(unseen):
        return None
    model = project.registry.load(project.name, evaluated)
    return unseen, project.task.predict(model, project.schema.frame(unseen, strict=False))


def build_reference(project: Project, version: str) -> dict[str, Any]:
    """The monitoring reference for a version: built once from its training snapshot.

    Its held-out outputs, scores and calibration need rows the model did not learn from. A
    retrain's winner has them from its run: every evaluation row predicted by a model that never
    saw it (the newest fold by the version, earlier folds by its window's backtest refits;
    ``driftloop.heldout``), which a refit of it shares. Otherwise the run's newest evaluation
    fold predicted by the version (a refit: by the version evaluated, which did not learn from
    them), else its training snapshot's validation split. A held-out score from rows a model
    learned from would be a training score, and alerts relative to it would fire on noise.

    Its feature profile is of the same period: every request served over the evaluation rows'
    span, labelled or not (the run's ``period`` snapshot), else the training snapshot. A winner
    trained on months of history with replayed rows is judged on, and will serve, the newest
    population; profiled against its mixed training rows, that population stays "drifted"
    after every retrain."""
    existing = project.store.reference(project.name, version)
    if existing is not None:
        return existing
    tags = project.registry.tags(project.name, version)
    dataset_id = tags.get("driftloop.dataset", "")
    row = project.store.dataset(dataset_id)
    if row is None:
        raise ConfigError(
            f"Version {version} of '{project.name}' names dataset {dataset_id!r}, "
            "which the store does not have."
        )
    df = pd.read_parquet(row["path"])
    held_out_row = project.store.dataset(tags.get("driftloop.eval_dataset", ""))
    held_out = pd.read_parquet(held_out_row["path"]) if held_out_row else None
    made: Predictions | None = None
    predicted = project.store.dataset(tags.get("driftloop.heldout", "")) if held_out is not None else None
    if held_out is not None and predicted is not None:
        frame = pd.read_parquet(predicted["path"])
        held_out, made = held_out.iloc[frame[ROW].to_numpy()], read_predictions(frame)
    elif held_out is not None and FOLD in held_out:  # earlier folds are in the final model's data
        held_out = held_out[held_out[FOLD] == held_out[FOLD].max()]
    judged_by = tags.get("driftloop.refit_of") if held_out is not None and made is None else None
    model = project.registry.load(project.name, judged_by or version)
    period = ((held_out_row or {}).get("manifest") or {}).get("period") or {}
    served = project.store.dataset(period.get("id", "")) if held_out is not None else None
    population = pd.read_parquet(served["path"]) if served is not None else None
    own = _unseen_outputs(project, version, tags, df, population) if population is not None else None
    profile = reference_profiles(project, df, model, held_out, made, population, own)
    return project.store.add_reference(project.name, version, dataset_id, profile)
