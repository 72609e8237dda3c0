"""The PostgreSQL plugin's fast path against a real server: verifiers made once on the client, the test login with
their SCRAM keys (libpq 18) proving exactly what a password login proves, and a pooled admin connection reused
across rotations."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from rotator_plugins.rotation.postgres import PostgresPlugin
from rotator_plugins.rotation.postgres_connections import LIBPQ_TAKES_SCRAM_KEYS, ScramKeyring

from rotator.errors import TestFailed
from rotator.model import Stage
from tests.integration.test_postgres_plugin import assert_password, cred, make_ctx
from tests.servers.postgres import PgServer, scram_matches
from tests.servers.watch import unavailable as _unavailable

ADMIN = "db/admin"


@pytest.fixture
def roles(pg_server: PgServer) -> Iterator[Callable[[str], str]]:
    """Unique role names for one test, dropped afterwards."""
    made: list[str] = []

    def name(prefix: str) -> str:
        made.append(f"{prefix}_{uuid.uuid4().hex[:8]}")
        return made[-1]

    yield name
    for role in made:
        pg_server.drop_role(role)


@pytest.fixture
def plugin() -> PostgresPlugin:
    return PostgresPlugin({"connect_timeout": 3}, None)


def test_keyring_verifiers_are_postgres_verifiers(pg_server: PgServer, roles: Callable[[str], str]) -> None:
    user = roles("ring")
    keyring = ScramKeyring()
    verifier = keyring.verifier(user, "Generated-Password-0123456789")
    assert verifier is not None and scram_matches(verifier, "Generated-Password-0123456789")
    assert keyring.verifier(user, "pässwörd-with-umlauts") is None  # libpq SASLpreps those
    pg_server.make_role(user, "placeholder-Password-000000")
    with pg_server.admin_conn() as conn:
        conn.execute(psycopg.sql.SQL("ALTER ROLE {} PASSWORD {}").format(
            psycopg.sql.Identifier(user), psycopg.sql.Literal(verifier)))  # fmt: skip
    assert_password(pg_server, user, "Generated-Password-0123456789", "placeholder-Password-000000")


def test_the_test_login_with_keys_proves_what_the_server_holds(
    pg_server: PgServer, roles: Callable[[str], str], plugin: PostgresPlugin
) -> None:
    if not LIBPQ_TAKES_SCRAM_KEYS:  # psycopg-binary bundles libpq 18; a system libpq may be older
        _unavailable("libpq older than 18 has no scram_client_key")
    user = roles("keys")
    pg_server.make_role(user, "first-Password-00000000000")
    ctx = make_ctx("single-user")
    current = cred(pg_server.secret(user, "first-Password-00000000000"))
    pending = cred(plugin.create(ctx, current), Stage.PENDING)
    plugin.stage(ctx, current, pending)
    assert plugin._keyring.keys(user, pending["password"]) is not None  # made here: the test uses its keys
    plugin.test(ctx, pending)
    # Someone set the same password with another salt: the kept keys no longer match the server's verifier, so
    # the login falls back to the password (as a consumer's would) and the keys are forgotten.
    pg_server.make_role(user, pending["password"])
    plugin.test(ctx, pending)
    assert plugin._keyring.keys(user, pending["password"]) is None
    # and a password the server does not hold fails, keys or not
    pg_server.make_role(user, "someone-elses-Password-0000")
    with pytest.raises(TestFailed):
        plugin.test(ctx, pending)


def _backends(pg: PgServer, user: str) -> list[tuple[Any, ...]]:
    with pg.admin_conn() as conn:
        return conn.execute(
            "SELECT pid, backend_start FROM pg_stat_activity WHERE usename = %s ORDER BY pid", (user,)
        ).fetchall()


def test_single_user_with_an_admin_stages_on_one_pooled_connection(
    pg_server: PgServer, roles: Callable[[str], str]
) -> None:
    admin_user = roles("pool_admin")
    pg_server.make_role(admin_user, "admin-Password-000000000000", createrole=True)
    plugin = PostgresPlugin({"connect_timeout": 3, "admin_secret_id": ADMIN}, None)
    ctx = make_ctx("single-user", {ADMIN: pg_server.secret(admin_user, "admin-Password-000000000000")})
    seen = set()
    for n in range(3):
        user = roles(f"pooled{n}")
        pg_server.make_role(user, "first-Password-00000000000")
        current = cred(pg_server.secret(user, "first-Password-00000000000"))
        pending = cred(plugin.create(ctx, current), Stage.PENDING)
        plugin.stage(ctx, current, pending)
        plugin.test(ctx, pending)
        assert_password(pg_server, user, pending["password"], "first-Password-00000000000")
        seen.update(_backends(pg_server, admin_user))
        # unstage through the admin too: CURRENT is back, PENDING refused
        plugin.unstage(ctx, current, pending)
        assert_password(pg_server, user, "first-Password-00000000000", pending["password"])
    assert len(seen) == 1, f"one admin backend served every stage and unstage: {seen}"
    other_plan = PostgresPlugin({"admin_secret_id": ADMIN}, None)  # another plan's plugin shares the pool
    user = roles("pooled_other")
    pg_server.make_role(user, "first-Password-00000000000")
    current = cred(pg_server.secret(user, "first-Password-00000000000"))
    other_plan.stage(ctx, current, cred(other_plan.create(ctx, current), Stage.PENDING))
    assert set(_backends(pg_server, admin_user)) <= seen
    plugin._admin_pool.close()
    assert _backends(pg_server, admin_user) == [] or all(row not in seen for row in _backends(pg_server, admin_user))
