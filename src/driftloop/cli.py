"""``driftloop ...`` commands: init, train, serve, monitor, drift, retrain, promote, rollback, sign,
status, runs, report, reviewers, datasets, demo.

Usage errors (an unknown command or option, a bad value) print one message and exit with 2;
a driftloop error prints one sentence and exits with 1.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.logging import RichHandler
from rich.table import Table

from driftloop._show import console, log_console, print_run, print_runs, print_status, print_windows, when
from driftloop.exceptions import ConfigError, DriftloopError

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Keep a deployed model accurate while the world drifts.",
)
ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="Path to driftloop.toml.")]
DEFAULT_CONFIG = Path("driftloop.toml")
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


def _print_json(value: Any) -> None:
    import json

    from driftloop.views import jsonable

    typer.echo(json.dumps(jsonable(value), indent=2, default=str))


def _setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=log_console, show_path=False)],
        force=True,
    )
    for noisy in ("mlflow", "alembic", "dbos", "httpx", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("driftloop").setLevel(logging.INFO)


def _project(config: Path) -> Any:
    from driftloop.project import Project

    return Project.load(config)


def _version(value: bool) -> None:
    if value:
        from driftloop import __version__

        console.print(f"driftloop {__version__}")
        raise typer.Exit()


def _help_without_command(ctx: typer.Context) -> None:
    """A group called without a command shows its help as a usage error (exit 2), as Click 8.2's
    ``no_args_is_help`` does; before 8.2 that exited 0, which a script would take for success."""
    if ctx.invoked_subcommand is None:
        shown = ctx.get_help()  # Typer's rich help prints itself and returns ""
        if shown:
            typer.echo(shown)
        raise typer.Exit(2)


@app.callback(invoke_without_command=True)
def _main(
    ctx: typer.Context,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Keep a deployed model accurate while the world drifts."""
    _help_without_command(ctx)


@app.command()
def init(
    folder: Annotated[Path, typer.Argument(help="Where to write the example project.")] = Path("."),
    force: Annotated[bool, typer.Option(help="Overwrite an existing driftloop.toml.")] = False,
    template: Annotated[
        str,
        typer.Option(
            help="The example: 'loan' (a tabular classifier), 'images' (an image classifier), "
            "'documents' (a document classifier) or 'regression' (house prices)."
        ),
    ] = "loan",
) -> None:
    """Scaffold a working example project with a scikit-learn trainer and seeded data."""
    from driftloop.demo.project import write_example

    if (folder / "driftloop.toml").exists() and not force:
        raise DriftloopError(f"'{folder / 'driftloop.toml'}' already exists; pass --force to overwrite it.")
    try:
        config = write_example(folder, template=template)
    except ConfigError as exc:  # a usage error: click's one message and exit code 2
        raise typer.BadParameter(str(exc), param_hint="'--template'") from None
    console.print(
        f"Wrote [cyan]{config}[/], trainer.py and data/train.csv.\n"
        f"Next: [bold]cd {folder} && driftloop train && driftloop serve[/]"
    )


@app.command()
def train(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Snapshot the training data, run the trainer, register a version (champion if none yet)."""
    from driftloop.training import train as run_train

    project = _project(config)
    with console.status("training…"):
        result = run_train(project)
    overall = {k: v for k, v in result.metrics.items() if "." not in k}
    scores = ", ".join(f"{k.removeprefix('validation_')} {v:.4f}" for k, v in overall.items())
    console.print(
        f"Registered [bold]{project.name}[/] version [bold]{result.version}[/] "
        f"(dataset {result.dataset.id[:12]}, {result.dataset.rows} rows; validation {scores}"
        + (f", of {result.validated_by}; refitted on every row)" if result.validated_by else ")")
        + (" — now the [green]champion[/]." if result.champion else "."),
        highlight=False,
    )
    per: dict[str, dict[str, float]] = {}  # per class or field: validation_f1.invoice -> invoice, f1
    for key, value in result.metrics.items():
        if "." in key:
            metric, part = key.removeprefix("validation_").split(".", 1)
            per.setdefault(part, {})[metric] = value
    if per:
        kind = {"classification": ", per class", "extraction": ", per field"}.get(project.task.name, "")
        table = Table(title=f"validation{kind}")
        table.add_column("")
        metrics = list(dict.fromkeys(m for scores_of in per.values() for m in scores_of))
        for metric in metrics:
            table.add_column(metric, justify="right")
        for part, scores_of in per.items():
            table.add_row(part, *(f"{scores_of[m]:.4f}" if m in scores_of else "-" for m in metrics))
        console.print(table)


@app.command()
def serve(
    config: ConfigOption = DEFAULT_CONFIG,
    host: Annotated[str | None, typer.Option(help="Overrides serving.host.")] = None,
    port: Annotated[int | None, typer.Option(help="Overrides serving.port.")] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, max=64, help="Worker processes; overrides serving.workers.")
    ] = None,
    monitor: Annotated[
        bool, typer.Option(help="Run monitoring (and triggered retrains) on its schedule.")
    ] = True,
    allow_open: Annotated[
        bool,
        typer.Option(
            "--allow-open", help="Serve on a non-loopback address without API keys (anyone can call it)."
        ),
    ] = False,
) -> None:
    """Serve the champion over HTTP; log every prediction; pick up new champions without restart.

    With several workers each process serves and logs (group commit per process, all into the
    one store); exactly one of them, the holder of the monitoring lock, runs the monitoring schedule.
    """
    import socket

    import uvicorn

    from driftloop.config import LOOPBACK_HOSTS
    from driftloop.identity import MIN_PUBLIC_KEY, parse_api_keys
    from driftloop.serving.http import uvicorn_config

    project = _project(config)
    settings = project.settings.serving
    count = workers or settings.workers
    bind, at = host or settings.host, settings.port if port is None else port
    try:
        keys = parse_api_keys(os.environ.get("DRIFTLOOP_API_KEYS"))
    except ValueError as exc:
        raise DriftloopError(str(exc)) from None
    if bind not in LOOPBACK_HOSTS and not keys and not allow_open:
        raise DriftloopError(
            f"Serving on {bind!r} without API keys would let anyone who can reach it predict and label; "
            "set DRIFTLOOP_API_KEYS, or pass --allow-open to serve it open anyway."
        )
    short = sorted(k.name for key, k in keys.items() if len(key) < MIN_PUBLIC_KEY)
    if bind not in LOOPBACK_HOSTS and short:
        raise DriftloopError(
            f"Serving on {bind!r} needs API keys of at least {MIN_PUBLIC_KEY} characters, and the keys "
            f"named {short} are shorter; make each a random string, such as the output of "
            "python -c 'import secrets; print(secrets.token_urlsafe(24))'."
        )
    try:  # a busy port is one sentence, not uvicorn's traceback
        family = socket.AF_INET6 if ":" in bind else socket.AF_INET
        with socket.socket(family) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((bind, at))
    except OSError as exc:
        raise DriftloopError(
            f"Port {at} on {bind} cannot be used ({exc.strerror}); pass --port PORT."
        ) from None
    shown = f"[{bind}]" if ":" in bind else bind
    champion = project.store.champion(project.name) or "none yet"
    console.print(
        f"Serving [bold]{project.name}[/] (champion {champion}) at [cyan]http://{shown}:{at}[/] "
        f"with {count} worker(s); API docs at /docs, health at /health and /ready. Ctrl-C stops it.",
        highlight=False,
    )
    if count > 1:
        import inspect

        import uvicorn
        from uvicorn.supervisors import Multiprocess

        os.environ["DRIFTLOOP_CONFIG"] = str(config.resolve())
        os.environ["DRIFTLOOP_SERVE_MONITOR"] = "1" if monitor else "0"
        project.close()
        cfg = uvicorn_config(
            "driftloop.serving.app:app_from_environment",
            settings,
            host=bind,
            port=at,
            factory=True,
            workers=count,
        )
        sockets = [cfg.bind_socket()]
        supervisor: Any = Multiprocess
        if "target" in inspect.signature(Multiprocess.__init__).parameters:  # uvicorn before 0.51
            supervisor(cfg, target=uvicorn.Server(cfg).run, sockets=sockets).run()
        else:
            supervisor(cfg, sockets=sockets).run()
        return
    from driftloop.serving import create_app

    uvicorn.Server(uvicorn_config(create_app(project, monitor=monitor), settings, host=bind, port=at)).run()


@app.command("monitor")
def monitor_command(
    config: ConfigOption = DEFAULT_CONFIG,
    flush: Annotated[bool, typer.Option(help="Also close the last, incomplete window.")] = False,
) -> None:
    """Profile new log rows into windows, compare with the reference, evaluate alert rules."""
    from driftloop import workflow
    from driftloop.locks import monitor_lock
    from driftloop.monitor import Monitor

    project = _project(config)
    lock = monitor_lock(project.settings.store.url, project.settings.state_dir, project.name)
    if not lock.acquire():
        holder = lock.holder()
        raise DriftloopError(
            f"Another process{f' ({holder})' if holder else ''} is monitoring '{project.name}', "
            "so this one does not; its windows show in 'driftloop status'."
        )
    needs_workflow = any(rule.retrain for rule in project.settings.alerts)
    try:
        if needs_workflow:
            workflow.launch(project, schedules=False)
            result = workflow.monitor_and_trigger(project, Monitor(project, progress=True), flush=flush)
            for run in project.store.runs(project.name, active_only=True):
                console.print(f"Retrain {run['id']} queued by {run['trigger']}; waiting for it…")
                outcome = workflow.wait(run["id"])
                console.print(f"Retrain {run['id']}: [bold]{outcome['status']}[/]")
        else:
            monitor = Monitor(project, progress=True)
            result = monitor.run(flush=flush)
            workflow.post_deploy_watch(project, monitor)
    finally:
        workflow.shutdown()
        lock.release()
    console.print(f"Closed {len(result.windows)} window(s); {len(result.alerts)} alert(s).")
    gaps = Monitor(project).reference_gaps()
    if gaps:
        console.print(
            f"[yellow]note:[/] the champion's reference was built without {', '.join(gaps)}, so "
            f"{'it is' if len(gaps) == 1 else 'they are'} not monitored; "
            "run 'driftloop reference --rebuild'.",
            highlight=False,
        )
    print_windows(project, limit=max(5, len(result.windows)))


@app.command()
def drift(
    config: ConfigOption = DEFAULT_CONFIG,
    last: Annotated[str, typer.Option(help="The span to cover, such as '1h', '1d' or '7d'.")] = "1d",
    engine: Annotated[
        str,
        typer.Option(
            help="'profiles': merge the windows' stored profiles (no rows rescanned); 'local' or "
            "'dask': rescan the archived rows of the span from Parquet, here or on a Dask cluster."
        ),
    ] = "profiles",
    scheduler: Annotated[
        str | None,
        typer.Option(help="With --engine dask: the scheduler's address (default: archive.dask_scheduler)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Drift over a longer span, from the windows' stored profiles or the archived rows."""
    import time

    from driftloop.config import parse_duration
    from driftloop.views import drift_view

    try:
        span = parse_duration(last)
    except ValueError as exc:  # a usage error: click's one message and exit code 2
        raise typer.BadParameter(f"{exc}.", param_hint="'--last'") from None
    if engine not in ("profiles", "local", "dask"):
        raise typer.BadParameter(
            f"must be 'profiles', 'local' or 'dask', not {engine!r}.", param_hint="'--engine'"
        )
    project = _project(config)
    view = drift_view(
        project, since=time.time() - span, engine=engine, scheduler=scheduler, progress=not as_json
    )
    if as_json:
        _print_json(view)
        return
    if view is None:
        console.print(
            f"No windows in the last {last} against the current reference; run 'driftloop monitor'."
            if engine == "profiles"
            else f"No archived rows in the last {last}; 'driftloop archive' moves closed windows' rows there."
        )
        return
    source = (
        "merged from the windows' profiles"
        if engine == "profiles"
        else f"rescanned from the archive ({engine})"
    )
    table = Table(title=f"drift over the last {last}: {view['rows']:,} rows {source}")
    for column in ("column", "kind", "n", "statistic", "threshold", "p-value", "PSI", "missing Δ", "drifted"):
        table.add_column(column)
    for c in view["columns"]:
        table.add_row(
            c["column"],
            c["kind"],
            f"{c['n']:,}",
            f"{c['statistic']:.4f}",
            f"{c['threshold']:g}",
            f"{c['p_value']:.2g}",
            f"{c['psi']:.3f}",
            f"{c['missing_change']:+.1%}",
            "[bold red]yes[/]" if c["drifted"] else "no",
        )
    console.print(table)
    drifted = view["drifted"]
    console.print(f"{len(drifted)} of {len(view['columns'])} columns drifted: {', '.join(drifted) or '-'}")
    for name, change in view["vocabulary"].items():
        words = Table(
            title=f"vocabulary of '{name}': {change['documents']:,} documents, "
            f"Jensen-Shannon distance {change['distance']:.3f} from the reference"
        )
        for column in ("change", "term", "share of documents then", "now"):
            words.add_column(column)
        for kind in ("new", "rose", "fell"):
            for t in change[kind]:
                words.add_row(kind, t["term"], f"{t['reference']:.1%}", f"{t['current']:.1%}")
        console.print(words)


@app.command("archive")
def archive_command(
    config: ConfigOption = DEFAULT_CONFIG,
    older_than: Annotated[
        str | None,
        typer.Option(
            help="Move closed windows' rows older than this, such as '30d' (default: archive.after; "
            "'0s': every closed window)."
        ),
    ] = None,
    verify: Annotated[bool, typer.Option(help="Re-read every archived file against its checksum.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Move closed windows' predictions, labels and annotations from the store to Parquet."""
    from dataclasses import asdict

    from driftloop.archive import archive_logs
    from driftloop.config import parse_duration
    from driftloop.views import archive_view

    try:
        age = None if older_than is None else parse_duration(older_than, allow_zero=True)
    except ValueError as exc:
        raise typer.BadParameter(f"{exc}.", param_hint="'--older-than'") from None
    project = _project(config)
    if age is None and project.settings.archive.after is None and not verify:
        raise typer.BadParameter(
            "is needed when the config sets no archive.after (rows of closed windows older than it move).",
            param_hint="'--older-than'",
        )
    moving = age is not None or project.settings.archive.after is not None
    result = archive_logs(project, older_than=age, progress=not as_json) if moving else None
    problems = project.archive.verify(project.name) if verify else []
    held = archive_view(project)
    summary = {
        "archive": held["url"],
        "moved": asdict(result) if result else None,
        "batches": held["batches"],
        "rows": held["predictions"],
        "bytes": held["bytes"],
        "through_seq": held["through_seq"],
        "problems": problems if verify else None,
    }
    if as_json:
        _print_json(summary)
    else:
        if result is not None:
            console.print(
                f"moved {result.predictions:,} predictions, {result.feedback:,} labels and "
                f"{result.annotations:,} annotations in {result.batches} batch(es), {result.bytes:,} bytes, "
                f"in {result.seconds:.2f}s"
                + (
                    f"; finished {result.recovered:,} rows a crashed run had archived"
                    if result.recovered
                    else ""
                )
                + (
                    f"; deleted {result.pruned_batches} batch(es) past archive.retention"
                    if result.pruned_batches
                    else ""
                ),
                highlight=False,
            )
        console.print(
            f"archive {summary['archive']}: {summary['batches']} batch(es), {summary['rows']:,} predictions, "
            f"{summary['bytes']:,} bytes, through seq {summary['through_seq']}",
            highlight=False,
        )
        if verify:
            console.print(
                "every file matches its checksum" if not problems else "\n".join(problems), highlight=False
            )
    if problems:
        raise typer.Exit(1)


@app.command()
def retrain(
    config: ConfigOption = DEFAULT_CONFIG,
    trainer: Annotated[
        str | None, typer.Option(help="Use another trainer (module:function) for this run.")
    ] = None,
    wait: Annotated[bool, typer.Option(help="Wait for the run to finish.")] = True,
) -> None:
    """Retrain now: snapshot, train a challenger, evaluate, gate, promote or reject.

    An interrupted run of this model is resumed (and waited for) instead of starting another.
    """
    from driftloop import workflow

    project = _project(config)
    try:
        workflow.launch(project, schedules=False)
        active = project.store.runs(project.name, active_only=True)
        if active:
            run_id = active[-1]["id"]
            console.print(f"Resuming retrain run {run_id} (was at step {active[-1]['step'] or 'start'}).")
        else:
            run_id = workflow.start_retrain(project, "manual", trainer=trainer)
            console.print(f"Started retrain run {run_id}.")
        if wait:
            with console.status(f"retraining ({run_id})…"):
                row = workflow.wait(run_id)
            print_run(project, row)
    finally:
        workflow.shutdown()


@app.command()
def reference(
    config: ConfigOption = DEFAULT_CONFIG,
    rebuild: Annotated[
        bool, typer.Option(help="Rebuild the champion's reference for the current settings.")
    ] = False,
) -> None:
    """What the champion's monitoring reference covers; --rebuild builds it again.

    A rebuild reads the champion's training data for the current settings (an embedding added
    after training, new bins)."""
    from driftloop.monitor import Monitor, watch_anchor
    from driftloop.training import build_reference

    project = _project(config)
    version = project.champion()
    if version is None:
        raise DriftloopError(f"Model '{project.name}' has no champion yet; run 'driftloop train' first.")
    if rebuild:
        project.store.delete_reference(project.name, version)
        with console.status("rebuilding the reference…"):
            build_reference(project, version)
    monitor = Monitor(project)
    spec = monitor.reference().features.spec
    gaps = monitor.reference_gaps()
    console.print(
        f"The reference of {project.name} version {version} profiles {len(spec.numeric)} numeric and "
        f"{len(spec.categorical)} categorical column(s)"
        + (
            f"; it lacks {', '.join(gaps)} (run 'driftloop reference --rebuild')."
            if gaps
            else ", everything the settings ask for."
        ),
        highlight=False,
    )
    for part, rows in (monitor.reference().row["profile"].get("sources") or {}).items():
        console.print(f"  {part}: {rows}", highlight=False)  # none in a reference built before they were kept
    anchor = watch_anchor(project.store, project.name, version)
    if anchor:
        shown = [f"{m} {v['held_out']:.4f} → {v['bound']:.4f}" for m, v in anchor["metrics"].items()]
        raised = ", ".join(shown[:4]) + (f" and {len(shown) - 4} more" if len(shown) > 4 else "")
        console.print(
            f"  set by its post-deploy watch: {raised} (the {anchor['level'] * 100:g} % bounds of its "
            f"scores on {anchor['n']} labelled live rows; relative alerts use them for the windows after seq "
            f"{anchor['end_seq']})",
            highlight=False,
        )


@app.command()
def rollback(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Point the champion back at the previous version at once."""
    from driftloop import workflow

    project = _project(config)
    version = workflow.rollback(project)
    console.print(f"Champion of [bold]{project.name}[/] is now version [bold]{version}[/].")


@app.command()
def promote(
    version: Annotated[str, typer.Argument(help="The registered version to make champion.")],
    config: ConfigOption = DEFAULT_CONFIG,
    force: Annotated[bool, typer.Option(help="Skip the gate (needs --reason).")] = False,
    reason: Annotated[str | None, typer.Option(help="Why, recorded in the champion history.")] = None,
) -> None:
    """Make VERSION the champion, through the gate or at once with --force and a --reason.

    Through the gate, VERSION is evaluated against the champion on the newest held-out
    labelled rows, like a challenger."""
    from driftloop import workflow

    project = _project(config)
    if force:
        if not reason or not reason.strip():
            raise DriftloopError(
                "'driftloop promote --force' needs --reason, recorded in the champion history."
            )
        old = workflow.force_promote(project, version, reason.strip())
        console.print(f"Champion of [bold]{project.name}[/] is now version [bold]{version}[/] (was {old}).")
        return
    try:
        workflow.launch(project, schedules=False)
        run_id = workflow.start_retrain(project, f"manual:promote {version}", candidate=version)
        console.print(f"Gating version {version} against the champion in run {run_id}.")
        with console.status(f"evaluating ({run_id})…"):
            row = workflow.wait(run_id)
        print_run(project, row)
    finally:
        workflow.shutdown()


@app.command()
def sign(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Sign every artifact digest in the store with DRIFTLOOP_MODEL_KEY.

    Run it after turning signing on: you vouch that the digests recorded so far are your own."""
    from driftloop.registry import model_key
    from driftloop.registry import sign as signature

    project = _project(config)
    key = model_key()
    if key is None:
        raise DriftloopError("'driftloop sign' needs the signing key in DRIFTLOOP_MODEL_KEY.")
    rows = project.store.artifacts(project.name)
    for row in rows:
        project.store.sign_artifact(
            project.name, row["version"], signature(key, project.name, row["version"], row["sha256"])
        )
    console.print(f"Signed the artifact digests of {len(rows)} version(s) of [bold]{project.name}[/].")


@app.command()
def status(config: ConfigOption = DEFAULT_CONFIG, as_json: JsonOption = False) -> None:
    """Champion, recent windows, alerts, retrain runs and gate decisions."""
    from driftloop.views import status_view

    project = _project(config)
    view = status_view(project)  # driftloop's own store, not the registry: well under a second
    if as_json:
        _print_json(view)
        return
    print_status(project, view)


@app.command()
def runs(
    config: ConfigOption = DEFAULT_CONFIG,
    run_id: Annotated[str | None, typer.Argument(help="Show one run's steps and durations.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Retraining runs with their steps, outcome and gate decisions."""
    from driftloop.views import runs_view

    project = _project(config)
    if as_json:
        rows = runs_view(project, limit=1000 if run_id else 50)
        if run_id is None:
            _print_json(rows)
            return
        one = next((r for r in rows if r["id"] == run_id), None)
        if one is None:
            raise DriftloopError(f"Retrain run {run_id!r} does not exist; 'driftloop runs' lists them.")
        _print_json({**one, "steps": project.store.run_steps(run_id)})
        return
    if run_id is None:
        print_runs(project)
        return
    row = project.store.run(run_id)
    if row is None:
        raise DriftloopError(f"Retrain run {run_id!r} does not exist; 'driftloop runs' lists them.")
    print_run(project, row)
    table = Table(title=f"steps of {run_id}")
    for column in ("step", "started", "seconds"):
        table.add_column(column)
    for step in project.store.run_steps(run_id):
        table.add_row(
            step["step"],
            when(step["started_at"]),
            "-" if step["seconds"] is None else f"{step['seconds']:.2f}",
        )
    console.print(table)


@app.command()
def report(
    config: ConfigOption = DEFAULT_CONFIG,
    out: Annotated[Path, typer.Option("--out", "-o", help="The HTML file to write.")] = Path("report.html"),
    windows: Annotated[int, typer.Option(min=1, max=100_000, help="How many of the newest windows.")] = 1000,
) -> None:
    """Write one self-contained HTML report that opens without a network.

    It shows the champion, windows, drift, alerts, runs and gate decisions, from stored
    aggregates only (never logged rows)."""
    from driftloop.ui import render_report

    project = _project(config)
    with console.status("drawing the report…"):
        html = render_report(project, windows=windows)
    partial = out.with_name(f".{out.name}.partial")
    partial.write_text(html, encoding="utf-8")
    partial.replace(out)  # a reader never sees half a file
    console.print(f"Wrote [cyan]{out}[/] ({len(html.encode()) / 1024:.0f} KiB).", highlight=False)


@app.command()
def reviewers(
    config: ConfigOption = DEFAULT_CONFIG,
    release: Annotated[str | None, typer.Option(help="Use this reviewer's labels again.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Each reviewer's labels, agreement with the others and the trusted sources, and flags.

    Agreement with the others is Cohen's kappa on shared items; a reviewer below
    review.min_agreement is flagged, and one whose key is quarantined says so."""
    from driftloop.agreement import agreement

    project = _project(config)
    if release is not None:
        if not project.store.release(project.name, release):
            raise DriftloopError(
                f"Reviewer '{release}' is not quarantined; 'driftloop reviewers' lists them."
            )
        console.print(f"Reviewer [bold]{release}[/]'s labels are used again.")
        return
    view = agreement(project)
    if as_json:
        _print_json(view)
        return
    table = Table(title=f"reviewers of {project.name} (review.min_agreement {view['min_agreement']:g})")
    for column in ("reviewer", "labels", "shared items", "kappa", "agreed", "with trusted", "state"):
        table.add_column(column)
    for r in view["reviewers"]:

        def share(v: float | None) -> str:
            return "-" if v is None else f"{v:.0%}"

        table.add_row(
            r["reviewer"],
            str(r["labels"]),
            str(r["overlap_items"]),
            "-" if r["kappa"] is None else f"{r['kappa']:.3f}",
            share(r["agreed"]),
            share(r["agreed_with_confirmed"]),
            "quarantined" if r["quarantined"] else "flagged" if r["flagged"] else "ok",
        )
    console.print(table)


datasets_app = typer.Typer(help="Versioned training and evaluation snapshots.")
app.add_typer(datasets_app, name="datasets")


@datasets_app.callback(invoke_without_command=True)
def _datasets(ctx: typer.Context) -> None:
    _help_without_command(ctx)


@datasets_app.command("list")
def datasets_list(config: ConfigOption = DEFAULT_CONFIG, as_json: JsonOption = False) -> None:
    """Every snapshot of this model: id, kind, rows, classes, when."""
    from driftloop.views import datasets_view

    project = _project(config)
    if as_json:
        _print_json(datasets_view(project))
        return
    table = Table(title=f"datasets of {project.name}")
    for column in ("id", "kind", "rows", "class counts", "run", "created"):
        table.add_column(column)
    for d in project.store.datasets(project.name):
        m = d["manifest"]
        counts = ", ".join(f"{k}: {v}" for k, v in m.get("class_counts", {}).items())
        table.add_row(
            d["id"][:12], d["kind"], str(d["rows"]), counts, m.get("run_id", "-"), when(d["created_at"])
        )
    console.print(table)


@datasets_app.command("show")
def datasets_show(
    dataset: Annotated[str, typer.Argument(help="A dataset id or its prefix.")],
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """A snapshot's manifest: sources, sampling, class counts, content hash."""
    import json

    console.print_json(json.dumps(_dataset(_project(config), dataset)["manifest"], default=str))


@datasets_app.command("diff")
def datasets_diff(
    a: Annotated[str, typer.Argument(help="First dataset id or prefix.")],
    b: Annotated[str, typer.Argument(help="Second dataset id or prefix.")],
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """How two snapshots differ: rows, class counts, and per-feature drift between them."""
    import pandas as pd

    from driftloop.drift import compare
    from driftloop.profiles import Profile, ProfileSpec

    project = _project(config)
    left, right = _dataset(project, a), _dataset(project, b)
    frames = [
        project.schema.profile_frame(project.schema.frame(pd.read_parquet(d["path"]))) for d in (left, right)
    ]
    numeric = [c for c in frames[0] if frames[0][c].dtype.kind == "f"]
    spec = ProfileSpec.fit(frames[0], numeric, [c for c in frames[0] if c not in numeric])
    report = compare(Profile.from_frame(spec, frames[0]), Profile.from_frame(spec, frames[1]))
    table = Table(title=f"{left['id'][:12]} -> {right['id'][:12]}")
    for column in ("", left["id"][:12], right["id"][:12]):
        table.add_column(column)
    table.add_row("rows", str(left["rows"]), str(right["rows"]))
    for label in sorted(
        set(left["manifest"].get("class_counts", {})) | set(right["manifest"].get("class_counts", {}))
    ):
        table.add_row(
            f"class {label}",
            str(left["manifest"].get("class_counts", {}).get(label, 0)),
            str(right["manifest"].get("class_counts", {}).get(label, 0)),
        )
    console.print(table)
    drift = Table(title="feature drift between them")
    for column in ("feature", "kind", "effect", "p-value", "PSI", "drifted"):
        drift.add_column(column)
    for c in report.columns:
        drift.add_row(
            c.column,
            c.kind,
            f"{c.effect:.3f}",
            f"{c.p_value:.2g}",
            f"{c.psi:.3f}",
            "yes" if c.drifted else "",
        )
    console.print(drift)


def _dataset(project: Any, prefix: str) -> dict[str, Any]:
    from driftloop.exceptions import NotFoundError

    found = [d for d in project.store.datasets(project.name) if d["id"].startswith(prefix)]
    if len(found) != 1:
        raise NotFoundError(
            f"The dataset id must match exactly one snapshot of '{project.name}'. "
            f"Got {prefix!r}, which matches {len(found)}; see 'driftloop datasets list'."
        )
    return found[0]  # type: ignore[no-any-return]


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for the run's project, databases and artifacts.")] = Path(
        "demo-run"
    ),
    seed: Annotated[int, typer.Option(help="Seed of the data generator.")] = 7,
    scenario: Annotated[
        str,
        typer.Option(
            help="'loan' (a tabular classifier), 'images' (an image classifier), "
            "'documents' (a document classifier), 'regression' (house prices), 'blog' "
            "(a post generator judged by its scorers) or 'forms' (entity extraction, corrected "
            "field by field)."
        ),
    ] = "loan",
    windows: Annotated[
        int | None, typer.Option(min=4, help="Monitoring windows to stream (the scenario's own by default).")
    ] = None,
    window_rows: Annotated[
        int | None, typer.Option(min=50, help="Rows per window (the scenario's own by default).")
    ] = None,
    stay: Annotated[
        bool | None,
        typer.Option(
            "--serve/--no-serve",
            help="Afterwards serve the run with its dashboard until Ctrl-C (default: when run in a "
            "terminal, not in CI).",
        ),
    ] = None,
) -> None:
    """Run the whole loop offline on embedded defaults (about a minute), then show its dashboard."""
    from driftloop.demo.scenario import SCENARIOS, run_demo

    sizes: dict[str, Any] = {
        k: v for k, v in (("windows", windows), ("window_rows", window_rows)) if v is not None
    }
    if scenario == "blog":
        from driftloop.demo.blog_scenario import run_blog

        run_blog(out, seed=seed, console=console, **sizes)
    elif scenario == "forms":
        from driftloop.demo.forms_scenario import run_forms

        run_forms(out, seed=seed, console=console, **sizes)
    elif scenario not in SCENARIOS:
        raise typer.BadParameter(
            f"must be one of {sorted([*SCENARIOS, 'blog', 'forms'])}. Got {scenario!r} instead.",
            param_hint="'--scenario'",
        )
    else:
        run_demo(out, seed=seed, console=console, scenario=scenario, **sizes)
    interactive = sys.stdin.isatty() and sys.stdout.isatty() and not os.environ.get("CI")
    config = out.resolve() / "driftloop.toml"
    if not (interactive if stay is None else stay):
        console.print(
            f"Dashboard: [bold]driftloop serve --config {config}[/], then open http://127.0.0.1:8000/",
            highlight=False,
        )
        return
    import socket

    with socket.socket() as probe:  # the template's port, or any free one
        taken = probe.connect_ex(("127.0.0.1", 8000)) == 0
    port = None
    if taken:
        from driftloop.demo.scenario import free_port

        port = free_port()
    console.print(f"Dashboard of the run: [cyan]http://127.0.0.1:{port or 8000}/[/]", highlight=False)
    serve(config=config, host="127.0.0.1", port=port, workers=1, monitor=True, allow_open=False)


def main() -> None:
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # no MLflow INFO lines in our output
    _setup_logging(verbose=bool(os.environ.get("DRIFTLOOP_VERBOSE")))
    try:
        app(standalone_mode=True)  # click words usage errors itself: one message, exit code 2
    except DriftloopError as exc:
        console.print(f"[red]error:[/] {exc}", highlight=False)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
