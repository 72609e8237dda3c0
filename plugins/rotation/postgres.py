"""PostgreSQL passwords, rotated as AWS's rotation samples do, with the same secret JSON.

The secret: ``{"engine": "postgres", "host", "port", "username", "password", "dbname", "masterarn", "ssl"}``
(``dbname`` defaults to "postgres", ``port`` to 5432; ``masterarn`` only for alternating-users; ``ssl`` optional).

Strategies:

- **single-user**: one role changes its own password at `stage`. The old password stops working at that moment,
  so a client that has not yet read the new one fails to log in until it does (a short window: state it in
  your runbook, or use alternating-users).
- **alternating-users**: two roles, ``app`` and ``app_clone`` (the ``clone_suffix`` option). The clone is
  created on first use as a member of the original (``CREATE ROLE app_clone LOGIN IN ROLE app``), so it holds
  the same privileges. Each rotation sets a new password on the role that is *not* CURRENT, through the admin
  secret named by ``masterarn``; there is no window. `revoke` gives the previous role a random password that is
  never stored.

Passwords never travel as plaintext: libpq computes the SCRAM-SHA-256 verifier on the client and only the
verifier is sent (``ALTER ROLE ... PASSWORD 'SCRAM-SHA-256$...'``), so the server log (log_statement),
pg_stat_statements, pg_stat_activity and any proxy in between never see the password.

Least-privilege grants, read from the SQL each method runs (see their docstrings):

- single-user: nothing beyond LOGIN. Every role may change its own password (``ALTER ROLE self PASSWORD``).
- alternating-users: the admin role needs ``CREATEROLE``. On PostgreSQL 16 and later it also needs ADMIN OPTION
  on the original role (``GRANT app TO rotation_admin WITH ADMIN OPTION``): PostgreSQL 16 lets a CREATEROLE role
  alter, and grant membership in, only roles it has ADMIN OPTION on (it gets it on the clone by creating it).
- `in_use` (alternating-users) reads ``pg_stat_activity`` as the admin (other roles' sessions: ``pg_read_all_stats``).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Annotated, Any, Literal

import psycopg
from msgspec import Meta
from psycopg import sql
from rotator_plugins.rotation.database_checks import (
    ca_bundle_path,
    check_same_account,
    check_strategy,
    unverified_tls_reason,
)
from rotator_plugins.rotation.database_secret import DatabaseLogin, SecretShape, ssl_choice
from rotator_plugins.rotation.postgres_connections import ADMIN_POOL, ScramKeyring

from rotator import (
    AuthenticationFailed,
    ComponentSetup,
    Credential,
    Options,
    RotationContext,
    RotatorError,
    Stage,
    StepError,
    StepRefused,
    TestFailed,
    TransientError,
    as_not_applied,
    generate_password,
    parse_options,
)

SINGLE_USER = "single-user"
ALTERNATING_USERS = "alternating-users"
NAMEDATALEN = 63  # longest role name PostgreSQL keeps, in bytes; longer names are silently truncated
APPLICATION_NAME = "rotator"

SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]
# How this plugin reads the secret's JSON (CURRENT, PENDING, PREVIOUS and the admin secret named by masterarn).
SECRET = SecretShape(
    engine_name="postgres",
    engines=("postgres", "postgresql", "aurora-postgresql"),
    required=("host", "username", "password"),
    missing_fix='store a value with "host", "port", "username", "password" and "dbname" (as AWS\'s rotation samples)',
    default_port=5432,
    default_dbname="postgres",
    account="role",
    admin_rights="alter the two roles",
    reset_rights="alter the role (CREATEROLE; on PostgreSQL 16+ also ADMIN OPTION on the role)",
)

# Server (and libpq) messages that mean the credential was refused. Connection failures carry no SQLSTATE in
# psycopg (libpq reports them as text), so the text is checked too.
_AUTH_MARKERS = (
    "password authentication failed",
    "authentication failed for user",
    "is not permitted to log in",
    "no pg_hba.conf entry",
    "no password supplied",
    "password is expired",
)
# Failures that may pass on their own: the network, a restarting or overloaded server.
_TRANSIENT_MARKERS = (
    "connection refused",
    "connection reset",
    "connection timed out",
    "timeout expired",
    "timed out",
    "server closed the connection unexpectedly",
    "could not connect to server",
    "no route to host",
    "network is unreachable",
    "temporary failure in name resolution",  # DNS hiccup; a name that does not exist is not transient
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    # PostgreSQL 14+ while it replays WAL after a crash or an immediate restart (57P03, which libpq reports at
    # connect time without a SQLSTATE), and a standby that is not yet consistent
    "the database system is not yet accepting connections",
    "the database system is not accepting connections",
    "too many clients already",
    "remaining connection slots are reserved",
    "terminating connection",
    "ssl syscall error",
    "connection is closed",
    "consuming input failed",
)
_LIBPQ_PREAMBLE = re.compile(r"^connection failed:\s*(connection to server (at|on) .*? failed:\s*)?")
_TRANSIENT_SQLSTATES = ("57P01", "57P02", "57P03", "40001", "40P01", "55P03", "53300")


class PostgresOptions(Options):
    """The plugin's options (the plan's plugin table minus `type`)."""

    connect_timeout: Annotated[
        int, Meta(ge=1, le=300, description="seconds for libpq to connect (its minimum is 2)")
    ] = 5
    statement_timeout: Annotated[float, Meta(gt=0, le=3600, description="seconds any one statement may take")] = 30.0
    sslmode: (
        Annotated[
            SslMode,
            Meta(
                description="libpq sslmode; default from the secret's \"ssl\" as AWS's samples: true -> verify-full, "
                "false -> disable, absent -> prefer"
            ),
        ]
        | None
    ) = None
    sslrootcert: (
        Annotated[str, Meta(description="CA bundle for verify-ca/verify-full, relative to the config")] | None
    ) = None
    clone_suffix: Annotated[str, Meta(min_length=1, max_length=32)] = "_clone"
    admin_secret_id: (
        Annotated[
            str,
            Meta(
                min_length=1,
                description="secret id (in the plan's store) of the admin that alternating-users and `rotator "
                "reconcile` log in as (default: the secret's masterarn)",
            ),
        ]
        | None
    ) = None


# libpq's sslmode for each "ssl" choice. The samples, without "ssl", try a verified TLS connection and fall back to
# a plain one on any failure; libpq's prefer tries TLS and falls back to plain when the server refuses TLS.
SSLMODE_FOR = {True: "verify-full", False: "disable", None: "prefer"}


def _message(exc: BaseException) -> str:
    """The first line of a psycopg error, without libpq's 'connection failed: ...' preamble."""
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    text = primary or str(exc) or type(exc).__name__
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first = lines[0] if lines else type(exc).__name__
    # libpq: 'connection failed: connection to server at "h", port p failed: FATAL:  <the reason>'
    first = _LIBPQ_PREAMBLE.sub("", first)
    for marker in ("FATAL:", "ERROR:"):
        if marker in first:
            first = first.split(marker, 1)[1].strip()
    return first


class PostgresPlugin:
    """Rotates a PostgreSQL role's password (single-user) or alternates between a role and its clone."""

    strategies = (SINGLE_USER, ALTERNATING_USERS)

    def __init__(self, options: Mapping[str, Any] | None = None, setup: ComponentSetup | None = None) -> None:
        self.options = parse_options(PostgresOptions, options)
        self.setup = setup
        self._keyring = ScramKeyring()
        self._admin_pool = ADMIN_POOL
        self._sslrootcert = ca_bundle_path(setup, self.options.sslrootcert, option="sslrootcert")

    def close(self) -> None:
        """For the daemon's reload and shutdown: the idle admin connections are closed. The pool is the process's
        (shared with the reloaded config's plugins, which reconnect when they need one); a connection in use is
        closed by its user."""
        self._admin_pool.close()

    # -- the RotationPlugin protocol -------------------------------------------------------------------------

    def create(self, ctx: RotationContext, current: Credential) -> dict[str, Any]:
        """Return CURRENT's value with a new generated password (and, alternating, the other role's name).

        No SQL: the engine stores the value as PENDING before `stage` applies it.
        """
        self._check_strategy(ctx, "create")
        login = SECRET.login(ctx, "create", current, "CURRENT")
        value = dict(current.value)
        if ctx.strategy == ALTERNATING_USERS:
            value["username"] = self._other_user(ctx, "create", login.user)
            # The admin secret is read (and checked) here, before anything is stored or applied: a missing one
            # fails the run at once, with the fix, instead of at stage.
            self._admin_login(ctx, "create", current, login)
        value["password"] = generate_password(ctx.password_policy)
        return value

    def stage(self, ctx: RotationContext, current: Credential, pending: Credential) -> None:
        """Make PENDING's password valid. Idempotent.

        single-user: logs in with CURRENT and runs ``ALTER ROLE <self> PASSWORD '<SCRAM verifier>'``; CURRENT
        stops working here. With the ``admin_secret_id`` option, the admin runs ``ALTER ROLE <role> PASSWORD
        '<verifier>'`` instead, on a pooled connection (no login as the role). If CURRENT is refused, logs in
        with PENDING: if that works the stage was done before; else, as AWS's sample, logs in with PREVIOUS and runs
        the same ALTER ROLE from there.

        alternating-users: logs in as the admin (``masterarn``) and runs
        ``SELECT 1 FROM pg_roles WHERE rolname = <pending>``, then either
        ``CREATE ROLE <clone> LOGIN IN ROLE <original> PASSWORD '<verifier>'`` (first use), or
        ``ALTER ROLE <pending> PASSWORD '<verifier>'`` (after ``GRANT <original> TO <clone>`` if an existing clone
        is not a member of the original, checked in ``pg_auth_members``). CURRENT's role is never touched.
        """
        self._check_strategy(ctx, "stage")
        if ctx.strategy == ALTERNATING_USERS:
            self._stage_alternating(ctx, current, pending)
            return
        new = SECRET.login(ctx, "stage", pending, "PENDING")
        old = SECRET.login(ctx, "stage", current, "CURRENT")
        check_same_account(ctx, "stage", old, new, account="role")
        if self.options.admin_secret_id:
            # With an admin configured, the admin sets the role's password on a pooled connection: no login as
            # the role, and one connection serves every plan on the server.
            admin = self._admin_login(ctx, "stage", current, old)
            with self._session(ctx, "stage", admin, pooled=True) as conn:
                self._set_password(conn, old.user, new.password)
            return
        fix = (
            f"the role's password is neither the store's CURRENT nor PENDING value: set role {old.user!r} at "
            f"{old.where} to the CURRENT value (or store the working password as CURRENT), then run again"
        )
        # CURRENT first: on the normal path that is the only login (a refused SCRAM login costs a full
        # handshake). Only when CURRENT is refused is PENDING tried: a stage repeated after a crash.
        try:
            with self._session(ctx, "stage", old, fix=fix) as conn:
                self._set_password(conn, old.user, new.password)
        except AuthenticationFailed:
            if self._logs_in(ctx, "stage", new):
                return
            # As AWS's sample: the role may still have PREVIOUS's password (a restored database, a rotation
            # that was undone by hand). Log in with it and stage from there.
            previous = ctx.read_stage(Stage.PREVIOUS)
            if previous is None:
                raise
            prev = SECRET.login(ctx, "stage", previous, "PREVIOUS")
            if prev.user != old.user or not self._logs_in(ctx, "stage", prev):
                raise
            with self._session(ctx, "stage", prev, fix=fix) as conn:
                self._set_password(conn, prev.user, new.password)

    def test(self, ctx: RotationContext, pending: Credential) -> None:
        """Log in with PENDING over the network and run ``SELECT 1``.

        A refused login raises TestFailed; a connection failure TransientError (the engine may retry).
        """
        self._check_strategy(ctx, "test")
        login = SECRET.login(ctx, "test", pending, "PENDING")
        with self._session(ctx, "test", login, auth_error=TestFailed) as conn:
            row = conn.execute("SELECT 1").fetchone()
        if row is None or row[0] != 1:
            raise TestFailed(
                f"plan {ctx.plan_id}: test: SELECT 1 as user {login.user!r} at {login.where} returned {row!r}",
                plan_id=ctx.plan_id,
                step="test",
            )

    def revoke(self, ctx: RotationContext, previous: Credential, current: Credential) -> None:
        """Invalidate PREVIOUS at the target, never CURRENT.

        single-user: no SQL. PREVIOUS's password stopped working at `stage`, when the same role got CURRENT's
        password. Refuses (StepError) if PREVIOUS names another role than CURRENT, which single-user never does.

        alternating-users: logs in as the admin and runs ``ALTER ROLE <previous> PASSWORD '<verifier>'`` with a
        fresh random password that is neither returned nor stored, so nobody can log in as that role until the
        next rotation stages it again. Nothing to do when PREVIOUS and CURRENT name the same role (its old
        password was already replaced when CURRENT was staged).
        """
        self._check_strategy(ctx, "revoke")
        prev = SECRET.login(ctx, "revoke", previous, "PREVIOUS")
        cur = SECRET.login(ctx, "revoke", current, "CURRENT")
        if ctx.strategy == SINGLE_USER:
            if prev.user != cur.user:
                raise StepError(
                    f"plan {ctx.plan_id}: revoke: PREVIOUS names role {prev.user!r} but CURRENT names "
                    f"{cur.user!r}; single-user rotation never changes the role, so this plugin will not touch "
                    f"{prev.user!r}\n  fix: revoke {prev.user!r} at {prev.where} by hand if it is no longer used, "
                    "or rotate it with alternating-users",
                    plan_id=ctx.plan_id,
                    step="revoke",
                )
            return
        if prev.user == cur.user:
            return
        admin = self._admin_login(ctx, "revoke", current, prev)
        with self._session(ctx, "revoke", admin, pooled=True) as conn:
            if self._role_exists(conn, prev.user):
                self._set_password(conn, prev.user, generate_password(ctx.password_policy))

    def unstage(self, ctx: RotationContext, current: Credential, pending: Credential) -> None:
        """Roll back `stage`: CURRENT logs in again and PENDING does not. Idempotent.

        single-user: logs in with CURRENT (``SELECT 1``); if that works, done (a role has one password, so
        PENDING cannot). Else logs in with PENDING and runs ``ALTER ROLE <self> PASSWORD '<CURRENT's verifier>'``.
        With ``admin_secret_id``: the admin runs ``ALTER ROLE <role> PASSWORD '<CURRENT's verifier>'``.

        alternating-users: logs in as the admin, checks ``pg_roles`` for PENDING's role and, if it exists, runs
        ``ALTER ROLE <pending> PASSWORD '<verifier>'`` with a fresh random password that is never stored.
        The clone role itself is kept for the next rotation.
        """
        self._check_strategy(ctx, "unstage")
        old = SECRET.login(ctx, "unstage", current, "CURRENT")
        new = SECRET.login(ctx, "unstage", pending, "PENDING")
        if ctx.strategy == ALTERNATING_USERS:
            admin = self._admin_login(ctx, "unstage", current, new)
            with self._session(ctx, "unstage", admin, pooled=True) as conn:
                if not self._role_exists(conn, new.user):
                    return
                if new.user == old.user:  # a broken PENDING that named CURRENT's own role: put CURRENT back
                    self._set_password(conn, old.user, old.password)
                else:
                    self._set_password(conn, new.user, generate_password(ctx.password_policy))
            return
        check_same_account(ctx, "unstage", old, new, account="role")
        if self.options.admin_secret_id:  # the admin puts CURRENT's password back (a role has one password)
            admin = self._admin_login(ctx, "unstage", current, old)
            with self._session(ctx, "unstage", admin, pooled=True) as conn:
                self._set_password(conn, old.user, old.password)
            return
        if self._logs_in(ctx, "unstage", old):
            return
        fix = (
            f"neither the store's CURRENT nor PENDING password logs in as {old.user!r}: set the role's password at "
            f"{old.where} to the CURRENT value by hand (ALTER ROLE ... PASSWORD), then run `rotator resume`"
        )
        with self._session(ctx, "unstage", new, fix=fix) as conn:
            self._set_password(conn, new.user, old.password)

    def discard(self, ctx: RotationContext, pending: Credential) -> None:
        """Roll back `create`: nothing to do, no SQL. The password was generated locally and never existed at
        the server unless `stage` ran (and `unstage` undoes that); the engine drops the PENDING version."""

    # -- optional --------------------------------------------------------------------------------------------

    def in_use(
        self, ctx: RotationContext, credential: Credential, *, since: datetime | None = None
    ) -> list[str] | None:
        """Sessions open as the credential's role: is the old credential (PREVIOUS) still in use before revoke?

        alternating-users: runs ``SELECT pid, client_addr, application_name, backend_start FROM pg_stat_activity
        WHERE usename = <user> AND pid <> pg_backend_pid()`` as the admin (``masterarn``; seeing other roles'
        sessions in full needs ``pg_read_all_stats``). Returns one line per session; never a secret.
        single-user: None (unknown): the old and the new password belong to one role, so its sessions cannot be
        told apart, and the old password already stopped working at `stage`. `since` is not used.
        """
        self._check_strategy(ctx, "in_use")
        if ctx.strategy != ALTERNATING_USERS:
            return None
        login = SECRET.login(ctx, "in_use", credential, "the credential")
        session_login = self._admin_login(ctx, "in_use", credential, login)
        with self._session(ctx, "in_use", session_login, pooled=True) as conn:
            rows = conn.execute(
                """SELECT pid, client_addr, application_name, backend_start,
                          query = '<insufficient privilege>' AS hidden
                     FROM pg_stat_activity
                    WHERE usename = %s AND pid <> pg_backend_pid()
                    ORDER BY backend_start""",
                (login.user,),
            ).fetchall()
        lines = []
        for pid, addr, app, started, hidden in rows:
            # Without pg_read_all_stats, another role's session shows its pid but hides its address and start.
            if hidden:
                where = "an address hidden from the admin (grant it pg_read_all_stats)"
            else:
                where = str(addr) if addr else "local socket"
            started_text = f" since {started:%Y-%m-%dT%H:%M:%S%z}" if started is not None else ""
            lines.append(f"pid {pid} from {where} application {app or '-'!r}{started_text}")
        return lines

    # -- drift repair (rotator reconcile) and dry runs: AdminReset, DryRunProbe ------------------------------

    def check_current(self, ctx: RotationContext, current: Credential) -> None:
        """Log in with CURRENT over the network and run ``SELECT 1``; LoginRefused when the server refuses it."""
        login = SECRET.login(ctx, "check", current, "CURRENT")
        with self._session(ctx, "check", login) as conn:
            conn.execute("SELECT 1")

    def check_admin(self, ctx: RotationContext, current: Credential) -> str:
        """Log in as the admin (option admin_secret_id, else the secret's masterarn) and run ``SELECT 1``."""
        admin = self._repair_admin(ctx, "check", current)
        with self._session(ctx, "check", admin, pooled=True) as conn:
            conn.execute("SELECT 1")
        return f"admin {admin.user!r} ({admin.what}) at {admin.where}"

    def reset_value(self, ctx: RotationContext, current: Credential) -> dict[str, Any]:
        """CURRENT's value with a new generated password for the same role. No SQL; the admin secret is read (and
        must exist) first, so a plan without one fails before anything is stored."""
        self._repair_admin(ctx, "reconcile", current)
        value = dict(current.value)
        value["password"] = generate_password(ctx.password_policy)
        return value

    def reset(self, ctx: RotationContext, current: Credential, target: Credential) -> None:
        """As the admin: ``SELECT 1 FROM pg_roles WHERE rolname = <role>``, then ``ALTER ROLE <role> PASSWORD
        '<SCRAM verifier>'`` with `target`'s password (a role has one password, so no other one stays valid)."""
        login = SECRET.login(ctx, "reconcile", target, "the new value")
        admin = self._repair_admin(ctx, "reconcile", current)
        with self._session(ctx, "reconcile", admin, pooled=True) as conn:
            if not self._role_exists(conn, login.user):
                raise StepRefused(
                    f"plan {ctx.plan_id}: reconcile: role {login.user!r} does not exist at {admin.where}\n  fix: "
                    f"create it (CREATE ROLE {login.user} LOGIN ...) with its grants, then run reconcile again",
                    plan_id=ctx.plan_id,
                    step="reconcile",
                )
            self._set_password(conn, login.user, login.password)

    def dry_run(self, ctx: RotationContext, current: Credential) -> list[str]:
        """Changes nothing: logs in with CURRENT (``SELECT 1``); alternating-users also logs in as the admin and
        runs ``SELECT 1 FROM pg_roles WHERE rolname = <the other role>``."""
        self._check_strategy(ctx, "dry-run")
        login = SECRET.login(ctx, "dry-run", current, "CURRENT")
        with self._session(ctx, "dry-run", login) as conn:
            conn.execute("SELECT 1")
        facts = [f"CURRENT logs in as role {login.user!r} at {login.where}"]
        if ctx.strategy == ALTERNATING_USERS:
            other = self._other_user(ctx, "dry-run", login.user)
            admin = self._admin_login(ctx, "dry-run", current, login)
            with self._session(ctx, "dry-run", admin, pooled=True) as conn:
                exists = self._role_exists(conn, other)
            facts.append(f"admin {admin.user!r} ({admin.what}) logs in at {admin.where}")
            made = "exists" if exists else f"is created on first use, as a member of {login.user!r}"
            facts.append(
                f"the next rotation gives role {other!r} ({made}) a new password; CURRENT then names {other!r}, and "
                f"{login.user!r} keeps working through grace, then gets a random password nobody knows"
            )
        else:
            facts.append(
                f"the next rotation changes role {login.user!r}'s own password at stage: clients still holding the old "
                "one cannot open new connections until they read the new one (the single-user window)"
            )
            if self.options.admin_secret_id or current.get("masterarn"):
                facts.append(f"{self.check_admin(ctx, current)} logs in (for `rotator reconcile`)")
        return facts

    def _repair_admin(self, ctx: RotationContext, step: str, current: Credential) -> DatabaseLogin:
        """The admin that reconcile logs in as, or a StepRefused saying exactly what to add."""
        return SECRET.repair_admin(ctx, step, current, self.options.admin_secret_id)

    # -- alternating-users -----------------------------------------------------------------------------------

    def _stage_alternating(self, ctx: RotationContext, current: Credential, pending: Credential) -> None:
        cur = SECRET.login(ctx, "stage", current, "CURRENT")
        new = SECRET.login(ctx, "stage", pending, "PENDING")
        if new.user == cur.user:
            raise StepRefused(
                f"plan {ctx.plan_id}: stage: PENDING names CURRENT's own role {cur.user!r}; alternating-users "
                "stages the other role and never changes CURRENT's password\n  fix: discard the PENDING version "
                "and rotate again",
                plan_id=ctx.plan_id,
                step="stage",
            )
        suffix = self.options.clone_suffix
        pending_is_clone = new.user == cur.user + suffix
        original = cur.user if pending_is_clone else new.user
        admin = self._admin_login(ctx, "stage", current, new)
        with self._session(ctx, "stage", admin, pooled=True) as conn:
            if self._role_exists(conn, new.user):
                if pending_is_clone and not self._is_member(conn, new.user, original):
                    conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(original), sql.Identifier(new.user)))
                self._set_password(conn, new.user, new.password)
                return
            if not pending_is_clone:
                raise StepError(
                    f"plan {ctx.plan_id}: stage: role {new.user!r} does not exist at {admin.where}, and CURRENT's "
                    f"role {cur.user!r} is its clone; a clone cannot recreate the original's privileges\n  fix: "
                    f"recreate role {new.user!r} with its grants, or store {cur.user!r}'s value without the "
                    f"{suffix!r} suffix",
                    plan_id=ctx.plan_id,
                    step="stage",
                )
            try:
                conn.execute(
                    sql.SQL("CREATE ROLE {} LOGIN IN ROLE {} PASSWORD {}").format(
                        sql.Identifier(new.user), sql.Identifier(original), self._verifier(conn, new.user, new.password)
                    )
                )
            except psycopg.errors.DuplicateObject:  # created since we looked: converge on the password
                self._set_password(conn, new.user, new.password)

    def _admin_login(
        self, ctx: RotationContext, step: str, current: Credential, target: DatabaseLogin
    ) -> DatabaseLogin:
        """The admin secret (option admin_secret_id, else CURRENT's masterarn), connecting to the target's database.

        As AWS's multi-user sample: the admin's host must be the target's host; the database is the target's.
        """
        secret_id = self.options.admin_secret_id or SECRET.masterarn(ctx, step, current)
        return SECRET.admin_login(ctx, step, secret_id, target)

    def _other_user(self, ctx: RotationContext, step: str, username: str) -> str:
        suffix = self.options.clone_suffix
        other = username[: -len(suffix)] if username.endswith(suffix) else username + suffix
        if not other or len(other.encode()) > NAMEDATALEN:
            raise StepError(
                f"plan {ctx.plan_id}: {step}: cannot derive the alternate of role {username!r} with suffix "
                f"{suffix!r} (PostgreSQL role names are 1 to {NAMEDATALEN} bytes)\n  fix: use a shorter username "
                "or clone_suffix",
                plan_id=ctx.plan_id,
                step=step,
            )
        return other

    # -- SQL helpers -----------------------------------------------------------------------------------------

    def _verifier(self, conn: psycopg.Connection[Any], user: str, password: str) -> sql.Literal:
        # The password is salted and hashed here, on the client. Only this SCRAM verifier goes to the server: the
        # plaintext never appears in the server log (log_statement), in pg_stat_statements or pg_stat_activity,
        # nor in any proxy's query log. An ASCII password is hashed by the keyring, which keeps the keys for the
        # test login (postgres_connections.py); another one by libpq (PQencryptPasswordConn), which SASLpreps it.
        verifier = self._keyring.verifier(user, password)
        if verifier is None:
            verifier = conn.pgconn.encrypt_password(password.encode(), user.encode(), b"scram-sha-256").decode()
        return sql.Literal(verifier)

    def _set_password(self, conn: psycopg.Connection[Any], user: str, password: str) -> None:
        conn.execute(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(user), self._verifier(conn, user, password))
        )

    @staticmethod
    def _role_exists(conn: psycopg.Connection[Any], user: str) -> bool:
        return conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (user,)).fetchone() is not None

    @staticmethod
    def _is_member(conn: psycopg.Connection[Any], member: str, group: str) -> bool:
        row = conn.execute(
            """SELECT 1 FROM pg_auth_members m
                 JOIN pg_roles g ON g.oid = m.roleid
                 JOIN pg_roles u ON u.oid = m.member
                WHERE g.rolname = %s AND u.rolname = %s""",
            (group, member),
        ).fetchone()
        return row is not None

    # -- connections and the error boundary ------------------------------------------------------------------

    def _logs_in(self, ctx: RotationContext, step: str, login: DatabaseLogin) -> bool:
        """Whether `login` is accepted (``SELECT 1``). Only a refused credential is False; other errors raise."""
        try:
            with self._session(ctx, step, login) as conn:
                conn.execute("SELECT 1")
        except AuthenticationFailed:
            return False
        return True

    @contextlib.contextmanager
    def _session(
        self,
        ctx: RotationContext,
        step: str,
        login: DatabaseLogin,
        *,
        auth_error: type[StepError] = AuthenticationFailed,
        fix: str | None = None,
        pooled: bool = False,
    ) -> Iterator[psycopg.Connection[Any]]:
        """A connection as `login`, closed afterwards (`pooled`: an admin's, kept for the next rotation on the same
        server). The one place where psycopg errors become ours.

        A failure to connect (refused, unreachable, login refused) sent nothing: it is raised as its NotApplied
        kind, so the engine knows the step changed nothing at the server and needs no compensation. A failure
        after the connection was open may have changed something, and is raised as it is."""

        def connect() -> psycopg.Connection[Any]:
            try:
                return self._connect(login)
            except (psycopg.Error, OSError) as exc:
                mapped = self._map_error(ctx, step, login, exc, auth_error=auth_error, fix=fix)
                raise as_not_applied(mapped) from (None if self._leaks(exc, login) else exc)

        if pooled:
            key = (login.host, login.port, login.dbname, login.user, login.password, login.ssl)
            try:
                with self._admin_pool.connection(key, connect) as (conn, _reused):
                    yield conn
            except (psycopg.Error, OSError) as exc:
                raise self._map_error(ctx, step, login, exc, auth_error=auth_error, fix=fix) from (
                    None if self._leaks(exc, login) else exc
                )
            return
        conn = connect()
        try:
            with conn:
                yield conn
        except (psycopg.Error, OSError) as exc:
            raise self._map_error(ctx, step, login, exc, auth_error=auth_error, fix=fix) from (
                None if self._leaks(exc, login) else exc
            )

    def _connect(self, login: DatabaseLogin) -> psycopg.Connection[Any]:
        """A new connection. For a password whose verifier this process made, libpq 18 logs in with its SCRAM
        keys instead of deriving them again (postgres_connections.py); refused so, the password is tried."""
        args = self._connect_args(login)
        keys = self._keyring.keys(login.user, login.password)
        if keys is None:
            return psycopg.connect(**args)
        try:
            return psycopg.connect(**args, scram_client_key=keys.client_key, scram_server_key=keys.server_key)
        except psycopg.OperationalError:
            # Another verifier may be in place (a stage repeated elsewhere): the password decides, as a consumer's.
            self._keyring.forget(login.user, login.password)
            return psycopg.connect(**args)

    def _connect_args(self, login: DatabaseLogin) -> dict[str, Any]:
        # Keyword arguments, never a DSN string holding the password (it could end up in a log or a message).
        sslmode = self.options.sslmode or SSLMODE_FOR[ssl_choice(login.ssl)]
        args: dict[str, Any] = {
            "host": login.host,
            "port": login.port,
            "user": login.user,
            "password": login.password,
            "dbname": login.dbname,
            # Sent in the startup packet: no extra round trip, and a lock on pg_authid cannot hang a step.
            "options": f"-c statement_timeout={int(self.options.statement_timeout * 1000)}",
            "connect_timeout": self.options.connect_timeout,
            "sslmode": sslmode,
            "application_name": APPLICATION_NAME,
            "autocommit": True,
        }
        if self._sslrootcert:
            args["sslrootcert"] = self._sslrootcert
        elif sslmode == "verify-full" and psycopg.pq.version() >= 160000:
            args["sslrootcert"] = "system"  # the OS trust store (libpq 16+), like AWS's samples
        return args

    @staticmethod
    def _leaks(exc: BaseException, login: DatabaseLogin) -> bool:
        """Whether the original error's text holds the password (then it is not chained)."""
        return bool(login.password) and login.password in str(exc)

    def _map_error(
        self,
        ctx: RotationContext,
        step: str,
        login: DatabaseLogin,
        exc: BaseException,
        *,
        auth_error: type[StepError],
        fix: str | None,
    ) -> RotatorError:
        reason = _message(exc).replace(login.password, "[REDACTED]") if login.password else _message(exc)
        head = f"plan {ctx.plan_id}: {step}: as user {login.user!r} ({login.what}) at {login.where}: {reason}"
        sqlstate = getattr(exc, "sqlstate", None)
        lowered = str(exc).lower()
        if (
            sqlstate in ("28P01", "28000")
            or any(marker in lowered for marker in _AUTH_MARKERS)
            # at connect time (no SQLSTATE from libpq) with trust or md5 in pg_hba: the role is unknown
            or (sqlstate is None and 'role "' in lowered and "does not exist" in lowered)
        ):
            hint = fix or f"check that {login.what} holds the role's password at {login.where}"
            return auth_error(f"{head}\n  fix: {hint}", plan_id=ctx.plan_id, step=step)
        if (
            isinstance(exc, OSError)
            or (sqlstate or "").startswith("08")
            or sqlstate in _TRANSIENT_SQLSTATES
            or (sqlstate is None and any(marker in lowered for marker in _TRANSIENT_MARKERS))
        ):
            return TransientError(f"{head} (may pass on its own; retried)")
        if sqlstate == "42501":
            hint = fix or (
                f"grant {login.user!r} what this step needs (see the docstring of rotator_plugins.rotation.postgres): "
                "CREATEROLE for alternating-users, and on PostgreSQL 16+ ADMIN OPTION on the rotated roles"
            )
            return StepError(f"{head}\n  fix: {hint}", plan_id=ctx.plan_id, step=step)
        text = f"{head}\n  fix: {fix}" if fix else head
        return StepError(text, plan_id=ctx.plan_id, step=step)

    # -- checks (the secret's JSON is read by SECRET; the checks the database plugins share: database_checks) ---

    def _check_strategy(self, ctx: RotationContext, step: str) -> None:
        check_strategy(
            ctx, step, plugin="postgres", strategies=self.strategies, fix=f"use one of {', '.join(self.strategies)}"
        )

    def unverified_tls(self) -> str | None:
        """Why this plugin's connections may not verify the server's certificate, or None when they do: an optional
        method that `rotator validate` asks (a warning per plan; an error with [rotator] require_verified_tls)."""
        return unverified_tls_reason(
            "sslmode",
            self.options.sslmode,
            verified=("verify-ca", "verify-full"),
            unset="true gives verify-full, but false gives no TLS and absent (or any other value) gives prefer, TLS "
            "without a certificate check that falls back to plain text",
            use="verify-full",
            ca_option="sslrootcert",
        )
