"""What a retrain learns from and is judged on: the snapshot step's sets, built from the store.

:func:`build` reads the labelled rows (up to the plan's feedback cutoff, within
``retrain.lookback``), splits them into what candidates may learn from and what judges them
(out of time: the newest rows after the champion's data, in folds; or a stable hash share),
writes one content-addressed training set per candidate window (with the backtest's fold sets
and the earlier champions that compete again) and the evaluation set (with the golden set and
the period whose requests become a new champion's feature reference), and records the run's
composition for its manifest. The helpers say how much evidence a run would have now
(:func:`evidence`, :func:`eval_rows_needed`), which the waiting trigger asks before it starts one.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from driftloop.backtest import backtest_sets, negatives_frame
from driftloop.candidates import FOLD, candidate_sets, fold_pools, out_of_time_split, recipe_sentence
from driftloop.datasets import file_sha256, stable_fraction
from driftloop.exceptions import WorkflowError
from driftloop.gate import rows_needed
from driftloop.plugins import load_function
from driftloop.project import Project
from driftloop.training import (
    class_column,
    golden_frame,
    label_counts,
    labelled_frame,
    period_snapshot,
    record_dataset,
    record_snapshot,
    split_validation,
)

__all__ = [
    "build",
    "champion_cutoff",
    "eval_rows_needed",
    "evidence",
    "previous_champions",
    "training_snapshot",
]


def training_snapshot(project: Project, version: str) -> dict[str, Any] | None:
    """The store's record of the dataset ``version`` was trained on, or None."""
    tags = project.registry.tags(project.name, version)
    return project.store.dataset(tags.get("driftloop.dataset", ""))


def champion_cutoff(project: Project, champion: str) -> int:
    """The last log sequence number the champion's training data held: that of the run that
    trained and promoted it (0 for a first model). A run that promoted a version it did not
    train (a previous champion back in service, ``driftloop promote VERSION``) says nothing
    about what that version learned from."""
    for run in reversed(project.store.runs(project.name, limit=1000)):
        options = run["options"] or {}
        trained = not options.get("candidate") and not options.get("reused")
        if (
            trained
            and run["status"] == "promoted"
            and champion
            in (
                options.get("deployed_version"),
                run["challenger_version"],
            )
        ):
            return int(options.get("cutoff_seq") or 0)
    return 0


def previous_champions(project: Project, champion: str, limit: int) -> list[str]:
    """The ``limit`` most recent champions before ``champion`` (newest first, each once)."""
    found: list[str] = []
    for row in reversed(project.store.promotions(project.name)):
        version = row["to_version"]
        if row["action"] != "watch-kept" and version and version != champion and version not in found:
            found.append(version)
    return found[:limit]


def eval_rows_needed(project: Project, champion: str | None) -> int:
    """``gate.min_eval_rows``, or the rows ``gate.min_effect`` needs at the champion's own held-out
    score (:func:`driftloop.gate.rows_needed`; a proportion metric only, not an error)."""
    gate = project.settings.gate
    if gate.min_effect is None or champion is None or gate.primary_metric in project.task.lower_is_better:
        return gate.min_eval_rows
    reference = project.store.reference(project.name, champion)
    score = ((reference or {}).get("profile") or {}).get("scores", {}).get(gate.primary_metric)
    return rows_needed(gate, None if score is None else float(score))


def evidence(project: Project) -> tuple[int, int]:
    """(labelled rows after the champion's training data, the rows the gate needs): what an
    out-of-time evaluation would have now."""
    champion = project.champion()
    cutoff = champion_cutoff(project, champion) if champion else 0
    rows = project.store.labelled(project.name, start_seq=cutoff + 1, policy=project.settings.feedback)
    return len(rows), eval_rows_needed(project, champion)


def _judged_outputs(
    project: Project, plan: dict[str, Any], rows: list[dict[str, Any]], hygiene: dict[str, Any]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A generator's training rows and negatives: the rewrites in ``rows``, plus the outputs
    reviewers accepted by rating (a rewrite of the same prediction says more); the outputs
    tagged bad become negatives when ``generation.negatives = "trainer"``. Counts go to ``hygiene``."""
    settings, policy = project.settings, project.settings.generation
    rewritten = {r["prediction_id"] for r in rows}
    accepted, negatives = project.store.judged_outputs(
        project.name,
        max_annotation_id=plan.get("cutoff_annotation", 0),
        accept_rating=policy.accept_rating,
        bad_tags=policy.bad_tags,
        policy=settings.feedback,
    )
    # an empty output is no target; a rewrite of the same prediction says more than its rating
    usable = [r for r in accepted if project.task.label_error(r["label"]) is None]
    rows = sorted(rows + [r for r in usable if r["prediction_id"] not in rewritten], key=lambda r: r["seq"])
    hygiene["accepted_outputs"] = len(rows) - len(rewritten)
    hygiene["bad_outputs"] = len(negatives)
    negatives = [r for r in negatives if project.task.label_error(r["label"]) is None]
    return rows, negatives[-settings.retrain.lookback :] if policy.negatives == "trainer" else []


def _evaluation_split(
    project: Project, plan: dict[str, Any], prod: pd.DataFrame, rows: list[dict[str, Any]]
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any], list[pd.DataFrame], list[int]]:
    """``(pool, evaluation, split, backtest_pools, fold_starts)``: the labelled production rows
    (``prod``, from ``rows``) split into what candidates may learn from and what judges them,
    out of time (the newest rows after the champion's data, in folds) or by a stable hash."""
    rt = project.settings.retrain
    backtest_pools: list[pd.DataFrame] = []  # the rows before each earlier fold of a backtest
    fold_starts: list[int] = []
    if not len(prod):
        return (
            prod,
            pd.DataFrame(),
            {"split": "none", "rows": 0, "sentence": "no labelled production rows"},
            [],
            [],
        )
    prod = labelled_frame(project, prod, "labelled production rows").assign(
        __key__=prod["__key__"].to_numpy(),
        __prediction__=[r["prediction"] for r in rows],
        __ts__=[r["ts"] for r in rows],
        __seq__=[r["seq"] for r in rows],
    )
    split: dict[str, Any]
    if rt.evaluation == "out_of_time":
        pool, evaluation, split = out_of_time_split(
            prod,
            champion_cutoff=champion_cutoff(project, plan["champion"]),
            min_rows=eval_rows_needed(project, plan["champion"]),
            fraction=rt.holdout_fraction,
            since_seq=plan.get("since_seq"),
            folds=rt.folds,
        )
        backtest_pools = fold_pools(prod, evaluation)
        fold_starts = [f["first_seq"] for f in split["folds"][:-1]]  # the earlier folds' first rows
    else:
        held = prod["__key__"].map(lambda k: stable_fraction(k) < rt.holdout_fraction).to_numpy(bool)
        pool, evaluation = prod[~held], prod[held]
        split = {"split": "random", "rows": int(held.sum())}
        split["sentence"] = f"a stable hash share {rt.holdout_fraction:g} of the labelled rows"
    evaluation = evaluation.drop(columns=["__prediction__", "__ts__", "__seq__"])
    return pool, evaluation, split, backtest_pools, fold_starts


def build(project: Project, run_id: str, plan: dict[str, Any]) -> dict[str, Any]:
    """Run ``run_id``'s evaluation set and one training set per candidate window, all
    content-addressed and recorded (the manifest's ``training`` composition on the run): what
    the workflow's snapshot step returns, or ``{"skip": reason}`` when no window has the rows."""
    settings, store = project.settings, project.store
    rt = settings.retrain
    target = settings.project.target
    rows, hygiene = store.resolved_labels(
        project.name, start_seq=0, max_feedback_id=plan["cutoff_feedback"], policy=settings.feedback
    )
    negatives: list[dict[str, Any]] = []
    if project.task.name == "generation":  # accepted outputs are targets too; bad ones negatives
        rows, negatives = _judged_outputs(project, plan, rows, hygiene)
    rows = rows[-rt.lookback :]
    base = training_snapshot(project, plan["champion"])
    if base is None:
        raise WorkflowError("The champion's training snapshot is missing from the store; retrain needs it.")
    original = pd.read_parquet(base["path"])
    original = (
        original[original["__key__"].astype(str).str.startswith("train:")]
        if "__key__" in original
        else original
    )
    prod = pd.DataFrame(
        [{**r["inputs"], target: r["label"], "__key__": f"pred:{r['prediction_id']}"} for r in rows]
    )
    pool, evaluation, split, backtest_pools, fold_starts = _evaluation_split(project, plan, prod, rows)
    if len(evaluation) == 0:  # no production labels yet: hold out the original validation rows
        original, evaluation = split_validation(original, class_column(project))
        split["sentence"] += "; the champion's validation split of its training data stands in"
    golden = golden_frame(project)
    if len(golden):
        evaluation = pd.concat([evaluation, golden], ignore_index=True)
    if FOLD in evaluation:  # the golden set is judged by the final candidates, with the newest fold
        evaluation[FOLD] = evaluation[FOLD].fillna(evaluation[FOLD].max()).astype("int64")
    # the run's clock is fixed by the plan, so a replayed step builds the same (content-addressed) sets
    made, left_out = (
        candidate_sets(
            pool,
            original,
            rt,
            target,
            now=plan["planned_at"],
            task=project.task,
            since_seq=plan.get("since_seq"),
        )
        if plan.get("candidate") is None
        else ([], [])  # driftloop promote VERSION: nothing is trained
    )
    for c in [c for c in made if len(c["frame"]) < rt.min_train_rows]:
        made.remove(c)
        left_out.append(
            {
                "name": c["name"],
                "reason": f"{len(c['frame'])} rows ({c['sampling']['rows_by_source']}), fewer than "
                f"retrain.min_train_rows ({rt.min_train_rows})",
            }
        )
    cutoff_seq = rows[-1]["seq"] if rows else 0
    common = {
        "model": project.name,
        "run_id": run_id,
        "champion": plan["champion"],
        "feedback_window": {
            "since_seq": plan.get("since_seq") or 0,
            "max_feedback_id": plan["cutoff_feedback"],
        },
    }
    bad = negatives_frame(project, negatives)
    recipes = {c.name: c.recipe(settings.trainer) for c in rt.candidate_windows()}
    for c in made:  # a candidate's own trainer must import before anything trains
        if (own := (recipes[c["name"]] or {}).get("trainer")) is not None:
            load_function(own, settings.root, f"retrain.candidates[{c['name']}].trainer")
    candidates: list[dict[str, Any]] = []
    for c in made:
        training, sampling = c["frame"].drop(columns=["__seq__"], errors="ignore"), c["sampling"]
        if bad is not None:  # the same negatives beside every window's rows, never evaluated
            training = pd.concat([training.assign(__negative__=False), bad], ignore_index=True)
            sampling = {**sampling, "negatives": len(bad)}
        ds = record_snapshot(
            project,
            training,
            {
                **common,
                "kind": "train",
                "candidate": c["name"],
                "window": c["sentence"],
                "sources": [
                    {"type": "dataset", "id": base["id"], "rows": sampling["replay"]["rows"]},
                    {"type": "feedback", "rows": sampling["rows_by_source"].get("feedback", 0)},
                ],
                "feedback_hygiene": {
                    **hygiene,
                    "conflict_rule": settings.feedback.conflict_rule,
                    **(
                        {
                            "bad_outputs_use": "given to the trainer as negatives"
                            if settings.generation.negatives == "trainer"
                            else "excluded"
                        }
                        if project.task.name == "generation"
                        else {}
                    ),
                    "quarantined_sources": settings.feedback.quarantined_sources,
                },
                "sampling": sampling,
                "class_counts": label_counts(project, training[target]) if len(training) else {},
            },
            add=False,
        )
        recipe = recipes[c["name"]]
        same = next((k for k in candidates if k["train_id"] == ds.id and k["recipe"] == recipe), None)
        if same is not None:  # the same rows and recipe as an earlier candidate: trained once
            also = " and trainer" if recipe is not None else ""
            reason = f"the same rows{also} as candidate '{same['name']}'"
            left_out.append({"name": c["name"], "reason": reason})
            continue
        record_dataset(project, ds)
        candidates.append(
            {
                "name": c["name"],
                "train_id": ds.id,
                "train_path": str(ds.path),
                "rows": len(training),
                "by_source": sampling["rows_by_source"],
                "by_class": sampling["rows_by_class"],
                "window": c["sentence"] + recipe_sentence(recipe),
                "recipe": recipe,
            }
        )
    backtest_sets(project, candidates, backtest_pools, fold_starts, original, negatives, plan, common)
    if plan.get("candidate") is None and candidates:  # earlier champions compete again, as they are
        candidates += [
            {
                "name": f"champion-{version}",
                "version": version,
                "rows": 0,
                "by_source": {},
                "by_class": {},
                "window": f"version {version}, an earlier champion, as it is (not retrained)",
                "backtest": [],
                "recipe": None,
            }
            for version in previous_champions(project, plan["champion"], rt.previous_champions)
        ]
    first = candidates[0] if candidates else {"rows": 0, "by_source": {}, "by_class": {}}
    composition = {
        "rows": first["rows"],
        "by_source": first["by_source"],
        "by_class": first["by_class"],
        "eval_rows": len(evaluation),
        "evaluation": split["sentence"],
        "candidates": [
            {
                **{k: c[k] for k in ("name", "rows", "by_source", "window")},
                **({"version": c["version"]} if c.get("version") else {}),
                **({"recipe": c["recipe"]} if c.get("recipe") else {}),
                **(
                    {
                        "backtest": [
                            {k: f[k] for k in ("fold", "rows", "snapshot", "why") if k in f}
                            for f in c["backtest"]
                        ]
                    }
                    if c["backtest"]
                    else {}
                ),
            }
            for c in candidates
        ],
        "left_out": left_out,
    }
    period = period_snapshot(project, split, common) if candidates else None
    if period:
        composition["reference"] = (
            f"the {period['rows']} requests served over seq {period['first_seq']}-{period['last_seq']}, "
            "labelled or not"
        )
    store.update_run(run_id, options={**plan, "cutoff_seq": cutoff_seq, "training": composition})
    if plan.get("candidate") is None and not candidates:
        reasons = "; ".join(f"'{c['name']}': {c['reason']}" for c in left_out)
        return {
            "skip": f"no candidate training window had enough rows ({reasons}); no challenger was trained."
        }
    eval_ds = record_snapshot(
        project,
        evaluation,
        {
            **common,
            "kind": "eval",
            "split": split["sentence"],
            "out_of_time": split,
            **({"period": period} if period else {}),
            "golden": {
                "path": settings.data.golden,
                "sha256": file_sha256(settings.path(settings.data.golden)),
                "rows": len(golden),
            }
            if settings.data.golden
            else None,
            "class_counts": label_counts(project, evaluation[target]) if len(evaluation) else {},
        },
    )
    return {
        "candidates": candidates,
        "eval_id": eval_ds.id,
        "eval_path": str(eval_ds.path),
        "eval_rows_production": len(evaluation) - len(golden),
        "folds": split.get("folds") or [],
        "trainer": plan.get("trainer"),
        "candidate": plan.get("candidate"),
    }
