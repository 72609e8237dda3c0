"""`rotator status` and `rotator history`: what the journal says, as plain tables or one JSON document.

Both read the journal in a handful of queries however many plans there are (latest runs, last successes, failure
streaks, live leases, runs awaiting revoke, failed notifications): `status` of 10,000 plans stays under a second
(bench/cli_scale.py).
"""

from __future__ import annotations

import functools
import sys
import textwrap
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from rotator.cli.output import EXIT_USAGE, age, due, emit_json, fail, reported_errors, rfc3339, span, when
from rotator.cli.params import ConfigOption, JsonOption, WideOption, config_choice
from rotator.cli.tables import Column, render_and_cut, terminal_width

if TYPE_CHECKING:
    from rotator.config import Config
    from rotator.interfaces import Journal
    from rotator.model import NotificationRecord, RunRecord

commands = typer.Typer()

# A failed last run puts its error first in the notes.
_FAILED_RESULTS = ("rolled_back", "stuck", "failed")


@commands.command()
def status(config: ConfigOption = None, json_output: JsonOption = False, wide: WideOption = False) -> None:
    """Every plan: last result, age, next due and notes.

    NOTES holds failures in a row, the last error, failed notifications, what revoke waits for and a run in
    progress, cut to the terminal's width (--wide or --json for the full text)."""
    with reported_errors(json_output):
        rows, now = _status_rows(config)
        if json_output:
            emit_json(rows)
            return
        if not rows:
            sys.stdout.write("no plans in the config\n")
            return
        _print_status_table(rows, now, wide)


def open_journal_of(cfg: Config) -> Journal:
    """The config's journal, as rotator.workspace.Workspace opens it, without importing the engine and the
    registry that a Workspace brings (status and history only read the journal)."""
    from rotator.errors import ConfigError
    from rotator.journal import open_journal

    if not cfg.model.rotator.journal and not cfg.state_dir.is_dir():
        raise ConfigError(
            f"state directory {cfg.state_dir} does not exist",
            file=str(cfg.path),
            key="rotator.state_dir",
            fix="run `rotator init` first",
        )
    return open_journal(cfg.model.rotator.journal, cfg.state_dir)


def _status_rows(config: Any) -> tuple[list[dict[str, Any]], datetime]:
    from rotator.config import load_config
    from rotator.model import NotifyStatus, RunState
    from rotator.scheduler import due_time

    cfg = load_config(config_choice(config))
    if any(plan.is_manual for plan in cfg.plans):
        from rotator.reminders import due_at as manual_due_at
    journal = open_journal_of(cfg)
    try:
        now = datetime.now(UTC)
        latest = journal.latest_runs()
        successes = journal.last_successes()
        streaks = journal.failure_streaks()
        leases = journal.live_leases()
        awaiting: dict[str, RunRecord] = {}
        for record in journal.runs_in_state(RunState.AWAITING_REVOKE):
            awaiting.setdefault(record.plan_id, record)
        failed_notices: dict[str, list[NotificationRecord]] = {}
        for notice in journal.notifications(statuses=(NotifyStatus.FAILED,)):
            failed_notices.setdefault(notice.plan_id, []).append(notice)
    finally:
        journal.close()
    rows: list[dict[str, Any]] = []
    for plan in cfg.plans:
        last, success = latest.get(plan.id), successes.get(plan.id)
        failing = streaks.get(plan.id, 0)
        if plan.is_manual:  # rotated by a person: due when its reminders say (rotator/reminders.py)
            next_due = manual_due_at(plan, success, now)
        else:
            next_due = due_time(plan, last, success, now, functools.partial(max, 1, failing))
        lease = leases.get(plan.id)
        pending_revoke = awaiting.get(plan.id)
        details = pending_revoke.details if pending_revoke else (success.details if success else {})
        rows.append(
            {
                "plan": plan.id,
                "plugin": plan.plugin.type,
                "store": plan.store,
                "secret": plan.secret,
                "schedule": plan.schedule,
                "enabled": plan.enabled,
                "last_run": last.started_at if last else None,
                "last_result": last.state.value if last else None,
                "last_error": last.error if last else None,
                "consecutive_failures": failing,
                "last_rotated": success.started_at if success else None,
                "credential_age_seconds": int((now - success.started_at).total_seconds()) if success else None,
                "next_due": next_due,
                "overdue": bool(next_due and next_due <= now),
                "in_progress": f"{lease.host} pid {lease.pid}" if lease else None,
                "revoke_due": pending_revoke.revoke_due_at if pending_revoke else None,
                "revoke_waiting_for": list(details.get("revoke_waiting_for") or []),
                "previous_in_use": details.get("previous_in_use"),
                "revoked_while_in_use": list(details.get("revoked_while_in_use") or []),
                "failed_notifications": [
                    {
                        "run_id": n.run_id,
                        "notifier": n.notifier,
                        "required": n.required,
                        "attempts": n.attempts,
                        "next_attempt_at": n.next_attempt_at,
                        "error": n.last_error,
                    }
                    for n in failed_notices.get(plan.id, [])
                ],
                "tags": list(plan.tags),
                "owner": plan.owner,
            }
        )
    return rows, now


def _status_notes(row: dict[str, Any], now: datetime, wide: bool) -> str:
    notes: list[str] = []
    if not row["enabled"]:
        notes.append("disabled")
    if row["plugin"] == "manual":
        notes.append(f"by hand: {row['owner']}")
    if row["in_progress"]:
        notes.append(f"running on {row['in_progress']}")
    if row["consecutive_failures"] > 1:
        when_next = when(row["next_due"]) if wide else due(row["next_due"], now)
        notes.append(f"failed {row['consecutive_failures']} times in a row; next try {when_next}")
    if row["last_result"] in _FAILED_RESULTS and row["last_error"]:
        notes.append(row["last_error"])
    notes += [
        f"notify {n['notifier']}{' (required)' if n['required'] else ''} failed x{n['attempts']}"
        for n in row["failed_notifications"]
    ]
    notes += [f"revoke waits: {w}" for w in row["revoke_waiting_for"]]
    notes += [f"revoked while in use: {u}" for u in row["revoked_while_in_use"][:3]]
    return "; ".join(notes) or "-"


def _print_status_table(rows: list[dict[str, Any]], now: datetime, wide: bool) -> None:
    if wide:
        columns = [
            Column("PLAN"),
            Column("PLUGIN"),
            Column("SCHEDULE"),
            Column("RESULT"),
            Column("LAST ROTATED"),
            Column("AGE", right=True),
            Column("NEXT DUE"),
            Column("REVOKE DUE"),
            Column("NOTES", cut=True),
        ]
        cells = [
            [
                row["plan"],
                row["plugin"],
                row["schedule"],
                row["last_result"] or "never",
                when(row["last_rotated"]),
                age(row["last_rotated"], now),
                ("overdue " if row["overdue"] else "") + when(row["next_due"]),
                when(row["revoke_due"]),
                _status_notes(row, now, wide=True),
            ]
            for row in rows
        ]
    else:
        columns = [
            Column("PLAN"),
            Column("RESULT"),
            Column("AGE", right=True),
            Column("NEXT DUE"),
            Column("REVOKE"),
            Column("NOTES", cut=True),
        ]
        cells = [
            [
                row["plan"],
                row["last_result"] or "never",
                age(row["last_rotated"], now),
                "manual"
                if row["next_due"] is None and row["schedule"] == "manual" and row["enabled"]
                else due(row["next_due"], now),
                due(row["revoke_due"], now),
                _status_notes(row, now, wide=False),
            ]
            for row in rows
        ]
    text, cut = render_and_cut(columns, cells, wide=wide)
    sys.stdout.write(text + "\n")
    if cut:
        sys.stdout.write("(notes cut to fit: --wide or --json for the full text)\n")


# -- history ----------------------------------------------------------------------------------------------------


@commands.command()
def history(
    plan: Annotated[
        str | None, typer.Argument(metavar="PLAN", help="Only this plan's runs.", show_default=False)
    ] = None,
    run: Annotated[
        str | None,
        typer.Option(
            "--run",
            "-r",
            metavar="ID",
            help="One run in full (its id, or the first characters that the table shows).",
            show_default=False,
        ),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, metavar="N", help="How many runs, newest first.")] = 20,
    config: ConfigOption = None,
    json_output: JsonOption = False,
    wide: WideOption = False,
) -> None:
    """Past runs, newest first; --run ID shows one in full.

    Age, outcome, trigger, reason and error (cut to the terminal); --wide adds the start time, the operator, how
    long it took and every step's timing."""
    with reported_errors(json_output):
        from rotator.config import load_config

        cfg = load_config(config_choice(config))
        if plan is not None:
            cfg.plan(plan)
        journal = open_journal_of(cfg)
        try:
            if run is not None:
                record = _find_run(journal, plan, run, json_output)
                notices = journal.notifications(plan_id=record.plan_id)
                mine = [n for n in notices if n.run_id == record.run_id]
                if json_output:
                    emit_json(run_dict(record, mine))
                else:
                    sys.stdout.write(_run_detail(record, mine) + "\n")
                return
            runs = journal.runs(plan, limit=limit)
            by_run: dict[str, list[NotificationRecord]] = {}
            for notice in journal.notifications(plan_id=plan):
                by_run.setdefault(notice.run_id, []).append(notice)
        finally:
            journal.close()
        if json_output:
            emit_json([run_dict(r, by_run.get(r.run_id, [])) for r in runs])
            return
        if not runs:
            sys.stdout.write(f"no runs{f' of {plan}' if plan else ''} in the journal\n")
            return
        _print_history_table(runs, by_run, wide)


def _find_run(journal: Any, plan: str | None, wanted: str, json_output: bool) -> RunRecord:
    exact = journal.get_run(wanted)
    if exact is not None and (plan is None or exact.plan_id == plan):
        return exact  # type: ignore[no-any-return]
    matches = [r for r in journal.runs(plan, limit=100_000) if r.run_id.startswith(wanted)]
    if len(matches) == 1:
        found = journal.get_run(matches[0].run_id)  # with its steps
        return found if found is not None else matches[0]  # type: ignore[no-any-return]
    where = f" of plan {plan}" if plan else ""
    if not matches:
        fail(f"no run {wanted!r}{where} in the journal", EXIT_USAGE, json_output=json_output, key="--run",
             fix="take the id from `rotator history` (its RUN column) or from --json")  # fmt: skip
    fail(
        f"{len(matches)} runs{where} start with {wanted!r}",
        EXIT_USAGE,
        json_output=json_output,
        key="--run",
        fix="give more characters of the id: " + ", ".join(r.run_id for r in matches[:5]),
    )


def _steps_text(run: RunRecord) -> str:
    return " ".join(
        f"{'↩' if s.action == 'rollback' else ''}{s.step.value}"
        f"{'✗' if s.status == 'failed' else ''}"
        f"{'=' + format((s.ended_at - s.started_at).total_seconds(), '.3f') if s.ended_at else '…'}"
        for s in run.steps
    )


def _history_notes(run: RunRecord, notices: Sequence[NotificationRecord]) -> str:
    facts = [
        *(f"notify {n.notifier}: {n.status.value}" for n in notices),
        *(f"in use at revoke: {u}" for u in run.details.get("revoked_while_in_use", [])[:3]),
        *(["PREVIOUS unused after promote"] if run.details.get("previous_in_use") == [] else []),
        *(f"revoke waits: {w}" for w in run.details.get("revoke_waiting_for", [])),
        *([str(run.details["rollback_refused"])] if run.details.get("rollback_refused") else []),
    ]
    return "; ".join(x for x in (run.reason, run.error, *facts) if x) or "-"


def _took(run: RunRecord) -> str:
    if run.ended_at is None:
        return "running" if run.state.is_open else "-"
    seconds = (run.ended_at - run.started_at).total_seconds()
    return f"{seconds:.2f}s" if seconds < 60 else span(seconds)


def _print_history_table(runs: list[RunRecord], notices: dict[str, list[NotificationRecord]], wide: bool) -> None:
    now = datetime.now(UTC)
    if wide:
        columns = [
            Column("STARTED"),
            Column("PLAN"),
            Column("RUN"),
            Column("OUTCOME"),
            Column("TRIGGER"),
            Column("OPERATOR"),
            Column("TOOK", right=True),
            Column("STEPS (s)"),
            Column("NOTES", cut=True),
        ]
        cells = [
            [
                when(r.started_at),
                r.plan_id,
                r.run_id[:8],
                r.state.value,
                r.trigger.value,
                r.operator or "-",
                _took(r),
                _steps_text(r) or "-",
                _history_notes(r, notices.get(r.run_id, [])),
            ]
            for r in runs
        ]
    else:
        columns = [
            Column("AGE", right=True),
            Column("PLAN"),
            Column("RUN"),
            Column("OUTCOME"),
            Column("TRIGGER"),
            Column("NOTES", cut=True),
        ]
        cells = [
            [
                age(r.started_at, now),
                r.plan_id,
                r.run_id[:8],
                r.state.value,
                r.trigger.value,
                _history_notes(r, notices.get(r.run_id, [])),
            ]
            for r in runs
        ]
    text, cut = render_and_cut(columns, cells, wide=wide)
    sys.stdout.write(text + "\n")
    if cut:
        sys.stdout.write("(notes cut to fit: --wide, --json, or history PLAN --run RUN for one run)\n")


def _run_detail(run: RunRecord, notices: Sequence[NotificationRecord]) -> str:
    """One run in full, as `key: value` lines; long texts wrapped to the terminal, never cut."""
    width = max(40, terminal_width())
    lines: list[str] = []

    def field(name: str, value: object) -> None:
        if value in (None, "", [], {}):
            return
        label = f"{name}:".ljust(12)
        wrapped = textwrap.wrap(str(value), width - 12, break_long_words=True, break_on_hyphens=False) or [""]
        lines.append(label + wrapped[0])
        lines.extend(" " * 12 + rest for rest in wrapped[1:])

    field("run", run.run_id)
    field("plan", run.plan_id)
    field("outcome", run.state.value)
    field("trigger", run.trigger.value)
    field("operator", run.operator)
    field("started", rfc3339(run.started_at))
    field("ended", rfc3339(run.ended_at))
    field("took", _took(run))
    field("store", f"{run.store}: {run.secret_id}")
    field("version", run.version_id)
    field("previous", run.previous_version_id)
    field("revoke due", rfc3339(run.revoke_due_at))
    field("reason", run.reason)
    field("error", run.error)
    if run.steps:
        lines.append("steps:")
        step_rows = [
            [
                s.step.value,
                s.action,
                s.status,
                f"{(s.ended_at - s.started_at).total_seconds():.3f}s" if s.ended_at else "…",
                when(s.started_at),
            ]
            for s in run.steps
        ]
        table = render_and_cut(
            [Column("STEP"), Column("ACTION"), Column("STATUS"), Column("TOOK", right=True), Column("STARTED")],
            step_rows,
            wide=True,
        )[0]
        lines.extend("  " + line for line in table.splitlines())
        for s in run.steps:
            if s.error:
                field(f"  {s.step.value} error", s.error)
    if notices:
        lines.append("notifications:")
        for n in notices:
            required = " (required)" if n.required else ""
            lines.append(f"  {n.notifier}{required}: {n.status.value}, {n.attempts} attempts")
            if n.last_error:
                field("    error", n.last_error)
    for key, value in sorted(run.details.items()):
        field(key.replace("_", " "), value if isinstance(value, str) else _compact(value))
    return "\n".join(lines)


def _compact(value: Any) -> str:
    import json

    return json.dumps(value, default=str, ensure_ascii=False)


def run_dict(run: RunRecord, notices: Sequence[NotificationRecord] = ()) -> dict[str, Any]:
    """A run as `history --json` prints it."""
    return {
        "details": dict(run.details),
        "notifications": [
            {
                "notifier": n.notifier,
                "status": n.status.value,
                "required": n.required,
                "attempts": n.attempts,
                "error": n.last_error,
            }
            for n in notices
        ],
        "run_id": run.run_id,
        "plan": run.plan_id,
        "state": run.state.value,
        "trigger": run.trigger.value,
        "started_at": rfc3339(run.started_at),
        "ended_at": rfc3339(run.ended_at),
        "reason": run.reason,
        "operator": run.operator,
        "error": run.error,
        "version": run.version_id,
        "previous_version": run.previous_version_id,
        "revoke_due_at": rfc3339(run.revoke_due_at),
        "steps": [
            {
                "step": s.step.value,
                "action": s.action,
                "status": s.status,
                "started_at": rfc3339(s.started_at),
                "seconds": (s.ended_at - s.started_at).total_seconds() if s.ended_at else None,
                "error": s.error,
            }
            for s in run.steps
        ],
    }
