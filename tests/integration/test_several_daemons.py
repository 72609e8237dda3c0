"""Several `rotator daemon` processes on one PostgreSQL journal (the throwaway server, scram over TCP), keeping the
secrets in a store every daemon reaches (vault-kv2 on the session's OpenBao server: a shared journal with the
host-local embedded store is refused by every command, tests/unit/test_shared_journal_check.py).

- Three daemons with 300 plans due: every plan is rotated exactly once, whichever daemon gets it.
- A daemon killed (kill -9) in the middle of a run, on another "host" (ROTATOR_HOST_ID): the other daemon
  leaves the run alone while the dead one's lease lasts, then resumes that same run and finishes it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from psycopg import sql

from rotator.components import ComponentSetup
from rotator.interfaces import SecretStore
from rotator.journal.postgres import PostgresJournal
from rotator.model import RunState, Stage
from rotator.registry import load_store
from tests.integration.test_daemon import wait_for
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


@pytest.fixture
def shared_journal(pg_server: PgServer, vault_server: VaultServer) -> Iterator[SharedJournal]:
    """A fresh database owned by a fresh role with a password: the daemons log in over TCP with scram. The
    store: a fresh prefix of OpenBao's KV v2 with README's least-privilege policy for it."""
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


def write_config(root: Path, journal: SharedJournal, plans: int, extra: str = "") -> Path:
    blocks = "\n".join(
        f'[[plans]]\nid = "key{n:03d}"\nplugin = "generated"\nsecret = "app/key{n:03d}"\nstore = "vault"\n'
        f'schedule = "rate(1 day)"\ngrace = "1h"\n'
        for n in range(plans)
    )
    vault = (
        f'[stores.vault]\ntype = "vault-kv2"\nurl = "{journal.vault.url}"\npath_prefix = "{journal.vault_prefix}"\n'
        f'auth = {{ method = "token", token = "env:{VAULT_TOKEN_ENV}" }}\n'
    )
    config = root / "rotator.toml"
    config.write_text(
        f'[rotator]\nstate_dir = "state"\njournal = "{journal.url}"\nrevoke_sweep_seconds = 1\n{extra}\n\n'
        f"{vault}\n{blocks}"
    )
    return config


def rotator(config: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rotator", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def daemon(config: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    """A daemon whose log goes to a file beside the config (a pipe nobody reads would fill and block it)."""
    log = config.parent / f"daemon-{uuid.uuid4().hex[:6]}.log"
    with log.open("w") as handle:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rotator", "daemon", "--json-logs", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=handle,
            text=True,
            env=env,
        )
    proc.log_path = log  # type: ignore[attr-defined]
    return proc


def seed(root: Path, journal: SharedJournal, plans: int) -> SecretStore:
    os.environ[VAULT_TOKEN_ENV] = journal.vault_token
    options = {
        "url": journal.vault.url,
        "path_prefix": journal.vault_prefix,
        "auth": {"method": "token", "token": f"env:{VAULT_TOKEN_ENV}"},
    }
    store = load_store("vault-kv2", options, ComponentSetup(name="vault", config_dir=root, state_dir=root), "vault")
    for n in range(plans):
        store.put_current(f"app/key{n:03d}", {"value": f"first-{n}-" + "x" * 40})
    return store


def stop_all(procs: list[subprocess.Popen[str]]) -> list[str]:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    logs = []
    for proc in procs:
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        logs.append(proc.log_path.read_text())  # type: ignore[attr-defined]
    return logs


def test_three_daemons_rotate_each_due_plan_exactly_once(tmp_path: Path, shared_journal: SharedJournal) -> None:
    plans = 300
    config = write_config(tmp_path, shared_journal, plans, "catch_up_spread_seconds = 4\nconcurrency = 4")
    env = shared_journal.env()
    assert rotator(config, "init", env=env).returncode == 0
    store = seed(tmp_path, shared_journal, plans)
    journal = shared_journal.open()
    procs = [daemon(config, shared_journal.env(ROTATOR_HOST_ID=f"host-{i}")) for i in range(3)]
    try:
        done = wait_for(lambda: len(journal.last_successes()) == plans, 120)
        time.sleep(3)  # a few more ticks: nobody rotates a plan a second time
        runs = journal.runs(limit=10 * plans)
    finally:
        logs = stop_all(procs)
    assert done, f"only {len(journal.last_successes())} of {plans} plans rotated"
    per_plan = Counter(r.plan_id for r in runs)
    assert len(per_plan) == plans and set(per_plan.values()) == {1}, per_plan.most_common(3)
    assert {r.state for r in runs} == {RunState.AWAITING_REVOKE}
    assert sum("promoted; the new credential is live" in log for log in logs) >= 2, "the work was not shared"
    for run in runs:  # the store's CURRENT is the run's version: each rotation landed once
        assert store.get(f"app/{run.plan_id}", Stage.CURRENT).version_id == run.run_id
    for log in logs:
        assert "first-1-" + "x" * 40 not in log
    journal.close()


def test_a_killed_daemons_run_is_finished_by_another_after_its_lease_expires(
    tmp_path: Path, shared_journal: SharedJournal
) -> None:
    config = write_config(tmp_path, shared_journal, 1, "lease_seconds = 8")
    assert rotator(config, "init", env=shared_journal.env()).returncode == 0
    store = seed(tmp_path, shared_journal, 1)
    journal = shared_journal.open()
    # Daemon A stops for a long time right after create (PENDING is stored), then is killed there.
    victim = daemon(config, shared_journal.env(ROTATOR_HOST_ID="host-a", ROTATOR_FAILPOINTS="after-create=sleep:60"))
    survivor = None
    try:
        assert wait_for(lambda: bool(journal.runs_in_state(RunState.RUNNING)), 30)
        [running] = journal.runs_in_state(RunState.RUNNING)
        assert journal.lease_of("key000") is not None
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        killed_at = time.monotonic()
        survivor = daemon(config, shared_journal.env(ROTATOR_HOST_ID="host-b"))
        assert wait_for(lambda: journal.get_run(running.run_id).state is RunState.AWAITING_REVOKE, 60)
        waited = time.monotonic() - killed_at
    finally:
        logs = stop_all([p for p in (victim, survivor) if p is not None])
    # host-b could not tell that host-a's process died: it waited for the lease (8 s from its last renewal).
    assert waited >= 4, f"the run was taken over after {waited:.1f} s, before the dead daemon's lease expired"
    runs = journal.runs("key000")
    assert [r.run_id for r in runs] == [running.run_id], "the same run was finished, not a second one started"
    assert store.get("app/key000", Stage.CURRENT).version_id == running.run_id
    assert store.get("app/key000", Stage.PENDING) is None
    assert "interrupted run settled" in logs[-1]
    journal.close()
