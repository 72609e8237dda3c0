"""Plans that cannot start, configs that validate refuses, and dry runs that tell the truth, through the real
`rotator` command: the daemon backs a broken plan off (recorded, logged once per attempt, never a hot loop);
every command that runs refuses what `validate` refuses; a dry run describes the real steps and probes them."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from tests.cli_env import CliEnv
from tests.integration.test_daemon import stop
from tests.pg_plans import pg_plan_config
from tests.servers.postgres import PgServer

REPO = Path(__file__).resolve().parents[2]

TWO_PLANS = """
[rotator]
state_dir = "state"
revoke_sweep_seconds = 1

[[plans]]
id = "unseeded"
plugin = "generated"
secret = "app/unseeded"
schedule = "rate(1 day)"

[[plans]]
id = "other"
plugin = "generated"
secret = "app/other"
schedule = "rate(1 day)"
"""


@pytest.mark.parametrize("broken", ["secret not seeded", "store key missing"])
def test_daemon_backs_off_a_plan_that_cannot_start(tmp_path: Path, broken: str) -> None:
    config = tmp_path / "rotator.toml"
    config.write_text(TWO_PLANS)
    cli = CliEnv(tmp_path, config)
    if broken == "store key missing":
        (tmp_path / "state").mkdir(mode=0o700)  # as systemd's StateDirectory= makes it: there, and empty
    else:
        assert cli.run("init").code == 0
    proc = cli.popen("daemon", "--json-logs")
    time.sleep(6)
    code, logs = stop(proc)
    assert code == 0, logs[-2000:]
    lines = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    failures = [e for e in lines if e.get("event") == "rotation could not start; nothing was changed"]
    assert sorted(e["plan"] for e in failures) == ["other", "unseeded"], "one line per attempt, one attempt each"
    assert len(logs.splitlines()) < 200, "no hot loop"
    status = {row["plan"]: row for row in cli.run("status", "--json").json()}
    for plan in ("other", "unseeded"):
        assert status[plan]["last_result"] == "failed" and status[plan]["last_error"]
        assert status[plan]["next_due"] is not None and not status[plan]["overdue"], "backed off, not due at once"
    [run] = cli.run("history", "unseeded", "--json").json()
    assert run["state"] == "failed" and run["trigger"] == "schedule" and run["steps"] == []
    expected = "rotator store put" if broken == "secret not seeded" else "store.key"
    assert expected in run["error"] + json.dumps(failures)


def test_the_daemon_exits_2_when_it_cannot_run_at_all(tmp_path: Path) -> None:
    config = tmp_path / "rotator.toml"
    config.write_text(TWO_PLANS)  # state_dir does not exist: no journal
    proc = CliEnv(tmp_path, config).popen("daemon")
    assert proc.wait(timeout=60) == 2
    assert "rotator init" in proc.stderr.read()


BAD_NOTIFIER = """
[rotator]
state_dir = "state"

[notifiers.unused]
type = "webhook"
url = "https://hooks.example.internal/x"
no_such_option = 1

[[plans]]
id = "k"
plugin = "generated"
secret = "app/k"
"""


@pytest.mark.parametrize(
    "argv",
    [("rotate-now", "k"), ("rotate-now", "--all", "--dry-run"), ("resume",), ("reconcile", "k"), ("daemon",)],
    ids=lambda argv: " ".join(argv),
)
def test_what_validate_refuses_nothing_runs(tmp_path: Path, argv: tuple[str, ...]) -> None:
    config = tmp_path / "rotator.toml"
    config.write_text(BAD_NOTIFIER.replace("no_such_option = 1\n", ""))
    cli = CliEnv(tmp_path, config)
    assert cli.run("init").code == 0
    cli.seed("app/k", {"value": "v" * 43})
    config.write_text(BAD_NOTIFIER)
    validate = cli.run("validate")
    assert validate.code == 2 and "notifiers.unused.no_such_option" in validate.stderr
    result = cli.run(*argv, timeout=60)
    assert result.code == 2, result.stdout + result.stderr
    assert "notifiers.unused.no_such_option" in result.stderr
    assert cli.run("history", "--json").json() == []  # nothing ran


def test_the_shipped_example_dry_run_passes(tmp_path: Path) -> None:
    for name in ("example.toml", "seed-signing-key.json"):
        shutil.copy(REPO / "config" / name, tmp_path / name)
    cli = CliEnv(tmp_path, tmp_path / "example.toml")
    assert cli.run("init").code == 0
    assert cli.run("store", "put", "app/signing-key", "--file", str(tmp_path / "seed-signing-key.json")).code == 0
    dry = cli.run("rotate-now", "--all", "--dry-run", "--json")
    assert dry.code == 0, dry.stdout + dry.stderr
    [result] = dry.json()["results"]
    notes = "\n".join(result["notes"])
    assert result["outcome"] == "dry-run" and "steps: create" in notes and "revoke" in notes
    assert "PENDING" not in dry.stdout
    assert cli.run("history", "--json").json() == []


@pytest.mark.parametrize("strategy", ["single-user", "alternating-users"])
def test_postgres_dry_run_probes_and_describes(tmp_path: Path, pg_server: PgServer, strategy: str) -> None:
    plan = pg_plan_config(tmp_path, pg_server, strategy)
    dry = plan.cli.run("rotate-now", plan.plan_id, "--dry-run", "--json")
    assert dry.code == 0, dry.stdout
    notes = "\n".join(dry.json()["results"][0]["notes"])
    assert f"CURRENT logs in as role {plan.username!r}" in notes and "strategy " + strategy in notes
    if strategy == "alternating-users":
        assert "admin 'postgres'" in notes and repr(plan.clone) in notes and "created on first use" in notes
    else:
        assert "single-user window" in notes
    assert "revoke: the old credential is revoked after grace 1:00:00" in notes
    assert "PENDING" not in dry.stdout

    # a probe that fails is reported as the error, still without a PENDING in it
    pg_server.make_role(plan.username, "drifted-by-hand-Password-0000")
    if strategy == "alternating-users":
        plan.cli.seed("db/admin", pg_server.secret(pg_server.superuser, "wrong-admin-Password-000000"))
    refused = plan.cli.run("rotate-now", plan.plan_id, "--dry-run", "--json")
    assert refused.code == 1
    [result] = refused.json()["results"]
    assert result["outcome"] == "error" and "CURRENT" in result["error"] and "PENDING" not in refused.stdout
    assert plan.cli.run("history", "--json").json() == []


def test_dry_run_probes_notifiers_and_a_required_one_must_answer(tmp_path: Path) -> None:
    import socket
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    body = """
[rotator]
state_dir = "state"

[notifiers.deploy]
type = "webhook"
url = "http://127.0.0.1:{port}/rotated"
allow_plain_http = true
required = true

[notifiers.hook]
type = "command"
argv = ["true"]
events = ["credential.rotated", "credential.rotation_failed"]

[[plans]]
id = "k"
plugin = "generated"
secret = "app/k"
notify = ["deploy", "hook"]
"""
    config = tmp_path / "rotator.toml"
    try:
        config.write_text(body.format(port=server.server_address[1]))
        cli = CliEnv(tmp_path, config)
        assert cli.run("init").code == 0
        cli.seed("app/k", {"value": "v" * 43})
        dry = cli.run("rotate-now", "k", "--dry-run", "--json")
        assert dry.code == 0, dry.stdout
        notes = "\n".join(dry.json()["results"][0]["notes"])
        assert "notify deploy (required: revoke waits for it)" in notes and "answers" in notes
        assert "notify hook: events credential.rotated, credential.rotation_failed" in notes
        assert "is executable" in notes
        assert server.RequestHandlerClass and dry.code == 0  # the probe connected; it posted nothing
        config.write_text(body.format(port=dead_port))
        down = cli.run("rotate-now", "k", "--dry-run", "--json")
        assert down.code == 1
        [result] = down.json()["results"]
        assert result["outcome"] == "error" and "required notifier deploy does not answer" in result["error"]
        assert cli.run("history", "--json").json() == []
    finally:
        server.shutdown()
