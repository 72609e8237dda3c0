"""The `rotator` command end to end with the embedded defaults and the `generated` plugin."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from tests.cli_env import CliEnv

CONFIG = """
[rotator]
state_dir = "state"

[[plans]]
id = "signing-key"
plugin = {type = "generated", bytes = 32}
secret = "app/signing-key"
schedule = "rate(1 day)"
grace = "1h"
tags = ["web"]

[[plans]]
id = "api-token"
plugin = {type = "generated", encoding = "hex"}
secret = "app/api-token"
schedule = "cron(0 2 ? * SUN *)"
grace = "0"
tags = ["web", "api"]
"""


@pytest.fixture
def cli(tmp_path: Path) -> CliEnv:
    config = tmp_path / "rotator.toml"
    config.write_text(CONFIG)
    env = CliEnv(tmp_path, config)
    assert env.run("init").code == 0
    env.seed("app/signing-key", {"value": "s" * 43})
    env.seed("app/api-token", {"value": "a" * 64})
    return env


def test_init_makes_private_state(cli: CliEnv) -> None:
    state = cli.root / "state"
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE((state / "store.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((state / "store.db").stat().st_mode) == 0o600
    assert (state / "journal.db").exists()
    before = (state / "store.key").read_bytes()
    assert cli.run("init").code == 0  # idempotent: the key is kept
    assert (state / "store.key").read_bytes() == before


def test_rotate_now_then_status_history_and_store_get(cli: CliEnv) -> None:
    old = cli.run("store", "get", "app/signing-key").json()
    result = cli.run("rotate-now", "signing-key", "--reason", "test", "--json")
    assert result.code == 0, result.stderr
    data = result.json()
    assert data["succeeded"] == 1 and data["results"][0]["outcome"] == "awaiting_revoke"
    new = cli.run("store", "get", "app/signing-key").json()
    assert new["value"] != old["value"] and len(new["value"]) >= 43
    assert cli.run("store", "get", "app/signing-key", "--stage", "PREVIOUS").json() == old
    assert cli.run("store", "get", "app/signing-key", "--stage", "PENDING").code == 2

    status = {row["plan"]: row for row in cli.run("status", "--json").json()}
    assert status["signing-key"]["last_result"] == "awaiting_revoke"
    assert status["signing-key"]["revoke_due"] is not None
    assert status["api-token"]["last_result"] is None and status["api-token"]["overdue"]

    history = cli.run("history", "signing-key", "--json").json()
    assert history[0]["reason"] == "test" and history[0]["trigger"] == "manual"
    assert [s["step"] for s in history[0]["steps"]] == ["create", "stage", "test", "promote"]
    assert all(s["seconds"] is not None for s in history[0]["steps"])
    text = cli.run("history")
    assert text.code == 0 and "signing-key" in text.stdout


def test_tag_all_dry_run_and_revoke_now(cli: CliEnv) -> None:
    dry = cli.run("rotate-now", "--all", "--dry-run", "--json")
    assert dry.code == 0 and {r["outcome"] for r in dry.json()["results"]} == {"dry-run"}
    assert cli.run("history", "--json").json() == []  # a dry run changes nothing

    result = cli.run("rotate-now", "--tag", "web", "--revoke-old", "now", "--concurrency", "2", "--json")
    assert result.code == 0, result.stderr
    outcomes = {r["plan"]: r for r in result.json()["results"]}
    assert set(outcomes) == {"signing-key", "api-token"}
    assert all(r["outcome"] == "succeeded" and r["revoked"] for r in outcomes.values())

    table = cli.run("rotate-now", "--tag", "api")
    assert table.code == 0 and "api-token" in table.stdout and "1 succeeded, 0 failed" in table.stdout


def test_failure_exits_1_and_rolls_back(cli: CliEnv) -> None:
    before = cli.run("store", "get", "app/signing-key").json()
    result = cli.run("rotate-now", "signing-key", "--json", env={"ROTATOR_FAILPOINTS": "after-test=error"})
    assert result.code == 1
    [run] = result.json()["results"]
    assert run["outcome"] == "rolled_back" and "failpoint after-test" in run["error"]
    assert cli.run("store", "get", "app/signing-key").json() == before
    assert cli.run("store", "get", "app/signing-key", "--stage", "PENDING").code == 2
    assert cli.run("history", "signing-key", "--json").json()[0]["state"] == "rolled_back"


def test_usage_errors_exit_2(cli: CliEnv) -> None:
    assert cli.run("rotate-now").code == 2
    unknown = cli.run("rotate-now", "no-such-plan")
    assert unknown.code == 2 and "no plan named 'no-such-plan'" in unknown.stderr
    assert cli.run("rotate-now", "signing-key", "--revoke-old", "later").code == 2
    assert cli.run("rotate-now", "--tag", "nope").code == 2
    bad_json = cli.root / "bad.json"
    bad_json.write_text("{not json")
    result = cli.run("store", "put", "x", "--file", str(bad_json))
    assert result.code == 2 and "bad.json is not JSON" in result.stderr
    assert "Traceback" not in result.stderr


def test_no_secret_in_output_logs_or_state_files(cli: CliEnv) -> None:
    cli.run("rotate-now", "--all", "--json", "--log-level", "debug")
    outputs = [cli.run("rotate-now", "--all", "--log-level", "debug", "--revoke-old", "now")]
    outputs += [
        cli.run("status"),
        cli.run("history"),
        cli.run("status", "--json"),
        cli.run("history", "--json"),
        cli.run("resume", "--log-level", "debug"),
    ]
    outputs.append(
        cli.run(
            "rotate-now", "--all", "--json", "--log-level", "debug", env={"ROTATOR_FAILPOINTS": "after-stage=error"}
        )
    )
    secrets = set()
    for secret in ("app/signing-key", "app/api-token"):
        for stage in ("CURRENT", "PREVIOUS"):
            got = cli.run("store", "get", secret, "--stage", stage)
            if got.code == 0:
                secrets.add(got.json()["value"])
    assert len(secrets) == 4
    text = "\n".join(o.stdout + o.stderr for o in outputs)
    state_bytes = b"".join(p.read_bytes() for p in cli.state_files())
    for value in secrets:
        assert value not in text
        assert value.encode() not in state_bytes
    assert "debug" in text or "step done" in text  # debug logs were really on


def test_concurrent_rotate_now_on_one_plan(cli: CliEnv) -> None:
    procs = [cli.popen("rotate-now", "signing-key", "--json") for _ in range(4)]
    results = [(p.wait(timeout=120), json.loads(p.stdout.read() or "{}")) for p in procs]
    outcomes = sorted(r["results"][0]["outcome"] for _, r in results)
    assert outcomes.count("busy") + outcomes.count("awaiting_revoke") == 4
    assert "awaiting_revoke" in outcomes
    history = cli.run("history", "signing-key", "--json").json()
    assert len(history) == outcomes.count("awaiting_revoke")
    for code, data in results:
        assert code == (0 if data["results"][0]["outcome"] == "awaiting_revoke" else 1)
