"""The `rotator` command (typer and rich). Exit codes: 0 all succeeded; 1 a rotation failed (rolled back, or
stuck); 2 bad usage or config. Every command that a script would read has --json.

`store get` is the one command that ever prints a secret value.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from rotator import logs
from rotator.config import Config, load_config
from rotator.engine.runner import RunOutcome
from rotator.errors import ConfigError, PlanBusy, RotatorError, describe
from rotator.model import NotificationRecord, NotifyStatus, RunRecord, RunState, Stage, Trigger
from rotator.workspace import Workspace, operator_name

T = TypeVar("T")

app = typer.Typer(
    name="rotator",
    help="Rotate database passwords, cloud keys and API keys: create, stage, test, promote, revoke.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
store_app = typer.Typer(help="Seed or read a secret in a store.", no_args_is_help=True)
app.add_typer(store_app, name="store")

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        envvar="ROTATOR_CONFIG",
        help="Config file (default ./rotator.toml).",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
LogLevelOption = Annotated[str, typer.Option("--log-level", help="debug, info, warning or error.")]


def _fail(message: str, code: int) -> NoReturn:
    err.print(Text.assemble(("error: ", "bold red"), logs.scrub(message)), highlight=False)
    raise typer.Exit(code)


@contextmanager
def _errors() -> Iterator[None]:
    """Turn the project's errors into a message and an exit code, never a traceback."""
    try:
        yield
    except typer.Exit:
        raise
    except ConfigError as exc:
        _fail(str(exc), 2)
    except RotatorError as exc:
        _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted; run `rotator resume` to finish or roll back what was in flight", 1)
    except Exception as exc:
        _fail(f"unexpected {describe(exc)}", 1)


def _setup_logs(level: str, *, json_logs: bool | None = None) -> None:
    try:
        logs.configure(json=json_logs, level=level)
    except KeyError:
        _fail(f"--log-level: unknown level {level!r}; use debug, info, warning or error", 2)


def _workspace(config_path: Path | None) -> Workspace:
    return Workspace(load_config(config_path))


def _checked_workspace(config_path: Path | None) -> Workspace:
    """The config as `validate` accepts it, or the same ConfigError (exit 2): what runs is what validate passed,
    every plugin kind and every notifier built once, whether or not a plan uses it."""
    workspace = _workspace(config_path)
    workspace.check_components()
    return workspace


def _emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _age(value: datetime | None, now: datetime) -> str:
    if value is None:
        return "-"
    seconds = int((now - value).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if abs(seconds) >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


# -- init, validate -------------------------------------------------------------------------------------------


@app.command()
def init(config: ConfigOption = None, json_output: JsonOption = False) -> None:
    """Create state_dir (0700), the local store's key (0600) and database, and the journal.

    Never a new key for a store that holds versions (they could not be decrypted): everything is checked before
    anything is created, and a missing key next to stored versions, a key that does not decrypt them, or a corrupt
    database stops init with the recovery (exit 2)."""
    from rotator.local_store import (
        DB_FILE_NAME,
        KEY_FILE_NAME,
        LocalStore,
        LocalStoreOptions,
        create_key_file,
        stored_versions,
    )
    from rotator.options import OptionsError, parse_options

    with _errors():
        cfg = load_config(config)
        planned: list[tuple[str, Path | None, Path]] = []  # (store name, key file or None for key_env, database)
        names = {plan.store for plan in cfg.plans} | set(cfg.model.stores)
        for name in sorted(names):
            component = cfg.store_config(name)
            if component.type != "local":
                continue
            try:
                options = parse_options(LocalStoreOptions, component.options)
            except OptionsError as exc:  # named as `validate` names it: the file, the option's full key, the fix
                key = f"stores.{name}.{exc.option}" if exc.option else f"stores.{name}"
                raise ConfigError(exc.message, file=str(cfg.path), key=key, fix=exc.fix) from None
            setup = cfg.setup(name)
            db_path = setup.path(options.path) if options.path else cfg.state_dir / DB_FILE_NAME
            key_path = None if options.key_env else setup.path(options.key_file or cfg.state_dir / KEY_FILE_NAME)
            planned.append((name, key_path, db_path))
            if options.key_env and not os.environ.get(options.key_env):
                raise ConfigError(
                    f"environment variable {options.key_env} is not set",
                    file=str(cfg.path),
                    key=f"stores.{name}.key_env",
                    fix=f"export {options.key_env}=$(openssl rand -base64 32) for a new store, or the existing "
                    "store's key, then run init again",
                )
            if (key_path is None or key_path.exists()) and db_path.exists():
                LocalStore(component.options, setup).close()  # the key decrypts what is stored, or exit 2
            elif key_path is not None and not key_path.exists() and (versions := stored_versions(db_path)):
                raise ConfigError(
                    f"the local store key {key_path} does not exist, but {db_path} holds {versions} encrypted "
                    "versions: a new key could not decrypt them, so init makes none",
                    file=str(cfg.path),
                    key=f"stores.{name}",
                    fix=f"restore {key_path} (mode 0600) from the backup of this store, or set key_env to a "
                    "variable holding that key, then run init again",
                )
        cfg.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        cfg.state_dir.chmod(0o700)
        created: list[str] = []
        stores_created: list[str] = []
        notes: list[str] = []
        for name, key_path, db_path in planned:
            key_was_there = key_path is None or key_path.exists()
            if key_path is not None and create_key_file(key_path):
                created.append(str(key_path))
            if not db_path.exists():
                LocalStore(cfg.store_config(name).options, cfg.setup(name), create=True).close()
                stores_created.append(str(db_path))
                if key_was_there:
                    notes.append(
                        f"{db_path} was missing beside an existing key: an empty store was created; if it held "
                        "secrets, restore it from your backup over this empty one"
                    )
        workspace = Workspace(cfg)
        workspace.journal  # noqa: B018 - opening it creates the file and its tables
        journal_where = cfg.model.rotator.journal or str(cfg.state_dir / "journal.db")
        workspace.close()
        if json_output:
            _emit_json(
                {
                    "state_dir": str(cfg.state_dir),
                    "keys_created": created,
                    "stores_created": stores_created,
                    "notes": notes,
                    "journal": journal_where,
                }
            )
            return
        out.print(f"state directory: {cfg.state_dir}")
        for path in created:
            out.print(
                f"created local store key: {path} (mode 0600; back it up apart from the store: without it the store "
                "is unreadable)"
            )
        for path in stores_created:
            out.print(f"created local store: {path}")
        for note in notes:
            err.print(Text.assemble(("warning: ", "yellow"), note), highlight=False)
        out.print(f"journal: {journal_where}")


@app.command()
def validate(config: ConfigOption = None, json_output: JsonOption = False) -> None:
    """Check the config: every error names the file, the key and the fix (exit 2)."""
    with _errors():
        cfg = load_config(config)
        workspace = Workspace(cfg)
        warnings = [*cfg.warnings, *workspace.check_components()]
        summary = {
            "config": str(cfg.path),
            "ok": True,
            "plans": len(cfg.plans),
            "stores": sorted(cfg.model.stores),
            "notifiers": sorted(cfg.model.notifiers),
            "warnings": warnings,
        }
        if json_output:
            _emit_json(summary)
            return
        for warning in warnings:
            err.print(Text.assemble(("warning: ", "yellow"), warning), highlight=False)
        out.print(
            f"{cfg.path}: ok ({len(cfg.plans)} plans, {len(cfg.model.stores)} stores, "
            f"{len(cfg.model.notifiers)} notifiers)",
            highlight=False,
        )


# -- store put / get ------------------------------------------------------------------------------------------


StoreOption = Annotated[str, typer.Option("--store", "-s", help="Store name from the config.")]


@store_app.command("put")
def store_put(
    secret: Annotated[str, typer.Argument(help="Secret name in the store.")],
    file: Annotated[Path, typer.Option("--file", "-f", help="JSON object to store as CURRENT ('-' for stdin).")],
    store: StoreOption = "local",
    config: ConfigOption = None,
    json_output: JsonOption = False,
) -> None:
    """Seed or replace a secret: the file's JSON object becomes its CURRENT version."""
    with _errors():
        try:
            text = sys.stdin.read() if str(file) == "-" else file.read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read {file}: {exc.strerror}", key="--file", fix="check the path") from None
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"{file} is not JSON ({exc.msg}, line {exc.lineno})",
                key="--file",
                fix="the file must hold one JSON object",
            ) from None
        if not isinstance(value, dict):
            raise ConfigError(
                f"{file} holds JSON but not an object",
                key="--file",
                fix='write an object such as {"username": "...", "password": "..."}',
            )
        workspace = _workspace(config)
        credential = workspace.store(store).put_current(secret, value)
        workspace.close()
        if json_output:
            _emit_json({"secret": secret, "store": store, "version": credential.version_id, "stage": "CURRENT"})
        else:
            out.print(f"stored {secret} in {store} as CURRENT (version {credential.version_id})", highlight=False)


@store_app.command("get")
def store_get(
    secret: Annotated[str, typer.Argument(help="Secret name in the store.")],
    stage: Annotated[Stage, typer.Option("--stage", case_sensitive=False, help="Which version.")] = Stage.CURRENT,
    store: StoreOption = "local",
    config: ConfigOption = None,
) -> None:
    """Print a secret's JSON value on stdout (the one command that shows a secret)."""
    with _errors():
        workspace = _workspace(config)
        credential = workspace.store(store).get(secret, stage)
        workspace.close()
        if credential is None:
            _fail(f"{secret} has no {stage.value} version in store {store}", 1)
        sys.stdout.write(json.dumps(dict(credential.value), indent=2) + "\n")


# -- status, history ------------------------------------------------------------------------------------------


def _waiting_text(details: dict[str, Any]) -> str | None:
    waiting = details.get("revoke_waiting_for")
    return "; ".join(waiting) if waiting else None


@app.command()
def status(config: ConfigOption = None, json_output: JsonOption = False) -> None:
    """Every plan: last rotation, result, credential age, next due, revoke due (and what it waits for), failed
    notifications, run in progress. A handful of journal queries in all, however many plans."""
    from rotator.scheduler import FAILED, due_time

    with _errors():
        workspace = _workspace(config)
        journal = workspace.journal
        now = datetime.now(UTC)
        latest = journal.latest_runs()
        successes = journal.last_successes()
        leases = journal.live_leases()
        awaiting: dict[str, RunRecord] = {}
        for record in journal.runs_in_state(RunState.AWAITING_REVOKE):
            awaiting.setdefault(record.plan_id, record)
        failed_notices: dict[str, list[NotificationRecord]] = {}
        for notice in journal.notifications(statuses=(NotifyStatus.FAILED,)):
            failed_notices.setdefault(notice.plan_id, []).append(notice)
        rows: list[dict[str, Any]] = []
        for plan in workspace.config.plans:
            last, success = latest.get(plan.id), successes.get(plan.id)

            # Failed runs in a row (only looked up when the newest run failed: one query per failing plan).
            failing = 0
            if last is not None and last.state in FAILED:
                runs = journal.runs(plan.id, limit=100)
                failing = next((i for i, r in enumerate(runs) if r.state not in FAILED), len(runs))

            def failures(count: int = failing) -> int:
                return max(1, count)

            due = due_time(plan, last, success, now, failures)
            lease = leases.get(plan.id)
            pending_revoke = awaiting.get(plan.id)
            details = dict(pending_revoke.details) if pending_revoke else dict(success.details if success else {})
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
                    "next_due": due,
                    "overdue": bool(due and due <= now),
                    "in_progress": f"{lease.host} pid {lease.pid}" if lease else None,
                    "revoke_due": pending_revoke.revoke_due_at if pending_revoke else None,
                    "revoke_waiting_for": details.get("revoke_waiting_for") or [],
                    "previous_in_use": details.get("previous_in_use"),
                    "revoked_while_in_use": details.get("revoked_while_in_use") or [],
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
                }
            )
        workspace.close()
        if json_output:
            _emit_json(rows)
            return
        table = Table(title="rotation plans", title_justify="left")
        for column in (
            "plan",
            "plugin",
            "schedule",
            "last rotated",
            "age",
            "last result",
            "next due",
            "revoke due",
            "in progress",
            "attention",
        ):
            table.add_column(column, overflow="fold")
        for row in rows:
            result = row["last_result"] or "never"
            style = {
                "succeeded": "green",
                "awaiting_revoke": "green",
                "rolled_back": "red",
                "failed": "red",
                "stuck": "bold red",
                "running": "yellow",
                "rolling_back": "yellow",
            }.get(result, "")
            attention = [
                *(
                    f"notify {n['notifier']}{' (required)' if n['required'] else ''} failed x{n['attempts']}"
                    for n in row["failed_notifications"]
                ),
                *(f"revoke waits: {w}" for w in row["revoke_waiting_for"]),
                *(f"revoked while in use: {u}" for u in row["revoked_while_in_use"][:3]),
            ]
            if row["last_result"] in ("rolled_back", "stuck", "failed") and row["last_error"]:
                attention.insert(0, row["last_error"])
            if row["consecutive_failures"] > 1:
                attention.insert(
                    0, f"failed {row['consecutive_failures']} times in a row; next try {_when(row['next_due'])}"
                )
            table.add_row(
                row["plan"],
                row["plugin"],
                row["schedule"],
                _when(row["last_rotated"]),
                _age(row["last_rotated"], now),
                f"[{style}]{result}[/]" if style else result,
                ("[red]overdue[/] " if row["overdue"] else "") + _when(row["next_due"])
                if row["schedule"] != "manual"
                else "manual",
                _when(row["revoke_due"]),
                row["in_progress"] or "-",
                Text("\n".join(attention)) if attention else "-",
            )
        out.print(table)


@app.command()
def history(
    plan: Annotated[str | None, typer.Argument(help="Only this plan.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="How many runs.")] = 20,
    config: ConfigOption = None,
    json_output: JsonOption = False,
) -> None:
    """Past runs, newest first: step timings, outcome, trigger, reason, operator."""
    with _errors():
        workspace = _workspace(config)
        if plan is not None:
            workspace.config.plan(plan)
        runs = workspace.journal.runs(plan, limit=limit)
        notices: dict[str, list[NotificationRecord]] = {}
        for notice in workspace.journal.notifications(plan_id=plan):
            notices.setdefault(notice.run_id, []).append(notice)
        workspace.close()
        if json_output:
            _emit_json([_run_dict(r, notices.get(r.run_id, [])) for r in runs])
            return
        table = Table(title="rotation history", title_justify="left")
        for column in (
            "started (UTC)",
            "plan",
            "run",
            "outcome",
            "trigger",
            "operator",
            "steps (s)",
            "reason / error",
        ):
            table.add_column(column, overflow="fold")
        for run in runs:
            steps = " ".join(
                f"{'↩' if s.action == 'rollback' else ''}{s.step.value}"
                f"{'✗' if s.status == 'failed' else ''}"
                f"{'=' + format((s.ended_at - s.started_at).total_seconds(), '.3f') if s.ended_at else '…'}"
                for s in run.steps
            )
            facts = [
                *(f"notify {n.notifier}: {n.status.value}" for n in notices.get(run.run_id, [])),
                *(f"in use at revoke: {u}" for u in run.details.get("revoked_while_in_use", [])[:3]),
                *(["PREVIOUS unused after promote"] if run.details.get("previous_in_use") == [] else []),
                *(f"revoke waits: {w}" for w in run.details.get("revoke_waiting_for", [])),
                *([str(run.details["rollback_refused"])] if run.details.get("rollback_refused") else []),
            ]
            text = " / ".join(x for x in (run.reason, run.error, *facts) if x) or "-"
            table.add_row(
                _when(run.started_at),
                run.plan_id,
                run.run_id[:8],
                run.state.value,
                run.trigger.value,
                run.operator or "-",
                steps,
                text,
            )
        out.print(table)


def _run_dict(run: RunRecord, notices: Sequence[NotificationRecord] = ()) -> dict[str, Any]:
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
        "started_at": run.started_at,
        "ended_at": run.ended_at,
        "reason": run.reason,
        "operator": run.operator,
        "error": run.error,
        "version": run.version_id,
        "previous_version": run.previous_version_id,
        "revoke_due_at": run.revoke_due_at,
        "steps": [
            {
                "step": s.step.value,
                "action": s.action,
                "status": s.status,
                "started_at": s.started_at,
                "seconds": (s.ended_at - s.started_at).total_seconds() if s.ended_at else None,
                "error": s.error,
            }
            for s in run.steps
        ],
    }


# -- rotate-now, resume ---------------------------------------------------------------------------------------


def _parallel(
    items: list[T],
    work: Callable[[T], RunOutcome],
    concurrency: int,
    label: str,
    show_progress: bool,
    name: Callable[[T], str],
) -> list[RunOutcome]:
    """Run `work` over `items` in threads; each item isolated (one failure never stops the others)."""
    outcomes: list[RunOutcome] = []

    def isolated(item: T) -> RunOutcome:
        try:
            return work(item)
        except PlanBusy as exc:
            return RunOutcome(name(item), "busy", error=str(exc))
        except Exception as exc:
            return RunOutcome(name(item), "error", error=describe(exc))

    progress = Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=err,
        disable=not show_progress,
        transient=False,
    )
    with progress, ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        task = progress.add_task("", total=len(items))
        futures = {pool.submit(isolated, item): item for item in items}
        for future in as_completed(futures):
            outcome = future.result()
            outcomes.append(outcome)
            progress.update(task, advance=1, description=f"{outcome.plan_id}: {outcome.outcome}")
    order = {name(item): index for index, item in enumerate(items)}
    return sorted(outcomes, key=lambda o: order.get(o.plan_id, 0))


def _summary(outcomes: list[RunOutcome], title: str) -> None:
    table = Table(title=title, title_justify="left")
    for column in ("plan", "outcome", "run", "revoked old", "seconds", "error / notes"):
        table.add_column(column, overflow="fold")
    for o in outcomes:
        style = "green" if o.ok else "red"
        table.add_row(
            o.plan_id,
            f"[{style}]{o.outcome}[/]",
            (o.run_id or "-")[:8],
            "yes" if o.revoked else "-",
            f"{sum(o.step_seconds.values()):.2f}" if o.step_seconds else "-",
            "; ".join(x for x in [o.error or "", *o.notes, f"fix: {o.fix}" if o.fix and not o.ok else ""] if x) or "-",
        )
    out.print(table)
    failed = sum(1 for o in outcomes if not o.ok)
    out.print(f"{len(outcomes) - failed} succeeded, {failed} failed", highlight=False)


@app.command("rotate-now")
def rotate_now(
    plans: Annotated[list[str] | None, typer.Argument(help="Plan ids to rotate.", show_default=False)] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", "-t", help="Rotate every plan with this tag.")] = None,
    all_plans: Annotated[bool, typer.Option("--all", help="Rotate every enabled plan.")] = False,
    concurrency: Annotated[
        int | None, typer.Option("--concurrency", "-j", min=1, max=256, help="Plans rotated at once.")
    ] = None,
    revoke_old: Annotated[
        str,
        typer.Option(
            "--revoke-old",
            help="'now' revokes the old credential right after "
            "promote (suspected leak); 'grace' waits for the plan's grace.",
        ),
    ] = "grace",
    reason: Annotated[str | None, typer.Option("--reason", help="Why (kept in the history).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check every plan could rotate; change nothing.")] = False,
    config: ConfigOption = None,
    json_output: JsonOption = False,
    log_level: LogLevelOption = "warning",
) -> None:
    """Rotate plans now, in parallel, with a progress bar and a summary (exit 1 if any failed)."""
    _setup_logs(log_level)
    with _errors():
        if revoke_old not in ("now", "grace"):
            raise ConfigError(f"unknown value {revoke_old!r}", key="--revoke-old", fix="use 'now' or 'grace'")
        if not plans and not tag and not all_plans:
            raise ConfigError("no plans chosen", key="rotate-now", fix="name plans, or use --tag T or --all")
        workspace = _checked_workspace(config)
        chosen = workspace.select(plans or [], tag or [], all_plans)
        bound = [workspace.bind(plan) for plan in chosen]  # every plan's components load before any rotation
        runner = workspace.runner()
        operator = operator_name()
        if dry_run:
            work: Callable[[Any], RunOutcome] = runner.dry_run
        else:

            def work(bp: Any) -> RunOutcome:
                return runner.rotate(
                    bp,
                    trigger=Trigger.MANUAL,
                    reason=reason,
                    operator=operator,
                    revoke_old_now=revoke_old == "now",
                )

        outcomes = _parallel(
            bound,
            work,
            concurrency or workspace.config.model.rotator.concurrency,
            "dry run" if dry_run else "rotating",
            show_progress=not json_output and err.is_terminal,
            name=lambda bp: bp.plan_id,
        )
        workspace.close()
        if json_output:
            _emit_json(
                {
                    "dry_run": dry_run,
                    "results": [o.as_dict() for o in outcomes],
                    "succeeded": sum(o.ok for o in outcomes),
                    "failed": sum(not o.ok for o in outcomes),
                }
            )
        else:
            _summary(outcomes, "dry run" if dry_run else "rotation summary")
        if not all(o.ok for o in outcomes):
            raise typer.Exit(1)


@app.command()
def resume(
    concurrency: Annotated[int | None, typer.Option("--concurrency", "-j", min=1, max=256)] = None,
    config: ConfigOption = None,
    json_output: JsonOption = False,
    log_level: LogLevelOption = "warning",
) -> None:
    """Finish or roll back every interrupted run, and revoke what is due (exit 1 if any run it touched ended rolled
    back, stuck or failed, or a revoke failed)."""
    _setup_logs(log_level)
    with _errors():
        workspace = _checked_workspace(config)
        bound = [workspace.bind(plan) for plan in workspace.config.plans]
        runner = workspace.runner()

        def settle(bp: Any) -> RunOutcome:
            results = runner.resume(bp)
            if not results:
                return RunOutcome(bp.plan_id, "nothing-to-do")
            worst = next((r for r in results if not _resumed_ok(r)), results[-1])
            worst.notes.extend(f"{r.run_id or '-'}: {r.outcome}" for r in results if r is not worst)
            return worst

        outcomes = _parallel(
            bound,
            settle,
            concurrency or workspace.config.model.rotator.concurrency,
            "resuming",
            show_progress=not json_output and err.is_terminal,
            name=lambda bp: bp.plan_id,
        )
        workspace.close()
        if json_output:
            _emit_json({"results": [o.as_dict() for o in outcomes]})
        else:
            _summary([o for o in outcomes if o.outcome != "nothing-to-do"] or outcomes, "resume summary")
        if not all(_resumed_ok(o) for o in outcomes):
            raise typer.Exit(1)


def _resumed_ok(outcome: RunOutcome) -> bool:
    """For resume: the run went forward to its end (a rolled back one failed, even if cleanly)."""
    return outcome.ok and not (outcome.error and outcome.outcome == RunState.AWAITING_REVOKE.value)


@app.command()
def reconcile(
    plans: Annotated[list[str] | None, typer.Argument(help="Plan ids to reconcile.", show_default=False)] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", "-t", help="Reconcile every plan with this tag.")] = None,
    all_plans: Annotated[bool, typer.Option("--all", help="Reconcile every enabled plan.")] = False,
    concurrency: Annotated[
        int | None, typer.Option("--concurrency", "-j", min=1, max=256, help="Plans checked at once.")
    ] = None,
    reason: Annotated[str | None, typer.Option("--reason", help="Why (kept in the history).")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only check CURRENT and the admin credential; change nothing.")
    ] = False,
    config: ConfigOption = None,
    json_output: JsonOption = False,
    log_level: LogLevelOption = "warning",
) -> None:
    """Repair drift: where CURRENT no longer logs in, reset the account with the plan's admin credential (the
    secret's masterarn, or the plugin's admin_secret_id), prove it logs in and store it as CURRENT (exit 1 if any
    plan could not be reconciled)."""
    _setup_logs(log_level)
    with _errors():
        if not plans and not tag and not all_plans:
            raise ConfigError("no plans chosen", key="reconcile", fix="name plans, or use --tag T or --all")
        workspace = _checked_workspace(config)
        chosen = workspace.select(plans or [], tag or [], all_plans)
        bound = [workspace.bind(plan) for plan in chosen]
        runner = workspace.runner()
        operator = operator_name()
        outcomes = _parallel(
            bound,
            lambda bp: runner.reconcile(bp, reason=reason, operator=operator, dry_run=dry_run),
            concurrency or workspace.config.model.rotator.concurrency,
            "dry run" if dry_run else "reconciling",
            show_progress=not json_output and err.is_terminal,
            name=lambda bp: bp.plan_id,
        )
        workspace.close()
        if json_output:
            _emit_json(
                {
                    "dry_run": dry_run,
                    "results": [o.as_dict() for o in outcomes],
                    "succeeded": sum(o.ok for o in outcomes),
                    "failed": sum(not o.ok for o in outcomes),
                }
            )
        else:
            _summary(outcomes, "reconcile dry run" if dry_run else "reconcile summary")
        if not all(o.ok for o in outcomes):
            raise typer.Exit(1)


@app.command()
def daemon(
    config: ConfigOption = None,
    log_level: Annotated[str | None, typer.Option("--log-level", help="Overrides rotator.log_level.")] = None,
    json_logs: Annotated[
        bool,
        typer.Option("--json-logs/--console-logs", help="JSON lines for a log collector (default), or readable lines."),
    ] = True,
) -> None:
    """The long-running service: fires due plans, sweeps due revokes, resumes interrupted runs at start."""
    from rotator.daemon import run_daemon

    with _errors():
        cfg: Config = load_config(config)
        _setup_logs(log_level or cfg.model.rotator.log_level, json_logs=json_logs)
        raise typer.Exit(run_daemon(cfg))


def main() -> None:
    app()
