"""`rotator reconcile` and `reconcile = "auto"` against real servers: a CURRENT that no longer logs in (changed by
hand, restored from a backup) is reset through the plan's admin credential, proven, stored as CURRENT and recorded
in history; crash points inside a reconcile run converge under `rotator resume`."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.cli_env import CliEnv
from tests.pg_plans import pg_plan_config
from tests.servers.mariadb import MariaDbServer
from tests.servers.postgres import PgServer
from tests.servers.redis import RedisServer

DRIFTED = "changed-by-hand-Password-000000"


def _with_admin(plan_cli: CliEnv, pg: PgServer, secret: str) -> None:
    """Name the admin secret (the superuser) in the plan's secret, as AWS's samples do with masterarn."""
    plan_cli.seed("db/admin", pg.secret(pg.superuser, pg.superuser_password))
    value = plan_cli.run("store", "get", secret).json()
    plan_cli.seed(secret, {**value, "masterarn": "db/admin"})


@pytest.mark.parametrize("strategy", ["single-user", "alternating-users"])
def test_reconcile_resets_a_drifted_postgres_role(tmp_path: Path, pg_server: PgServer, strategy: str) -> None:
    plan = pg_plan_config(tmp_path, pg_server, strategy)
    _with_admin(plan.cli, pg_server, plan.secret)
    if strategy == "alternating-users":  # drift the role CURRENT names after a rotation (the clone)
        assert plan.cli.run("rotate-now", plan.plan_id, "--revoke-old", "now").code == 0
    drifted = plan.stage("CURRENT")
    pg_server.make_role(drifted["username"], DRIFTED)
    assert not plan.logs_in(drifted)

    dry = plan.cli.run("reconcile", plan.plan_id, "--dry-run", "--json")
    assert dry.code == 0, dry.stdout
    notes = " ".join(dry.json()["results"][0]["notes"])
    assert "CURRENT is refused" in notes and "admin 'postgres'" in notes and "PENDING" not in notes
    assert plan.stage("CURRENT") == drifted
    assert all(r["trigger"] != "reconcile" for r in plan.cli.run("history", "--json").json())  # changed nothing

    result = plan.cli.run("reconcile", plan.plan_id, "--reason", "ticket 42", "--json")
    assert result.code == 0, result.stdout + result.stderr
    [outcome] = result.json()["results"]
    assert outcome["outcome"] == "succeeded"
    current = plan.stage("CURRENT")
    assert current["username"] == drifted["username"] and current["password"] != drifted["password"]
    assert plan.logs_in(current) and not pg_server.can_login(drifted["username"], DRIFTED)
    run = plan.cli.run("history", plan.plan_id, "--json").json()[0]
    assert (run["trigger"], run["state"], run["reason"]) == ("reconcile", "succeeded", "ticket 42")
    assert run["operator"] and [s["step"] for s in run["steps"]] == ["create", "stage", "test", "promote"]
    plan.assert_invariants()

    again = plan.cli.run("reconcile", plan.plan_id, "--json")
    assert again.code == 0 and again.json()["results"][0]["outcome"] == "in-sync"
    assert plan.cli.run("rotate-now", plan.plan_id, "--revoke-old", "now").code == 0  # rotations go on as before
    plan.assert_invariants()
    texts = dry.stdout + result.stdout + result.stderr + again.stdout
    assert DRIFTED not in texts and current["password"] not in texts


def test_reconcile_without_an_admin_says_what_to_add(tmp_path: Path, pg_server: PgServer) -> None:
    plan = pg_plan_config(tmp_path, pg_server, "single-user")
    before = plan.stage("CURRENT")
    pg_server.make_role(plan.username, DRIFTED)
    result = plan.cli.run("reconcile", plan.plan_id, "--json")
    assert result.code == 1
    [outcome] = result.json()["results"]
    assert outcome["outcome"] == "rolled_back"
    assert '"masterarn"' in outcome["fix"] and "admin_secret_id" in outcome["fix"]
    assert plan.stage("CURRENT") == before and plan.stage("PENDING") is None
    [run] = plan.cli.run("history", plan.plan_id, "--json").json()
    assert run["trigger"] == "reconcile" and [(s["step"], s["status"]) for s in run["steps"]] == [("create", "refused")]


def test_reconcile_auto_repairs_then_rotates(tmp_path: Path, pg_server: PgServer) -> None:
    plan = pg_plan_config(tmp_path, pg_server, "single-user", extra='reconcile = "auto"')
    _with_admin(plan.cli, pg_server, plan.secret)
    pg_server.make_role(plan.username, DRIFTED)
    result = plan.cli.run("rotate-now", plan.plan_id, "--json")
    assert result.code == 0, result.stdout + result.stderr
    [outcome] = result.json()["results"]
    assert any("reconciled first" in note for note in outcome["notes"])
    runs = plan.cli.run("history", plan.plan_id, "--json").json()
    assert [(r["trigger"], r["state"]) for r in runs] == [("manual", "awaiting_revoke"), ("reconcile", "succeeded")]
    plan.assert_invariants()
    # with CURRENT in order, auto does nothing extra: one run, no reconcile
    assert plan.cli.run("rotate-now", plan.plan_id).code == 0
    assert len(plan.cli.run("history", plan.plan_id, "--json").json()) == 3


def test_reconcile_auto_needs_a_plugin_that_can(tmp_path: Path) -> None:
    config = tmp_path / "rotator.toml"
    config.write_text("""
[[plans]]
id = "k"
plugin = "generated"
secret = "app/k"
reconcile = "auto"
""")
    result = CliEnv(tmp_path, config).run("validate")
    assert result.code == 2 and "plans[0] (id 'k').reconcile" in result.stderr and "cannot reconcile" in result.stderr


def test_reconcile_mariadb_account(tmp_path: Path, mariadb_server: MariaDbServer) -> None:
    config = tmp_path / "rotator.toml"
    config.write_text("""
[rotator]
state_dir = "state"

[[plans]]
id = "maria"
plugin = {type = "mysql", admin_secret_id = "db/root"}
secret = "db/maria"
""")
    cli = CliEnv(tmp_path, config)
    assert cli.run("init").code == 0
    mariadb_server.make_user("recon_m", "first-Password-000000000001")
    cli.seed("db/maria", mariadb_server.secret("recon_m", "first-Password-000000000001"))
    cli.seed("db/root", mariadb_server.secret("root", mariadb_server.root_password))
    mariadb_server.make_user("recon_m", DRIFTED)
    result = cli.run("reconcile", "maria", "--json")
    assert result.code == 0, result.stdout + result.stderr
    current = cli.run("store", "get", "db/maria").json()
    assert mariadb_server.can_login("recon_m", current["password"])
    assert not mariadb_server.can_login("recon_m", DRIFTED)
    assert cli.run("history", "maria", "--json").json()[0]["trigger"] == "reconcile"


def test_reconcile_redis_user_keeps_only_the_new_password(tmp_path: Path, redis_server: RedisServer) -> None:
    config = tmp_path / "rotator.toml"
    config.write_text("""
[rotator]
state_dir = "state"

[[plans]]
id = "cache"
plugin = {type = "redis", admin_secret_id = "cache/admin"}
secret = "cache/app"
""")
    cli = CliEnv(tmp_path, config)
    assert cli.run("init").code == 0
    redis_server.make_user("recon_r", DRIFTED, "another-by-hand-Password-0000")
    cli.seed("cache/app", redis_server.secret("recon_r", "first-Password-000000000001"))
    cli.seed("cache/admin", redis_server.secret("default", redis_server.default_password))
    result = cli.run("reconcile", "--all", "--json")
    assert result.code == 0, result.stdout + result.stderr
    current = cli.run("store", "get", "cache/app").json()
    assert redis_server.can_login("recon_r", current["password"])
    assert not redis_server.can_login("recon_r", DRIFTED)
    assert len(redis_server.password_hashes("recon_r") or ()) == 1


RECONCILE_POINTS = [
    f"{when}-{step}" for step in ("create", "stage", "test", "promote") for when in ("before", "after")
] + [f"{when}-store-{op}" for op in ("put-pending", "promote") for when in ("before", "after")]


@pytest.mark.slow
@pytest.mark.parametrize("point", RECONCILE_POINTS)
def test_kill_inside_reconcile_then_resume(tmp_path: Path, pg_server: PgServer, point: str) -> None:
    plan = pg_plan_config(tmp_path, pg_server, "single-user")
    _with_admin(plan.cli, pg_server, plan.secret)
    pg_server.make_role(plan.username, DRIFTED)
    crashed = plan.cli.run("reconcile", plan.plan_id, env={"ROTATOR_FAILPOINTS": f"{point}=crash"})
    assert crashed.code == -signal.SIGKILL, crashed.stderr[-500:]
    assert plan.stage("CURRENT") != plan.stage("PENDING")  # invariant 3 while interrupted
    resumed = plan.cli.run("resume", "--json")
    [run] = plan.cli.run("history", plan.plan_id, "--json").json()[:1]
    assert run["trigger"] == "reconcile" and run["state"] in ("succeeded", "rolled_back")
    assert resumed.code == (1 if run["state"] == "rolled_back" else 0), resumed.stdout
    if run["state"] == "rolled_back":
        # its rollback resets the role to the stored CURRENT: store and server agree again
        assert plan.logs_in(plan.stage("CURRENT"))
        assert plan.cli.run("reconcile", plan.plan_id).code == 0
    plan.assert_invariants()
    assert not pg_server.can_login(plan.username, DRIFTED)
    passwords = {v["password"] for v in (plan.stage("CURRENT"), plan.stage("PREVIOUS")) if v}
    text = crashed.stdout + crashed.stderr + resumed.stdout + resumed.stderr
    for password in passwords | {DRIFTED}:
        assert password not in text
