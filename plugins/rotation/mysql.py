"""MySQL and MariaDB passwords, rotated as AWS's rotation samples do, with the same secret JSON.

The secret: ``{"engine": "mysql" | "mariadb", "host", "port", "username", "password", "dbname", "masterarn", "ssl"}``
(``port`` defaults to 3306; ``dbname`` is optional and only used by `test`; ``masterarn`` only for
alternating-users; ``ssl`` optional). Whether the server is MariaDB or MySQL is read from the server's handshake,
not from ``engine``: the SQL differs between the two (see below).

Strategies:

- **single-user**: the user changes its own password at `stage`. The old password stops working at that moment,
  so a client that has not yet read the new one fails to log in until it does (a short window: state it in your
  runbook, or use alternating-users). Sessions already open stay open: MySQL checks a password only at login.
- **alternating-users**: two accounts, ``app`` and ``app_clone`` (the ``clone_suffix`` option), both at host
  ``host_pattern`` (default ``%``). The clone is created on first use by the admin secret named by ``masterarn``,
  with the original's grants replayed from ``SHOW GRANTS`` (the grantee rewritten), and the original's TLS
  requirement (``REQUIRE SSL | X509 | SUBJECT/ISSUER/CIPHER``) and resource limits read from ``mysql.user``. Each
  rotation sets a new password on the account that is *not* CURRENT; there is no window. `revoke` gives the
  previous account a random password that is never stored.

User names: at most 32 characters on MySQL (5.7.8 and later), 128 on MariaDB (10.6 and later; 80 before), checked
when the clone's name is derived and again by the server (error 1470 becomes a StepError that says so).

What reaches the server. Passwords are always bound as parameters, never formatted into SQL; account names are
quoted by one function, `quote_identifier`. Still, ``IDENTIFIED BY 'plaintext'`` would put the password into the
server's logs on MariaDB: MariaDB writes statements to the general query log as received, and ``CREATE USER ...
IDENTIFIED BY`` even to the binary log, in clear (checked on 10.11). So on MariaDB the plugin computes the
mysql_native_password hash (``*`` + SHA1(SHA1(password)), upper-case hex) on the client and sends only that
(``IDENTIFIED BY PASSWORD '*...'``, ``SET PASSWORD = '*...'``), the value the server stores anyway; the plaintext
never leaves this process except inside the login handshake, which never carries it either. MySQL (5.6 and later)
rewrites passwords out of its general, slow and binary logs itself, and has no portable way to send a hash
(``IDENTIFIED BY PASSWORD`` is gone in 8.0), so there the plaintext is bound into ``IDENTIFIED BY`` and travels
over the connection (use TLS: the secret's ``"ssl": true``). A MariaDB account with another plugin (ed25519,
parsec) gets ``SET PASSWORD ... = PASSWORD(?)``, which MariaDB 10.4+ hashes with the account's own plugin; that
one call carries the plaintext (MariaDB rewrites it to the hash in the binary log, not in the general log).

Least-privilege grants, read from the SQL each method runs (see their docstrings):

- single-user: nothing. Every account may change its own password (MariaDB: ``SET PASSWORD``; MySQL:
  ``ALTER USER CURRENT_USER()``). On MariaDB it also runs ``SHOW CREATE USER CURRENT_USER()``, allowed to anyone.
- alternating-users: the admin needs ``CREATE USER``, ``SELECT`` on ``mysql.*`` (``mysql.user`` and
  ``SHOW GRANTS FOR`` another account), and every privilege the original holds ``WITH GRANT OPTION`` (roles: ``WITH
  ADMIN OPTION``; MariaDB's ``PROXY``: a proxy grant with GRANT OPTION), to replay them on the clone. AWS RDS's
  master user has all of these.
- `in_use` (alternating-users) reads ``information_schema.PROCESSLIST`` as the admin; it needs ``PROCESS``.

Not copied to the clone: default roles on MySQL 8 (kept in ``mysql.default_roles``, not in ``SHOW GRANTS``; MariaDB's
``SET DEFAULT ROLE`` lines are replayed), password expiry and locking policies, and the authentication plugin: the
clone gets the server's default (MySQL) or mysql_native_password (MariaDB). Privileges revoked from the original
later are not revoked from an existing clone (grants are replayed, never diffed): revoke them from both.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import ssl
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

import pymysql
from msgspec import Meta
from rotator_plugins.rotation.database_checks import (
    ca_bundle_path,
    check_same_account,
    check_strategy,
    unverified_tls_reason,
)
from rotator_plugins.rotation.database_secret import DatabaseLogin, SecretShape, ssl_choice

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
    register_secret,
    scrub,
)

SINGLE_USER = "single-user"
ALTERNATING_USERS = "alternating-users"
DEFAULT_PORT = 3306
# Longest user names the servers keep, in characters: MySQL 5.7.8+ (32); MariaDB 10.6+ (128, MDEV-24312).
MAX_USER_LENGTH = {"mysql": 32, "aurora-mysql": 32, "aurora": 32, "mariadb": 128}
ENGINES = frozenset(MAX_USER_LENGTH)

SslMode = Literal["disabled", "preferred", "required", "verify_ca", "verify_identity"]
# How this plugin reads the secret's JSON (CURRENT, PENDING, PREVIOUS and the admin secret named by masterarn).
SECRET = SecretShape(
    engine_name="mysql or mariadb",
    engines=ENGINES,
    required=("host", "username", "password"),
    missing_fix='store a value with "engine", "host", "port", "username" and "password" (as AWS\'s rotation samples)',
    default_port=DEFAULT_PORT,
    admin_rights="create and alter the two users",
    reset_rights="alter the user (CREATE USER, or UPDATE on mysql.*)",
)

# Error codes (MySQL's and MariaDB's errmsg lists; CR_* are the client's, which PyMySQL reuses).
_AUTH_CODES = frozenset(
    {
        1044,  # ER_DBACCESS_DENIED_ERROR: logged in, but not allowed into the named database
        1045,  # ER_ACCESS_DENIED_ERROR: wrong password or no such account
        1130,  # ER_HOST_NOT_PRIVILEGED: no account for this client host
        1698,  # ER_ACCESS_DENIED_NO_PASSWORD_ERROR
        1862,  # ER_MUST_CHANGE_PASSWORD_LOGIN: the password has expired
        3118,  # ER_ACCOUNT_HAS_BEEN_LOCKED (MySQL)
        4151,  # ER_ACCOUNT_HAS_BEEN_LOCKED (MariaDB)
    }
)
_TRANSIENT_CODES = frozenset(
    {
        1040,  # ER_CON_COUNT_ERROR: too many connections
        1053,  # ER_SERVER_SHUTDOWN
        1205,  # ER_LOCK_WAIT_TIMEOUT
        1213,  # ER_LOCK_DEADLOCK
        1927,  # ER_CONNECTION_KILLED (MariaDB)
        2002,  # CR_CONNECTION_ERROR
        2003,  # CR_CONN_HOST_ERROR: refused, unreachable, timed out
        2006,  # CR_SERVER_GONE_ERROR
        2013,  # CR_SERVER_LOST: reset, or a read timed out
        2055,  # CR_SERVER_LOST_EXTENDED
        4031,  # ER_CLIENT_INTERACTION_TIMEOUT (MySQL 8)
    }
)
_PRIVILEGE_CODES = frozenset({1142, 1143, 1227, 1410, 1044})  # command/column denied, need privilege, grant denied
# In a connection error's text (which also names the host, so no bare "ssl" or "tls"): a TLS problem, not the network.
_TLS_MARKERS = ("[ssl", "ssl:", "certificate", "tlsv1", "handshake", "wrong version number")


class MySQLOptions(Options):
    """The plugin's options (the plan's plugin table minus `type`)."""

    connect_timeout: Annotated[int, Meta(ge=1, le=300, description="seconds to connect and log in")] = 5
    statement_timeout: Annotated[float, Meta(gt=0, le=3600, description="seconds to wait for any one reply")] = 30.0
    ssl_mode: (
        Annotated[
            SslMode,
            Meta(
                description="as the mysql client's --ssl-mode; default from the secret's \"ssl\" as AWS's samples: "
                "true -> verify_identity, false -> disabled, absent -> preferred"
            ),
        ]
        | None
    ) = None
    ssl_ca: (
        Annotated[str, Meta(description="CA bundle (PEM) for verify_ca/verify_identity, relative to the config")] | None
    ) = None
    clone_suffix: Annotated[str, Meta(min_length=1, max_length=32)] = "_clone"
    host_pattern: Annotated[
        str,
        Meta(
            min_length=1, max_length=255, description="host part of the alternating accounts ('app'@'<host_pattern>')"
        ),
    ] = "%"
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


@dataclass
class _Db:
    """An open session: the connection, and whether the server is MariaDB (whose SQL differs)."""

    conn: pymysql.connections.Connection
    mariadb: bool

    def run(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement. `params` are always passed (even empty), so PyMySQL always %-formats: every literal
        '%' in `statement` must be written '%%' (the identifiers from `account_sql` already are)."""
        with self.conn.cursor() as cur:
            cur.execute(statement, tuple(params))
            return list(cur.fetchall())


# -- quoting and SQL text (pure functions, unit-tested) -------------------------------------------------------


def quote_identifier(name: str) -> str:
    """`name` as a MySQL quoted identifier: in backticks, with every backtick inside doubled.

    The only way this module puts a name into SQL. Inside backticks nothing else is special (not quotes, not
    backslashes, whatever the sql_mode), so any name round-trips. NUL cannot be stored in a name: refused.
    """
    if "\0" in name:
        raise ValueError("a MySQL name cannot contain NUL")
    return "`" + name.replace("`", "``") + "`"


def quote_account(user: str, host: str) -> str:
    """An account name, ``user@host``, both parts quoted by `quote_identifier`."""
    return f"{quote_identifier(user)}@{quote_identifier(host)}"


def account_sql(user: str, host: str) -> str:
    """`quote_account` ready to be put into a statement run with parameters (PyMySQL %-formats it: '%' doubled)."""
    return quote_account(user, host).replace("%", "%%")


def native_password_hash(password: str) -> str:
    """The mysql_native_password hash MariaDB and MySQL store: ``*`` + upper-case hex of SHA1(SHA1(password))."""
    return "*" + hashlib.sha1(hashlib.sha1(password.encode("utf-8")).digest()).hexdigest().upper()  # noqa: S324


def tls_and_limits_clause(row: Sequence[Any]) -> tuple[str, tuple[Any, ...]]:
    """``REQUIRE ... WITH ...`` for ALTER USER, from mysql.user's (ssl_type, ssl_cipher, x509_issuer, x509_subject,
    max_questions, max_updates, max_connections, max_user_connections). Values are returned as parameters."""

    def text(value: Any) -> str:
        return value.decode("utf-8") if isinstance(value, (bytes, bytearray)) else str(value or "")

    ssl_type, cipher, issuer, subject = (text(v) for v in row[:4])
    params: list[Any] = []
    kind = ssl_type.upper()
    if kind == "ANY":
        require = "REQUIRE SSL"
    elif kind == "X509":
        require = "REQUIRE X509"
    elif kind == "SPECIFIED":
        parts = []
        for keyword, value in (("SUBJECT", subject), ("ISSUER", issuer), ("CIPHER", cipher)):
            if value:
                parts.append(f"{keyword} %s")
                params.append(value)
        require = "REQUIRE " + " AND ".join(parts) if parts else "REQUIRE X509"
    elif kind == "":
        require = "REQUIRE NONE"
    else:
        raise ValueError(f"unknown ssl_type {ssl_type!r} in mysql.user")
    limits = []
    for keyword, value in zip(
        ("MAX_QUERIES_PER_HOUR", "MAX_UPDATES_PER_HOUR", "MAX_CONNECTIONS_PER_HOUR", "MAX_USER_CONNECTIONS"),
        row[4:8],
        strict=True,
    ):
        limits.append(f"{keyword} %s")
        params.append(int(value or 0))
    return f"{require} WITH {' '.join(limits)}", tuple(params)


_TOKEN = re.compile(
    r"""
      (?P<bq>`(?:[^`]|``)*`)
    | (?P<sq>'(?:[^'\\]|\\.|'')*')
    | (?P<dq>"(?:[^"\\]|\\.|"")*")
    | (?P<word>[A-Za-z0-9_$]+)
    | (?P<space>\s+)
    | (?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)


@dataclass(frozen=True)
class _Tok:
    kind: str
    text: str
    start: int
    depth: int  # parenthesis depth

    def word(self) -> str:
        return self.text.upper() if self.kind == "word" else ""


def _tokens(line: str) -> list[_Tok]:
    out: list[_Tok] = []
    depth = 0
    for match in _TOKEN.finditer(line):
        kind = match.lastgroup or "other"
        text = match.group()
        if kind == "space":
            continue
        if text == ")":
            depth -= 1
        out.append(_Tok(kind, text, match.start(), depth))
        if text == "(":
            depth += 1
    return out


def _unquote(tok: _Tok) -> str:
    body = tok.text
    if tok.kind == "bq":
        return body[1:-1].replace("``", "`")
    if tok.kind in ("sq", "dq"):
        q = body[0]
        inner = body[1:-1].replace(q + q, q)
        return re.sub(
            r"\\(.)", lambda m: {"n": "\n", "t": "\t", "0": "\0", "r": "\r"}.get(m.group(1), m.group(1)), inner
        )
    return body


def rewrite_grant(line: str, original: tuple[str, str], clone: tuple[str, str]) -> str | None:
    """One line of ``SHOW GRANTS FOR original`` as the same statement for `clone`, or None when there is nothing
    to replay (``GRANT USAGE ON *.*``: TLS requirement and limits are copied from mysql.user instead).

    Handles ``GRANT ... TO <acct> [IDENTIFIED BY PASSWORD ...] [REQUIRE ...] [WITH ...]`` (privileges, roles,
    PROXY), MySQL's partial ``REVOKE ... FROM <acct>`` and MariaDB's ``SET DEFAULT ROLE r FOR <acct>``. Only WITH
    GRANT OPTION and WITH ADMIN OPTION survive from the tail: the original's password hash never does. Raises
    ValueError for a line it does not understand or whose grantee is not `original`.
    """
    toks = _tokens(line)
    if not toks:
        raise ValueError("empty grant line")
    verb = toks[0].word()
    keyword = {"GRANT": "TO", "REVOKE": "FROM", "SET": "FOR"}.get(verb)
    if keyword is None:
        raise ValueError(f"unexpected statement {verb or toks[0].text!r} in SHOW GRANTS")
    start = 1
    if verb in ("GRANT", "REVOKE"):
        on = next((i for i, t in enumerate(toks) if t.depth == 0 and t.word() == "ON"), None)
        start = on + 1 if on is not None else 1
    elif [t.word() for t in toks[:3]] != ["SET", "DEFAULT", "ROLE"]:
        raise ValueError("unexpected SET statement in SHOW GRANTS")
    at = next((i for i in range(start, len(toks)) if toks[i].depth == 0 and toks[i].word() == keyword), None)
    if at is None or at + 1 >= len(toks):
        raise ValueError(f"no {keyword} clause in the grant")
    user_tok = toks[at + 1]
    if user_tok.kind not in ("bq", "sq", "dq", "word"):
        raise ValueError("cannot read the grantee")
    grantee = (_unquote(user_tok), "%")
    tail_from = at + 2
    if tail_from < len(toks) and toks[tail_from].text == "@":
        if tail_from + 1 >= len(toks):
            raise ValueError("cannot read the grantee's host")
        grantee = (grantee[0], _unquote(toks[tail_from + 1]))
        tail_from += 2
    if grantee != original:
        raise ValueError("the grantee is not the original account")
    tail = [t.word() for t in toks[tail_from:]]
    suffix = "".join(
        f" WITH {option} OPTION"
        for option in ("GRANT", "ADMIN")
        if any(tail[i : i + 2] == [option, "OPTION"] for i in range(len(tail)))
    )
    privileges = [t.word() for t in toks[1 : start - 1]] if verb == "GRANT" else []
    if privileges == ["USAGE"] and not suffix:
        return None
    return f"{line[: toks[at].start].rstrip()} {keyword} {quote_account(*clone)}{suffix}"


# -- the plugin -------------------------------------------------------------------------------------------------


class MySQLPlugin:
    """Rotates a MySQL/MariaDB account's password (single-user) or alternates between an account and its clone."""

    strategies = (SINGLE_USER, ALTERNATING_USERS)

    def __init__(self, options: Mapping[str, Any] | None = None, setup: ComponentSetup | None = None) -> None:
        self.options = parse_options(MySQLOptions, options)
        self._ssl_contexts: dict[str, ssl.SSLContext] = {}
        self.setup = setup
        self._ssl_ca = ca_bundle_path(setup, self.options.ssl_ca, option="ssl_ca")

    # -- the RotationPlugin protocol -------------------------------------------------------------------------

    def create(self, ctx: RotationContext, current: Credential) -> dict[str, Any]:
        """Return CURRENT's value with a new generated password (and, alternating, the other account's name).

        No SQL: the engine stores the value as PENDING before `stage` applies it. Alternating: refuses (StepError)
        a clone name longer than the engine's limit (32 characters on MySQL, 128 on MariaDB).
        """
        self._check_strategy(ctx, "create")
        login = SECRET.login(ctx, "create", current, "CURRENT")
        value = dict(current.value)
        if ctx.strategy == ALTERNATING_USERS:
            value["username"] = self._other_user(ctx, "create", login.user, current.get("engine"))
            # The admin secret is read (and checked) here, before anything is stored or applied: a missing one
            # fails the run at once, with the fix, instead of at stage.
            self._admin_login(ctx, "create", current, login)
        value["password"] = generate_password(ctx.password_policy)
        return value

    def stage(self, ctx: RotationContext, current: Credential, pending: Credential) -> None:
        """Make PENDING's password valid. Idempotent.

        single-user: logs in with CURRENT and changes its own password. MariaDB: ``SHOW CREATE USER
        CURRENT_USER()`` (to see the account's plugin), then ``SET PASSWORD = '<native hash>'`` (or ``SET PASSWORD
        = PASSWORD(?)`` for another plugin). MySQL: ``ALTER USER CURRENT_USER() IDENTIFIED BY ?``. CURRENT stops
        working here. If CURRENT is refused, logs in with PENDING (``SELECT 1``): if that works the stage was done
        before (a repeat after a crash); else, as AWS's sample, logs in with PREVIOUS (the plan's own secret,
        ``ctx.read_stage``) and changes the password from there; else the AuthenticationFailed stands.

        alternating-users: logs in as the admin (``masterarn``) and runs
        ``SELECT plugin FROM mysql.user WHERE user = ? AND host = ?`` for PENDING's account, then either
        ``CREATE USER <clone>@<host> IDENTIFIED BY PASSWORD '<native hash>'`` (MariaDB; MySQL:
        ``IDENTIFIED BY ?``) on first use, or ``ALTER USER <pending>@<host> IDENTIFIED BY PASSWORD '<hash>'``
        (MySQL: ``IDENTIFIED BY ?``). When PENDING is the clone it then copies the original, every time (so a
        half-made clone converges): ``SELECT ssl_type, ssl_cipher, x509_issuer, x509_subject, max_questions,
        max_updates, max_connections, max_user_connections FROM mysql.user WHERE user = ? AND host = ?``,
        ``ALTER USER <clone> REQUIRE ... WITH MAX_... ?``, ``SHOW GRANTS FOR <original>`` and each grant line
        rewritten for the clone (``GRANT ... TO <clone>``, ``SET DEFAULT ROLE ... FOR <clone>``). CURRENT's
        account is never touched.
        """
        self._check_strategy(ctx, "stage")
        if ctx.strategy == ALTERNATING_USERS:
            self._stage_alternating(ctx, current, pending)
            return
        new = SECRET.login(ctx, "stage", pending, "PENDING")
        old = SECRET.login(ctx, "stage", current, "CURRENT")
        check_same_account(ctx, "stage", old, new)
        fix = (
            f"the account's password is neither the store's CURRENT nor PENDING value: set user {old.user!r} at "
            f"{old.where} to the CURRENT value (or store the working password as CURRENT), then run again"
        )
        # CURRENT first: on the normal path that is the only login, and no refused login counts against the
        # account (MySQL's FAILED_LOGIN_ATTEMPTS, MariaDB's max_password_errors). Only when CURRENT is refused
        # is PENDING tried: a stage repeated after a crash.
        try:
            with self._session(ctx, "stage", old, fix=fix, secrets=(new.password,)) as db:
                self._set_own_password(db, new.password)
        except AuthenticationFailed:
            if self._logs_in(ctx, "stage", new):
                return
            # As AWS's sample: the account may still have PREVIOUS's password (a restored database, a rotation
            # undone by hand). Log in with it and stage from there; it is overwritten, so nothing stays valid.
            previous = ctx.read_stage(Stage.PREVIOUS)
            if previous is None:
                raise
            prev = SECRET.login(ctx, "stage", previous, "PREVIOUS")
            if prev.user != old.user or not self._logs_in(ctx, "stage", prev):
                raise
            with self._session(ctx, "stage", prev, fix=fix, secrets=(new.password,)) as db:
                self._set_own_password(db, new.password)

    def test(self, ctx: RotationContext, pending: Credential) -> None:
        """Log in with PENDING over the network (into ``dbname`` when the secret names one) and run ``SELECT 1``.

        A refused login raises TestFailed; a connection failure TransientError (the engine may retry).
        """
        self._check_strategy(ctx, "test")
        login = SECRET.login(ctx, "test", pending, "PENDING")
        with self._session(ctx, "test", login, auth_error=TestFailed, use_db=True) as db:
            rows = db.run("SELECT 1")
        if not rows or rows[0][0] != 1:
            raise TestFailed(
                f"plan {ctx.plan_id}: test: SELECT 1 as user {login.user!r} at {login.where} returned {rows!r}",
                plan_id=ctx.plan_id,
                step="test",
            )

    def revoke(self, ctx: RotationContext, previous: Credential, current: Credential) -> None:
        """Invalidate PREVIOUS at the target, never CURRENT.

        single-user: no SQL. PREVIOUS's password stopped working at `stage`, when the same account got CURRENT's
        password. Refuses (StepError) if PREVIOUS names another user than CURRENT, which single-user never does.

        alternating-users: logs in as the admin, runs ``SELECT plugin FROM mysql.user WHERE user = ? AND host =
        ?`` and, if the account exists, ``ALTER USER <previous>@<host> IDENTIFIED BY PASSWORD '<hash>'`` (MySQL:
        ``IDENTIFIED BY ?``) with a fresh random password that is neither returned nor stored, so nobody can log in
        as that account until the next rotation stages it again. Nothing to do when PREVIOUS and CURRENT name the
        same account. Sessions that PREVIOUS already has open are not closed (MySQL checks passwords at login).
        """
        self._check_strategy(ctx, "revoke")
        prev = SECRET.login(ctx, "revoke", previous, "PREVIOUS")
        cur = SECRET.login(ctx, "revoke", current, "CURRENT")
        if ctx.strategy == SINGLE_USER:
            if prev.user != cur.user:
                raise StepError(
                    f"plan {ctx.plan_id}: revoke: PREVIOUS names user {prev.user!r} but CURRENT names {cur.user!r}; "
                    f"single-user rotation never changes the user, so this plugin will not touch {prev.user!r}\n"
                    f"  fix: revoke {prev.user!r} at {prev.where} by hand if it is no longer used, or rotate it "
                    "with alternating-users",
                    plan_id=ctx.plan_id,
                    step="revoke",
                )
            return
        if prev.user == cur.user:
            return
        admin = self._admin_login(ctx, "revoke", current, prev)
        unknown = generate_password(ctx.password_policy)
        register_secret(unknown)
        with self._session(ctx, "revoke", admin, secrets=(unknown,)) as db:
            plugin = self._account_plugin(db, prev.user)
            if plugin is not None:
                self._set_password(db, prev.user, unknown, plugin)

    def unstage(self, ctx: RotationContext, current: Credential, pending: Credential) -> None:
        """Roll back `stage`: CURRENT logs in again and PENDING does not. Idempotent.

        single-user: logs in with CURRENT (``SELECT 1``); if that works, done (an account has one password, so
        PENDING cannot). Else logs in with PENDING and sets its own password back to CURRENT's, with the same SQL
        as `stage`.

        alternating-users: logs in as the admin, runs ``SELECT plugin FROM mysql.user WHERE user = ? AND host = ?``
        for PENDING's account and, if it exists, ``ALTER USER <pending>@<host> IDENTIFIED BY PASSWORD '<hash>'``
        (MySQL: ``IDENTIFIED BY ?``) with a fresh random password that is never stored. The clone is kept.
        """
        self._check_strategy(ctx, "unstage")
        old = SECRET.login(ctx, "unstage", current, "CURRENT")
        new = SECRET.login(ctx, "unstage", pending, "PENDING")
        if ctx.strategy == ALTERNATING_USERS:
            admin = self._admin_login(ctx, "unstage", current, new)
            unknown = generate_password(ctx.password_policy)
            register_secret(unknown)
            with self._session(ctx, "unstage", admin, secrets=(unknown, new.password, old.password)) as db:
                plugin = self._account_plugin(db, new.user)
                if plugin is None:
                    return
                if new.user == old.user:  # a broken PENDING that named CURRENT's own account: put CURRENT back
                    self._set_password(db, old.user, old.password, plugin)
                else:
                    self._set_password(db, new.user, unknown, plugin)
            return
        check_same_account(ctx, "unstage", old, new)
        if self._logs_in(ctx, "unstage", old):
            return
        fix = (
            f"neither the store's CURRENT nor PENDING password logs in as {old.user!r}: set the account's password at "
            f"{old.where} to the CURRENT value by hand (ALTER USER ... IDENTIFIED BY), then run `rotator resume`"
        )
        with self._session(ctx, "unstage", new, fix=fix, secrets=(old.password,)) as db:
            self._set_own_password(db, old.password)

    def discard(self, ctx: RotationContext, pending: Credential) -> None:
        """Roll back `create`: nothing to do, no SQL. The password was generated locally and never existed at
        the server unless `stage` ran (and `unstage` undoes that); the engine drops the PENDING version."""

    # -- optional --------------------------------------------------------------------------------------------

    def in_use(
        self, ctx: RotationContext, credential: Credential, *, since: datetime | None = None
    ) -> list[str] | None:
        """Sessions open as the credential's user: is the old credential (PREVIOUS) still in use before revoke?

        alternating-users: runs ``SELECT ID, HOST, DB, TIME FROM information_schema.PROCESSLIST WHERE USER = ? AND
        ID <> CONNECTION_ID()`` as the admin (``masterarn``; it needs PROCESS). One line per session; never a secret.
        single-user: None (unknown): old and new password belong to one account, so its sessions cannot be told
        apart, and the old password already stopped working at `stage`. `since` is not used.
        """
        self._check_strategy(ctx, "in_use")
        if ctx.strategy != ALTERNATING_USERS:
            return None
        login = SECRET.login(ctx, "in_use", credential, "the credential")
        session_login = self._admin_login(ctx, "in_use", credential, login)
        with self._session(ctx, "in_use", session_login) as db:
            rows = db.run(
                "SELECT ID, HOST, DB, TIME FROM information_schema.PROCESSLIST "
                "WHERE USER = %s AND ID <> CONNECTION_ID() ORDER BY ID",
                (login.user,),
            )
        return [
            f"session {pid} from {host or '-'} database {db_name or '-'} for {secs}s"
            for pid, host, db_name, secs in rows
        ]

    # -- drift repair (rotator reconcile) and dry runs: AdminReset, DryRunProbe ------------------------------

    def check_current(self, ctx: RotationContext, current: Credential) -> None:
        """Log in with CURRENT over the network and run ``SELECT 1``; LoginRefused when the server refuses it."""
        login = SECRET.login(ctx, "check", current, "CURRENT")
        with self._session(ctx, "check", login) as db:
            db.run("SELECT 1")

    def check_admin(self, ctx: RotationContext, current: Credential) -> str:
        """Log in as the admin (option admin_secret_id, else the secret's masterarn) and run ``SELECT 1``."""
        admin = SECRET.repair_admin(ctx, "check", current, self.options.admin_secret_id)
        with self._session(ctx, "check", admin) as db:
            db.run("SELECT 1")
        return f"admin {admin.user!r} ({admin.what}) at {admin.where}"

    def reset_value(self, ctx: RotationContext, current: Credential) -> dict[str, Any]:
        """CURRENT's value with a new generated password for the same account. No SQL; the admin secret is read
        (and must exist) first, so a plan without one fails before anything is stored."""
        SECRET.repair_admin(ctx, "reconcile", current, self.options.admin_secret_id)
        value = dict(current.value)
        value["password"] = generate_password(ctx.password_policy)
        return value

    def reset(self, ctx: RotationContext, current: Credential, target: Credential) -> None:
        """As the admin: ``SELECT plugin FROM mysql.user WHERE user = ? AND host = ?``, then ``ALTER USER
        <user>@<host> IDENTIFIED BY PASSWORD '<hash>'`` (MySQL: ``IDENTIFIED BY ?``) with `target`'s password.
        The account is CURRENT's own (`host_pattern` is its host part)."""
        login = SECRET.login(ctx, "reconcile", target, "the new value")
        admin = SECRET.repair_admin(ctx, "reconcile", current, self.options.admin_secret_id)
        with self._session(ctx, "reconcile", admin, secrets=(login.password,)) as db:
            plugin = self._account_plugin(db, login.user)
            if plugin is None:
                account = quote_account(login.user, self.options.host_pattern)
                raise StepRefused(
                    f"plan {ctx.plan_id}: reconcile: account {account} does not exist at {admin.where}\n  fix: "
                    "create it with its grants, or set the host_pattern option to the host part of its account",
                    plan_id=ctx.plan_id,
                    step="reconcile",
                )
            self._set_password(db, login.user, login.password, plugin)

    def dry_run(self, ctx: RotationContext, current: Credential) -> list[str]:
        """Changes nothing: logs in with CURRENT (``SELECT 1``); alternating-users also logs in as the admin and
        runs ``SELECT plugin FROM mysql.user WHERE user = ? AND host = ?`` for the other account."""
        self._check_strategy(ctx, "dry-run")
        login = SECRET.login(ctx, "dry-run", current, "CURRENT")
        with self._session(ctx, "dry-run", login) as db:
            db.run("SELECT 1")
        facts = [f"CURRENT logs in as user {login.user!r} at {login.where}"]
        if ctx.strategy == ALTERNATING_USERS:
            other = self._other_user(ctx, "dry-run", login.user, current.get("engine"))
            admin = self._admin_login(ctx, "dry-run", current, login)
            with self._session(ctx, "dry-run", admin) as db:
                exists = self._account_plugin(db, other) is not None
            account = quote_account(other, self.options.host_pattern)
            made = "exists" if exists else f"is created on first use with {login.user!r}'s grants"
            facts.append(f"admin {admin.user!r} ({admin.what}) logs in at {admin.where}")
            facts.append(
                f"the next rotation gives {account} ({made}) a new password; CURRENT then names {other!r}, and "
                f"{login.user!r} keeps working through grace, then gets a random password nobody knows"
            )
        else:
            facts.append(
                f"the next rotation changes user {login.user!r}'s own password at stage: clients still holding the old "
                "one cannot log in until they read the new one (the single-user window)"
            )
            if self.options.admin_secret_id or current.get("masterarn"):
                facts.append(f"{self.check_admin(ctx, current)} logs in (for `rotator reconcile`)")
        return facts

    # -- alternating-users -----------------------------------------------------------------------------------

    def _stage_alternating(self, ctx: RotationContext, current: Credential, pending: Credential) -> None:
        cur = SECRET.login(ctx, "stage", current, "CURRENT")
        new = SECRET.login(ctx, "stage", pending, "PENDING")
        if new.user == cur.user:
            raise StepRefused(
                f"plan {ctx.plan_id}: stage: PENDING names CURRENT's own user {cur.user!r}; alternating-users "
                "stages the other account and never changes CURRENT's password\n  fix: discard the PENDING version "
                "and rotate again",
                plan_id=ctx.plan_id,
                step="stage",
            )
        suffix = self.options.clone_suffix
        pending_is_clone = new.user == cur.user + suffix
        original = cur.user if pending_is_clone else new.user
        host = self.options.host_pattern
        admin = self._admin_login(ctx, "stage", current, new)
        with self._session(ctx, "stage", admin, secrets=(new.password,)) as db:
            plugin = self._account_plugin(db, new.user)
            if plugin is None:
                if not pending_is_clone:
                    raise StepError(
                        f"plan {ctx.plan_id}: stage: account {quote_account(new.user, host)} does not exist at "
                        f"{admin.where}, and CURRENT's user {cur.user!r} is its clone; a clone cannot recreate the "
                        f"original's privileges\n  fix: recreate {quote_account(new.user, host)} with its grants, or "
                        f"store {cur.user!r}'s value without the {suffix!r} suffix",
                        plan_id=ctx.plan_id,
                        step="stage",
                    )
                if self._account_plugin(db, original) is None:
                    raise StepError(
                        f"plan {ctx.plan_id}: stage: the original account {quote_account(original, host)} does not "
                        f"exist at {admin.where}, so there are no grants to copy to its clone\n  fix: set the "
                        f"host_pattern option to the host part of {original!r}'s account (now {host!r})",
                        plan_id=ctx.plan_id,
                        step="stage",
                    )
                try:
                    self._create_user(db, new.user, new.password)
                except pymysql.err.OperationalError as exc:
                    if not exc.args or exc.args[0] != 1396:  # ER_CANNOT_USER: it exists now (a race): converge
                        raise
                    self._set_password(db, new.user, new.password, self._account_plugin(db, new.user) or "")
            else:
                self._set_password(db, new.user, new.password, plugin)
            if pending_is_clone:
                self._copy_account(ctx, db, original, new.user)

    def _copy_account(self, ctx: RotationContext, db: _Db, original: str, clone: str) -> None:
        """The original's TLS requirement, resource limits and grants, onto the clone (additive, idempotent)."""
        host = self.options.host_pattern
        rows = db.run(
            "SELECT ssl_type, ssl_cipher, x509_issuer, x509_subject, max_questions, max_updates, max_connections, "
            "max_user_connections FROM mysql.user WHERE user = %s AND host = %s",
            (original, host),
        )
        if not rows:
            raise StepError(
                f"plan {ctx.plan_id}: stage: the original account {quote_account(original, host)} does not exist, so "
                f"there are no grants to copy to {quote_account(clone, host)}\n  fix: set the host_pattern option to "
                f"the host part of {original!r}'s account",
                plan_id=ctx.plan_id,
                step="stage",
            )
        clause, params = tls_and_limits_clause(rows[0])
        db.run(f"ALTER USER {account_sql(clone, host)} {clause}", params)
        for (line,) in db.run(f"SHOW GRANTS FOR {account_sql(original, host)}"):
            text = line.decode("utf-8") if isinstance(line, (bytes, bytearray)) else str(line)
            try:
                statement = rewrite_grant(text, (original, host), (clone, host))
            except ValueError as exc:
                # The line itself is not shown: MariaDB's global line carries the original's password hash.
                raise StepError(
                    f"plan {ctx.plan_id}: stage: cannot copy a grant of {quote_account(original, host)} to its clone: "
                    f"{exc} (in a line starting {text.split(' ', 1)[0]!r})\n  fix: grant it to "
                    f"{quote_account(clone, host)} by hand, then run again",
                    plan_id=ctx.plan_id,
                    step="stage",
                ) from None
            if statement is None:
                continue
            try:
                db.run(statement.replace("%", "%%"))
            except pymysql.err.MySQLError as exc:
                code = exc.args[0] if exc.args else None
                raise StepError(
                    f"plan {ctx.plan_id}: stage: copying the original's grants to its clone failed: {statement}: "
                    f"error {code}: {_text(exc)}\n  fix: the admin needs every privilege it copies WITH GRANT OPTION "
                    "(roles WITH ADMIN OPTION); grant that, or grant this to the clone by hand, then run again",
                    plan_id=ctx.plan_id,
                    step="stage",
                ) from None

    def _admin_login(
        self, ctx: RotationContext, step: str, current: Credential, target: DatabaseLogin
    ) -> DatabaseLogin:
        """The admin secret (option admin_secret_id, else CURRENT's masterarn). As AWS's samples: its host must be
        the target's host."""
        secret_id = self.options.admin_secret_id or SECRET.masterarn(ctx, step, current)
        return SECRET.admin_login(ctx, step, secret_id, target)

    def _other_user(self, ctx: RotationContext, step: str, username: str, engine: Any) -> str:
        suffix = self.options.clone_suffix
        other = username[: -len(suffix)] if username.endswith(suffix) else username + suffix
        limit = MAX_USER_LENGTH.get(str(engine or "").lower())
        if not other or (limit is not None and len(other) > limit):
            allowed = f"{engine} user names are 1 to {limit} characters" if limit else "a user name cannot be empty"
            raise StepError(
                f"plan {ctx.plan_id}: {step}: the alternate of user {username!r} with suffix {suffix!r} would be "
                f"{len(other)} characters long; {allowed}\n  fix: use a shorter username or clone_suffix",
                plan_id=ctx.plan_id,
                step=step,
            )
        return other

    # -- SQL helpers -----------------------------------------------------------------------------------------

    def _account_plugin(self, db: _Db, user: str) -> str | None:
        """The account's authentication plugin ('' when unset), or None when there is no such account."""
        rows = db.run("SELECT plugin FROM mysql.user WHERE user = %s AND host = %s", (user, self.options.host_pattern))
        if not rows:
            return None
        value = rows[0][0]
        return value.decode() if isinstance(value, (bytes, bytearray)) else str(value or "")

    def _create_user(self, db: _Db, user: str, password: str) -> None:
        target = account_sql(user, self.options.host_pattern)
        if db.mariadb:
            db.run(f"CREATE USER {target} IDENTIFIED BY PASSWORD %s", (native_password_hash(password),))
        else:
            db.run(f"CREATE USER {target} IDENTIFIED BY %s", (password,))

    def _set_password(self, db: _Db, user: str, password: str, plugin: str) -> None:
        """The admin sets another account's password (see the module docstring for what reaches the server)."""
        target = account_sql(user, self.options.host_pattern)
        if not db.mariadb:
            db.run(f"ALTER USER {target} IDENTIFIED BY %s", (password,))
        elif plugin in ("", "mysql_native_password"):
            db.run(f"ALTER USER {target} IDENTIFIED BY PASSWORD %s", (native_password_hash(password),))
        else:
            db.run(f"SET PASSWORD FOR {target} = PASSWORD(%s)", (password,))

    @staticmethod
    def _set_own_password(db: _Db, password: str) -> None:
        if not db.mariadb:
            db.run("ALTER USER CURRENT_USER() IDENTIFIED BY %s", (password,))
            return
        rows = db.run("SHOW CREATE USER CURRENT_USER()")
        definition = str(rows[0][0]) if rows else ""
        native = (
            "IDENTIFIED" not in definition
            or "IDENTIFIED BY PASSWORD '" in definition
            or "VIA mysql_native_password" in definition
        )
        if native:
            db.run("SET PASSWORD = %s", (native_password_hash(password),))
        else:
            db.run("SET PASSWORD = PASSWORD(%s)", (password,))

    # -- connections and the error boundary ------------------------------------------------------------------

    def _logs_in(self, ctx: RotationContext, step: str, login: DatabaseLogin) -> bool:
        """Whether `login` is accepted (``SELECT 1``). Only a refused credential is False; other errors raise."""
        try:
            with self._session(ctx, step, login) as db:
                db.run("SELECT 1")
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
        secrets: Sequence[str] = (),
        use_db: bool = False,
    ) -> Iterator[_Db]:
        """A connection as `login`, closed afterwards. The one place where PyMySQL's errors become ours.

        A failure to connect (refused, unreachable, login refused) sent nothing: it is raised as its NotApplied
        kind, so the engine knows the step changed nothing at the server and needs no compensation. A failure
        after the connection was open may have changed something, and is raised as it is."""
        hidden = [s for s in (login.password, *secrets) if s]
        connected = False
        try:
            conn = pymysql.connect(**self._connect_args(login, use_db))
            connected = True
            with contextlib.closing(conn):
                yield _Db(conn, "mariadb" in conn.get_server_info().lower())
        except (pymysql.err.MySQLError, OSError, RuntimeError, UnicodeError) as exc:
            mapped = self._map_error(ctx, step, login, exc, auth_error=auth_error, fix=fix, hidden=hidden)
            leaks = any(secret in repr(exc.args) for secret in hidden)
            raise (mapped if connected else as_not_applied(mapped)) from (None if leaks else exc)

    def _connect_args(self, login: DatabaseLogin, use_db: bool) -> dict[str, Any]:
        # Keyword arguments only; the password goes as UTF-8 bytes, the encoding native_password_hash assumes.
        args: dict[str, Any] = {
            "host": login.host,
            "port": login.port,
            "user": login.user,
            "password": login.password.encode("utf-8"),
            "connect_timeout": self.options.connect_timeout,
            "read_timeout": self.options.statement_timeout,
            "write_timeout": self.options.statement_timeout,
            "autocommit": True,
            "charset": "utf8mb4",
            "program_name": "rotator",
        }
        if use_db and login.dbname:
            args["database"] = login.dbname
        mode = self.options.ssl_mode or SSL_MODE_FOR[ssl_choice(login.ssl)]
        if mode == "disabled":
            args["ssl_disabled"] = True
        elif mode != "preferred":  # "preferred" is PyMySQL's default: TLS when the server offers it, unverified
            args["ssl"] = self._ssl_context(mode)
        return args

    def _ssl_context(self, mode: str) -> ssl.SSLContext:
        """One TLS context per mode for the plugin's life: loading the CA store costs ~20 ms of CPU, and a rotation
        opens several connections. A context is safe to share between connections and threads."""
        context = self._ssl_contexts.get(mode)
        if context is None:
            context = ssl.create_default_context(cafile=self._ssl_ca)
            if mode == "required":
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            elif mode == "verify_ca":
                context.check_hostname = False
            self._ssl_contexts[mode] = context
        return context

    def _map_error(
        self,
        ctx: RotationContext,
        step: str,
        login: DatabaseLogin,
        exc: BaseException,
        *,
        auth_error: type[StepError],
        fix: str | None,
        hidden: Sequence[str],
    ) -> RotatorError:
        code = exc.args[0] if isinstance(exc, pymysql.err.MySQLError) and exc.args else None
        code = code if isinstance(code, int) else None
        reason = _text(exc)
        for secret in hidden:
            reason = reason.replace(secret, "[REDACTED]")
            reason = reason.replace(native_password_hash(secret), "[REDACTED]")
        reason = scrub(reason)
        head = f"plan {ctx.plan_id}: {step}: as user {login.user!r} ({login.what}) at {login.where}: " + (
            f"error {code}: {reason}" if code else reason
        )
        lowered = reason.lower()
        if code in _AUTH_CODES:
            hint = fix or f"check that {login.what} holds the account's password at {login.where}"
            return auth_error(f"{head}\n  fix: {hint}", plan_id=ctx.plan_id, step=step)
        tls_failure = any(marker in lowered for marker in _TLS_MARKERS) and "timed out" not in lowered
        if code == 2026 or (code in (2003, 2013) and tls_failure):
            return StepError(
                f"{head}\n  fix: check the server's TLS certificate against the ssl_mode and ssl_ca options (the "
                'secret\'s "ssl": true means verify_identity with the system CA store)',
                plan_id=ctx.plan_id,
                step=step,
            )
        if code in _TRANSIENT_CODES or (code is None and isinstance(exc, OSError)):
            return TransientError(f"{head} (may pass on its own; retried)")
        if code == 1470:  # ER_WRONG_STRING_LENGTH
            return StepError(
                f"{head}\n  fix: the user name is longer than this server allows; use a shorter username or "
                "clone_suffix",
                plan_id=ctx.plan_id,
                step=step,
            )
        if code == 1129:  # ER_HOST_IS_BLOCKED
            return StepError(
                f"{head}\n  fix: the server blocked this host after connection errors: run FLUSH HOSTS (or raise "
                "max_connect_errors)",
                plan_id=ctx.plan_id,
                step=step,
            )
        if code in _PRIVILEGE_CODES:
            hint = fix or (
                f"grant {login.user!r} what this step needs (see the docstring of rotator_plugins.rotation.mysql): "
                "CREATE USER, SELECT on mysql.*, and the original's privileges WITH GRANT OPTION for alternating-users"
            )
            return StepError(f"{head}\n  fix: {hint}", plan_id=ctx.plan_id, step=step)
        text = f"{head}\n  fix: {fix}" if fix else head
        return StepError(text, plan_id=ctx.plan_id, step=step)

    # -- checks (the secret's JSON is read by SECRET; the checks the database plugins share: database_checks) ---

    def _check_strategy(self, ctx: RotationContext, step: str) -> None:
        check_strategy(
            ctx, step, plugin="mysql", strategies=self.strategies, fix=f"use one of {', '.join(self.strategies)}"
        )

    def unverified_tls(self) -> str | None:
        """Why this plugin's connections may not verify the server's certificate, or None when they do: an optional
        method that `rotator validate` asks (a warning per plan; an error with [rotator] require_verified_tls)."""
        return unverified_tls_reason(
            "ssl_mode",
            self.options.ssl_mode,
            verified=("verify_ca", "verify_identity"),
            unset="true gives verify_identity, but false gives no TLS and absent (or any other value) gives "
            "preferred, TLS without a certificate check that falls back to plain text",
            use="verify_identity",
            ca_option="ssl_ca",
        )


# The mode for each "ssl" choice. The samples, without "ssl", try a verified TLS connection and fall back to a
# plain one on any failure; "preferred" (PyMySQL's default) uses TLS when the server offers it, else plain.
SSL_MODE_FOR = {True: "verify_identity", False: "disabled", None: "preferred"}


def _text(exc: BaseException) -> str:
    """The message of a PyMySQL error (its args are (code, message)), first line only."""
    args: tuple[Any, ...] = getattr(exc, "args", ())
    if isinstance(exc, pymysql.err.MySQLError) and len(args) >= 2:
        text = str(args[1])
    else:
        text = str(exc) or type(exc).__name__
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
