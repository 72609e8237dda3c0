"""The daemon's part of the credential lifecycle, as a real `rotator daemon` process: a manual plan's overdue
reminder reaches its notifier (and not again within remind_every), /metrics shows its due date and the imported
credential's real age, an imported credential is not rotated at start,
and a signed leak report on the daemon's endpoint gets a PostgreSQL password refused, before and after a reload,
with the leaked password never in the daemon's log."""

from __future__ import annotations

import json
import secrets
import signal
import socket
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests

from rotator.leak_reports import ROUTE, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from tests.cli_env import CliEnv
from tests.integration.daemon_process import DaemonProcess
from tests.servers.postgres import PgServer

RECORD_EVENT = "import os; open('events.log', 'a').write(os.environ['ROTATOR_EVENT_JSON'] + chr(10))"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def post_signed(url: str, key: bytes, body: object) -> requests.Response:
    data = json.dumps(body).encode()
    stamp = int(time.time())
    headers = {TIMESTAMP_HEADER: str(stamp), SIGNATURE_HEADER: sign(key, stamp, data)}
    return requests.post(url, data=data, headers=headers, timeout=10)


def test_reminders_import_and_leak_reports_in_the_daemon(tmp_path: Path, pg_server: PgServer) -> None:
    port, metrics_port = free_port(), free_port()
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    config = tmp_path / "rotator.toml"
    config.write_text(f"""
[rotator]
state_dir = "state"
step_timeout = 20
revoke_sweep_seconds = 0.5
metrics_address = "127.0.0.1:{metrics_port}"

[rotator.leak_reports]
listen = "127.0.0.1:{port}"
key = "env:TEST_LEAK_KEY"

[notifiers.log]
type = "command"
argv = ["{sys.executable}", "-c", "{RECORD_EVENT}"]

[[plans]]
id = "vendor"
plugin = "manual"
owner = "team-payments"
secret = "vendor/key"
due = {yesterday}
notify = ["log"]

[[plans]]
id = "app-db"
plugin = "postgres"
secret = "db/app"
strategy = "single-user"
schedule = "rate(30 days)"
""")
    cli = CliEnv(tmp_path, config)
    assert cli.run("init").code == 0
    pg_server.drop_role("lifecycle_app")
    password = "Imported-Password-000000000001"
    pg_server.make_role("lifecycle_app", password)
    credential = tmp_path / "credential.json"
    credential.write_text(json.dumps(pg_server.secret("lifecycle_app", password)))
    made = (datetime.now(UTC) - timedelta(days=3)).date().isoformat()
    imported = cli.run("import", "app-db", "--file", str(credential), "--rotated-at", made, "--verify")
    assert imported.code == 0, imported.stderr
    key = secrets.token_urlsafe(32)
    daemon = DaemonProcess(config, env={"TEST_LEAK_KEY": key})
    try:
        daemon.wait_for_event("daemon running")
        daemon.wait_for_event("reminder sent", plan="vendor", reminder="credential.overdue")
        events = [json.loads(line) for line in (tmp_path / "events.log").read_text().splitlines()]
        assert [(e["event"], e["plan"], e["owner"]) for e in events] == [
            ("credential.overdue", "vendor", "team-payments")
        ]
        assert events[0]["due_at"].startswith(yesterday)
        metrics = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
        due_line = next(
            line
            for line in metrics.splitlines()
            if line.startswith('rotator_next_due_timestamp_seconds{plan="vendor"}')
        )
        assert abs(float(due_line.split()[-1]) - datetime.fromisoformat(yesterday).replace(tzinfo=UTC).timestamp()) < 1
        age_line = next(
            line for line in metrics.splitlines() if line.startswith('rotator_credential_age_seconds{plan="app-db"}')
        )
        assert 3 * 86400 - 3600 < float(age_line.split()[-1]) < 4 * 86400  # the imported credential's real age
        daemon.wait_for_event("leak endpoint listening")
        url = f"http://127.0.0.1:{port}{ROUTE}"
        assert requests.post(url, data=b"[]", timeout=10).status_code == 401  # unsigned
        # the imported credential (3 days old, due in 27) was not rotated at start: it is still the one that works
        assert pg_server.can_login("lifecycle_app", password)
        alert = [{"token": password, "type": "db_password", "url": "https://example.test/leak", "source": "content"}]
        answer = post_signed(url, key.encode(), alert)
        assert answer.status_code == 202, answer.text
        assert answer.json()["rotating"] == ["app-db"]
        deadline = time.monotonic() + 60
        while pg_server.can_login("lifecycle_app", password):
            assert time.monotonic() < deadline, f"the leaked password still works:\n{daemon.log()[-3000:]}"
            time.sleep(0.1)
        daemon.wait_for_event("leak rotation", plan="app-db", outcome="succeeded")
        # after a reload the endpoint keeps answering, with the new config's components
        daemon.signal(signal.SIGHUP)
        daemon.wait_for_event("config reloaded")
        current = cli.run("store", "get", "db/app").json()
        second = post_signed(url, key.encode(), [{"token": current["password"], "type": "db_password"}])
        assert second.status_code == 202 and second.json()["rotating"] == ["app-db"]
        deadline = time.monotonic() + 60
        while pg_server.can_login("lifecycle_app", current["password"]):
            assert time.monotonic() < deadline, f"the second leaked password still works:\n{daemon.log()[-3000:]}"
            time.sleep(0.1)
        assert daemon.count("reminder sent") == 1  # remind_every is a day: not once per sweep
    finally:
        code = daemon.stop()
    assert code == 0, daemon.log()[-3000:]
    log = daemon.log()
    assert password not in log and current["password"] not in log and key not in log
    history = cli.run("history", "app-db", "--json").json()
    assert [run["trigger"] for run in history] == ["leak", "leak", "import"]
