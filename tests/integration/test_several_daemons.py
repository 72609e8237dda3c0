"""Several `rotator daemon` processes on one PostgreSQL journal (the throwaway server, scram over TCP), keeping the
secrets in a store every daemon reaches (vault-kv2 on the session's OpenBao server: a shared journal with the
host-local embedded store is refused by every command, tests/unit/test_shared_journal_check.py).

- Three daemons with 300 plans due: every plan is rotated exactly once, whichever daemon gets it.
- A daemon killed (kill -9) in the middle of a run, on another "host" (ROTATOR_HOST_ID): the other daemon
  leaves the run alone while the dead one's lease lasts, then resumes that same run and finishes it.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path

from rotator.interfaces import SecretStore
from rotator.model import RunState, Stage
from tests.integration.daemon_process import DaemonProcess, SharedJournal, rotator
from tests.integration.test_daemon import wait_for


def write_config(root: Path, journal: SharedJournal, plans: int, extra: str = "") -> Path:
    blocks = "\n".join(
        f'[[plans]]\nid = "key{n:03d}"\nplugin = "generated"\nsecret = "app/key{n:03d}"\nstore = "vault"\n'
        f'schedule = "rate(1 day)"\ngrace = "1h"\n'
        for n in range(plans)
    )
    vault = journal.vault_store_block()
    config = root / "rotator.toml"
    config.write_text(
        f'[rotator]\nstate_dir = "state"\njournal = "{journal.url}"\nrevoke_sweep_seconds = 1\n{extra}\n\n'
        f"{vault}\n{blocks}"
    )
    return config


def seed(root: Path, journal: SharedJournal, plans: int) -> SecretStore:
    return journal.seed(root, {f"app/key{n:03d}": {"value": f"first-{n}-" + "x" * 40} for n in range(plans)})


def stop_all(daemons: list[DaemonProcess]) -> list[str]:
    for daemon in daemons:
        if daemon.proc.poll() is None:
            daemon.signal(signal.SIGTERM)
    for daemon in daemons:
        daemon.stop()
    return [daemon.log() for daemon in daemons]


def test_three_daemons_rotate_each_due_plan_exactly_once(tmp_path: Path, shared_journal: SharedJournal) -> None:
    plans = 300
    config = write_config(tmp_path, shared_journal, plans, "catch_up_spread_seconds = 4\nconcurrency = 4")
    env = shared_journal.env()
    assert rotator(config, "init", env=env).returncode == 0
    store = seed(tmp_path, shared_journal, plans)
    journal = shared_journal.open()
    procs = [DaemonProcess(config, shared_journal.env(ROTATOR_HOST_ID=f"host-{i}")) for i in range(3)]
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
    victim = DaemonProcess(
        config, shared_journal.env(ROTATOR_HOST_ID="host-a", ROTATOR_FAILPOINTS="after-create=sleep:60")
    )
    survivor = None
    try:
        assert wait_for(lambda: bool(journal.runs_in_state(RunState.RUNNING)), 30)
        [running] = journal.runs_in_state(RunState.RUNNING)
        assert journal.lease_of("key000") is not None
        victim.signal(signal.SIGKILL)
        victim.proc.wait(timeout=10)
        killed_at = time.monotonic()
        survivor = DaemonProcess(config, shared_journal.env(ROTATOR_HOST_ID="host-b"))
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
