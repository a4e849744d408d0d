"""Text features are monitored by default (length plus the hashing embedding), and a setting the
reference predates is said, and fixed by rebuilding the reference."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from driftloop.demo.project import write_example
from driftloop.demo.scenario import serve_in_thread
from driftloop.monitor import Monitor
from driftloop.project import Project
from driftloop.training import train

from .test_custom import NEW_NOTES, OLD_NOTES, batch, notes
from .test_hardening import _driftloop


def _project(folder: Path, embedding_line: str) -> Project:
    config = write_example(folder, rows=1500, window="300 rows")
    config.write_text(
        config.read_text().replace("[store]", f'[features.note]\ntype = "text"\n{embedding_line}\n[store]')
    )
    trainer = folder / "trainer.py"
    trainer.write_text(
        trainer.read_text().replace("if c not in numeric]", 'if c not in numeric and c != "note"]')
    )
    data = pd.read_csv(folder / "data" / "train.csv")
    data["note"] = notes(len(data), OLD_NOTES, 0)
    data.to_csv(folder / "data" / "train.csv", index=False)
    project = Project.load(config)
    train(project)
    return project


def test_text_is_embedded_by_default_and_new_vocabulary_drifts(tmp_path: Path) -> None:
    import httpx

    from driftloop.serving import create_app

    project = _project(tmp_path / "p", "")
    assert project.settings.features["note"].embedding == "driftloop.embeddings:hashing"
    assert Monitor(project).reference_gaps() == []
    with serve_in_thread(create_app(project, background=False)) as url, httpx.Client(base_url=url) as client:
        for seed in range(3):
            assert client.post("/predict", json={"records": batch(300, NEW_NOTES, seed)}).status_code == 200
    Monitor(project).run()
    flagged = [k for k, m in project.store.windows(project.name)[-1]["metrics"].items() if m["flagged"]]
    assert any(k.startswith("drift.note.e") for k in flagged), flagged
    project.close()


def test_an_embedding_added_after_training_is_said_and_rebuilt(tmp_path: Path) -> None:
    project = _project(tmp_path / "p", 'embedding = "none"')
    assert project.settings.features["note"].embedding is None
    config = project.settings.root / "driftloop.toml"
    config.write_text(config.read_text().replace('embedding = "none"\n', ""))  # hashing from now on
    project.close()
    later = Project.load(config)
    assert Monitor(later).reference_gaps() == ["note.e0"]
    said = _driftloop("monitor", "-c", str(config))
    assert said.returncode == 0 and "built without note.e0" in said.stdout, said.stdout + said.stderr
    rebuilt = _driftloop("reference", "--rebuild", "-c", str(config))
    assert rebuilt.returncode == 0 and "everything the settings ask for" in rebuilt.stdout, rebuilt.stdout
    fresh = Project.load(config)
    assert Monitor(fresh).reference_gaps() == []
    fresh.close()
    later.close()
