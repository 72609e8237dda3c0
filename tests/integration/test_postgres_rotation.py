"""PostgreSQL rotations end to end through the `rotator` command, against a real throwaway server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.pg_plans import pg_plan_config
from tests.servers.postgres import PgServer


@pytest.mark.parametrize("strategy", ["single-user", "alternating-users"])
def test_rotation_grace_and_revoke(tmp_path: Path, pg_server: PgServer, strategy: str) -> None:
    plan = pg_plan_config(tmp_path, pg_server, strategy, grace="0")
    plan.cli.config.write_text(plan.cli.config.read_text().replace('grace = "0"', 'grace = "1h"'))
    old = plan.stage("CURRENT")
    result = plan.cli.run("rotate-now", plan.plan_id, "--json")
    assert result.code == 0, result.stdout + result.stderr
    new = plan.stage("CURRENT")
    assert new["password"] != old["password"]
    assert plan.logs_in(new)
    assert plan.stage("PREVIOUS") == old
    # during grace, PREVIOUS still logs in only with alternating users
    assert plan.logs_in(old) is (strategy == "alternating-users")
    if strategy == "alternating-users":
        assert new["username"] == plan.clone and pg_server.is_member(plan.clone, plan.username)
    # end the grace period: a revoke-now rotation revokes what it supersedes, then its own PREVIOUS
    result = plan.cli.run("rotate-now", plan.plan_id, "--revoke-old", "now", "--json")
    assert result.code == 0, result.stdout
    assert not plan.logs_in(old) and not plan.logs_in(new)  # two rotations back, and the one just revoked
    assert plan.logs_in(plan.stage("CURRENT"))
    plan.assert_invariants()


def test_revoke_after_grace_by_resume(tmp_path: Path, pg_server: PgServer) -> None:
    plan = pg_plan_config(tmp_path, pg_server, "alternating-users", grace="1s")
    old = plan.stage("CURRENT")
    assert plan.cli.run("rotate-now", plan.plan_id).code == 0
    assert plan.logs_in(old)
    import time

    time.sleep(1.5)
    result = plan.cli.run("resume", "--json")
    assert result.code == 0, result.stdout
    assert not plan.logs_in(old)
    history = plan.cli.run("history", plan.plan_id, "--json").json()
    assert history[0]["state"] == "succeeded" and history[0]["steps"][-1]["step"] == "revoke"


@pytest.mark.parametrize("strategy", ["single-user", "alternating-users"])
def test_failing_step_rolls_back(tmp_path: Path, pg_server: PgServer, strategy: str) -> None:
    plan = pg_plan_config(tmp_path, pg_server, strategy)
    before = plan.stage("CURRENT")
    result = plan.cli.run("rotate-now", plan.plan_id, "--json", env={"ROTATOR_FAILPOINTS": "after-test=error"})
    assert result.code == 1
    [outcome] = result.json()["results"]
    assert outcome["outcome"] == "rolled_back"
    assert plan.stage("CURRENT") == before and plan.logs_in(before)
    assert plan.stage("PENDING") is None
    history = plan.cli.run("history", plan.plan_id, "--json").json()
    assert history[0]["state"] == "rolled_back"
    assert [s["step"] for s in history[0]["steps"] if s["action"] == "rollback"] == ["stage", "create"]
    if strategy == "alternating-users":
        assert not any(pg_server.can_login(plan.clone, v["password"]) for v in (before,))
    plan.assert_invariants()


def test_wrong_current_password_rolls_back_cleanly_without_resume(tmp_path: Path, pg_server: PgServer) -> None:
    """The role's password was changed behind the rotator's back: stage is refused at login (one attempt: an
    authentication failure is never retried), before anything was sent, so there is nothing to compensate: the run
    ends rolled back with PENDING discarded, and after the operator stores the real password the next rotate-now
    works without `resume`."""
    plan = pg_plan_config(tmp_path, pg_server, "single-user")
    pg_server.make_role(plan.username, "changed-behind-our-back-0000")
    result = plan.cli.run("rotate-now", plan.plan_id, "--json")
    assert result.code == 1
    [outcome] = result.json()["results"]
    assert outcome["outcome"] == "rolled_back" and "LoginRefused" in outcome["error"]
    assert "rotator reconcile" in outcome["fix"] or "CURRENT value" in outcome["fix"]
    assert "changed-behind-our-back" not in result.stdout + result.stderr
    assert plan.stage("PENDING") is None
    [run] = plan.cli.run("history", plan.plan_id, "--json").json()
    assert run["state"] == "rolled_back"
    assert [(s["step"], s["action"], s["status"]) for s in run["steps"]] == [
        ("create", "forward", "succeeded"),
        ("stage", "forward", "refused"),  # one attempt, refused at login: nothing to undo at the server
        ("create", "rollback", "succeeded"),  # discard PENDING
    ]
    plan.cli.seed(plan.secret, pg_server.secret(plan.username, "changed-behind-our-back-0000"))
    assert plan.cli.run("rotate-now", plan.plan_id).code == 0
    plan.assert_invariants()


@pytest.mark.parametrize("strategy", ["single-user", "alternating-users"])
def test_role_names_with_quotes_spaces_and_semicolons(tmp_path: Path, pg_server: PgServer, strategy: str) -> None:
    plan = pg_plan_config(tmp_path, pg_server, strategy, username='we"ird; DROP ROLE x; --')
    result = plan.cli.run("rotate-now", plan.plan_id, "--revoke-old", "now", "--json")
    assert result.code == 0, result.stdout + result.stderr
    plan.assert_invariants()
    result = plan.cli.run("rotate-now", plan.plan_id, "--revoke-old", "now", "--json")
    assert result.code == 0 and plan.stage("CURRENT")["username"] == plan.username  # alternated back
    plan.assert_invariants()


def test_two_concurrent_rotate_now_on_one_plan(tmp_path: Path, pg_server: PgServer) -> None:
    plan = pg_plan_config(tmp_path, pg_server, "single-user")
    # the first holds the plan for a while: a failpoint-free slow path is the real SCRAM login work, so run 2
    procs = [plan.cli.popen("rotate-now", plan.plan_id, "--json") for _ in range(2)]
    outcomes = []
    for proc in procs:
        code = proc.wait(timeout=120)
        data = json.loads(proc.stdout.read())
        outcomes.append((code, data["results"][0]["outcome"], data["results"][0]["error"]))
    succeeded = [o for o in outcomes if o[1] == "awaiting_revoke"]
    busy = [o for o in outcomes if o[1] == "busy"]
    assert len(succeeded) + len(busy) == 2 and succeeded
    for code, _outcome, error in busy:
        assert code == 1 and "busy" in error
    assert len(plan.cli.run("history", plan.plan_id, "--json").json()) == len(succeeded)
    plan.assert_invariants()


def test_no_secret_in_output_logs_state_or_server_log(tmp_path: Path, pg_server: PgServer) -> None:
    plan = pg_plan_config(tmp_path, pg_server, "alternating-users")
    log_start = pg_server.log_size()
    outputs = [
        plan.cli.run("rotate-now", plan.plan_id, "--log-level", "debug"),
        plan.cli.run("rotate-now", plan.plan_id, "--log-level", "debug", "--revoke-old", "now", "--json"),
        plan.cli.run(
            "rotate-now", plan.plan_id, "--log-level", "debug", env={"ROTATOR_FAILPOINTS": "after-stage=error"}
        ),
        plan.cli.run("status"),
        plan.cli.run("history", "--json"),
        plan.cli.run("resume", "--log-level", "debug"),
    ]
    passwords = {v["password"] for v in (plan.stage("CURRENT"), plan.stage("PREVIOUS")) if v}
    text = "\n".join(o.stdout + o.stderr for o in outputs)
    assert "step done" in text  # debug logging really ran
    files = b"".join(p.read_bytes() for p in plan.cli.state_files())
    server_log = pg_server.log_text(log_start)
    assert "ALTER ROLE" in server_log  # the server logged our statements, with the verifier only
    for password in passwords:
        assert password not in text
        assert password.encode() not in files
        assert password not in server_log


def test_single_user_stage_falls_back_to_previous(tmp_path: Path, pg_server: PgServer) -> None:
    """As AWS's sample: when CURRENT no longer logs in but PREVIOUS does (a database restored from before the
    last rotation), stage logs in with PREVIOUS and the rotation succeeds."""
    plan = pg_plan_config(tmp_path, pg_server, "single-user")
    first = plan.stage("CURRENT")
    assert plan.cli.run("rotate-now", plan.plan_id).code == 0
    pg_server.make_role(plan.username, first["password"])  # the "restore": the role has PREVIOUS's password
    assert not plan.logs_in(plan.stage("CURRENT"))
    result = plan.cli.run("rotate-now", plan.plan_id, "--json")
    assert result.code == 0, result.stdout + result.stderr
    plan.assert_invariants()
