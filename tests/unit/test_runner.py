"""The engine's state machine over an in-process target: steps, journal, rollback order, leases, resume."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rotator.components import ComponentSetup
from rotator.engine.runner import BoundPlan, Runner
from rotator.errors import PlanBusy, StepError, TransientError
from rotator.journal.sqlite import SqliteJournal
from rotator.local_store import LocalStore, create_key_file
from rotator.model import RunState, Stage, Step
from tests.unit.fake_target import FakePlugin, FakeTarget

SECRET = "app/db"


class Crash(BaseException):
    """Stands in for kill -9 inside one process: not an Exception, so nothing catches it."""


@pytest.fixture
def env(tmp_path: Path):
    create_key_file(tmp_path / "store.key")
    store = LocalStore({}, ComponentSetup(name="local", config_dir=tmp_path, state_dir=tmp_path))
    journal = SqliteJournal(tmp_path / "journal.db")
    target = FakeTarget()
    store.put_current(SECRET, {"username": "app", "password": "first-password-0001"})
    target.accepted["app"] = {"first-password-0001"}
    yield store, journal, target
    store.close()
    journal.close()


def bind(store, target, strategy="single-user", grace=timedelta(hours=1)) -> BoundPlan:
    return BoundPlan(
        plan_id="p1",
        secret_id=SECRET,
        store_name="local",
        store=store,
        plugin=FakePlugin(target),
        strategy=strategy,
        grace=grace,
    )


def assert_invariants(store, target) -> None:
    current = store.get(SECRET, Stage.CURRENT)
    assert target.logs_in(current.value), "invariant 1: CURRENT must log in"
    held = {c["password"] for c in (store.get(SECRET, s) for s in Stage) if c is not None}
    for user, passwords in target.accepted.items():
        for password in passwords:
            # invariant 2: a password the target accepts is stored, or is a random one nobody knows
            assert password in held or (len(password) == 32 and user != current["username"])


def test_rotation_promotes_then_revokes_after_grace(env):
    store, journal, target = env
    runner = Runner(journal)
    bp = bind(store, target, "alternating-users")
    old = store.get(SECRET)
    outcome = runner.rotate(bp)
    assert outcome.outcome == "awaiting_revoke"
    new = store.get(SECRET)
    assert new.version_id == outcome.run_id and new["username"] == "app_clone"
    assert store.get(SECRET, Stage.PREVIOUS).version_id == old.version_id
    assert store.get(SECRET, Stage.PENDING) is None
    assert target.logs_in(old.value) and target.logs_in(new.value)  # both valid during grace
    assert runner.revoke_due(bp) == []  # grace not over
    later = Runner(journal, clock=lambda: datetime.now(UTC) + timedelta(hours=2))
    [revoked] = later.revoke_due(bp)
    assert revoked.revoked and revoked.outcome == "succeeded"
    assert not target.logs_in(old.value) and target.logs_in(new.value)
    run = journal.get_run(outcome.run_id)
    assert [(s.step, s.action, s.status) for s in run.steps] == [
        (Step.CREATE, "forward", "succeeded"),
        (Step.STAGE, "forward", "succeeded"),
        (Step.TEST, "forward", "succeeded"),
        (Step.PROMOTE, "forward", "succeeded"),
        (Step.REVOKE, "forward", "succeeded"),
    ]
    assert_invariants(store, target)


def test_revoke_old_now_revokes_right_after_promote(env):
    store, journal, target = env
    old = store.get(SECRET)
    outcome = Runner(journal).rotate(bind(store, target, "alternating-users"), revoke_old_now=True)
    assert outcome.outcome == "succeeded" and outcome.revoked
    assert not target.logs_in(old.value)


def test_failed_test_rolls_back_last_in_first_out(env):
    store, journal, target = env
    target.fail["test"] = StepError("probe failed")
    old = store.get(SECRET)
    outcome = Runner(journal).rotate(bind(store, target))
    assert outcome.outcome == "rolled_back" and "probe failed" in outcome.error
    assert store.get(SECRET).version_id == old.version_id
    assert store.get(SECRET, Stage.PENDING) is None
    assert target.logs_in(old.value)
    run = journal.get_run(outcome.run_id)
    assert run.state is RunState.ROLLED_BACK
    rollback = [s.step for s in run.steps if s.action == "rollback"]
    assert rollback == [Step.STAGE, Step.CREATE]  # unstage, then discard: LIFO
    assert target.calls[-2:] == ["unstage", "discard"]
    assert_invariants(store, target)


def test_failed_compensation_leaves_run_stuck_until_resume(env):
    store, journal, target = env
    target.fail["test"] = StepError("probe failed")
    target.fail["unstage"] = StepError("target down")
    outcome = Runner(journal).rotate(bind(store, target))
    assert outcome.outcome == "stuck"
    assert journal.get_run(outcome.run_id).state is RunState.STUCK
    # A stuck plan does not start another run: the attempt is recorded as failed (so the schedule backs off
    # from it and `status` says why), and nothing changed.
    refused = Runner(journal).rotate(bind(store, target))
    assert refused.outcome == "failed" and "is stuck" in refused.error and "rotator resume" in refused.fix
    assert journal.get_run(refused.run_id).state is RunState.FAILED
    assert store.get(SECRET, Stage.PENDING).version_id == outcome.run_id  # the stuck run's PENDING, untouched
    del target.fail["unstage"]
    [settled] = Runner(journal).resume(bind(store, target))
    assert settled.outcome == "rolled_back"
    assert_invariants(store, target)
    # each compensation ran once successfully: unstage after the fix, discard once
    steps = journal.get_run(outcome.run_id).steps
    assert [(s.step, s.status) for s in steps if s.action == "rollback" and s.status == "succeeded"] == [
        (Step.STAGE, "succeeded"),
        (Step.CREATE, "succeeded"),
    ]


def test_transient_errors_are_retried_and_auth_errors_are_not(env):
    store, journal, target = env
    plugin = FakePlugin(target)
    attempts = {"n": 0}
    original = plugin.test

    def flaky(ctx, pending):
        attempts["n"] += 1
        if attempts["n"] < 3:
            raise TransientError("connection reset")
        original(ctx, pending)

    plugin.test = flaky  # type: ignore[method-assign]
    bp = BoundPlan(plan_id="p1", secret_id=SECRET, store_name="local", store=store, plugin=plugin)
    assert Runner(journal).rotate(bp).outcome == "awaiting_revoke"
    assert attempts["n"] == 3

    store.put_current(SECRET, {"username": "app", "password": "not-what-target-has"})
    target.calls.clear()
    outcome = Runner(journal).rotate(bind(store, target))
    assert outcome.outcome == "rolled_back" and "AuthenticationFailed" in outcome.error
    assert target.calls.count("stage") == 1  # not retried


def test_second_run_on_a_leased_plan_is_busy(env):
    store, journal, target = env
    other = SqliteJournal(journal.path)  # another process's connection
    lease = other.acquire_lease("p1", 60)
    assert lease is not None
    with pytest.raises(PlanBusy, match="busy"):
        Runner(journal).rotate(bind(store, target))
    other.release_lease(lease)
    assert Runner(journal).rotate(bind(store, target)).ok


@pytest.mark.parametrize(
    "point",
    [
        "before-create",
        "after-store-put-pending",
        "after-stage",
        "before-test",
        "after-test",
        "after-store-promote",
        "after-promote",
        "before-revoke",
    ],
)
def test_resume_after_crash_converges(env, point, monkeypatch):
    store, journal, target = env
    import rotator.failpoints as fp

    def crash(name: str) -> None:
        if name == point:
            raise Crash(name)

    monkeypatch.setattr(fp, "hit", crash)
    with pytest.raises(Crash):
        Runner(journal).rotate(bind(store, target, "alternating-users"), revoke_old_now=True)
    monkeypatch.undo()
    outcomes = Runner(journal).resume(bind(store, target, "alternating-users"))
    assert outcomes and all(o.ok or o.outcome == "rolled_back" for o in outcomes)
    assert not journal.runs_in_state(RunState.RUNNING, RunState.ROLLING_BACK, RunState.STUCK)
    assert_invariants(store, target)
    # and the plan rotates normally afterwards
    assert Runner(journal).rotate(bind(store, target, "alternating-users")).ok
    assert_invariants(store, target)


def test_orphan_pending_without_a_run_is_rolled_back(env):
    store, journal, target = env
    store.put_pending(SECRET, {"username": "app", "password": "orphan-password-123"}, "f" * 32)
    target.accepted["app"] = {"orphan-password-123"}  # the lost run had staged it
    [outcome] = Runner(journal).resume(bind(store, target))
    assert outcome.outcome == "rolled_back"
    assert store.get(SECRET, Stage.PENDING) is None
    assert_invariants(store, target)


def test_new_rotation_supersedes_a_pending_revoke(env):
    store, journal, target = env
    bp = bind(store, target, "alternating-users")
    first = Runner(journal).rotate(bp)
    first_old = store.get(SECRET, Stage.PREVIOUS)
    second = Runner(journal).rotate(bp)
    assert second.ok and any("supersedes" in n for n in second.notes)
    assert journal.get_run(first.run_id).state is RunState.SUCCEEDED
    assert not target.logs_in(first_old.value)
    assert_invariants(store, target)
