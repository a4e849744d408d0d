"""What the commands print: the tables and sentences of ``driftloop status``, ``runs`` and
``monitor``, apart from the commands that gather them (:mod:`driftloop.cli`)."""

from __future__ import annotations

import datetime as dt
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console(width=None if sys.stdout.isatty() else 140)
log_console = Console(stderr=True, width=None if sys.stderr.isatty() else 140)  # stdout stays for results


def standard_error(se: float | None) -> str:
    """A mean's standard error as a clause (nothing below two values)."""
    return f", standard error {se:.4f}" if se is not None else ""


def when(ts: float | None) -> str:
    return "-" if ts is None else dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


DRIFTED_NAMES = 5  # a window's drifted features named in a table row; the rest counted


def print_windows(project: Any, limit: int) -> None:
    metric = project.settings.gate.primary_metric  # what the gate judges: f1_micro, mae, a scorer
    table = Table(title="recent windows")
    for column in (
        "window",
        "rows",
        "versions",
        metric.removeprefix("metric."),
        "labels",
        "drift share",
        "drifted",
        "pred. drift",
        "mean conf.",
    ):
        table.add_column(column)
    for w in project.store.windows(project.name, limit=limit):
        m = w["metrics"]

        def val(name: str, fmt: str = "{:.3f}", m: dict[str, Any] = m) -> str:
            return fmt.format(m[name]["value"]) if name in m and m[name]["value"] is not None else "-"

        drifted = sorted(
            k.removeprefix("drift.") for k, x in m.items() if k.startswith("drift.") and x["flagged"]
        )
        more = len(drifted) - DRIFTED_NAMES
        named = ", ".join(drifted[:DRIFTED_NAMES]) + (f" and {more} more" if more > 0 else "")
        table.add_row(
            str(w["id"]),
            str(w["n"]),
            ",".join(w["model_versions"]),
            val(metric),
            val("labelled", "{:.0f}"),
            val("drift_share", "{:.0%}"),
            named or "-",
            val("prediction_drift"),
            val("mean_confidence"),
        )
    console.print(table)


def print_runs(project: Any) -> None:
    table = Table(title="retrain runs", expand=True)
    table.add_column("run", no_wrap=True)  # whole, to pass to `driftloop runs RUN_ID`
    for column, ratio in (("trigger", 3), ("status", 2), ("train rows", 3)):
        table.add_column(column, ratio=ratio, overflow="fold")  # folded, never cut short
    table.add_column("version", no_wrap=True)
    table.add_column("started", no_wrap=True)
    table.add_column("gate reasons", ratio=8)  # the sentences: most of the width
    for r in project.store.runs(project.name, limit=10):
        decision = project.store.decision(r["id"]) or {}
        training = (r.get("options") or {}).get("training") or {}
        by_source = ", ".join(f"{k} {v}" for k, v in training.get("by_source", {}).items())
        step = f" ({r['step']})" if r["step"] and r["step"] != "done" else ""
        table.add_row(
            r["id"],
            r["trigger"],
            r["status"] + step,
            f"{training['rows']} ({by_source})" if training else "-",
            r["challenger_version"] or "-",
            when(r["started_at"]),
            "\n".join(decision.get("reasons", [])) or (r["error"] or "-"),
        )
    console.print(table)


def fold_predictor(options: dict[str, Any], fold: dict[str, Any]) -> str:
    """Who predicted the challenger's rows of a backtest fold: the winner itself (the newest
    fold, or every fold for an earlier champion), its window fitted on the rows before the
    fold, or the champion standing in where the window had too few rows to be trained."""
    chosen = next((c for c in options.get("candidates") or [] if c.get("chosen")), None)
    if chosen is None:
        return ""
    made: dict[str, Any] = next(
        (c for c in (options.get("training") or {}).get("candidates", []) if c["name"] == chosen["name"]),
        {},
    )
    fitted = next((b for b in made.get("backtest") or [] if b["fold"] == fold["fold"]), None)
    if fitted is None:
        return f"; predicted by version {chosen['version']} itself"
    if not fitted["rows"]:
        why = fitted.get("why", "had fewer rows before this fold than retrain.min_train_rows")  # older runs
        return f"; the champion stood in: '{chosen['name']}' {why}"
    return f"; predicted by '{chosen['name']}' fitted on the {fitted['rows']} rows before this fold"


def estimate_said(estimate: dict[str, Any], eval_rows: int | None, live: dict[str, Any] | None) -> str:
    """The gate's estimate of the winner, the rows it was read on and, once the watch met it,
    the live score over as many rows."""
    rows = estimate.get("rows")
    on = (
        f" on {rows} of the {eval_rows} evaluation rows, those the winner's recipe predicted (the "
        "champion stood in on the rest)"
        if rows is not None and eval_rows and rows < eval_rows
        else ""
    )
    bias = (
        f", less {estimate['selection_bias']:.4f} that choosing among {estimate['candidates']} "
        "flattered it by"
        if estimate.get("selection_bias")
        else ""
    )
    said = f"gate estimate: {estimate['metric']} {estimate['value']:.4f} ({estimate['raw']:.4f}{on}{bias})"
    if live:
        said += (
            f"; live {live['live']:.4f} on its first {live['n']} rows (gate optimism {live['optimism']:+.4f})"
        )
    return said


def print_run(project: Any, row: dict[str, Any]) -> None:
    decision = project.store.decision(row["id"]) or {}
    colour = {"promoted": "green", "rejected": "yellow"}.get(row["status"], "red")
    console.print(
        f"Run {row['id']}: [{colour}]{row['status']}[/] (challenger version {row['challenger_version']})"
    )
    training = (row.get("options") or {}).get("training")
    if training:
        sources = ", ".join(f"{k} {v}" for k, v in training.get("by_source", {}).items()) or "none"
        classes = ", ".join(f"{k}: {v}" for k, v in training.get("by_class", {}).items()) or "-"
        console.print(
            f"  training set: {training['rows']} rows ({sources}; classes {classes}); "
            f"evaluation set: {training.get('eval_rows', '-')} rows",
            highlight=False,
        )
        if training.get("evaluation"):
            console.print(f"  evaluated on {training['evaluation']}", highlight=False)
        if training.get("reference"):
            console.print(f"  a new champion's feature reference: {training['reference']}", highlight=False)
        for c in training.get("candidates", []):
            if c.get("version"):  # an earlier champion, as it is
                console.print(f"  candidate '{c['name']}': {c['window']}", highlight=False)
                continue
            folds = ", ".join(
                f"fold {f['fold']} {f['rows']} rows" if f["rows"] else f"fold {f['fold']} not fitted"
                for f in c.get("backtest") or []
            )
            backtest = f" (backtest: {folds})" if folds else ""
            console.print(
                f"  candidate '{c['name']}': {c['rows']} rows, {c['window']}{backtest}", highlight=False
            )
        for c in training.get("left_out", []):
            console.print(f"  candidate '{c['name']}' left out: {c['reason']}", highlight=False)
    options = row.get("options") or {}
    if options.get("chosen"):
        console.print(f"  chosen: {options['chosen']}", highlight=False)
    for f in options.get("folds") or []:  # the challenger against the champion, fold by fold
        console.print(
            f"  fold {f['fold']} (seq {f['first_seq']}-{f['last_seq']}, {f['rows']} rows): champion "
            f"{f['champion']:.4f}, challenger {f['challenger']:.4f}{fold_predictor(options, f)}",
            highlight=False,
        )
    if options.get("gate_estimate"):
        estimate, live = options["gate_estimate"], options.get("gate_optimism")
        console.print(f"  {estimate_said(estimate, decision.get('eval_rows'), live)}", highlight=False)
    if options.get("reused"):
        console.print(
            f"  version {options['reused']}, an earlier champion, is back in service as it was "
            "(not refitted)",
            highlight=False,
        )
    if options.get("deployed_version"):
        console.print(
            f"  evaluated version {options['evaluated_version']}; deployed version "
            f"{options['deployed_version']}, refitted on its rows plus the newest evaluation fold "
            "(retrain.refit)",
            highlight=False,
        )
    for reason in decision.get("reasons", []):
        console.print(f"  • {reason}")
    if row.get("error"):
        console.print(f"  {'why' if row['status'] == 'skipped' else 'error'}: {row['error']}")


def print_status(project: Any, view: dict[str, Any]) -> None:
    """``driftloop status``: the versions, windows, alerts, champion history, runs, the gate's
    calibration, the archive and monitoring health of ``view`` (:func:`driftloop.views.status_view`)."""
    from driftloop.config import is_scorer

    table = Table(title=f"model {project.name}")
    for column in ("version", "role", "gate", "registered", "run"):
        table.add_column(column)
    for v in view["versions"]:
        table.add_row(
            v["version"], v["role"] or "", v["gate"] or "-", when(v["registered_at"]), v["run_id"] or "-"
        )
    console.print(table)
    print_windows(project, limit=10)
    alerts = Table(title="recent alerts")
    for column in ("when", "rule", "message", "run"):
        alerts.add_column(column)
    for a in view["alerts"]:
        undelivered = "".join(f"\n[yellow]not delivered[/] to {escape(d)}" for d in a["undelivered"])
        alerts.add_row(when(a["ts"]), a["rule"], escape(a["message"]) + undelivered, a["run_id"] or "-")
    console.print(alerts)
    history = Table(title="champion history")
    for column in ("when", "action", "from", "to", "reason"):
        history.add_column(column)
    for p in view["history"]:
        history.add_row(when(p["ts"]), p["action"], p["from_version"] or "-", p["to_version"], p["reason"])
    console.print(history)
    print_runs(project)
    optimism = view["gate_optimism"]
    if optimism:
        last, paired = optimism["records"][-1], ""
        if optimism.get("mean_gain") is not None:
            over = f" over {optimism['n_gain']}" if optimism["n_gain"] != optimism["n"] else ""
            paired = (
                f"; paired with the previous champion on the same rows (the improvement promised "
                f"minus the improvement delivered): {optimism['mean_gain']:+.4f}{over}"
                f"{standard_error(optimism['se_gain'])}"
            )
        rows = "served rows" if is_scorer(optimism["metric"]) else "labelled rows"  # a scorer needs no label
        console.print(
            f"gate optimism: {optimism['mean']:+.4f} {optimism['metric']} on average over {optimism['n']} "
            f"promotion(s){standard_error(optimism['se'])} (gate estimate, less what choosing among the "
            f"candidates flattered it by, minus the live score over as many {rows}; "
            f"{optimism['mean_raw']:+.4f} from the raw "
            f"score; latest: gate {last['gate']:.4f}, live {last['live']:.4f} on {last['n']} rows){paired}",
            highlight=False,
        )
    archived = view["archive"]
    if archived["batches"]:
        console.print(
            f"archive: {archived['predictions']:,} predictions in {archived['batches']} batch(es), "
            f"{archived['bytes']:,} bytes, through seq {archived['through_seq']} ({archived['url']})",
            highlight=False,
        )
    health = view["monitoring"]
    console.print(
        f"monitoring: last success {when(health['last_success']) if health['last_success'] else 'never'}"
        + (
            f"; last failure {when(health['last_failure'])}: {health['last_error']}"
            if health["last_failure"]
            else ""
        )
    )
