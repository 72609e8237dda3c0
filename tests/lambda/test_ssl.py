"""The secret's "ssl" key means what it means in AWS's sample functions, and a secret that asks for TLS gets it
verified: true (or "true") -> TLS required and the certificate verified; false (or "false") -> no TLS; absent or
anything else -> TLS when the server offers it, else plain.

Checked against servers that speak TLS with a throwaway CA and refuse plain connections for the test's users:
MariaDB (tests/servers/mariadb.py, users with REQUIRE SSL) and a PostgreSQL started here whose pg_hba.conf has only
`hostssl` lines. A login that works proves TLS; a refused one proves none was used. A secret with "ssl": true
verifies against ROTATOR_CA_BUNDLE (the function's CA option), and fails against a store that lacks the CA.
"""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from rotator_plugins.rotation.mysql import MySQLPlugin
from rotator_plugins.rotation.mysql import ssl_choice as mysql_ssl_choice
from rotator_plugins.rotation.postgres import SECRET, PostgresPlugin, ssl_choice

from rotator.errors import StepError, TestFailed, TransientError
from rotator.model import Credential, PasswordPolicy, RotationContext, Stage
from tests.fakes.throwaway_ca import make_throwaway_tls
from tests.servers.mariadb import MariaDbServer
from tests.servers.postgres import PgServer, ServerUnavailable
from tests.servers.watch import unavailable as _unavailable

from .conftest import Function
from .rotation_service import SecretsManagerService

CHOICES = [
    (True, True),
    ("true", True),
    ("TRUE", True),
    (False, False),
    ("false", False),
    ("False", False),
    ("yes", None),  # the samples only know "true" and "false": anything else means "try TLS, else plain"
    (1, None),
    (None, None),
]


@pytest.mark.parametrize(("value", "expected"), CHOICES)
def test_ssl_values_read_as_the_samples_read_them(value: Any, expected: bool | None) -> None:
    assert ssl_choice(value) is expected
    assert mysql_ssl_choice(value) is expected


def ctx() -> RotationContext:
    return RotationContext("tls", uuid.uuid4().hex, "tls/secret", "single-user", {}, PasswordPolicy(),
                           read_secret=lambda _arn: Credential("", {}))  # fmt: skip


def with_ssl(value: dict[str, Any], ssl: Any) -> Credential:
    if ssl != "absent":
        value = {**value, "ssl": ssl}
    return Credential(uuid.uuid4().hex, value, frozenset({Stage.PENDING}))


# -- MariaDB -------------------------------------------------------------------------------------------------------


@pytest.fixture
def tls_user(mariadb_server: MariaDbServer) -> Iterator[tuple[str, str]]:
    user, password = f"tls_{uuid.uuid4().hex[:8]}", "Tls-" + uuid.uuid4().hex
    mariadb_server.make_user(user, password, extra="REQUIRE SSL")
    yield user, password
    mariadb_server.drop_user(user)


@pytest.mark.parametrize("ssl", ["absent", "maybe", False, "false"])
def test_mariadb_tls_when_offered_none_when_false(
    mariadb_server: MariaDbServer, tls_user: tuple[str, str], ssl: Any
) -> None:
    pending = with_ssl(mariadb_server.secret(*tls_user), ssl)
    if ssl_choice(pending.get("ssl")) is False:
        with pytest.raises(TestFailed, match="1045"):  # REQUIRE SSL refuses a plain login
            MySQLPlugin({}, None).test(ctx(), pending)
    else:
        MySQLPlugin({}, None).test(ctx(), pending)


def test_mariadb_ssl_true_is_verified(mariadb_server: MariaDbServer, tls_user: tuple[str, str]) -> None:
    pending = with_ssl(mariadb_server.secret(*tls_user), True)
    MySQLPlugin({"ssl_ca": str(mariadb_server.ca_path)}, None).test(ctx(), pending)
    with pytest.raises(StepError, match=r"certificate|ssl_ca") as failed:  # the system store lacks the test CA
        MySQLPlugin({}, None).test(ctx(), pending)
    assert not isinstance(failed.value, TransientError)


def test_a_lambda_rotation_of_a_tls_secret_verifies_with_the_ca_bundle(
    mariadb_server: MariaDbServer,
    tls_user: tuple[str, str],
    service: SecretsManagerService,
    make_function: Callable[..., Function],
) -> None:
    user, password = tls_user
    arn = service.create(mariadb_server.secret(user, password, ssl="true"))
    with pytest.raises(StepError, match=r"certificate|ssl_ca"):
        service.rotate(make_function(), arn)  # no CA bundle: verification fails, nothing changes at the server
    assert mariadb_server.can_login(user, password, tls=True)
    token = service.holder(arn, "AWSPENDING")
    assert token
    service.rotate(make_function({"ROTATOR_CA_BUNDLE": str(mariadb_server.ca_path)}), arn, token=token, start=False)
    after = service.value(arn)
    assert after["ssl"] == "true" and mariadb_server.can_login(user, after["password"], tls=True)


# -- PostgreSQL ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pg_tls() -> Iterator[tuple[PgServer, Path]]:
    """A PostgreSQL that only accepts TLS over TCP (pg_hba.conf: hostssl lines only), with a throwaway CA."""
    tls_dir = Path(tempfile.mkdtemp(prefix="rotator-pgtls-"))
    tls = make_throwaway_tls(tls_dir)
    ca, cert, key = tls.ca_cert, tls.server_cert, tls.server_key
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        for path in (tls_dir, cert, key):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    try:
        server = PgServer.start(extra_options=("-c ssl=on", f"-c ssl_cert_file={cert}", f"-c ssl_key_file={key}"))
    except ServerUnavailable as exc:
        _unavailable(str(exc))
        raise
    try:
        (server.datadir / "pg_hba.conf").write_text("local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\n")
        with server.admin_conn() as conn:
            conn.execute("SELECT pg_reload_conf()")
        yield server, ca
    finally:
        server.stop()
        shutil.rmtree(tls_dir, ignore_errors=True)


@pytest.fixture
def pg_tls_user(pg_tls: tuple[PgServer, Path]) -> Iterator[dict[str, Any]]:
    server, _ca = pg_tls
    user, password = f"tls_{uuid.uuid4().hex[:8]}", "Tls-" + uuid.uuid4().hex
    server.make_role(user, password)
    yield server.secret(user, password)
    server.drop_role(user)


@pytest.mark.parametrize("ssl", ["absent", "maybe", False, "false"])
def test_postgres_tls_when_offered_none_when_false(pg_tls_user: dict[str, Any], ssl: Any) -> None:
    pending = with_ssl(pg_tls_user, ssl)
    if ssl_choice(pending.get("ssl")) is False:
        with pytest.raises(TestFailed, match=r"no pg_hba\.conf entry|no encryption"):
            PostgresPlugin({}, None).test(ctx(), pending)
    else:
        PostgresPlugin({}, None).test(ctx(), pending)


def test_postgres_ssl_true_is_verified(pg_tls: tuple[PgServer, Path], pg_tls_user: dict[str, Any]) -> None:
    _server, ca = pg_tls
    pending = with_ssl(pg_tls_user, "true")
    PostgresPlugin({"sslrootcert": str(ca)}, None).test(ctx(), pending)
    plugin = PostgresPlugin({}, None)
    assert plugin._connect_args(SECRET.login(ctx(), "test", pending, "PENDING"))["sslmode"] == "verify-full"
    with pytest.raises(StepError, match="certificate verify failed") as failed:  # the system store lacks the CA
        PostgresPlugin({}, None).test(ctx(), pending)
    assert "Tls-" not in str(failed.value)
