"""The postgres rotation plugin against a real throwaway PostgreSQL (tests/servers/postgres.py).

Every password check goes over TCP to 127.0.0.1, where the server checks SCRAM-SHA-256: a wrong password really
fails. The plugin is called directly, step by step, with a RotationContext built here; `read_secret` is a dict.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from rotator_plugins.rotation.postgres import SECRET, PostgresPlugin

from rotator.components import ComponentSetup
from rotator.errors import AuthenticationFailed, ConfigError, SecretNotFound, StepError, TestFailed, TransientError
from rotator.interfaces import RotationPlugin
from rotator.model import Credential, PasswordPolicy, RotationContext, Stage
from rotator.options import OptionsError
from tests.servers.postgres import PgServer, free_port, scram_matches

PLAN = "orders-db"
ADMIN_ARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:rds-admin-AbCdEf"
# Quotes, a backslash and a semicolon in the password: they must survive the connect arguments and the verifier.
NASTY_POLICY = PasswordPolicy(length=40, exclude_characters="")


def cred(value: dict[str, Any], stage: Stage = Stage.CURRENT) -> Credential:
    return Credential(version_id=uuid.uuid4().hex, value=value, stages=frozenset({stage}))


def make_ctx(
    strategy: str, secrets: dict[str, dict[str, Any]] | None = None, policy: PasswordPolicy | None = None
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
    )


@pytest.fixture
def roles(pg_server: PgServer) -> Iterator[Callable[[str], str]]:
    """Unique role names for one test (prefix + random), dropped afterwards with their clones."""
    made: list[str] = []

    def name(prefix: str) -> str:
        role = f"{prefix}_{uuid.uuid4().hex[:8]}"
        made.append(role)
        return role

    yield name
    for role in made:
        for candidate in (f"{role}_clone", role):
            pg_server.drop_role(candidate)


@pytest.fixture
def plugin() -> PostgresPlugin:
    return PostgresPlugin({"connect_timeout": 3}, None)


def assert_password(pg: PgServer, user: str, good: str, *bad: str) -> None:
    """`user` logs in with `good` (and its verifier says so); every one of `bad` is refused."""
    assert pg.can_login(user, good), f"{user} should log in with the expected password"
    verifier = pg.rolpassword(user)
    assert verifier is not None and verifier.startswith("SCRAM-SHA-256$")
    assert scram_matches(verifier, good)
    for wrong in bad:
        assert not scram_matches(verifier, wrong)
        assert not pg.can_login(user, wrong), f"{user} should not log in with a stale password"


def no_secret_in(text: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in text


# -- the scram_matches helper itself ----------------------------------------------------------------------------


def test_scram_matches_checks_a_real_verifier(pg_server: PgServer, roles: Callable[[str], str]) -> None:
    user = roles("scram")
    pg_server.make_role(user, "correct horse battery")
    verifier = pg_server.rolpassword(user)
    assert verifier is not None
    assert scram_matches(verifier, "correct horse battery")
    assert not scram_matches(verifier, "correct horse battery ")
    assert not scram_matches("md5abcdef", "x")
    assert not scram_matches("garbage", "x")


# -- options ------------------------------------------------------------------------------------------------------


def test_options_are_validated() -> None:
    assert isinstance(PostgresPlugin({}, None), RotationPlugin)
    assert PostgresPlugin({}, None).options.clone_suffix == "_clone"
    with pytest.raises(OptionsError) as wrong:
        PostgresPlugin({"sslmod": "require"}, None)
    assert wrong.value.option == "sslmod" and wrong.value.exit_code == 2
    with pytest.raises(OptionsError) as wrong:
        PostgresPlugin({"sslmode": "sometimes"}, None)
    assert wrong.value.option == "sslmode" and wrong.value.exit_code == 2
    assert PostgresPlugin({"sslmode": "verify-ca"}, None).options.sslmode == "verify-ca"


def test_ssl_settings(tmp_path: Path) -> None:
    setup = ComponentSetup(name=PLAN, config_dir=tmp_path, state_dir=tmp_path, config_file="rotator.toml")
    with pytest.raises(ConfigError, match="sslrootcert"):
        PostgresPlugin({"sslrootcert": "missing.pem"}, setup)
    (tmp_path / "ca.pem").write_text("not really a certificate")
    plugin = PostgresPlugin({"sslrootcert": "ca.pem"}, setup)
    login = SECRET.login(make_ctx("single-user"), "test", cred({"host": "h", "username": "u", "password": "p",
                                                                "ssl": "true"}), "PENDING")  # fmt: skip
    args = plugin._connect_args(login)
    assert args["sslmode"] == "verify-full" and args["sslrootcert"] == str(tmp_path / "ca.pem")
    plain = PostgresPlugin({}, None)
    no_ssl = SECRET.login(make_ctx("single-user"), "test", cred({"host": "h", "username": "u", "password": "p"}), "x")
    assert plain._connect_args(no_ssl)["sslmode"] == "prefer"
    assert PostgresPlugin({"sslmode": "require"}, None)._connect_args(login)["sslmode"] == "require"


# -- single-user ----------------------------------------------------------------------------------------------------


def test_single_user_create_keeps_the_user_and_changes_the_password(
    pg_server: PgServer, plugin: PostgresPlugin
) -> None:
    current = cred(pg_server.secret("app", "old-password-123456", ssl=False))
    value = plugin.create(make_ctx("single-user"), current)
    assert value["username"] == "app"
    assert value["password"] != "old-password-123456"
    assert len(value["password"]) == 32
    assert {k: v for k, v in value.items() if k != "password"} == {
        k: v for k, v in current.value.items() if k != "password"
    }


def test_single_user_stage_test_unstage_are_idempotent(
    pg_server: PgServer, plugin: PostgresPlugin, roles: Callable[[str], str]
) -> None:
    user = roles("app")
    ctx = make_ctx("single-user", policy=NASTY_POLICY)
    old = "Old'pass\"word;\\123456"
    pg_server.make_role(user, old)
    current = cred(pg_server.secret(user, old))
    pending = cred(plugin.create(ctx, current), Stage.PENDING)
    new = pending["password"]

    for _ in range(2):
        plugin.stage(ctx, current, pending)
        assert_password(pg_server, user, new, old)
    for _ in range(2):
        plugin.test(ctx, pending)

    for _ in range(2):
        plugin.unstage(ctx, current, pending)
        assert_password(pg_server, user, old, new)
    with pytest.raises(TestFailed):
        plugin.test(ctx, pending)

    # Forward again after the rollback, then revoke: nothing to do, the old password already stopped at stage.
    plugin.stage(ctx, current, pending)
    plugin.test(ctx, pending)
    promoted_previous = cred(current.value, Stage.PREVIOUS)
    promoted_current = cred(pending.value, Stage.CURRENT)
    for _ in range(2):
        plugin.revoke(ctx, promoted_previous, promoted_current)
    assert_password(pg_server, user, new, old)


def test_single_user_stage_with_a_wrong_current_fails_authentication(
    pg_server: PgServer, plugin: PostgresPlugin, roles: Callable[[str], str]
) -> None:
    user = roles("app")
    real = "the-real-password-42"
    pg_server.make_role(user, real)
    ctx = make_ctx("single-user")
    current = cred(pg_server.secret(user, "not-the-password-7"))
    pending = cred(plugin.create(ctx, current), Stage.PENDING)

    with pytest.raises(AuthenticationFailed) as caught:
        plugin.stage(ctx, current, pending)
    message = str(caught.value)
    assert PLAN in message
    assert f"{pg_server.host}:{pg_server.port}" in message
    assert user in message
    assert "fix:" in message
    no_secret_in(message, real, "not-the-password-7", pending["password"])
    assert caught.value.plan_id == PLAN and caught.value.step == "stage"
    assert_password(pg_server, user, real, pending["password"])

    # Roll back is safe too: CURRENT does not log in, PENDING does not either, so the fix hint is raised.
    with pytest.raises(AuthenticationFailed):
        plugin.unstage(ctx, current, pending)
    assert_password(pg_server, user, real)


def test_single_user_revoke_refuses_another_role(pg_server: PgServer, plugin: PostgresPlugin) -> None:
    ctx = make_ctx("single-user")
    previous = cred(pg_server.secret("someone_else", "previous-password-1"), Stage.PREVIOUS)
    current = cred(pg_server.secret("app", "current-password-12"))
    with pytest.raises(StepError, match="single-user"):
        plugin.revoke(ctx, previous, current)


def test_test_step_maps_errors(pg_server: PgServer, plugin: PostgresPlugin, roles: Callable[[str], str]) -> None:
    user = roles("app")
    pg_server.make_role(user, "good-password-123")
    ctx = make_ctx("single-user")
    plugin.test(ctx, cred(pg_server.secret(user, "good-password-123"), Stage.PENDING))

    with pytest.raises(TestFailed) as failed:
        plugin.test(ctx, cred(pg_server.secret(user, "bad-password-456"), Stage.PENDING))
    no_secret_in(str(failed.value), "bad-password-456", "good-password-123")

    # A role that does not exist is refused like a wrong password (SCRAM does not tell them apart).
    with pytest.raises(TestFailed):
        plugin.test(ctx, cred(pg_server.secret(roles("ghost"), "whatever-password"), Stage.PENDING))

    closed = cred({**pg_server.secret(user, "good-password-123"), "port": free_port()}, Stage.PENDING)
    with pytest.raises(TransientError) as transient:
        plugin.test(ctx, closed)
    assert PLAN in str(transient.value) and user in str(transient.value)
    no_secret_in(str(transient.value), "good-password-123")


def test_port_may_be_a_string_and_dbname_defaults(
    pg_server: PgServer, plugin: PostgresPlugin, roles: Callable[[str], str]
) -> None:
    user = roles("app")
    pg_server.make_role(user, "good-password-123")
    value = pg_server.secret(user, "good-password-123")
    value["port"] = str(value["port"])
    del value["dbname"]
    plugin.test(make_ctx("single-user"), cred(value, Stage.PENDING))


def test_a_secret_for_another_engine_is_refused(pg_server: PgServer, plugin: PostgresPlugin) -> None:
    current = cred({**pg_server.secret("app", "whatever-password"), "engine": "mysql"})
    with pytest.raises(StepError, match="engine"):
        plugin.create(make_ctx("single-user"), current)


# -- alternating-users ---------------------------------------------------------------------------------------------


@pytest.fixture
def admin(pg_server: PgServer, roles: Callable[[str], str]) -> dict[str, Any]:
    """A least-privilege admin secret: CREATEROLE, not superuser (enough on PostgreSQL 15)."""
    name = roles("rotation_admin")
    pg_server.make_role(name, "admin-password-xyz-123", createrole=True)
    return pg_server.secret(name, "admin-password-xyz-123")


def granted_table(original: str) -> str:
    """The table that alternating_setup grants to `original` (named from it, so tests can find it)."""
    return "t_" + hashlib.sha256(original.encode()).hexdigest()[:12]


def alternating_setup(
    pg_server: PgServer, admin: dict[str, Any], user: str, password: str
) -> tuple[RotationContext, Credential]:
    """The original role with a privilege (SELECT on a table), and a context whose masterarn is `admin`."""
    pg_server.make_role(user, password)
    with pg_server.admin_conn() as conn:
        table = sql.Identifier(granted_table(user))
        conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} (x int)").format(table))
        conn.execute(sql.SQL("INSERT INTO {} VALUES (42)").format(table))
        conn.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(table, sql.Identifier(user)))
    ctx = make_ctx("alternating-users", {ADMIN_ARN: admin}, policy=NASTY_POLICY)
    current = cred(pg_server.secret(user, password, masterarn=ADMIN_ARN))
    return ctx, current


def can_read_granted_table(pg_server: PgServer, original: str, user: str, password: str) -> bool:
    """Whether `user` holds the original's SELECT grant (through membership, for the clone)."""
    with pg_server.tcp_conn(user, password) as conn:
        try:
            row = conn.execute(sql.SQL("SELECT x FROM {}").format(sql.Identifier(granted_table(original)))).fetchone()
        except psycopg.errors.InsufficientPrivilege:
            return False
    return row == (42,)


def test_alternating_first_rotation_creates_the_clone_then_alternates_back(
    pg_server: PgServer, plugin: PostgresPlugin, admin: dict[str, Any], roles: Callable[[str], str]
) -> None:
    user = roles("orders")
    clone = f"{user}_clone"
    old = "Original-password-123"
    ctx, current = alternating_setup(pg_server, admin, user, old)

    pending = cred(plugin.create(ctx, current), Stage.PENDING)
    assert pending["username"] == clone
    assert pending["masterarn"] == ADMIN_ARN
    assert pending["host"] == current["host"] and pending["port"] == current["port"]
    assert not pg_server.role_exists(clone)

    for _ in range(2):
        plugin.stage(ctx, current, pending)
    assert pg_server.role_exists(clone)
    assert pg_server.is_member(clone, user)
    # Both log in after stage: no window.
    assert_password(pg_server, user, old)
    assert_password(pg_server, clone, pending["password"], old)
    assert can_read_granted_table(pg_server, user, clone, pending["password"])
    for _ in range(2):
        plugin.test(ctx, pending)

    # promote (the engine's job), then revoke PREVIOUS = the original role.
    previous, promoted = cred(current.value, Stage.PREVIOUS), cred(pending.value)
    for _ in range(2):
        plugin.revoke(ctx, previous, promoted)
    assert not pg_server.can_login(user, old)
    assert_password(pg_server, clone, pending["password"])
    assert pg_server.role_exists(user)

    # The next rotation goes back to the original role, which exists already.
    second = cred(plugin.create(ctx, promoted), Stage.PENDING)
    assert second["username"] == user
    plugin.stage(ctx, promoted, second)
    plugin.test(ctx, second)
    assert_password(pg_server, user, second["password"], old)
    assert_password(pg_server, clone, pending["password"])
    plugin.revoke(ctx, cred(promoted.value, Stage.PREVIOUS), cred(second.value))
    assert not pg_server.can_login(clone, pending["password"])
    assert_password(pg_server, user, second["password"])


def test_alternating_unstage_makes_pending_fail_and_keeps_current(
    pg_server: PgServer, plugin: PostgresPlugin, admin: dict[str, Any], roles: Callable[[str], str]
) -> None:
    user = roles("orders")
    old = "Original-password-456"
    ctx, current = alternating_setup(pg_server, admin, user, old)
    pending = cred(plugin.create(ctx, current), Stage.PENDING)

    plugin.unstage(ctx, current, pending)  # before stage: the clone does not exist yet, nothing to do
    assert not pg_server.role_exists(pending["username"])

    plugin.stage(ctx, current, pending)
    assert pg_server.can_login(pending["username"], pending["password"])
    for _ in range(2):
        plugin.unstage(ctx, current, pending)
    assert not pg_server.can_login(pending["username"], pending["password"])
    with pytest.raises(TestFailed):
        plugin.test(ctx, pending)
    assert_password(pg_server, user, old)


def test_alternating_revoke_never_touches_current(
    pg_server: PgServer, plugin: PostgresPlugin, admin: dict[str, Any], roles: Callable[[str], str]
) -> None:
    user = roles("orders")
    ctx, current = alternating_setup(pg_server, admin, user, "Original-password-789")
    plugin.revoke(ctx, cred(current.value, Stage.PREVIOUS), current)
    assert_password(pg_server, user, "Original-password-789")


def test_alternating_regrants_membership_to_an_existing_clone(
    pg_server: PgServer, plugin: PostgresPlugin, admin: dict[str, Any], roles: Callable[[str], str]
) -> None:
    user = roles("orders")
    ctx, current = alternating_setup(pg_server, admin, user, "Original-password-321")
    pending = cred(plugin.create(ctx, current), Stage.PENDING)
    pg_server.make_role(pending["username"], "Hand-made-password-1")  # made by hand, without membership
    assert not can_read_granted_table(pg_server, user, pending["username"], "Hand-made-password-1")
    plugin.stage(ctx, current, pending)
    assert pg_server.is_member(pending["username"], user)
    assert can_read_granted_table(pg_server, user, pending["username"], pending["password"])


def test_alternating_refuses_to_recreate_a_missing_original(
    pg_server: PgServer, plugin: PostgresPlugin, admin: dict[str, Any], roles: Callable[[str], str]
) -> None:
    user = roles("orders")
    clone = f"{user}_clone"
    pg_server.make_role(clone, "Clone-password-123")
    ctx = make_ctx("alternating-users", {ADMIN_ARN: admin})
    current = cred(pg_server.secret(clone, "Clone-password-123", masterarn=ADMIN_ARN))
    pending = cred(plugin.create(ctx, current), Stage.PENDING)
    assert pending["username"] == user
    with pytest.raises(StepError, match="does not exist"):
        plugin.stage(ctx, current, pending)
    assert not pg_server.role_exists(user)
    assert_password(pg_server, clone, "Clone-password-123")


def test_alternating_needs_masterarn_and_a_working_admin(
    pg_server: PgServer, plugin: PostgresPlugin, admin: dict[str, Any], roles: Callable[[str], str]
) -> None:
    user = roles("orders")
    pg_server.make_role(user, "Original-password-654")
    no_arn = cred(pg_server.secret(user, "Original-password-654"))
    with pytest.raises(StepError, match="masterarn"):
        plugin.create(make_ctx("alternating-users"), no_arn)

    wrong_admin = {**admin, "password": "not-the-admin-password"}
    ctx = make_ctx("alternating-users", {ADMIN_ARN: wrong_admin})
    current = cred(pg_server.secret(user, "Original-password-654", masterarn=ADMIN_ARN))
    pending = cred(plugin.create(ctx, current), Stage.PENDING)
    with pytest.raises(AuthenticationFailed) as caught:
        plugin.stage(ctx, current, pending)
    assert ADMIN_ARN in str(caught.value)
    no_secret_in(str(caught.value), "not-the-admin-password", "Original-password-654", pending["password"])
    assert not pg_server.role_exists(pending["username"])

    other_host = make_ctx("alternating-users", {ADMIN_ARN: {**admin, "host": "db.elsewhere.example"}})
    with pytest.raises(StepError, match="host"):
        plugin.stage(other_host, current, pending)


def test_alternating_clone_name_too_long(pg_server: PgServer, plugin: PostgresPlugin) -> None:
    current = cred(pg_server.secret("a" * 60, "whatever-password", masterarn=ADMIN_ARN))
    with pytest.raises(StepError, match="63"):
        plugin.create(make_ctx("alternating-users"), current)


def test_in_use_lists_the_roles_sessions(
    pg_server: PgServer, plugin: PostgresPlugin, admin: dict[str, Any], roles: Callable[[str], str]
) -> None:
    user = roles("orders")
    pg_server.make_role(user, "Original-password-987")
    value = pg_server.secret(user, "Original-password-987", masterarn=ADMIN_ARN)
    alternating = make_ctx("alternating-users", {ADMIN_ARN: admin})
    assert plugin.in_use(alternating, cred(value)) == []
    with pg_server.tcp_conn(user, "Original-password-987"):
        # A CREATEROLE admin sees that the session exists, not where from, and the line says what to grant.
        [hidden] = plugin.in_use(alternating, cred(value)) or [""]
        assert "hidden from the admin" in hidden and "pg_read_all_stats" in hidden
        with pg_server.admin_conn() as conn:
            conn.execute(sql.SQL("GRANT pg_read_all_stats TO {}").format(sql.Identifier(admin["username"])))
        sessions = plugin.in_use(alternating, cred(value))
        assert sessions is not None and len(sessions) == 1 and "from 127.0.0.1 " in sessions[0]
        assert "Original-password-987" not in sessions[0]
        # single-user: one role holds old and new password, so its sessions say nothing about the old one
        assert plugin.in_use(make_ctx("single-user"), cred(value)) is None


# -- awkward role names ------------------------------------------------------------------------------------------


WEIRD = 'we"ird; role'


def test_weird_role_names_single_user(pg_server: PgServer, plugin: PostgresPlugin) -> None:
    user = f"{WEIRD} {uuid.uuid4().hex[:6]}'--"
    try:
        pg_server.make_role(user, "Weird-password-123")
        ctx = make_ctx("single-user", policy=NASTY_POLICY)
        current = cred(pg_server.secret(user, "Weird-password-123"))
        pending = cred(plugin.create(ctx, current), Stage.PENDING)
        plugin.stage(ctx, current, pending)
        plugin.test(ctx, pending)
        assert_password(pg_server, user, pending["password"], "Weird-password-123")
        plugin.unstage(ctx, current, pending)
        assert_password(pg_server, user, "Weird-password-123", pending["password"])
    finally:
        pg_server.drop_role(user)


def test_weird_role_names_alternating(pg_server: PgServer, plugin: PostgresPlugin, admin: dict[str, Any]) -> None:
    user = f"{WEIRD} {uuid.uuid4().hex[:6]}"
    clone = f"{user}_clone"
    try:
        ctx, current = alternating_setup(pg_server, admin, user, "Weird-password-456")
        pending = cred(plugin.create(ctx, current), Stage.PENDING)
        assert pending["username"] == clone
        plugin.stage(ctx, current, pending)
        assert pg_server.is_member(clone, user)
        plugin.test(ctx, pending)
        assert_password(pg_server, clone, pending["password"])
        plugin.revoke(ctx, cred(current.value, Stage.PREVIOUS), cred(pending.value))
        assert not pg_server.can_login(user, "Weird-password-456")
        assert_password(pg_server, clone, pending["password"])
        plugin.unstage(ctx, cred(pending.value), cred(current.value, Stage.PENDING))
        assert_password(pg_server, clone, pending["password"])
    finally:
        pg_server.drop_role(clone)
        pg_server.drop_role(user)


# -- the plaintext never reaches the server ------------------------------------------------------------------------


VERIFIER_IN_LOG = re.compile(r"PASSWORD '(SCRAM-SHA-256\$[^']+)'")


def test_plaintext_passwords_never_reach_the_server_log(
    pg_server: PgServer, plugin: PostgresPlugin, admin: dict[str, Any], roles: Callable[[str], str]
) -> None:
    """The fixture runs the server with log_statement=all: every statement the plugin sends is in the log."""
    start = pg_server.log_size()
    seen: list[str] = [admin["password"]]

    single = roles("single")
    pg_server.make_role(single, "Single-old-password-1")
    ctx = make_ctx("single-user", policy=NASTY_POLICY)
    current = cred(pg_server.secret(single, "Single-old-password-1"))
    pending = cred(plugin.create(ctx, current), Stage.PENDING)
    seen += [current["password"], pending["password"]]
    plugin.stage(ctx, current, pending)
    plugin.test(ctx, pending)
    plugin.unstage(ctx, current, pending)
    plugin.stage(ctx, current, pending)

    alt = roles("alt")
    actx, acurrent = alternating_setup(pg_server, admin, alt, "Alt-old-password-12")
    apending = cred(plugin.create(actx, acurrent), Stage.PENDING)
    seen += [acurrent["password"], apending["password"]]
    plugin.stage(actx, acurrent, apending)
    plugin.test(actx, apending)
    plugin.revoke(actx, cred(acurrent.value, Stage.PREVIOUS), cred(apending.value))
    plugin.unstage(actx, cred(apending.value), cred(acurrent.value, Stage.PENDING))

    log = pg_server.log_text(start)
    # The log really holds the plugin's statements (so the check below is not vacuous) ...
    assert "ALTER ROLE" in log and "CREATE ROLE" in log
    verifiers = VERIFIER_IN_LOG.findall(log)
    assert verifiers
    # ... what went over the wire for PENDING was its verifier, computed on the client ...
    assert any(scram_matches(v, pending["password"]) for v in verifiers)
    assert any(scram_matches(v, apending["password"]) for v in verifiers)
    # ... and no plaintext password, in any quoting, is anywhere in it.
    for secret in seen:
        assert secret not in log
        assert secret.replace("'", "''") not in log
    # pg_stat_statements is not loaded here; pg_stat_activity shows the same statement text as the log.


def test_errors_never_hold_the_password_even_with_odd_hosts(plugin: PostgresPlugin) -> None:
    """A host that does not resolve: the message names plan, host and user, and not the password."""
    value = {
        "engine": "postgres", "host": "db.invalid", "port": 5432, "username": "app",
        "password": "Secret-in-message-1", "dbname": "postgres",
    }  # fmt: skip
    with pytest.raises((TransientError, StepError)) as caught:
        plugin.test(make_ctx("single-user"), cred(value, Stage.PENDING))
    message = str(caught.value)
    assert "db.invalid:5432" in message and "app" in message and PLAN in message
    no_secret_in(message, "Secret-in-message-1")
    chained = caught.value.__cause__
    if chained is not None:
        no_secret_in(str(chained), "Secret-in-message-1")
    assert not isinstance(chained, psycopg.Error) or "Secret-in-message-1" not in repr(chained)
