"""`rotator rotate-now`, `resume`, `reconcile` and `daemon`: the commands that change credentials.

Each checks the config exactly as `validate` does first (what runs is what validate accepted). Many plans run in
threads, each isolated; on a terminal a progress bar (rich, imported only then) runs on stderr while log lines
print above it, and a plain summary table follows on stdout.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

import typer

from rotator.cli.output import EXIT_FAILED, EXIT_USAGE, emit_json, fail, reported_errors
from rotator.cli.params import (
    AllOption,
    ConcurrencyOption,
    ConfigOption,
    JsonOption,
    LogLevel,
    LogLevelOption,
    PlansArgument,
    ReasonOption,
    TagOption,
    WideOption,
    config_choice,
)
from rotator.cli.tables import Column, render_and_cut, terminal_width

if TYPE_CHECKING:
    from rotator.engine.runner import RunOutcome
    from rotator.workspace import Workspace

T = TypeVar("T")

commands = typer.Typer()


def setup_logs(level: str, *, json_logs: bool | None = None) -> None:
    """Log lines on stderr from `level` up: JSON when stderr is not a terminal (or `json_logs`), readable
    lines when it is."""
    from rotator import logs

    try:
        logs.configure(json=json_logs, level=level)
    except KeyError:
        fail(f"unknown log level {level!r}", EXIT_USAGE, key="--log-level", fix="use debug, info, warning or error")


def checked_workspace(config: Any) -> Workspace:
    """The config as `validate` accepts it, or the same ConfigError (exit 2): every plugin kind and every notifier
    built once, whether or not a plan uses it."""
    from rotator.config import load_config
    from rotator.workspace import Workspace

    workspace = Workspace(load_config(config_choice(config)))
    workspace.check_components()
    return workspace


def run_in_parallel(
    items: Sequence[T],
    work: Callable[[T], RunOutcome],
    concurrency: int,
    label: str,
    *,
    show_progress: bool,
    name: Callable[[T], str],
) -> list[RunOutcome]:
    """Run `work` over `items` in threads, each isolated (one failure never stops the others); the outcomes in the
    items' order."""
    from concurrent.futures import ThreadPoolExecutor, as_completed

    from rotator.engine.runner import RunOutcome
    from rotator.errors import PlanBusy, describe

    def isolated(item: T) -> RunOutcome:
        try:
            return work(item)
        except PlanBusy as exc:
            return RunOutcome(name(item), "busy", error=str(exc))
        except Exception as exc:
            return RunOutcome(name(item), "error", error=describe(exc))

    outcomes: list[RunOutcome] = []
    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(items) or 1))) as pool:
        futures = [pool.submit(isolated, item) for item in items]
        if show_progress and len(items) > 1:
            _with_progress_bar(futures, label, outcomes)
        else:
            outcomes.extend(future.result() for future in as_completed(futures))
    order = {name(item): index for index, item in enumerate(items)}
    return sorted(outcomes, key=lambda o: order.get(o.plan_id, 0))


def _with_progress_bar(futures: list[Any], label: str, outcomes: list[RunOutcome]) -> None:
    """rich's progress bar on stderr. While it runs, rich replaces sys.stderr with a proxy that prints each
    complete line above the bar; rotator.logs writes to sys.stderr as it is at each write, so log lines land there
    and never inside the bar (tests/integration/test_cli_terminal.py checks it on a pseudo-terminal)."""
    from concurrent.futures import as_completed

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=Console(stderr=True),
        transient=True,  # the summary table says what happened; the finished bar would repeat it
    )
    with progress:
        task = progress.add_task("", total=len(futures))
        for future in as_completed(futures):
            outcome = future.result()
            outcomes.append(outcome)
            progress.update(task, advance=1, description=f"{outcome.plan_id}: {outcome.outcome}")


def _notes(outcome: RunOutcome) -> str:
    fix = f"fix: {outcome.fix}" if outcome.fix and not outcome.ok else ""
    revoked = "old credential revoked" if outcome.revoked else ""
    return "; ".join(x for x in [outcome.error or "", revoked, *outcome.notes, fix] if x) or "-"


def print_summary(
    outcomes: Sequence[RunOutcome],
    wide: bool = False,
    *,
    ok: Callable[[RunOutcome], bool],
    details: bool = False,
) -> None:
    """The summary table (one line per plan, notes cut to the terminal unless wide) and a count. With `details`
    (a dry run, whose notes are its findings) each plan's notes follow the table in full, one per line, wrapped."""
    columns = [
        Column("PLAN"),
        Column("OUTCOME"),
        Column("RUN"),
        Column("SECONDS", right=True),
        Column("NOTES", cut=True),
    ]
    rows = [
        [
            o.plan_id,
            o.outcome,
            (o.run_id or "-")[:8],
            f"{sum(o.step_seconds.values()):.2f}" if o.step_seconds else "-",
            (o.error or f"{len(o.notes)} findings below") if details and o.notes else _notes(o),
        ]
        for o in outcomes
    ]
    text, cut = render_and_cut(columns, rows, wide=wide)
    failed = sum(1 for o in outcomes if not ok(o))
    lines = [text, f"{len(outcomes) - failed} succeeded, {failed} failed"]
    if cut:
        lines.append("(notes cut to fit: --wide, --json, or history PLAN --run RUN for one run)")
    if details:
        import textwrap

        width = max(40, terminal_width())
        for o in outcomes:
            findings = [*([o.error] if o.error else []), *o.notes, *([f"fix: {o.fix}"] if o.fix and not o.ok else [])]
            if not findings:
                continue
            lines += ["", f"{o.plan_id}:"]
            for finding in findings:
                lines += textwrap.wrap(finding, width, initial_indent="  - ", subsequent_indent="    ") or ["  -"]
    sys.stdout.write("\n".join(lines) + "\n")


def _show_progress(json_output: bool) -> bool:
    return not json_output and sys.stderr.isatty()


def _results_document(outcomes: Sequence[RunOutcome], dry_run: bool) -> dict[str, Any]:
    return {
        "dry_run": dry_run,
        "results": [o.as_dict() for o in outcomes],
        "succeeded": sum(o.ok for o in outcomes),
        "failed": sum(not o.ok for o in outcomes),
    }


def _chosen(plans: list[str] | None, tags: list[str] | None, all_plans: bool, command: str) -> None:
    if not plans and not tags and not all_plans:
        from rotator.errors import ConfigError

        raise ConfigError("no plans chosen", key=command, fix="name plans, or use --tag TAG or --all")


@commands.command("rotate-now")
def rotate_now(
    plans: PlansArgument = None,
    tag: TagOption = None,
    all_plans: AllOption = False,
    concurrency: ConcurrencyOption = None,
    revoke_old: Annotated[
        Literal["grace", "now"],
        typer.Option(
            "--revoke-old",
            help="now: revoke the old credential right after promote (a suspected leak); grace: after the plan's "
            "grace period.",
        ),
    ] = "grace",
    reason: ReasonOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Check that every plan could rotate, and how; change nothing.")
    ] = False,
    config: ConfigOption = None,
    json_output: JsonOption = False,
    wide: WideOption = False,
    log_level: LogLevelOption = "warning",
) -> None:
    """Rotate plans now, in parallel (exit 1 if any failed).

    A progress bar on a terminal, then a summary table; --revoke-old now after a leak."""
    with reported_errors(json_output):
        setup_logs(log_level)
        _chosen(plans, tag, all_plans, "rotate-now")
        from rotator.model import Trigger
        from rotator.workspace import operator_name

        workspace = checked_workspace(config)
        from rotator.cli.lifecycle_commands import without_manual

        chosen = without_manual(workspace.select(plans or [], tag or [], all_plans), plans or [])
        bound = [workspace.bind(plan) for plan in chosen]  # every plan's components load before any rotation
        runner = workspace.runner()
        operator = operator_name()
        if dry_run:
            work: Callable[[Any], RunOutcome] = runner.dry_run
        else:

            def work(bp: Any) -> RunOutcome:
                return runner.rotate(
                    bp, trigger=Trigger.MANUAL, reason=reason, operator=operator, revoke_old_now=revoke_old == "now"
                )

        outcomes = run_in_parallel(
            bound,
            work,
            concurrency or workspace.config.model.rotator.concurrency,
            "dry run" if dry_run else "rotating",
            show_progress=_show_progress(json_output),
            name=lambda bp: bp.plan_id,
        )
        workspace.close()
        if json_output:
            emit_json(_results_document(outcomes, dry_run))
        else:
            print_summary(outcomes, wide, ok=lambda o: o.ok, details=dry_run)
        if not all(o.ok for o in outcomes):
            raise typer.Exit(EXIT_FAILED)


@commands.command()
def resume(
    concurrency: ConcurrencyOption = None,
    config: ConfigOption = None,
    json_output: JsonOption = False,
    wide: WideOption = False,
    log_level: LogLevelOption = "warning",
) -> None:
    """Finish or roll back interrupted runs; revoke what is due.

    Exit 1 if any run it touched ended rolled back, stuck or failed, or a revoke failed."""
    with reported_errors(json_output):
        setup_logs(log_level)
        from rotator.engine.runner import RunOutcome

        workspace = checked_workspace(config)
        bound = [workspace.bind(plan) for plan in workspace.config.plans]
        runner = workspace.runner()

        def settle(bp: Any) -> RunOutcome:
            results = runner.resume(bp)
            if not results:
                return RunOutcome(bp.plan_id, "nothing-to-do")
            worst = next((r for r in results if not resumed_ok(r)), results[-1])
            worst.notes.extend(f"{r.run_id or '-'}: {r.outcome}" for r in results if r is not worst)
            return worst

        outcomes = run_in_parallel(
            bound,
            settle,
            concurrency or workspace.config.model.rotator.concurrency,
            "resuming",
            show_progress=_show_progress(json_output),
            name=lambda bp: bp.plan_id,
        )
        workspace.close()
        if json_output:
            emit_json({"results": [o.as_dict() for o in outcomes]})
        else:
            touched = [o for o in outcomes if o.outcome != "nothing-to-do"]
            if touched:
                print_summary(touched, wide, ok=resumed_ok)
            else:
                sys.stdout.write(f"nothing to resume ({len(outcomes)} plans checked)\n")
        if not all(resumed_ok(o) for o in outcomes):
            raise typer.Exit(EXIT_FAILED)


def resumed_ok(outcome: RunOutcome) -> bool:
    """For resume: the run went forward to its end (a rolled back one failed, even if cleanly)."""
    return outcome.ok and not (outcome.error and outcome.outcome == "awaiting_revoke")


@commands.command()
def reconcile(
    plans: PlansArgument = None,
    tag: TagOption = None,
    all_plans: AllOption = False,
    concurrency: ConcurrencyOption = None,
    reason: ReasonOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only check CURRENT and the admin credential; change nothing.")
    ] = False,
    config: ConfigOption = None,
    json_output: JsonOption = False,
    wide: WideOption = False,
    log_level: LogLevelOption = "warning",
) -> None:
    """Repair drift: reset a CURRENT that no longer logs in.

    Where CURRENT no longer logs in, reset the account with the plan's admin credential (the secret's masterarn,
    or the plugin's admin_secret_id), prove it logs in and store it as CURRENT (exit 1 if any plan could not be
    reconciled)."""
    with reported_errors(json_output):
        setup_logs(log_level)
        _chosen(plans, tag, all_plans, "reconcile")
        from rotator.workspace import operator_name

        workspace = checked_workspace(config)
        chosen = workspace.select(plans or [], tag or [], all_plans)
        bound = [workspace.bind(plan) for plan in chosen]
        runner = workspace.runner()
        operator = operator_name()
        outcomes = run_in_parallel(
            bound,
            lambda bp: runner.reconcile(bp, reason=reason, operator=operator, dry_run=dry_run),
            concurrency or workspace.config.model.rotator.concurrency,
            "dry run" if dry_run else "reconciling",
            show_progress=_show_progress(json_output),
            name=lambda bp: bp.plan_id,
        )
        workspace.close()
        if json_output:
            emit_json(_results_document(outcomes, dry_run))
        else:
            print_summary(outcomes, wide, ok=lambda o: o.ok, details=dry_run)
        if not all(o.ok for o in outcomes):
            raise typer.Exit(EXIT_FAILED)


@commands.command()
def daemon(
    config: ConfigOption = None,
    log_level: Annotated[
        LogLevel | None,
        typer.Option(
            "--log-level", case_sensitive=False, help="Overrides rotator.log_level (default info).", show_default=False
        ),
    ] = None,
    json_logs: Annotated[
        bool | None,
        typer.Option(
            "--json-logs/--console-logs",
            help="JSON lines for a log collector, or readable lines; default rotator.log_format (auto: readable on a "
            "terminal, JSON otherwise).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """The long-running service: schedules, revokes, resumes.

    Fires due plans, sweeps due revokes, resumes interrupted runs at start; SIGHUP reloads the config, SIGTERM
    pauses runs at a safe step and exits."""
    with reported_errors():
        from rotator.config import load_config
        from rotator.daemon import run_daemon

        cfg = load_config(config_choice(config))
        if json_logs is None:
            json_logs = {"json": True, "console": False}.get(cfg.model.rotator.log_format)
        setup_logs(log_level or cfg.model.rotator.log_level, json_logs=json_logs)
        raise typer.Exit(run_daemon(cfg))
