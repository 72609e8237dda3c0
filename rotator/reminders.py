"""Reminders for credentials a person rotates (plans with `plugin = "manual"`).

When a manual plan is due: a fixed `due` date, until a rotation is recorded on or after `due - remind_before`; else
the plan's schedule after the last recorded rotation (`rotator mark-rotated`, `rotator import`, or `rotator store
put` of its secret); a plan never recorded is due now, since its age is unknown.

From `remind_before` ahead of the due time the daemon sends `credential.rotation_due` to the plan's notifiers, and
`credential.overdue` once it has passed, each repeated every `remind_every` until a rotation is recorded. A
notifier receives them when its `events` lists them or is left at the default.

The journal is the memory, so restarts and several daemons sharing one journal send each reminder once: each
reminder is a notifications row keyed `reminder:PLAN:DUE:KIND` per notifier, written under the plan's lease, whose
`updated_at` says when it was last sent. A delivery that failed is kept as `gave_up` with its error (never
`failed`: the rotation notifications' retry sweep must not pick it up) and tried again after `retry_after`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from rotator.config import PlanConfig
from rotator.engine.runner import BoundPlan
from rotator.errors import describe
from rotator.interfaces import Journal
from rotator.logs import bound_contextvars, get_logger
from rotator.model import EventKind, NotificationRecord, NotifyStatus, RotationEvent, RunRecord
from rotator.retry import call_with_retry
from rotator.scheduler import next_due

if TYPE_CHECKING:
    from rotator.workspace import Workspace

log = get_logger(__name__)

_LEASE_SECONDS = 60.0
_TRIES = 2


@dataclass(frozen=True)
class ManualState:
    """Where a manual plan stands: when it was last recorded rotated, when it is due, and which reminder (if any)
    is due now ("credential.rotation_due", "credential.overdue", or None)."""

    plan_id: str
    owner: str | None
    last_rotated: datetime | None
    due_at: datetime | None
    reminder: str | None

    @property
    def overdue(self) -> bool:
        return self.reminder == EventKind.OVERDUE.value


def due_at(plan: PlanConfig, success: RunRecord | None, now: datetime) -> datetime | None:
    """When the manual plan must next be rotated (see the module docstring)."""
    last = success.started_at if success else None
    if plan.due is not None and (last is None or last < plan.due - plan.remind_before):
        return plan.due
    return next_due(plan.parsed_schedule, last, now)


def manual_state(plan: PlanConfig, success: RunRecord | None, now: datetime) -> ManualState:
    due = due_at(plan, success, now)
    reminder: str | None = None
    if due is not None and plan.enabled:
        if now >= due:
            reminder = EventKind.OVERDUE.value
        elif now >= due - plan.remind_before:
            reminder = EventKind.ROTATION_DUE.value
    return ManualState(plan.id, plan.owner, success.started_at if success else None, due, reminder)


def reminder_key(plan_id: str, due: datetime, kind: str) -> str:
    return f"reminder:{plan_id}:{due.astimezone(UTC):%Y%m%dT%H%M%SZ}:{kind.rsplit('.', 1)[-1]}"


def reminder_event(plan: PlanConfig, state: ManualState, success: RunRecord | None) -> RotationEvent:
    assert state.reminder is not None and state.due_at is not None
    return RotationEvent(
        plan_id=plan.id,
        run_id=reminder_key(plan.id, state.due_at, state.reminder),
        secret_id=plan.secret,
        store=plan.store,
        version_id=(success.version_id or "") if success else "",
        previous_version_id=None,
        rotated_at=state.last_rotated or state.due_at,
        trigger="reminder",
        tags=tuple(plan.tags),
        kind=state.reminder,
        owner=plan.owner,
        due_at=state.due_at,
        action=f"rotate it by hand, then run `rotator mark-rotated {plan.id} --reason ...`",
    )


@dataclass(frozen=True)
class Sent:
    plan_id: str
    notifier: str
    kind: str
    error: str | None = None


class ReminderSender:
    """Sends the reminders that are due. `tick()` is called by the daemon on its sweep; cheap when nothing is due
    (one journal query for every plan's last rotation, and one per plan with a reminder due)."""

    def __init__(
        self,
        journal: Journal,
        plans: Iterable[PlanConfig],
        bind: Callable[[PlanConfig], BoundPlan],
        wants: Callable[[str, str], bool],
        *,
        retry_after: timedelta = timedelta(minutes=5),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.journal = journal
        self.plans = [plan for plan in plans if plan.is_manual]
        self.bind = bind
        self.wants = wants  # (notifier name, event kind) -> whether that notifier receives the kind
        self.retry_after = retry_after
        self.clock = clock

    def states(self) -> dict[str, ManualState]:
        now = self.clock()
        successes = self.journal.last_successes() if self.plans else {}
        return {plan.id: manual_state(plan, successes.get(plan.id), now) for plan in self.plans}

    def tick(self) -> list[Sent]:
        if not self.plans:
            return []
        now = self.clock()
        successes = self.journal.last_successes()
        sent: list[Sent] = []
        for plan in self.plans:
            state = manual_state(plan, successes.get(plan.id), now)
            if state.reminder is None:
                continue
            try:
                with bound_contextvars(plan=plan.id):
                    sent.extend(self._remind(plan, state, successes.get(plan.id), now))
            except Exception as exc:  # one plan's trouble never stops the others' reminders
                log.error("could not send reminders", plan=plan.id, error=describe(exc))
        return sent

    def _remind(self, plan: PlanConfig, state: ManualState, success: RunRecord | None, now: datetime) -> list[Sent]:
        assert state.reminder is not None and state.due_at is not None
        bp = self.bind(plan)
        receivers = [
            (name, notifier)
            for name, notifier in bp.notifiers
            if self.wants(name, state.reminder) and _takes(notifier, state.reminder)
        ]
        if not receivers:
            log.warning("manual plan is due but no notifier receives its reminders", reminder=state.reminder)
            return []
        key = reminder_key(plan.id, state.due_at, state.reminder)
        lease = self.journal.acquire_lease(plan.id, _LEASE_SECONDS)
        if lease is None:
            return []  # another daemon (or a mark-rotated) holds it: it sends, or the reminder is moot
        try:
            # Read again under the lease: another daemon may have just sent it, or a rotation been recorded.
            fresh = self.journal.last_success(plan.id)
            if fresh is not None and (success is None or fresh.run_id != success.run_id):
                return []
            records = {r.notifier: r for r in self.journal.notifications(run_id=key)}
            event = reminder_event(plan, state, success)
            sent: list[Sent] = []
            for name, notifier in receivers:
                record = records.get(name)
                if record is not None and now < _next_reminder(record, plan.remind_every, self.retry_after):
                    continue
                error: str | None = None
                try:
                    call_with_retry(lambda n=notifier: n(event), attempts=_TRIES, deadline_seconds=30.0)  # type: ignore[misc]
                except Exception as exc:
                    error = describe(exc)
                    log.error("reminder not delivered; tried again later", notifier=name, error=error)
                else:
                    log.info("reminder sent", notifier=name, reminder=state.reminder, due_at=state.due_at.isoformat())
                self.journal.save_notification(
                    NotificationRecord(
                        run_id=key,
                        plan_id=plan.id,
                        notifier=name,
                        status=NotifyStatus.GAVE_UP if error else NotifyStatus.SUCCEEDED,
                        required=False,
                        attempts=(record.attempts if record else 0) + 1,
                        next_attempt_at=now + (self.retry_after if error else plan.remind_every),
                        last_error=error,
                        updated_at=now,
                    ),
                    lease,
                )
                sent.append(Sent(plan.id, name, state.reminder, error))
            return sent
        finally:
            self.journal.release_lease(lease)


def _takes(notifier: object, kind: str) -> bool:
    """Whether the notifier's type takes `kind`: one that redeploys or writes the credential (file, ecs,
    kubernetes) declares event_kinds without reminders, and a reminder is no reason to redeploy."""
    kinds = getattr(notifier, "event_kinds", None)
    return kinds is None or kind in kinds


def _next_reminder(record: NotificationRecord, every: timedelta, retry_after: timedelta) -> datetime:
    last = record.updated_at or datetime.min.replace(tzinfo=UTC)
    return last + (retry_after if record.last_error else every)


def default_wants(notifier_events: Mapping[str, frozenset[str] | None]) -> Callable[[str, str], bool]:
    """A notifier receives a reminder kind when its `events` names it, or when it has no `events` (None)."""

    def wants(name: str, kind: str) -> bool:
        events = notifier_events.get(name)
        return events is None or kind in events

    return wants


def sender_for(workspace: Workspace, clock: Callable[[], datetime] | None = None) -> ReminderSender | None:
    """The daemon's sender for this config's manual plans (None when it has none)."""
    config = workspace.config
    if not any(plan.is_manual and plan.enabled for plan in config.plans):
        return None
    notifiers = config.model.notifiers
    events = {
        name: (frozenset(spec.events) if "events" in spec.model_fields_set else None)
        for name, spec in notifiers.items()
    }
    return ReminderSender(
        workspace.journal,
        config.plans,
        workspace.bind,
        default_wants(events),
        retry_after=timedelta(seconds=max(60.0, config.model.rotator.notify_retry_seconds)),
        **({"clock": clock} if clock else {}),
    )
