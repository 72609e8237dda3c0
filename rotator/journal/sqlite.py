"""The embedded journal: one SQLite file in the state directory.

WAL with synchronous=NORMAL: a commit survives the process being killed (the threat the engine's crash
recovery is built for) at about 15 microseconds, where an fsync per commit costs a millisecond here. After a
power loss the last commits may be lost; that is safe because the store's writes are fsynced and `resume`
also recovers from the store itself: a PENDING version that no open run claims is rolled back.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rotator.engine.states import FAILED_STATES
from rotator.errors import LeaseLost
from rotator.fingerprints import Fingerprint
from rotator.journal.leases import holder_is_dead, this_holder
from rotator.journal.records import (
    NOTIFICATION_COLUMNS,
    STEP_ACTIONS,
    STEP_STATUSES,
    check_run_changes,
    notification_record,
    scrubbed,
    step_status,
)
from rotator.model import (
    NO_DETAILS,
    Lease,
    NotificationRecord,
    NotifyStatus,
    RunDetails,
    RunRecord,
    RunState,
    Step,
    StepAction,
    StepRecord,
    Trigger,
)

_SCHEMA = """
create table if not exists runs (
    run_id text primary key,
    plan_id text not null,
    state text not null,
    trigger text not null,
    started_at text not null,
    store text not null,
    secret_id text not null,
    step text,
    ended_at text,
    reason text,
    operator text,
    error text,
    version_id text,
    previous_version_id text,
    revoke_due_at text,
    details text
);
create index if not exists runs_plan on runs (plan_id, started_at);
create index if not exists runs_state on runs (state);
create table if not exists steps (
    id integer primary key autoincrement,
    run_id text not null,
    step text not null,
    action text not null,
    status text not null,
    started_at text not null,
    ended_at text,
    error text
);
create index if not exists steps_run on steps (run_id, id);
create table if not exists notifications (
    run_id text not null,
    plan_id text not null,
    notifier text not null,
    status text not null,
    required integer not null default 0,
    attempts integer not null default 0,
    next_attempt_at text,
    last_error text,
    updated_at text,
    primary key (run_id, notifier)
);
create index if not exists notifications_status on notifications (status, next_attempt_at);
create index if not exists notifications_plan on notifications (plan_id);
create table if not exists fingerprints (
    digest text not null,
    plan_id text not null,
    secret_id text not null,
    version_id text not null,
    kind text not null,
    created_at text not null,
    primary key (digest, plan_id, version_id)
);
create table if not exists leases (
    plan_id text primary key,
    holder text,
    host text,
    pid integer,
    token integer not null,
    expires_at text
);
"""

_RUN_FIELDS = (
    "run_id",
    "plan_id",
    "state",
    "trigger",
    "started_at",
    "store",
    "secret_id",
    "step",
    "ended_at",
    "reason",
    "operator",
    "error",
    "version_id",
    "previous_version_id",
    "revoke_due_at",
    "details",
)
_NOTIFY_FIELDS = NOTIFICATION_COLUMNS
_FENCE = "exists (select 1 from leases where plan_id = ? and token = ? and holder = ?)"
_STATES = {state.value: state for state in RunState}
_TRIGGERS = {trigger.value: trigger for trigger in Trigger}


def now_text() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _text(value: Any) -> Any:
    if isinstance(value, Mapping):
        return json.dumps(scrubbed(dict(value)), sort_keys=True, default=str) if value else None
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    if hasattr(value, "value"):
        return value.value
    return value


_FREE_TEXT = frozenset({"error", "reason", "operator"})


def _field(name: str, value: Any) -> Any:
    """A run field as stored: free text scrubbed (ids and times are never secret, and scrubbing costs)."""
    return scrubbed(value) if name in _FREE_TEXT else _text(value)


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


class SqliteJournal:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        deadline = time.monotonic() + 30
        while True:  # switching a new file to WAL needs it alone, and SQLite answers "locked" at once: retry
            try:
                self._db.execute("pragma journal_mode=wal")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        self._db.execute("pragma synchronous=normal")
        self._db.execute("pragma busy_timeout=30000")
        with self._lock:
            self._db.executescript(_SCHEMA)  # executescript commits on its own
            columns = {row[1] for row in self._db.execute("pragma table_info(runs)")}
            if "details" not in columns:  # a journal made before run details existed
                self._db.execute("alter table runs add column details text")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("begin immediate")
            try:
                yield self._db
            except BaseException:
                self._db.execute("rollback")
                raise
            self._db.execute("commit")

    def _fenced(self, statement: str, params: tuple[Any, ...], lease: Lease | None) -> None:
        """Run one write that acts only while `lease` still holds its plan. The fence is part of the statement
        (`{fence}`), and one statement is one transaction, so no other holder can slip in between."""
        with self._lock:
            if lease is None:
                self._db.execute(statement.format(fence="1"), params)
                return
            cursor = self._db.execute(
                statement.format(fence=_FENCE), (*params, lease.plan_id, lease.token, lease.holder)
            )
            if cursor.rowcount == 0:
                row = self._db.execute(
                    "select 1 from leases where plan_id = ? and token = ? and holder = ?",
                    (lease.plan_id, lease.token, lease.holder),
                ).fetchone()
                if row is None:
                    raise LeaseLost(
                        f"plan {lease.plan_id}: this process lost its lease (token {lease.token}); "
                        "another run took over"
                    )

    # -- leases ---------------------------------------------------------------------------------------------

    def acquire_lease(self, plan_id: str, ttl_seconds: float) -> Lease | None:
        holder, host, pid = this_holder()
        now = datetime.now(UTC)
        expires = now + timedelta(seconds=ttl_seconds)
        with self._write() as db:
            row = db.execute(
                "select holder, host, pid, token, expires_at from leases where plan_id = ?", (plan_id,)
            ).fetchone()
            if row is None:
                token = 1
                db.execute(
                    "insert into leases values (?, ?, ?, ?, ?, ?)",
                    (plan_id, holder, host, pid, token, _text(expires)),
                )
            else:
                old_holder, old_host, old_pid, old_token, old_expires = row
                free = (
                    old_holder is None
                    or (_time(old_expires) or now) <= now
                    or holder_is_dead(old_holder, old_host, old_pid)
                )
                if not free:
                    return None
                token = old_token + 1
                db.execute(
                    "update leases set holder = ?, host = ?, pid = ?, token = ?, expires_at = ? where plan_id = ?",
                    (holder, host, pid, token, _text(expires), plan_id),
                )
        return Lease(plan_id, holder, host, pid, token, expires)

    def renew_lease(self, lease: Lease, ttl_seconds: float) -> Lease:
        expires = datetime.now(UTC) + timedelta(seconds=ttl_seconds)
        with self._lock:
            cursor = self._db.execute(
                "update leases set expires_at = ? where plan_id = ? and token = ? and holder = ?",
                (_text(expires), lease.plan_id, lease.token, lease.holder),
            )
        if cursor.rowcount == 0:
            raise LeaseLost(f"plan {lease.plan_id}: this process lost its lease (token {lease.token})")
        return Lease(lease.plan_id, lease.holder, lease.host, lease.pid, lease.token, expires)

    def release_lease(self, lease: Lease) -> None:
        with self._lock:
            self._db.execute(
                "update leases set holder = null, host = null, pid = null, expires_at = null "
                "where plan_id = ? and token = ? and holder = ?",
                (lease.plan_id, lease.token, lease.holder),
            )

    def lease_of(self, plan_id: str) -> Lease | None:
        with self._lock:
            row = self._db.execute(
                "select holder, host, pid, token, expires_at from leases where plan_id = ? and holder is not null",
                (plan_id,),
            ).fetchone()
        if row is None:
            return None
        expires = _time(row[4])
        if expires is None or expires <= datetime.now(UTC) or holder_is_dead(row[0], row[1], row[2]):
            return None
        return Lease(plan_id, row[0], row[1], row[2], row[3], expires)

    # -- runs and steps ------------------------------------------------------------------------------------

    def begin_run(self, run: RunRecord, lease: Lease) -> None:
        self._fenced(
            f"insert into runs ({', '.join(_RUN_FIELDS)}) select {', '.join('?' * len(_RUN_FIELDS))} where {{fence}}",
            tuple(_field(name, getattr(run, name)) for name in _RUN_FIELDS),
            lease,
        )

    def step_started(self, run_id: str, step: Step, action: StepAction, lease: Lease) -> None:
        self._fenced(
            "insert into steps (run_id, step, action, status, started_at) select ?, ?, ?, 'started', ? where {fence}",
            (run_id, step.value, StepAction(action).value, now_text()),
            lease,
        )

    def step_finished(
        self,
        run_id: str,
        step: Step,
        action: StepAction,
        lease: Lease,
        error: str | None = None,
        *,
        refused: bool = False,
    ) -> None:
        self._fenced(
            "update steps set status = ?, ended_at = ?, error = ? where id = (select max(id) from steps "
            "where run_id = ? and step = ? and action = ? and status = 'started') and {fence}",
            (
                step_status(error, refused).value,
                now_text(),
                scrubbed(error),
                run_id,
                step.value,
                StepAction(action).value,
            ),
            lease,
        )

    def update_run(self, run_id: str, lease: Lease | None, **changes: Any) -> None:
        check_run_changes(changes, _RUN_FIELDS)
        if not changes:
            return
        assignments = ", ".join(f"{name} = ?" for name in changes)
        self._fenced(
            f"update runs set {assignments} where run_id = ? and {{fence}}",
            (*(_field(k, v) for k, v in changes.items()), run_id),
            lease,
        )

    def _steps(self, run_ids: list[str]) -> dict[str, list[StepRecord]]:
        found: dict[str, list[StepRecord]] = {rid: [] for rid in run_ids}
        if not run_ids:
            return found
        rows = self._db.execute(
            "select run_id, step, action, status, started_at, ended_at, error from steps "
            f"where run_id in ({', '.join('?' * len(run_ids))}) order by id",
            run_ids,
        ).fetchall()
        for run_id, step, action, status, started, ended, error in rows:
            found[run_id].append(
                StepRecord(
                    run_id,
                    Step(step),
                    STEP_ACTIONS[action],
                    STEP_STATUSES[status],
                    _time(started) or datetime.now(UTC),
                    _time(ended),
                    error,
                )
            )
        return found

    def _records(
        self, where: str, params: tuple[Any, ...], limit: int | None = None, *, with_steps: bool = True
    ) -> list[RunRecord]:
        sql = f"select {', '.join(_RUN_FIELDS)} from runs {where}"
        if limit is not None:
            sql += f" limit {int(limit)}"
        with self._lock:
            rows = self._db.execute(sql, params).fetchall()
            steps = self._steps([row[0] for row in rows]) if with_steps else {row[0]: [] for row in rows}
        records = []
        # Positional unpacking and enum lookups by dict: the daemon reads 10,000 of these at start-up.
        for (
            run_id,
            plan_id,
            state,
            trigger,
            started_at,
            store,
            secret_id,
            _step,
            ended_at,
            reason,
            operator,
            error,
            version_id,
            previous_version_id,
            revoke_due_at,
            details,
        ) in rows:
            run_steps = steps[run_id]
            records.append(
                RunRecord(
                    run_id=run_id,
                    plan_id=plan_id,
                    state=_STATES[state],
                    trigger=_TRIGGERS[trigger],
                    started_at=_time(started_at) or datetime.now(UTC),
                    store=store,
                    secret_id=secret_id,
                    step=run_steps[-1].step if run_steps else None,
                    ended_at=_time(ended_at),
                    reason=reason,
                    operator=operator,
                    error=error,
                    version_id=version_id,
                    previous_version_id=previous_version_id,
                    revoke_due_at=_time(revoke_due_at),
                    steps=tuple(run_steps),
                    details=RunDetails.from_json(json.loads(details)) if details else NO_DETAILS,
                )
            )
        return records

    def get_run(self, run_id: str) -> RunRecord | None:
        found = self._records("where run_id = ?", (run_id,))
        return found[0] if found else None

    def runs(self, plan_id: str | None = None, limit: int = 50) -> list[RunRecord]:
        if plan_id is None:
            return self._records("order by started_at desc", (), limit)
        return self._records("where plan_id = ? order by started_at desc", (plan_id,), limit)

    def runs_in_state(self, *states: RunState, plan_id: str | None = None) -> list[RunRecord]:
        marks = ", ".join("?" * len(states))
        values = tuple(s.value for s in states)
        if plan_id is None:
            return self._records(f"where state in ({marks}) order by started_at", values)
        return self._records(f"where plan_id = ? and state in ({marks}) order by started_at", (plan_id, *values))

    def last_success(self, plan_id: str) -> RunRecord | None:
        found = self._records(
            "where plan_id = ? and state in (?, ?) order by started_at desc",
            (plan_id, RunState.AWAITING_REVOKE.value, RunState.SUCCEEDED.value),
            1,
        )
        return found[0] if found else None

    def latest_runs(self) -> dict[str, RunRecord]:
        """The newest run of every plan (for `status`), in one query."""
        records = self._records("where rowid in (select max(rowid) from runs group by plan_id)", (), with_steps=False)
        return {r.plan_id: r for r in records}

    def last_successes(self) -> dict[str, RunRecord]:
        records = self._records(
            "where rowid in (select max(rowid) from runs where state in (?, ?) group by plan_id)",
            (RunState.AWAITING_REVOKE.value, RunState.SUCCEEDED.value),
            with_steps=False,
        )
        return {r.plan_id: r for r in records}

    def failure_streaks(self) -> dict[str, int]:
        """By plan, how many of its newest runs in a row ended failed, rolled back or stuck (plans whose newest run
        did not fail are left out), in one query: the failed runs newer than the plan's newest other run."""
        failed = tuple(state.value for state in FAILED_STATES)
        marks = ", ".join("?" * len(failed))
        with self._lock:
            rows = self._db.execute(
                f"select plan_id, count(*) from runs r where state in ({marks}) and rowid > coalesce("
                f"(select max(rowid) from runs s where s.plan_id = r.plan_id and s.state not in ({marks})), 0) "
                "group by plan_id",
                (*failed, *failed),
            ).fetchall()
        return {plan_id: count for plan_id, count in rows}

    def live_leases(self) -> dict[str, Lease]:
        with self._lock:
            rows = self._db.execute(
                "select plan_id, holder, host, pid, token, expires_at from leases where holder is not null"
            ).fetchall()
        now = datetime.now(UTC)
        found = {}
        for plan_id, holder, host, pid, token, expires_text in rows:
            expires = _time(expires_text)
            if expires is None or expires <= now or holder_is_dead(holder, host, pid):
                continue
            found[plan_id] = Lease(plan_id, holder, host, pid, token, expires)
        return found

    # -- fingerprints (rotator.fingerprints) ----------------------------------------------------------------

    def save_fingerprints(self, fingerprints: Sequence[Fingerprint]) -> None:
        """Keep keyed fingerprints of a stored version (idempotent: the same one again is ignored)."""
        if not fingerprints:
            return
        now = now_text()
        rows = [(f.digest, f.plan_id, f.secret_id, f.version_id, f.kind, now) for f in fingerprints]
        with self._lock:
            self._db.execute("begin immediate")
            try:
                self._db.executemany("insert or ignore into fingerprints values (?, ?, ?, ?, ?, ?)", rows)
            except BaseException:
                self._db.execute("rollback")
                raise
            self._db.execute("commit")

    def find_fingerprints(self, digests: Collection[str]) -> list[Fingerprint]:
        """The stored fingerprints among `digests`, newest first."""
        wanted = list(dict.fromkeys(digests))
        found: list[Fingerprint] = []
        for start in range(0, len(wanted), 500):  # SQLite's host parameter limit
            chunk = wanted[start : start + 500]
            with self._lock:
                rows = self._db.execute(
                    "select plan_id, secret_id, version_id, kind, digest from fingerprints "
                    f"where digest in ({', '.join('?' * len(chunk))}) order by created_at desc",
                    chunk,
                ).fetchall()
            found.extend(Fingerprint(*row) for row in rows)
        return found

    # -- notifications --------------------------------------------------------------------------------------

    def save_notification(self, record: NotificationRecord, lease: Lease | None) -> None:
        values = (
            record.run_id,
            record.plan_id,
            record.notifier,
            record.status.value,
            int(record.required),
            record.attempts,
            _text(record.next_attempt_at),
            scrubbed(record.last_error),
            _text(record.updated_at or datetime.now(UTC)),
        )
        self._fenced(
            f"insert or replace into notifications ({', '.join(_NOTIFY_FIELDS)}) "
            f"select {', '.join('?' * len(_NOTIFY_FIELDS))} where {{fence}}",
            values,
            lease,
        )

    def notifications(
        self,
        *,
        plan_id: str | None = None,
        run_id: str | None = None,
        statuses: Sequence[NotifyStatus] = (),
    ) -> list[NotificationRecord]:
        clauses, params = [], []
        if plan_id is not None:
            clauses.append("plan_id = ?")
            params.append(plan_id)
        if run_id is not None:
            clauses.append("run_id = ?")
            params.append(run_id)
        if statuses:
            clauses.append(f"status in ({', '.join('?' * len(statuses))})")
            params.extend(s.value for s in statuses)
        where = f"where {' and '.join(clauses)}" if clauses else ""
        with self._lock:
            rows = self._db.execute(
                f"select {', '.join(_NOTIFY_FIELDS)} from notifications {where} order by updated_at, rowid",
                params,
            ).fetchall()
        return [notification_record(row, _time) for row in rows]
