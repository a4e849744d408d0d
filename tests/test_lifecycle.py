"""After the gate: targeted sampling, the golden set, the post-deploy watch, a silent monitor."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from driftloop import workflow
from driftloop.config import RetrainSettings
from driftloop.demo.data import applicants
from driftloop.demo.scenario import serve_in_thread
from driftloop.monitor import Monitor
from driftloop.project import Project
from driftloop.sampling import WEIGHT, training_set
from driftloop.serving import create_app
from driftloop.training import fit_model, split_validation, train

from .conftest import make_project, trained_with
from .helpers import send

WEIGHTED_TRAINER = '''

def weighted(X, y, sample_weight=None, **params):
    """Records the weights it was given, then trains as usual."""
    import json, pathlib
    (pathlib.Path(__file__).parent / "weights.json").write_text(json.dumps(
        {"n": len(y), "min": float(min(sample_weight)), "max": float(max(sample_weight))}
    ))
    return train(X, y, **params)
'''


def production(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = rng.choice(["a", "b", "c"], n, p=[0.6, 0.3, 0.1])
    wrong = rng.random(n) < np.where(y == "c", 0.6, 0.1)  # the model is weakest on "c"
    pred = np.where(wrong, np.where(y == "a", "b", "a"), y)
    return pd.DataFrame(
        {"x": rng.normal(size=n), "y": y, "__prediction__": pred, "__ts__": np.linspace(0, 86400 * 10, n)}
    ).assign(__key__=[f"pred:{i}" for i in range(n)])


def test_sampling_strategies_do_what_the_manifest_says() -> None:
    prod = production(3000, 0)
    previous = pd.DataFrame({"x": np.zeros(5000), "y": ["a"] * 5000, "__key__": ["old"] * 5000})
    rt = RetrainSettings(
        corrected_share=0.5,
        replay_fraction=0.2,
        max_per_class=900,
        error_oversampling=2.0,
        recency_half_life="2d",
        seed=3,
    )
    rows, why = training_set(prod, previous, rt, "y", now=86400 * 10)
    feedback = why["feedback"]
    assert feedback["corrected_kept"] == feedback["confirmed_kept"] == feedback["corrected"]
    assert why["replay"]["rows"] == round(0.2 / 0.8 * 2 * feedback["corrected"])
    assert max(rows["y"].value_counts()) <= 900 and why["max_per_class"] == 900
    assert why["error_rate_by_class"]["c"] > 0.5 > why["error_rate_by_class"]["a"]
    assert rows[WEIGHT].mean() == pytest.approx(1.0)
    # the weakest class weighs most per row; newer rows weigh more than older ones of a class
    per_row = rows.groupby("y")[WEIGHT].mean()
    assert per_row["c"] > per_row["a"]
    newest = rows[(rows["__key__"] != "old") & (rows["y"] == "a")]
    assert newest[WEIGHT].max() > 4 * newest[WEIGHT].min(), "a 2-day half-life over 10 days"
    assert set(why["rows_by_source"]) == {"feedback", "replay"}
    assert "__prediction__" not in rows and "__ts__" not in rows
    again, _ = training_set(prod, previous, rt, "y", now=86400 * 10)
    assert again.equals(rows), "seeded: the same inputs give the same set"


def test_retrain_uses_sampling_weights_and_scores_the_golden_set(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    make_project(folder)
    applicants(400, "B", seed=90).to_csv(folder / "data" / "golden.csv", index=False)
    config = folder / "driftloop.toml"
    config.write_text(
        config.read_text()
        .replace('train = "data/train.csv"', 'train = "data/train.csv"\ngolden = "data/golden.csv"')
        .replace(
            "[retrain]\n",
            '[retrain]\ncorrected_share = 0.5\nerror_oversampling = 1.0\nrecency_half_life = "1h"\n',
        )
        .replace("min_eval_rows = 100\n", 'min_eval_rows = 100\nslices = ["class"]\n')
    )
    (folder / "trainer.py").write_text((folder / "trainer.py").read_text() + WEIGHTED_TRAINER)
    project = Project.load(config)
    train(project)
    send(project, 1000, "B", seed=91, label_share=0.6)
    try:
        row = workflow.wait(workflow.start_retrain(project, "manual", trainer="trainer:weighted"))
    finally:
        workflow.shutdown()
    decision = project.store.decision(row["id"])
    assert decision is not None
    evaluation = project.store.dataset(decision["eval_dataset"])
    assert evaluation is not None and evaluation["manifest"]["golden"]["rows"] == 400
    assert len(evaluation["manifest"]["golden"]["sha256"]) == 64
    assert evaluation["rows"] == decision["eval_rows"] > 400, "held-out production rows plus the golden set"
    rules = {r["rule"]: r for r in decision["rules"]}
    assert row["status"] in ("promoted", "rejected") and "min_improvement" in rules
    manifest = next(
        d["manifest"]
        for d in project.store.datasets(project.name)
        if d["manifest"].get("run_id") == row["id"] and d["kind"] == "train"
    )
    sampling = manifest["sampling"]
    assert sampling["feedback"]["corrected_share"] == 0.5 and sampling["error_oversampling"] == 1.0
    assert sampling["recency_half_life_seconds"] == 3600.0 and "by_class" in sampling["weights"]
    import json

    seen = json.loads((folder / "weights.json").read_text())
    assert seen["max"] > seen["min"], "the trainer received the sampling weights as sample_weight"
    project.close()


def test_post_deploy_watch_rolls_back_a_worse_champion(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    make_project(folder)
    config = folder / "driftloop.toml"
    config.write_text(  # a gate that lets anything through, so only the watch can catch it
        config.read_text()
        .replace("min_improvement = 0.01", "min_improvement = -1.0")
        .replace("max_regression = { f1_macro = 0.02 }", "max_regression = { f1_macro = 1.0 }")
        .replace("[gate]\n", "[gate]\nmax_newest_fold_regression = 1.0\n")
        + "\n[watch]\nwindows = 2\nmin_labels = 100\ntolerance = 0.05\n"
    )
    project = Project.load(config)
    train(project)
    send(project, 600, "A", seed=92, label_share=0.8)
    monitor = Monitor(project)
    monitor.run()
    try:
        row = workflow.wait(workflow.start_retrain(project, "manual", trainer="trainer:careless"))
    finally:
        workflow.shutdown()
    assert row["status"] == "promoted" and project.champion() == "2"
    assert workflow.post_deploy_watch(project, monitor) is None, "nothing to judge yet"
    send(project, 600, "A", seed=93, label_share=0.8)  # served by the careless champion
    monitor.run()
    verdict = workflow.post_deploy_watch(project, monitor)
    assert verdict is not None and verdict["action"] == "watch-rollback" and verdict["source"] == "feedback"
    assert verdict["new_value"] < verdict["old_value"] - 0.05
    assert project.champion() == "1"
    history = project.store.promotions(project.name)
    assert [p["action"] for p in history] == ["initial", "promote", "rollback"]
    assert "post-deploy watch" in history[-1]["reason"]
    alerts = [a for a in project.store.alerts(project.name) if a["rule"] == "post-deploy-rollback"]
    assert len(alerts) == 1 and "Rolled 2 back to 1" in alerts[0]["message"]
    assert workflow.post_deploy_watch(project, monitor) is None, "judged once"
    project.close()


def test_a_silent_or_failing_monitor_raises_alerts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "p"
    make_project(folder)
    config = folder / "driftloop.toml"
    config.write_text(
        config.read_text().replace('schedule = "30s"', 'schedule = "1h"\nstale_after = "300ms"')
    )
    project = Project.load(config)
    train(project)
    monitor = Monitor(project)
    deployed = project.store.promotions(project.name)[0]["ts"]
    assert monitor.check_stale(now=deployed + 0.1) is None
    # the server's own watchdog thread notices that no monitoring pass has succeeded
    with serve_in_thread(create_app(project, background=True, monitor=True)):
        deadline = time.time() + 10
        while time.time() < deadline and not project.store.alerts(project.name, rule="monitor-stale"):
            time.sleep(0.1)
    stale = project.store.alerts(project.name, rule="monitor-stale")
    assert len(stale) == 1 and "No successful monitoring run" in stale[0]["message"]
    assert monitor.check_stale() is None, "one alert per silence"
    monitor.run()
    assert project.store.monitor_runs(project.name)[-1]["ok"] is True
    assert monitor.check_stale() is None
    assert monitor.check_stale(now=time.time() + 1) is not None, "a new silence, a new alert"

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(Monitor, "_run", broken)
    with pytest.raises(OSError):
        monitor.run()
    last = project.store.monitor_runs(project.name)[-1]
    assert last["ok"] is False and last["error"] == "OSError: disk full"
    with pytest.raises(OSError):
        monitor.run()  # still failing: recorded, but no second alert
    failed = project.store.alerts(project.name, rule="monitor-failed")
    assert len(failed) == 1 and "disk full" in failed[0]["message"]
    assert [r["ok"] for r in project.store.monitor_runs(project.name)][-2:] == [False, False]
    project.close()


def test_a_relative_rule_fires_below_the_champions_own_held_out_score(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    make_project(folder)
    config = folder / "driftloop.toml"
    text = config.read_text()
    assert "threshold = 0.85\n" in text
    config.write_text(text.replace("threshold = 0.85\n", 'threshold = -0.05\nrelative_to = "reference"\n'))
    project = Project.load(config)
    train(project)
    monitor = Monitor(project)
    base = monitor.reference().scores["accuracy"]
    assert 0.85 < base <= 1.0
    send(project, 600, "A", seed=94, label_share=1.0)
    assert not [a for a in monitor.run().alerts if a["rule"] == "accuracy-drop"]
    send(project, 600, "B", seed=95, label_share=1.0)
    fired = [a for a in monitor.run().alerts if a["rule"] == "accuracy-drop"]
    assert len(fired) == 1 and fired[0]["threshold"] == pytest.approx(base - 0.05)
    assert fired[0]["value"] < base - 0.05
    project.close()


def test_enough_new_labels_trigger_a_retrain(tmp_path: Path) -> None:
    project = trained_with(tmp_path / "p", retrain="every_new_labels = 300")
    send(project, 300, "A", seed=96, label_share=0.5)  # 150 labels: not yet
    try:
        workflow.launch(project, schedules=False)
        workflow.monitor_and_trigger(project)
        assert project.store.runs(project.name) == []
        send(project, 600, "A", seed=97, label_share=0.5)
        workflow.monitor_and_trigger(project)
        runs = project.store.runs(project.name)
        assert len(runs) == 1 and runs[0]["trigger"].startswith("labels:")
        assert int(runs[0]["trigger"].split(":")[1]) >= 300
        row = workflow.wait(runs[0]["id"])
        assert row["status"] in ("promoted", "rejected")
        workflow.monitor_and_trigger(project)
        assert len(project.store.runs(project.name)) == 1, "the labels it trained on do not count again"
    finally:
        workflow.shutdown()
    project.close()


def test_labels_in_proportion_to_the_champions_data_trigger_a_retrain(tmp_path: Path) -> None:
    project = trained_with(tmp_path / "p", retrain="label_growth = 0.1")
    version = project.champion()
    assert version is not None
    learned = project.store.dataset(project.registry.tags(project.name, version)["driftloop.dataset"])
    assert learned is not None
    need = math.ceil(0.1 * learned["rows"])  # the champion learned from its snapshot's rows
    send(project, need - 10, "A", seed=98, label_share=1.0)
    try:
        workflow.launch(project, schedules=False)
        workflow.monitor_and_trigger(project)
        assert project.store.runs(project.name) == [], f"{need - 10} labels are fewer than {need}"
        send(project, 20, "A", seed=99, label_share=1.0)
        workflow.monitor_and_trigger(project)
        runs = project.store.runs(project.name)
        assert [r["trigger"] for r in runs] == [f"labels:{need + 10}"]
        assert workflow.wait(runs[0]["id"])["status"] in ("promoted", "rejected")
    finally:
        workflow.shutdown()
    project.close()


MEMORISING_TRAINER = '''

def memorise(X, y, **params):
    """A tree grown until it is right on every row it learned from."""
    from sklearn.tree import DecisionTreeClassifier

    numeric = [c for c in X.columns if is_numeric_dtype(X[c])]
    features = ColumnTransformer([
        ("num", "passthrough", numeric),
        ("cat", OneHotEncoder(handle_unknown="ignore"), [c for c in X.columns if c not in numeric]),
    ])
    return make_pipeline(features, DecisionTreeClassifier(random_state=0)).fit(X, y)
'''


@pytest.mark.parametrize("refit", [True, False], ids=["refit", "validation-rows-held-out"])
def test_a_refitted_first_champion_learns_every_row_and_is_judged_on_rows_it_did_not(
    tmp_path: Path, refit: bool
) -> None:
    make_project(tmp_path)
    (tmp_path / "trainer.py").write_text((tmp_path / "trainer.py").read_text() + MEMORISING_TRAINER)
    config = tmp_path / "driftloop.toml"
    text = config.read_text().replace('entrypoint = "trainer:train"', 'entrypoint = "trainer:memorise"')
    config.write_text(text.replace("[trainer]\n", f"[trainer]\nrefit = {str(refit).lower()}\n"))
    project = Project.load(config)
    try:
        result = train(project)
        fit_rows, valid = split_validation(result.dataset.load(), "approved")
        truth = valid["approved"].astype(str).to_numpy()

        def accuracy(model: object) -> float:
            return float(np.mean(project.task.predict(model, project.schema.frame(valid)).labels == truth))

        held_out = accuracy(fit_model(project, fit_rows))  # the same tree without the validation rows
        deployed = accuracy(project.registry.load(project.name, result.version))
        stored = project.store.reference(project.name, result.version)
        assert stored is not None
        reference = stored["profile"]
        # the validation score and the reference alerts compare against: the fit without those rows
        assert result.metrics["validation_accuracy"] == pytest.approx(held_out)
        assert reference["scores"]["accuracy"] == pytest.approx(held_out) and held_out < 0.95
        assert reference["scored_rows"] == len(valid)
        (logged,) = [v for v in project.registry.versions(project.name) if v["version"] == result.version]
        params = project.registry.client.get_run(logged["run_id"]).data.params  # as MLflow shows them
        rows = len(fit_rows) + len(valid) if refit else len(fit_rows)
        assert (params["train_rows"], params["validation_rows"]) == (str(rows), str(len(valid)))
        if refit:  # the version deployed learned the validation rows too: the tree is right on all
            assert deployed == 1.0
            tags = project.registry.tags(project.name, result.version)
            assert (
                tags["driftloop.validated_by"]
                == result.validated_by
                == (f"a fit on the {len(fit_rows)} rows without the {len(valid)} validation rows")
            )
        else:
            assert deployed == pytest.approx(held_out) and result.validated_by is None
    finally:
        project.close()
