"""Every template's scenario runs the whole loop over HTTP: drift, alert, retrain, gate, promote,
and a careless candidate rejected (small streams; ``driftloop demo`` runs them full size)."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from driftloop.cli import app
from driftloop.demo.project import TEMPLATES
from driftloop.demo.scenario import SCENARIOS, run_demo
from driftloop.project import Project


def test_init_writes_each_template_and_refuses_an_unknown_one(tmp_path: Path) -> None:
    assert sorted(SCENARIOS) == ["documents", "images", "loan", "regression"]
    # the blog and forms scenarios: test_generation.py and test_extraction.py
    assert sorted(TEMPLATES) == sorted([*SCENARIOS, "blog", "forms"])
    for name in TEMPLATES:
        result = CliRunner().invoke(app, ["init", str(tmp_path / name), "--template", name])
        assert result.exit_code == 0, result.output
        project = Project.load(tmp_path / name / "driftloop.toml")
        try:
            target = project.settings.project.target
            data = (tmp_path / name / "data" / "train.csv").read_text().splitlines()
            assert target in data[0] and len(data) > 1000
            assert (tmp_path / name / "trainer.py").read_text().count("def careless") == 1
        finally:
            project.close()
    wrong = CliRunner().invoke(app, ["init", str(tmp_path / "x"), "--template", "videos"])
    assert wrong.exit_code == 2 and "'videos'" in wrong.output and "documents" in wrong.output
    assert not (tmp_path / "x" / "driftloop.toml").exists()


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_each_scenario_recovers_from_its_drift(name: str, tmp_path: Path) -> None:
    result = run_demo(
        tmp_path / name,
        scenario=name,
        windows=8,
        drift_at=3,
        window_rows=450,
        label_share=0.4,
        console=Console(quiet=True),
    )
    assert result.promoted >= 1, result.summary
    assert result.rejected >= 1, result.summary  # the careless candidate
    lower = result.metric == "mae"

    def better(a: float, b: float) -> bool:
        return a < b if lower else a > b

    assert better(result.before, result.after_drift), result.summary  # the drift hurt
    assert better(result.after_promotion, result.after_drift), result.summary  # the loop repaired it
    assert (tmp_path / name / "summary.txt").read_text().startswith(result.metric)
