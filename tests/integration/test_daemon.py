"""`rotator daemon`: fires due plans, sweeps due revokes, resumes interrupted runs at start, stops on SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.cli_env import CliEnv
from tests.integration.daemon_process import DaemonProcess

CONFIG = """
[rotator]
state_dir = "state"
revoke_sweep_seconds = 1

[[plans]]
id = "signing-key"
plugin = {type = "generated"}
secret = "app/signing-key"
schedule = "rate(1 day)"
grace = "2s"

[[plans]]
id = "manual-key"
plugin = {type = "generated"}
secret = "app/manual-key"
schedule = "manual"
"""


@pytest.fixture
def cli(tmp_path: Path) -> CliEnv:
    config = tmp_path / "rotator.toml"
    config.write_text(CONFIG)
    env = CliEnv(tmp_path, config)
    assert env.run("init").code == 0
    env.seed("app/signing-key", {"value": "s" * 43})
    env.seed("app/manual-key", {"value": "m" * 43})
    return env


def wait_for(predicate, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.3)
    return False


def stop(proc: subprocess.Popen[str]) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return code, proc.stderr.read()


def test_daemon_rotates_due_plans_and_revokes_after_grace(cli: CliEnv) -> None:
    old = cli.run("store", "get", "app/signing-key").json()
    proc = cli.popen("daemon", "--json-logs")
    try:
        assert wait_for(lambda: any(r["state"] == "succeeded" for r in cli.run("history", "--json").json()), 40)
    finally:
        code, logs = stop(proc)
    assert code == 0, logs[-2000:]
    runs = cli.run("history", "--json").json()
    assert [r["plan"] for r in runs] == ["signing-key"]  # the manual plan never runs on its own
    assert runs[0]["trigger"] == "schedule" and runs[0]["steps"][-1]["step"] == "revoke"
    assert cli.run("store", "get", "app/signing-key").json() != old
    events = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    assert any(e["event"] == "promoted; the new credential is live" and e["plan"] == "signing-key" for e in events)
    assert any(e["event"] == "daemon stopped" for e in events)
    for value in (old["value"], cli.run("store", "get", "app/signing-key").json()["value"]):
        assert value not in logs


def test_daemon_resumes_an_interrupted_run_at_start(cli: CliEnv) -> None:
    crashed = cli.run("rotate-now", "manual-key", env={"ROTATOR_FAILPOINTS": "after-stage=crash"})
    assert crashed.code == -signal.SIGKILL
    assert cli.run("history", "manual-key", "--json").json()[0]["state"] == "running"
    proc = cli.popen("daemon", "--json-logs")
    try:
        assert wait_for(lambda: cli.run("history", "manual-key", "--json").json()[0]["state"] != "running", 30)
    finally:
        code, logs = stop(proc)
    assert code == 0
    assert cli.run("history", "manual-key", "--json").json()[0]["state"] in ("awaiting_revoke", "succeeded")
    assert "interrupted run settled" in logs


def test_sighup_reloads_and_a_bad_config_is_refused(cli: CliEnv) -> None:
    daemon = DaemonProcess(cli.config)
    try:
        daemon.wait_for_event("promoted; the new credential is live", plan="signing-key", timeout=40)
        cli.config.write_text(CONFIG.replace('schedule = "manual"', 'schedule = "rate(oops)"'))
        daemon.signal(signal.SIGHUP)
        daemon.wait_for_event("reload refused: the new config is invalid; keeping the old one")
        assert daemon.count("config reloaded") == 0
        cli.config.write_text(CONFIG.replace('schedule = "manual"', 'schedule = "rate(1 day)"'))
        daemon.signal(signal.SIGHUP)
        daemon.wait_for_event("config reloaded")
        daemon.wait_for_event("promoted; the new credential is live", plan="manual-key", timeout=40)
    finally:
        code = daemon.stop()
    assert code == 0, daemon.log()[-2000:]
    [refused] = [e for e in daemon.events() if e["event"].startswith("reload refused")]
    assert "schedule" in refused["error"], refused
    assert [r["plan"] for r in cli.run("history", "--json").json()].count("manual-key") == 1
