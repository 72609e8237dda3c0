"""The engine after promote: journaled notifications retried on later ticks, required notifiers holding back
revoke, consumer-aware revoke with a deadline, rollback_on_failure, roll-forward plugins, stopping at safe step
boundaries, and the due check several daemons rely on. Over the in-process fake target (tests/unit/fake_target.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rotator.components import ComponentSetup
from rotator.engine.runner import BoundPlan, Runner, ShutdownRequested
from rotator.errors import TestFailed
from rotator.journal.sqlite import SqliteJournal
from rotator.local_store import LocalStore, create_key_file
from rotator.model import Credential, NotifyStatus, RotationContext, RunState, Stage, Step
from rotator.testing import RecordingNotifier
from tests.unit.fake_target import FakePlugin, FakeTarget

SECRET = "app/db"
FIRST = "first-password-0001"


@pytest.fixture
def env(tmp_path: Path):
    create_key_file(tmp_path / "store.key")
    store = LocalStore({}, ComponentSetup(name="local", config_dir=tmp_path, state_dir=tmp_path))
    journal = SqliteJournal(tmp_path / "journal.db")
    target = FakeTarget()
    store.put_current(SECRET, {"username": "app", "password": FIRST})
    target.accepted["app"] = {FIRST}
    yield store, journal, target
    store.close()
    journal.close()


def later(journal: SqliteJournal, hours: float) -> Runner:
    return Runner(journal, clock=lambda: datetime.now(UTC) + timedelta(hours=hours), revoke_recheck_seconds=60)


def bind(store, plugin, strategy="alternating-users", **kw: Any) -> BoundPlan:
    return BoundPlan(
        plan_id="p1", secret_id=SECRET, store_name="local", store=store, plugin=plugin, strategy=strategy, **kw
    )


def stored_secrets(store) -> list[str]:
    return [c["password"] for c in (store.get(SECRET, s) for s in Stage) if c is not None]


# -- notifications ------------------------------------------------------------------------------------------------


def test_failed_notification_is_journaled_and_delivered_on_a_later_tick(env):
    store, journal, target = env
    flaky = RecordingNotifier(fail_times=1)
    bp = bind(store, FakePlugin(target), notifiers=(("ops", flaky),))
    outcome = Runner(journal).rotate(bp)
    assert outcome.outcome == "awaiting_revoke"  # a notifier failure never rolls back
    assert any("notify failed" in note for note in outcome.notes)
    [record] = journal.notifications(run_id=outcome.run_id)
    assert record.status is NotifyStatus.FAILED and record.attempts == 1 and record.last_error
    assert record.next_attempt_at is not None and record.next_attempt_at > datetime.now(UTC)
    assert Runner(journal).retry_notifications(bp) == []  # not due yet
    [retried] = later(journal, 0.5).retry_notifications(bp)
    assert retried.outcome == "notified"
    [record] = journal.notifications(run_id=outcome.run_id)
    assert record.status is NotifyStatus.SUCCEEDED and record.attempts == 2
    [event] = flaky.events
    payload = json.dumps(event.as_dict())
    assert event.kind == "credential.rotated" and event.version_id == outcome.run_id
    for secret in stored_secrets(store):
        assert secret not in payload
    assert event.read_value is not None and event.read_value()["password"] == store.get(SECRET)["password"]


def test_notification_of_a_superseded_run_is_given_up(env):
    store, journal, target = env
    broken = RecordingNotifier(fail_times=1)
    bp = bind(store, FakePlugin(target), notifiers=(("ops", broken),))
    first = Runner(journal).rotate(bp)
    bp_ok = bind(store, FakePlugin(target), notifiers=(("ops", broken),))
    second = Runner(journal).rotate(bp_ok, revoke_old_now=True)
    assert second.ok
    later(journal, 1).retry_notifications(bp_ok)
    [old] = journal.notifications(run_id=first.run_id)
    assert old.status is NotifyStatus.GAVE_UP and "superseded" in (old.last_error or "")


def test_required_notifier_holds_back_revoke_until_it_succeeds(env):
    store, journal, target = env
    required = RecordingNotifier(fail_times=1)
    bp = bind(
        store,
        FakePlugin(target),
        grace=timedelta(minutes=5),
        notifiers=(("deploy", required),),
        required_notifiers=frozenset({"deploy"}),
    )
    old = store.get(SECRET)
    outcome = Runner(journal).rotate(bp)
    [waiting] = later(journal, 1).revoke_due(bp)
    assert not waiting.revoked and waiting.outcome == "awaiting_revoke" and waiting.error is None
    run = journal.get_run(outcome.run_id)
    assert run.state is RunState.AWAITING_REVOKE
    assert "required notifier deploy has not succeeded" in run.details["revoke_waiting_for"][0]
    assert target.logs_in(old.value), "PREVIOUS must stay valid while a required notifier has not succeeded"
    later(journal, 1).retry_notifications(bp)
    [revoked] = later(journal, 2).revoke_due(bp)
    assert revoked.revoked and not target.logs_in(old.value)
    assert "revoke_waiting_for" not in journal.get_run(outcome.run_id).details


def test_revoke_old_now_overrides_a_failed_required_notifier(env):
    store, journal, target = env
    bp = bind(
        store,
        FakePlugin(target),
        notifiers=(("deploy", RecordingNotifier(fail_times=99)),),
        required_notifiers=frozenset({"deploy"}),
    )
    old = store.get(SECRET)
    outcome = Runner(journal).rotate(bp, revoke_old_now=True)
    assert outcome.outcome == "succeeded" and outcome.revoked
    assert not target.logs_in(old.value)


def test_rollback_on_failure_puts_previous_back_when_it_still_works(env):
    store, journal, target = env
    told = RecordingNotifier()
    bp = bind(
        store,
        FakePlugin(target),
        notifiers=(("chat", told), ("deploy", RecordingNotifier(fail_times=99))),
        required_notifiers=frozenset({"deploy"}),
        rollback_on_failure=True,
    )
    old = store.get(SECRET)
    outcome = Runner(journal).rotate(bp)
    assert outcome.outcome == "rolled_back" and "deploy" in (outcome.error or "")
    assert store.get(SECRET).version_id == old.version_id and target.logs_in(old.value)
    assert store.get(SECRET, Stage.PENDING) is None
    # the clone got a password nobody knows; the consumers that were told of the rotation are told to read again
    assert FIRST not in target.accepted["app_clone"]
    assert [e.kind for e in told.events] == ["credential.rotated", "credential.rolled_back"]
    steps = [(s.step, s.action) for s in journal.get_run(outcome.run_id).steps if s.action == "rollback"]
    assert steps == [(Step.PROMOTE, "rollback"), (Step.STAGE, "rollback"), (Step.CREATE, "rollback")]


def test_rollback_on_failure_keeps_the_new_credential_when_previous_no_longer_works(env):
    store, journal, target = env
    bp = bind(
        store,
        FakePlugin(target),
        strategy="single-user",
        notifiers=(("deploy", RecordingNotifier(fail_times=99)),),
        required_notifiers=frozenset({"deploy"}),
        rollback_on_failure=True,
    )
    outcome = Runner(journal).rotate(bp)
    assert outcome.outcome == "awaiting_revoke"
    assert target.logs_in(store.get(SECRET).value)
    assert "PREVIOUS no longer works" in journal.get_run(outcome.run_id).details["rollback_refused"]


# -- consumer-aware revoke ------------------------------------------------------------------------------------------


class SessionsPlugin(FakePlugin):
    """The fake plugin plus UsageProbe: `sessions` are the consumers still on the credential it is asked about."""

    def __init__(self, target: FakeTarget, sessions: list[str] | None):
        super().__init__(target)
        self.sessions = sessions
        self.asked: list[tuple[str, datetime | None]] = []

    def in_use(
        self, ctx: RotationContext, credential: Credential, *, since: datetime | None = None
    ) -> list[str] | None:
        self.asked.append((credential["username"], since))
        return self.sessions


def test_revoke_waits_while_previous_is_in_use_then_revokes(env):
    store, journal, target = env
    plugin = SessionsPlugin(target, ["pid 42 from 10.0.0.7 application 'billing'"])
    bp = bind(store, plugin, grace=timedelta(minutes=5), revoke_deadline=timedelta(hours=6))
    old = store.get(SECRET)
    outcome = Runner(journal).rotate(bp)
    [waiting] = later(journal, 1).revoke_due(bp)
    assert not waiting.revoked and waiting.error is None
    run = journal.get_run(outcome.run_id)
    assert run.details["previous_in_use"] == ["pid 42 from 10.0.0.7 application 'billing'"]
    assert run.revoke_due_at is not None and run.revoke_due_at > datetime.now(UTC) + timedelta(minutes=59)
    assert plugin.asked[-1][0] == "app" and plugin.asked[-1][1] is not None  # PREVIOUS, since promote
    assert target.logs_in(old.value)
    plugin.sessions = []
    [revoked] = later(journal, 2).revoke_due(bp)
    assert revoked.revoked and not target.logs_in(old.value)
    assert journal.get_run(outcome.run_id).details["previous_in_use"] == []


def test_revoke_goes_ahead_at_the_deadline_and_records_who_was_still_on_it(env):
    store, journal, target = env
    plugin = SessionsPlugin(target, ["pid 7 from 10.0.0.9"])
    bp = bind(store, plugin, grace=timedelta(minutes=5), revoke_deadline=timedelta(hours=2))
    old = store.get(SECRET)
    outcome = Runner(journal).rotate(bp)
    later(journal, 1).revoke_due(bp)  # first look: waits, deadline set 2 h from now
    [revoked] = later(journal, 4).revoke_due(bp)
    assert revoked.revoked and not target.logs_in(old.value)
    details = journal.get_run(outcome.run_id).details
    assert details["revoked_while_in_use"] == ["pid 7 from 10.0.0.9"]


def test_unknown_usage_does_not_hold_back_revoke(env):
    store, journal, target = env
    bp = bind(store, SessionsPlugin(target, None), grace=timedelta(minutes=5))
    Runner(journal).rotate(bp)
    [revoked] = later(journal, 1).revoke_due(bp)
    assert revoked.revoked


# -- roll-forward plugins ----------------------------------------------------------------------------------------


class RollingPlugin(FakePlugin):
    """A provider that kills the old credential at create (as Cloudflare's token roll does)."""

    rolls_forward = True

    def create(self, ctx: RotationContext, current: Credential) -> dict[str, Any]:
        value = super().create(ctx, current)
        self.target.accepted[current["username"]] = {value["password"]}  # the old one is dead now
        return value

    def discard(self, ctx: RotationContext, pending: Credential) -> None:
        raise AssertionError("a roll-forward plugin's run is never rolled back after create")


def test_roll_forward_plugin_keeps_pending_and_resume_finishes_it(env):
    store, journal, target = env
    target.fail["test"] = TestFailed("the vendor is down")
    bp = bind(store, RollingPlugin(target), strategy="single-user")
    outcome = Runner(journal).rotate(bp)
    assert outcome.outcome == "stuck" and "finish it forward" in (outcome.error or "")
    pending = store.get(SECRET, Stage.PENDING)
    assert pending is not None and target.logs_in(pending.value)  # the only valid credential is stored
    del target.fail["test"]
    [resumed, *_] = Runner(journal).resume(bp)
    assert resumed.outcome in ("awaiting_revoke", "succeeded")
    assert store.get(SECRET).version_id == pending.version_id and target.logs_in(store.get(SECRET).value)


# -- stopping (SIGTERM) ------------------------------------------------------------------------------------------


class StopDuring(FakePlugin):
    def __init__(self, target: FakeTarget, runner_box: list[Runner], method: str):
        super().__init__(target)
        self.box, self.method = runner_box, method

    def _maybe_fail(self, name: str) -> None:
        super()._maybe_fail(name)
        if name == self.method:
            self.box[0].stop.set()


def test_stop_during_create_pauses_before_stage_and_resume_finishes(env):
    store, journal, target = env
    box: list[Runner] = [Runner(journal)]
    bp = bind(store, StopDuring(target, box, "create"))
    with pytest.raises(ShutdownRequested):
        box[0].rotate(bp)
    [run] = journal.runs("p1")
    assert run.state is RunState.RUNNING and [s.step for s in run.steps] == [Step.CREATE]
    assert journal.lease_of("p1") is None  # released: another daemon may resume at once
    assert store.get(SECRET, Stage.PENDING) is not None and target.logs_in(store.get(SECRET).value)
    [resumed] = Runner(journal).resume(bind(store, FakePlugin(target)))
    assert resumed.outcome == "awaiting_revoke" and store.get(SECRET).version_id == run.run_id


def test_stop_during_stage_goes_on_through_promote_first(env):
    store, journal, target = env
    box: list[Runner] = [Runner(journal)]
    told = RecordingNotifier()
    bp = bind(store, StopDuring(target, box, "stage"), strategy="single-user", notifiers=(("ops", told),))
    with pytest.raises(ShutdownRequested):
        box[0].rotate(bp)
    [run] = journal.runs("p1")
    assert store.get(SECRET).version_id == run.run_id, "the half-applied credential must be promoted first"
    assert target.logs_in(store.get(SECRET).value) and told.events == []
    [resumed] = Runner(journal).resume(bind(store, FakePlugin(target), notifiers=(("ops", told),)))
    assert resumed.outcome == "awaiting_revoke" and len(told.events) == 1


# -- several daemons: the due check under the lease -------------------------------------------------------------


def test_a_plan_no_longer_due_is_not_rotated(env):
    store, journal, target = env
    bp = bind(store, FakePlugin(target))
    before = store.get(SECRET).version_id
    outcome = Runner(journal).rotate(bp, still_due=lambda: False)
    assert outcome.outcome == "not-due" and outcome.ok
    assert store.get(SECRET).version_id == before and journal.runs("p1") == [] and target.calls == []
