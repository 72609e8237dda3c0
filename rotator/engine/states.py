"""The run state machine as pure data: steps in order, what undoes each, where a run resumes, which state changes
are legal. No I/O.

    create -> stage -> test -> promote -> notify -> (grace) -> revoke
       |        |       |        |
       +--------+-------+--------+--> rolling_back -> rolled_back   (or stuck, when a compensation fails)

Compensations run last-in-first-out, each at most once: unpromote, unstage, discard. The runner checks every
state it writes against ALLOWED (`check_transition`): a change the table does not list raises.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from rotator.errors import IllegalTransition
from rotator.model import RunState, Step, StepAction, StepRecord, StepStatus

# Steps that run under the lease before the new credential is live; any failure here rolls back.
FORWARD: tuple[Step, ...] = (Step.CREATE, Step.STAGE, Step.TEST, Step.PROMOTE)
# After promote the new credential is live: notify and revoke failures never roll it back.
AFTER_PROMOTE: tuple[Step, ...] = (Step.NOTIFY,)

# What undoes a forward step. Test changes nothing, so it has no compensation.
COMPENSATION: dict[Step, str] = {Step.CREATE: "discard", Step.STAGE: "unstage", Step.PROMOTE: "unpromote"}

# The state changes a run may make. Writing the state a run is in again (to change other fields) is no change.
ALLOWED: dict[RunState, frozenset[RunState]] = {
    RunState.RUNNING: frozenset(
        {
            RunState.ROLLING_BACK,  # a forward step failed
            RunState.AWAITING_REVOKE,  # promoted: PREVIOUS stays valid through the grace
            RunState.SUCCEEDED,  # a drift repair promoted: PREVIOUS is the drifted value, nothing to revoke
            RunState.STUCK,  # a roll-forward plugin failed after create: PENDING holds the only valid credential
        }
    ),
    RunState.ROLLING_BACK: frozenset({RunState.ROLLED_BACK, RunState.STUCK}),
    RunState.STUCK: frozenset(
        {
            RunState.ROLLING_BACK,  # `resume` goes on rolling back
            RunState.RUNNING,  # `resume` finishes a roll-forward run forward
        }
    ),
    RunState.AWAITING_REVOKE: frozenset({RunState.SUCCEEDED}),
    RunState.ROLLED_BACK: frozenset(),
    RunState.SUCCEEDED: frozenset(),
    RunState.FAILED: frozenset(),  # a run that could not start is recorded ended
}
# Where a run begins (Journal.begin_run): running, or already ended failed when it could not start.
INITIAL: frozenset[RunState] = frozenset({RunState.RUNNING, RunState.FAILED})


# Runs that ended without the new credential going live: the schedule backs off from them, alerts count them.
FAILED_STATES: tuple[RunState, ...] = (RunState.ROLLED_BACK, RunState.STUCK, RunState.FAILED)
# After the n-th failed run in a row the plan is tried again after 5, 10, 20 ... minutes, at most 6 hours apart.
RETRY_AFTER_FAILURE = timedelta(minutes=5)
MAX_RETRY_DELAY = timedelta(hours=6)


def failure_backoff(failures: int) -> timedelta:
    """How long after the n-th failed run in a row the plan is tried again: 5, 10, 20 ... minutes, at most 6 h."""
    delay: timedelta = RETRY_AFTER_FAILURE * (2 ** min(max(failures - 1, 0), 16))
    return min(delay, MAX_RETRY_DELAY)


def can_move(old: RunState, new: RunState) -> bool:
    return new is old or new in ALLOWED[old]


def check_transition(old: RunState, new: RunState, *, run_id: str = "") -> None:
    """Raise IllegalTransition unless a run in state `old` may move to `new` (ALLOWED; staying is no move)."""
    if not can_move(old, new):
        allowed = ", ".join(sorted(state.value for state in ALLOWED[old])) or "none: it has ended"
        raise IllegalTransition(
            f"run {run_id or '?'}: no transition from {old.value} to {new.value} (allowed: {allowed})\n  fix: this "
            "is a bug in the engine; report it with `rotator history PLAN --json`"
        )


def steps_from(step: Step) -> tuple[Step, ...]:
    """The forward and after-promote steps from `step` on, in order."""
    order = FORWARD + AFTER_PROMOTE
    return order[order.index(step) :]


@dataclass(frozen=True)
class ResumePoint:
    """Where an interrupted run goes on: forward from `step`, or rolling back."""

    rollback: bool
    step: Step | None = None


def resume_point(state: RunState, steps: Sequence[StepRecord]) -> ResumePoint:
    """An interrupted RUNNING run repeats the last forward step it started (every step is idempotent);
    a run that was rolling back (or is stuck) goes on rolling back."""
    if state in (RunState.ROLLING_BACK, RunState.STUCK):
        return ResumePoint(rollback=True)
    forward = [record.step for record in steps if record.action == StepAction.FORWARD]
    if not forward:
        return ResumePoint(rollback=False, step=Step.CREATE)
    last = forward[-1]
    if last not in FORWARD + AFTER_PROMOTE:
        return ResumePoint(rollback=False, step=Step.NOTIFY)
    return ResumePoint(rollback=False, step=last)


def compensations_due(steps: Sequence[StepRecord]) -> list[Step]:
    """The forward steps to undo, last first: those that started (they may have acted before a crash or a
    failure) and whose compensation has not yet succeeded. A step whose every attempt was "refused" (it failed
    before changing anything at the target: errors.NotApplied) needs none; one attempt that may have acted (a
    crash leaves it "started", a failure "failed") is enough to need it."""
    started = {s.step for s in steps if s.action == StepAction.FORWARD and s.status != StepStatus.REFUSED}
    undone = {s.step for s in steps if s.action == StepAction.ROLLBACK and s.status == StepStatus.SUCCEEDED}
    return [step for step in reversed(FORWARD) if step in COMPENSATION and step in started and step not in undone]
