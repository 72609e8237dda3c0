"""A `rotator daemon` subprocess for tests, and the shared PostgreSQL journal that several of them use.

The daemon's log goes to a file (a pipe nobody reads fills up and blocks the daemon), so a test waits on what the
daemon logged (`wait_for_event`) by reading that file: no subprocess per poll, no blind sleep.

The fixture `shared_journal` (registered in tests/integration/conftest.py) gives a fresh database owned by a fresh
role with a password (the daemons log in over TCP with scram), and a fresh prefix of the session's OpenBao KV v2
with README's least-privilege policy: a shared journal with the host-local embedded store is refused by every
command (tests/unit/test_shared_journal_check.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from psycopg import sql

from rotator.components import ComponentSetup
from rotator.interfaces import SecretStore
from rotator.journal.postgres import PostgresJournal
from rotator.registry import load_store
from tests.servers.postgres import PgServer, scram_verifier
from tests.servers.vault import VaultServer

VAULT_TOKEN_ENV = "ROTATOR_TEST_VAULT_TOKEN"


@dataclass
class SharedJournal:
    url: str
    password: str
    vault: VaultServer
    vault_prefix: str
    vault_token: str

    def env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, "PGPASSWORD": self.password, VAULT_TOKEN_ENV: self.vault_token, **extra}

    def open(self) -> PostgresJournal:
        os.environ["PGPASSWORD"] = self.password  # libpq reads it; the URL never holds it
        return PostgresJournal(self.url)

    def vault_store_block(self, name: str = "vault") -> str:
        return (
            f'[stores.{name}]\ntype = "vault-kv2"\nurl = "{self.vault.url}"\npath_prefix = "{self.vault_prefix}"\n'
            f'auth = {{ method = "token", token = "env:{VAULT_TOKEN_ENV}" }}\n'
        )

    def seed(self, root: Path, secrets: dict[str, dict[str, Any]]) -> SecretStore:
        """Write each secret's CURRENT into the shared Vault store; returns the store (for the test's reads)."""
        os.environ[VAULT_TOKEN_ENV] = self.vault_token
        options = {
            "url": self.vault.url,
            "path_prefix": self.vault_prefix,
            "auth": {"method": "token", "token": f"env:{VAULT_TOKEN_ENV}"},
        }
        store = load_store("vault-kv2", options, ComponentSetup(name="vault", config_dir=root, state_dir=root), "vault")
        for secret_id, value in secrets.items():
            store.put_current(secret_id, value)
        return store


@pytest.fixture
def shared_journal(pg_server: PgServer, vault_server: VaultServer) -> Iterator[SharedJournal]:
    role, password = f"journal_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    with pg_server.admin_conn() as conn:
        verifier = scram_verifier(conn, password, role)
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(verifier)))
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(role), sql.Identifier(role)))
    saved = os.environ.get("PGPASSWORD")
    prefix = f"rotator/daemons-{uuid.uuid4().hex[:8]}"
    url = f"postgresql://{role}@{pg_server.host}:{pg_server.port}/{role}"
    yield SharedJournal(url, password, vault_server, prefix, vault_server.rotator_token_for("secret", prefix))
    os.environ.pop(VAULT_TOKEN_ENV, None)  # seed() set it for the store object it makes
    if saved is None:
        os.environ.pop("PGPASSWORD", None)
    else:
        os.environ["PGPASSWORD"] = saved


def rotator(config: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rotator", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


class DaemonProcess:
    """`rotator daemon --json-logs` in a subprocess, its log in a file beside the config."""

    def __init__(self, config: Path, env: dict[str, str] | None = None):
        self.log_path = config.parent / f"daemon-{uuid.uuid4().hex[:6]}.log"
        with self.log_path.open("w") as handle:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "rotator", "daemon", "--json-logs", "--config", str(config)],
                stdout=subprocess.DEVNULL,
                stderr=handle,
                text=True,
                env={**os.environ, **(env or {})},
                cwd=config.parent,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def events(self) -> list[dict[str, Any]]:
        found = []
        for line in self.log().splitlines():
            if line.startswith("{"):
                try:
                    found.append(json.loads(line))
                except ValueError:
                    continue  # the line being written as we read
        return found

    def count(self, event: str, **fields: Any) -> int:
        return sum(
            1 for e in self.events() if e.get("event") == event and all(e.get(k) == v for k, v in fields.items())
        )

    def wait_for(self, predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
        """Wait until `predicate()`; fail with the log's tail if the daemon exits or the time runs out."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if self.proc.poll() is not None:
                pytest.fail(f"the daemon exited ({self.proc.returncode}) waiting for {what}:\n{self.log()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {what} within {timeout} s; the daemon's log ends:\n{self.log()[-3000:]}")
            time.sleep(0.02)

    def wait_for_event(self, event: str, count: int = 1, timeout: float = 30.0, **fields: Any) -> None:
        self.wait_for(lambda: self.count(event, **fields) >= count, f"{count}x {event!r} {fields or ''}", timeout)

    def open_fds(self) -> list[str]:
        """What each of the daemon's file descriptors points at (socket:[inode], a path, pipe:[...])."""
        fd_dir = Path(f"/proc/{self.pid}/fd")
        targets = []
        for entry in fd_dir.iterdir():
            try:
                targets.append(os.readlink(entry))
            except FileNotFoundError:
                continue  # closed while we listed
        return sorted(targets)

    def tcp_peers(self) -> list[tuple[int, int, str]]:
        """(local port, remote port, state) of each TCP socket the daemon holds open; state as the kernel names it
        in /proc/net/tcp ("01" established, "0A" listening, "08" close-wait, ...)."""
        inodes = {t[len("socket:[") : -1] for t in self.open_fds() if t.startswith("socket:[")}
        found = []
        for table in ("tcp", "tcp6"):
            lines = Path(f"/proc/{self.pid}/net/{table}").read_text().splitlines()[1:]
            for line in lines:
                fields = line.split()
                local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
                if inode in inodes:
                    found.append((int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16), state))
        return sorted(found)

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            raise
