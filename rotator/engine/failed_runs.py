"""Failures beyond one run's own rollback, under the runner:

- a run that could not start (its secret not seeded, the store unreadable, an earlier run stuck) is journaled as a
  run of its own that ended `failed`, so that backoff, `status` and `history` see it, and its rotation_failed
  alert goes out;
- a plan that keeps failing: after `alert_after_failures` failed runs in a row (and every as many more), a
  rotation_stuck alert, as the schedule keeps retrying with backoff but will not heal alone.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

from rotator.engine.alerts import (
    consecutive_failures,
    failure_action,
    failure_event,
    fix_of,
    repeated_failures_action,
    send_alert,
)
from rotator.engine.plans import BoundPlan, RunOutcome, RunSettings
from rotator.engine.steps import default_wants
from rotator.errors import describe
from rotator.interfaces import Notifier
from rotator.logs import get_logger
from rotator.model import EventKind, Lease, Outcome, RunRecord, RunState, Trigger

log = get_logger("rotator.engine")


@dataclass(frozen=True)
class AlertedPlan:
    """A plan as its failure alerts name it, and the notifiers they go to (a plan that could not even be bound
    has no BoundPlan: the daemon gives these from its config)."""

    plan_id: str
    secret_id: str
    store_name: str
    notifiers: tuple[tuple[str, Notifier], ...] = ()
    wants: Callable[[str, str], bool] = default_wants
    tags: tuple[str, ...] = ()

    @classmethod
    def of(cls, bp: BoundPlan) -> AlertedPlan:
        return cls(bp.plan_id, bp.secret_id, bp.store_name, bp.notifiers, bp.wants, bp.tags)


def record_failed_start(
    settings: RunSettings,
    plan: AlertedPlan,
    lease: Lease,
    error: BaseException,
    *,
    trigger: Trigger,
    reason: str | None = None,
    operator: str | None = None,
) -> RunOutcome:
    """Journal a run that could not start (nothing was changed) as `failed`, alert, and return its outcome."""
    now = settings.now()
    message = describe(error)
    record = RunRecord(
        run_id=uuid.uuid4().hex,
        plan_id=plan.plan_id,
        state=RunState.FAILED,
        trigger=trigger,
        started_at=now,
        store=plan.store_name,
        secret_id=plan.secret_id,
        ended_at=now,
        reason=reason,
        operator=operator,
        error=message,
    )
    settings.journal.begin_run(record, lease)
    log.error("rotation could not start; nothing was changed", error=message)
    event = failure_event(
        kind=EventKind.ROTATION_FAILED,
        plan_id=plan.plan_id,
        run_id=record.run_id,
        secret_id=plan.secret_id,
        store=plan.store_name,
        current_version_id=None,
        at=now,
        trigger=trigger.value,
        reason=reason,
        tags=plan.tags,
        error=message,
        action=failure_action(EventKind.ROTATION_FAILED, error),
    )
    results = send_alert(event, plan.notifiers, plan.wants, deadline_seconds=settings.step_timeout)
    if results:
        settings.journal.update_run(record.run_id, lease, details=record.details.with_alerts(event.kind, results))
    outcome = RunOutcome(plan.plan_id, Outcome.FAILED, record.run_id, message, fix=fix_of(error))
    alert_repeated_failures(settings, plan, lease, outcome)
    return outcome


def alert_repeated_failures(settings: RunSettings, plan: AlertedPlan, lease: Lease, outcome: RunOutcome) -> None:
    """After `alert_after_failures` failed runs in a row (and every as many more), a rotation_stuck alert: the
    schedule keeps retrying with backoff, but a person must look. `status` shows the count."""
    every = settings.alert_after_failures
    if every <= 0 or outcome.run_id is None:
        return
    count = consecutive_failures(settings.journal, plan.plan_id, limit=every * 20)
    if count < every or count % every:
        return
    outcome.notes.append(f"failed {count} times in a row: operators alerted")
    record = settings.journal.get_run(outcome.run_id)
    error = outcome.error or "failed"
    event = failure_event(
        kind=EventKind.ROTATION_STUCK,
        plan_id=plan.plan_id,
        run_id=outcome.run_id,
        secret_id=plan.secret_id,
        store=plan.store_name,
        current_version_id=record.previous_version_id if record else None,
        at=settings.now(),
        trigger=record.trigger.value if record else Trigger.SCHEDULE.value,
        reason=f"failed {count} times in a row",
        tags=plan.tags,
        error=error,
        action=repeated_failures_action(count, outcome.fix),
    )
    log.error("plan keeps failing; operators alerted", failures=count, error=error)
    results = send_alert(event, plan.notifiers, plan.wants, deadline_seconds=settings.step_timeout)
    if results and record is not None:
        settings.journal.update_run(
            record.run_id, lease, details=record.details.with_alerts("repeated_failures", results)
        )
