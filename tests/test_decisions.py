"""Decisions that beat a cron job: out-of-time evaluation, candidate training windows compared with
a correction, a trigger that waits for evidence, and a paired post-deploy watch."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from driftloop import workflow
from driftloop.gate import rows_needed
from driftloop.monitor import Monitor
from driftloop.project import Project
from driftloop.training import train
from driftloop.watch import harmful, optimism_summary

from .conftest import cli_env, make_project
from .helpers import send


def _project(folder: Path, retrain: str = "", gate: str = "", watch: str = "") -> Project:
    make_project(folder)
    config = folder / "driftloop.toml"
    text = config.read_text().replace("[retrain]\n", f"[retrain]\n{retrain}")
    text = text.replace("[gate]\n", f"[gate]\n{gate}")
    config.write_text(text + (f"\n[watch]\n{watch}" if watch else ""))
    project = Project.load(config)
    train(project)
    return project


@pytest.mark.parametrize(("choose_on", "min_rows"), [("all", 100), ("half", 100), ("half", 160)])
def test_candidates_are_judged_out_of_time_and_the_best_is_gated_with_a_correction(
    tmp_path: Path, choose_on: str, min_rows: int
) -> None:
    """All rows choose the candidate and judge it with p x 2; or ("half"), with rows enough for
    two halves (100 each of 304), every other row chooses and the rest judge; with too few for
    halves (160 each), all rows again."""
    project = _project(
        tmp_path / "p",
        retrain='candidates = [{ name = "all" }, { name = "recent", rows = 300 }, '
        '{ name = "same", rows = 5000 }]\n',
    )
    config = project.settings.root / "driftloop.toml"
    config.write_text(
        config.read_text().replace(
            "min_eval_rows = 100", f'min_eval_rows = {min_rows}\nchoose_on = "{choose_on}"'
        )
    )
    project = Project.load(config)
    try:
        send(project, 600, "A", seed=41, label_share=0.5)
        send(project, 900, "B", seed=42, label_share=0.8)
        row = workflow.wait(workflow.start_retrain(project, "manual"))
    finally:
        workflow.shutdown()
    assert row["status"] in ("promoted", "rejected"), row
    training = row["options"]["training"]
    assert [c["name"] for c in training["candidates"]] == ["all", "recent"]
    assert training["left_out"] == [{"name": "same", "reason": "the same rows as candidate 'all'"}]
    decision = project.store.decision(row["id"])
    assert decision is not None
    evaluation = project.store.dataset(decision["eval_dataset"])
    assert evaluation is not None
    split = evaluation["manifest"]["out_of_time"]
    assert split["split"] == "out of time" and split["after_champion_seq"] == 0
    # the newest labelled rows: every one later than every production row any candidate learned from
    seq = {r["prediction_id"]: r["seq"] for r in project.store.labelled(project.name)}
    eval_keys = set(pd.read_parquet(evaluation["path"])["__key__"])
    eval_seqs = [seq[k.removeprefix("pred:")] for k in eval_keys]
    assert len(eval_keys) == split["rows"] == max(min_rows, round(0.3 * len(seq))) == 304
    halves = choose_on == "half" and len(eval_keys) >= 2 * min_rows
    assert decision["eval_rows"] == (len(eval_keys) // 2 if halves else len(eval_keys))
    assert max(eval_seqs) == max(seq.values())
    for c in training["candidates"]:
        ds = next(
            d
            for d in project.store.datasets(project.name)
            if d["manifest"].get("candidate") == c["name"] and d["manifest"].get("run_id") == row["id"]
        )
        keys = set(pd.read_parquet(ds["path"])["__key__"])
        assert not keys & eval_keys, f"candidate {c['name']} trained on evaluation rows"
        trained = [seq[k.removeprefix("pred:")] for k in keys if k.startswith("pred:")]
        assert max(trained) < min(eval_seqs)
    # both were scored on the same rows; the better on the choosing rows went to the gate, which
    # judged it on the other rows (or on all, with p x 2)
    versions = [v["version"] for v in project.registry.versions(project.name)]
    assert versions == ["1", "2", "3"]
    assert "best of 2" in row["options"]["chosen"]
    frame = pd.read_parquet(evaluation["path"])
    truth = frame[project.settings.project.target].astype(str).to_numpy()
    chooses = np.arange(len(frame)) % 2 == 0 if halves else np.ones(len(frame), dtype=bool)
    judges = ~chooses if halves else chooses
    right = {
        v: project.task.predict(project.registry.load(project.name, v), project.schema.frame(frame)).labels
        == truth
        for v in ("1", "2", "3")
    }
    assert decision["challenger_version"] == max(
        ("2", "3"), key=lambda v: (right[v][chooses].mean(), v == "2")
    )
    accuracy = next(r for r in decision["rules"] if r["metric"] == "accuracy")
    assert accuracy["champion"] == pytest.approx(right["1"][judges].mean())
    assert accuracy["challenger"] == pytest.approx(right[decision["challenger_version"]][judges].mean())
    corrected = any(", x2 for the 2 candidates compared)" in r for r in decision["reasons"])
    assert corrected is not halves, decision["reasons"]
    assert ("the other 152 judged it" in row["options"]["chosen"]) is halves, row["options"]["chosen"]
    loser = "3" if decision["challenger_version"] == "2" else "2"
    assert project.registry.tags(project.name, loser)["driftloop.status"].startswith("not chosen")
    shown = subprocess.run(
        [
            sys.executable,
            "-m",
            "driftloop.cli",
            "runs",
            row["id"],
            "-c",
            str(project.settings.root / "driftloop.toml"),
        ],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = shown.stdout
    assert shown.returncode == 0, out + shown.stderr
    assert "candidate 'all'" in out and "candidate 'recent'" in out and "chosen: candidate" in out, out
    assert "evaluated on the newest" in out, out
    project.close()


def test_an_automatic_trigger_waits_for_evaluation_rows_then_runs(tmp_path: Path) -> None:
    project = _project(tmp_path / "p")
    try:
        send(project, 600, "B", seed=43, label_share=0.1)  # about 60 labels; the gate needs 100
        run_id = workflow.start_or_wait(project, "alert:accuracy-drop", since_seq=1)
        row = workflow.wait(run_id)
        assert row["status"] == "waiting", row
        assert (
            "the gate needs 100 such rows to judge a challenger out of time (gate.min_eval_rows 100)"
            in row["error"]
        )
        assert workflow.automatic_retrain_blocked(project) == "a retrain is already waiting for labels"
        assert workflow.release_waiting(project) == [], "still too few"
        send(project, 600, "B", seed=44, label_share=0.3)
        assert workflow.release_waiting(project) == [run_id]
        row = workflow.wait(run_id)
        assert row["status"] in ("promoted", "rejected") and row["error"] is None, row
        assert row["options"]["training"]["eval_rows"] >= 100
        # a trigger whose labels never come is skipped after retrain.max_wait, with the reason
        late = workflow.start_or_wait(project, "alert:accuracy-drop")
        assert project.store.run(late)["status"] == "waiting"  # type: ignore[index]
        workflow.release_waiting(project, now=time.time() + 8 * 86400)
        skipped = project.store.run(late)
        assert skipped is not None and skipped["status"] == "skipped"
        assert "waited longer than retrain.max_wait" in skipped["error"]
        # a person's run never waits
        assert workflow.wait(workflow.start_retrain(project, "manual"))["status"] != "waiting"
    finally:
        workflow.shutdown()
        project.close()


def test_min_effect_sizes_the_evaluation_by_the_gates_power(tmp_path: Path) -> None:
    project = _project(tmp_path / "p", gate="min_effect = 0.05\n")
    try:
        champion = project.champion()
        reference = project.store.reference(project.name, champion)  # type: ignore[arg-type]
        score = reference["profile"]["scores"]["accuracy"]  # type: ignore[index]
        need = rows_needed(project.settings.gate, score)
        assert workflow.evidence(project) == (0, need) and 180 < need < 700, (score, need)
        send(project, 600, "B", seed=45, label_share=0.3)  # about 180 labels: above the floor of 100
        run_id = workflow.start_or_wait(project, "alert:accuracy-drop", since_seq=1)
        row = workflow.wait(run_id)
        assert row["status"] == "waiting", row
        assert f"the gate needs {need} such rows" in row["error"], row["error"]
        assert "gate.min_effect 0.05 with power 0.8" in row["error"], row["error"]
        send(project, 1400, "B", seed=46, label_share=0.6)
        assert workflow.release_waiting(project) == [run_id]
        row = workflow.wait(run_id)
        assert row["status"] in ("promoted", "rejected"), row
        assert row["options"]["training"]["eval_rows"] >= need
    finally:
        workflow.shutdown()
        project.close()


@pytest.mark.slow
def test_the_paired_watch_keeps_an_equal_model_and_records_the_gate_optimism(tmp_path: Path) -> None:
    project = _project(tmp_path / "p", watch="windows = 2\nmin_labels = 100\n")
    config = project.settings.root / "driftloop.toml"
    config.write_text(  # a gate that lets an equal model through; most of its rows replayed
        config.read_text()
        .replace("min_improvement = 0.01", "min_improvement = -1.0")
        .replace("max_regression = { f1_macro = 0.02 }", "max_regression = { f1_macro = 1.0 }")
        .replace("replay_fraction = 0.1", "replay_fraction = 0.8")
    )
    project.close()
    project = Project.load(config)
    try:
        send(project, 900, "A", seed=45, label_share=0.6)
        row = workflow.wait(workflow.start_retrain(project, "manual"))
        assert row["status"] == "promoted", row
        new = project.champion()
        monitor = Monitor(project)
        monitor.run()
        send(project, 600, "A", seed=46, label_share=0.8)  # the same world: any gap is noise
        monitor.run()
        verdict = workflow.post_deploy_watch(project, monitor)
    finally:
        workflow.shutdown()
    assert verdict is not None and verdict["action"] == "watch-kept", verdict
    assert verdict["rows"] >= 100 and verdict["p_value"] is not None and verdict["p_value"] >= 0.05
    assert "on the same" in verdict["reason"] and "kept" in verdict["reason"]
    assert project.champion() == new
    summary = optimism_summary(project)
    assert summary is not None and summary["n"] == 1 and abs(summary["mean"]) < 0.1
    record = summary["records"][0]
    assert record["optimism"] == pytest.approx(record["gate"] - record["live"], abs=1e-6)
    shown = subprocess.run(
        [sys.executable, "-m", "driftloop.cli", "status", "-c", str(config)],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "gate optimism:" in shown.stdout, shown.stdout
    import httpx

    from driftloop.demo.scenario import serve_in_thread
    from driftloop.serving import create_app

    with serve_in_thread(create_app(project, background=False, monitor=False)) as url:
        metrics = httpx.get(f"{url}/metrics").text
    assert f'driftloop_gate_optimism{{model="loan"}} {summary["mean"]}' in metrics, metrics[-600:]
    assert 'driftloop_gate_optimism_promotions{model="loan"} 1' in metrics
    project.close()


def test_the_watch_rolls_back_only_on_significant_harm_beyond_the_tolerance() -> None:
    assert not harmful(0.01, 0.40, tolerance=0.0, alpha=0.05), "worse, but noise"
    assert harmful(0.01, 0.01, tolerance=0.0, alpha=0.05)
    assert not harmful(0.01, 0.01, tolerance=0.02, alpha=0.05), "within the tolerance"
    assert not harmful(-0.03, 0.001, tolerance=0.0, alpha=0.05), "significantly better"
    assert not harmful(0.05, None, tolerance=0.0, alpha=0.05), "no paired test, no verdict of harm"


def test_candidate_settings_are_checked(tmp_path: Path) -> None:
    from driftloop import ConfigError, Settings

    base = {
        "project": {"name": "m", "target": "y", "classes": ["a", "b"]},
        "features": {"x": {"type": "numeric"}},
        "data": {"train": "t.csv"},
        "trainer": {"entrypoint": "t:train"},
    }
    defaults = Settings.from_dict(base).retrain.candidate_windows()
    assert [c.name for c in defaults] == ["all", "recent", "since-alert"] and defaults[1].rows == 1250
    for candidates, message in (
        ([], "needs at least one candidate"),
        ([{"name": "a"}, {"name": "a"}], "candidate names must differ"),
        ([{"name": "a", "rows": 0}], "greater than or equal to 1"),
        ([{"name": "a b"}], "should match pattern"),
    ):
        with pytest.raises(ConfigError, match=message):
            Settings.from_dict({**base, "retrain": {"candidates": candidates}})
