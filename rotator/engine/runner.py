"""Runs the steps of a rotation, journals each before and after it runs, rolls back last-in-first-out, and
resumes interrupted runs. It knows plugins, stores and notifiers only through rotator.interfaces.

Crash model: the process may die at any instruction (failpoints.py crashes it at named points). Every step and
every compensation is idempotent, the store holds PENDING before anything is applied, and the journal says
which step was in flight, so `resume` can repeat that step, or go on rolling back, and converge.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast

from rotator import failpoints
from rotator.engine.states import (
    COMPENSATION,
    FORWARD,
    compensations_due,
    resume_point,
    steps_from,
)
from rotator.errors import (
    LeaseLost,
    NotifyError,
    PlanBusy,
    RollbackError,
    RotatorError,
    SecretNotFound,
    StoreError,
)
from rotator.interfaces import Journal, Notifier, Reconciler, RotationPlugin, SecretStore, UsageProbe
from rotator.logs import bound_contextvars, get_logger, register_secret, scrub
from rotator.model import (
    SUCCESS_EVENTS,
    Credential,
    Lease,
    NotificationRecord,
    NotifyStatus,
    PasswordPolicy,
    RotationContext,
    RotationEvent,
    RunRecord,
    RunState,
    Stage,
    Step,
    Trigger,
)
from rotator.retry import call_with_retry

T = TypeVar("T")
OPEN_STATES = (RunState.RUNNING, RunState.ROLLING_BACK, RunState.STUCK)
log = get_logger("rotator.engine")


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class BoundPlan:
    """A plan with its components resolved: what the runner needs to rotate it."""

    plan_id: str
    secret_id: str
    store_name: str
    store: SecretStore
    plugin: RotationPlugin
    strategy: str = "single-user"
    grace: timedelta = timedelta(hours=1)
    options: dict[str, Any] = field(default_factory=dict)
    password_policy: PasswordPolicy = field(default_factory=PasswordPolicy)
    notifiers: tuple[tuple[str, Notifier], ...] = ()
    tags: tuple[str, ...] = ()
    required_notifiers: frozenset[str] = frozenset()  # PREVIOUS is not revoked until these succeeded
    revoke_deadline: timedelta = timedelta(hours=24)  # how long revoke waits while PREVIOUS is still in use
    rollback_on_failure: bool = False  # a required notifier failing puts PREVIOUS back, if it still works
    # The event kinds each notifier receives (its `events`); a notifier not named here gets SUCCESS_EVENTS.
    notifier_events: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def wants(self, notifier: str, kind: str) -> bool:
        """Whether the plan's notifier `notifier` subscribed to events of `kind`."""
        return kind in self.notifier_events.get(notifier, SUCCESS_EVENTS)

    @property
    def rolls_forward(self) -> bool:
        """The provider invalidates the old credential when it mints the new one (e.g. Cloudflare's token roll):
        after create there is nothing to roll back to, so a failed run keeps PENDING and finishes forward.
        A plugin may roll forward in some strategies only (`rolls_forward_strategies`)."""
        if not getattr(self.plugin, "rolls_forward", False):
            return False
        only = getattr(self.plugin, "rolls_forward_strategies", None)
        return only is None or self.strategy in only


@dataclass
class RunOutcome:
    """What one call of the runner did to one plan (for the CLI's summary table and --json)."""

    plan_id: str
    outcome: str  # a RunState value, or "busy", "dry-run", "nothing-to-do", "error"
    run_id: str | None = None
    error: str | None = None
    step_seconds: dict[str, float] = field(default_factory=dict)
    revoked: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.outcome in (
            RunState.SUCCEEDED.value,
            RunState.AWAITING_REVOKE.value,
            "dry-run",
            "nothing-to-do",
            "not-due",
        )

    @property
    def settled(self) -> bool:
        """For `resume`: the run ended, forward or rolled back (nothing left for an operator)."""
        return self.ok or self.outcome == RunState.ROLLED_BACK.value

    def as_dict(self) -> dict[str, Any]:
        return {
            "plan": self.plan_id,
            "outcome": self.outcome,
            "ok": self.ok,
            "run_id": self.run_id,
            "error": self.error,
            "revoked": self.revoked,
            "step_seconds": self.step_seconds,
            "notes": self.notes,
        }


class ShutdownRequested(BaseException):
    """The process is stopping (SIGTERM): the run pauses at a step boundary, its lease is released, and it stays
    open in the journal for `resume` (this daemon at its next start, or another daemon's sweep at once)."""


class RequiredNotifyFailed(RotatorError):
    """A required notifier failed after promote, PREVIOUS still works and the plan asks to roll back."""


def notify_backoff(attempts: int, first: float = 60.0) -> timedelta:
    """When a failed notification is tried again: `first` seconds after the first failure, doubling, at most an
    hour."""
    return min(timedelta(seconds=first * 2 ** min(max(attempts - 1, 0), 12)), timedelta(hours=1))


def describe(exc: BaseException) -> str:
    """An error as one line for the journal and the terminal, with every known secret scrubbed out."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    name = type(exc).__name__
    return scrub(f"{name}: {text}" if text else name)


class _Run:
    """One run being driven: its record, its lease (renewed before each step), and its plugin context."""

    def __init__(self, runner: Runner, bp: BoundPlan, record: RunRecord, lease: Lease):
        self.runner = runner
        self.bp = bp
        self.record = record
        self.lease = lease
        self.journal = runner.journal
        self.step_seconds: dict[str, float] = {}
        self._reads: dict[tuple[str, Stage], Credential | None] = {}
        self.ctx = RotationContext(
            plan_id=bp.plan_id,
            run_id=record.run_id,
            secret_id=bp.secret_id,
            strategy=bp.strategy,
            options=bp.options,
            password_policy=bp.password_policy,
            read_secret=self._read_other_secret,
            read_stage=self.read,
        )

    @property
    def run_id(self) -> str:
        return self.record.run_id

    # -- reading the store ------------------------------------------------------------------------------------

    def _read_other_secret(self, secret_id: str) -> Credential:
        credential = self.read(Stage.CURRENT, secret_id=secret_id)
        if credential is None:
            raise SecretNotFound(f"plan {self.bp.plan_id}: secret {secret_id!r} has no CURRENT version")
        return credential

    def read(self, stage: Stage, *, secret_id: str | None = None) -> Credential | None:
        """A stage of a secret, cached for this run until the run's next store write (a remote store is
        billed and throttled per call: AWS reads fall from 13 to a handful per rotation)."""
        secret = secret_id or self.bp.secret_id
        key = (secret, stage)
        if key not in self._reads:
            credential = self.retry(lambda: self.bp.store.get(secret, stage))
            if credential is not None:
                register_secret(*credential.secret_strings())
            self._reads[key] = credential
        return self._reads[key]

    def current(self) -> Credential:
        credential = self.read(Stage.CURRENT)
        if credential is None:
            raise SecretNotFound(f"plan {self.bp.plan_id}: secret {self.bp.secret_id!r} has no CURRENT version")
        return credential

    def pending(self) -> Credential | None:
        """This run's PENDING version, if the store holds it."""
        credential = self.read(Stage.PENDING)
        return credential if credential is not None and credential.version_id == self.run_id else None

    # -- plumbing --------------------------------------------------------------------------------------------

    def retry(self, fn: Callable[[], T]) -> T:
        return call_with_retry(fn, deadline_seconds=self.runner.step_timeout)

    def store_write(self, op: str, fn: Callable[[], T]) -> T:
        self._reads.clear()
        failpoints.hit(f"before-store-{op}")
        try:
            result = self.retry(fn)
        finally:
            self._reads.clear()
        failpoints.hit(f"after-store-{op}")
        return result

    def renew(self) -> None:
        """Extend the lease once half of it is used (the fence is checked on every journal write anyway)."""
        remaining = (self.lease.expires_at - datetime.now(UTC)).total_seconds()
        if remaining < self.runner.lease_seconds / 2:
            self.lease = self.journal.renew_lease(self.lease, self.runner.lease_seconds)

    def set_state(self, state: RunState, **changes: Any) -> None:
        self.journal.update_run(self.run_id, self.lease, state=state, **changes)
        self.record = dataclasses.replace(self.record, state=state, **changes)

    def refreshed(self) -> RunRecord:
        """The run as the journal has it now, with its steps."""
        self.record = self.journal.get_run(self.run_id) or self.record
        return self.record

    def timed_step(self, step: Step, action: str, fn: Callable[[], None], point: str) -> None:
        """Journal the step as started, run it (retrying transient errors), journal it as finished."""
        self.renew()
        self.journal.step_started(self.run_id, step, action, self.lease)
        failpoints.hit(f"before-{point}")
        started = time.perf_counter()
        try:
            fn()
        except Exception as exc:
            # A BaseException (SIGKILL's in-process stand-in, KeyboardInterrupt, SystemExit) is not journaled:
            # the step stays "started", as after a crash, and `resume` repeats it.
            self.journal.step_finished(self.run_id, step, action, self.lease, error=describe(exc))
            raise
        finally:
            key = step.value if action == "forward" else f"rollback-{COMPENSATION.get(step, step.value)}"
            self.step_seconds[key] = round(time.perf_counter() - started, 6)
        failpoints.hit(f"after-{point}")
        self.journal.step_finished(self.run_id, step, action, self.lease)
        log.debug("step done", step=step.value, action=action, seconds=self.step_seconds.get(step.value))

    # -- forward ---------------------------------------------------------------------------------------------

    def forward(self, start: Step) -> None:
        """Run the steps from `start` through promote and notify. Raises on a failure before promote.

        A stop request (SIGTERM) pauses the run at the next step boundary where stopping leaves every consumer
        working: before stage and before notify. Between stage and promote the new credential is half-applied
        (a single-user plan's old password already stopped working), so the run goes on through test and
        promote first: milliseconds for a database, where a pause would last until some daemon resumes it."""
        for step in steps_from(start):
            if step in (Step.STAGE, Step.NOTIFY) and self.runner.stopping():
                log.warning("stopping: run paused; `resume` or another daemon finishes it", before=step.value)
                raise ShutdownRequested(f"plan {self.bp.plan_id}: paused before {step.value} for shutdown")
            if step is Step.NOTIFY:
                self.notify()
                continue
            action = getattr(self, f"do_{step.value}")
            self.timed_step(step, "forward", action, step.value)

    def do_create(self) -> None:
        if self.pending() is not None:
            return  # stored before a crash: the run goes on with the same value
        current = self.current()
        if isinstance(self.bp.plugin, Reconciler):
            known = [c for c in (current, self.read(Stage.PREVIOUS)) if c is not None]
            removed = self.retry(lambda: cast(Reconciler, self.bp.plugin).reconcile(self.ctx, known))
            if removed:
                log.warning("reconcile deleted credentials the store did not know", removed=removed)
        value = self.retry(lambda: self.bp.plugin.create(self.ctx, current))
        credential = Credential(self.run_id, value, frozenset({Stage.PENDING}))
        register_secret(*credential.secret_strings())
        # Stored the moment it exists, before it is valid anywhere (invariant 2).
        self.store_write("put-pending", lambda: self.bp.store.put_pending(self.bp.secret_id, value, self.run_id))
        # put_pending leaves CURRENT as it was and PENDING as written: no need to read either back.
        self._reads[(self.bp.secret_id, Stage.CURRENT)] = current
        self._reads[(self.bp.secret_id, Stage.PENDING)] = credential

    def created(self) -> bool:
        """Whether this run's create step started: a rolls-forward provider may have invalidated CURRENT."""
        return any(s.step is Step.CREATE and s.action == "forward" for s in self.refreshed().steps)

    def _require_pending(self) -> Credential:
        pending = self.pending()
        if pending is None:
            raise StoreError(
                f"plan {self.bp.plan_id}: the store lost this run's PENDING version {self.run_id}; rolling back"
            )
        return pending

    def do_stage(self) -> None:
        pending = self._require_pending()
        current = self.current()
        self.retry(lambda: self.bp.plugin.stage(self.ctx, current, pending))

    def do_test(self) -> None:
        pending = self._require_pending()
        self.retry(lambda: self.bp.plugin.test(self.ctx, pending))

    def do_promote(self) -> None:
        current = self.read(Stage.CURRENT)
        if current is not None and current.version_id == self.run_id:
            return  # promoted before a crash
        self._require_pending()
        self.store_write("promote", lambda: self.bp.store.promote(self.bp.secret_id, self.run_id))

    def event(self, kind: str = "credential.rotated") -> RotationEvent:
        """The notification for this run: no secret, only ids; `read_value` reads CURRENT for local renderers."""
        promoted = [s for s in self.record.steps if s.step is Step.PROMOTE and s.action == "forward" and s.ended_at]
        return RotationEvent(
            plan_id=self.bp.plan_id,
            run_id=self.run_id,
            secret_id=self.bp.secret_id,
            store=self.bp.store_name,
            version_id=self.run_id,
            previous_version_id=self.record.previous_version_id,
            rotated_at=promoted[-1].ended_at if promoted and promoted[-1].ended_at else self.runner.clock(),
            trigger=self.record.trigger.value,
            reason=self.record.reason,
            tags=self.bp.tags,
            kind=kind,
            read_value=lambda: dict(self.current().value),
        )

    def notify(self) -> None:
        """Tell consumers the new credential is live. Each notifier's delivery is journaled; a failed one is
        retried on later ticks (Runner.retry_notifications) and, if it is required, holds back revoke. A failure
        never rolls back, unless the plan has rollback_on_failure, a required notifier failed and PREVIOUS still
        works (then RequiredNotifyFailed makes the run roll back, unpromote first)."""
        if not self.bp.notifiers:
            return
        failed: list[str] = []

        def tell_all() -> None:
            self.refreshed()
            event = self.event()
            records = {r.notifier: r for r in self.journal.notifications(run_id=self.run_id)}
            for name, notifier in self.bp.notifiers:
                record = records.get(name)
                if record is not None and record.status is NotifyStatus.SUCCEEDED:
                    continue  # delivered before a crash: never twice
                error = self.runner.deliver(self.bp, name, notifier, event, record, self.lease)
                if error is not None:
                    failed.append(name)
            if failed:
                raise NotifyError(f"notifiers failed: {', '.join(failed)} (retried on later ticks)")

        try:
            self.timed_step(Step.NOTIFY, "forward", tell_all, Step.NOTIFY.value)
        except LeaseLost:
            raise
        except Exception as exc:  # the credential is live and may be announced: a notify failure never rolls back
            if not isinstance(exc, NotifyError):
                log.error("notify step failed; the new credential stays live", error=describe(exc))
        required = [name for name in failed if name in self.bp.required_notifiers]
        if required and self.bp.rollback_on_failure:
            self.roll_back_if_previous_works(required)

    def roll_back_if_previous_works(self, required: list[str]) -> None:
        """rollback_on_failure: put PREVIOUS back as CURRENT when it still authenticates (the plugin's probe);
        otherwise (a single-user password that stage replaced) keep the new credential and say why."""
        previous = self.read(Stage.PREVIOUS)
        if previous is None or previous.version_id != self.record.previous_version_id:
            return
        try:
            self.retry(lambda: self.bp.plugin.test(self.ctx, previous))
        except Exception as exc:
            note = f"required notifier {', '.join(required)} failed, but PREVIOUS no longer works ({describe(exc)})"
            log.error("cannot roll back after promote; the new credential stays", reason=note)
            self.set_state(self.record.state, details={**self.record.details, "rollback_refused": note})
            return
        raise RequiredNotifyFailed(
            f"required notifier {', '.join(required)} failed after promote; PREVIOUS still works, so it is put "
            "back as CURRENT (rollback_on_failure)"
        )

    # -- revoke ----------------------------------------------------------------------------------------------

    def revoke_blockers(self) -> list[str]:
        """Why PREVIOUS may not be revoked yet: required notifiers that have not succeeded (no deadline: they
        must succeed first), and consumers the plugin still sees on PREVIOUS (until revoke_deadline). Records
        what it found in the run's details; empty when revoke may go ahead."""
        now = self.runner.clock()
        details = dict(self.record.details)
        blockers: list[str] = []
        if self.bp.required_notifiers:
            records = {r.notifier: r for r in self.journal.notifications(run_id=self.run_id)}
            for name, _ in self.bp.notifiers:
                if name not in self.bp.required_notifiers:
                    continue
                record = records.get(name)
                if record is None or record.status is not NotifyStatus.SUCCEEDED:
                    why = f": {record.last_error}" if record is not None and record.last_error else ""
                    blockers.append(f"required notifier {name} has not succeeded{why}")
        previous = self.read(Stage.PREVIOUS)
        ours = previous is not None and previous.version_id == self.record.previous_version_id
        if not blockers and ours and previous is not None and isinstance(self.bp.plugin, UsageProbe):
            users = self.previous_users(previous, details)
            if users:
                deadline_text = details.get("revoke_deadline_at")
                deadline = datetime.fromisoformat(deadline_text) if deadline_text else now + self.bp.revoke_deadline
                details["revoke_deadline_at"] = deadline.isoformat()
                if now < deadline:
                    blockers.append(f"PREVIOUS still in use by {len(users)}: " + "; ".join(users[:5]))
                else:
                    details["revoked_while_in_use"] = users
        if blockers:
            details["revoke_waiting_for"] = blockers
            due = now + timedelta(seconds=self.runner.revoke_recheck_seconds)
            deadline_text = details.get("revoke_deadline_at")
            if deadline_text and not any(b.startswith("required") for b in blockers):
                due = min(due, datetime.fromisoformat(deadline_text))
            if details.get("revoke_waiting_for") != self.record.details.get("revoke_waiting_for"):
                log.warning("revoke waits", waiting_for=blockers, recheck_at=due.isoformat())
            self.set_state(RunState.AWAITING_REVOKE, revoke_due_at=due, details=details)
        else:
            details.pop("revoke_waiting_for", None)
            self.record = dataclasses.replace(self.record, details=details)
        return blockers

    def previous_users(self, previous: Credential, details: dict[str, Any]) -> list[str]:
        """Ask the plugin who still uses PREVIOUS (since promote); record it. Unknown or a failed check: []."""
        promoted = [s.ended_at for s in self.record.steps if s.step is Step.PROMOTE and s.ended_at]
        since = promoted[-1] if promoted else self.record.started_at
        probe = cast(UsageProbe, self.bp.plugin)
        try:
            users = self.retry(lambda: probe.in_use(self.ctx, previous, since=since))
        except Exception as exc:
            details["usage_check_error"] = describe(exc)
            log.warning("could not tell whether PREVIOUS is still in use; revoking as planned", error=describe(exc))
            return []
        details["usage_checked_at"] = self.runner.clock().isoformat()
        details["previous_in_use"] = [scrub(line) for line in users] if users is not None else None
        return list(details["previous_in_use"] or [])

    def revoke(self, *, force: bool = False) -> bool:
        """Invalidate PREVIOUS at the target. True when done (or nothing left to revoke). Unless `force`d (a
        leak: `--revoke-old now`; or a new rotation superseding this one), it first waits for required notifiers
        and for consumers still on PREVIOUS (revoke_blockers): then it returns False, leaving the run awaiting
        revoke with a later revoke_due_at and no error."""
        if not force and self.revoke_blockers():
            return False

        def act() -> None:
            previous = self.read(Stage.PREVIOUS)
            current = self.current()
            if previous is None or previous.version_id != self.record.previous_version_id:
                return  # a later rotation or a reseed moved the labels: this credential is no longer ours
            if current.version_id != self.run_id:
                return
            self.retry(lambda: self.bp.plugin.revoke(self.ctx, previous, current))

        try:
            self.timed_step(Step.REVOKE, "forward", act, Step.REVOKE.value)
        except Exception as exc:
            self.record_revoke_failure(exc)
            return False
        details = {k: v for k, v in self.record.details.items() if k != "revoke_waiting_for"}
        self.set_state(RunState.SUCCEEDED, ended_at=self.runner.clock(), error=None, details=details)
        return True

    def record_revoke_failure(self, exc: BaseException) -> None:
        failures = sum(1 for s in self.refreshed().steps if s.step is Step.REVOKE and s.status == "failed")
        delay = min(timedelta(minutes=2 ** min(failures, 6)), timedelta(hours=1))
        log.error("revoke failed; will retry", error=describe(exc), attempt=failures, retry_in=str(delay))
        self.set_state(
            RunState.AWAITING_REVOKE,
            error=f"revoke: {describe(exc)}",
            revoke_due_at=self.runner.clock() + delay,
        )

    # -- rollback --------------------------------------------------------------------------------------------

    def rollback(self, reason: str) -> None:
        """Undo what the run did, last first, each compensation once. STUCK if one fails."""
        self.set_state(RunState.ROLLING_BACK, error=reason)
        for step in compensations_due(self.refreshed().steps):
            action = COMPENSATION[step]
            try:
                self.timed_step(step, "rollback", getattr(self, f"undo_{action}"), f"rollback-{action}")
            except LeaseLost:
                raise
            except Exception as exc:
                message = f"{reason}; rollback {action} failed: {describe(exc)}"
                log.error("rollback failed; run is stuck", action=action, error=describe(exc))
                self.set_state(RunState.STUCK, error=message)
                raise RollbackError(
                    f"plan {self.bp.plan_id}: {message}. Fix the cause, then run `rotator resume`."
                ) from None
        self.set_state(RunState.ROLLED_BACK, ended_at=self.runner.clock(), error=reason)

    def undo_unpromote(self) -> None:
        self.store_write("unpromote", lambda: self.bp.store.unpromote(self.bp.secret_id, self.run_id))

    def undo_unstage(self) -> None:
        pending = self.pending()
        if pending is None:
            return  # never stored, so never staged
        current = self.current()
        self.retry(lambda: self.bp.plugin.unstage(self.ctx, current, pending))

    def undo_discard(self) -> None:
        pending = self.pending()
        if pending is not None:
            self.retry(lambda: self.bp.plugin.discard(self.ctx, pending))
            self.store_write("discard-pending", lambda: self.bp.store.discard_pending(self.bp.secret_id, self.run_id))
        elif isinstance(self.bp.plugin, Reconciler):
            # A minted key may exist that a crash kept from the store: find it and delete it.
            known = [c for c in (self.read(Stage.CURRENT), self.read(Stage.PREVIOUS)) if c is not None]
            self.retry(lambda: cast(Reconciler, self.bp.plugin).reconcile(self.ctx, known))


class Runner:
    """Drives runs for bound plans, under the plan's lease in the journal."""

    def __init__(
        self,
        journal: Journal,
        *,
        clock: Callable[[], datetime] = utc_now,
        lease_seconds: float = 600,
        step_timeout: float = 120,
        revoke_recheck_seconds: float = 60,
        notify_retry_for: timedelta = timedelta(hours=24),
        notify_retry_seconds: float = 60.0,
        stop: threading.Event | None = None,
    ):
        self.journal = journal
        self.clock = clock
        self.lease_seconds = lease_seconds
        self.step_timeout = step_timeout
        self.revoke_recheck_seconds = revoke_recheck_seconds
        self.notify_retry_for = notify_retry_for
        self.notify_retry_seconds = notify_retry_seconds
        self.stop = stop or threading.Event()

    def stopping(self) -> bool:
        return self.stop.is_set()

    # -- notifications --------------------------------------------------------------------------------------

    def deliver(
        self,
        bp: BoundPlan,
        name: str,
        notifier: Notifier,
        event: RotationEvent,
        record: NotificationRecord | None,
        lease: Lease,
    ) -> str | None:
        """One delivery of `event` to one notifier (transient errors retried within the step timeout), journaled
        as succeeded or failed with the time of the next attempt. Returns the error, or None."""
        attempts = (record.attempts if record is not None else 0) + 1
        now = self.clock()
        try:
            call_with_retry(lambda: notifier(event), deadline_seconds=self.step_timeout)
        except Exception as exc:
            error = describe(exc)
            log.error("notifier failed; retried later", notifier=name, attempt=attempts, error=error)
            self.journal.save_notification(
                NotificationRecord(
                    run_id=event.run_id,
                    plan_id=bp.plan_id,
                    notifier=name,
                    status=NotifyStatus.FAILED,
                    required=name in bp.required_notifiers,
                    attempts=attempts,
                    next_attempt_at=now + notify_backoff(attempts, self.notify_retry_seconds),
                    last_error=error,
                    updated_at=now,
                ),
                lease,
            )
            return error
        self.journal.save_notification(
            NotificationRecord(
                run_id=event.run_id,
                plan_id=bp.plan_id,
                notifier=name,
                status=NotifyStatus.SUCCEEDED,
                required=name in bp.required_notifiers,
                attempts=attempts,
                updated_at=now,
            ),
            lease,
        )
        log.info("notified", notifier=name, attempt=attempts)
        return None

    def retry_notifications(self, bp: BoundPlan) -> list[RunOutcome]:
        """Deliver again every failed notification of `bp` whose next attempt is due (the daemon's tick). One of
        a run that a newer rotation superseded, or older than notify_retry_for, is given up."""
        lease = self._acquire(bp.plan_id)
        outcomes: list[RunOutcome] = []
        try:
            with bound_contextvars(plan=bp.plan_id):
                now = self.clock()
                due = [
                    r
                    for r in self.journal.notifications(
                        plan_id=bp.plan_id, statuses=(NotifyStatus.FAILED, NotifyStatus.PENDING)
                    )
                    if r.next_attempt_at is None or r.next_attempt_at <= now
                ]
                if not due:
                    return outcomes
                newest = self.journal.last_success(bp.plan_id)
                notifiers = dict(bp.notifiers)
                for record in due:
                    run_record = self.journal.get_run(record.run_id)
                    reason = None
                    if run_record is None or newest is None or newest.run_id != record.run_id:
                        reason = "superseded by a newer rotation"
                    elif record.notifier not in notifiers:
                        reason = "notifier removed from the plan"
                    elif record.updated_at and (run_record.started_at + self.notify_retry_for) <= now:
                        reason = f"gave up after {record.attempts} attempts"
                    if reason is not None or run_record is None:
                        self.journal.save_notification(
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
                    run = _Run(self, bp, run_record, lease)
                    with bound_contextvars(run=record.run_id):
                        notifier = notifiers[record.notifier]
                        error = self.deliver(bp, record.notifier, notifier, run.event(), record, lease)
                    if error is None and record.required and run_record.state is RunState.AWAITING_REVOKE:
                        # The revoke this notifier held back may go now (not before grace ends).
                        promoted = [x.ended_at for x in run_record.steps if x.step is Step.PROMOTE and x.ended_at]
                        grace_end = (promoted[-1] if promoted else run_record.started_at) + bp.grace
                        revoke_at = max(now, grace_end)
                        if run_record.revoke_due_at is None or run_record.revoke_due_at > revoke_at:
                            self.journal.update_run(record.run_id, lease, revoke_due_at=revoke_at)
                    outcomes.append(
                        RunOutcome(
                            bp.plan_id,
                            "notified" if error is None else "notify-failed",
                            record.run_id,
                            error,
                            notes=[f"notifier {record.notifier}"],
                        )
                    )
        finally:
            self.journal.release_lease(lease)
        return outcomes

    # -- leases ----------------------------------------------------------------------------------------------

    def _acquire(self, plan_id: str) -> Lease:
        lease = self.journal.acquire_lease(plan_id, self.lease_seconds)
        if lease is None:
            holder = self.journal.lease_of(plan_id)
            who = f" by {holder.host} pid {holder.pid} until {holder.expires_at:%H:%M:%S} UTC" if holder else ""
            raise PlanBusy(f"plan {plan_id} is busy: another run holds its lease{who}")
        return lease

    # -- entry points ----------------------------------------------------------------------------------------

    def rotate(
        self,
        bp: BoundPlan,
        *,
        trigger: Trigger = Trigger.MANUAL,
        reason: str | None = None,
        operator: str | None = None,
        revoke_old_now: bool = False,
        still_due: Callable[[], bool] | None = None,
    ) -> RunOutcome:
        """One full rotation of `bp`. Raises PlanBusy if another run holds the plan.

        `still_due` (the daemon's) is asked under the lease, before anything changes: when several daemons share
        one journal, each fires the plan at its due time and only the first still finds it due."""
        lease = self._acquire(bp.plan_id)
        try:
            with bound_contextvars(plan=bp.plan_id):
                if still_due is not None and not still_due():
                    return RunOutcome(bp.plan_id, "not-due", notes=["rotated meanwhile (another daemon or run)"])
                if self.stopping():
                    raise ShutdownRequested(f"plan {bp.plan_id}: not started, shutting down")
                notes = self._settle(bp, lease)
                run_id = uuid.uuid4().hex
                with bound_contextvars(run=run_id):
                    return self._rotate_locked(bp, lease, run_id, trigger, reason, operator, revoke_old_now, notes)
        finally:
            self.journal.release_lease(lease)

    def _rotate_locked(
        self,
        bp: BoundPlan,
        lease: Lease,
        run_id: str,
        trigger: Trigger,
        reason: str | None,
        operator: str | None,
        revoke_old_now: bool,
        notes: list[str],
    ) -> RunOutcome:
        current = bp.store.get(bp.secret_id, Stage.CURRENT)
        if current is None:
            raise SecretNotFound(f"plan {bp.plan_id}: secret {bp.secret_id!r} has no CURRENT version")
        record = RunRecord(
            run_id=run_id,
            plan_id=bp.plan_id,
            state=RunState.RUNNING,
            trigger=trigger,
            started_at=self.clock(),
            store=bp.store_name,
            secret_id=bp.secret_id,
            reason=reason,
            operator=operator,
            version_id=run_id,
            previous_version_id=current.version_id,
            # Revoke-at-once is decided at the start and journaled, so that a resumed run keeps the intent.
            revoke_due_at=self.clock() if revoke_old_now else None,
        )
        self.journal.begin_run(record, lease)
        log.info("rotation started", trigger=trigger.value, reason=reason)
        run = _Run(self, bp, record, lease)
        outcome = self._drive(run, Step.CREATE, revoke_old_now)
        outcome.notes[:0] = notes
        return outcome

    def _drive(self, run: _Run, start: Step, revoke_old_now: bool) -> RunOutcome:
        try:
            run.forward(start)
        except LeaseLost:
            raise
        except Exception as exc:
            reason = describe(exc)
            if run.bp.rolls_forward and not isinstance(exc, RequiredNotifyFailed) and run.created():
                return self._hold_for_roll_forward(run, reason)
            log.error("rotation failed; rolling back", error=reason)
            try:
                run.rollback(reason)
            except RollbackError as stuck:
                return RunOutcome(run.bp.plan_id, RunState.STUCK.value, run.run_id, describe(stuck), run.step_seconds)
            log.info("rolled back", error=reason)
            outcome = RunOutcome(run.bp.plan_id, RunState.ROLLED_BACK.value, run.run_id, reason, run.step_seconds)
            if isinstance(exc, RequiredNotifyFailed):
                self._tell_rolled_back(run, outcome)
            return outcome
        return self._after_promote(run, revoke_old_now)

    def _hold_for_roll_forward(self, run: _Run, reason: str) -> RunOutcome:
        """A plugin that rolls forward (its provider killed the old credential at create) failed after create:
        rolling back would leave no valid credential stored, so keep PENDING and mark the run stuck, to be
        finished forward by `resume` once the cause is fixed."""
        message = (
            f"{reason}; the provider invalidated the old credential when it issued the new one, so this run cannot "
            "roll back: PENDING holds the only valid credential. Fix the cause, then run `rotator resume` to "
            "finish it forward"
        )
        log.error("rotation failed after an irreversible create; holding PENDING", error=reason)
        run.set_state(RunState.STUCK, error=message, details={**run.record.details, "roll_forward": True})
        return RunOutcome(run.bp.plan_id, RunState.STUCK.value, run.run_id, message, run.step_seconds)

    def _tell_rolled_back(self, run: _Run, outcome: RunOutcome) -> None:
        """After a rollback that undid a promote, tell the notifiers that delivered the rotation to read again."""
        told = {r.notifier for r in self.journal.notifications(run_id=run.run_id) if r.status is NotifyStatus.SUCCEEDED}
        event = run.event(kind="credential.rolled_back")
        for name, notifier in run.bp.notifiers:
            if name not in told:
                continue
            try:
                call_with_retry(lambda notifier=notifier: notifier(event), deadline_seconds=self.step_timeout)  # type: ignore[misc]
                outcome.notes.append(f"told {name} of the rollback")
            except Exception as exc:
                log.error("could not tell a notifier of the rollback", notifier=name, error=describe(exc))
                outcome.notes.append(f"could not tell {name} of the rollback: {describe(exc)}")

    def _after_promote(self, run: _Run, revoke_old_now: bool) -> RunOutcome:
        now = self.clock()
        # A run started with --revoke-old now carries its due time from the start (see _rotate_locked).
        revoke_old_now = revoke_old_now or run.record.revoke_due_at is not None
        due = now if revoke_old_now else now + run.bp.grace
        run.set_state(RunState.AWAITING_REVOKE, revoke_due_at=due)
        log.info("promoted; the new credential is live", revoke_due_at=due.isoformat())
        outcome = RunOutcome(run.bp.plan_id, RunState.AWAITING_REVOKE.value, run.run_id, step_seconds=run.step_seconds)
        if revoke_old_now or run.bp.grace <= timedelta(0):
            if run.revoke(force=revoke_old_now):
                outcome.outcome = RunState.SUCCEEDED.value
                outcome.revoked = True
                log.info("previous credential revoked")
            elif run.record.error:
                outcome.error = run.record.error
            else:
                outcome.notes.append("revoke waits: " + "; ".join(run.record.details.get("revoke_waiting_for", [])))
        failed_notify = (
            [s for s in run.refreshed().steps if s.step is Step.NOTIFY and s.status == "failed"]
            if run.bp.notifiers
            else []
        )
        if failed_notify and failed_notify[-1].error:
            outcome.notes.append(f"notify failed: {failed_notify[-1].error}")
        return outcome

    def _settle(self, bp: BoundPlan, lease: Lease) -> list[str]:
        """Before a new run: finish or roll back this plan's interrupted runs, revoke a PREVIOUS that the new
        rotation supersedes, and roll back a PENDING that no run claims. Needs the plan's lease."""
        notes: list[str] = []
        earlier = self.journal.runs_in_state(*OPEN_STATES, RunState.AWAITING_REVOKE, plan_id=bp.plan_id)
        for record in (r for r in earlier if r.state in OPEN_STATES):
            if record.plan_id == bp.plan_id:
                outcome = self._continue(bp, record, lease)
                notes.append(f"resumed run {record.run_id}: {outcome.outcome}")
                if outcome.outcome == RunState.STUCK.value:
                    raise RollbackError(f"plan {bp.plan_id}: run {record.run_id} is stuck: {outcome.error}")
        awaiting = [r for r in earlier if r.state is RunState.AWAITING_REVOKE]
        if any(r.state in OPEN_STATES for r in earlier):  # continuing them may have promoted: look again
            awaiting = self.journal.runs_in_state(RunState.AWAITING_REVOKE, plan_id=bp.plan_id)
        for record in awaiting:
            if record.plan_id == bp.plan_id:
                run = _Run(self, bp, record, lease)
                with bound_contextvars(run=record.run_id):
                    if run.revoke(force=True):
                        notes.append(f"revoked the PREVIOUS of run {record.run_id} early: a new rotation supersedes it")
                    else:
                        # Never blocks the next rotation (DESIGN): the new run replaces the credential again.
                        run.set_state(
                            RunState.SUCCEEDED,
                            ended_at=self.clock(),
                            error=f"{run.record.error}; superseded by a new rotation",
                        )
                        notes.append(f"revoke of run {record.run_id} failed; superseded")
        self._recover_orphan_pending(bp, lease, notes)
        return notes

    def _recover_orphan_pending(self, bp: BoundPlan, lease: Lease, notes: list[str]) -> None:
        try:
            pending = bp.store.get(bp.secret_id, Stage.PENDING)
            current = bp.store.get(bp.secret_id, Stage.CURRENT) if pending is not None else None
        except SecretNotFound:
            return
        if pending is None or current is None:
            return
        # A PENDING no open run claims: its run was lost (journal lost after a power cut, or deleted).
        record = RunRecord(
            run_id=pending.version_id,
            plan_id=bp.plan_id,
            state=RunState.RUNNING,
            trigger=Trigger.RESUME,
            started_at=self.clock(),
            store=bp.store_name,
            secret_id=bp.secret_id,
            reason="recovered a PENDING version that no run claimed",
            version_id=pending.version_id,
            previous_version_id=current.version_id,
        )
        if self.journal.get_run(pending.version_id) is None:
            self.journal.begin_run(record, lease)
        run = _Run(self, bp, self.journal.get_run(pending.version_id) or record, lease)
        if bp.rolls_forward:
            # The provider invalidated CURRENT when it minted this PENDING: finish it forward, never discard it.
            outcome = self._drive(run, Step.STAGE, revoke_old_now=False)
            notes.append(f"finished an orphan PENDING version {pending.version_id} forward: {outcome.outcome}")
            return
        for step in (Step.CREATE, Step.STAGE):  # the lost run may have got this far: undo both
            self.journal.step_started(run.run_id, step, "forward", lease)
            self.journal.step_finished(run.run_id, step, "forward", lease, error="interrupted; run was lost")
        run.rollback("orphan PENDING version rolled back")
        notes.append(f"rolled back an orphan PENDING version {pending.version_id}")

    def _continue(self, bp: BoundPlan, record: RunRecord, lease: Lease) -> RunOutcome:
        """Finish or roll back one interrupted run (under the plan's lease)."""
        with bound_contextvars(run=record.run_id):
            run = _Run(self, bp, record, lease)
            forward_only = record.state is RunState.STUCK and bool(record.details.get("roll_forward"))
            point = resume_point(RunState.RUNNING if forward_only else record.state, record.steps)
            log.warning("resuming interrupted run", state=record.state.value, step=point.step, rollback=point.rollback)
            if point.rollback:
                try:
                    run.rollback(record.error or "interrupted")
                except RollbackError as stuck:
                    return RunOutcome(bp.plan_id, RunState.STUCK.value, run.run_id, describe(stuck), run.step_seconds)
                return RunOutcome(bp.plan_id, RunState.ROLLED_BACK.value, run.run_id, record.error, run.step_seconds)
            assert point.step is not None
            return self._drive(run, point.step, revoke_old_now=False)

    def resume(self, bp: BoundPlan) -> list[RunOutcome]:
        """`rotator resume` for one plan: settle interrupted runs and orphans, then revoke what is due."""
        lease = self._acquire(bp.plan_id)
        outcomes: list[RunOutcome] = []
        try:
            with bound_contextvars(plan=bp.plan_id):
                for record in self.journal.runs_in_state(*OPEN_STATES, plan_id=bp.plan_id):
                    if record.plan_id == bp.plan_id:
                        outcomes.append(self._continue(bp, record, lease))
                notes: list[str] = []
                self._recover_orphan_pending(bp, lease, notes)
                if notes:
                    outcomes.append(RunOutcome(bp.plan_id, RunState.ROLLED_BACK.value, notes=notes))
                outcomes.extend(self._revoke_due_locked(bp, lease))
        finally:
            self.journal.release_lease(lease)
        return outcomes

    def revoke_due(self, bp: BoundPlan) -> list[RunOutcome]:
        """Revoke every PREVIOUS of `bp` whose grace has ended (the daemon's sweep)."""
        lease = self._acquire(bp.plan_id)
        try:
            with bound_contextvars(plan=bp.plan_id):
                return self._revoke_due_locked(bp, lease)
        finally:
            self.journal.release_lease(lease)

    def _revoke_due_locked(self, bp: BoundPlan, lease: Lease) -> list[RunOutcome]:
        outcomes = []
        now = self.clock()
        for record in self.journal.runs_in_state(RunState.AWAITING_REVOKE, plan_id=bp.plan_id):
            if record.plan_id != bp.plan_id or (record.revoke_due_at and record.revoke_due_at > now):
                continue
            with bound_contextvars(run=record.run_id):
                run = _Run(self, bp, record, lease)
                done = run.revoke()
                if done:
                    log.info("previous credential revoked after grace")
                outcomes.append(
                    RunOutcome(
                        bp.plan_id,
                        run.record.state.value,
                        record.run_id,
                        None if done else run.record.error,
                        run.step_seconds,
                        revoked=done,
                    )
                )
        return outcomes

    def dry_run(self, bp: BoundPlan) -> RunOutcome:
        """Check that the plan could rotate now, changing nothing: the store has CURRENT, the plugin's probe
        passes with it, and the lease is free."""
        outcome = RunOutcome(bp.plan_id, "dry-run")
        holder = self.journal.lease_of(bp.plan_id)
        if holder is not None:
            outcome.notes.append(f"busy now: lease held by {holder.host} pid {holder.pid}")
        record = RunRecord(
            run_id="dry-run",
            plan_id=bp.plan_id,
            state=RunState.RUNNING,
            trigger=Trigger.MANUAL,
            started_at=self.clock(),
            store=bp.store_name,
            secret_id=bp.secret_id,
        )
        probe = _Run(self, bp, record, lease=Lease(bp.plan_id, "", "", 0, 0, self.clock()))
        try:
            current = probe.current()
            probe.retry(lambda: bp.plugin.test(probe.ctx, current))
        except Exception as exc:
            outcome.outcome = "error"
            outcome.error = describe(exc)
            return outcome
        open_runs = [r.run_id for r in self.journal.runs_in_state(*OPEN_STATES, plan_id=bp.plan_id)]
        if open_runs:
            outcome.notes.append(f"interrupted runs to resume first: {', '.join(open_runs)}")
        outcome.notes.append(
            "CURRENT passes the plugin's probe; a rotation would run "
            + " -> ".join(s.value for s in (*FORWARD, Step.NOTIFY, Step.REVOKE))
        )
        return outcome
