"""`rotator import`, `rotator mark-rotated` and `rotator leak`: the credential's life outside the engine's own
rotations (rotator/baselines.py, rotator/reminders.py, rotator/leaks.py).

- import: a credential made elsewhere becomes the plan's CURRENT with the date it was really made, so that `status`
  shows its real age and the scheduler does not rotate it the moment the daemon starts;
- mark-rotated: a person rotated a manual plan's credential; its reminders stop until it is due again;
- leak: which managed credentials a leaked string or a scanned tree holds (by keyed fingerprint, no store read),
  and with --rotate, rotate them now with the old ones revoked at once. Exit 1 while a live credential is leaked
  and not rotated (as secret scanners do), 0 when nothing live leaked or every rotation succeeded.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from rotator.cli.output import EXIT_FAILED, age, due, emit_json, reported_errors, rfc3339, when
from rotator.cli.params import (
    ConcurrencyOption,
    ConfigOption,
    JsonOption,
    LogLevelOption,
    WideOption,
    config_choice,
    read_json_object,
)
from rotator.cli.tables import Column, render_and_cut

if TYPE_CHECKING:
    from rotator.config import PlanConfig
    from rotator.model import RunRecord
    from rotator.workspace import Workspace

commands = typer.Typer()

PlanArgument = Annotated[str, typer.Argument(metavar="PLAN", help="The plan id.", show_default=False)]
# Plain strings, not Path: typer 0.2x checks each Path value through pydantic, 40 ms on a command's first (see
# rotator.cli.params).
FileOption = Annotated[
    str | None,
    typer.Option(
        "--file",
        "-f",
        metavar="FILE",
        help="The credential's JSON object ('-' for stdin), stored as CURRENT; without it, the CURRENT already in "
        "the plan's store.",
    ),
]
RotatedAtOption = Annotated[
    str | None,
    typer.Option(
        "--rotated-at",
        metavar="TIME",
        help="When the credential was really made: RFC 3339 (2026-03-01T09:00:00Z) or a date; default now.",
    ),
]


def without_manual(chosen: list[PlanConfig], named: list[str]) -> list[PlanConfig]:
    """rotate-now's plans without the manual ones: a manual plan named on the command line is a usage error (with
    what to do instead); --all and --tag pass over them."""
    from rotator.errors import ConfigError

    for plan in chosen:
        if plan.is_manual and plan.id in named:
            raise ConfigError(
                f"plan {plan.id} is rotated by hand (plugin manual), not by the engine",
                key="PLAN",
                fix=f"rotate it by hand, then record it: rotator mark-rotated {plan.id} --reason ...",
            )
    return [plan for plan in chosen if not plan.is_manual]


def _workspace(config: str | Path | None) -> Workspace:
    from rotator.config import load_config
    from rotator.workspace import Workspace

    workspace = Workspace(load_config(config_choice(config)))
    workspace.check_components()
    return workspace


def next_due(plan: PlanConfig, workspace: Workspace, now: datetime) -> datetime | None:
    """When the plan is next due after what the journal holds now: its reminder due date for a manual plan."""
    journal = workspace.journal
    success = journal.last_success(plan.id)
    if plan.is_manual:
        from rotator.reminders import due_at

        return due_at(plan, success, now)
    from rotator.scheduler import due_time

    latest = journal.runs(plan.id, limit=1)
    return due_time(plan, latest[0] if latest else None, success, now)


def _recorded(
    plan: PlanConfig, workspace: Workspace, record: RunRecord | None, verb: str, json_output: bool, **extra: Any
) -> None:
    now = datetime.now(UTC)
    due_at = next_due(plan, workspace, now)
    if json_output:
        emit_json(
            {
                "plan": plan.id,
                "run_id": record.run_id if record else None,
                "version": record.version_id if record else None,
                "rotated_at": rfc3339(record.started_at) if record else None,
                "next_due": rfc3339(due_at),
                **extra,
            }
        )
        return
    assert record is not None
    version = f" (version {record.version_id[:12]})" if record.version_id else ""
    sys.stdout.write(
        f"{verb} {plan.id}{version}: rotated {when(record.started_at)}, age {age(record.started_at, now)}; "
        f"next due {due(due_at, now) if due_at else 'never (schedule manual)'}\n"
    )


@commands.command("import")
def import_credential(
    plan: PlanArgument,
    file: FileOption = None,
    rotated_at: RotatedAtOption = None,
    verify: Annotated[
        bool,
        typer.Option("--verify", help="Log in with the credential first (the plan's test step); exit 1 if refused."),
    ] = False,
    reason: Annotated[str | None, typer.Option("--reason", help="Why (kept in the history).")] = None,
    config: ConfigOption = None,
    json_output: JsonOption = False,
    log_level: LogLevelOption = "warning",
) -> None:
    """Record an existing credential as CURRENT, without rotating.

    With --rotated-at, its age counts from when it was made, and the next rotation falls due on the plan's
    schedule from then. Nothing is written when --verify is refused."""
    with reported_errors(json_output):
        from rotator.cli.run_commands import setup_logs

        setup_logs(log_level)
        from rotator.baselines import parse_rotated_at, record_baseline, verify_login
        from rotator.errors import ConfigError, SecretNotFound
        from rotator.model import Credential, Stage
        from rotator.workspace import operator_name

        value = read_json_object(file) if file is not None else None
        when_made = parse_rotated_at(rotated_at, now=datetime.now(UTC))
        workspace = _workspace(config)
        try:
            chosen = workspace.config.plan(plan)
            if verify and chosen.is_manual:
                raise ConfigError(
                    f"plan {plan} is manual: there is nothing to log in to", key="--verify", fix="leave --verify out"
                )
            bp = workspace.bind(chosen)
            if value is None:
                try:
                    credential = bp.store.get(bp.secret_id, Stage.CURRENT)
                except SecretNotFound:
                    credential = None
                if credential is None:
                    raise ConfigError(
                        f"the secret {bp.secret_id!r} of plan {plan} has no CURRENT version in store {bp.store_name}",
                        key="--file",
                        fix=f"pass the credential with --file FILE, or seed it: rotator store put {bp.secret_id} "
                        f"--file FILE --store {bp.store_name}",
                    )
                if verify:
                    verify_login(bp, credential)
            else:
                if verify:
                    verify_login(bp, Credential("import-unverified", value))  # before anything is written
                credential = bp.store.put_current(bp.secret_id, value)
            baseline = record_baseline(
                workspace.journal,
                bp,
                credential,
                rotated_at=when_made,
                how="import",
                reason=reason,
                operator=operator_name(),
                verified=verify,
                fingerprint_key=workspace.fingerprint_key,
            )
            _recorded(
                chosen,
                workspace,
                workspace.journal.get_run(baseline.run_id),
                "imported",
                json_output,
                verified=verify,
                stored=value is not None,
            )
        finally:
            workspace.close()


@commands.command("mark-rotated")
def mark_rotated(
    plan: PlanArgument,
    reason: Annotated[
        str, typer.Option("--reason", help="What was done, by whom (kept in the history).", show_default=False)
    ],
    file: FileOption = None,
    rotated_at: RotatedAtOption = None,
    config: ConfigOption = None,
    json_output: JsonOption = False,
    log_level: LogLevelOption = "warning",
) -> None:
    """Record that a person rotated a manual plan's credential.

    Its reminders stop until it is due again. --file stores the new credential as CURRENT too (a manual plan's
    secret may also live outside any store)."""
    with reported_errors(json_output):
        from rotator.cli.run_commands import setup_logs

        setup_logs(log_level)
        from rotator.baselines import parse_rotated_at, record_baseline
        from rotator.errors import ConfigError
        from rotator.model import Stage
        from rotator.workspace import operator_name

        value = read_json_object(file) if file is not None else None
        when_made = parse_rotated_at(rotated_at, now=datetime.now(UTC))
        if not reason.strip():
            raise ConfigError("the reason is empty", key="--reason", fix='say what was done: --reason "new key in X"')
        workspace = _workspace(config)
        try:
            chosen = workspace.config.plan(plan)
            if not chosen.is_manual:
                raise ConfigError(
                    f"plan {plan} is rotated by the engine (plugin {chosen.plugin.type}), not by hand",
                    key="PLAN",
                    fix=f"for a credential made elsewhere: rotator import {plan} --file FILE; to rotate it now: "
                    f"rotator rotate-now {plan}",
                )
            bp = workspace.bind(chosen)
            credential = bp.store.put_current(bp.secret_id, value) if value is not None else None
            if credential is None:
                try:
                    credential = bp.store.get(bp.secret_id, Stage.CURRENT)
                except Exception:  # a manual plan's secret need not be kept in a store at all
                    credential = None
            baseline = record_baseline(
                workspace.journal,
                bp,
                credential,
                rotated_at=when_made,
                how="mark-rotated",
                reason=reason,
                operator=operator_name(),
                fingerprint_key=workspace.fingerprint_key,
            )
            _recorded(chosen, workspace, workspace.journal.get_run(baseline.run_id), "recorded", json_output)
        finally:
            workspace.close()


@commands.command()
def leak(
    value_from: Annotated[
        str | None,
        typer.Option("--value-from", metavar="FILE", help="A file holding the leaked text ('-' for stdin)."),
    ] = None,
    scan: Annotated[
        list[str] | None,
        typer.Option("--scan", metavar="PATH", help="A file or directory to scan (a git work tree: its history too)."),
    ] = None,
    history: Annotated[
        bool, typer.Option("--history/--no-history", help="Scan the git history of scanned work trees.")
    ] = True,
    rotate: Annotated[
        bool, typer.Option("--rotate", help="Rotate the plans whose live credential leaked, revoking the old now.")
    ] = False,
    reason: Annotated[str | None, typer.Option("--reason", help="Why (kept in the history with where found).")] = None,
    concurrency: ConcurrencyOption = None,
    config: ConfigOption = None,
    json_output: JsonOption = False,
    wide: WideOption = False,
    log_level: LogLevelOption = "warning",
) -> None:
    """Find managed credentials in leaked text; --rotate them.

    Matches keyed fingerprints kept in the journal at each rotation, import and store put; no store is read.
    Exit 1 while a live credential is leaked and not rotated."""
    with reported_errors(json_output):
        from rotator.cli.run_commands import print_summary, run_in_parallel, setup_logs

        setup_logs(log_level)
        from rotator.errors import ConfigError
        from rotator.leaks import find_leaks, leak_reason, rotate_one, scan_lines, value_lines
        from rotator.workspace import operator_name

        if value_from is None and not scan:
            raise ConfigError("nothing to look in", key="leak", fix="give --value-from FILE (or -) or --scan PATH")
        workspace = _workspace(config)
        try:
            key = workspace.fingerprint_key
            if key is None:
                raise ConfigError(
                    "there is no fingerprint key, so no credential was fingerprinted",
                    key="rotator.fingerprint_key",
                    fix="run `rotator init` (it makes state_dir/fingerprint.key), or set [rotator] fingerprint_key; "
                    "credentials rotated, imported or stored from then on are found",
                )
            skipped: list[str] = []

            def lines() -> Any:
                if value_from is not None:
                    try:
                        text = sys.stdin.read() if value_from == "-" else Path(value_from).read_text(errors="replace")
                    except OSError as exc:
                        raise ConfigError(
                            f"cannot read {value_from}: {exc.strerror}", key="--value-from", fix="check the path"
                        ) from None
                    yield from value_lines(text, "stdin" if str(value_from) == "-" else str(value_from))
                for path in scan or []:
                    yield from scan_lines(Path(path), skipped, history=history)

            report = find_leaks(workspace.journal, key, lines())
            report.skipped.extend(skipped)
            manual = {m.plan_id for m in report.live if workspace.config.plan(m.plan_id).is_manual}
            to_rotate = [p for p in report.live_plans() if p not in manual] if rotate else []
            outcomes = []
            if to_rotate:
                source = reason or "rotator leak"
                reasons = {
                    p: leak_reason([w for m in report.live if m.plan_id == p for w in m.found_in], source)
                    for p in to_rotate
                }
                bound = [workspace.bind(workspace.config.plan(p)) for p in to_rotate]
                runner = workspace.runner()
                outcomes = run_in_parallel(
                    bound,
                    lambda bp: rotate_one(runner, bp, reasons.get(bp.plan_id), operator_name()),
                    concurrency or workspace.config.model.rotator.concurrency,
                    "rotating",
                    show_progress=not json_output and sys.stderr.isatty(),
                    name=lambda bp: bp.plan_id,
                )
        finally:
            workspace.close()
        rotated_ok = {o.plan_id for o in outcomes if o.ok}
        still_live = [p for p in report.live_plans() if p not in rotated_ok]
        if json_output:
            emit_json(
                {
                    "matches": [m.as_dict() for m in report.matches],
                    "lines_scanned": report.lines,
                    "skipped": report.skipped,
                    "rotations": [o.as_dict() for o in outcomes],
                    "rotate_by_hand": sorted(manual),
                    "still_live": still_live,
                }
            )
        else:
            _print_matches(report, wide)
            if outcomes:
                sys.stdout.write("\n")
                print_summary(outcomes, wide, ok=lambda o: o.ok)
            for plan_id in sorted(manual):
                sys.stdout.write(f"{plan_id} is rotated by hand: rotate it now, then rotator mark-rotated {plan_id}\n")
            if still_live and not rotate:
                plural = "s" if len(still_live) > 1 else ""
                sys.stdout.write(
                    f"{len(still_live)} live credential{plural} leaked: add --rotate to rotate and revoke now, or:\n"
                    f"  rotator rotate-now {' '.join(still_live)} --revoke-old now\n"
                )
        if still_live:
            raise typer.Exit(EXIT_FAILED)


def _print_matches(report: Any, wide: bool) -> None:
    if not report.matches:
        sys.stdout.write(f"no managed credential found ({report.lines} lines scanned)\n")
    else:
        columns = [Column("PLAN"), Column("STATE"), Column("VERSION"), Column("KIND"), Column("FOUND IN", cut=True)]
        rows = [[m.plan_id, m.state, m.version_id[:12], m.kind, ", ".join(m.found_in)] for m in report.matches]
        text, cut = render_and_cut(columns, rows, wide=wide)
        sys.stdout.write(text + "\n")
        if cut:
            sys.stdout.write("(places cut to the terminal: --wide or --json for all)\n")
    for skipped in report.skipped:
        sys.stdout.write(f"skipped {skipped}\n")
