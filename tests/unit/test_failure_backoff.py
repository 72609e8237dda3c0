"""Failed runs with a fake clock: the schedule's backoff grows 5, 10, 20 ... minutes up to 6 hours, and after
`alert_after_failures` failures in a row (and every as many more) one rotation_stuck alert goes out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from rotator.components import ComponentSetup
from rotator.config import PlanConfig
from rotator.engine.runner import BoundPlan, Runner
from rotator.engine.states import failure_backoff
from rotator.errors import StepError
from rotator.journal.sqlite import SqliteJournal
from rotator.local_store import LocalStore, create_key_file
from rotator.model import FAILURE_EVENTS, RotationEvent
from rotator.scheduler import due_time
from tests.unit.fake_target import FakePlugin, FakeTarget


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def test_backoff_doubles_to_a_cap() -> None:
    minutes = [failure_backoff(n).total_seconds() / 60 for n in range(1, 10)]
    assert minutes == [5, 10, 20, 40, 80, 160, 320, 360, 360]
    assert failure_backoff(10_000) == timedelta(hours=6)  # no overflow for a plan that fails for years


def test_failed_runs_back_off_and_alert_every_n(tmp_path: Path) -> None:
    create_key_file(tmp_path / "store.key")
    (tmp_path / "store.db").touch()
    store = LocalStore({}, ComponentSetup(name="local", config_dir=tmp_path, state_dir=tmp_path))
    journal = SqliteJournal(tmp_path / "journal.db")
    store.put_current("s", {"username": "app", "password": "first-password-0001"})
    target = FakeTarget()
    target.accepted["app"] = {"first-password-0001"}
    target.fail["stage"] = StepError("the target refuses")
    heard: list[RotationEvent] = []
    clock = Clock()
    runner = Runner(journal, clock=clock, alert_after_failures=3, step_timeout=1)
    plan = BoundPlan(
        plan_id="p1",
        secret_id="s",
        store_name="local",
        store=store,
        plugin=FakePlugin(target),
        notifiers=(("pager", heard.append),),
        notifier_events={"pager": FAILURE_EVENTS},
    )
    config = PlanConfig(id="p1", plugin={"type": "fake"}, secret="s", schedule="rate(1 day)")
    waits = []
    for attempt in range(1, 8):
        outcome = runner.rotate(plan)
        assert outcome.outcome == "rolled_back"
        failures = runner.consecutive_failures("p1")
        assert failures == attempt
        latest = journal.runs("p1", limit=1)[0]
        due = due_time(config, latest, None, clock.now, lambda count=failures: count)
        assert due is not None
        waits.append((due - clock.now).total_seconds() / 60)
        clock.now = due  # the daemon fires it then
    assert [round(w) for w in waits] == [5, 10, 20, 40, 80, 160, 320]
    stuck = [e for e in heard if e.kind == "credential.rotation_stuck"]
    failed = [e for e in heard if e.kind == "credential.rotation_failed"]
    assert len(failed) == 7  # each failed run tells whoever asked
    assert [e.reason for e in stuck] == ["failed 3 times in a row", "failed 6 times in a row"]
    assert "rotator rotate-now PLAN" in (stuck[0].action or "")
    store.close()
    journal.close()
