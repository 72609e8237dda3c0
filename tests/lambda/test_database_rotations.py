"""The rotation function against real databases: throwaway PostgreSQL and MariaDB (password auth over TCP, so a
wrong password really fails), with Secrets Manager on moto's server, the steps invoked the way Secrets Manager
invokes them (tests/lambda/rotation_service.py).

The secrets are in AWS's sample shape, single user and multi user (``masterarn`` and the ``_clone`` user), and
rotate unchanged: every key but the password (and, alternating, the username) is kept as it was.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.servers.mariadb import MariaDbServer, account
from tests.servers.postgres import PgServer

from .conftest import Function, parsed_lines
from .rotation_service import STEPS, SecretsManagerService, sample_event

ALTERNATING_ENV = {"ROTATOR_STRATEGY": "alternating-users"}


@dataclass
class Database:
    """One engine under test: how to make a user, check a login, and write the secret the samples rotate."""

    engine: str
    strategy: str
    make_user: Callable[[str, str], None]
    drop_user: Callable[[str], None]
    can_login: Callable[[str, str], bool]
    secret: Callable[..., dict[str, Any]]
    admin_arn: str | None = None

    @property
    def env(self) -> dict[str, str]:
        return dict(ALTERNATING_ENV) if self.strategy == "alternating-users" else {}


def _postgres(pg: PgServer, service: SecretsManagerService, strategy: str) -> Iterator[Database]:
    made: list[str] = []

    def make_user(name: str, password: str) -> None:
        made.append(name)
        pg.make_role(name, password)

    admin_arn = None
    if strategy == "alternating-users":
        admin = f"rds_admin_{uuid.uuid4().hex[:6]}"
        admin_password = uuid.uuid4().hex
        pg.make_role(admin, admin_password, createrole=True)
        made.append(admin)
        admin_arn = service.create(pg.secret(admin, admin_password), rotation=False)
    yield Database("postgres", strategy, make_user, pg.drop_role, pg.can_login, pg.secret, admin_arn)
    for name in made:
        pg.drop_role(f"{name}_clone")
        pg.drop_role(name)


def _mariadb(db: MariaDbServer, service: SecretsManagerService, strategy: str) -> Iterator[Database]:
    made: list[str] = []

    def make_user(name: str, password: str) -> None:
        made.append(name)
        db.make_user(name, password)
        db.execute(f"GRANT SELECT ON `mysql`.`db` TO {account(name)}")  # a grant the clone must get too

    admin_arn = None
    if strategy == "alternating-users":
        admin = f"rds_admin_{uuid.uuid4().hex[:6]}"
        admin_password = uuid.uuid4().hex
        db.make_user(admin, admin_password)
        db.execute(f"GRANT ALL PRIVILEGES ON *.* TO {account(admin)} WITH GRANT OPTION")
        made.append(admin)
        admin_arn = service.create(db.secret(admin, admin_password), rotation=False)
    yield Database("mariadb", strategy, make_user, db.drop_user, db.can_login, db.secret, admin_arn)
    for name in made:
        db.drop_user(f"{name}_clone")
        db.drop_user(name)


CASES = [
    ("postgres", "single-user"),
    ("postgres", "alternating-users"),
    ("mariadb", "single-user"),
    ("mariadb", "alternating-users"),
]


@pytest.fixture(params=CASES, ids=[f"{e}-{s}" for e, s in CASES])
def database(request: pytest.FixtureRequest, service: SecretsManagerService) -> Iterator[Database]:
    engine, strategy = request.param
    if engine == "postgres":
        yield from _postgres(request.getfixturevalue("pg_server"), service, strategy)
    else:
        yield from _mariadb(request.getfixturevalue("mariadb_server"), service, strategy)


def seed(database: Database, service: SecretsManagerService) -> tuple[str, str, str, dict[str, Any]]:
    """A user with a password, and a secret in the sample shape for it: (arn, user, password, value)."""
    user = f"app_{uuid.uuid4().hex[:8]}"
    password = "Init-" + uuid.uuid4().hex
    database.make_user(user, password)
    extra = {"masterarn": database.admin_arn} if database.admin_arn else {}
    value = database.secret(user, password, **extra)
    return service.create(value), user, password, value


def assert_rotated(database: Database, service: SecretsManagerService, arn: str, token: str, before: dict[str, Any],
                   previous_version: str) -> dict[str, Any]:  # fmt: skip
    """The token is AWSCURRENT, the old version AWSPREVIOUS, the value kept its shape, and the new password works."""
    labels = service.labels(arn)
    assert "AWSCURRENT" in labels[token]
    assert labels[previous_version] == {"AWSPREVIOUS"}
    # AWSPENDING is gone or beside AWSCURRENT: a legal end state (a later RotateSecret may start).
    assert all("AWSCURRENT" in stages for stages in labels.values() if "AWSPENDING" in stages)
    after = service.value(arn)
    changed = {key for key in set(before) | set(after) if before.get(key) != after.get(key)}
    expected = {"password", "username"} if database.strategy == "alternating-users" else {"password"}
    assert changed == expected, f"keys changed: {sorted(changed)}"
    assert database.can_login(after["username"], after["password"])
    return after


def test_four_steps_in_order_rotate_the_sample_secret(
    database: Database, service: SecretsManagerService, make_function: Callable[..., Function], log_lines: io.StringIO
) -> None:
    arn, user, password, value = seed(database, service)
    function = make_function(database.env)
    first_version = service.holder(arn, "AWSCURRENT")
    assert first_version

    token = service.rotate(function, arn)
    after = assert_rotated(database, service, arn, token, value, first_version)
    if database.strategy == "single-user":
        assert after["username"] == user
        assert not database.can_login(user, password), "single user: the old password stops at setSecret"
    else:
        assert after["username"] == f"{user}_clone", "the samples' _clone naming"
        assert database.can_login(user, password), "alternating: AWSPREVIOUS keeps working until the next rotation"

    # The second rotation: alternating swaps back to the original user.
    token2 = service.rotate(function, arn)
    after2 = assert_rotated(database, service, arn, token2, after, token)
    assert after2["username"] == user
    if database.strategy == "alternating-users":
        assert database.can_login(after["username"], after["password"]), "the clone is AWSPREVIOUS: still valid"
        # The third rotation's createSecret revokes AWSPREVIOUS (the clone) before anything else happens.
        token3 = service.start_rotation(arn)
        function(sample_event("createSecret", arn, token3))
        assert not database.can_login(after["username"], after["password"]), "AWSPREVIOUS revoked at createSecret"
        assert database.can_login(after2["username"], after2["password"]), "AWSCURRENT untouched"
        for step in STEPS[1:]:
            function(sample_event(step, arn, token3))
        assert_rotated(database, service, arn, token3, after2, token2)

    text = log_lines.getvalue()
    for secret in (password, after["password"], after2["password"]):
        assert secret not in text
    steps_logged = [line for line in parsed_lines(log_lines) if line.get("event") == "step done"]
    assert len(steps_logged) >= 8


def test_every_step_invoked_twice(
    database: Database, service: SecretsManagerService, make_function: Callable[..., Function]
) -> None:
    arn, _user, _password, value = seed(database, service)
    first_version = service.holder(arn, "AWSCURRENT")
    assert first_version
    function = make_function(database.env)
    token = service.rotate(function, arn, twice=True)
    after = assert_rotated(database, service, arn, token, value, first_version)
    # A second invocation of finishSecret found the token AWSCURRENT and returned at once.
    assert function(sample_event("finishSecret", arn, token))["result"] == "already-current"
    # And the same twice over, each step in a fresh container (as after Lambda scaled out or recycled).
    token2 = service.start_rotation(arn)
    for step in STEPS:
        for _ in range(2):
            make_function(database.env)(sample_event(step, arn, token2))
    assert_rotated(database, service, arn, token2, after, token)


@pytest.mark.parametrize(
    ("point", "failing_step"),
    [
        ("after-create", "createSecret"),
        ("after-stage", "setSecret"),
        ("after-test", "testSecret"),
        ("before-promote", "finishSecret"),
    ],
)
def test_crash_between_steps_then_the_whole_rotation_again(
    database: Database,
    service: SecretsManagerService,
    make_function: Callable[..., Function],
    monkeypatch: pytest.MonkeyPatch,
    point: str,
    failing_step: str,
) -> None:
    arn, user, password, value = seed(database, service)
    first_version = service.holder(arn, "AWSCURRENT")
    assert first_version
    token = service.start_rotation(arn)
    function = make_function(database.env)
    monkeypatch.setenv("ROTATOR_FAILPOINTS", f"{point}=error")
    for step in STEPS:
        if step == failing_step:
            with pytest.raises(RuntimeError, match=f"failpoint {point}"):
                function(sample_event(step, arn, token))
            break
        function(sample_event(step, arn, token))
    monkeypatch.delenv("ROTATOR_FAILPOINTS")

    # Nothing is promoted, and AWSCURRENT still logs in: after a failed testSecret the function put it back.
    assert service.holder(arn, "AWSCURRENT") == first_version
    if failing_step in ("createSecret", "testSecret") or database.strategy == "alternating-users":
        assert database.can_login(user, password)

    # Secrets Manager retries the whole rotation with the same token, here in a new container.
    service.rotate(make_function(database.env), arn, token=token, start=False)
    assert_rotated(database, service, arn, token, value, first_version)
