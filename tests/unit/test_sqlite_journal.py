"""Leases in the SQLite journal: busy while held, taken over when the holder died here, expiring elsewhere,
and fenced: a holder that lost its lease can no longer write."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rotator.errors import LeaseLost
from rotator.journal.sqlite import SqliteJournal
from rotator.model import RunRecord, RunState, Step, Trigger


def _plant_holder(journal: SqliteJournal, plan_id: str, holder: str, host: str, pid: int, seconds: float) -> None:
    expires = (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat(timespec="microseconds")
    with journal._write() as db:
        db.execute("insert or replace into leases values (?, ?, ?, ?, ?, ?)", (plan_id, holder, host, pid, 7, expires))


def test_lease_is_exclusive_and_released(tmp_path: Path) -> None:
    a, b = SqliteJournal(tmp_path / "j.db"), SqliteJournal(tmp_path / "j.db")
    lease = a.acquire_lease("p", 60)
    assert lease is not None and b.acquire_lease("p", 60) is None
    assert b.lease_of("p") == lease
    a.release_lease(lease)
    again = b.acquire_lease("p", 60)
    assert again is not None and again.token == lease.token + 1  # the fencing token only grows


def test_lease_of_a_dead_process_on_this_host_is_taken_over(tmp_path: Path) -> None:
    journal = SqliteJournal(tmp_path / "j.db")
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    from rotator.journal.leases import this_host

    _plant_holder(journal, "p", f"{this_host()}:{proc.pid}:123", this_host(), proc.pid, 3600)
    lease = journal.acquire_lease("p", 60)
    assert lease is not None and lease.token == 8


def test_lease_held_on_another_host_waits_for_expiry(tmp_path: Path) -> None:
    journal = SqliteJournal(tmp_path / "j.db")
    _plant_holder(journal, "p", "other-host:1:1", "other-host", 1, 1.0)
    assert journal.acquire_lease("p", 60) is None
    time.sleep(1.2)
    assert journal.acquire_lease("p", 60) is not None


def test_a_holder_that_lost_its_lease_cannot_write(tmp_path: Path) -> None:
    journal = SqliteJournal(tmp_path / "j.db")
    old = journal.acquire_lease("p", 0.5)
    assert old is not None
    run = RunRecord(
        run_id="r1",
        plan_id="p",
        state=RunState.RUNNING,
        trigger=Trigger.MANUAL,
        started_at=datetime.now(UTC),
        store="local",
        secret_id="s",
    )
    journal.begin_run(run, old)
    time.sleep(0.6)
    other = SqliteJournal(tmp_path / "j.db")
    _plant_holder(other, "p", "other-host:1:1", "other-host", 1, 60)  # expired, then taken by another host
    with pytest.raises(LeaseLost):
        journal.step_started("r1", Step.STAGE, "forward", old)
    with pytest.raises(LeaseLost):
        journal.renew_lease(old, 60)
    with pytest.raises(LeaseLost):
        journal.update_run("r1", old, state=RunState.AWAITING_REVOKE)
    assert journal.get_run("r1").state is RunState.RUNNING
