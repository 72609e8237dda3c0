"""The shared journal: PostgreSQL, for several daemons (on one host or many) working one set of plans.

Selected by `journal = "postgresql://user@host:port/db"`. Behaves exactly as the SQLite journal; what differs is
how it stays correct when several processes on several hosts write at once:

- Leases: granted by one statement (`INSERT ... ON CONFLICT DO UPDATE ... WHERE free`), so two daemons racing
  for a plan cannot both win; the fencing token grows on every grant. A holder on this host whose process died
  is taken over at once by a compare-and-set on its token; a holder on another host only once its lease expired.
- Clocks: expiry is decided by the database's clock (`now()` in the statement that grants, renews or reads a
  lease), so skew between the daemons' hosts cannot make two of them see a lease as free. Recorded times (step
  start and end, notification updates) come from the client's clock, like the run times the engine passes in,
  so one run's times stay consistent with each other.
- Fenced writes: every write of a run carries its plan's lease, and the fence is part of the same statement
  (a `FOR SHARE` lock on the lease row in a CTE). A takeover's UPDATE of that row waits for a fenced write in
  flight, and a fenced write that waited for a takeover re-reads the row and finds its token gone: a daemon
  that lost its lease can no longer write a step, promote or revoke a run.
- Schema: created on first use under `pg_advisory_xact_lock`, so daemons starting together do not trip over
  each other; `rotator_schema_version` records the version for later migrations. Once the tables exist the
  journal's role needs only SELECT, INSERT and UPDATE on them (and USAGE on the schema).
- Threads: the daemon calls the journal from a thread pool; a psycopg connection serves one thread at a time,
  so the journal keeps up to `pool_size` connections of its own (8, measured in bench/journal_ops.py).
- Connections: `application_name=rotator`, `connect_timeout=10` unless the URL says otherwise. The password
  never sits in the URL: libpq reads PGPASSWORD, PGPASSFILE or ~/.pgpass. An idle connection that the server
  closed (restart, terminated backend) is noticed before use and replaced; a read that meets a dropped
  connection is repeated once on a new one; a write that meets one raises TransientError (it may or may not
  have committed: the caller decides), never a silent loss.

Only this module under rotator/ imports psycopg (tests/test_layering.py); `open_journal` loads it only when the
config names a PostgreSQL URL.
"""

from __future__ import annotations

import gc
import hashlib
import re
import select
import threading
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import Enum
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import pq, sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.json import Jsonb

from rotator.engine.states import FAILED_STATES
from rotator.errors import ConfigError, LeaseLost, RotatorError, TransientError
from rotator.fingerprints import Fingerprint
from rotator.journal.leases import holder_is_dead, this_holder
from rotator.journal.records import (
    STEP_ACTIONS,
    STEP_STATUSES,
    check_run_changes,
    notification_record,
    scrubbed,
    step_status,
)
from rotator.logs import scrub
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

T = TypeVar("T")
Connection = psycopg.Connection[tuple[Any, ...]]

SCHEMA_VERSION = 2
# One advisory lock key for "the journal's schema is being created or migrated" (any schema, any database).
_SCHEMA_LOCK_KEY = int.from_bytes(hashlib.sha256(b"rotator.journal.schema").digest()[:8], "big", signed=True)
# As many connections as the daemon's default thread pool: 8 threads wrote 1.5-2.3x faster through 8
# connections than through one under a lock (bench/journal_ops.py); a ninth thread waits for a free one.
DEFAULT_POOL_SIZE = 8
# A statement that waits longer than this (a lock someone forgot) fails as TransientError, not a hung thread.
STATEMENT_TIMEOUT_MS = 30_000
_CONFIG_KEY = "rotator.journal"
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_AUTH_MARKERS = ("password authentication failed", "no password supplied", "is not permitted to log in", "pg_hba.conf")

# Tables get a prefix: the journal may share a database (and its public schema) with other applications.
_TABLES = ("runs", "steps", "notifications", "leases", "fingerprints", "schema_version")

# Column name -> PostgreSQL type, in the order of RunRecord's fields (as the SQLite journal's _RUN_FIELDS).
_RUN_COLUMNS = {
    "run_id": "text",
    "plan_id": "text",
    "state": "text",
    "trigger": "text",
    "started_at": "timestamptz",
    "store": "text",
    "secret_id": "text",
    "step": "text",
    "ended_at": "timestamptz",
    "reason": "text",
    "operator": "text",
    "error": "text",
    "version_id": "text",
    "previous_version_id": "text",
    "revoke_due_at": "timestamptz",
    "details": "jsonb",
}
_NOTIFY_COLUMNS = {  # in records.NOTIFICATION_COLUMNS order: notification_record reads rows by position
    "run_id": "text",
    "plan_id": "text",
    "notifier": "text",
    "status": "text",
    "required": "boolean",
    "attempts": "integer",
    "next_attempt_at": "timestamptz",
    "last_error": "text",
    "updated_at": "timestamptz",
}


def _columns(names: Sequence[str]) -> sql.Composed:
    return sql.SQL(", ").join(sql.Identifier(name) for name in names)


def _casts(types: Sequence[str]) -> sql.Composed:
    """One typed placeholder per column: `INSERT ... SELECT %s::type` has no target to infer a NULL's type from."""
    return sql.SQL(", ").join(sql.SQL("%s::{}").format(sql.SQL(kind)) for kind in types)


_PIECES = {
    "run_columns": _columns(tuple(_RUN_COLUMNS)),
    "run_values": _casts(tuple(_RUN_COLUMNS.values())),
    # Most runs have no details: NULL instead of '{}' spares a JSON parse per row (10,000 at the daemon's start).
    "run_selected": sql.SQL(", ").join(
        sql.SQL("NULLIF(r.details, '{}')") if name == "details" else sql.Identifier("r", name) for name in _RUN_COLUMNS
    ),
    "notify_columns": _columns(tuple(_NOTIFY_COLUMNS)),
    "notify_values": _casts(tuple(_NOTIFY_COLUMNS.values())),
    "notify_updates": sql.SQL(", ").join(
        sql.SQL("{0} = excluded.{0}").format(sql.Identifier(name)) for name in (*_NOTIFY_COLUMNS, "seq")
    ),
}
_STEPS = {step.value: step for step in Step}
_NEWEST_FIRST = "ORDER BY r.started_at DESC, r.seq DESC"
_OLDEST_FIRST = "ORDER BY r.started_at, r.seq"
# Free text that an error message could have carried a secret into: scrubbed again here, the last stop before disk.
_FREE_TEXT = frozenset({"error", "reason", "last_error"})

# Each schema version's DDL, applied in order under the advisory lock. {name} placeholders are the tables.
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """CREATE TABLE IF NOT EXISTS {runs} (
            run_id text PRIMARY KEY,
            seq bigint GENERATED BY DEFAULT AS IDENTITY UNIQUE,
            plan_id text NOT NULL,
            state text NOT NULL,
            trigger text NOT NULL,
            started_at timestamptz NOT NULL,
            store text NOT NULL,
            secret_id text NOT NULL,
            step text,
            ended_at timestamptz,
            reason text,
            operator text,
            error text,
            version_id text,
            previous_version_id text,
            revoke_due_at timestamptz,
            details jsonb NOT NULL DEFAULT '{{}}'
        )""",
        "CREATE INDEX IF NOT EXISTS {runs_plan} ON {runs} (plan_id, seq)",
        "CREATE INDEX IF NOT EXISTS {runs_plan_started} ON {runs} (plan_id, started_at)",
        "CREATE INDEX IF NOT EXISTS {runs_state} ON {runs} (state, started_at)",
        """CREATE TABLE IF NOT EXISTS {steps} (
            id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            run_id text NOT NULL,
            step text NOT NULL,
            action text NOT NULL,
            status text NOT NULL,
            started_at timestamptz NOT NULL,
            ended_at timestamptz,
            error text
        )""",
        "CREATE INDEX IF NOT EXISTS {steps_run} ON {steps} (run_id, id)",
        """CREATE TABLE IF NOT EXISTS {notifications} (
            run_id text NOT NULL,
            plan_id text NOT NULL,
            notifier text NOT NULL,
            status text NOT NULL,
            required boolean NOT NULL DEFAULT false,
            attempts integer NOT NULL DEFAULT 0,
            next_attempt_at timestamptz,
            last_error text,
            updated_at timestamptz,
            seq bigint GENERATED BY DEFAULT AS IDENTITY,
            PRIMARY KEY (run_id, notifier)
        )""",
        "CREATE INDEX IF NOT EXISTS {notifications_status} ON {notifications} (status, next_attempt_at)",
        "CREATE INDEX IF NOT EXISTS {notifications_plan} ON {notifications} (plan_id)",
        """CREATE TABLE IF NOT EXISTS {leases} (
            plan_id text PRIMARY KEY,
            holder text,
            host text,
            pid integer,
            token bigint NOT NULL,
            expires_at timestamptz
        )""",
    ),
    2: (
        """CREATE TABLE IF NOT EXISTS {fingerprints} (
            digest text NOT NULL,
            plan_id text NOT NULL,
            secret_id text NOT NULL,
            version_id text NOT NULL,
            kind text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (digest, plan_id, version_id)
        )""",
    ),
}


def _utc(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is UTC:  # the session's time zone is UTC: nothing to convert
        return value
    return value.astimezone(UTC)


def _param(name: str, value: Any) -> Any:
    """A Python value as the journal stores it (enums by value, details as jsonb, free text scrubbed)."""
    if isinstance(value, Mapping):
        return Jsonb(scrubbed(value))
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    if name in _FREE_TEXT and isinstance(value, str):
        return scrub(value)
    return value


def _message(exc: BaseException) -> str:
    """The first line of a driver error, scrubbed (the server's DETAIL lines are left out)."""
    text = str(exc).strip().splitlines()
    return scrub(text[0]) if text else type(exc).__name__


def _is_auth_failure(exc: psycopg.Error) -> bool:
    return exc.sqlstate in ("28P01", "28000") or any(marker in str(exc) for marker in _AUTH_MARKERS)


def _split_url(url: str) -> tuple[dict[str, Any], str | None]:
    """libpq connection parameters from the URL, and the `schema` parameter, which is ours, not libpq's."""
    parts = urlsplit(url)
    if parts.password is not None:
        raise ConfigError(
            "the journal URL holds a password",
            key=_CONFIG_KEY,
            fix="remove it from the URL; give it in PGPASSWORD, PGPASSFILE or ~/.pgpass",
        )
    schema = None
    kept = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "schema":
            schema = value
        else:
            kept.append((key, value))
    if schema is not None and not _SCHEMA_NAME.fullmatch(schema):
        raise ConfigError(
            f"schema {schema!r} in the journal URL is not a plain identifier",
            key=_CONFIG_KEY,
            fix="use lower-case letters, digits and '_' (starting with a letter or '_'), e.g. ?schema=rotator",
        )
    try:
        params: dict[str, Any] = conninfo_to_dict(urlunsplit(parts._replace(query=urlencode(kept, quote_via=quote))))
    except psycopg.Error as exc:
        raise ConfigError(
            f"the journal URL is not a valid PostgreSQL URL: {_message(exc)}",
            key=_CONFIG_KEY,
            fix='use "postgresql://user@host:port/dbname[?sslmode=verify-full&schema=NAME]"',
        ) from None
    params.setdefault("application_name", "rotator")
    params.setdefault("connect_timeout", "10")
    # A host that vanished without closing the socket is noticed within about a minute, not hours.
    params.setdefault("keepalives_idle", "30")
    params.setdefault("keepalives_interval", "10")
    params.setdefault("keepalives_count", "3")
    return params, schema


@contextmanager
def _gc_paused(paused: bool) -> Iterator[None]:
    """Pause the cyclic garbage collector while thousands of records are built: every object made survives, so
    its collections, triggered by the allocations alone, scan them again and again for nothing (half the client
    time of latest_runs at 10,000 plans). Leaves it alone if someone else turned it off."""
    if not (paused and gc.isenabled()):
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _fetch_one(statement: str, params: Sequence[Any]) -> Callable[[Connection], tuple[Any, ...] | None]:
    """A unit of work for _read/_write: run `statement` and return its first row."""
    return lambda conn: conn.execute(statement, params).fetchone()


def _server_closed(conn: Connection) -> bool:
    """True when an idle connection has something to read: on an idle connection that is only ever the server's
    goodbye (restart, terminated backend) or EOF. A syscall, no round trip."""
    if conn.closed or conn.broken:
        return True
    try:
        poller = select.poll()
        poller.register(conn.fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)
        return bool(poller.poll(0))
    except (OSError, ValueError, psycopg.Error):
        return True


class _ConnectionPool:
    """Up to `size` autocommit connections, each lent to one thread at a time, opened on demand."""

    def __init__(self, connect: Callable[[], Connection], size: int):
        self._connect = connect
        self._slots = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()
        self._idle: list[Connection] = []
        self._closed = False

    @contextmanager
    def connection(self) -> Iterator[tuple[Connection, bool]]:
        """A connection, and whether it was reused (a reused one may have died since: reads may retry)."""
        with self._slots:
            conn, reused = self._checkout()
            try:
                yield conn, reused
            finally:
                self._checkin(conn)

    def _checkout(self) -> tuple[Connection, bool]:
        while True:
            with self._lock:
                if self._closed:
                    raise RotatorError("the PostgreSQL journal is closed")
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                return self._connect(), False
            if not _server_closed(conn):
                return conn, True
            conn.close()

    def _checkin(self, conn: Connection) -> None:
        if conn.closed or conn.broken or conn.info.transaction_status != pq.TransactionStatus.IDLE:
            conn.close()  # dropped, or left mid-transaction by an interrupt: never lend it again
            return
        with self._lock:
            if not self._closed:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class PostgresJournal:
    """The Journal Protocol on PostgreSQL. `url`: `postgresql://user@host:port/dbname`, with libpq parameters
    (sslmode, sslrootcert, connect_timeout, ...) and `schema=NAME` (tables go there; created if missing)."""

    def __init__(self, url: str, *, pool_size: int = DEFAULT_POOL_SIZE, schema: str | None = None):
        params, url_schema = _split_url(url)
        self._params = params
        self._schema = schema or url_schema
        self._where = f"{params.get('host') or 'localhost'}:{params.get('port') or 5432}/{params.get('dbname', '')}"
        self._pool = _ConnectionPool(self._open, max(1, pool_size))
        self._names = {name: self._table(name) for name in _TABLES}
        self._names.update(
            {
                index: sql.Identifier(f"rotator_{index}")
                for index in (
                    "runs_plan",
                    "runs_plan_started",
                    "runs_state",
                    "steps_run",
                    "notifications_status",
                    "notifications_plan",
                )
            }
        )
        self._statements: dict[str, str] = {}
        self._ensure_schema()

    # -- connections and the one error boundary -------------------------------------------------------------

    def _table(self, name: str) -> sql.Identifier:
        table = f"rotator_{name}"
        return sql.Identifier(self._schema, table) if self._schema else sql.Identifier(table)

    def _sql(self, template: str) -> str:
        """`template` with its {table} and {piece} names filled in, rendered once and kept: composing SQL costs
        more client time than a loopback round trip."""
        found = self._statements.get(template)
        if found is None:
            found = sql.SQL(template).format(**self._names, **_PIECES).as_string()
            self._statements[template] = found
        return found

    def _open(self) -> Connection:
        """Connects (libpq: the password from PGPASSWORD, PGPASSFILE or ~/.pgpass, never from the URL), then
        `SET TIME ZONE 'UTC'` (psycopg then returns times as datetime.UTC, no conversion per value) and
        `SET statement_timeout` unless the URL's `options` set one."""
        conn = psycopg.connect(**self._params, autocommit=True)
        try:
            settings = "SET TIME ZONE 'UTC'"
            if "statement_timeout" not in self._params.get("options", ""):
                settings += f"; SET statement_timeout = {STATEMENT_TIMEOUT_MS}"
            conn.execute(settings)
        except BaseException:
            conn.close()
            raise
        return conn

    @contextmanager
    def _errors(self, what: str, *, write: bool) -> Iterator[None]:
        """Maps the driver's errors to the project's: the only place this module looks at psycopg's errors."""
        try:
            yield
        except RotatorError:
            raise
        except psycopg.errors.InsufficientPrivilege as exc:
            raise ConfigError(
                f"PostgreSQL journal at {self._where}: permission denied to {what}: {_message(exc)}",
                key=_CONFIG_KEY,
                fix="grant the journal's role USAGE on the schema and SELECT, INSERT, UPDATE on the rotator_* "
                "tables (and CREATE on the schema until the tables exist); see README",
            ) from exc
        except psycopg.OperationalError as exc:
            if _is_auth_failure(exc):
                raise ConfigError(
                    f"PostgreSQL journal at {self._where}: the server refused the login of "
                    f"role {self._params.get('user', '(default)')!r}: {_message(exc)}",
                    key=_CONFIG_KEY,
                    fix="give the role's password in PGPASSWORD, PGPASSFILE or ~/.pgpass (never in the URL), "
                    "and check pg_hba.conf",
                ) from exc
            doubt = " (the write may or may not have been saved)" if write else ""
            raise TransientError(
                f"PostgreSQL journal at {self._where}: {what} failed: {_message(exc)}{doubt}; retry when the "
                "server is reachable"
            ) from exc
        except psycopg.Error as exc:
            raise RotatorError(f"PostgreSQL journal at {self._where}: {what} failed: {_message(exc)}") from exc

    def _read(self, what: str, work: Callable[[Connection], T]) -> T:
        """Run a read; if its reused connection turns out dropped, once more on a new one (a read can repeat)."""
        with self._errors(what, write=False):
            for attempt in (1, 2):
                with self._pool.connection() as (conn, reused):
                    try:
                        return work(conn)
                    except psycopg.OperationalError:
                        if not (attempt == 1 and reused and conn.broken):
                            raise
        raise AssertionError("unreachable")

    def _write(self, what: str, work: Callable[[Connection], T]) -> T:
        """Run a write once: a dropped connection raises TransientError, the caller decides whether to repeat.
        Only a failure after the statement went out leaves its outcome in doubt (and says so)."""
        with (
            self._errors(what, write=False),
            self._pool.connection() as (conn, _reused),
            self._errors(what, write=True),
        ):
            return work(conn)

    def close(self) -> None:
        self._pool.close()

    # -- schema -----------------------------------------------------------------------------------------------

    def _schema_version(self, conn: Connection) -> int | None:
        """`SELECT to_regclass(...)`, then `SELECT max(version) FROM rotator_schema_version` if it exists."""
        qualified = self._names["schema_version"].as_string(conn)
        row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (qualified,)).fetchone()
        if not row or not row[0]:
            return None
        found = conn.execute(self._sql("SELECT max(version) FROM {schema_version}")).fetchone()
        return int(found[0]) if found and found[0] is not None else 0

    def _ensure_schema(self) -> None:
        """Creates or migrates the tables once, under `pg_advisory_xact_lock` (CREATE SCHEMA/TABLE/INDEX IF NOT
        EXISTS, INSERT INTO rotator_schema_version). A role without CREATE works once the tables exist."""

        def ensure(conn: Connection) -> None:
            version = self._schema_version(conn)
            if version == SCHEMA_VERSION:
                return  # the common start: no lock, no DDL, no CREATE privilege needed
            self._refuse_newer(version)
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK_KEY,))
                if self._schema:
                    exists = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (self._schema,)).fetchone()
                    if not exists:
                        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self._schema)))
                conn.execute(
                    self._sql(
                        "CREATE TABLE IF NOT EXISTS {schema_version} "
                        "(version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
                    )
                )
                version = self._schema_version(conn) or 0  # again, under the lock: another daemon may have been first
                self._refuse_newer(version)
                for number in sorted(n for n in _MIGRATIONS if n > version):
                    for statement in _MIGRATIONS[number]:
                        conn.execute(self._sql(statement))
                    conn.execute(self._sql("INSERT INTO {schema_version} (version) VALUES (%s)"), (number,))

        self._write("create the journal's tables", ensure)

    def _refuse_newer(self, version: int | None) -> None:
        if version is not None and version > SCHEMA_VERSION:
            raise ConfigError(
                f"the journal at {self._where} has schema version {version}, newer than this rotator's "
                f"({SCHEMA_VERSION})",
                key=_CONFIG_KEY,
                fix="upgrade rotator on this host to the version the other daemons run",
            )

    # -- fenced writes ---------------------------------------------------------------------------------------

    def _fenced(self, what: str, write: str, params: Sequence[Any], lease: Lease | None) -> None:
        """Run one write that acts only while `lease` still holds its plan. `write` (a template) reads the CTE
        `fence`: one row while the lease holds, else none. The fence locks the lease row FOR SHARE in the same
        statement: a takeover waits for this write, and this write, if it waited for a takeover, sees the new
        token (PostgreSQL re-reads a locked row that changed, in READ COMMITTED) and writes nothing."""
        if lease is None:
            statement = self._sql(f"WITH fence AS (SELECT 1) {write}")
            self._write(what, lambda conn: conn.execute(statement, params))
            return
        statement = self._sql(
            "WITH fence AS (SELECT 1 FROM {leases} WHERE plan_id = %s AND token = %s AND holder = %s FOR SHARE), "
            f"done AS ({write} RETURNING 1) SELECT EXISTS (SELECT 1 FROM fence)"
        )
        fence = (lease.plan_id, lease.token, lease.holder)
        row = self._write(what, lambda conn: conn.execute(statement, (*fence, *params)).fetchone())
        if not row or not row[0]:
            raise LeaseLost(
                f"plan {lease.plan_id}: this process lost its lease (token {lease.token}); another run took over"
            )

    # -- leases ---------------------------------------------------------------------------------------------

    def _lease(self, plan_id: str, holder: str, host: str, pid: int, row: tuple[Any, ...]) -> Lease:
        expires: datetime = row[1]
        return Lease(plan_id, holder, host, pid, int(row[0]), _utc(expires) or expires)

    def acquire_lease(self, plan_id: str, ttl_seconds: float) -> Lease | None:
        """`INSERT INTO rotator_leases ... ON CONFLICT DO UPDATE ... WHERE free RETURNING` (one statement); when
        busy, `SELECT` its holder, and if that process died on this host, `UPDATE ... WHERE token = seen`."""
        holder, host, pid = this_holder()
        grant = self._sql(
            "INSERT INTO {leases} AS l (plan_id, holder, host, pid, token, expires_at) "
            "VALUES (%s, %s, %s, %s, 1, now() + make_interval(secs => %s)) "
            "ON CONFLICT (plan_id) DO UPDATE SET holder = excluded.holder, host = excluded.host, pid = excluded.pid, "
            "token = l.token + 1, expires_at = excluded.expires_at "
            "WHERE l.holder IS NULL OR l.expires_at IS NULL OR l.expires_at <= now() "
            "RETURNING token, expires_at"
        )
        seen = self._sql(
            "SELECT holder, host, pid, token, holder IS NULL OR expires_at IS NULL OR expires_at <= now() "
            "FROM {leases} WHERE plan_id = %s"
        )
        take_over = self._sql(
            "UPDATE {leases} SET holder = %s, host = %s, pid = %s, token = token + 1, "
            "expires_at = now() + make_interval(secs => %s) WHERE plan_id = %s AND token = %s AND holder = %s "
            "RETURNING token, expires_at"
        )
        what = f"acquire the lease of plan {plan_id}"
        ttl = float(ttl_seconds)
        for _attempt in range(3):  # a lease released between our statements is tried again, a few times
            row = self._write(what, _fetch_one(grant, (plan_id, holder, host, pid, ttl)))
            if row:
                return self._lease(plan_id, holder, host, pid, row)
            current = self._read(what, _fetch_one(seen, (plan_id,)))
            if current is None or current[4]:
                continue
            old_holder, old_host, old_pid, old_token, _free = current
            if not holder_is_dead(old_holder, old_host, old_pid):
                return None
            cas = (holder, host, pid, ttl, plan_id, old_token, old_holder)
            row = self._write(what, _fetch_one(take_over, cas))
            if row:
                return self._lease(plan_id, holder, host, pid, row)
            # Another process took the dead holder's lease first: look again (it is most likely busy now).
        return None

    def renew_lease(self, lease: Lease, ttl_seconds: float) -> Lease:
        """`UPDATE rotator_leases SET expires_at = now() + ttl WHERE plan_id, token, holder match RETURNING`."""
        statement = self._sql(
            "UPDATE {leases} SET expires_at = now() + make_interval(secs => %s) "
            "WHERE plan_id = %s AND token = %s AND holder = %s RETURNING token, expires_at"
        )
        params = (float(ttl_seconds), lease.plan_id, lease.token, lease.holder)
        row = self._write(f"renew the lease of plan {lease.plan_id}", lambda c: c.execute(statement, params).fetchone())
        if not row:
            raise LeaseLost(f"plan {lease.plan_id}: this process lost its lease (token {lease.token})")
        return self._lease(lease.plan_id, lease.holder, lease.host, lease.pid, row)

    def release_lease(self, lease: Lease) -> None:
        """`UPDATE rotator_leases SET holder = NULL, ... WHERE plan_id, token, holder match` (a no-op if lost)."""
        statement = self._sql(
            "UPDATE {leases} SET holder = NULL, host = NULL, pid = NULL, expires_at = NULL "
            "WHERE plan_id = %s AND token = %s AND holder = %s"
        )
        params = (lease.plan_id, lease.token, lease.holder)
        self._write(f"release the lease of plan {lease.plan_id}", lambda c: c.execute(statement, params))

    def _live(self, rows: list[tuple[Any, ...]]) -> dict[str, Lease]:
        found = {}
        for plan_id, holder, host, pid, token, expires in rows:
            if holder_is_dead(holder, host, pid):
                continue
            found[plan_id] = Lease(plan_id, holder, host, pid, int(token), _utc(expires) or expires)
        return found

    def lease_of(self, plan_id: str) -> Lease | None:
        """`SELECT ... FROM rotator_leases WHERE plan_id = %s AND holder IS NOT NULL AND expires_at > now()`."""
        statement = self._sql(
            "SELECT plan_id, holder, host, pid, token, expires_at FROM {leases} "
            "WHERE plan_id = %s AND holder IS NOT NULL AND expires_at > now()"
        )
        rows = self._read(f"read the lease of plan {plan_id}", lambda c: c.execute(statement, (plan_id,)).fetchall())
        return self._live(rows).get(plan_id)

    def live_leases(self) -> dict[str, Lease]:
        """`SELECT ... FROM rotator_leases WHERE holder IS NOT NULL AND expires_at > now()` (one query)."""
        statement = self._sql(
            "SELECT plan_id, holder, host, pid, token, expires_at FROM {leases} "
            "WHERE holder IS NOT NULL AND expires_at > now()"
        )
        return self._live(self._read("read the live leases", lambda c: c.execute(statement).fetchall()))

    # -- runs and steps ------------------------------------------------------------------------------------

    def begin_run(self, run: RunRecord, lease: Lease) -> None:
        """`INSERT INTO rotator_runs (...) SELECT ... FROM fence` (fenced)."""
        write = "INSERT INTO {runs} ({run_columns}) SELECT {run_values} FROM fence"
        params = [_param(name, getattr(run, name)) for name in _RUN_COLUMNS]
        self._fenced(f"record the start of run {run.run_id}", write, params, lease)

    def step_started(self, run_id: str, step: Step, action: StepAction, lease: Lease) -> None:
        """`INSERT INTO rotator_steps (...) SELECT ... FROM fence` (fenced)."""
        write = (
            "INSERT INTO {steps} (run_id, step, action, status, started_at) "
            "SELECT %s::text, %s::text, %s::text, 'started', %s::timestamptz FROM fence"
        )
        params = (run_id, step.value, StepAction(action).value, datetime.now(UTC))
        self._fenced(f"record step {step.value} of run {run_id} as started", write, params, lease)

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
        """`UPDATE rotator_steps SET status, ended_at, error WHERE id = (the step's last started row)` (fenced)."""
        write = (
            "UPDATE {steps} SET status = %s, ended_at = %s, error = %s WHERE id = (SELECT max(id) FROM {steps} "
            "WHERE run_id = %s AND step = %s AND action = %s AND status = 'started') AND EXISTS (SELECT 1 FROM fence)"
        )
        params = (
            step_status(error, refused).value,
            datetime.now(UTC),
            _param("error", error),
            run_id,
            step.value,
            StepAction(action).value,
        )
        self._fenced(f"record step {step.value} of run {run_id} as finished", write, params, lease)

    def update_run(self, run_id: str, lease: Lease | None, **changes: Any) -> None:
        """`UPDATE rotator_runs SET ... WHERE run_id = %s` (fenced when a lease is given)."""
        check_run_changes(changes, _RUN_COLUMNS)
        if not changes:
            return
        # Names checked by check_run_changes above: each is a known column, rendered through sql.Identifier.
        assignments = ", ".join(f"{sql.Identifier(name).as_string()} = %s::{_RUN_COLUMNS[name]}" for name in changes)
        write = f"UPDATE {{runs}} SET {assignments} WHERE run_id = %s AND EXISTS (SELECT 1 FROM fence)"
        params = [*(_param(name, value) for name, value in changes.items()), run_id]
        self._fenced(f"update run {run_id}", write, params, lease)

    def _records(
        self, where: str, order: str, params: Sequence[Any], limit: int | None = None, *, with_steps: bool = True
    ) -> list[RunRecord]:
        """One `SELECT` of the runs that match, each joined (LATERAL) with its steps as typed arrays.

        The runs are chosen (and limited) first, then joined: a history of a million runs never computes the
        steps of runs it does not return. Rows come in binary: psycopg parses timestamps and arrays in C, which
        keeps the daemon's start with 10,000 plans short (bench/journal_ops.py)."""
        if not with_steps:
            statement = self._sql(f"SELECT {{run_selected}} FROM {{runs}} r {where} {order}")
        else:
            statement = self._sql(
                f"SELECT {{run_selected}}, s.* FROM (SELECT * FROM {{runs}} r {where} {order}"
                + (" LIMIT %s" if limit is not None else "")
                # The arrays aggregate the steps read in id order (the index's order): one ordered scan, where six
                # `array_agg(... ORDER BY id)` would sort six times (2.4x the server time at 10,000 runs).
                + ") r LEFT JOIN LATERAL (SELECT array_agg(step), array_agg(action), array_agg(status), "
                "array_agg(started_at), array_agg(ended_at), array_agg(error) "
                f"FROM (SELECT * FROM {{steps}} WHERE run_id = r.run_id ORDER BY id) ordered) s ON true {order}"
            )
        if limit is not None:
            params = (*params, int(limit))
        rows = self._read("read runs", lambda c: c.execute(statement, params, binary=True).fetchall())
        with _gc_paused(len(rows) > 1000):
            return [self._record(row) for row in rows]

    def _record(self, row: tuple[Any, ...]) -> RunRecord:
        data = dict(zip(_RUN_COLUMNS, row, strict=False))
        run_id = data["run_id"]
        arrays = row[len(_RUN_COLUMNS) :]  # none when read without steps; six NULLs for a run without any
        steps = (
            tuple(
                StepRecord(
                    run_id,
                    _STEPS[step],
                    STEP_ACTIONS[action],
                    STEP_STATUSES[status],
                    _utc(started) or started,
                    _utc(ended),
                    error,
                )
                for step, action, status, started, ended, error in zip(*arrays, strict=True)
            )
            if arrays and arrays[0] is not None
            else ()
        )
        return RunRecord(
            run_id=run_id,
            plan_id=data["plan_id"],
            state=RunState(data["state"]),
            trigger=Trigger(data["trigger"]),
            started_at=_utc(data["started_at"]) or data["started_at"],
            store=data["store"],
            secret_id=data["secret_id"],
            step=steps[-1].step if steps else None,
            ended_at=_utc(data["ended_at"]),
            reason=data["reason"],
            operator=data["operator"],
            error=data["error"],
            version_id=data["version_id"],
            previous_version_id=data["previous_version_id"],
            revoke_due_at=_utc(data["revoke_due_at"]),
            steps=steps,
            details=RunDetails.from_json(data["details"]) if data["details"] else NO_DETAILS,
        )

    def get_run(self, run_id: str) -> RunRecord | None:
        """`SELECT ... FROM rotator_runs WHERE run_id = %s` with its steps."""
        found = self._records("WHERE r.run_id = %s", "", (run_id,))
        return found[0] if found else None

    def runs(self, plan_id: str | None = None, limit: int = 50) -> list[RunRecord]:
        """`SELECT ... FROM rotator_runs [WHERE plan_id = %s] ORDER BY started_at DESC LIMIT n` with steps."""
        if plan_id is None:
            return self._records("", _NEWEST_FIRST, (), limit)
        return self._records("WHERE r.plan_id = %s", _NEWEST_FIRST, (plan_id,), limit)

    def runs_in_state(self, *states: RunState, plan_id: str | None = None) -> list[RunRecord]:
        """`SELECT ... FROM rotator_runs WHERE state = ANY(%s) [AND plan_id = %s] ORDER BY started_at`."""
        values = [s.value for s in states]
        if plan_id is None:
            return self._records("WHERE r.state = ANY(%s::text[])", _OLDEST_FIRST, (values,))
        return self._records("WHERE r.plan_id = %s AND r.state = ANY(%s::text[])", _OLDEST_FIRST, (plan_id, values))

    def last_success(self, plan_id: str) -> RunRecord | None:
        """`SELECT ... FROM rotator_runs WHERE plan_id = %s AND state IN (promoted) ORDER BY started_at DESC
        LIMIT 1`."""
        found = self._records(
            "WHERE r.plan_id = %s AND r.state = ANY(%s::text[])",
            _NEWEST_FIRST,
            (plan_id, [RunState.AWAITING_REVOKE.value, RunState.SUCCEEDED.value]),
            1,
        )
        return found[0] if found else None

    def latest_runs(self) -> dict[str, RunRecord]:
        """The newest run (last inserted) of every plan, without its steps: one `SELECT ... WHERE seq IN (SELECT
        max(seq) ... GROUP BY plan_id)`, as the SQLite journal's max(rowid)."""
        records = self._records(
            "WHERE r.seq IN (SELECT max(seq) FROM {runs} GROUP BY plan_id)", "", (), with_steps=False
        )
        return {r.plan_id: r for r in records}

    def last_successes(self) -> dict[str, RunRecord]:
        """The newest promoted run of every plan, without its steps, in one `SELECT` (as latest_runs)."""
        records = self._records(
            "WHERE r.seq IN (SELECT max(seq) FROM {runs} WHERE state = ANY(%s::text[]) GROUP BY plan_id)",
            "",
            ([RunState.AWAITING_REVOKE.value, RunState.SUCCEEDED.value],),
            with_steps=False,
        )
        return {r.plan_id: r for r in records}

    def failure_streaks(self) -> dict[str, int]:
        """By plan, how many of its newest runs in a row failed: one `SELECT plan_id, count(*) ... GROUP BY plan_id`
        over the failed runs newer than the plan's newest other run (as the SQLite journal)."""
        failed = [state.value for state in FAILED_STATES]
        statement = self._sql(
            "SELECT plan_id, count(*) FROM {runs} r WHERE state = ANY(%s::text[]) AND r.seq > coalesce("
            "(SELECT max(seq) FROM {runs} s WHERE s.plan_id = r.plan_id AND s.state <> ALL(%s::text[])), 0) "
            "GROUP BY plan_id"
        )
        rows = self._read("count failures in a row", lambda c: c.execute(statement, (failed, failed)).fetchall())
        return {plan_id: int(count) for plan_id, count in rows}

    # -- fingerprints (rotator.fingerprints) ----------------------------------------------------------------

    def save_fingerprints(self, fingerprints: Sequence[Fingerprint]) -> None:
        """`INSERT INTO rotator_fingerprints ... ON CONFLICT DO NOTHING`, one statement for the version's rows."""
        if not fingerprints:
            return
        statement = self._sql(
            "INSERT INTO {fingerprints} (digest, plan_id, secret_id, version_id, kind) "
            "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[]) ON CONFLICT DO NOTHING"
        )
        columns = [
            [getattr(f, name) for f in fingerprints]
            for name in ("digest", "plan_id", "secret_id", "version_id", "kind")
        ]
        self._write("keep fingerprints", lambda c: c.execute(statement, columns))

    def find_fingerprints(self, digests: Collection[str]) -> list[Fingerprint]:
        """`SELECT ... FROM rotator_fingerprints WHERE digest = ANY(%s) ORDER BY created_at DESC`."""
        statement = self._sql(
            "SELECT plan_id, secret_id, version_id, kind, digest FROM {fingerprints} "
            "WHERE digest = ANY(%s::text[]) ORDER BY created_at DESC"
        )
        rows = self._read("look up fingerprints", lambda c: c.execute(statement, (list(digests),)).fetchall())
        return [Fingerprint(*row) for row in rows]

    # -- notifications --------------------------------------------------------------------------------------

    def save_notification(self, record: NotificationRecord, lease: Lease | None) -> None:
        """`INSERT INTO rotator_notifications ... SELECT ... FROM fence ON CONFLICT (run_id, notifier) DO UPDATE`
        (fenced when a lease is given). A replaced record moves to the end of the order, as SQLite's REPLACE."""
        write = (
            "INSERT INTO {notifications} ({notify_columns}) SELECT {notify_values} FROM fence "
            "ON CONFLICT (run_id, notifier) DO UPDATE SET {notify_updates}"
        )
        params = (
            record.run_id,
            record.plan_id,
            record.notifier,
            record.status.value,
            bool(record.required),
            record.attempts,
            _param("next_attempt_at", record.next_attempt_at),
            _param("last_error", record.last_error),
            _param("updated_at", record.updated_at or datetime.now(UTC)),
        )
        self._fenced(f"record notification {record.notifier} of run {record.run_id}", write, params, lease)

    def notifications(
        self,
        *,
        plan_id: str | None = None,
        run_id: str | None = None,
        statuses: Sequence[NotifyStatus] = (),
    ) -> list[NotificationRecord]:
        """`SELECT ... FROM rotator_notifications WHERE ... ORDER BY updated_at, seq`."""
        clauses: list[str] = []
        params: list[Any] = []
        if plan_id is not None:
            clauses.append("plan_id = %s")
            params.append(plan_id)
        if run_id is not None:
            clauses.append("run_id = %s")
            params.append(run_id)
        if statuses:
            clauses.append("status = ANY(%s::text[])")
            params.append([s.value for s in statuses])
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        statement = self._sql(f"SELECT {{notify_columns}} FROM {{notifications}} {where} ORDER BY updated_at, seq")
        rows = self._read("read notifications", lambda c: c.execute(statement, params).fetchall())
        return [notification_record(row, _utc) for row in rows]
