"""The README's quickstart runs exactly as written (with a free port), and its samples hold."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from driftloop import ConfigError, Settings
from driftloop.demo.scenario import free_port

from .conftest import ROOT, cli_env

README = (ROOT / "README.md").read_text()


def quickstart() -> str:
    block = README.split("<!-- quickstart:start -->")[1].split("<!-- quickstart:end -->")[0]
    return block.strip().removeprefix("```bash").removesuffix("```").strip()


def test_quickstart_commands_run(tmp_path: Path) -> None:
    script = quickstart().replace("8000", str(free_port()))
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "now the champion" in out
    # the overall scores in the sentence, each class's in a table beside it
    assert re.search(r"validation accuracy 0\.\d{4}, f1_macro", out) and "validation_" not in out, out
    assert "validation, per class" in out and re.search(r"│ yes +│ +0\.\d{4} │", out), out
    assert '{"accepted":1}' in out
    assert "Closed 1 window(s)" in out
    assert re.search(r"Run retrain-loan-\w+: (promoted|rejected)", out), out
    assert "recent windows" in out and "retrain runs" in out
    project = tmp_path / "loan-project"
    assert (project / ".driftloop" / "driftloop.db").is_file()


def test_readme_config_sample_is_valid(tmp_path: Path) -> None:
    sample = (
        README.split("## Describe the project in `driftloop.toml`")[1].split("```toml")[1].split("```")[0]
    )
    (tmp_path / "driftloop.toml").write_text(sample)
    settings = Settings.load(tmp_path / "driftloop.toml")
    assert settings.alerts[0].retrain and settings.retrain.schedule == "0 0 3 * * *"


def test_readme_error_sample_is_what_users_see(tmp_path: Path) -> None:
    sample = (
        README.split("## Describe the project in `driftloop.toml`")[1].split("```toml")[1].split("```")[0]
    )
    (tmp_path / "driftloop.toml").write_text(sample.replace('window = "1000 rows"', 'window = "-5m"'))
    shown = README.split("A mistake gets one sentence per problem")[1].split("```")[1].strip()
    with pytest.raises(ConfigError) as info:
        Settings.load(tmp_path / "driftloop.toml")
    assert str(info.value) == shown
