"""`rotator daemon` as a service: /healthz and /metrics, a failed notification delivered on a later tick, a
required notifier holding back revoke, SIGTERM pausing a run at a safe step, catch-up spread after downtime."""

from __future__ import annotations

import json
import signal
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.cli_env import CliEnv
from tests.integration.daemon_process import DaemonProcess
from tests.integration.test_daemon import stop, wait_for


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Receiver(ThreadingHTTPServer):
    """A webhook receiver that answers 503 to its first `failures` requests."""

    failures = 0
    received: list[bytes]

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.received = []


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        server: Receiver = self.server  # type: ignore[assignment]
        server.received.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(503 if len(server.received) <= server.failures else 200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


def make_cli(tmp_path: Path, body: str) -> CliEnv:
    config = tmp_path / "rotator.toml"
    config.write_text(body)
    cli = CliEnv(tmp_path, config)
    assert cli.run("init").code == 0
    return cli


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - a loopback test URL
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def events(logs: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in logs.splitlines() if line.startswith("{")]


def test_healthz_and_metrics_report_rotations_without_secrets(tmp_path: Path) -> None:
    port = free_port()
    cli = make_cli(
        tmp_path,
        f"""
[rotator]
state_dir = "state"
revoke_sweep_seconds = 1
metrics_address = "127.0.0.1:{port}"

[[plans]]
id = "signing-key"
plugin = "generated"
secret = "app/signing-key"
schedule = "rate(1 day)"
grace = "0"
""",
    )
    cli.seed("app/signing-key", {"value": "seed-value-" + "s" * 40})
    proc = cli.popen("daemon", "--json-logs")
    try:
        assert wait_for(lambda: cli.run("history", "--json").json()[:1] and True, 30)
        assert wait_for(lambda: cli.run("history", "--json").json()[0]["state"] == "succeeded", 30)
        assert wait_for(lambda: get(f"http://127.0.0.1:{port}/healthz")[0] == 200, 10)
        code, body = get(f"http://127.0.0.1:{port}/healthz")
        health = json.loads(body)
        assert code == 200 and health["status"] == "ok" and health["plans"] == 1 and health["stuck_runs"] == 0
        code, metrics = get(f"http://127.0.0.1:{port}/metrics")
        assert code == 200
        assert 'rotator_runs_total{outcome="succeeded",trigger="schedule"} 1.0' in metrics
        assert 'rotator_credential_age_seconds{plan="signing-key"}' in metrics
        assert 'rotator_next_due_timestamp_seconds{plan="signing-key"}' in metrics
        assert "rotator_stuck_runs 0.0" in metrics
        assert 'rotator_step_duration_seconds_count{step="promote"} 1.0' in metrics
        assert get(f"http://127.0.0.1:{port}/nope")[0] == 404
        current = cli.run("store", "get", "app/signing-key").json()["value"]
    finally:
        code, logs = stop(proc)
    assert code == 0
    assert current not in metrics and current not in logs and "seed-value-" not in metrics


def test_failed_notification_is_delivered_on_a_later_tick_and_required_holds_back_revoke(
    tmp_path: Path, receiver: Receiver
) -> None:
    # The engine retries a transient failure within the run (4 tries): 5 failures make the run's delivery fail.
    receiver.failures = 5
    cli = make_cli(
        tmp_path,
        f"""
[rotator]
state_dir = "state"
revoke_sweep_seconds = 1
notify_retry_seconds = 2

[notifiers.deploy]
type = "webhook"
url = "http://127.0.0.1:{receiver.server_address[1]}/rotated"
allow_plain_http = true
required = true

[[plans]]
id = "api-token"
plugin = "generated"
secret = "app/api-token"
schedule = "manual"
grace = "0"
notify = ["deploy"]
""",
    )
    cli.seed("app/api-token", {"value": "first-token-" + "t" * 40})
    rotated = cli.run("rotate-now", "api-token", "--json")
    assert rotated.code == 0, rotated.stderr
    [result] = rotated.json()["results"]
    assert result["outcome"] == "awaiting_revoke" and not result["revoked"]  # grace 0, but the required one failed
    [row] = cli.run("status", "--json").json()
    assert row["failed_notifications"][0]["notifier"] == "deploy" and row["failed_notifications"][0]["required"]
    assert any("required notifier deploy" in w for w in row["revoke_waiting_for"])
    proc = cli.popen("daemon", "--json-logs")
    try:
        assert wait_for(lambda: cli.run("history", "--json").json()[0]["state"] == "succeeded", 40)
    finally:
        code, logs = stop(proc)
    assert code == 0, logs[-2000:]
    [run] = cli.run("history", "--json").json()
    assert run["notifications"] == [
        {"notifier": "deploy", "status": "succeeded", "required": True, "attempts": 2, "error": None}
    ]
    assert run["steps"][-1]["step"] == "revoke"
    assert len(receiver.received) == 6
    assert all(b"first-token-" not in body for body in receiver.received)
    assert cli.run("status", "--json").json()[0]["failed_notifications"] == []


def test_sigterm_pauses_the_run_at_a_safe_step_and_the_next_start_finishes_it(tmp_path: Path) -> None:
    cli = make_cli(
        tmp_path,
        """
[rotator]
state_dir = "state"
revoke_sweep_seconds = 1

[[plans]]
id = "slow"
plugin = "generated"
secret = "app/slow"
schedule = "rate(1 day)"
grace = "1h"
""",
    )
    cli.seed("app/slow", {"value": "first-" + "v" * 40})
    # The run holds after create; SIGTERM goes as soon as the daemon logs that the run started (read from its log
    # file, not by polling `history`, which under load took longer than the hold), well inside the 8 s hold.
    daemon = DaemonProcess(cli.config, {"ROTATOR_FAILPOINTS": "after-create=sleep:8"})
    try:
        daemon.wait_for_event("rotation started", plan="slow")
    finally:
        daemon.signal(signal.SIGTERM)
        code = daemon.stop()
    assert code == 0, daemon.log()[-2000:]
    [run] = cli.run("history", "--json").json()
    assert run["state"] == "running"  # paused, open for resume
    assert [s["step"] for s in run["steps"]] == ["create"] and run["steps"][0]["status"] == "succeeded"
    assert daemon.count("run paused for shutdown; it stays open for resume", plan="slow") == 1
    assert cli.run("store", "get", "app/slow").json()["value"] == "first-" + "v" * 40  # consumers unaffected
    again = DaemonProcess(cli.config)
    try:
        again.wait_for_event("interrupted run settled", plan="slow", outcome="awaiting_revoke")
    finally:
        code = again.stop()
    assert code == 0, again.log()[-2000:]
    runs = cli.run("history", "--json").json()
    assert len(runs) == 1 and runs[0]["run_id"] == run["run_id"]  # the same run finished, not a new one
    assert cli.run("store", "get", "app/slow", "--stage", "PENDING").code == 2  # not there: a usage error


def test_overdue_plans_start_spread_out_after_downtime(tmp_path: Path) -> None:
    plans = "\n".join(
        f"""
[[plans]]
id = "key{n}"
plugin = "generated"
secret = "app/key{n}"
schedule = "rate(1 day)"
grace = "1h"
"""
        for n in range(12)
    )
    cli = make_cli(
        tmp_path,
        f"""
[rotator]
state_dir = "state"
catch_up_spread_seconds = 4
{plans}
""",
    )
    for n in range(12):
        cli.seed(f"app/key{n}", {"value": f"first-{n}-" + "k" * 40})
    proc = cli.popen("daemon", "--json-logs")
    try:
        assert wait_for(lambda: len(cli.run("history", "--json").json()) == 12, 40)
    finally:
        code, _ = stop(proc)
    assert code == 0
    starts = sorted(datetime.fromisoformat(r["started_at"]) for r in cli.run("history", "--json").json())
    spread = (starts[-1] - starts[0]).total_seconds()
    assert spread >= 2.5, f"12 overdue plans started within {spread:.2f} s: the catch-up was not spread"
