"""Telling consumers that a new credential is live, under the runner: each notifier's delivery of each run is
journaled (a NotificationRecord), so that a failed one is tried again on later ticks by any daemon
(`retry_notifications`), shows in `status` and metrics, and, for a required notifier, holds back revoke
(rotator/engine/revoke_gate.py). The fan-out itself is rotator/engine/steps.py's `tell`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from rotator.engine.plans import BoundPlan, RunOutcome, RunSettings
from rotator.engine.steps import NOTIFY_TRIES, tell
from rotator.errors import SecretNotFound
from rotator.logs import bound_contextvars, get_logger
from rotator.model import (
    EventKind,
    Lease,
    NotificationRecord,
    NotifyStatus,
    Outcome,
    RotationEvent,
    RunRecord,
    RunState,
    Stage,
    Step,
    StepAction,
)

log = get_logger("rotator.engine")


def notify_backoff(attempts: int, first: float = 60.0) -> timedelta:
    """When a failed notification is tried again: `first` seconds after the first failure, doubling, at most an
    hour."""
    return min(timedelta(seconds=first * 2 ** min(max(attempts - 1, 0), 12)), timedelta(hours=1))


def promoted_at(record: RunRecord) -> datetime | None:
    """When the run's promote last finished, if it did."""
    ends = [s.ended_at for s in record.steps if s.step is Step.PROMOTE and s.action == StepAction.FORWARD]
    return next((end for end in reversed(ends) if end is not None), None)


def rotation_event(
    bp: BoundPlan,
    record: RunRecord,
    now: datetime,
    read_value: Callable[[], Mapping[str, Any]],
    kind: EventKind = EventKind.ROTATED,
) -> RotationEvent:
    """The notification for a run: no secret, only ids; `read_value` reads CURRENT for renderers on this host."""
    return RotationEvent(
        plan_id=bp.plan_id,
        run_id=record.run_id,
        secret_id=bp.secret_id,
        store=bp.store_name,
        version_id=record.run_id,
        previous_version_id=record.previous_version_id,
        rotated_at=promoted_at(record) or now,
        trigger=record.trigger.value,
        reason=record.reason,
        tags=bp.tags,
        kind=kind.value,
        read_value=read_value,
    )


def current_value(bp: BoundPlan) -> Callable[[], Mapping[str, Any]]:
    """Reads the plan's CURRENT value when a notifier asks for it (never before)."""

    def read() -> Mapping[str, Any]:
        credential = bp.store.get(bp.secret_id, Stage.CURRENT)
        if credential is None:
            raise SecretNotFound(f"plan {bp.plan_id}: secret {bp.secret_id!r} has no CURRENT version")
        return dict(credential.value)

    return read


class JournalLedger:
    """One run's deliveries as the journal keeps them: succeeded, or failed with the time of the next attempt."""

    def __init__(self, settings: RunSettings, bp: BoundPlan, run_id: str, lease: Lease):
        self.settings = settings
        self.bp = bp
        self.run_id = run_id
        self.lease = lease
        self.records = {r.notifier: r for r in settings.journal.notifications(run_id=run_id)}

    def told(self, notifier: str) -> bool:
        record = self.records.get(notifier)
        return record is not None and record.status is NotifyStatus.SUCCEEDED

    def _save(self, notifier: str, status: NotifyStatus, error: str | None) -> None:
        before = self.records.get(notifier)
        attempts = (before.attempts if before is not None else 0) + 1
        now = self.settings.now()
        record = NotificationRecord(
            run_id=self.run_id,
            plan_id=self.bp.plan_id,
            notifier=notifier,
            status=status,
            required=notifier in self.bp.required_notifiers,
            attempts=attempts,
            next_attempt_at=now + notify_backoff(attempts, self.settings.notify_retry_seconds) if error else None,
            last_error=error,
            updated_at=now,
        )
        self.settings.journal.save_notification(record, self.lease)
        self.records[notifier] = record
        if error:
            log.error("notifier failed; retried later", notifier=notifier, attempt=attempts, error=error)
        else:
            log.info("notified", notifier=notifier, attempt=attempts)

    def delivered(self, notifier: str) -> None:
        self._save(notifier, NotifyStatus.SUCCEEDED, None)

    def failed(self, notifier: str, error: str) -> None:
        self._save(notifier, NotifyStatus.FAILED, error)


def deliver(settings: RunSettings, bp: BoundPlan, event: RotationEvent, lease: Lease) -> list[str]:
    """Tell the plan's notifiers subscribed to `event`'s kind that have not had it yet; journal each delivery.
    Returns the names that failed."""
    ledger = JournalLedger(settings, bp, event.run_id, lease)
    return tell(event, bp.notifiers, ledger, tries=NOTIFY_TRIES, deadline_seconds=settings.step_timeout, wants=bp.wants)


class _NotesLedger:
    """Telling of a rollback: each result becomes a note of the run's outcome."""

    def __init__(self, notes: list[str]):
        self.notes = notes

    def told(self, notifier: str) -> bool:
        return False

    def delivered(self, notifier: str) -> None:
        self.notes.append(f"told {notifier} of the rollback")

    def failed(self, notifier: str, error: str) -> None:
        log.error("could not tell a notifier of the rollback", notifier=notifier, error=error)
        self.notes.append(f"could not tell {notifier} of the rollback: {error}")


def tell_rolled_back(settings: RunSettings, bp: BoundPlan, record: RunRecord, notes: list[str]) -> None:
    """After a rollback that undid a promote: the notifiers that delivered the rotation are told to read again."""
    told = {
        r.notifier for r in settings.journal.notifications(run_id=record.run_id) if r.status is NotifyStatus.SUCCEEDED
    }
    event = rotation_event(bp, record, settings.now(), current_value(bp), kind=EventKind.ROLLED_BACK)
    tell(
        event,
        [(name, notifier) for name, notifier in bp.notifiers if name in told],  # only those told of the rotation
        _NotesLedger(notes),
        tries=NOTIFY_TRIES,
        deadline_seconds=settings.step_timeout,
        wants=bp.wants,
    )


def retry_notifications(settings: RunSettings, bp: BoundPlan, lease: Lease) -> list[RunOutcome]:
    """Deliver again every failed notification of `bp` whose next attempt is due (the daemon's tick), under the
    plan's lease. One of a run that a newer rotation superseded, or older than notify_retry_for, is given up."""
    journal = settings.journal
    now = settings.now()
    due = [
        r
        for r in journal.notifications(plan_id=bp.plan_id, statuses=(NotifyStatus.FAILED, NotifyStatus.PENDING))
        if r.next_attempt_at is None or r.next_attempt_at <= now
    ]
    if not due:
        return []
    outcomes: list[RunOutcome] = []
    newest = journal.last_success(bp.plan_id)
    notifiers = {name for name, _ in bp.notifiers if bp.wants(name, EventKind.ROTATED)}
    for record in due:
        run_record = journal.get_run(record.run_id)
        reason = None
        if run_record is None or newest is None or newest.run_id != record.run_id:
            reason = "superseded by a newer rotation"
        elif record.notifier not in notifiers:
            reason = "notifier removed from the plan"
        elif record.updated_at and (run_record.started_at + settings.notify_retry_for) <= now:
            reason = f"gave up after {record.attempts} attempts"
        if reason is not None or run_record is None:
            journal.save_notification(
                dataclasses.replace(
                    record,
                    status=NotifyStatus.GAVE_UP,
                    last_error=f"{record.last_error or ''}; {reason}".strip("; "),
                    next_attempt_at=None,
                    updated_at=now,
                ),
                lease,
            )
            continue
        with bound_contextvars(run=record.run_id):
            event = rotation_event(bp, run_record, now, current_value(bp))
            only = [(name, n) for name, n in bp.notifiers if name == record.notifier]
            ledger = JournalLedger(settings, bp, record.run_id, lease)
            failed = tell(
                event, only, ledger, tries=NOTIFY_TRIES, deadline_seconds=settings.step_timeout, wants=bp.wants
            )
        error = ledger.records[record.notifier].last_error if failed else None
        if error is None and record.required and run_record.state is RunState.AWAITING_REVOKE:
            # The revoke this notifier held back may go now (not before grace ends).
            grace_end = (promoted_at(run_record) or run_record.started_at) + bp.grace
            revoke_at = max(now, grace_end)
            if run_record.revoke_due_at is None or run_record.revoke_due_at > revoke_at:
                journal.update_run(record.run_id, lease, revoke_due_at=revoke_at)
        outcomes.append(
            RunOutcome(
                bp.plan_id,
                Outcome.NOTIFIED if error is None else Outcome.NOTIFY_FAILED,
                record.run_id,
                error,
                notes=[f"notifier {record.notifier}"],
            )
        )
    return outcomes
