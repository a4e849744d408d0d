"""Vocabulary change: mergeable term counts, and the monitor's readable report of new, risen and
fallen terms for a document classifier."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import httpx
import numpy as np
from typer.testing import CliRunner

from driftloop.cli import app
from driftloop.demo.documents import documents
from driftloop.demo.project import write_example
from driftloop.demo.scenario import serve_in_thread
from driftloop.monitor import Monitor
from driftloop.profiles.terms import TermCounts, tokens, vocabulary_change
from driftloop.project import Project
from driftloop.serving import create_app
from driftloop.training import train


def _texts(n: int, words: list[str], seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(words, 6)) for _ in range(n)]


def test_vocabulary_counts_merge_exactly_and_new_terms_are_found() -> None:
    old = [f"w{i}x" for i in range(40)]
    reference = TermCounts.fit(_texts(500, old, 0))
    assert reference.documents == 500 and set(reference.vocabulary) == set(old)
    stream = _texts(300, old, 1) + _texts(300, [*old[:10], "portal", "payable"], 2) + [None, float("nan")]
    whole = reference.empty().add(stream)
    parts = reference.empty()
    for start in range(0, len(stream), 70):
        parts = parts.merge(reference.empty().add(stream[start : start + 70]))
    assert parts.documents == whole.documents == 600, "missing texts are not documents"
    assert parts.counts.tolist() == whole.counts.tolist(), "vocabulary counts merge exactly"
    exact = Counter(t for text in stream[300:600] for t in tokens(text) if t not in old)
    for term in ("portal", "payable"):
        # a Misra-Gries count is at most the true count and short by at most documents / (capacity + 1)
        assert exact[term] - 600 / 101 <= parts.new[term] <= exact[term]
    round_trip = TermCounts.from_dict(parts.to_dict(include_vocabulary=False), reference.vocabulary)
    assert round_trip.counts.tolist() == parts.counts.tolist() and round_trip.new == parts.new
    change = vocabulary_change(reference, parts, top=3)
    assert {t["term"] for t in change["new"]} == {"portal", "payable"}
    assert all(t["current"] > t["reference"] for t in change["rose"])
    assert all(t["term"] in old[10:] for t in change["fell"])
    same = vocabulary_change(reference, reference.empty().add(_texts(500, old, 3)))
    assert same["new"] == [] and same["distance"] < 0.1 < change["distance"]


def test_the_monitor_names_the_words_of_a_new_document_portal(tmp_path: Path) -> None:
    config = write_example(tmp_path / "docs", template="documents", rows=1200, window="300 rows")
    project = Project.load(config)
    try:
        train(project)
        with (
            serve_in_thread(create_app(project, background=False, monitor=False)) as url,
            httpx.Client(base_url=url) as client,
        ):
            for concept, seed in (("A", 5), ("B", 6)):
                df = documents(300, concept, seed=seed).drop(columns="doc_type")
                r = client.post("/predict", json={"records": df.to_dict(orient="records")})
                assert r.status_code == 200, r.text
        Monitor(project).run()
        old, new = project.store.windows(project.name)[-2:]
        assert old["metrics"]["vocabulary.text"]["value"] < 0.15 < new["metrics"]["vocabulary.text"]["value"]
        report = Monitor(project).vocabulary(since=new["start_ts"] - 1e-6)["text"]
        assert report["documents"] == 300
        assert {"portal", "payable"} <= {t["term"] for t in report["new"]}, report["new"]
        result = CliRunner().invoke(app, ["drift", "--config", str(config), "--last", "1d"])
        assert result.exit_code == 0, result.output
        assert "vocabulary of 'text'" in result.output and "portal" in result.output
    finally:
        project.close()
