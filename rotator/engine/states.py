"""The run state machine as pure data: steps in order, what undoes each, where a run resumes. No I/O.

    create -> stage -> test -> promote -> notify -> (grace) -> revoke
       |        |       |        |
       +--------+-------+--------+--> rolling_back -> rolled_back   (or stuck, when a compensation fails)

Compensations run last-in-first-out, each at most once: unpromote, unstage, discard.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from rotator.model import RunState, Step, StepRecord

# Steps that run under the lease before the new credential is live; any failure here rolls back.
FORWARD: tuple[Step, ...] = (Step.CREATE, Step.STAGE, Step.TEST, Step.PROMOTE)
# After promote the new credential is live: notify and revoke failures never roll it back.
AFTER_PROMOTE: tuple[Step, ...] = (Step.NOTIFY,)

# What undoes a forward step. Test changes nothing, so it has no compensation.
COMPENSATION: dict[Step, str] = {Step.CREATE: "discard", Step.STAGE: "unstage", Step.PROMOTE: "unpromote"}

ALLOWED: dict[RunState, frozenset[RunState]] = {
    RunState.RUNNING: frozenset({RunState.RUNNING, RunState.ROLLING_BACK, RunState.AWAITING_REVOKE}),
    RunState.ROLLING_BACK: frozenset({RunState.ROLLING_BACK, RunState.ROLLED_BACK, RunState.STUCK}),
    RunState.STUCK: frozenset({RunState.ROLLING_BACK, RunState.ROLLED_BACK, RunState.STUCK}),
    RunState.AWAITING_REVOKE: frozenset({RunState.AWAITING_REVOKE, RunState.SUCCEEDED}),
    RunState.ROLLED_BACK: frozenset(),
    RunState.SUCCEEDED: frozenset(),
    RunState.FAILED: frozenset(),  # a run that could not start is recorded ended
}


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
    return new in ALLOWED[old]


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
    forward = [record.step for record in steps if record.action == "forward"]
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
    started = {record.step for record in steps if record.action == "forward" and record.status != "refused"}
    undone = {record.step for record in steps if record.action == "rollback" and record.status == "succeeded"}
    return [step for step in reversed(FORWARD) if step in COMPENSATION and step in started and step not in undone]
