"""The PostgreSQL plugin end to end through the `rotator` command, with each remote store: AWS Secrets Manager
(moto's server mode) and Vault KV v2 (a real OpenBao server, tests/servers/vault.py, the CLI logged in with
README's least-privilege policy and the consumer reading with its read-only token), both over real HTTP from the
CLI's own process, against a real throwaway PostgreSQL (scram-sha-256 over TCP, so a wrong password really fails).

Covers a rotation, a rotation that revokes at once, a failure before promote (rolled back: discard) and a failure
right after the store's promote (rolled back: unpromote), and what a consumer of the store reads each time.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hvac
import pytest

from tests.cli_env import CliEnv
from tests.servers.aws import MotoServer
from tests.servers.postgres import PgServer
from tests.servers.vault import VaultServer

VAULT_TOKEN_ENV = "ROTATOR_TEST_VAULT_TOKEN"
_counter = itertools.count()


@dataclass
class RemotePlan:
    cli: CliEnv
    pg: PgServer
    plan_id: str
    secret: str
    username: str
    env: dict[str, str]
    consumer_read: Any

    def run(self, *args: str, **kwargs: Any) -> Any:
        return self.cli.run(*args, env={**self.env, **kwargs.pop("env", {})}, **kwargs)

    def stage(self, stage: str) -> dict[str, Any] | None:
        result = self.run("store", "get", self.secret, "--stage", stage, "--store", "remote")
        return result.json() if result.code == 0 else None

    def logs_in(self, value: dict[str, Any] | None) -> bool:
        return value is not None and self.pg.can_login(value["username"], value["password"])


def store_table(kind: str, request: pytest.FixtureRequest) -> tuple[str, dict[str, str], Any]:
    """The [stores.remote] table, the environment the CLI needs, and a consumer's read of a secret."""
    if kind == "aws-secretsmanager":
        moto: MotoServer = request.getfixturevalue("moto_server")
        sm = moto.client("secretsmanager")

        def aws_read(secret: str) -> dict[str, Any]:
            value: dict[str, Any] = json.loads(sm.get_secret_value(SecretId=secret)["SecretString"])
            return value

        table = f'type = "aws-secretsmanager"\nregion = "{moto.region}"\nendpoint_url = "{moto.endpoint_url}"\n'
        return table, {}, aws_read
    vault: VaultServer = request.getfixturevalue("vault_server")
    kv = hvac.Client(url=vault.url, token=vault.consumer_token).secrets.kv.v2

    def vault_read(secret: str) -> dict[str, Any]:
        data: dict[str, Any] = kv.read_secret_version(path=f"rotator/{secret}", raise_on_deleted_version=True)["data"]
        return data["data"]

    table = (
        f'type = "vault-kv2"\nurl = "{vault.url}"\npath_prefix = "rotator"\n'
        f'auth = {{ method = "token", token = "env:{VAULT_TOKEN_ENV}" }}\n'
    )
    return table, {VAULT_TOKEN_ENV: vault.rotator_token}, vault_read


def remote_plan(root: Path, pg: PgServer, kind: str, strategy: str, request: pytest.FixtureRequest) -> RemotePlan:
    n = next(_counter)
    table, env, consumer_read = store_table(kind, request)
    plan_id, username = f"remote{n}", f"remote_app{n}"
    secret = f"db/{plan_id}-{root.name}"
    config = root / "rotator.toml"
    config.write_text(f"""
[rotator]
state_dir = "state"
step_timeout = 20

[stores.remote]
{table}
[[plans]]
id = "{plan_id}"
plugin = "postgres"
store = "remote"
secret = "{secret}"
strategy = "{strategy}"
grace = "1h"
""")
    plan = RemotePlan(CliEnv(root, config), pg, plan_id, secret, username, env, consumer_read)
    assert plan.run("init").code == 0
    pg.drop_role(username + "_clone")
    pg.drop_role(username)
    first = f"first-{n}-Password-000000000000"
    pg.make_role(username, first)
    value = pg.secret(username, first)
    if strategy == "alternating-users":
        admin = f"db/admin-{plan_id}-{root.name}"
        seed(plan, admin, pg.secret(pg.superuser, pg.superuser_password))
        value["masterarn"] = admin
    seed(plan, secret, value)
    return plan


def seed(plan: RemotePlan, secret: str, value: dict[str, Any]) -> None:
    path = plan.cli.root / "seed.json"
    path.write_text(json.dumps(value))
    result = plan.run("store", "put", secret, "--file", str(path), "--store", "remote")
    path.unlink()
    assert result.code == 0, result.stdout + result.stderr


STORES = ["aws-secretsmanager", "vault-kv2"]
STRATEGIES = ["single-user", "alternating-users"]


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("kind", STORES)
def test_rotation_and_revoke(
    tmp_path: Path, pg_server: PgServer, kind: str, strategy: str, request: pytest.FixtureRequest
) -> None:
    plan = remote_plan(tmp_path, pg_server, kind, strategy, request)
    old = plan.stage("CURRENT")
    assert plan.logs_in(old) and plan.consumer_read(plan.secret) == old
    result = plan.run("rotate-now", plan.plan_id, "--json")
    assert result.code == 0, result.stdout + result.stderr
    new = plan.stage("CURRENT")
    assert new is not None and new["password"] != old["password"] and plan.logs_in(new)
    assert plan.consumer_read(plan.secret) == new
    assert plan.stage("PREVIOUS") == old and plan.stage("PENDING") is None
    assert plan.logs_in(old) is (strategy == "alternating-users")  # grace: only a second user keeps working
    result = plan.run("rotate-now", plan.plan_id, "--revoke-old", "now", "--json")
    assert result.code == 0, result.stdout + result.stderr
    newest = plan.stage("CURRENT")
    assert plan.logs_in(newest) and not plan.logs_in(old) and not plan.logs_in(new)
    assert plan.consumer_read(plan.secret) == newest
    assert plan.stage("PENDING") is None


@pytest.mark.parametrize(
    ("failpoint", "undone"),
    [("after-test=error", ["stage", "create"]), ("after-store-promote=error", ["promote", "stage", "create"])],
    ids=["before-promote", "after-promote"],
)
@pytest.mark.parametrize("kind", STORES)
def test_failures_roll_back_through_the_store(
    tmp_path: Path,
    pg_server: PgServer,
    kind: str,
    failpoint: str,
    undone: list[str],
    request: pytest.FixtureRequest,
) -> None:
    plan = remote_plan(tmp_path, pg_server, kind, "single-user", request)
    before = plan.stage("CURRENT")
    result = plan.run("rotate-now", plan.plan_id, "--json", env={"ROTATOR_FAILPOINTS": failpoint})
    assert result.code == 1, result.stdout + result.stderr
    [outcome] = result.json()["results"]
    assert outcome["outcome"] == "rolled_back", outcome
    after = plan.stage("CURRENT")
    assert after == before and plan.logs_in(after)
    assert plan.consumer_read(plan.secret) == before
    assert plan.stage("PENDING") is None
    history = plan.run("history", plan.plan_id, "--json").json()
    assert [s["step"] for s in history[0]["steps"] if s["action"] == "rollback"] == undone
    result = plan.run("rotate-now", plan.plan_id, "--json")  # the next rotation works
    assert result.code == 0, result.stdout + result.stderr
    assert plan.logs_in(plan.stage("CURRENT"))
