"""Reminders for manual plans (rotator/reminders.py) on a fake clock, with a real SQLite journal: rotation_due ahead
of the due date, overdue after it, repeated at remind_every, stopped by a recorded rotation, failed deliveries
tried again, and one reminder however many daemons share the journal."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rotator.baselines import record_baseline
from rotator.config import Config, PlanConfig, load_config
from rotator.engine.runner import BoundPlan
from rotator.errors import ConfigError
from rotator.journal.sqlite import SqliteJournal
from rotator.model import Credential, EventKind, NotifyStatus, Stage
from rotator.reminders import ReminderSender, default_wants, manual_state
from rotator.testing.notifiers import RecordingNotifier

DUE = datetime(2027, 1, 15, tzinfo=UTC)


def write_config(tmp_path: Path, plan: str) -> Config:
    path = tmp_path / "rotator.toml"
    path.write_text(f'[rotator]\nstate_dir = "state"\n\n[[plans]]\n{plan}\n')
    return load_config(path)


@dataclass
class Clock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@dataclass
class Setup:
    config: Config
    journal: SqliteJournal
    clock: Clock
    notifier: RecordingNotifier = field(default_factory=RecordingNotifier)

    @property
    def plan(self) -> PlanConfig:
        return self.config.plans[0]

    def bind(self, plan: PlanConfig, notifier: RecordingNotifier | None = None) -> BoundPlan:
        return BoundPlan(
            plan_id=plan.id,
            secret_id=plan.secret,
            store_name=plan.store,
            store=None,  # type: ignore[arg-type]  # reminders never read the store
            plugin=None,  # type: ignore[arg-type]  # nor call the plugin
            notifiers=(("pager", notifier or self.notifier),),
        )

    def sender(self, notifier: RecordingNotifier | None = None, journal: SqliteJournal | None = None) -> ReminderSender:
        bind: Callable[[PlanConfig], BoundPlan] = lambda plan: self.bind(plan, notifier)  # noqa: E731
        return ReminderSender(
            journal or self.journal, self.config.plans, bind, default_wants({"pager": None}), clock=self.clock
        )

    def kinds(self, notifier: RecordingNotifier | None = None) -> list[str]:
        return [event.kind for event in (notifier or self.notifier).events]


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    config = write_config(
        tmp_path,
        'id = "vendor-key"\nplugin = "manual"\nowner = "team-payments"\nsecret = "vendor/key"\n'
        'due = 2027-01-15\nremind_before = "7d"\nremind_every = "1d"',
    )
    return Setup(config, SqliteJournal(tmp_path / "journal.db"), Clock(DUE - timedelta(days=30)))


def test_nothing_before_the_lead_time_then_due_daily_then_overdue(setup: Setup) -> None:
    sender = setup.sender()
    assert sender.tick() == []  # 30 days ahead
    setup.clock.now = DUE - timedelta(days=7)
    assert [s.kind for s in sender.tick()] == [EventKind.ROTATION_DUE.value]
    setup.clock.advance(timedelta(hours=23))
    assert sender.tick() == []  # once a day, not once a tick
    setup.clock.advance(timedelta(hours=1))
    assert [s.kind for s in sender.tick()] == [EventKind.ROTATION_DUE.value]
    setup.clock.now = DUE  # the due time passed: overdue at once, not at the next daily slot
    assert [s.kind for s in sender.tick()] == [EventKind.OVERDUE.value]
    setup.clock.advance(timedelta(days=3))
    assert [s.kind for s in sender.tick()] == [EventKind.OVERDUE.value]  # repeated until someone records it
    event = setup.notifier.events[-1]
    payload = event.as_dict()
    assert payload["owner"] == "team-payments" and payload["due_at"].startswith("2027-01-15")
    assert "mark-rotated vendor-key" in payload["action"]
    assert setup.kinds() == ["credential.rotation_due"] * 2 + ["credential.overdue"] * 2


def test_a_recorded_rotation_stops_the_reminders_until_the_schedule_is_due(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        'id = "vendor-key"\nplugin = "manual"\nowner = "ops"\nsecret = "vendor/key"\nschedule = "rate(90 days)"\n'
        'remind_before = "14d"',
    )
    journal = SqliteJournal(tmp_path / "journal.db")
    clock = Clock(datetime(2027, 3, 1, tzinfo=UTC))
    setup = Setup(config, journal, clock)
    sender = setup.sender()
    assert [s.kind for s in sender.tick()] == [EventKind.OVERDUE.value]  # never recorded: its age is unknown
    credential = Credential("v-by-hand", {"api_key": "x" * 24}, frozenset({Stage.CURRENT}))
    record_baseline(journal, setup.bind(setup.plan), credential, rotated_at=clock.now, how="mark-rotated")
    clock.advance(timedelta(days=1))
    assert sender.tick() == []
    state = manual_state(setup.plan, journal.last_success("vendor-key"), clock.now)
    assert state.due_at == datetime(2027, 3, 1, tzinfo=UTC) + timedelta(days=90) and state.reminder is None
    clock.now = state.due_at - timedelta(days=14)
    assert [s.kind for s in sender.tick()] == [EventKind.ROTATION_DUE.value]


def test_a_failed_delivery_is_tried_again_soon_and_never_enters_the_rotation_retry_sweep(setup: Setup) -> None:
    flaky = RecordingNotifier(fail_times=1)  # NotifyError is not transient: one try per tick
    sender = setup.sender(flaky)
    setup.clock.now = DUE - timedelta(days=2)
    sent = sender.tick()
    assert sent and sent[0].error and "planned failure" in sent[0].error
    assert setup.journal.notifications(statuses=(NotifyStatus.FAILED, NotifyStatus.PENDING)) == []
    setup.clock.advance(timedelta(minutes=1))
    assert sender.tick() == []  # not before retry_after (5 minutes)
    setup.clock.advance(timedelta(minutes=5))
    sent = sender.tick()
    assert sent and sent[0].error is None and [e.kind for e in flaky.events] == [EventKind.ROTATION_DUE.value]


def test_daemons_sharing_a_journal_send_each_reminder_once(setup: Setup) -> None:
    first, second = RecordingNotifier(), RecordingNotifier()
    setup.clock.now = DUE + timedelta(hours=1)
    other_journal = SqliteJournal(setup.journal.path)  # a second daemon: its own connection, the same journal
    assert len(setup.sender(first).tick()) == 1
    assert setup.sender(second, other_journal).tick() == []
    assert len(first.events) == 1 and second.events == []


def test_a_notifier_that_chose_its_events_gets_only_those(setup: Setup) -> None:
    sender = ReminderSender(
        setup.journal,
        setup.config.plans,
        setup.bind,
        default_wants({"pager": frozenset({EventKind.OVERDUE.value})}),
        clock=setup.clock,
    )
    setup.clock.now = DUE - timedelta(days=1)
    assert sender.tick() == []  # rotation_due is not in its events
    setup.clock.now = DUE
    assert [s.kind for s in sender.tick()] == [EventKind.OVERDUE.value]


@pytest.mark.parametrize(
    ("plan", "words"),
    [
        ('id = "m"\nplugin = "manual"\nsecret = "s"\ndue = 2027-01-15', "needs an owner"),
        ('id = "m"\nplugin = "manual"\nowner = "ops"\nsecret = "s"', "needs a schedule"),
        ('id = "m"\nplugin = "generated"\nsecret = "s"\ndue = 2027-01-15', "due is for manual plans"),
        ('id = "m"\nplugin = "manual"\nowner = "ops"\nsecret = "s"\ndue = 2027-01-15\nremind_every = "5s"', "1m"),
    ],
)
def test_bad_manual_plans_are_refused_with_the_fix(tmp_path: Path, plan: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        write_config(tmp_path, plan)
    assert words in str(caught.value)


def test_disabled_manual_plans_are_not_reminded(tmp_path: Path) -> None:
    config = write_config(
        tmp_path, 'id = "m"\nplugin = "manual"\nowner = "ops"\nsecret = "s"\ndue = 2027-01-15\nenabled = false'
    )
    assert manual_state(config.plans[0], None, DUE + timedelta(days=1)).reminder is None
