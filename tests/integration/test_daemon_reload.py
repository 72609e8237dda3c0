"""SIGHUP reloads close what the old config opened: a real daemon on a PostgreSQL journal (the throwaway server,
scram over TCP), its secrets in OpenBao's KV v2, a webhook notifier and /metrics.

- 50 reloads, each adding a plan that the new config then rotates (journal, Vault store, plugin and notifier of
  every config used): after the 1st and the 50th, every journal connection (pg_stat_activity, by the daemon's own
  application_name) was opened by the current config, and the daemon's open files (/proc/PID/fd, sockets by the
  peer at the other end) are the same: one keep-alive connection each to OpenBao and the webhook receiver, the
  /metrics socket, the log. The journal's pool holds as many connections as threads used it at once (1 or 2 here:
  the sweep and a run), so the count of those is compared with pg_stat_activity, not with a constant.
- A reload while a run is in flight: the run finishes on the old config's components, which are closed only after.
"""

from __future__ import annotations

import signal
import socket
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from rotator.model import RunState, Stage
from tests.integration.daemon_process import DaemonProcess, SharedJournal, rotator
from tests.servers.postgres import PgServer

RELOADS = 50
RELOADED = "config reloaded"
RETIRED = "config's components closed"


class _Receiver(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the notifier's session holds its connection open, as in production

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/rotated"
    server.shutdown()
    server.server_close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(root: Path, journal: SharedJournal, app_name: str, webhook: str, plans: int, extra: str = "") -> Path:
    blocks = "".join(
        f'[[plans]]\nid = "key{n:03d}"\nplugin = "generated"\nsecret = "app/key{n:03d}"\nstore = "vault"\n'
        f'schedule = "rate(1 day)"\ngrace = "1h"\nnotify = ["deploy"]\n\n'
        for n in range(plans)
    )
    config = root / "rotator.toml"
    config.write_text(
        f'[rotator]\nstate_dir = "state"\njournal = "{journal.url}?application_name={app_name}"\n'
        f'revoke_sweep_seconds = 1\nmetrics_address = "127.0.0.1:{free_port()}"\n{extra}\n\n'
        f"{journal.vault_store_block()}\n"
        f'[notifiers.deploy]\ntype = "webhook"\nurl = "{webhook}"\nallow_plain_http = true\n\n{blocks}'
    )
    return config


def server_now(pg_server: PgServer) -> datetime:
    with pg_server.admin_conn() as conn:
        row = conn.execute("SELECT now()").fetchone()
    assert row is not None
    return row[0]


def journal_backends(pg_server: PgServer, app_name: str) -> list[datetime]:
    """When each of the daemon's journal connections was opened (its backend's start, server time)."""
    with pg_server.admin_conn() as conn:
        rows = conn.execute(
            "SELECT backend_start FROM pg_stat_activity WHERE application_name = %s", (app_name,)
        ).fetchall()
    return [row[0] for row in rows]


@dataclass
class Held:
    """What the daemon holds open at one moment."""

    journal_connections: int
    by_peer: Counter[str]  # its TCP sockets, by what is at the other end
    other_fds: Counter[str]  # everything but sockets: log file, /dev/null, pipes, ...

    @property
    def fds(self) -> int:
        return sum(self.by_peer.values()) + sum(self.other_fds.values())


def held(daemon: DaemonProcess, pg_server: PgServer, app_name: str, peers: dict[int, str]) -> Held:
    by_peer: Counter[str] = Counter()
    for _local, remote, state in daemon.tcp_peers():
        by_peer["listening (/metrics)" if state == "0A" else peers.get(remote, f"port {remote} ({state})")] += 1
    others = Counter(t.split(":", 1)[0] if ":[" in t else t for t in daemon.open_fds() if not t.startswith("socket:"))
    return Held(len(journal_backends(pg_server, app_name)), by_peer, others)


def test_fifty_reloads_hold_as_many_connections_and_files_as_one(
    tmp_path: Path, shared_journal: SharedJournal, pg_server: PgServer, receiver: str
) -> None:
    app_name = f"rotator-reload-{uuid.uuid4().hex[:8]}"
    peers = {
        pg_server.port: "journal (PostgreSQL)",
        shared_journal.vault.port: "store (OpenBao)",
        urlsplit(receiver).port or 0: "webhook receiver",
    }
    secrets = {f"app/key{n:03d}": {"value": f"first-{n}-" + "x" * 40} for n in range(RELOADS + 1)}
    config = write_config(tmp_path, shared_journal, app_name, receiver, plans=1)
    assert rotator(config, "init", env=shared_journal.env()).returncode == 0
    shared_journal.seed(tmp_path, secrets)
    daemon = DaemonProcess(config, shared_journal.env())
    seen: dict[int, Held] = {}
    try:
        daemon.wait_for_event("notified", 1, plan="key000")
        for reload in range(1, RELOADS + 1):
            # Each reload adds a plan, due at once: the new config's journal, store, plugin and notifier all work.
            write_config(tmp_path, shared_journal, app_name, receiver, plans=reload + 1)
            reloaded_at = server_now(pg_server)
            daemon.signal(signal.SIGHUP)
            daemon.wait_for_event(RELOADED, reload)
            daemon.wait_for_event("notified", 1, plan=f"key{reload:03d}")
            daemon.wait_for_event(RETIRED, reload, after="reload")
            if reload in (1, RELOADS):
                started = journal_backends(pg_server, app_name)
                assert started and all(when >= reloaded_at for when in started), (
                    f"after reload {reload}, journal connections of an older config are still open: {started}"
                )
                seen[reload] = held(daemon, pg_server, app_name, peers)
    finally:
        code = daemon.stop()
    assert code == 0, daemon.log()[-3000:]
    assert daemon.count(RETIRED, after="shutdown") == 1
    first, last = seen[1], seen[RELOADS]
    for count, what in ((1, first), (RELOADS, last)):
        print(f"after {count} reload(s): {what.journal_connections} journal connections, {what.fds} fds: "
              f"{dict(what.by_peer)} + {dict(what.other_fds)}")  # fmt: skip
        # The current config's own: one keep-alive connection to OpenBao and to the receiver, the /metrics socket;
        # the journal's pool holds as many as threads used it at once (the sweep and a run: 1 or 2).
        assert what.by_peer["store (OpenBao)"] == 1 and what.by_peer["webhook receiver"] == 1, what.by_peer
        assert what.by_peer["listening (/metrics)"] == 1, what.by_peer
        assert what.by_peer["journal (PostgreSQL)"] == what.journal_connections, what.by_peer
    assert last.other_fds == first.other_fds
    assert last.fds - last.journal_connections == first.fds - first.journal_connections


def test_a_run_in_flight_finishes_on_the_old_config_then_its_components_close(
    tmp_path: Path, shared_journal: SharedJournal, receiver: str
) -> None:
    app_name = f"rotator-reload-{uuid.uuid4().hex[:8]}"
    config = write_config(tmp_path, shared_journal, app_name, receiver, plans=1)
    assert rotator(config, "init", env=shared_journal.env()).returncode == 0
    store = shared_journal.seed(tmp_path, {"app/key000": {"value": "first-" + "x" * 40}})
    # The run holds after create (PENDING stored) long enough for the reload to happen under it.
    daemon = DaemonProcess(config, shared_journal.env(ROTATOR_FAILPOINTS="after-create=sleep:5"))
    try:
        daemon.wait_for_event("rotation started", plan="key000")
        daemon.signal(signal.SIGHUP)
        daemon.wait_for_event(RELOADED)
        assert daemon.count(RETIRED) == 0, "the old config's components were closed under a run in flight"
        daemon.wait_for_event(RETIRED, after="reload")
    finally:
        code = daemon.stop()
    assert code == 0, daemon.log()[-3000:]
    order = [e["event"] for e in daemon.events() if e["event"] in (RELOADED, "notified", RETIRED)]
    assert order == [RELOADED, "notified", RETIRED, RETIRED]  # the old config's after its run; the last at stop
    assert [e["after"] for e in daemon.events() if e["event"] == RETIRED] == ["reload", "shutdown"]
    journal = shared_journal.open()
    try:
        [run] = journal.runs("key000")
    finally:
        journal.close()
    assert run.state is RunState.AWAITING_REVOKE
    current = store.get("app/key000", Stage.CURRENT)
    assert current is not None and current.version_id == run.run_id
