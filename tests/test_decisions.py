"""Decisions that beat a cron job: out-of-time evaluation, candidate training windows compared with
a correction, a trigger that waits for evidence, and a paired post-deploy watch."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from driftloop import snapshots, workflow
from driftloop.gate import rows_needed
from driftloop.monitor import Monitor
from driftloop.project import Project
from driftloop.views import status_view
from driftloop.watch import _anchor, harmful, optimism_summary

from .conftest import cli_env, trained_with
from .helpers import html_problems, send


def _retrained_after_a_change(project: Project, seeds: tuple[int, int]) -> dict[str, Any]:
    """600 rows of concept A (half labelled), 1,200 of B (80 %), then a run by hand, to its end."""
    try:
        send(project, 600, "A", seed=seeds[0], label_share=0.5)
        send(project, 1200, "B", seed=seeds[1], label_share=0.8)
        return workflow.wait(workflow.start_retrain(project, "manual"))
    finally:
        workflow.shutdown()


def _promoted_evaluation(
    project: Project, row: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any], pd.DataFrame]:
    """A promoting run's decision, its evaluation dataset and that dataset's rows."""
    assert row["status"] == "promoted", row
    decision = project.store.decision(row["id"])
    assert decision is not None
    evaluation = project.store.dataset(decision["eval_dataset"])
    assert evaluation is not None
    return decision, evaluation, pd.read_parquet(evaluation["path"])


def _promoted_by_hand(project: Project, seed: int) -> tuple[dict[str, Any], str]:
    """900 rows of concept A (60 % labelled), then a run by hand that promotes: (run, new champion)."""
    send(project, 900, "A", seed=seed, label_share=0.6)
    row = workflow.wait(workflow.start_retrain(project, "manual"))
    assert row["status"] == "promoted", row
    new = project.champion()
    assert new is not None
    return row, new


def _printed(command: str, config: Path) -> str:
    """What ``driftloop COMMAND -c CONFIG`` prints, in one line (as wrapped to the terminal's width)."""
    shown = subprocess.run(
        [sys.executable, "-m", "driftloop.cli", command, "-c", str(config)],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    return " ".join(shown.stdout.split())


@pytest.fixture
def backtest_fits(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, str | None, Any]]:
    """Every fit of a backtest fold, as (rows, trainer, params), in order."""
    from driftloop import backtest
    from driftloop.training import fit_model

    fits: list[tuple[int, str | None, Any]] = []

    def counted(project: Project, rows: pd.DataFrame, trainer: str | None = None, params: Any = None) -> Any:
        fits.append((len(rows), trainer, params))
        return fit_model(project, rows, trainer, params)

    monkeypatch.setattr(backtest, "fit_model", counted)
    return fits


@pytest.mark.parametrize(("choose_on", "min_rows"), [("all", 100), ("half", 100), ("half", 160)])
def test_candidates_are_judged_out_of_time_and_the_best_is_gated_with_a_correction(
    tmp_path: Path, choose_on: str, min_rows: int
) -> None:
    """All rows choose the candidate and judge it with p x 2; or ("half"), with rows enough for
    two halves (100 each of 304), every other row chooses and the rest judge; with too few for
    halves (160 each), all rows again."""
    project = trained_with(
        tmp_path / "p",
        retrain='candidates = [{ name = "all" }, { name = "recent", rows = 300 }, '
        '{ name = "same", rows = 5000 }]\nfolds = 1\nprevious_champions = 0\n',
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
    corrected = any("corrected for choosing among 2 candidates)" in r for r in decision["reasons"])
    assert corrected is not halves, decision["reasons"]
    assert ("the other 152 judged it" in row["options"]["chosen"]) is halves, row["options"]["chosen"]
    split = "too few to split: " if choose_on == "half" else ""
    assert (f"on all 304 evaluation rows ({split}the gate's" in row["options"]["chosen"]) is not halves
    loser = "3" if decision["challenger_version"] == "2" else "2"
    assert project.registry.tags(project.name, loser)["driftloop.status"].startswith("not chosen")
    shown_versions = {v["version"]: v for v in status_view(project)["versions"]}  # dashboard, status
    assert shown_versions[loser]["gate"] == f"not chosen ('{ {'2': 'all', '3': 'recent'}[loser] }')"
    assert shown_versions[loser]["run_id"] == row["id"], shown_versions[loser]
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
    project = trained_with(tmp_path / "p")
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
    project = trained_with(tmp_path / "p", gate="min_effect = 0.05\n")
    try:
        champion = project.champion()
        reference = project.store.reference(project.name, champion)  # type: ignore[arg-type]
        score = reference["profile"]["scores"]["accuracy"]  # type: ignore[index]
        need = rows_needed(project.settings.gate, score)
        assert snapshots.evidence(project) == (0, need) and 180 < need < 700, (score, need)
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
    project = trained_with(
        tmp_path / "p",
        retrain='candidates = [{ name = "all" }, { name = "recent", rows = 300 }]\n',
        watch="windows = 2\nmin_labels = 100\n",
    )
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
        row, new = _promoted_by_hand(project, seed=45)
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
    assert verdict["anchor"] is None and "reference" not in verdict["reason"]  # nothing proved
    assert project.champion() == new
    summary = optimism_summary(project)
    assert summary is not None and summary["n"] == 1 and abs(summary["mean"]) < 0.1
    assert summary["se"] is None and summary["se_gain"] is None  # one promotion has no spread
    record = summary["records"][0]
    assert record["optimism"] == pytest.approx(record["gate"] - record["live"], abs=1e-6)
    # the gate's estimate is the winner's score less what choosing among the candidates flattered it by
    estimate = (project.store.run(row["id"]) or {})["options"]["gate_estimate"]
    assert estimate["candidates"] > 1 and estimate["selection_bias"] > 0, estimate
    assert record["gate"] == pytest.approx(estimate["raw"] - estimate["selection_bias"], abs=1e-6)
    assert (
        record["gate_raw"] == pytest.approx(estimate["raw"], abs=1e-6) and record["gate"] < record["gate_raw"]
    )
    assert record["optimism_raw"] == pytest.approx(record["gate_raw"] - record["live"], abs=1e-6)
    # paired: the previous champion's gate score and its score on the same first live rows
    decision = project.store.decision(row["id"])
    assert decision is not None
    gated = next(r for r in decision["rules"] if r["metric"] == "accuracy")
    served = [
        r
        for r in project.store.labelled(project.name, policy=project.settings.feedback)
        if r["model_version"] == new
    ][: record["n"]]
    truth = np.array([r["label"] for r in served], dtype=object)
    X = project.schema.frame([r["inputs"] for r in served], strict=False)
    old_live = float(
        (project.task.predict(project.registry.load(project.name, "1"), X).labels == truth).mean()
    )
    assert record["champion_gate"] == pytest.approx(gated["champion"], abs=1e-6)
    assert record["champion_live"] == pytest.approx(old_live, abs=1e-6)
    promised, delivered = record["gate"] - record["champion_gate"], record["live"] - record["champion_live"]
    assert record["gain_optimism"] == pytest.approx(promised - delivered, abs=1e-5)
    assert summary["mean_gain"] == record["gain_optimism"] and summary["n_gain"] == 1
    from driftloop.ui import render_report

    page = render_report(project)  # the report's calibration table shows the paired figure
    assert f"{record['champion_gate']:.4f}, {record['champion_live']:.4f}" in page
    assert f"{record['gain_optimism']:+.4f}" in page
    assert html_problems(page) == []
    printed = _printed("status", config)
    assert "gate optimism:" in printed and "paired with the previous champion" in printed, printed
    import httpx

    from driftloop.demo.scenario import serve_in_thread
    from driftloop.serving import create_app

    with serve_in_thread(create_app(project, background=False, monitor=False)) as url:
        metrics = httpx.get(f"{url}/metrics").text
    assert f'driftloop_gate_optimism{{model="loan"}} {summary["mean"]}' in metrics, metrics[-600:]
    assert 'driftloop_gate_optimism_promotions{model="loan"} 1' in metrics
    assert f'driftloop_gate_optimism_raw{{model="loan"}} {summary["mean_raw"]}' in metrics
    assert f'driftloop_gate_gain_optimism{{model="loan"}} {summary["mean_gain"]}' in metrics
    assert 'driftloop_gate_optimism_standard_error{model="loan"} NaN' in metrics
    project.close()


def test_the_gate_calibration_gives_the_standard_error_of_its_mean(tmp_path: Path) -> None:
    """Past a limit by chance or by habit: with three promotions' records the mean's standard
    error is shown beside it in ``driftloop status``, ``/metrics`` and the report."""
    project = trained_with(tmp_path / "p")
    lives = (0.85, 0.89, 0.93)  # a gate that promised 0.90 each time
    for i, live in enumerate(lives):
        record = {"metric": "accuracy", "gate": 0.9, "gate_raw": 0.91, "live": live, "n": 100}
        record |= {"optimism": round(0.9 - live, 6), "optimism_raw": round(0.91 - live, 6)}
        record |= {"champion_gate": 0.88, "champion_live": live - 0.01 * i}
        record["gain_optimism"] = round((0.9 - 0.88) - (live - record["champion_live"]), 6)
        project.store.add_run(f"run-{i}", project.name, "manual", {"gate_optimism": record}, "promoted")
    summary = optimism_summary(project)
    assert summary is not None and summary["n"] == 3
    optimism = [0.9 - live for live in lives]
    assert summary["mean"] == pytest.approx(np.mean(optimism), abs=1e-6)
    assert summary["se"] == pytest.approx(np.std(optimism, ddof=1) / np.sqrt(3), abs=1e-6)
    gains = [0.02 - 0.01 * i for i in range(3)]
    assert summary["se_gain"] == pytest.approx(np.std(gains, ddof=1) / np.sqrt(3), abs=1e-6)
    printed = _printed("status", project.settings.root / "driftloop.toml")
    assert f"over 3 promotion(s), standard error {summary['se']:.4f}" in printed, printed
    assert f"{summary['mean_gain']:+.4f}, standard error {summary['se_gain']:.4f}" in printed
    from driftloop.ui import render_report

    report = render_report(project)
    assert f"over 3 promotion(s), standard error {summary['se']:.4f}" in report
    # the calibration chart: a point per promotion, each named with its estimate and live score
    chart = report[report.index('aria-label="gate estimate against the live accuracy"') :]
    chart = chart[: chart.index("</svg>")]
    assert chart.count("<circle") == 3, chart
    for i, live in enumerate(lives):
        assert f"run-{i}: gate 0.9000, live {live:.4f} over 100 rows" in chart
    assert "Below the dashed line (shaded), the gate promised more" in report
    import httpx

    from driftloop.demo.scenario import serve_in_thread
    from driftloop.serving import create_app

    with serve_in_thread(create_app(project, background=False, monitor=False)) as url:
        metrics = httpx.get(f"{url}/metrics").text
    assert f'driftloop_gate_optimism_standard_error{{model="loan"}} {summary["se"]}' in metrics
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
    assert [c.name for c in defaults] == ["all", "half", "recent", "since-alert"]
    assert [defaults[1].rows, defaults[2].rows] == [2500, 1250]
    for candidates, message in (
        ([], "needs at least one candidate"),
        ([{"name": "a"}, {"name": "a"}], "candidate names must differ"),
        ([{"name": "a", "rows": 0}], "greater than or equal to 1"),
        ([{"name": "a b"}], "should match pattern"),
        ([{"name": "a", "trainer": "trainer.train"}], "should match pattern"),
        ([{"name": "a", "params": [1]}], "valid dictionary"),
    ):
        with pytest.raises(ConfigError, match=message):
            Settings.from_dict({**base, "retrain": {"candidates": candidates}})


def test_the_out_of_time_split_makes_folds_of_time_newest_last() -> None:
    from driftloop.candidates import FOLD, fold_pools, out_of_time_split

    prod = pd.DataFrame({"__seq__": range(1, 201), "y": ["a", "b"] * 100})
    pool, evaluation, why = out_of_time_split(prod, champion_cutoff=50, min_rows=20, fraction=0.1, folds=3)
    # a fold is max(20, 0.1 x the 150 rows after the champion's data) = 20 rows; three of them
    assert evaluation["__seq__"].tolist() == list(range(141, 201))
    assert evaluation[FOLD].tolist() == [0] * 20 + [1] * 20 + [2] * 20
    assert [(f["fold"], f["rows"], f["first_seq"], f["last_seq"]) for f in why["folds"]] == [
        (0, 20, 141, 160),
        (1, 20, 161, 180),
        (2, 20, 181, 200),
    ]
    # the final candidates learn from every row before the newest fold, earlier folds included
    assert pool["__seq__"].tolist() == list(range(1, 181))
    # each earlier fold's candidates from the rows before that fold only
    assert [p["__seq__"].max() for p in fold_pools(prod, evaluation)] == [140, 160]
    assert "in 3 folds of time" in why["sentence"]
    # fewer rows after the champion's data than three folds hold: the oldest fold takes the rest
    _, evaluation, _ = out_of_time_split(prod, champion_cutoff=150, min_rows=20, fraction=0.1, folds=3)
    assert evaluation[FOLD].value_counts().sort_index().tolist() == [10, 20, 20]
    # too few rows after the champion's data: topped up from its period, one fold, no backtest
    pool, evaluation, why = out_of_time_split(prod, champion_cutoff=190, min_rows=20, fraction=0.1, folds=3)
    assert set(evaluation[FOLD]) == {0} and len(evaluation) == 20 and why["from_champion_period"] == 10
    assert fold_pools(prod, evaluation) == [] and pool["__seq__"].max() == 180
    # one fold is the single out-of-time holdout of before
    _, one, _ = out_of_time_split(prod, champion_cutoff=50, min_rows=20, fraction=0.1)
    assert one["__seq__"].tolist() == list(range(181, 201)) and set(one[FOLD]) == {0}


def test_max_t_holds_its_level_for_the_best_of_correlated_candidates_and_beats_bonferroni() -> None:
    """Under the null (five candidates no better than the champion, alike because they share most
    of their rows' errors) the corrected p-value of the best one is below 0.1 about 10 % of the
    time, while the uncorrected one is far more often; with one candidate truly better, max-T
    finds it more often than Bonferroni's x5 does."""
    from driftloop.evaluation import max_t

    rng = np.random.default_rng(7)

    def trial(effect: float) -> tuple[float, float, float]:
        shared = rng.choice([-1.0, 0.0, 0.0, 0.0, 1.0], size=(150, 1))  # rows where all differ alike
        own = rng.choice([-1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0], size=(150, 5))
        gains = np.clip(shared + own, -1, 1)
        gains[:, 0] += (rng.random(150) < effect) * (gains[:, 0] < 1)  # candidate 0 better by `effect`
        best = int(gains.mean(axis=0).argmax())
        corrected = max_t(gains, best, n_perm=499, seed=int(rng.integers(1 << 30)))
        alone = max_t(gains[:, [best]], 0, n_perm=499, seed=1)
        return corrected, alone, min(1.0, alone * 5)

    null = np.array([trial(0.0) for _ in range(200)])
    assert 0.04 <= (null[:, 0] < 0.1).mean() <= 0.17, (null[:, 0] < 0.1).mean()
    assert (null[:, 1] < 0.1).mean() > 0.2, "choosing the best of five flatters it without a correction"
    better = np.array([trial(0.12) for _ in range(120)])
    assert (better[:, 0] < 0.1).mean() > (better[:, 2] < 0.1).mean() + 0.05, (
        (better[:, 0] < 0.1).mean(),
        (better[:, 2] < 0.1).mean(),
    )
    # a close candidate with a real gain beside a very different one (an earlier champion, which
    # disagrees with the champion on 40 % of the rows): standardised, the different one does not
    # swamp the correction (on raw mean gains it would: found about a quarter of the time)
    found = []
    for _ in range(150):
        close = (rng.random(300) < 0.06).astype(float) - (rng.random(300) < 0.02)
        far = rng.choice([-1.0, 0.0, 1.0], size=300, p=[0.2, 0.6, 0.2])
        gains = np.column_stack([np.clip(close, -1, 1), far])
        found.append(max_t(gains, 0, n_perm=499, seed=int(rng.integers(1 << 30))) < 0.1)
    assert np.mean(found) > 0.6, np.mean(found)


def test_the_selection_bias_removes_most_of_the_winners_curse_and_never_overcorrects() -> None:
    """Five candidates on the same 270 rows, alike in some rows' errors. Over many trials the
    chosen one's score exceeds its true accuracy by the winner's curse; the bootstrap estimate of
    that excess takes most of it away and, where one candidate is clearly better (little curse),
    does not take more than there is."""
    from scipy.stats import norm

    from driftloop.evaluation import selection_bias

    rng = np.random.default_rng(3)

    def trial(truth: list[float]) -> tuple[float, float]:
        latent = np.sqrt(0.5) * rng.standard_normal((270, 1)) + np.sqrt(0.5) * rng.standard_normal((270, 5))
        scores = (latent < norm.ppf(truth)).astype(float)
        means = scores.mean(axis=0)
        best = int(means.argmax())
        return means[best] - truth[best], selection_bias(scores, n_boot=300, seed=int(rng.integers(1 << 30)))

    alike = np.array([trial([0.83] * 5) for _ in range(150)])
    curse, estimated = alike.mean(axis=0)
    assert curse > 0.01, curse  # choosing flatters equally good candidates
    assert 0.5 * curse < estimated <= 1.1 * curse, (curse, estimated)
    assert abs(np.mean(alike[:, 0] - alike[:, 1])) < 0.5 * curse  # what is left once corrected
    clear = np.array([trial([0.90, 0.80, 0.80, 0.79, 0.78]) for _ in range(100)])
    assert clear[:, 1].mean() <= max(0.004, 1.3 * clear[:, 0].mean()), clear.mean(axis=0)


def test_the_selection_bias_is_measured_on_the_rows_reported() -> None:
    """Every row chooses, the estimate is read on some: where the candidates agree on every
    reported row, choosing cannot flatter the score read there, however much it flatters the
    score over all rows; on rows where they disagree it flatters as much as on all of them."""
    from driftloop.evaluation import selection_bias

    rng = np.random.default_rng(5)
    disagree = (rng.random((300, 4)) < 0.8).astype(float)
    agree = np.repeat((rng.random((300, 1)) < 0.8).astype(float), 4, axis=1)
    scores = np.vstack([disagree, agree])
    first = np.arange(600) < 300
    assert selection_bias(scores) > 0.005
    assert selection_bias(scores, report=~first) == 0.0
    alone = selection_bias(disagree)
    assert 0.5 * alone < selection_bias(scores, report=first) < 1.5 * alone
    assert selection_bias(scores, report=np.ones(600, dtype=bool)) == selection_bias(scores)


def test_the_gate_rejects_a_challenger_that_loses_the_newest_fold_and_weighs_the_corrected_p() -> None:
    from driftloop.config import GateSettings
    from driftloop.gate import decide

    policy = GateSettings(min_eval_rows=30)
    newest = {"rows": 30, "first_seq": 71, "last_seq": 100, "champion": 0.80, "challenger": 0.70}
    d = decide(policy, {"accuracy": 0.80}, {"accuracy": 0.85}, n=90, newest=newest)
    assert not d.accepted
    assert d.reasons == [
        "On the newest fold of the backtest (30 rows, seq 71-100) accuracy fell by 0.1000 "
        "(0.8000 -> 0.7000), more than the tolerated 0.0000: the challenger does worse on the most "
        "recent rows."
    ]
    tied = {**newest, "challenger": 0.80}
    assert decide(policy, {"accuracy": 0.80}, {"accuracy": 0.85}, n=90, newest=tied).accepted
    loose = GateSettings(min_eval_rows=30, max_newest_fold_regression=0.2)
    assert decide(loose, {"accuracy": 0.80}, {"accuracy": 0.85}, n=90, newest=newest).accepted
    off = GateSettings(min_eval_rows=30, max_newest_fold_regression=None)
    assert decide(off, {"accuracy": 0.80}, {"accuracy": 0.85}, n=90, newest=newest).accepted
    # an error metric regresses by rising
    errors = GateSettings(primary_metric="mae", min_eval_rows=30)
    worse = {"rows": 30, "first_seq": 1, "last_seq": 30, "champion": 2.0, "challenger": 2.5}
    d = decide(errors, {"mae": 2.0}, {"mae": 1.5}, n=90, lower_is_better=frozenset({"mae"}), newest=worse)
    assert not d.accepted and "mae rose by 0.5000" in d.reasons[0]
    # significance: the one-sided p corrected for the candidates, against gate.alpha
    strict = GateSettings(min_eval_rows=30, require_significance=True, alpha=0.5)
    d = decide(
        strict, {"accuracy": 0.80}, {"accuracy": 0.82}, n=90, p_value=0.6, p_improvement=0.3, compared=4
    )
    assert d.accepted, d.reasons
    assert "(McNemar p = 0.6; one-sided p = 0.3 for an improvement, corrected for choosing among 4 " in (
        " ".join(d.reasons)
    )
    d = decide(strict, {"accuracy": 0.80}, {"accuracy": 0.82}, n=90, p_value=0.6, p_improvement=0.62)
    assert not d.accepted
    assert d.reasons == [
        "The accuracy improvement is not significant: one-sided p = 0.62, not below gate.alpha 0.5; "
        "the gate needs evidence."
    ]


def test_a_backtest_judges_each_fold_with_models_that_never_saw_it(
    tmp_path: Path, backtest_fits: list[tuple[int, str | None, Any]]
) -> None:
    """With retrain.folds = 3 the gate judges on three folds of time: the newest predicted by the
    registered candidate, the earlier ones by its window refitted on the rows before each fold,
    every one by the champion; the pooled scores it records are those; a refit's reference takes
    the run's held-out predictions, not a score on rows it learned from. Windows that hold the
    same rows for a fold are fitted once."""
    from driftloop.candidates import FOLD
    from driftloop.tasks import ROW
    from driftloop.training import fit_model

    project = trained_with(
        tmp_path / "p",
        retrain='folds = 3\nrefit = true\ncandidates = [{ name = "all" }, { name = "recent", rows = 600 }]\n',
    )
    row = _retrained_after_a_change(project, (51, 52))
    decision, evaluation, frame = _promoted_evaluation(project, row)
    folds = evaluation["manifest"]["out_of_time"]["folds"]
    assert [f["fold"] for f in folds] == [0, 1, 2] and sorted(set(frame[FOLD])) == [0, 1, 2]
    assert "in 3 folds of time" in row["options"]["training"]["evaluation"]
    seq = {r["prediction_id"]: r["seq"] for r in project.store.labelled(project.name)}
    # every backtest training set holds only rows from before its fold (the run names each one)
    snapshots = Path(project.settings.store.snapshots)
    candidates = row["options"]["training"]["candidates"]
    assert [c["name"] for c in candidates] == ["all", "recent"]
    for c in candidates:
        assert [f["fold"] for f in c["backtest"]] == [0, 1], c
        for f in c["backtest"]:
            keys = pd.read_parquet(snapshots / f"{f['snapshot']}.parquet")["__key__"]
            trained = [seq[k.removeprefix("pred:")] for k in keys if k.startswith("pred:")]
            assert max(trained) < folds[f["fold"]]["first_seq"], f
    # before each earlier fold fewer rows than 'recent' holds: both windows are the whole pool there,
    # and each fold's set is fitted once
    sets = {(f["snapshot"], f["fold"]) for c in candidates for f in c["backtest"]}
    assert len(backtest_fits) == len(sets) == 2 < sum(len(c["backtest"]) for c in candidates), (
        sets,
        backtest_fits,
    )
    # the pooled scores the gate recorded are the backtest's: refit and predict each fold again
    evaluated = row["options"]["evaluated_version"]
    name = project.registry.tags(project.name, evaluated)["driftloop.candidate"]
    X, truth = project.schema.frame(frame), frame[project.settings.project.target].astype(str).to_numpy()
    made = project.task.predict(project.registry.load(project.name, evaluated), X).labels.astype(object)
    for f in next(c for c in candidates if c["name"] == name)["backtest"]:
        rows = np.flatnonzero(frame[FOLD].to_numpy() == f["fold"])
        model = fit_model(project, pd.read_parquet(snapshots / f"{f['snapshot']}.parquet"))
        made[rows] = project.task.predict(model, X.iloc[rows]).labels
    champion = project.task.predict(project.registry.load(project.name, "1"), X).labels
    rule = next(r for r in decision["rules"] if r["rule"] == "min_improvement")
    assert rule["challenger"] == pytest.approx((made == truth).mean())
    assert rule["champion"] == pytest.approx((champion == truth).mean())
    assert decision["eval_rows"] == len(frame)
    newest = next(r for r in decision["rules"] if r["rule"] == "max_newest_fold_regression")
    last = frame[FOLD].to_numpy() == 2
    assert newest["challenger"] == pytest.approx((made[last] == truth[last]).mean())
    # `driftloop runs RUN_ID` says who predicted each fold of the challenger's
    from typer.testing import CliRunner

    from driftloop.cli import app

    listed = CliRunner().invoke(
        app, ["runs", row["id"], "-c", str(project.settings.root / "driftloop.toml")], env={"COLUMNS": "400"}
    )
    assert listed.exit_code == 0, listed.output
    printed = " ".join(listed.output.split())
    for f in next(c for c in candidates if c["name"] == name)["backtest"]:
        said = f"predicted by '{name}' fitted on the {f['rows']} rows before this fold"
        assert f"fold {f['fold']} (" in printed and said in printed, printed
    assert f"predicted by version {evaluated} itself" in printed, printed
    # every fold predicted by the winner's recipe: the estimate is read on every row, as the gate's
    estimate = row["options"]["gate_estimate"]
    assert estimate["rows"] == len(frame) and estimate["raw"] == pytest.approx(rule["challenger"], abs=1e-6)
    assert estimate["champion"] == pytest.approx(rule["champion"], abs=1e-6)
    assert f"gate estimate: accuracy {estimate['value']:.4f} ({estimate['raw']:.4f})" in printed, printed
    # the deployed refit's reference: the held-out predictions of its run, every row
    deployed = row["options"]["deployed_version"]
    assert deployed != evaluated and project.champion() == deployed
    shown = {v["version"]: v for v in status_view(project)["versions"]}  # what deployed, and why
    assert (shown[deployed]["role"], shown[deployed]["gate"]) == ("champion", f"refit of {evaluated}")
    assert shown[deployed]["run_id"] == shown[evaluated]["run_id"] == row["id"], shown
    held = project.store.dataset(project.registry.tags(project.name, deployed)["driftloop.heldout"])
    assert held is not None
    assert sorted(pd.read_parquet(held["path"])[ROW]) == list(range(len(frame)))
    reference = project.store.reference(project.name, deployed)
    assert reference is not None
    assert reference["profile"]["scores"]["accuracy"] == pytest.approx(rule["challenger"], abs=1e-6)
    project.close()


def test_the_gate_estimate_leaves_out_a_fold_where_the_champion_stood_in(tmp_path: Path) -> None:
    """An alert late in the new concept: the evaluation reaches back before it, so the
    since-alert window (which beats a careless recipe) had no rows before the earliest fold and
    the champion predicted that fold on the challenger's side too. The decision pools every fold (it
    judges the recipe); the estimate of the model deployed, and the champion's score the gate
    optimism's paired figure compares it with, are read on the folds the winner's recipe
    predicted."""
    from driftloop.candidates import FOLD
    from driftloop.training import fit_model
    from driftloop.watch import gate_optimism

    project = trained_with(
        tmp_path / "p",
        retrain="folds = 3\nprevious_champions = 0\n"
        'candidates = [{ name = "careless", trainer = "trainer:careless" }, '
        '{ name = "since-alert", since_alert = true }]\n',
    )
    try:  # an alert on the first rows of the new concept starts the run
        send(project, 600, "A", seed=51, label_share=0.5)
        send(project, 1200, "B", seed=52, label_share=0.8)
        row = workflow.wait(workflow.start_retrain(project, "alert", since_seq=1500))
    finally:
        workflow.shutdown()
    decision, _, frame = _promoted_evaluation(project, row)
    evaluated = decision["challenger_version"]
    name = project.registry.tags(project.name, evaluated)["driftloop.candidate"]
    backtest = next(c for c in row["options"]["training"]["candidates"] if c["name"] == name)["backtest"]
    assert [(f["fold"], f["snapshot"] is None) for f in backtest] == [(0, True), (1, False)], backtest
    assert backtest[0]["why"] == "was left out before this fold: no labelled rows since the alert yet"
    # each side's predictions: the champion's on fold 0, the fold-1 refit's, the winner's own on fold 2
    snapshots = Path(project.settings.store.snapshots)
    X, truth = project.schema.frame(frame), frame[project.settings.project.target].astype(str).to_numpy()
    champion = project.task.predict(project.registry.load(project.name, "1"), X).labels
    made = project.task.predict(project.registry.load(project.name, evaluated), X).labels.astype(object)
    fold = frame[FOLD].to_numpy()
    made[fold == 0] = champion[fold == 0]
    refit = fit_model(project, pd.read_parquet(snapshots / f"{backtest[1]['snapshot']}.parquet"))
    made[fold == 1] = project.task.predict(refit, X.iloc[np.flatnonzero(fold == 1)]).labels
    rule = next(r for r in decision["rules"] if r["rule"] == "min_improvement")
    assert rule["challenger"] == pytest.approx((made == truth).mean())  # the decision: every fold
    estimate = project.store.run(row["id"])["options"]["gate_estimate"]  # type: ignore[index]
    own = fold > 0
    assert estimate["rows"] == own.sum() < len(frame), estimate
    assert estimate["raw"] == pytest.approx((made[own] == truth[own]).mean(), abs=1e-6)
    assert estimate["champion"] == pytest.approx((champion[own] == truth[own]).mean(), abs=1e-6)
    assert estimate["raw"] != pytest.approx(rule["challenger"], abs=1e-4)
    assert (
        f"; on the {estimate['rows']} rows its own recipe predicted (the champion stood in on the rest) it "
        f"scored {estimate['raw']:.4f}, so the gate expects {estimate['value']:.4f}"
    ) in row["options"]["chosen"], row["options"]["chosen"]
    # the gate optimism is measured from that estimate, and pairs it with the champion on the same rows
    record = gate_optimism(project, row["id"], live=0.75, n=len(frame), live_old=0.65)
    assert record is not None
    assert record["gate_raw"] == pytest.approx(estimate["raw"], abs=1e-6)
    assert record["gate"] == pytest.approx(estimate["value"], abs=1e-6)
    assert record["champion_gate"] == pytest.approx(estimate["champion"], abs=1e-6)
    promised = estimate["value"] - estimate["champion"]
    assert record["gain_optimism"] == pytest.approx(promised - 0.1, abs=1e-6)
    # `driftloop runs RUN_ID` says what the estimate was read on, and what it later met live
    from typer.testing import CliRunner

    from driftloop.cli import app

    listed = CliRunner().invoke(
        app, ["runs", row["id"], "-c", str(project.settings.root / "driftloop.toml")], env={"COLUMNS": "400"}
    )
    assert listed.exit_code == 0, listed.output
    printed = " ".join(listed.output.split())
    said = (
        f"gate estimate: accuracy {estimate['value']:.4f} ({estimate['raw']:.4f} on {estimate['rows']} of "
        f"the {len(frame)} evaluation rows, those the winner's recipe predicted (the champion stood in on "
        f"the rest)); live 0.7500 on its first {len(frame)} rows (gate optimism {record['optimism']:+.4f})"
    )
    assert said in printed, printed
    assert f"the champion stood in: 'since-alert' {backtest[0]['why']}" in printed, printed
    assert f"(backtest: fold 0 not fitted, fold 1 {backtest[1]['rows']} rows)" in printed, printed
    project.close()


def test_candidates_with_their_own_trainer_compete_on_the_same_rows(
    tmp_path: Path, backtest_fits: list[tuple[int, str | None, Any]]
) -> None:
    """Two candidates on the same rows with different recipes are both trained, not merged as
    duplicates; each earlier backtest fold is fitted once per recipe, not shared; every version
    records its own trainer and keyword arguments, and the accepted winner is refitted with its
    recipe, not the project's."""
    from driftloop.tasks import read_predictions

    project = trained_with(
        tmp_path / "p",
        retrain="folds = 2\nrefit = true\nprevious_champions = 0\ncandidates = ["
        '{ name = "careless", trainer = "trainer:careless" }, '
        '{ name = "boosted", params = { max_iter = 60 } }]\n',
    )
    row = _retrained_after_a_change(project, (61, 62))
    assert row["status"] == "promoted", row
    training = row["options"]["training"]
    assert [c["name"] for c in training["candidates"]] == ["careless", "boosted"], training
    assert training["left_out"] == []
    careless, boosted = training["candidates"]
    assert careless["recipe"] == {"trainer": "trainer:careless", "params": {}}
    assert boosted["recipe"] == {"trainer": None, "params": {"max_iter": 60, "learning_rate": 0.1}}
    assert careless["rows"] == boosted["rows"] and "fitted by trainer:careless" in careless["window"]
    assert [f["snapshot"] for f in careless["backtest"]] == [f["snapshot"] for f in boosted["backtest"]]
    # the earlier fold's rows are the same for both, its fits are not
    fits = [(trainer, params) for _, trainer, params in backtest_fits]
    assert fits == [("trainer:careless", {}), (None, {"max_iter": 60, "learning_rate": 0.1})], fits
    folder = Path(project.settings.store.snapshots) / "backtest"
    made = [read_predictions(pd.read_parquet(folder / f"{row['id']}-{i}.parquet")).labels for i in (0, 1)]
    assert len(set(made[0])) == 1 < len(set(made[1]))  # the prior's one class; the boosted tree's two
    evaluated, deployed = row["options"]["evaluated_version"], row["options"]["deployed_version"]
    assert project.registry.tags(project.name, evaluated)["driftloop.candidate"] == "boosted"
    for version in (evaluated, deployed):
        assert project.registry.load(project.name, version).steps[-1][1].max_iter == 60
    loser = next(
        v["version"]
        for v in project.registry.versions(project.name)
        if project.registry.tags(project.name, v["version"]).get("driftloop.candidate") == "careless"
    )
    assert project.registry.tags(project.name, loser)["driftloop.trainer"] == "trainer:careless"
    assert type(project.registry.load(project.name, loser)).__name__ == "DummyClassifier"
    project.close()


def test_a_candidate_trainer_that_cannot_be_imported_fails_the_run_before_any_training(
    tmp_path: Path,
) -> None:
    project = trained_with(
        tmp_path / "p",
        retrain='candidates = [{ name = "all" }, { name = "lost", trainer = "nowhere:train" }]\n',
    )
    try:
        send(project, 900, "B", seed=63, label_share=0.8)
        row = workflow.wait(workflow.start_retrain(project, "manual"))
    finally:
        workflow.shutdown()
    assert row["status"] == "failed", row
    assert "The 'retrain.candidates[lost].trainer' setting must name an importable module" in row["error"]
    assert "'nowhere:train'" in row["error"]
    assert [v["version"] for v in project.registry.versions(project.name)] == ["1"]
    project.close()


def test_an_earlier_champion_competes_again_and_comes_back_as_it_was(tmp_path: Path) -> None:
    """A world that returns to an earlier concept: with retrain.previous_champions, the champion
    of that concept is a candidate again, wins on the recent rows, and is promoted without being
    retrained or refitted; what it learned from (its cutoff) and its own record stay its own."""
    project = trained_with(tmp_path / "p", retrain="previous_champions = 1\nrefit = true\n")
    try:
        send(project, 1500, "B", seed=53, label_share=0.8)
        first = workflow.wait(workflow.start_retrain(project, "manual"))
        assert first["status"] == "promoted", first
        second_champion = project.champion()
        status_of_1 = project.registry.tags(project.name, "1").get("driftloop.status")
        send(project, 1500, "A", seed=54, label_share=0.8)  # the first concept is back
        before = len(project.registry.versions(project.name))
        row = workflow.wait(workflow.start_retrain(project, "manual"))
    finally:
        workflow.shutdown()
    assert row["status"] == "promoted", row
    names = [c["name"] for c in row["options"]["training"]["candidates"]]
    assert names[-1] == "champion-1" and second_champion != "1", names
    assert project.champion() == "1" and row["options"]["reused"] == "1"
    decision = project.store.decision(row["id"])
    assert decision is not None and decision["challenger_version"] == "1"
    assert "deployed_version" not in row["options"], "an earlier champion is not refitted"
    trained = len(project.registry.versions(project.name)) - before
    assert trained == len(names) - 1, "the candidate windows were trained, the earlier champion not"
    assert snapshots.champion_cutoff(project, "1") == 0, "it learned from nothing after its own data"
    assert project.registry.tags(project.name, "1").get("driftloop.status") == status_of_1
    assert "champion-1" in row["options"]["chosen"], row["options"]["chosen"]
    project.close()


def test_runs_says_where_the_champion_stood_in_for_a_window_too_small_to_train() -> None:
    """A backtest fold the winning window had too few rows for is scored by the champion (the
    recipe would have served it there); `driftloop runs` says so rather than show the two equal
    scores unexplained."""
    from driftloop._show import fold_predictor

    options = {
        "candidates": [
            {"name": "all", "version": "3", "chosen": False},
            {"name": "since-alert", "version": "4", "chosen": True},
        ],
        "training": {
            "candidates": [
                {"name": "all", "backtest": [{"fold": 0, "rows": 300}, {"fold": 1, "rows": 340}]},
                {"name": "since-alert", "backtest": [{"fold": 0, "rows": 0}, {"fold": 1, "rows": 100}]},
            ]
        },
    }
    said = [fold_predictor(options, {"fold": i}) for i in (0, 1, 2)]
    assert said == [
        "; the champion stood in: 'since-alert' had fewer rows before this fold than retrain.min_train_rows",
        "; predicted by 'since-alert' fitted on the 100 rows before this fold",
        "; predicted by version 4 itself",
    ]
    # the run's own reason, where it recorded one (the sentence above is for runs that did not)
    why = "was left out before this fold: no labelled rows since the alert yet"
    options["training"]["candidates"][1]["backtest"][0]["why"] = why  # type: ignore[index]
    assert fold_predictor(options, {"fold": 0}) == f"; the champion stood in: 'since-alert' {why}"
    assert fold_predictor({"folds": []}, {"fold": 0}) == ""  # a run that chose nothing


def test_a_new_champions_reference_is_its_evaluation_periods_traffic_and_own_outputs(tmp_path: Path) -> None:
    """After a retrain across a change, the winner's feature reference is every request served
    over its evaluation rows' span, labelled or not: the new concept's traffic is not drift
    against it, while against the winner's own training rows (the old concept's replayed and
    production rows beside the new) most features would stay drifted after every retrain. Its
    output reference is the evaluated model's own outputs on the requests of that span it did
    not learn from, and its label-free estimator calibrates the model's own predictions (the
    newest fold), not the backtest's refits'."""
    from driftloop.candidates import FOLD
    from driftloop.drift import compare
    from driftloop.profiles import Profile
    from driftloop.training import output_frame, reference_profiles

    project = trained_with(
        tmp_path / "p", retrain='candidates = [{ name = "all" }]\nfolds = 2\nprevious_champions = 0\n'
    )
    row = _retrained_after_a_change(project, (61, 62))
    decision, evaluation, frame = _promoted_evaluation(project, row)
    period = evaluation["manifest"]["period"]
    seq = {f"pred:{r['prediction_id']}": r["seq"] for r in project.store.labelled(project.name)}
    judged = [seq[k] for k in frame["__key__"] if k.startswith("pred:")]
    assert (period["first_seq"], period["last_seq"]) == (min(judged), max(judged))
    served = project.store.served_inputs(project.name, period["first_seq"], period["last_seq"], 10**6)
    assert period["rows"] == len(served) == period["last_seq"] - period["first_seq"] + 1 > len(judged)
    reference = Monitor(project).reference()
    assert reference.version == decision["challenger_version"] == project.champion()
    assert reference.features.n == period["rows"]  # the unlabelled requests of the period too
    said = row["options"]["training"]["reference"]
    assert said == (
        f"the {period['rows']} requests served over seq {period['first_seq']}-{period['last_seq']}, "
        "labelled or not"
    )
    # the new concept's next requests, against this reference and against the training rows
    from driftloop.demo.data import applicants

    later = project.schema.profile_frame(
        project.schema.frame(applicants(1000, "B", seed=63).drop(columns="approved"))
    )
    settings = project.settings.monitor
    limits = {"fdr": settings.fdr, "min_ks": settings.min_ks, "min_linf": settings.min_linf}
    now = compare(reference.features, Profile.from_frame(reference.features.spec, later), **limits)
    assert now.drifted == [], now.columns
    tags = project.registry.tags(project.name, project.champion() or "")
    trained_on = pd.read_parquet(project.store.dataset(tags["driftloop.dataset"])["path"])  # type: ignore[index]
    model = project.registry.load(project.name, project.champion() or "")
    old = Profile.from_dict(reference_profiles(project, trained_on, model)["features"])
    before = compare(old, Profile.from_frame(old.spec, later), **limits)
    assert len(before.drifted) >= 3, before.columns
    # the outputs: the evaluated model's on the period's requests outside its training rows
    evaluated = tags.get("driftloop.refit_of") or project.champion() or ""
    learned = project.store.dataset(project.registry.tags(project.name, evaluated)["driftloop.dataset"])
    keys = set(pd.read_parquet(learned["path"])["__key__"])  # type: ignore[index]
    requests = pd.read_parquet(project.store.dataset(period["id"])["path"])  # type: ignore[index]
    unseen = ~requests["__key__"].isin(keys)
    assert reference.outputs.n == unseen.sum() < len(requests), (reference.outputs.n, len(requests))
    assert unseen.sum() > (frame[FOLD] == frame[FOLD].max()).sum()  # the newest fold and unlabelled rows
    served = output_frame(project, model, applicants(1000, "B", seed=63).drop(columns="approved"))
    outputs = compare(reference.outputs, Profile.from_frame(reference.outputs.spec, served), **limits)
    assert outputs.drifted == [], outputs.columns
    # the label-free estimator calibrates the evaluated model's own predictions: the newest fold's
    newest = frame[frame[FOLD] == frame[FOLD].max()]
    assert 0 < len(newest) < len(frame)
    judge = project.registry.load(project.name, evaluated)
    expected = project.task.fit_estimator(
        project.schema.profile_frame(project.schema.frame(newest)),
        output_frame(project, judge, newest),
        newest[project.settings.project.target].astype(str).to_numpy(),
    )
    assert reference.estimator == expected
    from typer.testing import CliRunner

    from driftloop.cli import app

    config = str(project.settings.root / "driftloop.toml")
    listed = CliRunner().invoke(app, ["runs", row["id"], "-c", config], env={"COLUMNS": "400"})
    assert listed.exit_code == 0, listed.output
    assert f"a new champion's feature reference: {said}" in " ".join(listed.output.split()), listed.output
    # `driftloop reference` says which rows each part rests on
    shown = CliRunner().invoke(app, ["reference", "-c", config], env={"COLUMNS": "400"})
    assert shown.exit_code == 0, shown.output
    for part, rows in [
        ("features", f"the {period['rows']} requests served over its evaluation period, labelled or not"),
        ("outputs", f"its outputs on the {unseen.sum()} of those requests it did not learn from"),
        ("scores", f"the {len(frame)} held-out rows"),
        ("calibration", f"the {len(newest)} rows of the newest fold, which it predicted itself"),
    ]:
        assert f"{part}: {rows}" in shown.output, shown.output
    project.close()


def _served_with_accuracy(project: Project, n: int, seed: int, accuracy: float) -> None:
    """``n`` applicants through the API, every one labelled so that exactly ``accuracy`` of the
    served predictions are right (the rest get the other class): a live score set by the test."""
    import httpx

    from driftloop.demo.data import applicants
    from driftloop.demo.scenario import serve_in_thread
    from driftloop.serving import create_app

    records = applicants(n, "A", seed=seed).drop(columns="approved").to_dict(orient="records")
    wrong = set(range(n - round(n * (1 - accuracy)), n))
    classes = project.task.classes
    with serve_in_thread(create_app(project, background=False)) as url, httpx.Client(base_url=url) as client:
        r = client.post("/predict", json={"records": records})
        assert r.status_code == 200, r.text
        served = r.json()["predictions"]
        labels = [
            {
                "prediction_id": p["prediction_id"],
                "label": next(c for c in classes if c != p["label"]) if i in wrong else p["label"],
            }
            for i, p in enumerate(served)
        ]
        assert client.post("/feedback", json={"feedback": labels}).status_code == 200


def _alerts(project: Project, rule: str) -> list[dict[str, Any]]:
    return project.store.alerts(project.name, limit=50, rule=rule)


def test_a_watch_that_sees_the_model_do_better_live_raises_its_reference(tmp_path: Path) -> None:
    """The gate scored the winner on held-out rows; live it does clearly better. The watch raises
    the reference to the bound of the live score, so a rule 1 point below the reference fires on
    a window at the held-out score, which it would have let through; the watch's own windows are
    not judged again, and ``driftloop reference`` says what was raised."""
    project = trained_with(
        tmp_path / "p",
        retrain='candidates = [{ name = "all" }]\n',
        watch="windows = 2\nmin_labels = 100\n",
        gate="max_newest_fold_regression = 1.0",
    )
    config = project.settings.root / "driftloop.toml"
    config.write_text(  # a gate that lets any challenger through: the watch is what is tested
        config.read_text()
        .replace("min_improvement = 0.01", "min_improvement = -1.0")
        .replace("max_regression = { f1_macro = 0.02 }", "max_regression = { f1_macro = 1.0 }")
        + '\n[[alerts]]\nname = "below-reference"\nmetric = "accuracy"\nop = "<"\nthreshold = -0.01\n'
        'relative_to = "reference"\nmin_samples = 30\n'
    )
    project.close()
    project = Project.load(config)
    try:
        _, new = _promoted_by_hand(project, seed=47)
        monitor = Monitor(project)
        monitor.run()
        held_out = monitor.reference().scores["accuracy"]
        assert held_out < 0.97, held_out  # room above it for the live score to prove
        # live rows replace held-out ones only where there are at least as many of them
        scored = monitor.reference().row["profile"]["scored_rows"]
        assert 100 < scored < 600, scored
        assert _anchor(project, new, {"accuracy": 0.999}, scored - 1, 0) is None
        assert _anchor(project, new, {"accuracy": 0.999}, scored, 0) is not None
        _served_with_accuracy(project, 300, seed=48, accuracy=1.0)
        _served_with_accuracy(project, 300, seed=49, accuracy=round(held_out, 2))
        monitor.run()
        assert _alerts(project, "below-reference") == []  # at the held-out score: no breach
        verdict = workflow.post_deploy_watch(project, monitor)
        assert verdict is not None and verdict["action"] == "watch-kept", verdict
        anchor = verdict["anchor"]
        assert anchor is not None and "95 % lower bound" in verdict["reason"], verdict
        raised = anchor["metrics"]["accuracy"]
        live = (1.0 + round(held_out, 2)) / 2
        assert raised["held_out"] == pytest.approx(held_out, abs=1e-6)
        assert held_out + 0.01 < raised["bound"] < live, (raised, live)  # below the live mean: a bound
        kept = project.store.promotions(project.name)[-1]
        assert kept["action"] == "watch-kept" and kept["detail"]["anchor"]["metrics"] == anchor["metrics"]
        monitor.run()  # the watch's second window is below the raised threshold, but judged already
        assert _alerts(project, "below-reference") == []
        _served_with_accuracy(project, 300, seed=50, accuracy=round(held_out, 2))
        monitor.run()
        fired = _alerts(project, "below-reference")
        assert len(fired) == 1, fired
        assert f"< {raised['bound'] - 0.01:g}" in fired[0]["message"], fired[0]["message"]
    finally:
        workflow.shutdown()
    said = f"set by its post-deploy watch: accuracy {held_out:.4f} → {raised['bound']:.4f}"
    assert said in _printed("reference", config)
    project.close()
