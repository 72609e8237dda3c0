"""When a rotation goes wrong, against real servers: a step refused before it sent anything rolls back cleanly
(never "stuck"), a missing admin secret is a clear failure, `resume` says when it rolled back, and failure events
reach the notifiers that asked for them without a secret in them."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.cli_env import CliEnv
from tests.pg_plans import PgPlan, pg_plan_config
from tests.servers.mariadb import MariaDbServer
from tests.servers.postgres import PgServer
from tests.servers.redis import RedisServer


class EventReceiver(ThreadingHTTPServer):
    """A webhook receiver that keeps every event body it is sent."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _EventHandler)
        self.bodies: list[bytes] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/events"

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(body) for body in self.bodies]


class _EventHandler(BaseHTTPRequestHandler):
    server: EventReceiver

    def do_POST(self) -> None:
        self.server.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


@pytest.fixture
def receiver() -> Iterator[EventReceiver]:
    server = EventReceiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def refused_run_steps(cli: CliEnv, plan_id: str) -> list[tuple[str, str, str]]:
    [run] = cli.run("history", plan_id, "--json").json()[:1]
    assert run["state"] == "rolled_back", run
    return [(s["step"], s["action"], s["status"]) for s in run["steps"]]


def assert_clean_rollback(plan: PgPlan, before: dict[str, Any], result_json: dict[str, Any]) -> None:
    [outcome] = result_json["results"]
    assert outcome["outcome"] == "rolled_back", outcome
    assert plan.stage("PENDING") is None, "PENDING is discarded"
    assert plan.stage("CURRENT") == before
    assert refused_run_steps(plan.cli, plan.plan_id) == [
        ("create", "forward", "succeeded"),
        ("stage", "forward", "refused"),
        ("create", "rollback", "succeeded"),
    ]


# -- clean failure instead of stuck: PostgreSQL ----------------------------------------------------------------


def test_nologin_role_rolls_back_cleanly_and_rotates_once_fixed(tmp_path: Path, pg_server: PgServer) -> None:
    plan = pg_plan_config(tmp_path, pg_server, "single-user")
    before = plan.stage("CURRENT")
    pg_server.make_role(plan.username, before["password"], login=False)
    result = plan.cli.run("rotate-now", plan.plan_id, "--json")
    assert result.code == 1
    assert_clean_rollback(plan, before, result.json())
    assert "not permitted to log in" in result.json()["results"][0]["error"]
    pg_server.make_role(plan.username, before["password"], login=True)
    again = plan.cli.run("rotate-now", plan.plan_id, "--json")  # no `resume` needed
    assert again.code == 0, again.stdout
    plan.assert_invariants()


def test_unknown_host_rolls_back_cleanly(tmp_path: Path, pg_server: PgServer) -> None:
    plan = pg_plan_config(tmp_path, pg_server, "single-user")
    good = plan.stage("CURRENT")
    bad = {**good, "host": "no-such-host.invalid"}
    plan.cli.seed(plan.secret, bad)
    result = plan.cli.run("rotate-now", plan.plan_id, "--json")
    assert result.code == 1
    assert_clean_rollback(plan, bad, result.json())
    plan.cli.seed(plan.secret, good)
    assert plan.cli.run("rotate-now", plan.plan_id).code == 0
    plan.assert_invariants()


def test_target_down_for_the_whole_step_rolls_back_cleanly(tmp_path: Path, pg_server: PgServer) -> None:
    """Nothing listens on the port: every attempt is refused at connect, retried until the step's deadline
    (step_timeout = 2 here), then the run rolls back without needing the target."""
    plan = pg_plan_config(tmp_path, pg_server, "single-user")
    plan.cli.config.write_text(plan.cli.config.read_text().replace("step_timeout = 20", "step_timeout = 2"))
    good = plan.stage("CURRENT")
    down = {**good, "port": unused_port()}
    plan.cli.seed(plan.secret, down)
    result = plan.cli.run("rotate-now", plan.plan_id, "--json")
    assert result.code == 1
    assert_clean_rollback(plan, down, result.json())
    [outcome] = result.json()["results"]
    assert "TargetUnreachable" in outcome["error"]
    assert outcome["step_seconds"]["stage"] >= 1.5, "retried for the step's deadline, not four quick tries"
    plan.cli.seed(plan.secret, good)
    assert plan.cli.run("rotate-now", plan.plan_id).code == 0
    plan.assert_invariants()


def test_alternating_without_the_admin_secret_fails_clearly(tmp_path: Path, pg_server: PgServer) -> None:
    plan = pg_plan_config(tmp_path, pg_server, "alternating-users")
    before = {**plan.stage("CURRENT"), "masterarn": "db/no-such-admin"}
    plan.cli.seed(plan.secret, before)
    result = plan.cli.run("rotate-now", plan.plan_id, "--json")
    assert result.code == 1
    [outcome] = result.json()["results"]
    assert outcome["outcome"] == "rolled_back"
    assert "db/no-such-admin" in outcome["error"] and "rotator store put db/no-such-admin" in outcome["fix"]
    assert plan.stage("PENDING") is None and plan.stage("CURRENT") == before
    [run] = plan.cli.run("history", plan.plan_id, "--json").json()
    assert [(s["step"], s["status"]) for s in run["steps"]] == [("create", "refused")]  # nothing to undo
    assert not pg_server.role_exists(plan.clone)


def test_resume_exits_1_when_the_run_it_finished_was_rolled_back(tmp_path: Path, pg_server: PgServer) -> None:
    plan = pg_plan_config(tmp_path, pg_server, "single-user")
    before = plan.stage("CURRENT")
    crashed = plan.cli.run(
        "rotate-now", plan.plan_id, env={"ROTATOR_FAILPOINTS": "after-test=error,before-rollback-unstage=crash"}
    )
    assert crashed.code != 0
    resumed = plan.cli.run("resume", "--json")
    assert resumed.code == 1, resumed.stdout
    [result] = [r for r in resumed.json()["results"] if r["plan"] == plan.plan_id]
    assert result["outcome"] == "rolled_back" and result["ok"] is False
    assert plan.stage("CURRENT") == before and plan.logs_in(before)
    assert plan.cli.run("resume").code == 0  # nothing left: 0
    plan.assert_invariants()


# -- clean failure instead of stuck: MariaDB and Redis ---------------------------------------------------------


def _mariadb_cli(tmp_path: Path, server: MariaDbServer, user: str, password: str, extra: str = "") -> CliEnv:
    config = tmp_path / "rotator.toml"
    config.write_text(f"""
[rotator]
state_dir = "state"
step_timeout = 2

[[plans]]
id = "maria"
plugin = "mysql"
secret = "db/maria"
{extra}
""")
    cli = CliEnv(tmp_path, config)
    assert cli.run("init").code == 0
    server.make_user(user, password)
    cli.seed("db/maria", server.secret(user, password))
    return cli


def test_mariadb_drifted_and_down_roll_back_cleanly(tmp_path: Path, mariadb_server: MariaDbServer) -> None:
    cli = _mariadb_cli(tmp_path, mariadb_server, "drift_m", "first-Password-000000000001")
    mariadb_server.make_user("drift_m", "changed-by-hand-Password-0002")
    result = cli.run("rotate-now", "maria", "--json")
    assert result.code == 1 and result.json()["results"][0]["outcome"] == "rolled_back"
    assert refused_run_steps(cli, "maria")[1] == ("stage", "forward", "refused")
    down = {**cli.run("store", "get", "db/maria").json(), "port": unused_port()}
    cli.seed("db/maria", down)
    result = cli.run("rotate-now", "maria", "--json")
    assert result.code == 1 and result.json()["results"][0]["outcome"] == "rolled_back"
    assert cli.run("store", "get", "db/maria", "--stage", "PENDING").code != 0
    cli.seed("db/maria", mariadb_server.secret("drift_m", "changed-by-hand-Password-0002"))
    assert cli.run("rotate-now", "maria").code == 0
    current = cli.run("store", "get", "db/maria").json()
    assert mariadb_server.can_login("drift_m", current["password"])


def test_redis_drifted_password_rolls_back_cleanly(tmp_path: Path, redis_server: RedisServer) -> None:
    config = tmp_path / "rotator.toml"
    config.write_text("""
[rotator]
state_dir = "state"

[[plans]]
id = "cache"
plugin = "redis"
secret = "cache/app"
""")
    cli = CliEnv(tmp_path, config)
    assert cli.run("init").code == 0
    redis_server.make_user("drift_r", "changed-by-hand-Password-0002")
    cli.seed("cache/app", redis_server.secret("drift_r", "first-Password-000000000001"))
    result = cli.run("rotate-now", "cache", "--json")
    assert result.code == 1 and result.json()["results"][0]["outcome"] == "rolled_back"
    assert refused_run_steps(cli, "cache")[1] == ("stage", "forward", "refused")
    assert redis_server.password_hashes("drift_r") is not None and len(redis_server.password_hashes("drift_r")) == 1


# -- failure events --------------------------------------------------------------------------------------------


def test_failure_events_reach_subscribed_notifiers_without_secrets(
    tmp_path: Path, pg_server: PgServer, receiver: EventReceiver
) -> None:
    extra = f"""notify = ["alerts", "deploy"]

[notifiers.alerts]
type = "webhook"
url = "{receiver.url}"
allow_plain_http = true
events = ["credential.rotation_failed", "credential.rotation_stuck"]

[notifiers.deploy]
type = "webhook"
url = "{receiver.url}?deploy"
allow_plain_http = true
"""
    plan = pg_plan_config(tmp_path, pg_server, "single-user", extra=extra)
    before = plan.stage("CURRENT")
    failed = plan.cli.run("rotate-now", plan.plan_id, "--json", env={"ROTATOR_FAILPOINTS": "after-test=error"})
    assert failed.code == 1
    [event] = receiver.events()  # only the notifier that subscribed to failures; `deploy` hears of none
    assert event["event"] == "credential.rotation_failed" and event["plan"] == plan.plan_id
    assert "failpoint after-test" in event["error"] and "old credential still works" in event["action"]
    [run] = plan.cli.run("history", plan.plan_id, "--json", "-n", "1").json()
    assert event["run_id"] == run["run_id"] and event["previous_version"] == run["previous_version"]  # CURRENT
    receiver.bodies.clear()

    stuck = plan.cli.run(
        "rotate-now",
        plan.plan_id,
        "--json",
        env={"ROTATOR_FAILPOINTS": "after-test=error,before-rollback-unstage=error"},
    )
    assert stuck.code == 1 and stuck.json()["results"][0]["outcome"] == "stuck", stuck.stdout
    [event] = receiver.events()
    assert event["event"] == "credential.rotation_stuck" and "rotator resume" in event["action"]
    [run] = plan.cli.run("history", plan.plan_id, "--json", "-n", "1").json()
    assert run["details"]["alerts"] == {"credential.rotation_stuck": {"alerts": "delivered"}}

    receiver.bodies.clear()
    assert plan.cli.run("resume").code == 1  # the stuck run is rolled back now (its failpoint is gone)
    ok = plan.cli.run("rotate-now", plan.plan_id, "--json")
    assert ok.code == 0
    kinds = sorted(e["event"] for e in receiver.events())
    # the resumed rollback is a rotation_failed for `alerts`; the good rotation a rotated event for `deploy`
    assert kinds == ["credential.rotated", "credential.rotation_failed"], [
        (e["event"], e["run_id"], e["trigger"]) for e in receiver.events()
    ]

    passwords = {v["password"] for v in (before, plan.stage("CURRENT"), plan.stage("PREVIOUS")) if v}
    everything = b"".join(receiver.bodies) + failed.stdout.encode() + stuck.stdout.encode()
    for password in passwords:
        assert password.encode() not in everything


def test_repeated_failures_alert_once_per_n_and_status_shows_them(
    tmp_path: Path, pg_server: PgServer, receiver: EventReceiver
) -> None:
    extra = f"""notify = ["alerts"]

[notifiers.alerts]
type = "webhook"
url = "{receiver.url}"
allow_plain_http = true
events = ["credential.rotation_stuck"]
"""
    plan = pg_plan_config(tmp_path, pg_server, "single-user", extra=extra)
    plan.cli.config.write_text(
        plan.cli.config.read_text().replace("step_timeout = 20", "step_timeout = 20\nalert_after_failures = 2")
    )
    pg_server.make_role(plan.username, "drifted-by-hand-Password-000")
    for _ in range(4):
        assert plan.cli.run("rotate-now", plan.plan_id).code == 1
    events = receiver.events()
    assert [e["event"] for e in events] == ["credential.rotation_stuck"] * 2  # after the 2nd and the 4th
    assert "failed 2 times in a row" in events[0]["action"] and "failed 4 times in a row" in events[1]["action"]
    assert "rotator reconcile" in events[0]["action"]
    [row] = plan.cli.run("status", "--json").json()
    assert row["consecutive_failures"] == 4 and row["last_result"] == "rolled_back"
    table = plan.cli.run("status")
    assert "failed 4 times in a row" in table.stdout.replace("\n", " ").replace("│", " ").replace("  ", " ")
