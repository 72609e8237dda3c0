"""Consumer-aware revoke against real targets: before revoking PREVIOUS the engine asks the plugin whether the old
credential is still in use (PostgreSQL and MariaDB: sessions of the previous user; IAM: the old key used after
promote), waits up to the plan's revoke_deadline, then revokes and records who was still on it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from rotator_plugins.rotation.aws_iam_key import AwsIamKeyPlugin
from rotator_plugins.rotation.mysql import MySQLPlugin
from rotator_plugins.rotation.postgres import PostgresPlugin

from rotator.components import ComponentSetup
from rotator.engine.runner import BoundPlan, Runner
from rotator.journal.sqlite import SqliteJournal
from rotator.local_store import LocalStore, create_key_file
from rotator.model import RunState, Stage
from tests.servers.aws import MotoServer
from tests.servers.mariadb import MariaDbServer
from tests.servers.postgres import PgServer

SECRET, ADMIN = "db/app", "db/admin"


@pytest.fixture
def local(tmp_path: Path) -> Iterator[tuple[LocalStore, SqliteJournal]]:
    create_key_file(tmp_path / "store.key")
    store = LocalStore({}, ComponentSetup(name="local", config_dir=tmp_path, state_dir=tmp_path))
    journal = SqliteJournal(tmp_path / "journal.db")
    yield store, journal
    store.close()
    journal.close()


def at(journal: SqliteJournal, hours: float) -> Runner:
    """A runner whose clock is `hours` ahead: grace and deadlines pass without sleeping."""
    return Runner(journal, clock=lambda: datetime.now(UTC) + timedelta(hours=hours))


def plan(store: LocalStore, plugin: Any, strategy: str, deadline: str = "6h") -> BoundPlan:
    hours = float(deadline.rstrip("h"))
    return BoundPlan(
        plan_id=f"plan-{uuid.uuid4().hex[:6]}",
        secret_id=SECRET,
        store_name="local",
        store=store,
        plugin=plugin,
        strategy=strategy,
        grace=timedelta(minutes=10),
        revoke_deadline=timedelta(hours=hours),
    )


def test_postgres_revoke_waits_for_a_session_on_the_old_role(pg_server: PgServer, local) -> None:
    store, journal = local
    user = f"orders{uuid.uuid4().hex[:6]}"
    pg_server.make_role(user, "Original-password-0001")
    store.put_current(ADMIN, pg_server.secret(pg_server.superuser, pg_server.superuser_password))
    store.put_current(SECRET, pg_server.secret(user, "Original-password-0001", masterarn=ADMIN))
    bp = plan(store, PostgresPlugin({}, None), "alternating-users")
    outcome = Runner(journal).rotate(bp)
    assert store.get(SECRET)["username"] == f"{user}_clone"
    with pg_server.tcp_conn(user, "Original-password-0001"):  # a consumer that has not moved yet
        [waiting] = at(journal, 1).revoke_due(bp)
        assert not waiting.revoked
        run = journal.get_run(outcome.run_id)
        assert run.state is RunState.AWAITING_REVOKE
        [line] = run.details["previous_in_use"]
        assert "127.0.0.1" in line and "Original-password-0001" not in line
        assert pg_server.can_login(user, "Original-password-0001"), "PREVIOUS must keep working while in use"
    [revoked] = at(journal, 2).revoke_due(bp)
    assert revoked.revoked and not pg_server.can_login(user, "Original-password-0001")
    assert journal.get_run(outcome.run_id).details["previous_in_use"] == []


def test_postgres_revoke_goes_ahead_at_the_deadline(pg_server: PgServer, local) -> None:
    store, journal = local
    user = f"billing{uuid.uuid4().hex[:6]}"
    pg_server.make_role(user, "Original-password-0002")
    store.put_current(ADMIN, pg_server.secret(pg_server.superuser, pg_server.superuser_password))
    store.put_current(SECRET, pg_server.secret(user, "Original-password-0002", masterarn=ADMIN))
    bp = plan(store, PostgresPlugin({}, None), "alternating-users", deadline="2h")
    outcome = Runner(journal).rotate(bp)
    with pg_server.tcp_conn(user, "Original-password-0002"):
        at(journal, 1).revoke_due(bp)
        [revoked] = at(journal, 4).revoke_due(bp)
        assert revoked.revoked
        assert not pg_server.can_login(user, "Original-password-0002")
    details = journal.get_run(outcome.run_id).details
    assert len(details["revoked_while_in_use"]) == 1 and "127.0.0.1" in details["revoked_while_in_use"][0]


def test_mysql_revoke_waits_for_a_session_on_the_old_user(mariadb_server: MariaDbServer, local) -> None:
    store, journal = local
    user = f"shop{uuid.uuid4().hex[:6]}"
    mariadb_server.make_user(user, "Original-password-0003")
    store.put_current(ADMIN, mariadb_server.secret("root", mariadb_server.root_password))
    store.put_current(SECRET, mariadb_server.secret(user, "Original-password-0003", masterarn=ADMIN))
    bp = plan(store, MySQLPlugin({}, None), "alternating-users")
    outcome = Runner(journal).rotate(bp)
    with mariadb_server.tcp_conn(user, "Original-password-0003"):
        [waiting] = at(journal, 1).revoke_due(bp)
        assert not waiting.revoked
        assert journal.get_run(outcome.run_id).details["previous_in_use"]
        assert mariadb_server.can_login(user, "Original-password-0003")
    [revoked] = at(journal, 2).revoke_due(bp)
    assert revoked.revoked and not mariadb_server.can_login(user, "Original-password-0003")


@pytest.mark.parametrize("used_after_promote", [True, False], ids=["old-key-used", "old-key-idle"])
def test_iam_revoke_waits_when_the_old_key_was_used_after_promote(
    moto_server: MotoServer, local, used_after_promote: bool
) -> None:
    store, journal = local
    iam = moto_server.client("iam")
    user = f"app-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=user)
    key = iam.create_access_key(UserName=user)["AccessKey"]
    old = {"UserName": user, "AccessKeyId": key["AccessKeyId"], "SecretAccessKey": key["SecretAccessKey"]}
    store.put_current(SECRET, old)
    plugin = AwsIamKeyPlugin({"endpoint_url": moto_server.endpoint_url, "region": moto_server.region})
    bp = plan(store, plugin, "single-user", deadline="3h")
    outcome = Runner(journal).rotate(bp)
    if used_after_promote:  # a consumer still signing with the old key (moto records the key's last use)
        boto3.client(
            "sts",
            endpoint_url=moto_server.endpoint_url,
            region_name=moto_server.region,
            aws_access_key_id=old["AccessKeyId"],
            aws_secret_access_key=old["SecretAccessKey"],
        ).get_caller_identity()
    [first] = at(journal, 1).revoke_due(bp)
    keys = {k["AccessKeyId"]: k["Status"] for k in iam.list_access_keys(UserName=user)["AccessKeyMetadata"]}
    details = journal.get_run(outcome.run_id).details
    if used_after_promote:
        assert not first.revoked and keys[old["AccessKeyId"]] == "Active"
        [line] = details["previous_in_use"]
        assert old["AccessKeyId"] in line and "after promote" in line and old["SecretAccessKey"] not in line
        [revoked] = at(journal, 5).revoke_due(bp)  # past the deadline: revoked, and who was on it recorded
        assert revoked.revoked
        assert journal.get_run(outcome.run_id).details["revoked_while_in_use"] == [line]
    else:
        assert first.revoked and details["previous_in_use"] == []
    remaining = [k["AccessKeyId"] for k in iam.list_access_keys(UserName=user)["AccessKeyMetadata"]]
    assert remaining == [store.get(SECRET)["AccessKeyId"]] and store.get(SECRET, Stage.PENDING) is None
