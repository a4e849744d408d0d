"""Turn new log rows into window profiles and results; evaluate alert rules.

Each logged prediction is profiled once, when its window closes. A window's drift results
are final; its performance (accuracy and F1 on feedback) is recomputed while labels for it
keep arriving, for the last ``monitor.relabel_windows`` windows.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from driftloop.alerts import deliver, judged, make_sinks, notify, should_fire, system_alert
from driftloop.custom import metric_frame, metric_spec
from driftloop.drift import DriftReport, compare
from driftloop.drift.multivariate import domain_classifier, mmd
from driftloop.exceptions import NotFoundError
from driftloop.identity import principal
from driftloop.profiles import Profile
from driftloop.profiles.terms import TermCounts, vocabulary_change
from driftloop.project import Project
from driftloop.store import Store
from driftloop.training import build_reference

__all__ = ["Monitor", "MonitorRun", "watch_anchor"]

log = logging.getLogger("driftloop.monitor")
PAGE = 20_000


@dataclass
class MonitorRun:
    windows: list[int] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    retrain_requests: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Reference:
    """The champion's reference, deserialised once: its row, both profiles and the fitted
    label-free estimator (CBPE for classes, DLE for regression) as the task stores it."""

    version: str
    row: dict[str, Any]
    features: Profile
    outputs: Profile
    estimator: dict[str, Any] | None
    custom: Profile | None = None
    scores: dict[str, float] = field(default_factory=dict)  # the champion's held-out scores
    terms: dict[str, TermCounts] = field(default_factory=dict)  # text features' vocabulary counts


def _metric(
    name: str,
    value: float | None,
    n: int,
    *,
    p_value: float | None = None,
    threshold: float | None = None,
    flagged: bool = False,
) -> dict[str, Any]:
    return {
        "name": name,
        "value": value,
        "n": n,
        "p_value": p_value,
        "threshold": threshold,
        "flagged": flagged,
    }


def _reference_value(ref: Reference, metric: str, anchor: dict[str, Any] | None = None) -> float | None:
    """The champion's own value of ``metric``: its held-out score, raised to what its
    post-deploy watch proved live where the watch raised it (``anchor``), or a custom metric's
    mean on the reference rows."""
    if metric.startswith("metric.") and ref.custom is not None and metric in ref.custom.numeric:
        summary = ref.custom.numeric[metric]
        return float(summary.mean) if summary.count else None
    raised = _raised(anchor, metric)
    return float(raised["bound"]) if raised else ref.scores.get(metric.removeprefix("estimated_"))


def _raised(anchor: dict[str, Any] | None, metric: str) -> dict[str, float] | None:
    """What the watch raised ``metric`` (or the metric it estimates) to, if it did."""
    raised: dict[str, float] | None = (anchor or {}).get("metrics", {}).get(metric.removeprefix("estimated_"))
    return raised


def watch_anchor(store: Store, model: str, version: str) -> dict[str, Any] | None:
    """The scores the post-deploy watch of ``version``'s newest promotion raised its reference
    to (:func:`driftloop.watch.post_deploy_watch`), or None. A later move to the version (a
    rollback to it) starts it again from its held-out scores."""
    anchor = None
    for row in store.promotions(model):
        if row["to_version"] == version:
            anchor = (row.get("detail") or {}).get("anchor") if row["action"] == "watch-kept" else None
    return anchor


def _over(
    series: list[tuple[int, float, int]], ends: dict[int, float], span: float
) -> list[tuple[int, float, int]]:
    """Each window's value replaced by the row-weighted mean of the windows that ended within
    ``span`` seconds up to it, and its n by their rows: "mean coherence over 24 h".

    >>> _over([(1, 0.8, 10), (2, 0.6, 30), (3, 0.2, 10)], {1: 0.0, 2: 3600.0, 3: 7200.0}, 3600.0)
    [(1, 0.8, 10), (2, 0.65, 40), (3, 0.5, 40)]
    """
    out = []
    for i, (wid, _, _) in enumerate(series):
        inside = [s for s in series[: i + 1] if ends[wid] - ends[s[0]] <= span]
        rows = sum(n for _, _, n in inside)
        value = sum(v * n for _, v, n in inside) / rows if rows else float("nan")
        out.append((wid, round(value, 12), rows))
    return out


class Monitor:
    """``Monitor(project).run()`` closes new windows, scores them and raises alerts."""

    def __init__(self, project: Project, *, progress: bool = False) -> None:
        self.project = project
        self.progress = progress  # a bar over the rows a pass profiles (driftloop monitor)
        self.sinks = make_sinks(project.settings)
        self._reference: Reference | None = None
        self._warned_gaps = False
        self._archive_failed = False

    def reference(self) -> Reference:
        """The champion's reference (built once per champion version, then cached)."""
        version = self.project.champion()
        if version is None:
            raise NotFoundError(
                f"Model '{self.project.name}' has no champion yet; run 'driftloop train' first."
            )
        if self._reference is None or self._reference.version != version:
            row = build_reference(self.project, version)
            profile = row["profile"]
            self._reference = Reference(
                version,
                row,
                Profile.from_dict(profile["features"]),
                Profile.from_dict(profile["outputs"]),
                profile.get("estimator", profile.get("cbpe")),  # "cbpe": references made before tasks
                Profile.from_dict(profile["custom"]) if "custom" in profile else None,
                dict(profile.get("scores", {})),
                {k: TermCounts.from_dict(v) for k, v in profile.get("terms", {}).items()},
            )
        return self._reference

    def vocabulary(self, *, since: float, until: float | None = None, top: int = 10) -> dict[str, Any]:
        """Per text feature, the terms that rose, fell or are new over a span, against the
        reference, from the windows' stored term counts merged (see :mod:`driftloop.profiles.terms`)."""
        ref = self.reference()
        rows = self.project.store.window_profiles(
            self.project.name, since=since, until=until, reference_id=ref.row["id"]
        )
        out: dict[str, Any] = {}
        for name, reference in ref.terms.items():
            merged = reference.empty()
            for row in rows:
                stored = row["profile"].get("terms", {}).get(name)
                if stored is not None:
                    merged = merged.merge(TermCounts.from_dict(stored, reference.vocabulary))
            if merged.documents:
                out[name] = vocabulary_change(reference, merged, top=top)
        return out

    def reference_gaps(self) -> list[str]:
        """Monitored columns the settings ask for that the champion's reference was built without
        (an embedding configured after training, a feature added): they are not monitored until
        the reference is rebuilt (``driftloop reference --rebuild``) or a new champion arrives."""
        spec = self.reference().features.spec
        known = set(spec.numeric) | set(spec.categorical)
        wanted = list(self.project.settings.profiled_columns())
        for name, feature in self.project.settings.features.items():
            if feature.type in ("text", "image") and feature.embedding and not feature.pii:
                wanted.append(f"{name}.e0")
        return [c for c in wanted if c not in known]

    def rollup(self, *, since: float, until: float | None = None) -> tuple[int, DriftReport | None]:
        """Drift over a longer span (an hour, a day) by merging the stored window profiles.

        Nothing is rescanned: the windows' profiles merge exactly, so the verdict is the one a
        profile of all those rows would give. Only windows scored against the current
        reference count. Returns the rows covered and the report (``None`` without windows).
        """
        ref = self.reference()
        rows = self.project.store.window_profiles(
            self.project.name, since=since, until=until, reference_id=ref.row["id"]
        )
        if not rows:
            return 0, None
        spec = ref.features.spec
        merged = Profile.from_dict(rows[0]["profile"]["features"], spec)
        for row in rows[1:]:
            merged = merged.merge(Profile.from_dict(row["profile"]["features"], spec))
        settings = self.project.settings.monitor
        report = compare(
            ref.features, merged, fdr=settings.fdr, min_ks=settings.min_ks, min_linf=settings.min_linf
        )
        return merged.n, report

    # -- the run ---------------------------------------------------------------------------
    def run(self, *, flush: bool = False, now: float | None = None) -> MonitorRun:
        """One monitoring pass, recorded (ok or failed) so a silent monitor can be noticed."""
        started = time.time()
        try:  # alerts a sink did not take before, first: a failure here must not stop monitoring
            deliver(self.project.store, self.sinks, self.project.name)
        except Exception:
            log.exception("Delivering the pending alerts of '%s' failed.", self.project.name)
        try:
            result = self._run(flush=flush, now=now)
        except Exception as exc:
            self.project.store.add_monitor_run(
                self.project.name, started, False, 0, f"{type(exc).__name__}: {exc}"
            )
            recent = self.project.store.monitor_runs(self.project.name, limit=2)
            if len(recent) < 2 or recent[0]["ok"]:  # once per run of failures, not every pass
                self.system_alert(
                    "monitor-failed", f"A monitoring pass of '{self.project.name}' failed: {exc}"
                )
            raise
        self.project.store.add_monitor_run(self.project.name, started, True, len(result.windows))
        return result

    def system_alert(
        self, rule: str, message: str, *, metric: str = "pipeline", run_id: str | None = None
    ) -> dict[str, Any]:
        """An alert about the pipeline itself (not a window's metric), stored and sent to every sink."""
        return system_alert(
            self.project.store, self.sinks, self.project.name, rule, message, metric=metric, run_id=run_id
        )

    def check_stale(self, now: float | None = None) -> dict[str, Any] | None:
        """Alert once when no monitoring pass succeeded for ``monitor.stale_after``."""
        limit = self.project.settings.monitor.stale_after
        if limit is None:
            return None
        now = time.time() if now is None else now
        store, name = self.project.store, self.project.name
        ok = store.monitor_runs(name, limit=1, ok=True)
        if ok:
            since = ok[-1]["finished_at"]
        else:  # never succeeded: count from the first attempt, or from the first champion
            first = store.monitor_runs(name, limit=1, first=True) or store.promotions(name)[:1]
            if not first:
                return None
            since = first[0].get("started_at", first[0].get("ts"))
        if now - since < limit:
            return None
        last = store.alerts(name, limit=1, rule="monitor-stale")
        if last and last[-1]["ts"] >= since:
            return None  # one alert per silence
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since))
        return self.system_alert(
            "monitor-stale",
            f"No successful monitoring run of '{name}' for {now - since:.0f}s, longer than "
            f"monitor.stale_after ({limit:g}s); the last "
            + (f"success was at {when}." if ok else f"attempt or deployment was at {when}."),
        )

    def _run(self, *, flush: bool, now: float | None) -> MonitorRun:
        result = MonitorRun()
        now = time.time() if now is None else now
        reference = self.reference()
        gaps = self.reference_gaps()
        if gaps and not self._warned_gaps:
            self._warned_gaps = True
            log.warning(
                "The reference of version %s was built without %s, so %s not monitored; run "
                "'driftloop reference --rebuild' to rebuild it for the current settings.",
                reference.version,
                ", ".join(gaps),
                "it is" if len(gaps) == 1 else "they are",
            )
        store, name = self.project.store, self.project.name
        last = store.last_window(name)
        after = last["end_seq"] if last else 0
        pending: list[dict[str, Any]] = []
        lag = self.project.settings.monitor.commit_lag
        if lag is None:  # SQLite commits in sequence order (one writer at a time); others may not
            lag = 0.0 if self.project.settings.store.url.startswith("sqlite") else 5.0
        settled = time.time() - lag if lag else None
        with self._bar(after) as advance:
            while True:
                page = store.predictions_after(name, after, PAGE, settled_before=settled)
                if not page:
                    break
                after = page[-1]["seq"]
                pending.extend(page)
                for rows in self._close_windows(pending, flush=False, now=now):
                    result.windows.append(self._score(rows, reference))
                    advance(len(rows))
            if flush and pending:
                result.windows.append(self._score(pending, reference))
                pending.clear()
        self._refresh_performance(len(result.windows))
        result.alerts, result.retrain_requests = self._evaluate_rules(now)
        if self.project.settings.archive.after is not None:
            self._archive(now)
        return result

    @contextlib.contextmanager
    def _bar(self, after: int) -> Iterator[Callable[[int], None]]:
        """A progress bar over the log rows after sequence number ``after`` while their windows
        are scored (none unless ``progress``, nor for under two windows' worth: that is quick)."""
        rows = self.project.store.max_seq(self.project.name) - after if self.progress else 0
        if rows < 2 * (self.project.settings.monitor.window.rows or 1000):
            yield lambda _: None
            return
        from rich.progress import Progress

        with Progress(transient=True) as bar:
            task = bar.add_task(f"monitoring {self.project.name}", total=rows)
            yield lambda n: bar.update(task, advance=n)

    def _archive(self, now: float) -> None:
        """Move closed windows' old rows to the archive; a failure alerts once per run of
        failures and leaves monitoring (and the rows, in the store) as they were."""
        from driftloop.archive import ArchiveBusy, archive_logs

        try:
            archive_logs(self.project, now=now, limit=10 * self.project.settings.archive.batch_rows)
        except ArchiveBusy:  # 'driftloop archive' is at it: the next pass goes on
            log.info("Archiving of '%s' skipped this pass: another process is archiving.", self.project.name)
            return
        except Exception as exc:
            log.exception("Archiving the logs of '%s' failed; the rows stay in the store.", self.project.name)
            if not self._archive_failed:
                self.system_alert(
                    "archive-failed",
                    f"Archiving the logs of '{self.project.name}' to {self.project.settings.archive.url} "
                    f"failed ({type(exc).__name__}: {exc}); the rows stay in the store until it succeeds.",
                )
            self._archive_failed = True
        else:
            self._archive_failed = False

    def _close_windows(
        self, pending: list[dict[str, Any]], *, flush: bool, now: float
    ) -> list[list[dict[str, Any]]]:
        """Pop every complete window from the front of ``pending``."""
        window = self.project.settings.monitor.window
        closed: list[list[dict[str, Any]]] = []
        if window.rows:
            while len(pending) >= window.rows:
                closed.append(pending[: window.rows])
                del pending[: window.rows]
            return closed
        assert window.seconds is not None
        span = window.seconds
        while pending:
            bucket = math.floor(pending[0]["ts"] / span)
            end = (bucket + 1) * span
            if end > now and not flush:
                break
            cut = next((i for i, r in enumerate(pending) if r["ts"] >= end), len(pending))
            if cut == len(pending) and end > now:
                break
            closed.append(pending[:cut])
            del pending[:cut]
        return closed

    def _score(self, rows: list[dict[str, Any]], ref: Reference) -> int:
        settings = self.project.settings.monitor
        schema = self.project.schema
        inputs = schema.frame(pd.DataFrame([r["inputs"] for r in rows]), strict=False, decode=False)
        keys = np.array([r["seq"] for r in rows], dtype="float64")
        keys = (keys * 0.6180339887498949) % 1.0  # golden-ratio hash of the sequence number
        features = schema.profile_frame(inputs)
        current = Profile.from_frame(ref.features.spec, features, keys=keys)
        task = self.project.task
        outputs = task.output_frame(
            [r["prediction"] for r in rows],
            [r["confidence"] for r in rows],
            [r.get("probabilities") for r in rows],
        )
        current_outputs = Profile.from_frame(ref.outputs.spec, outputs, keys=keys)
        limits: dict[str, Any] = {
            "fdr": settings.fdr,
            "min_ks": settings.min_ks,
            "min_linf": settings.min_linf,
        }
        report = compare(ref.features, current, **limits)
        out_report = compare(ref.outputs, current_outputs, **limits)
        pred = out_report["__prediction__"]
        n = len(rows)
        window_metrics = [
            m
            for c in report.columns
            for m in (
                _metric(
                    f"drift.{c.column}",
                    c.effect,
                    c.n_current,
                    p_value=c.p_value,
                    threshold=c.effect_threshold,
                    flagged=c.drifted,
                ),
                _metric(f"psi.{c.column}", c.psi, c.n_current),
                _metric(f"missing.{c.column}", c.missing_change, c.n_current, p_value=c.missing_p_value),
            )
        ]
        window_metrics += [
            _metric("rows", float(n), n),
            _metric("drift_share", report.share, n, flagged=bool(report.drifted)),
            _metric(
                "drift_score",
                max((c.js for c in report.columns), default=0.0),
                n,
                flagged=bool(report.drifted),
            ),
            _metric(
                "prediction_drift",
                pred.js,
                n,
                p_value=pred.p_value,
                threshold=pred.effect_threshold,
                flagged=pred.drifted,
            ),
        ]
        embedded = [c for c in out_report.columns if c.column.startswith("__output__.")]
        if embedded:  # a generator's outputs through the text embedding
            window_metrics.append(
                _metric(
                    "output_drift",
                    max(c.effect for c in embedded),
                    n,
                    threshold=embedded[0].effect_threshold,
                    flagged=any(c.drifted for c in embedded),
                )
            )
        window_metrics += [  # an extractor's fields: presence, confidence, length, validity
            _metric(
                f"drift.{c.column}",
                c.effect,
                c.n_current,
                p_value=c.p_value,
                threshold=c.effect_threshold,
                flagged=c.drifted,
            )
            for c in out_report.columns
            if c.column.startswith("field.") and c.n_current
        ]
        if "__confidence__" in outputs:  # a task with a confidence per prediction
            conf = out_report["__confidence__"]
            window_metrics += [
                _metric(
                    "confidence_drift",
                    conf.effect,
                    n,
                    p_value=conf.p_value,
                    threshold=conf.effect_threshold,
                    flagged=conf.drifted,
                ),
                _metric("mean_confidence", float(outputs["__confidence__"].mean()), n),
            ]
        terms = {name: counts.empty().add(inputs[name].tolist()) for name, counts in ref.terms.items()}
        window_metrics += [
            _metric(f"vocabulary.{name}", vocabulary_change(ref.terms[name], counts, top=0)["distance"], n)
            for name, counts in terms.items()
        ]
        if ref.estimator is not None:  # label-free estimates: CBPE, DLE
            window_metrics += [
                _metric(name, value, n)
                for name, value in task.estimates(ref.estimator, features, outputs).items()
            ]
        if settings.multivariate and min(len(ref.features.sample), len(current.sample)) >= 100:
            dc = domain_classifier(ref.features.sample, current.sample, min_effect=settings.min_auc_effect)
            window_metrics.append(
                _metric("multivariate_auc", dc.auc, dc.n_current, threshold=dc.threshold, flagged=dc.drifted)
            )
        custom_profile = None
        if self.project.settings.metrics:
            values = metric_frame(
                self.project.settings, inputs, outputs, [(r.get("meta") or {}).get("metrics") for r in rows]
            )
            spec = ref.custom.spec if ref.custom is not None else metric_spec(self.project.settings, values)
            custom_profile = Profile.from_frame(spec, values, keys=keys)
            window_metrics += self._custom_metrics(ref, custom_profile, limits)
        if settings.mmd and min(len(ref.features.sample), len(current.sample)) >= 20:
            kernel = mmd(
                ref.features.sample,
                current.sample,
                alpha=settings.fdr,
                n_permutations=settings.mmd_permutations,
                max_rows=settings.mmd_max_rows,
            )
            window_metrics.append(
                _metric(
                    "multivariate_mmd",
                    kernel.mmd2,
                    kernel.n_current,
                    p_value=kernel.p_value,
                    threshold=kernel.alpha,
                    flagged=kernel.drifted,
                )
            )
        window = dict(
            model=self.project.name,
            reference_id=ref.row["id"],
            start_seq=rows[0]["seq"],
            end_seq=rows[-1]["seq"],
            start_ts=rows[0]["ts"],
            end_ts=rows[-1]["ts"],
            n=n,
            model_versions=sorted({r["model_version"] for r in rows}),
            profile={
                "features": current.to_dict(include_spec=False),
                "outputs": current_outputs.to_dict(include_spec=False),
                **({"custom": custom_profile.to_dict()} if custom_profile is not None else {}),
                **(
                    {"terms": {k: v.to_dict(include_vocabulary=False) for k, v in terms.items()}}
                    if terms
                    else {}
                ),
            },
            created_at=time.time(),
        )
        return self.project.store.add_window(window, window_metrics)

    @staticmethod
    def _custom_metrics(ref: Reference, current: Profile, limits: dict[str, Any]) -> list[dict[str, Any]]:
        """Each custom metric's window mean; its drift where the reference has values for it."""
        out = []
        for name, summary in current.numeric.items():
            out.append(_metric(name, summary.mean if summary.count else None, summary.count))
        for name, labels in current.categorical.items():  # a categorical scorer: each label's share
            counts = labels.counts
            total = int(counts.sum())
            out += [
                _metric(f"{name}.{c}", float(counts[i]) / total if total else None, total)
                for i, c in enumerate(current.spec.categorical[name])
            ]
        if ref.custom is None:
            return out
        for c in compare(ref.custom, current, **limits).columns:
            if c.n_reference and c.n_current:
                out.append(
                    _metric(
                        f"drift.{c.column}",
                        c.effect,
                        c.n_current,
                        p_value=c.p_value,
                        threshold=c.effect_threshold,
                        flagged=c.drifted,
                    )
                )
        return out

    def _refresh_performance(self, closed: int = 0) -> None:
        """Accuracy and F1 from feedback for the windows this pass closed and the newest
        ``relabel_windows`` before them, as labels arrive."""
        keep = self.project.settings.monitor.relabel_windows
        store, name, task = self.project.store, self.project.name, self.project.task
        if keep == 0 and closed == 0:
            return
        recent = store.windows(name, limit=max(keep, closed, 1))
        if not recent:
            return
        self._refresh_annotations(recent)
        labelled = store.labelled(
            name,
            start_seq=recent[0]["start_seq"],
            end_seq=recent[-1]["end_seq"],
            policy=self.project.settings.feedback,
        )
        if not labelled:
            return
        reference = self.reference()
        frame = pd.DataFrame(labelled)
        for w in recent:
            part = frame[(frame["seq"] >= w["start_seq"]) & (frame["seq"] <= w["end_seq"])]
            if part.empty:
                continue
            y, predicted = part["label"].to_numpy(), part["prediction"].to_numpy()
            scores = task.metrics(y, predicted, part["probabilities"].tolist())
            n = len(part)
            drifts = task.label_drift(reference.estimator, y, predicted) if reference.estimator else {}
            store.upsert_metrics(
                w["id"],
                [
                    *(_metric(k, v, n) for k, v in scores.items()),
                    _metric("labelled", float(n), n),
                    *(
                        _metric(
                            k,
                            d["value"],
                            n,
                            p_value=d["p_value"],
                            threshold=d["threshold"],
                            flagged=d["flagged"],
                        )
                        for k, d in drifts.items()
                    ),
                ],
            )

    def _refresh_annotations(self, recent: list[dict[str, Any]]) -> None:
        """What people and judges attached to the windows' predictions: the mean ``rating`` and
        how many were ``rated``; ``tag.<tag>``, the share of reviewed outputs (rated or tagged)
        carrying each tag; ``scored.<metric>``, the mean of late scores. Per prediction and source the
        newest rating, tags and score of each metric count; quarantined sources never do."""
        store, settings = self.project.store, self.project.settings
        notes = store.annotated(
            self.project.name, start_seq=recent[0]["start_seq"], end_seq=recent[-1]["end_seq"]
        )
        quarantined = store.quarantined_principals(self.project.name, settings.feedback)
        latest: dict[tuple[str, str], dict[str, Any]] = {}
        for note in notes:  # oldest first: what a later one says replaces what an earlier one said
            if principal(note["source"]) in quarantined:
                continue
            key = (note["prediction_id"], note["source"])
            merged = dict(latest.get(key, {"rating": None, "tags": None, "scores": None}))
            merged["seq"] = note["seq"]
            for said in ("rating", "tags"):
                if note[said] is not None:
                    merged[said] = note[said]
            if note["scores"]:
                merged["scores"] = {**(merged["scores"] or {}), **note["scores"]}
            latest[key] = merged
        if not latest:
            return
        rows = list(latest.values())
        for w in recent:
            part = [r for r in rows if w["start_seq"] <= r["seq"] <= w["end_seq"]]
            if not part:
                continue
            metrics: list[dict[str, Any]] = []
            ratings = [r["rating"] for r in part if r["rating"] is not None]
            if ratings:
                metrics += [
                    _metric("rating", float(np.mean(ratings)), len(ratings)),
                    _metric("rated", float(len(ratings)), len(ratings)),
                ]
            reviewed = [r for r in part if r["rating"] is not None or r["tags"]]
            if reviewed and settings.project.task == "generation":
                for tag in settings.generation.tags:
                    share = sum(tag in (r["tags"] or []) for r in reviewed) / len(reviewed)
                    metrics.append(_metric(f"tag.{tag}", share, len(reviewed)))
            for metric in settings.metrics:
                values = [r["scores"][metric] for r in part if r["scores"] and metric in r["scores"]]
                if values:
                    metrics.append(_metric(f"scored.{metric}", float(np.mean(values)), len(values)))
            if metrics:
                store.upsert_metrics(w["id"], metrics)

    def _evaluate_rules(self, now: float) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        rules = self.project.settings.alerts
        if not rules:
            return [], []
        store, name = self.project.store, self.project.name
        ref = self.reference()
        # a rule judges the current champion only: a streak or a detector restarts at promotion
        champion = [w for w in store.windows(name, limit=200) if w["reference_id"] == ref.row["id"]]
        relative = any(rule.relative_to == "reference" for rule in rules)
        anchor = watch_anchor(store, name, ref.version) if relative else None
        fired: list[dict[str, Any]] = []
        retrain: list[dict[str, Any]] = []
        for rule in rules:
            history = champion
            if rule.relative_to == "reference":
                base = _reference_value(ref, rule.metric, anchor)
                if base is None:
                    continue
                if anchor is not None and _raised(anchor, rule.metric):
                    # raised by the watch: the rule starts again after it, as at a promotion
                    history = [w for w in champion if w["start_seq"] > anchor["end_seq"]]
                limit = base * (1 + rule.threshold) if rule.change == "fraction" else base + rule.threshold
                rule = rule.model_copy(update={"threshold": limit, "relative_to": None})
            series = [
                (w["id"], float(m["value"]), int(m["n"]))
                for w in history
                if (m := w["metrics"].get(rule.metric)) and m["value"] is not None
            ]
            if rule.over is not None:  # each window's value: the mean over the span ending there
                series = _over(series, {w["id"]: w["end_ts"] for w in history}, rule.over)
            last = store.alerts(name, limit=1, rule=rule.name)
            fire, streak = should_fire(rule, series, last[-1] if last else None, now)
            if not fire:
                continue
            # the windows the rule judged: those with enough samples (a thin newest window is not one)
            usable = judged(rule, series)
            window_id, value, n = usable[-1]
            first_window = next(w for w in history if w["id"] == usable[-streak][0])
            message = (
                f"{rule.metric} = {value:.4g}: the {rule.detector} detector found a change "
                f"(latest window {window_id}, n = {n})."
                if rule.detector
                else f"{rule.metric} = {value:.4g} {rule.op} {rule.threshold:g} "
                f"for {streak} consecutive window(s) (latest window {window_id}, n = {n})."
            )
            alert = dict(
                model=name,
                rule=rule.name,
                metric=rule.metric,
                value=value,
                threshold=rule.threshold,
                window_id=window_id,
                message=message,
            )
            alert = notify(store, self.sinks, **alert)
            fired.append(alert)
            if rule.retrain:
                retrain.append(
                    {
                        "alert_id": alert["id"],
                        "trigger": f"alert:{rule.name}",
                        "since_seq": int(first_window["start_seq"]),
                    }
                )
        return fired, retrain
