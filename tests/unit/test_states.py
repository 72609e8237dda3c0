"""engine/states.py: the transition table is enforced (an illegal change raises, in the engine too), and the pure
helpers say where a run resumes and what it must undo."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from rotator.components import ComponentSetup
from rotator.engine.plans import BoundPlan, RunSettings
from rotator.engine.runner import _Run
from rotator.engine.states import (
    ALLOWED,
    INITIAL,
    ResumePoint,
    can_move,
    check_transition,
    compensations_due,
    failure_backoff,
    resume_point,
    steps_from,
)
from rotator.errors import IllegalTransition
from rotator.journal.sqlite import SqliteJournal
from rotator.local_store import LocalStore, create_key_file
from rotator.model import RunRecord, RunState, Step, StepAction, StepRecord, StepStatus, Trigger
from tests.unit.fake_target import FakePlugin, FakeTarget

NOW = datetime(2024, 1, 1, tzinfo=UTC)
ENDED = (RunState.ROLLED_BACK, RunState.SUCCEEDED, RunState.FAILED)


def step(name: Step, action: StepAction = StepAction.FORWARD, status: StepStatus = StepStatus.SUCCEEDED) -> StepRecord:
    return StepRecord("r1", name, action, status, NOW)


def test_every_state_has_a_row_and_ended_runs_go_nowhere() -> None:
    assert set(ALLOWED) == set(RunState)
    for state in ENDED:
        assert ALLOWED[state] == frozenset()
        for other in RunState:
            if other is not state:
                assert not can_move(state, other)
    assert {RunState.RUNNING, RunState.FAILED} == INITIAL


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (RunState.RUNNING, RunState.ROLLING_BACK),
        (RunState.RUNNING, RunState.AWAITING_REVOKE),
        (RunState.RUNNING, RunState.SUCCEEDED),  # a drift repair: nothing to revoke
        (RunState.RUNNING, RunState.STUCK),  # roll-forward held
        (RunState.ROLLING_BACK, RunState.ROLLED_BACK),
        (RunState.ROLLING_BACK, RunState.STUCK),
        (RunState.STUCK, RunState.ROLLING_BACK),
        (RunState.STUCK, RunState.RUNNING),  # roll-forward resumed
        (RunState.AWAITING_REVOKE, RunState.SUCCEEDED),
    ],
)
def test_the_moves_the_engine_makes_are_allowed(old: RunState, new: RunState) -> None:
    check_transition(old, new)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (RunState.RUNNING, RunState.ROLLED_BACK),  # never without rolling back first
        (RunState.RUNNING, RunState.FAILED),  # failed is only where a run that could not start begins
        (RunState.ROLLING_BACK, RunState.RUNNING),
        (RunState.ROLLING_BACK, RunState.AWAITING_REVOKE),
        (RunState.AWAITING_REVOKE, RunState.ROLLING_BACK),  # after promote and notify, never rolled back
        (RunState.AWAITING_REVOKE, RunState.RUNNING),
        (RunState.STUCK, RunState.SUCCEEDED),
        (RunState.ROLLED_BACK, RunState.RUNNING),
        (RunState.SUCCEEDED, RunState.AWAITING_REVOKE),
        (RunState.FAILED, RunState.RUNNING),
    ],
)
def test_other_moves_raise(old: RunState, new: RunState) -> None:
    assert not can_move(old, new)
    with pytest.raises(IllegalTransition, match=f"from {old.value} to {new.value}") as raised:
        check_transition(old, new, run_id="r1")
    assert "run r1" in str(raised.value) and "fix:" in str(raised.value)


def test_staying_in_a_state_is_no_move() -> None:
    for state in RunState:
        check_transition(state, state)


def test_the_runner_refuses_an_illegal_change_and_writes_nothing(tmp_path: Path) -> None:
    create_key_file(tmp_path / "store.key")
    store = LocalStore({}, ComponentSetup(name="local", config_dir=tmp_path, state_dir=tmp_path))
    journal = SqliteJournal(tmp_path / "journal.db")
    try:
        bp = BoundPlan(plan_id="p1", secret_id="s", store_name="local", store=store, plugin=FakePlugin(FakeTarget()))
        lease = journal.acquire_lease("p1", 60)
        assert lease is not None
        record = RunRecord("r1", "p1", RunState.SUCCEEDED, Trigger.MANUAL, NOW, "local", "s")
        journal.begin_run(record, lease)
        run = _Run(RunSettings(journal=journal), bp, record, lease)
        with pytest.raises(IllegalTransition):
            run.move(RunState.ROLLING_BACK)
        stored = journal.get_run("r1")
        assert stored is not None and stored.state is RunState.SUCCEEDED and run.record.state is RunState.SUCCEEDED
        run.move(RunState.SUCCEEDED, error="note")  # the same state with other fields: allowed
        assert journal.get_run("r1").error == "note"  # type: ignore[union-attr]
    finally:
        store.close()
        journal.close()


def test_resume_points() -> None:
    assert resume_point(RunState.RUNNING, []) == ResumePoint(rollback=False, step=Step.CREATE)
    assert resume_point(RunState.RUNNING, [step(Step.CREATE), step(Step.STAGE, status=StepStatus.STARTED)]) == (
        ResumePoint(rollback=False, step=Step.STAGE)
    )
    assert resume_point(RunState.RUNNING, [step(Step.REVOKE)]) == ResumePoint(rollback=False, step=Step.NOTIFY)
    for state in (RunState.ROLLING_BACK, RunState.STUCK):
        assert resume_point(state, [step(Step.CREATE)]).rollback


def test_compensations_last_first_each_once_and_none_for_a_refused_step() -> None:
    forward = [step(Step.CREATE), step(Step.STAGE), step(Step.TEST, status=StepStatus.FAILED)]
    assert compensations_due(forward) == [Step.STAGE, Step.CREATE]  # test changes nothing: nothing to undo
    undone = [*forward, step(Step.STAGE, StepAction.ROLLBACK)]
    assert compensations_due(undone) == [Step.CREATE]
    refused = [step(Step.CREATE), step(Step.STAGE, status=StepStatus.REFUSED)]
    assert compensations_due(refused) == [Step.CREATE]
    # one attempt that may have acted is enough: a refused retry does not cancel an earlier failed one
    mixed = [step(Step.CREATE), step(Step.STAGE, status=StepStatus.FAILED), step(Step.STAGE, status=StepStatus.REFUSED)]
    assert compensations_due(mixed) == [Step.STAGE, Step.CREATE]
    promoted = [step(Step.CREATE), step(Step.STAGE), step(Step.TEST), step(Step.PROMOTE)]
    assert compensations_due(promoted) == [Step.PROMOTE, Step.STAGE, Step.CREATE]


def test_step_records_read_plain_text_as_enums() -> None:
    record = StepRecord("r1", Step.CREATE, "forward", "refused", NOW)  # type: ignore[arg-type]
    assert record.action is StepAction.FORWARD and record.status is StepStatus.REFUSED
    assert record.action == "forward"  # and still compare equal to their stored text


def test_steps_and_backoff() -> None:
    assert steps_from(Step.TEST) == (Step.TEST, Step.PROMOTE, Step.NOTIFY)
    assert [failure_backoff(n).total_seconds() / 60 for n in (1, 2, 3)] == [5, 10, 20]
    assert failure_backoff(50).total_seconds() == 6 * 3600
