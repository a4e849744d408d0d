"""The log archive: closed windows' rows move to Parquet, label queries and profiles read them
there as they did in the store, and a crash at any point leaves one copy of every row."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from driftloop import workflow
from driftloop.archive import LogArchive, archive_logs, profile_archive
from driftloop.exceptions import ConfigError
from driftloop.monitor import Monitor
from driftloop.project import Project
from driftloop.store import tables as t
from driftloop.training import train

from .conftest import cli_env, make_project
from .helpers import send


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A trained project with 1,000 predictions served (three closed windows of 300 and a
    partial one), half of them labelled, some annotated, and one monitoring pass: built once,
    copied for each test (the copies' registries point at its artifacts, which outlive them)."""
    root = tmp_path_factory.mktemp("template") / "project"
    project = make_project(root)
    train(project)
    ids = send(project, 1000, "B", seed=3, label_share=0.5)
    project.store.add_feedback(
        [{"prediction_id": p, "source": "rev", "rating": 4.0, "tags": ["ok"]} for p in ids[::7]],
        annotations=True,
    )
    Monitor(project).run()
    project.close()
    return root, ids


@pytest.fixture
def logged(template: tuple[Path, list[str]], tmp_path: Path) -> Any:
    """A copy of the template project of its own."""
    root, ids = template
    shutil.copytree(root, tmp_path / "project")
    project = Project.load(tmp_path / "project" / "driftloop.toml")
    yield project, ids
    workflow.shutdown()
    project.close()


def _labels(project: Project) -> list[dict[str, Any]]:
    rows, stats = project.store.resolved_labels(project.name, policy=project.settings.feedback)
    return [*rows, stats]  # the stats count every label read: a row read twice shows there


def _judged(project: Project) -> list[dict[str, Any]]:
    accepted, _ = project.store.judged_outputs(
        project.name,
        max_annotation_id=project.store.max_annotation_id(),
        accept_rating=3.0,
        bad_tags=[],
        policy=project.settings.feedback,
    )
    return accepted


def test_closed_windows_move_to_parquet_and_label_queries_read_them_there(logged: Any) -> None:
    project, _ids = logged
    store = project.store
    before, judged = _labels(project), _judged(project)
    assert len(before) > 400 and len(judged) > 100
    result = archive_logs(project, older_than=0)
    assert (result.predictions, result.batches) == (900, 1)  # the partial window stays
    assert result.feedback == sum(1 for r in before[:-1] if r["seq"] <= 900)
    assert store.count_predictions(project.name) == 100
    assert project.archive.archived_through(project.name) == 900
    assert project.archive.verify(project.name) == []
    # the same rows, labels and annotations, in the same order, from the archive and the store
    assert _labels(project) == before
    assert _judged(project) == judged
    tail = store.labelled(project.name, start_seq=850, end_seq=950, policy=project.settings.feedback)
    assert tail == [r for r in before[:-1] if 850 <= r["seq"] <= 950]
    # a second pass has nothing more to move; the files are partitioned by model and day
    assert archive_logs(project, older_than=0).predictions == 0
    files = project.archive.files(project.name, "predictions")
    assert all(f["path"].startswith(f"predictions/model={project.name}/day=") for f in files)


def test_a_periods_requests_are_read_from_the_archive_as_from_the_store(logged: Any) -> None:
    """A retrain's ``period`` snapshot (a new champion's feature reference) reads every request
    served over the evaluation span, labelled or not: those already archived as well."""
    project, ids = logged
    store, name = project.store, project.name
    before = store.served_inputs(name, 1, 1000, 10**6)
    assert [r["prediction_id"] for r in before] == ids
    archive_logs(project, older_than=0)
    assert store.count_predictions(name) == 100
    assert store.served_inputs(name, 1, 1000, 10**6) == before
    assert store.served_inputs(name, 1, 1000, 150) == before[-150:]  # the newest, across both
    assert store.served_inputs(name, 850, 950, 10**6) == before[849:950]
    assert store.served_inputs(name, 200, 300, 40) == before[260:300]  # seq 261-300
    # the first rows of a span, as a post-deploy watch on a scorer reads them
    assert store.served_inputs(name, 1, 1000, 150, oldest=True) == before[:150]
    assert store.served_inputs(name, 850, 950, 120, oldest=True) == before[849:950]
    assert store.served_inputs(name, 880, 1000, 50, oldest=True) == before[879:929]  # across both


def test_a_rescan_of_the_archive_gives_the_merged_windows_verdict(logged: Any) -> None:
    project, _ = logged
    n, merged = Monitor(project).rollup(since=0)
    archive_logs(project, older_than=0)
    rows, rescanned = profile_archive(project, since=0, engine="local")
    assert (rows, n) == (900, 900)
    assert [(c.column, c.effect, c.p_value, c.drifted) for c in rescanned.columns] == [
        (c.column, c.effect, c.p_value, c.drifted) for c in merged.columns
    ]
    assert rescanned.drifted  # concept B drifts: a verdict worth comparing
    assert profile_archive(project, since=2e9, engine="local") == (0, None)


def test_a_crash_before_the_delete_is_finished_by_the_next_run(logged: Any, monkeypatch: Any) -> None:
    project, _ = logged
    store = project.store
    before = _labels(project)
    real = type(store).delete_archived

    def crash(self: Any, model: str, manifest: dict[str, Any], **ids: Any) -> int:
        raise OSError("power lost")

    monkeypatch.setattr(type(store), "delete_archived", crash)
    with pytest.raises(OSError, match="power lost"):
        archive_logs(project, older_than=0)
    # archived and still in the store: every reader counts each row once
    assert store.count_predictions(project.name) == 1000
    assert _labels(project) == before
    monkeypatch.setattr(type(store), "delete_archived", real)
    result = archive_logs(project, older_than=0)
    assert (result.recovered, result.predictions) == (900, 0)
    assert store.count_predictions(project.name) == 100
    assert _labels(project) == before
    with store.engine.connect() as conn:  # the archived labels and annotations left the store too
        for table in (t.feedback, t.notes):
            stray = (
                select(func.count())
                .select_from(table)
                .where(
                    ~select(t.predictions.c.seq)
                    .where(t.predictions.c.prediction_id == table.c.prediction_id)
                    .exists()
                )
            )
            assert conn.execute(stray).scalar_one() == 0


def test_a_crash_while_writing_leaves_nothing_a_reader_sees(logged: Any, monkeypatch: Any) -> None:
    project, _ = logged
    before = _labels(project)
    real = LogArchive._put

    def crash(self: LogArchive, path: str, data: bytes) -> None:
        if path.startswith("_manifest/"):
            raise OSError("disk full")
        real(self, path, data)

    monkeypatch.setattr(LogArchive, "_put", crash)
    with pytest.raises(OSError, match="disk full"):
        archive_logs(project, older_than=0)
    assert project.archive.archived_through(project.name) == 0  # data files, no manifest: unseen
    assert project.store.count_predictions(project.name) == 1000
    assert _labels(project) == before
    monkeypatch.setattr(LogArchive, "_put", real)
    assert archive_logs(project, older_than=0).predictions == 900
    assert _labels(project) == before
    assert project.archive.verify(project.name) == []


def test_late_labels_retention_and_a_tampered_file(logged: Any) -> None:
    project, ids = logged
    store = project.store
    archive_logs(project, older_than=0)
    # a label that came in while its prediction was being archived stays in the store and counts
    labelled = {r["prediction_id"] for r in _labels(project)[:-1]}
    seq, late = next((i + 1, p) for i, p in enumerate(ids[:900]) if p not in labelled)
    store.add_feedback([{"prediction_id": late, "label": "yes", "source": "late"}])
    found = [r for r in _labels(project)[:-1] if r["prediction_id"] == late]
    assert [(r["label"], r["source"], r["seq"]) for r in found] == [("yes", "late", seq)]
    # a changed byte is reported against the manifest's checksum
    entry = project.archive.files(project.name, "feedback")[0]
    path = Path(project.archive.root) / entry["path"]
    path.write_bytes(path.read_bytes()[:-1] + b"\0")
    assert [p.split(":")[0] for p in project.archive.verify(project.name)] == [entry["path"]]
    # retention deletes whole batches, manifest first
    assert project.archive.prune(project.name, before=0) == 0
    assert project.archive.prune(project.name, before=4e9) == 1
    assert project.archive.archived_through(project.name) == 0
    assert not path.exists()


def test_the_monitor_archives_after_the_configured_age(tmp_path: Path) -> None:
    config = tmp_path / "project" / "driftloop.toml"
    project = make_project(tmp_path / "project")
    with config.open("a") as f:
        f.write('\n[archive]\nafter = "3d"\nretention = "30d"\nbatch_rows = 250\n')
    project.close()
    project = Project.load(config)
    try:
        train(project)
        send(project, 700, "A", seed=4)
        monitor = Monitor(project)
        monitor.run()
        assert project.archive.archived_through(project.name) == 0  # younger than three days
        monitor.run(now=time.time() + 4 * 86_400)  # four days on
        assert project.archive.archived_through(project.name) == 600
        assert project.store.count_predictions(project.name) == 100
        from driftloop.demo.scenario import serve_in_thread
        from driftloop.serving import create_app

        oldest = project.archive.rows(project.name, "predictions")[0]["prediction_id"]
        with serve_in_thread(create_app(project, background=False, monitor=False)) as url:
            late = httpx.post(url + "/feedback", json={"prediction_id": oldest, "label": "yes"})
        assert late.status_code == 404
        assert "are archived 3 days after they are served (archive.after)" in late.json()["detail"][0]["msg"]
        batches = project.archive.manifests(project.name)
        assert [(b["first_seq"], b["last_seq"]) for b in batches] == [(1, 250), (251, 500), (501, 600)]
    finally:
        workflow.shutdown()
        project.close()


def test_archive_and_drift_commands(logged: Any) -> None:
    project, _ = logged
    config = str(project.settings.root / "driftloop.toml")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["driftloop", *args, "-c", config], capture_output=True, text=True, env=cli_env(), timeout=120
        )

    profiles = json.loads(run("drift", "--last", "7d", "--json").stdout)
    refused = run("archive")
    assert refused.returncode == 2 and "archive.after" in refused.stderr
    moved = json.loads(run("archive", "--older-than", "0s", "--verify", "--json").stdout)
    assert moved["moved"]["predictions"] == 900 and moved["through_seq"] == 900 and moved["problems"] == []
    rescanned = json.loads(run("drift", "--last", "7d", "--engine", "local", "--json").stdout)
    assert rescanned["rows"] == profiles["rows"] == 900
    assert rescanned["columns"] == profiles["columns"] and rescanned["drifted"] == profiles["drifted"]
    bad = run("drift", "--engine", "spark")
    assert bad.returncode == 2 and "'profiles', 'local' or 'dask'" in bad.stderr


@pytest.fixture(scope="module")
def cluster() -> Any:
    distributed = pytest.importorskip("distributed", reason="needs the dask extra: pip install -e '.[dask]'")
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as local,
        distributed.Client(local) as client,
    ):
        yield client


@pytest.mark.slow
def test_dask_profiles_an_archive_of_millions_of_rows_as_one_process_does(
    tmp_path: Path, cluster: Any
) -> None:
    import numpy as np
    import pandas as pd

    from driftloop.archive import profile_files
    from driftloop.drift import compare
    from driftloop.profiles import Profile, ProfileSpec

    def frame(rows: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
        rng = np.random.default_rng(seed)
        data: dict[str, Any] = {f"x{i}": rng.normal(shift, 1 + i, rows) for i in range(4)}
        for i in range(2):
            data[f"c{i}"] = np.array(list("abcdefgh"))[rng.integers(0, 8 - round(10 * shift), rows)]
        return pd.DataFrame(data)

    archive = LogArchive(str(tmp_path / "archive"))
    midnight = 1.7e9 - 1.7e9 % 86_400
    for part in range(8):  # 2M rows, one file per day
        ts = midnight + part * 86_400 + np.linspace(0, 86_000, 250_000)
        archive.write_inputs(
            "wide", frame(250_000, seed=part, shift=0.1), first_seq=part * 250_000 + 1, ts=ts
        )
    with pytest.raises(ConfigError, match="must be 2000001 for model 'wide'. Got 5 instead"):
        archive.write_inputs("wide", frame(1, seed=0), first_seq=5, ts=[0.0])
    reference = frame(20_000, seed=99)
    spec = ProfileSpec.fit(
        reference, numeric=[f"x{i}" for i in range(4)], categorical=["c0", "c1"], bins=50, sample_size=2000
    )
    ref = Profile.from_frame(spec, reference)
    entries = archive.files("wide")

    def identity(frame: Any) -> Any:
        return frame

    local = profile_files(archive, entries, spec, identity, engine="local")
    on_dask = profile_files(archive, entries, spec, identity, engine="dask", scheduler=cluster, split_every=3)
    assert local.n == on_dask.n == 2_000_000
    for name in spec.numeric:  # counts exactly; moments up to the order floating-point adds in
        a, b = local.numeric[name], on_dask.numeric[name]
        assert (a.hist.tolist(), a.count, a.missing, a.min, a.max) == (
            b.hist.tolist(),
            b.count,
            b.missing,
            b.min,
            b.max,
        )
        assert a.mean == pytest.approx(b.mean, rel=1e-12) and a.variance == pytest.approx(
            b.variance, rel=1e-9
        )
    assert {k: v.counts.tolist() for k, v in local.categorical.items()} == {
        k: v.counts.tolist() for k, v in on_dask.categorical.items()
    }
    assert local.sample_keys.tolist() == on_dask.sample_keys.tolist()
    verdicts = [compare(ref, p, fdr=0.05, min_ks=0.01, min_linf=0.005) for p in (local, on_dask)]
    assert verdicts[0].drifted == verdicts[1].drifted == ["x0", "x1", "x2", "x3", "c0", "c1"]
    assert [round(c.effect, 12) for c in verdicts[0].columns] == [
        round(c.effect, 12) for c in verdicts[1].columns
    ]
    # a time span reads only the files that may hold it, and only its rows
    day = entries[3]
    part = profile_files(archive, entries, spec, identity, since=day["min_ts"], until=day["max_ts"] + 1e-3)
    assert part.n == 250_000


@pytest.mark.slow
def test_drift_of_a_project_archive_on_dask(logged: Any, cluster: Any) -> None:
    project, _ = logged
    archive_logs(project, older_than=0)
    local = profile_archive(project, since=0, engine="local")
    on_dask = profile_archive(project, since=0, engine="dask", scheduler=cluster)
    assert local[0] == on_dask[0] == 900
    assert [(c.column, c.effect, c.drifted) for c in local[1].columns] == [
        (c.column, c.effect, c.drifted) for c in on_dask[1].columns
    ]


def test_one_archiving_pass_at_a_time_and_status_says_what_is_archived(logged: Any) -> None:
    from driftloop.archive import ArchiveBusy
    from driftloop.locks import archive_lock
    from driftloop.views import status_view

    project, _ = logged
    other = archive_lock(project.settings.store.url, project.settings.state_dir, project.name)
    assert other.acquire()  # another process's pass, say 'driftloop archive'
    try:
        with pytest.raises(ArchiveBusy, match=r"Another process \(pid \d+\) is archiving the logs of 'loan'"):
            archive_logs(project, older_than=0)
        assert project.store.count_predictions(project.name) == 1000
        Monitor(project)._archive(time.time())  # a monitoring pass skips it, and raises no alert
        assert not project.store.alerts(project.name, rule="archive-failed")
        assert project.store.count_predictions(project.name) == 1000
    finally:
        other.release()
    assert status_view(project)["archive"]["batches"] == 0
    archive_logs(project, older_than=0)
    view = status_view(project)["archive"]
    assert (view["batches"], view["predictions"], view["through_seq"]) == (1, 900, 900)
    from driftloop.demo.scenario import serve_in_thread
    from driftloop.serving import create_app

    with serve_in_thread(create_app(project, background=False, monitor=False)) as url:
        scraped = httpx.get(url + "/metrics").text
    for gauge, value in (
        ("store_predictions", 100),
        ("archive_predictions", 900),
        ("archive_through_seq", 900),
    ):
        assert f'driftloop_{gauge}{{model="loan"}} {value}\n' in scraped


def test_a_label_query_during_an_archiving_pass_sees_every_row_once(logged: Any, monkeypatch: Any) -> None:
    """The pass finishes (manifest written, rows deleted) just after the query listed the
    manifests: the query read the store before listing them, so it still has every row."""
    project, _ = logged
    before = _labels(project)
    real = LogArchive.manifests
    state = {"done": False}

    def listed_then_archived(self: LogArchive, model: str) -> list[dict[str, Any]]:
        found = real(self, model)
        if not state["done"]:
            state["done"] = True
            monkeypatch.setattr(LogArchive, "manifests", real)
            archive_logs(project, older_than=0)  # another process's pass, right now
        return found

    monkeypatch.setattr(LogArchive, "manifests", listed_then_archived)
    assert _labels(project) == before
    assert state["done"] and project.store.count_predictions(project.name) == 100
    assert _labels(project) == before


def test_an_archive_on_object_storage_through_fsspec() -> None:
    """The non-local write path (one PUT per file, no rename) on fsspec's in-memory filesystem,
    which stands in for s3:// here: written, listed, verified, read back and pruned."""
    import uuid

    import numpy as np
    import pandas as pd

    archive = LogArchive(f"memory://driftloop-test-{uuid.uuid4().hex}/archive")
    frame = pd.DataFrame({"x": np.arange(5.0), "c": list("abcab")})
    manifest = archive.write_inputs("m", frame, first_seq=1, ts=[0.0, 1.0, 2.0, 86_400.0, 86_401.0])
    assert [(f["day"], f["rows"]) for f in manifest["files"]] == [("1970-01-01", 3), ("1970-01-02", 2)]
    assert LogArchive(archive.url).archived_through("m") == 5  # another reader sees it
    assert archive.verify("m") == []
    rows = archive.rows("m", "predictions")
    assert [r["inputs"] for r in rows] == frame.to_dict(orient="records")
    assert not [p for p in archive.fs.find(archive.root) if p.endswith(".tmp")]
    assert archive.prune("m", before=1e9) == 1 and archive.manifests("m") == []
