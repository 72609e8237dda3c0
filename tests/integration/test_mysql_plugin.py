"""The mysql rotation plugin against a real throwaway MariaDB (tests/servers/mariadb.py).

Every password check is a TCP login to 127.0.0.1 with password auth: a wrong password really fails (error 1045).
The plugin is called directly, step by step, with a RotationContext built here; `read_secret` is a dict. The
server also speaks TLS with a throwaway CA, so `REQUIRE SSL` copied to a clone is checked by logging in, and its
general query log shows every statement as received, so the "no plaintext password at the server" rule is checked
there. No MySQL server is available here: MySQL's SQL variants are covered by the pure-function tests at the top.
"""

from __future__ import annotations

import socket
import ssl
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest
from rotator_plugins.rotation.mysql import (
    MySQLPlugin,
    account_sql,
    native_password_hash,
    quote_account,
    quote_identifier,
    rewrite_grant,
    tls_and_limits_clause,
)

from rotator.components import ComponentSetup
from rotator.errors import (
    AuthenticationFailed,
    ConfigError,
    SecretNotFound,
    StepError,
    StepRefused,
    TestFailed,
    TransientError,
)
from rotator.interfaces import RotationPlugin
from rotator.model import Credential, PasswordPolicy, RotationContext, Stage
from rotator.options import OptionsError
from tests.cli_env import CliEnv
from tests.servers.mariadb import MariaDbServer, account

PLAN = "orders-db"
ADMIN_ARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:rds-admin-AbCdEf"
# Quotes, backslashes, '%' and ';' in the password: they must survive binding, hashing and the login.
NASTY_POLICY = PasswordPolicy(length=40, exclude_characters="")
NASTY_NAMES = [
    "we`ird",
    "o'brien",
    'dq"name',
    "pct%s%%_user",
    "back\\slash",
    "semi;-- x",
    "ünï cøde",
    "TO",
]


def cred(value: dict[str, Any], stage: Stage = Stage.CURRENT) -> Credential:
    return Credential(version_id=uuid.uuid4().hex, value=value, stages=frozenset({stage}))


def make_ctx(
    strategy: str,
    secrets: dict[str, dict[str, Any]] | None = None,
    policy: PasswordPolicy | None = None,
    previous: Credential | None = None,
) -> RotationContext:
    known = dict(secrets or {})

    def read_secret(secret_id: str) -> Credential:
        if secret_id not in known:
            raise SecretNotFound(f"no secret {secret_id}")
        return cred(known[secret_id])

    return RotationContext(
        plan_id=PLAN,
        run_id=uuid.uuid4().hex,
        secret_id="prod/orders/db",
        strategy=strategy,
        options={},
        password_policy=policy or PasswordPolicy(),
        read_secret=read_secret,
        read_stage=lambda stage: previous if stage == Stage.PREVIOUS else None,
    )


@pytest.fixture
def users(mariadb_server: MariaDbServer) -> Iterator[Callable[[str], str]]:
    """Unique user names for one test (prefix + random), dropped afterwards with their clones."""
    made: list[str] = []

    def name(prefix: str) -> str:
        user = f"{prefix}_{uuid.uuid4().hex[:8]}"
        made.append(user)
        return user

    yield name
    for user in made:
        for candidate in (f"{user}_clone", user):
            mariadb_server.drop_user(candidate)


@pytest.fixture(scope="module")
def admin(mariadb_server: MariaDbServer) -> Iterator[dict[str, Any]]:
    """An admin like RDS's master user: every privilege WITH GRANT OPTION, over TCP with a password."""
    name = "rotation_admin"
    password = "admin-" + uuid.uuid4().hex
    mariadb_server.make_user(name, password)
    mariadb_server.execute(f"GRANT ALL PRIVILEGES ON *.* TO {account(name)} WITH GRANT OPTION")
    mariadb_server.execute(f"GRANT PROXY ON ''@'%%' TO {account(name)} WITH GRANT OPTION")
    yield {"engine": "mariadb", "host": mariadb_server.host, "port": mariadb_server.port, "username": name,
           "password": password}  # fmt: skip
    mariadb_server.drop_user(name)


@pytest.fixture(scope="module")
def appdb(mariadb_server: MariaDbServer, admin: dict[str, Any]) -> Iterator[str]:
    """A database with a table, a procedure and a role (the admin may grant it), for grants to copy."""
    mariadb_server.execute("CREATE DATABASE IF NOT EXISTS `appdb`")
    mariadb_server.execute("CREATE TABLE IF NOT EXISTS `appdb`.`orders` (id INT, note TEXT, secret_col TEXT)")
    mariadb_server.execute("CREATE OR REPLACE PROCEDURE `appdb`.`ping`() SELECT 1")
    mariadb_server.execute("CREATE ROLE IF NOT EXISTS `app_reader`")
    mariadb_server.execute("GRANT SELECT ON `appdb`.* TO `app_reader`")
    mariadb_server.execute(f"GRANT `app_reader` TO {account(admin['username'])} WITH ADMIN OPTION")
    yield "appdb"


@pytest.fixture
def plugin() -> MySQLPlugin:
    return MySQLPlugin({"connect_timeout": 3, "ssl_mode": "disabled"}, None)


def assert_password(server: MariaDbServer, user: str, good: str, *bad: str) -> None:
    """`user` logs in with `good`; every one of `bad` is refused."""
    assert server.can_login(user, good), f"{user!r} should log in with the expected password"
    for wrong in bad:
        assert not server.can_login(user, wrong), f"{user!r} should not log in with a stale password"


def rotate_forward(plugin: MySQLPlugin, ctx: RotationContext, current: Credential, *, twice: bool = True) -> Credential:
    """create, stage, test (each step twice when `twice`, as after a crash): returns PENDING."""
    pending = cred(plugin.create(ctx, current), Stage.PENDING)
    for _ in range(2 if twice else 1):
        plugin.stage(ctx, current, pending)
    for _ in range(2 if twice else 1):
        plugin.test(ctx, pending)
    return pending


# -- pure functions: quoting, grant rewriting, REQUIRE clauses (MySQL and MariaDB alike) -----------------------


def test_quote_identifier_doubles_backticks_only() -> None:
    assert quote_identifier("app") == "`app`"
    assert quote_identifier("we`ird") == "`we``ird`"
    assert quote_identifier("o'brien\\x") == "`o'brien\\x`"
    assert quote_identifier("") == "``"
    assert quote_account("a`b", "%") == "`a``b`@`%`"
    assert account_sql("a%b", "%") == "`a%%b`@`%%`"
    with pytest.raises(ValueError):
        quote_identifier("nul\0byte")


def test_native_password_hash_matches_the_server(mariadb_server: MariaDbServer) -> None:
    for password in ("secret", "Ünïcode pässword", "quote'\"\\;%"):
        ((server_hash,),) = mariadb_server.execute("SELECT PASSWORD(%s)", (password,))
        assert native_password_hash(password) == server_hash


def test_rewrite_grant_handles_every_shape() -> None:
    orig, clone = ("app", "%"), ("app_clone", "%")
    target = "`app_clone`@`%`"
    cases = {
        "GRANT USAGE ON *.* TO `app`@`%` IDENTIFIED BY PASSWORD '*ABC'": None,
        "GRANT USAGE ON *.* TO `app`@`%` IDENTIFIED BY PASSWORD '*ABC' REQUIRE SSL WITH MAX_USER_CONNECTIONS 3": None,
        "GRANT USAGE ON *.* TO `app`@`%` WITH GRANT OPTION": f"GRANT USAGE ON *.* TO {target} WITH GRANT OPTION",
        "GRANT RELOAD, PROCESS ON *.* TO `app`@`%` IDENTIFIED BY PASSWORD '*A6' WITH GRANT OPTION "
        "MAX_QUERIES_PER_HOUR 100": f"GRANT RELOAD, PROCESS ON *.* TO {target} WITH GRANT OPTION",
        "GRANT SELECT, INSERT ON `d1`.* TO `app`@`%`": f"GRANT SELECT, INSERT ON `d1`.* TO {target}",
        "GRANT SELECT (`b`), UPDATE (`a`) ON `d1`.`t` TO `app`@`%`": f"GRANT SELECT (`b`), UPDATE (`a`) ON `d1`.`t` "
        f"TO {target}",
        "GRANT SELECT ON `d\\_%`.* TO `app`@`%`": f"GRANT SELECT ON `d\\_%`.* TO {target}",
        "GRANT SELECT ON `to`.`TO` TO `app`@`%`": f"GRANT SELECT ON `to`.`TO` TO {target}",
        "GRANT EXECUTE ON PROCEDURE `d1`.`p` TO `app`@`%`": f"GRANT EXECUTE ON PROCEDURE `d1`.`p` TO {target}",
        "GRANT PROXY ON ``@`%` TO `app`@`%`": f"GRANT PROXY ON ``@`%` TO {target}",
        "GRANT `r1` TO `app`@`%`": f"GRANT `r1` TO {target}",
        "GRANT `r1` TO `app`@`%` WITH ADMIN OPTION": f"GRANT `r1` TO {target} WITH ADMIN OPTION",
        "GRANT `r1`@`%`,`r2`@`%` TO `app`@`%`": f"GRANT `r1`@`%`,`r2`@`%` TO {target}",  # MySQL 8 roles
        "GRANT BACKUP_ADMIN ON *.* TO `app`@`%`": f"GRANT BACKUP_ADMIN ON *.* TO {target}",  # MySQL 8 dynamic
        "REVOKE SELECT ON `mysql`.* FROM `app`@`%`": f"REVOKE SELECT ON `mysql`.* FROM {target}",  # partial revokes
        "SET DEFAULT ROLE `r1` FOR `app`@`%`": f"SET DEFAULT ROLE `r1` FOR {target}",
        "GRANT SELECT ON `d1`.* TO 'app'@'%'": f"GRANT SELECT ON `d1`.* TO {target}",  # old single-quote style
    }
    for line, expected in cases.items():
        assert rewrite_grant(line, orig, clone) == expected, line


def test_rewrite_grant_refuses_what_it_does_not_understand() -> None:
    orig, clone = ("app", "%"), ("app_clone", "%")
    for line in (
        "GRANT SELECT ON `d1`.* TO `other`@`%`",
        "GRANT SELECT ON `d1`.* TO `app`@`localhost`",
        "CREATE USER `app`@`%`",
        "GRANT SELECT ON `d1`.*",
        "",
    ):
        with pytest.raises(ValueError):
            rewrite_grant(line, orig, clone)


def test_rewrite_grant_nasty_names() -> None:
    for name in NASTY_NAMES:
        printed = quote_account(name, "%")
        line = f"GRANT SELECT ON `d1`.* TO {printed} IDENTIFIED BY PASSWORD '*ABC'"
        assert rewrite_grant(line, (name, "%"), (name + "_clone", "%")) == (
            f"GRANT SELECT ON `d1`.* TO {quote_account(name + '_clone', '%')}"
        )


def test_tls_and_limits_clause() -> None:
    limits = " WITH MAX_QUERIES_PER_HOUR %s MAX_UPDATES_PER_HOUR %s MAX_CONNECTIONS_PER_HOUR %s MAX_USER_CONNECTIONS %s"
    assert tls_and_limits_clause(("", b"", b"", b"", 0, 0, 0, 0)) == ("REQUIRE NONE" + limits, (0, 0, 0, 0))
    assert tls_and_limits_clause(("ANY", "", "", "", 1, 2, 3, 4)) == ("REQUIRE SSL" + limits, (1, 2, 3, 4))
    assert tls_and_limits_clause(("X509", "", "", "", 0, 0, 0, 0))[0] == "REQUIRE X509" + limits
    clause, params = tls_and_limits_clause(("SPECIFIED", b"AES256-SHA", b"/CN=ca'x", b"/CN=me", 0, 0, 0, 5))
    assert clause == "REQUIRE SUBJECT %s AND ISSUER %s AND CIPHER %s" + limits
    assert params == ("/CN=me", "/CN=ca'x", "AES256-SHA", 0, 0, 0, 5)
    with pytest.raises(ValueError):
        tls_and_limits_clause(("WEIRD", "", "", "", 0, 0, 0, 0))


# -- options ------------------------------------------------------------------------------------------------------


def test_options_are_validated(tmp_path: Path) -> None:
    plugin = MySQLPlugin({}, None)
    assert isinstance(plugin, RotationPlugin)
    assert plugin.strategies == ("single-user", "alternating-users")
    assert plugin.options.clone_suffix == "_clone" and plugin.options.host_pattern == "%"
    with pytest.raises(OptionsError) as wrong:
        MySQLPlugin({"sslmode": "required"}, None)
    assert wrong.value.option == "sslmode" and wrong.value.exit_code == 2
    with pytest.raises(OptionsError) as wrong:
        MySQLPlugin({"ssl_mode": "sometimes"}, None)
    assert wrong.value.option == "ssl_mode" and wrong.value.exit_code == 2
    setup = ComponentSetup(name=PLAN, config_dir=tmp_path, state_dir=tmp_path, config_file=str(tmp_path / "r.toml"))
    with pytest.raises(ConfigError, match="ssl_ca"):
        MySQLPlugin({"ssl_ca": "missing.pem"}, setup)
    (tmp_path / "ca.pem").write_text("x")
    assert MySQLPlugin({"ssl_ca": "ca.pem"}, setup)._ssl_ca == str(tmp_path / "ca.pem")


# -- single-user --------------------------------------------------------------------------------------------------


def test_single_user_create_keeps_the_user_and_changes_the_password(plugin: MySQLPlugin) -> None:
    current = cred({"engine": "mysql", "host": "db", "port": 3306, "username": "app", "password": "old-password-1"})
    value = plugin.create(make_ctx("single-user"), current)
    assert value["username"] == "app" and value["engine"] == "mysql" and value["host"] == "db"
    assert value["password"] != "old-password-1" and len(value["password"]) == 32


def test_single_user_stage_test_unstage_are_idempotent(
    mariadb_server: MariaDbServer, plugin: MySQLPlugin, users: Callable[[str], str]
) -> None:
    user = users("single")
    mariadb_server.make_user(user, "first-password-0")
    ctx = make_ctx("single-user", policy=NASTY_POLICY)
    current = cred(mariadb_server.secret(user, "first-password-0"))
    pending = rotate_forward(plugin, ctx, current)
    assert_password(mariadb_server, user, pending["password"], current["password"])
    for _ in range(2):
        plugin.unstage(ctx, current, pending)
    assert_password(mariadb_server, user, current["password"], pending["password"])
    with pytest.raises(TestFailed):
        plugin.test(ctx, pending)
    # and forward again, then revoke (nothing to do for single-user), twice
    pending = rotate_forward(plugin, ctx, current)
    for _ in range(2):
        plugin.revoke(ctx, current, pending)
    assert_password(mariadb_server, user, pending["password"], current["password"])
    plugin.discard(ctx, pending)


def test_single_user_needs_no_privilege_and_sends_only_a_hash(
    mariadb_server: MariaDbServer, plugin: MySQLPlugin, users: Callable[[str], str]
) -> None:
    """The user has no grant at all; MariaDB's general log shows the hash, never the password."""
    user = users("nopriv")
    mariadb_server.make_user(user, "first-password-0")
    ctx = make_ctx("single-user")
    current = cred(mariadb_server.secret(user, "first-password-0"))
    since = mariadb_server.general_log_size()
    pending = rotate_forward(plugin, ctx, current)
    plugin.unstage(ctx, current, pending)
    log = mariadb_server.general_log_text(since)
    assert native_password_hash(pending["password"]) in log  # proof the log was read
    assert pending["password"] not in log


def test_single_user_with_a_wrong_current_fails_authentication(
    mariadb_server: MariaDbServer, plugin: MySQLPlugin, users: Callable[[str], str]
) -> None:
    user = users("wrong")
    mariadb_server.make_user(user, "the-real-password")
    ctx = make_ctx("single-user")
    current = cred(mariadb_server.secret(user, "not-the-password"))
    pending = cred(plugin.create(ctx, current), Stage.PENDING)
    with pytest.raises(AuthenticationFailed) as err:
        plugin.stage(ctx, current, pending)
    text = str(err.value)
    assert "error 1045" in text and "fix:" in text and user in text
    assert "not-the-password" not in text and pending["password"] not in text
    assert_password(mariadb_server, user, "the-real-password")


def test_single_user_stage_falls_back_to_previous(
    mariadb_server: MariaDbServer, plugin: MySQLPlugin, users: Callable[[str], str]
) -> None:
    """As AWS's sample: the account has PREVIOUS's password (a restored database): stage logs in with it."""
    user = users("restored")
    mariadb_server.make_user(user, "previous-password-0")
    previous = cred(mariadb_server.secret(user, "previous-password-0"), Stage.PREVIOUS)
    current = cred(mariadb_server.secret(user, "current-password-0"))
    ctx = make_ctx("single-user", previous=previous)
    pending = rotate_forward(plugin, ctx, current)
    assert_password(mariadb_server, user, pending["password"], "previous-password-0", "current-password-0")
    # without a PREVIOUS that logs in, CURRENT's refusal stands
    with pytest.raises(AuthenticationFailed):
        plugin.stage(make_ctx("single-user", previous=previous), current, cred(plugin.create(ctx, current)))


def test_single_user_refuses_mixed_users(plugin: MySQLPlugin) -> None:
    ctx = make_ctx("single-user")
    a = cred({"engine": "mariadb", "host": "db", "username": "a", "password": "pa-123456"})
    b = cred({"engine": "mariadb", "host": "db", "username": "b", "password": "pb-123456"})
    with pytest.raises(StepError, match="single-user"):
        plugin.stage(ctx, a, b)
    with pytest.raises(StepError, match="will not touch"):
        plugin.revoke(ctx, a, b)


def test_test_step_maps_errors(mariadb_server: MariaDbServer, plugin: MySQLPlugin, users: Callable[[str], str]) -> None:
    user = users("probe")
    mariadb_server.make_user(user, "probe-password-1")
    ctx = make_ctx("single-user")
    plugin.test(ctx, cred(mariadb_server.secret(user, "probe-password-1")))
    with pytest.raises(TestFailed, match="1045"):
        plugin.test(ctx, cred(mariadb_server.secret(user, "wrong-password-1")))
    with pytest.raises(TestFailed, match="1044"):  # logs in, but may not use the database it names
        plugin.test(ctx, cred(mariadb_server.secret(user, "probe-password-1", dbname="mysql")))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    with pytest.raises(TransientError) as err:
        plugin.test(ctx, cred({**mariadb_server.secret(user, "probe-password-1"), "port": closed_port}))
    assert "probe-password-1" not in str(err.value)


def test_locked_account_is_an_authentication_failure(
    mariadb_server: MariaDbServer, plugin: MySQLPlugin, users: Callable[[str], str]
) -> None:
    user = users("locked")
    mariadb_server.make_user(user, "locked-password-1", extra="ACCOUNT LOCK")
    with pytest.raises(TestFailed, match="4151"):
        plugin.test(make_ctx("single-user"), cred(mariadb_server.secret(user, "locked-password-1")))


def test_secret_shape_is_checked(plugin: MySQLPlugin, mariadb_server: MariaDbServer) -> None:
    ctx = make_ctx("single-user")
    with pytest.raises(StepError, match="engine 'postgres'"):
        plugin.test(ctx, cred({"engine": "postgres", "host": "h", "username": "u", "password": "p-123456"}))
    with pytest.raises(StepError, match="has no password"):
        plugin.test(ctx, cred({"engine": "mysql", "host": "h", "username": "u"}))
    with pytest.raises(StepError, match="not a TCP port"):
        plugin.test(ctx, cred({"engine": "mysql", "host": "h", "port": "x", "username": "u", "password": "p-123456"}))
    with pytest.raises(StepError, match="no strategy"):
        plugin.test(make_ctx("three-users"), cred(mariadb_server.secret("u", "p-123456")))


# -- alternating-users --------------------------------------------------------------------------------------------


def alt_secret(server: MariaDbServer, user: str, password: str, **extra: Any) -> dict[str, Any]:
    return server.secret(user, password, masterarn=ADMIN_ARN, **extra)


def test_alternating_first_rotation_creates_the_clone_with_grants_then_alternates_back(
    mariadb_server: MariaDbServer, plugin: MySQLPlugin, admin: dict[str, Any], appdb: str, users: Callable[[str], str]
) -> None:
    user = users("alt")
    clone = f"{user}_clone"
    acct = account(user)
    mariadb_server.make_user(user, "orig-password-1", extra="WITH MAX_USER_CONNECTIONS 7 MAX_QUERIES_PER_HOUR 900")
    for grant in (
        f"GRANT SELECT, INSERT ON `appdb`.* TO {acct}",
        f"GRANT UPDATE (`note`) ON `appdb`.`orders` TO {acct}",
        f"GRANT EXECUTE ON PROCEDURE `appdb`.`ping` TO {acct}",
        f"GRANT SELECT ON `app\\_%%`.* TO {acct}",
        f"GRANT DELETE ON `appdb`.`orders` TO {acct} WITH GRANT OPTION",
        f"GRANT `app_reader` TO {acct}",
        f"SET DEFAULT ROLE `app_reader` FOR {acct}",
    ):
        mariadb_server.execute(grant)
    ctx = make_ctx("alternating-users", {ADMIN_ARN: admin})
    first = cred(alt_secret(mariadb_server, user, "orig-password-1", dbname="appdb"))  # test logs into appdb

    second = rotate_forward(plugin, ctx, first)
    assert second["username"] == clone and second["masterarn"] == ADMIN_ARN and second["dbname"] == "appdb"
    assert mariadb_server.grants(clone) == mariadb_server.grants(user)
    assert len(mariadb_server.grants(clone)) == 7
    assert mariadb_server.execute(
        "SELECT max_user_connections, max_questions FROM mysql.user WHERE user = %s", (clone,)
    ) == [(7, 900)]
    assert_password(mariadb_server, clone, second["password"])
    assert_password(mariadb_server, user, first["password"])  # CURRENT untouched: no window
    with pymysql.connect(host=mariadb_server.host, port=mariadb_server.port, user=clone,
                         password=second["password"], ssl_disabled=True) as conn, conn.cursor() as cur:  # fmt: skip
        cur.execute("SELECT CURRENT_ROLE()")
        assert cur.fetchone() == ("app_reader",)
        cur.execute("INSERT INTO `appdb`.`orders` (id) VALUES (1)")

    for _ in range(2):
        plugin.revoke(ctx, first, second)
    assert_password(mariadb_server, clone, second["password"])
    assert not mariadb_server.can_login(user, first["password"])  # a random password nobody knows
    assert mariadb_server.user_exists(user)

    third = rotate_forward(plugin, ctx, second)
    assert third["username"] == user
    assert_password(mariadb_server, user, third["password"], first["password"])
    for _ in range(2):
        plugin.revoke(ctx, second, third)
    assert not mariadb_server.can_login(clone, second["password"])
    assert_password(mariadb_server, user, third["password"])

    fourth = rotate_forward(plugin, ctx, third)  # the clone exists now: password only, grants re-applied
    assert fourth["username"] == clone
    assert_password(mariadb_server, clone, fourth["password"], second["password"])
    assert mariadb_server.grants(clone) == mariadb_server.grants(user)


def test_alternating_unstage_makes_pending_fail_and_keeps_current(
    mariadb_server: MariaDbServer, plugin: MySQLPlugin, admin: dict[str, Any], appdb: str, users: Callable[[str], str]
) -> None:
    user = users("undo")
    mariadb_server.make_user(user, "orig-password-2")
    ctx = make_ctx("alternating-users", {ADMIN_ARN: admin})
    current = cred(alt_secret(mariadb_server, user, "orig-password-2"))
    pending = rotate_forward(plugin, ctx, current)
    for _ in range(2):
        plugin.unstage(ctx, current, pending)
    assert not mariadb_server.can_login(pending["username"], pending["password"])
    assert mariadb_server.user_exists(pending["username"])  # kept for the next rotation
    assert_password(mariadb_server, user, current["password"])
    with pytest.raises(TestFailed):
        plugin.test(ctx, pending)
    # unstage before stage ever ran (the clone does not exist): nothing to do
    other = users("never")
    mariadb_server.make_user(other, "orig-password-3")
    current2 = cred(alt_secret(mariadb_server, other, "orig-password-3"))
    pending2 = cred(plugin.create(ctx, current2), Stage.PENDING)
    plugin.unstage(ctx, current2, pending2)
    assert not mariadb_server.user_exists(pending2["username"])


def test_alternating_copies_and_enforces_the_tls_requirement(
    mariadb_server: MariaDbServer,
    admin: dict[str, Any],
    appdb: str,
    users: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    user = users("tls")
    clone = f"{user}_clone"
    mariadb_server.make_user(user, "orig-password-4", extra="REQUIRE SSL")
    mariadb_server.execute(f"GRANT SELECT ON `appdb`.* TO {account(user)}")
    verified = MySQLPlugin({"ssl_mode": "verify_identity", "ssl_ca": str(mariadb_server.ca_path)}, None)
    ctx = make_ctx("alternating-users", {ADMIN_ARN: admin})
    current = cred(alt_secret(mariadb_server, user, "orig-password-4"))
    contexts_built: list[object] = []
    build_context = ssl.create_default_context
    monkeypatch.setattr(ssl, "create_default_context", lambda **kw: contexts_built.append(kw) or build_context(**kw))
    pending = rotate_forward(verified, ctx, current)
    # create, stage and test each connect (as the admin and as the new user): the CA bundle is loaded once
    assert contexts_built == [{"cafile": str(mariadb_server.ca_path)}]
    monkeypatch.undo()
    assert mariadb_server.tls_requirement(clone) == ("ANY", "", "", "")
    assert mariadb_server.can_login(clone, pending["password"], tls=True)
    assert not mariadb_server.can_login(clone, pending["password"], tls=False)  # REQUIRE SSL is enforced
    with pytest.raises(TestFailed):
        MySQLPlugin({"ssl_mode": "disabled"}, None).test(ctx, pending)

    # X509 with subject and issuer is copied value for value
    mariadb_server.execute(
        f"ALTER USER {account(user)} REQUIRE SUBJECT '/CN=app o''brien' AND ISSUER '/CN=rotator test CA' "
        "AND CIPHER 'ECDHE-ECDSA-AES256-GCM-SHA384'"
    )
    verified.stage(ctx, current, pending)
    assert mariadb_server.tls_requirement(clone) == (
        "SPECIFIED", "ECDHE-ECDSA-AES256-GCM-SHA384", "/CN=rotator test CA", "/CN=app o'brien",
    )  # fmt: skip
    # and REQUIRE NONE again when the original drops it
    mariadb_server.execute(f"ALTER USER {account(user)} REQUIRE NONE")
    verified.stage(ctx, current, pending)
    assert mariadb_server.tls_requirement(clone) == ("", "", "", "")


def test_tls_verification_failure_is_not_transient(
    mariadb_server: MariaDbServer, admin: dict[str, Any], users: Callable[[str], str]
) -> None:
    """A secret with "ssl": true means verify_identity against the system CAs, which do not know the test CA."""
    user = users("sys_ca")
    mariadb_server.make_user(user, "orig-password-5")
    with pytest.raises(StepError) as err:
        MySQLPlugin({}, None).test(
            make_ctx("single-user"), cred(mariadb_server.secret(user, "orig-password-5", ssl=True))
        )
    assert not isinstance(err.value, TransientError)
    assert "ssl_ca" in str(err.value) and "orig-password-5" not in str(err.value)
    MySQLPlugin({"ssl_ca": str(mariadb_server.ca_path)}, None).test(
        make_ctx("single-user"), cred(mariadb_server.secret(user, "orig-password-5", ssl=True))
    )


def test_alternating_with_a_least_privilege_admin(
    mariadb_server: MariaDbServer, plugin: MySQLPlugin, appdb: str, users: Callable[[str], str]
) -> None:
    """The grants the module docstring lists are enough; a missing one gives a StepError that says what to grant."""
    boss = users("boss")
    mariadb_server.make_user(boss, "boss-password-1")
    mariadb_server.execute(f"GRANT CREATE USER ON *.* TO {account(boss)}")
    mariadb_server.execute(f"GRANT SELECT ON `mysql`.* TO {account(boss)}")
    mariadb_server.execute(f"GRANT SELECT ON `appdb`.* TO {account(boss)} WITH GRANT OPTION")
    user = users("lp")
    mariadb_server.make_user(user, "orig-password-6")
    mariadb_server.execute(f"GRANT SELECT ON `appdb`.* TO {account(user)}")
    boss_secret = mariadb_server.secret(boss, "boss-password-1")
    ctx = make_ctx("alternating-users", {ADMIN_ARN: boss_secret})
    current = cred(alt_secret(mariadb_server, user, "orig-password-6"))
    pending = rotate_forward(plugin, ctx, current)
    assert mariadb_server.grants(f"{user}_clone") == mariadb_server.grants(user)

    mariadb_server.execute(f"GRANT INSERT ON `appdb`.* TO {account(user)}")  # the admin cannot pass this one on
    with pytest.raises(StepError) as err:
        plugin.stage(ctx, current, pending)
    text = str(err.value)
    assert "GRANT SELECT, INSERT ON `appdb`.* TO" in text and "WITH GRANT OPTION" in text
    assert "boss-password-1" not in text and pending["password"] not in text


def test_alternating_refuses_to_recreate_a_missing_original(
    mariadb_server: MariaDbServer, plugin: MySQLPlugin, admin: dict[str, Any], users: Callable[[str], str]
) -> None:
    user = users("gone")
    mariadb_server.make_user(f"{user}_clone", "clone-password-1")
    ctx = make_ctx("alternating-users", {ADMIN_ARN: admin})
    current = cred(alt_secret(mariadb_server, f"{user}_clone", "clone-password-1"))
    pending = cred(plugin.create(ctx, current), Stage.PENDING)
    assert pending["username"] == user
    with pytest.raises(StepError, match="does not exist"):
        plugin.stage(ctx, current, pending)
    assert not mariadb_server.user_exists(user)
    # host_pattern that does not match the original's account: a clear error, no clone made
    other = users("hostp")
    mariadb_server.make_user(other, "orig-password-7")
    narrow = MySQLPlugin({"ssl_mode": "disabled", "host_pattern": "10.0.0.%"}, None)
    current = cred(alt_secret(mariadb_server, other, "orig-password-7"))
    with pytest.raises(StepError, match="host_pattern"):
        narrow.stage(ctx, current, cred(narrow.create(ctx, current), Stage.PENDING))
    assert not mariadb_server.user_exists(f"{other}_clone", "10.0.0.%")


def test_alternating_needs_masterarn_and_a_working_admin(
    mariadb_server: MariaDbServer, plugin: MySQLPlugin, admin: dict[str, Any], users: Callable[[str], str]
) -> None:
    user = users("noarn")
    mariadb_server.make_user(user, "orig-password-8")
    ctx = make_ctx("alternating-users", {ADMIN_ARN: admin})
    with pytest.raises(StepError, match="masterarn"):
        plugin.create(ctx, cred(mariadb_server.secret(user, "orig-password-8")))
    current = cred(alt_secret(mariadb_server, user, "orig-password-8"))
    pending = cred(plugin.create(ctx, current), Stage.PENDING)
    bad_admin = make_ctx("alternating-users", {ADMIN_ARN: {**admin, "password": "wrong-admin-password"}})
    with pytest.raises(AuthenticationFailed) as err:
        plugin.stage(bad_admin, current, pending)
    assert ADMIN_ARN in str(err.value) and "wrong-admin-password" not in str(err.value)
    elsewhere = make_ctx("alternating-users", {ADMIN_ARN: {**admin, "host": "db.elsewhere.example"}})
    with pytest.raises(StepError, match="is for host"):
        plugin.stage(elsewhere, current, pending)
    # a missing admin secret is refused before anything is sent, naming the fix
    with pytest.raises(StepRefused, match="rotator store put"):
        plugin.stage(make_ctx("alternating-users", {}), current, pending)
    with pytest.raises(StepError, match="own user"):
        plugin.stage(ctx, current, cred({**current.value, "password": "x-12345678"}))


def test_alternating_user_name_length_limits(plugin: MySQLPlugin) -> None:
    # create reads the admin secret (so a missing one fails before anything is stored): give it one
    ctx = make_ctx("alternating-users", {ADMIN_ARN: {"username": "admin", "password": "admin-password-1"}})
    base = {"host": "db", "password": "p-12345678", "masterarn": ADMIN_ARN}
    ok = cred({**base, "engine": "mysql", "username": "u" * 26})
    assert plugin.create(ctx, ok)["username"] == "u" * 26 + "_clone"  # exactly 32
    with pytest.raises(StepError, match="1 to 32 characters"):
        plugin.create(ctx, cred({**base, "engine": "mysql", "username": "u" * 27}))
    assert plugin.create(ctx, cred({**base, "engine": "mariadb", "username": "u" * 27}))["username"].endswith("_clone")
    with pytest.raises(StepError, match="1 to 128 characters"):
        plugin.create(ctx, cred({**base, "engine": "mariadb", "username": "u" * 123}))
    # going back from the clone to the original never grows the name
    assert (
        plugin.create(ctx, cred({**base, "engine": "mysql", "username": "u" * 26 + "_clone"}))["username"] == "u" * 26
    )


def test_server_side_name_limit_is_a_clear_error(
    mariadb_server: MariaDbServer, admin: dict[str, Any], users: Callable[[str], str]
) -> None:
    """Without "engine" the plugin cannot know the limit; the server's error 1470 then says it."""
    user = users("u" * 115)
    mariadb_server.make_user(user, "orig-password-9")
    plugin = MySQLPlugin({"ssl_mode": "disabled"}, None)
    ctx = make_ctx("alternating-users", {ADMIN_ARN: admin})
    value = {k: v for k, v in alt_secret(mariadb_server, user, "orig-password-9").items() if k != "engine"}
    current = cred(value)
    pending = cred(plugin.create(ctx, current), Stage.PENDING)
    with pytest.raises(StepError, match="1470") as err:
        plugin.stage(ctx, current, pending)
    assert "shorter username" in str(err.value) and pending["password"] not in str(err.value)


# -- nasty names, secrets at the server, in_use -----------------------------------------------------------------


@pytest.mark.parametrize("name", NASTY_NAMES)
def test_nasty_names_both_strategies(
    mariadb_server: MariaDbServer, plugin: MySQLPlugin, admin: dict[str, Any], appdb: str, name: str
) -> None:
    user = f"{name}{uuid.uuid4().hex[:4]}"
    clone = f"{user}_clone"
    try:
        mariadb_server.make_user(user, "nasty-password-0")
        mariadb_server.execute(f"GRANT SELECT ON `appdb`.* TO {account(user)}")
        single = make_ctx("single-user", policy=NASTY_POLICY)
        current = cred(alt_secret(mariadb_server, user, "nasty-password-0"))
        pending = rotate_forward(plugin, single, current)
        assert_password(mariadb_server, user, pending["password"], current["password"])
        plugin.unstage(single, current, pending)
        assert_password(mariadb_server, user, current["password"], pending["password"])

        alt = make_ctx("alternating-users", {ADMIN_ARN: admin}, policy=NASTY_POLICY)
        second = rotate_forward(plugin, alt, current)
        assert second["username"] == clone
        assert mariadb_server.grants(clone) == mariadb_server.grants(user)
        plugin.revoke(alt, current, second)
        assert_password(mariadb_server, clone, second["password"])
        assert not mariadb_server.can_login(user, current["password"])
        third = rotate_forward(plugin, alt, second)
        plugin.unstage(alt, second, third)
        assert not mariadb_server.can_login(user, third["password"])
        assert_password(mariadb_server, clone, second["password"])
    finally:
        mariadb_server.drop_user(clone)
        mariadb_server.drop_user(user)


def test_plaintext_passwords_never_reach_the_server(
    mariadb_server: MariaDbServer, plugin: MySQLPlugin, admin: dict[str, Any], appdb: str, users: Callable[[str], str]
) -> None:
    """MariaDB's general log holds every statement as received: no password the plugin set may appear in it."""
    user = users("logged")
    mariadb_server.make_user(user, "orig-password-10")
    since = mariadb_server.general_log_size()
    ctx = make_ctx("alternating-users", {ADMIN_ARN: admin}, policy=NASTY_POLICY)
    single = make_ctx("single-user", policy=NASTY_POLICY)
    first = cred(alt_secret(mariadb_server, user, "orig-password-10"))
    seen = []
    second = rotate_forward(plugin, ctx, first)  # CREATE USER
    plugin.revoke(ctx, first, second)  # random password on the original
    third = rotate_forward(plugin, ctx, second)  # ALTER USER
    plugin.unstage(ctx, second, third)  # random password again
    fourth = rotate_forward(plugin, single, second)  # SET PASSWORD
    plugin.unstage(single, second, fourth)
    seen = [second["password"], third["password"], fourth["password"]]
    log = mariadb_server.general_log_text(since)
    assert "IDENTIFIED BY PASSWORD" in log and "SET PASSWORD" in log  # the statements were logged...
    for password in seen:
        assert password not in log  # ...with hashes only
    assert "orig-password-10" not in log


def test_in_use_lists_the_users_sessions(
    mariadb_server: MariaDbServer, plugin: MySQLPlugin, admin: dict[str, Any], users: Callable[[str], str]
) -> None:
    user = users("busy")
    mariadb_server.make_user(user, "busy-password-1")
    secret = mariadb_server.secret(user, "busy-password-1")
    alt = make_ctx("alternating-users", {ADMIN_ARN: admin})
    alt_secret = {**secret, "masterarn": ADMIN_ARN}
    before = plugin.in_use(alt, cred(alt_secret))
    assert before is not None
    with mariadb_server.tcp_conn(user, "busy-password-1") as conn:
        # A session the plugin itself just closed may linger for a moment: look for this one by its id.
        mine = f"session {conn.thread_id()} from 127.0.0.1"
        sessions = plugin.in_use(alt, cred(alt_secret))
        assert sessions is not None and any(line.startswith(mine) for line in sessions), sessions
        assert not any(line.startswith(mine) for line in before)
        assert "busy-password-1" not in " ".join(sessions)
        # single-user: one account holds old and new password, so its sessions say nothing about the old one
        assert plugin.in_use(make_ctx("single-user"), cred(secret)) is None


# -- end to end through the `rotator` command (engine, local store, journal) --------------------------------------


def mysql_plan(
    root: Path, server: MariaDbServer, strategy: str, admin: dict[str, Any], grace: str = "1h"
) -> tuple[CliEnv, str, str, str]:
    """A config with one mysql plan and its secret seeded: (cli, plan id, secret id, user name)."""
    user = f"e2e_{uuid.uuid4().hex[:8]}"
    plan_id, secret = f"my-{user}", f"db/{user}"
    config = root / "rotator.toml"
    config.write_text(f"""
[rotator]
state_dir = "state"
step_timeout = 20

[[plans]]
id = "{plan_id}"
plugin = {{type = "mysql", ssl_mode = "disabled"}}
secret = "{secret}"
strategy = "{strategy}"
grace = "{grace}"
""")
    cli = CliEnv(root, config)
    assert cli.run("init").code == 0
    server.make_user(user, f"first-{user}-Password-0")
    value = server.secret(user, f"first-{user}-Password-0")
    if strategy == "alternating-users":
        cli.seed("db/admin", admin)
        value["masterarn"] = "db/admin"
    cli.seed(secret, value)
    return cli, plan_id, secret, user


def read_stage(cli: CliEnv, secret: str, stage: str) -> dict[str, Any] | None:
    result = cli.run("store", "get", secret, "--stage", stage)
    return result.json() if result.code == 0 else None


@pytest.mark.parametrize("strategy", ["single-user", "alternating-users"])
def test_end_to_end_rotation_grace_revoke_and_rollback(
    tmp_path: Path, mariadb_server: MariaDbServer, admin: dict[str, Any], strategy: str
) -> None:
    cli, plan_id, secret, user = mysql_plan(tmp_path, mariadb_server, strategy, admin)
    log_start = mariadb_server.general_log_size()
    old = read_stage(cli, secret, "CURRENT")
    assert old is not None
    result = cli.run("rotate-now", plan_id, "--json", "--log-level", "debug")
    assert result.code == 0, result.stdout + result.stderr
    new = read_stage(cli, secret, "CURRENT")
    assert new is not None and new["password"] != old["password"]
    assert mariadb_server.can_login(new["username"], new["password"])
    # during grace the old credential works only with alternating users (single-user has its window)
    assert mariadb_server.can_login(old["username"], old["password"]) is (strategy == "alternating-users")
    if strategy == "alternating-users":
        assert new["username"] == f"{user}_clone"
    revoked = cli.run("rotate-now", plan_id, "--revoke-old", "now", "--json", "--log-level", "debug")
    assert revoked.code == 0, revoked.stdout + revoked.stderr
    latest = read_stage(cli, secret, "CURRENT")
    assert latest is not None and mariadb_server.can_login(latest["username"], latest["password"])
    assert not mariadb_server.can_login(old["username"], old["password"])
    assert not mariadb_server.can_login(new["username"], new["password"])  # revoked at once

    failed = cli.run("rotate-now", plan_id, "--json", env={"ROTATOR_FAILPOINTS": "after-test=error"})
    assert failed.code == 1
    assert failed.json()["results"][0]["outcome"] == "rolled_back"
    assert read_stage(cli, secret, "CURRENT") == latest and read_stage(cli, secret, "PENDING") is None
    assert mariadb_server.can_login(latest["username"], latest["password"])  # invariant 1

    passwords = [v["password"] for v in (old, new, latest)]
    text = "\n".join(r.stdout + r.stderr for r in (result, revoked, failed))
    files = b"".join(p.read_bytes() for p in cli.state_files())
    server_log = mariadb_server.general_log_text(log_start)
    for password in passwords:
        assert password not in text and password.encode() not in files and password not in server_log
