"""Runs the steps of a rotation, journals each before and after it runs, rolls back last-in-first-out, and
resumes interrupted runs. It knows plugins, stores and notifiers only through rotator.interfaces.

Crash model: the process may die at any instruction (failpoints.py crashes it at named points). Every step and
every compensation is idempotent, the store holds PENDING before anything is applied, and the journal says
which step was in flight, so `resume` can repeat that step, or go on rolling back, and converge.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast

from rotator import failpoints
from rotator.engine.alerts import failure_action, failure_event, fix_of, send_alert
from rotator.engine.states import (
    COMPENSATION,
    FAILED_STATES,
    MAX_RETRY_DELAY,
    compensations_due,
    resume_point,
    steps_from,
)
from rotator.errors import (
    AuthenticationFailed,
    LeaseLost,
    NotApplied,
    NotifyError,
    PlanBusy,
    RollbackError,
    RotatorError,
    SecretNotFound,
    StepError,
    StepRefused,
    StoreError,
    describe,
)
from rotator.fingerprints import FingerprintKey, version_fingerprints
from rotator.interfaces import (
    AdminReset,
    DryRunProbe,
    Journal,
    Notifier,
    Reconciler,
    RotationPlugin,
    SecretStore,
    UsageProbe,
)
from rotator.logs import bound_contextvars, get_logger, register_secret, scrub
from rotator.model import (
    SUCCESS_EVENTS,
    Credential,
    EventKind,
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
from rotator.passwords import generate_password
from rotator.retry import call_with_retry

T = TypeVar("T")
# Tries of one notifier delivery within a step (transient errors); later ticks retry a failed one.
NOTIFY_TRIES = 4
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
    # `reconcile = "auto"`: a run that finds CURRENT refused at the target first resets it (AdminReset), then rotates.
    reconcile_auto: bool = False
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
    fix: str | None = None  # what to do about `error`, when the error says (its "fix:" line)

    @property
    def ok(self) -> bool:
        return self.outcome in (
            RunState.SUCCEEDED.value,
            RunState.AWAITING_REVOKE.value,
            "dry-run",
            "nothing-to-do",
            "not-due",
            "in-sync",
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
            "fix": self.fix,
        }


class ShutdownRequested(BaseException):
    """The process is stopping (SIGTERM): the run pauses at a step boundary, its lease is released, and it stays
    open in the journal for `resume` (this daemon at its next start, or another daemon's sweep at once)."""


class RequiredNotifyFailed(RotatorError):
    """A required notifier failed after promote, PREVIOUS still works and the plan asks to roll back."""


def plugin_name(plugin: object) -> str:
    """A plugin's name for messages: its class name, as the registry loaded it."""
    return type(plugin).__name__


def notify_backoff(attempts: int, first: float = 60.0) -> timedelta:
    """When a failed notification is tried again: `first` seconds after the first failure, doubling, at most an
    hour."""
    return min(timedelta(seconds=first * 2 ** min(max(attempts - 1, 0), 12)), timedelta(hours=1))


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
        # The step in progress: when its time is up (every retry inside it shares the one step_timeout), and
        # whether any plugin call in it may have changed the target (see timed_step and call_target).
        self._step_deadline: float | None = None
        self._target_calls = 0
        self._maybe_applied = False
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

    @property
    def reconciling(self) -> bool:
        """A drift repair (`rotator reconcile`): create and stage reset CURRENT's account through the admin."""
        return bool(self.record.details.get("reconcile"))

    @property
    def repair(self) -> AdminReset:
        plugin = self.bp.plugin
        if not isinstance(plugin, AdminReset):
            raise StepRefused(f"plan {self.bp.plan_id}: the plugin cannot reconcile (no admin reset)")
        return plugin

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

    def remember(self, stage: Stage, credential: Credential | None) -> None:
        """Seed the run's read cache with a stage just read (under the run's lease)."""
        if credential is not None:
            register_secret(*credential.secret_strings())
        self._reads[(self.bp.secret_id, stage)] = credential

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
        """`fn`, its transient errors retried until the step's deadline (the whole step shares one
        step_timeout: a target that is down for a while is waited out, not given four quick tries)."""
        deadline = self.runner.step_timeout
        if self._step_deadline is not None:
            deadline = max(self._step_deadline - time.monotonic(), 0.0)
        return call_with_retry(fn, deadline_seconds=deadline)

    def call_target(self, fn: Callable[[], T]) -> T:
        """A plugin call that may change the target (create, stage), retried as `retry`. It records whether any
        attempt may have acted: one that returned, or failed with anything but errors.NotApplied. A step whose
        every attempt was refused before sending anything is journaled "refused" and needs no compensation."""

        def attempt() -> T:
            self._target_calls += 1
            try:
                result = fn()
            except NotApplied:
                raise
            except BaseException:
                self._maybe_applied = True
                raise
            self._maybe_applied = True
            return result

        return self.retry(attempt)

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
        """Journal the step as started, run it (retrying transient errors until the step's deadline), journal
        it as finished: succeeded, failed, or refused (a create or stage that changed nothing at the target)."""
        self.renew()
        self.journal.step_started(self.run_id, step, action, self.lease)
        failpoints.hit(f"before-{point}")
        started = time.perf_counter()
        self._step_deadline = time.monotonic() + self.runner.step_timeout
        self._target_calls = 0
        self._maybe_applied = False
        try:
            fn()
        except Exception as exc:
            # A BaseException (SIGKILL's in-process stand-in, KeyboardInterrupt, SystemExit) is not journaled:
            # the step stays "started", as after a crash, and `resume` repeats it.
            self.journal.step_finished(
                self.run_id, step, action, self.lease, error=describe(exc), refused=self._refused(step, action, exc)
            )
            raise
        finally:
            self._step_deadline = None
            key = step.value if action == "forward" else f"rollback-{COMPENSATION.get(step, step.value)}"
            self.step_seconds[key] = round(time.perf_counter() - started, 6)
        failpoints.hit(f"after-{point}")
        self.journal.step_finished(self.run_id, step, action, self.lease)
        log.debug("step done", step=step.value, action=action, seconds=self.step_seconds.get(step.value))

    def _refused(self, step: Step, action: str, exc: BaseException) -> bool:
        """Whether the failed forward create or stage changed nothing at the target: no plugin call in it may have
        acted, and either none was made (the engine failed first, say reading the store) or the last refused
        before sending anything. Other steps act on the store (promote) or change nothing (test)."""
        if action != "forward" or step not in (Step.CREATE, Step.STAGE) or self._maybe_applied:
            return False
        return self._target_calls == 0 or isinstance(exc, NotApplied)

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
        if self.reconciling:
            repair = self.repair
            self._store_pending(current, self.call_target(lambda: repair.reset_value(self.ctx, current)))
            return
        if isinstance(self.bp.plugin, Reconciler):
            known = [c for c in (current, self.read(Stage.PREVIOUS)) if c is not None]
            removed = self.retry(lambda: cast(Reconciler, self.bp.plugin).reconcile(self.ctx, known))
            if removed:
                log.warning("reconcile deleted credentials the store did not know", removed=removed)
        self._store_pending(current, self.call_target(lambda: self.bp.plugin.create(self.ctx, current)))

    def _store_pending(self, current: Credential, value: dict[str, Any]) -> None:
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
        if self.reconciling:
            repair = self.repair
            self.call_target(lambda: repair.reset(self.ctx, current, pending))
            return
        self.call_target(lambda: self.bp.plugin.stage(self.ctx, current, pending))

    def do_test(self) -> None:
        pending = self._require_pending()
        self.retry(lambda: self.bp.plugin.test(self.ctx, pending))

    def do_promote(self) -> None:
        current = self.read(Stage.CURRENT)
        if current is not None and current.version_id == self.run_id:
            self.runner.keep_fingerprints(self.bp.plan_id, self.bp.secret_id, current)  # a crash may have cut it
            return  # promoted before a crash
        pending = self._require_pending()
        self.store_write("promote", lambda: self.bp.store.promote(self.bp.secret_id, self.run_id))
        self.runner.keep_fingerprints(self.bp.plan_id, self.bp.secret_id, pending)

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
        told = [(name, notifier) for name, notifier in self.bp.notifiers if self.bp.wants(name, EventKind.ROTATED)]
        if not told:
            return
        failed: list[str] = []

        def tell_all() -> None:
            self.refreshed()
            event = self.event()
            records = {r.notifier: r for r in self.journal.notifications(run_id=self.run_id)}
            for name, notifier in told:
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

    # -- alerts ----------------------------------------------------------------------------------------------

    def alert(self, kind: EventKind, error: str, action: str) -> None:
        """Tell the notifiers subscribed to `kind` that this run failed or is stuck (engine/alerts.py); keep
        what happened in the run's details."""
        event = failure_event(
            kind=kind,
            plan_id=self.bp.plan_id,
            run_id=self.run_id,
            secret_id=self.bp.secret_id,
            store=self.bp.store_name,
            current_version_id=self.record.previous_version_id,
            at=self.runner.clock(),
            trigger=self.record.trigger.value,
            reason=self.record.reason,
            tags=self.bp.tags,
            error=error,
            action=action,
        )
        results = send_alert(event, self.bp.notifiers, self.bp.wants, deadline_seconds=self.runner.step_timeout)
        if results:
            alerts = {**dict(self.record.details.get("alerts") or {}), kind.value: results}
            self.set_state(self.record.state, details={**self.record.details, "alerts": alerts})

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
        reason = reason.split("; rollback ", 1)[0]  # a resumed rollback: the failure before, not the last attempt's
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
                fix = fix_of(exc)
                raise RollbackError(
                    f"plan {self.bp.plan_id}: {message}\n  fix: "
                    + (f"{fix}; " if fix else "fix the cause named above, ")
                    + "then run `rotator resume` (PENDING is kept until the rollback completes)"
                ) from None
        self.set_state(RunState.ROLLED_BACK, ended_at=self.runner.clock(), error=reason)

    def undo_unpromote(self) -> None:
        self.store_write("unpromote", lambda: self.bp.store.unpromote(self.bp.secret_id, self.run_id))

    def undo_unstage(self) -> None:
        pending = self.pending()
        if pending is None:
            return  # never stored, so never staged
        current = self.current()
        if self.reconciling:
            # The account's password before the reset is unknown (that is the drift): put CURRENT's stored one
            # back, so that the store and the target agree again and nothing accepts PENDING.
            repair = self.repair
            self.retry(lambda: repair.reset(self.ctx, current, current))
            return
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
        alert_after_failures: int = 3,
        fingerprint_key: FingerprintKey | None = None,
        stop: threading.Event | None = None,
    ):
        self.journal = journal
        self.clock = clock
        self.lease_seconds = lease_seconds
        self.step_timeout = step_timeout
        self.revoke_recheck_seconds = revoke_recheck_seconds
        self.notify_retry_for = notify_retry_for
        self.notify_retry_seconds = notify_retry_seconds
        self.alert_after_failures = alert_after_failures
        self.fingerprint_key = fingerprint_key
        self.stop = stop or threading.Event()

    def stopping(self) -> bool:
        return self.stop.is_set()

    def keep_fingerprints(self, plan_id: str, secret_id: str, credential: Credential) -> None:
        """Journal the keyed fingerprints of a version that went live (rotator/fingerprints.py), so that `rotator
        leak` finds the plan from a leaked string. Best effort: a failure is logged and never fails the run (the
        next rotation, import or `store put` fingerprints again)."""
        if self.fingerprint_key is None:
            return
        try:
            found = version_fingerprints(
                self.fingerprint_key, plan_id, secret_id, credential.version_id, credential.value
            )
            self.journal.save_fingerprints(found)
        except Exception as exc:
            log.warning(
                "could not keep the new version's fingerprints; `rotator leak` may miss it", error=describe(exc)
            )

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
            # A few quick tries, not the whole step timeout: a failed delivery is journaled and retried on later
            # ticks (notify_backoff), so a receiver that is down does not hold the run for minutes.
            call_with_retry(lambda: notifier(event), attempts=NOTIFY_TRIES, deadline_seconds=self.step_timeout)
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
                notifiers = {name: n for name, n in bp.notifiers if bp.wants(name, EventKind.ROTATED)}
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
        one journal, each fires the plan at its due time and only the first still finds it due.

        A plan that cannot start (its secret not seeded, the store unreadable, an earlier run stuck) is recorded
        as a run that ended `failed`, so that the schedule backs off from it and `status` shows why."""
        lease = self._acquire(bp.plan_id)
        try:
            with bound_contextvars(plan=bp.plan_id):
                if still_due is not None and not still_due():
                    return RunOutcome(bp.plan_id, "not-due", notes=["rotated meanwhile (another daemon or run)"])
                if self.stopping():
                    raise ShutdownRequested(f"plan {bp.plan_id}: not started, shutting down")
                try:
                    notes = self._settle(bp, lease)
                    current = self._start_current(bp)
                except (LeaseLost, ShutdownRequested):
                    raise
                except Exception as exc:
                    return self.fail_to_start(
                        bp.plan_id,
                        bp.secret_id,
                        bp.store_name,
                        exc,
                        trigger=trigger,
                        reason=reason,
                        operator=operator,
                        lease=lease,
                        notifiers=bp.notifiers,
                        wants=bp.wants,
                        tags=bp.tags,
                    )
                if bp.reconcile_auto and isinstance(bp.plugin, AdminReset):
                    repaired = self._reconcile_first(bp, bp.plugin, lease, current, reason, operator)
                    if repaired is not None:
                        if not repaired.ok:
                            repaired.notes[:0] = notes
                            return repaired
                        notes.append(f"reconciled first (run {repaired.run_id}): CURRENT was refused at the target")
                        current = self._start_current(bp)
                run_id = uuid.uuid4().hex
                with bound_contextvars(run=run_id):
                    return self._rotate_locked(
                        bp, lease, run_id, trigger, reason, operator, revoke_old_now, notes, current
                    )
        finally:
            self.journal.release_lease(lease)

    @staticmethod
    def _start_current(bp: BoundPlan) -> Credential:
        current = bp.store.get(bp.secret_id, Stage.CURRENT)
        if current is None:
            raise SecretNotFound(
                f"plan {bp.plan_id}: secret {bp.secret_id!r} has no CURRENT version in store {bp.store_name}\n  fix: "
                f"seed it with `rotator store put {bp.secret_id} --file VALUE.json --store {bp.store_name}`"
            )
        return current

    def fail_to_start(
        self,
        plan_id: str,
        secret_id: str,
        store_name: str,
        error: BaseException,
        *,
        trigger: Trigger,
        reason: str | None = None,
        operator: str | None = None,
        lease: Lease | None = None,
        notifiers: tuple[tuple[str, Notifier], ...] = (),
        wants: Callable[[str, str], bool] = lambda _name, kind: kind in SUCCESS_EVENTS,
        tags: tuple[str, ...] = (),
    ) -> RunOutcome:
        """Record a run that could not start (nothing was changed) as `failed`, alert, and return its outcome.
        Takes the plan's lease unless the caller holds it (`lease`)."""
        own = lease is None
        held = lease or self._acquire(plan_id)
        try:
            now = self.clock()
            message = describe(error)
            record = RunRecord(
                run_id=uuid.uuid4().hex,
                plan_id=plan_id,
                state=RunState.FAILED,
                trigger=trigger,
                started_at=now,
                store=store_name,
                secret_id=secret_id,
                ended_at=now,
                reason=reason,
                operator=operator,
                error=message,
            )
            self.journal.begin_run(record, held)
            log.error("rotation could not start; nothing was changed", error=message)
            event = failure_event(
                kind=EventKind.ROTATION_FAILED,
                plan_id=plan_id,
                run_id=record.run_id,
                secret_id=secret_id,
                store=store_name,
                current_version_id=None,
                at=now,
                trigger=trigger.value,
                reason=reason,
                tags=tags,
                error=message,
                action=failure_action(EventKind.ROTATION_FAILED, error),
            )
            results = send_alert(event, notifiers, wants, deadline_seconds=self.step_timeout)
            if results:
                self.journal.update_run(record.run_id, held, details={"alerts": {event.kind: results}})
            outcome = RunOutcome(plan_id, RunState.FAILED.value, record.run_id, message, fix=fix_of(error))
            self._alert_repeated_failures(plan_id, secret_id, store_name, held, notifiers, wants, tags, outcome)
            return outcome
        finally:
            if own:
                self.journal.release_lease(held)

    def consecutive_failures(self, plan_id: str, *, limit: int = 100) -> int:
        """How many of the plan's newest runs in a row ended failed, rolled back or stuck."""
        count = 0
        for record in self.journal.runs(plan_id, limit=limit):
            if record.state not in FAILED_STATES:
                break
            count += 1
        return count

    def _alert_repeated_failures(
        self,
        plan_id: str,
        secret_id: str,
        store_name: str,
        lease: Lease,
        notifiers: tuple[tuple[str, Notifier], ...],
        wants: Callable[[str, str], bool],
        tags: tuple[str, ...],
        outcome: RunOutcome,
    ) -> None:
        """After `alert_after_failures` failed runs in a row (and every as many more), a rotation_stuck alert:
        the schedule keeps retrying with backoff, but a person must look. `status` shows the count."""
        every = self.alert_after_failures
        if every <= 0 or outcome.run_id is None:
            return
        count = self.consecutive_failures(plan_id, limit=every * 20)
        if count < every or count % every:
            return
        outcome.notes.append(f"failed {count} times in a row: operators alerted")
        record = self.journal.get_run(outcome.run_id)
        error = outcome.error or "failed"
        action = (
            f"this plan failed {count} times in a row; automatic runs go on with backoff (at most every "
            f"{int(MAX_RETRY_DELAY.total_seconds() // 3600)} h), but it will not heal alone: "
            + (f"{outcome.fix}" if outcome.fix else "read `rotator history PLAN` and fix the cause")
            + "; then `rotator rotate-now PLAN`"
        )
        event = failure_event(
            kind=EventKind.ROTATION_STUCK,
            plan_id=plan_id,
            run_id=outcome.run_id,
            secret_id=secret_id,
            store=store_name,
            current_version_id=record.previous_version_id if record else None,
            at=self.clock(),
            trigger=record.trigger.value if record else Trigger.SCHEDULE.value,
            reason=f"failed {count} times in a row",
            tags=tags,
            error=error,
            action=action,
        )
        log.error("plan keeps failing; operators alerted", failures=count, error=error)
        results = send_alert(event, notifiers, wants, deadline_seconds=self.step_timeout)
        if results and record is not None:
            alerts = {**dict(record.details.get("alerts") or {}), "repeated_failures": results}
            self.journal.update_run(record.run_id, lease, details={**record.details, "alerts": alerts})

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
        current: Credential,
    ) -> RunOutcome:
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
        run.remember(Stage.CURRENT, current)  # read under this lease a moment ago: no second read and decrypt
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
                return self._stuck(run, stuck)
            log.info("rolled back", error=reason)
            outcome = RunOutcome(
                run.bp.plan_id, RunState.ROLLED_BACK.value, run.run_id, reason, run.step_seconds, fix=fix_of(exc)
            )
            if isinstance(exc, AuthenticationFailed) and isinstance(run.bp.plugin, AdminReset) and not run.reconciling:
                # The target refused the stored credential: drift, which reconcile repairs.
                repair = f"`rotator reconcile {run.bp.plan_id}` resets it with the admin credential"
                outcome.fix = f"{outcome.fix}; or {repair}" if outcome.fix else repair
            if isinstance(exc, RequiredNotifyFailed):
                self._tell_rolled_back(run, outcome)
            else:
                run.alert(EventKind.ROTATION_FAILED, reason, failure_action(EventKind.ROTATION_FAILED, exc))
                self._after_failed_run(run, outcome)
            return outcome
        return self._after_promote(run, revoke_old_now)

    def _stuck(self, run: _Run, stuck: RollbackError) -> RunOutcome:
        """A compensation failed: the run is stuck. Alert (once: when it became stuck) and say what to do."""
        message = describe(stuck)
        outcome = RunOutcome(run.bp.plan_id, RunState.STUCK.value, run.run_id, message, run.step_seconds)
        outcome.fix = fix_of(stuck) or "fix the cause named in the error, then run `rotator resume`"
        run.alert(EventKind.ROTATION_STUCK, message, outcome.fix)
        return outcome

    def _after_failed_run(self, run: _Run, outcome: RunOutcome) -> None:
        self._alert_repeated_failures(
            run.bp.plan_id,
            run.bp.secret_id,
            run.bp.store_name,
            run.lease,
            run.bp.notifiers,
            run.bp.wants,
            run.bp.tags,
            outcome,
        )

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
        was_stuck = run.record.state is RunState.STUCK
        run.set_state(RunState.STUCK, error=message, details={**run.record.details, "roll_forward": True})
        fix = "fix the cause, then run `rotator resume` to finish the run forward"
        if not was_stuck:
            run.alert(EventKind.ROTATION_STUCK, message, fix)
        return RunOutcome(run.bp.plan_id, RunState.STUCK.value, run.run_id, message, run.step_seconds, fix=fix)

    def _tell_rolled_back(self, run: _Run, outcome: RunOutcome) -> None:
        """After a rollback that undid a promote, tell the notifiers that delivered the rotation to read again."""
        told = {r.notifier for r in self.journal.notifications(run_id=run.run_id) if r.status is NotifyStatus.SUCCEEDED}
        event = run.event(kind="credential.rolled_back")
        for name, notifier in run.bp.notifiers:
            if name not in told or not run.bp.wants(name, EventKind.ROLLED_BACK):
                continue
            try:
                call_with_retry(
                    functools.partial(notifier, event), attempts=NOTIFY_TRIES, deadline_seconds=self.step_timeout
                )
                outcome.notes.append(f"told {name} of the rollback")
            except Exception as exc:
                log.error("could not tell a notifier of the rollback", notifier=name, error=describe(exc))
                outcome.notes.append(f"could not tell {name} of the rollback: {describe(exc)}")

    def _after_promote(self, run: _Run, revoke_old_now: bool) -> RunOutcome:
        now = self.clock()
        if run.reconciling:
            # PREVIOUS is the drifted value of the same account: it no longer logs in, so there is nothing to revoke.
            run.set_state(RunState.SUCCEEDED, ended_at=now, error=None)
            log.info("reconciled: CURRENT was reset with the admin credential and logs in")
            return RunOutcome(
                run.bp.plan_id,
                RunState.SUCCEEDED.value,
                run.run_id,
                step_seconds=run.step_seconds,
                notes=["CURRENT was reset with the admin credential; it logs in again"],
            )
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
                    raise RollbackError(
                        f"plan {bp.plan_id}: an earlier run {record.run_id} is stuck, so no new run starts "
                        f"({outcome.error})\n  fix: {outcome.fix or 'fix its cause, then run `rotator resume`'}"
                    )
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
                    if record.state is RunState.STUCK:  # still stuck: it was alerted when it became stuck
                        message = describe(stuck)
                        return RunOutcome(
                            bp.plan_id, RunState.STUCK.value, run.run_id, message, run.step_seconds, fix=fix_of(stuck)
                        )
                    return self._stuck(run, stuck)
                error = record.error or "interrupted"
                run.alert(EventKind.ROTATION_FAILED, error, failure_action(EventKind.ROTATION_FAILED, error))
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

    # -- drift repair ---------------------------------------------------------------------------------------

    def reconcile(
        self,
        bp: BoundPlan,
        *,
        reason: str | None = None,
        operator: str | None = None,
        dry_run: bool = False,
    ) -> RunOutcome:
        """`rotator reconcile`: when CURRENT no longer logs in at the target, reset the account with the plan's admin
        credential to a fresh password, prove it logs in, and store it as CURRENT (a run with trigger
        `reconcile`). A CURRENT that logs in is left alone ("in-sync"). With `dry_run`, only probes."""
        plugin = bp.plugin
        if not isinstance(plugin, AdminReset):
            return RunOutcome(
                bp.plan_id,
                "error",
                error=f"plan {bp.plan_id}: its plugin cannot reconcile (it has no admin reset)",
                fix="reset the credential at the target by hand, then `rotator store put` it as CURRENT",
            )
        lease = self._acquire(bp.plan_id) if not dry_run else None
        try:
            with bound_contextvars(plan=bp.plan_id):
                if dry_run:
                    return self._reconcile_dry_run(bp, plugin)
                assert lease is not None
                if self.stopping():
                    raise ShutdownRequested(f"plan {bp.plan_id}: not started, shutting down")
                try:
                    notes = self._settle(bp, lease)
                    current = self._start_current(bp)
                except (LeaseLost, ShutdownRequested):
                    raise
                except Exception as exc:
                    return self.fail_to_start(
                        bp.plan_id,
                        bp.secret_id,
                        bp.store_name,
                        exc,
                        trigger=Trigger.RECONCILE,
                        reason=reason,
                        operator=operator,
                        lease=lease,
                        notifiers=bp.notifiers,
                        wants=bp.wants,
                        tags=bp.tags,
                    )
                try:
                    refused = self._current_refused(bp, plugin, current)
                except Exception as exc:
                    return RunOutcome(
                        bp.plan_id,
                        "error",
                        error=f"cannot tell whether CURRENT logs in: {describe(exc)}",
                        fix=fix_of(exc) or "make the target reachable, then run reconcile again",
                        notes=notes,
                    )
                if refused is None:
                    return RunOutcome(
                        bp.plan_id, "in-sync", notes=[*notes, "CURRENT logs in at the target: nothing to reconcile"]
                    )
                outcome = self._reconcile_locked(bp, lease, current, refused, Trigger.RECONCILE, reason, operator)
                outcome.notes[:0] = notes
                return outcome
        finally:
            if lease is not None:
                self.journal.release_lease(lease)

    def _reconcile_first(
        self,
        bp: BoundPlan,
        plugin: AdminReset,
        lease: Lease,
        current: Credential,
        reason: str | None,
        operator: str | None,
    ) -> RunOutcome | None:
        """`reconcile = "auto"`: before a rotation, check that CURRENT logs in; when the target refuses it, reconcile
        (a run of its own). None when there was nothing to repair, or when the check itself could not tell (the
        rotation then meets the same error and handles it as usual)."""
        try:
            refused = self._current_refused(bp, plugin, current)
        except Exception as exc:
            log.warning("could not check CURRENT before the rotation", error=describe(exc))
            return None
        if refused is None:
            return None
        return self._reconcile_locked(
            bp, lease, current, refused, Trigger.RECONCILE, reason or "reconcile = auto: CURRENT was refused", operator
        )

    def _probe_run(self, bp: BoundPlan) -> _Run:
        """A _Run that changes nothing and journals nothing: for probes (dry runs, reconcile's check)."""
        record = RunRecord(
            run_id="probe",
            plan_id=bp.plan_id,
            state=RunState.RUNNING,
            trigger=Trigger.MANUAL,
            started_at=self.clock(),
            store=bp.store_name,
            secret_id=bp.secret_id,
        )
        return _Run(self, bp, record, lease=Lease(bp.plan_id, "", "", 0, 0, self.clock()))

    def _current_refused(self, bp: BoundPlan, plugin: AdminReset, current: Credential) -> str | None:
        """None when CURRENT logs in; the refusal (one line) when the target refuses it. Other errors raise."""
        probe = self._probe_run(bp)
        try:
            probe.retry(lambda: plugin.check_current(probe.ctx, current))
        except AuthenticationFailed as exc:
            return describe(exc)
        return None

    def _reconcile_locked(
        self,
        bp: BoundPlan,
        lease: Lease,
        current: Credential,
        refused: str,
        trigger: Trigger,
        reason: str | None,
        operator: str | None,
    ) -> RunOutcome:
        run_id = uuid.uuid4().hex
        with bound_contextvars(run=run_id):
            record = RunRecord(
                run_id=run_id,
                plan_id=bp.plan_id,
                state=RunState.RUNNING,
                trigger=trigger,
                started_at=self.clock(),
                store=bp.store_name,
                secret_id=bp.secret_id,
                reason=reason or "CURRENT was refused at the target (drift)",
                operator=operator,
                version_id=run_id,
                previous_version_id=current.version_id,
                details={"reconcile": refused},
            )
            self.journal.begin_run(record, lease)
            log.warning("CURRENT is refused at the target; reconciling with the admin credential", refused=refused)
            return self._drive(_Run(self, bp, record, lease), Step.CREATE, revoke_old_now=False)

    def _reconcile_dry_run(self, bp: BoundPlan, plugin: AdminReset) -> RunOutcome:
        outcome = RunOutcome(bp.plan_id, "dry-run")
        probe = self._probe_run(bp)
        try:
            current = probe.current()
            refused = self._current_refused(bp, plugin, current)
            admin = probe.retry(lambda: plugin.check_admin(probe.ctx, current))
        except Exception as exc:
            outcome.outcome = "error"
            outcome.error = describe(exc)
            outcome.fix = fix_of(exc)
            return outcome
        if refused is None:
            outcome.notes.append("CURRENT logs in at the target: reconcile would change nothing")
        else:
            outcome.notes.append(f"CURRENT is refused ({refused}): reconcile would reset it through {admin}")
        outcome.notes.append(f"{admin} logs in")
        return outcome

    def dry_run(self, bp: BoundPlan) -> RunOutcome:
        """What a rotation of `bp` would do now, probing what can be probed and changing nothing: the store has
        CURRENT; CURRENT logs in (the plugin's DryRunProbe, which also checks the admin where the strategy needs
        one); the password policy can produce a password; required notifiers answer their probe, where they have
        one; the lease is free. Notes are the steps it would take, in order; no note speaks of a PENDING."""
        outcome = RunOutcome(bp.plan_id, "dry-run")
        notes = outcome.notes
        holder = self.journal.lease_of(bp.plan_id)
        if holder is not None:
            notes.append(f"busy now: lease held by {holder.host} pid {holder.pid}")
        probe = self._probe_run(bp)
        plugin = bp.plugin
        try:
            current = probe.current()
            notes.append(f"{plugin_name(plugin)}, strategy {bp.strategy}: CURRENT is version {current.version_id}")
            if isinstance(plugin, DryRunProbe):
                notes.extend(probe.retry(lambda: plugin.dry_run(probe.ctx, current)))
            else:
                self._probe_with_test(probe, current)
                notes.append("CURRENT passes the plugin's probe")
            if bp.reconcile_auto and isinstance(plugin, AdminReset):
                admin = probe.retry(lambda: plugin.check_admin(probe.ctx, current))
                notes.append(f"reconcile = auto: CURRENT is checked first; {admin} logs in to reset it if refused")
            generate_password(bp.password_policy)  # raises with the reason when the policy cannot produce one
        except Exception as exc:
            outcome.outcome = "error"
            outcome.error = describe(exc)
            outcome.fix = fix_of(exc)
            return outcome
        open_runs = [r.run_id for r in self.journal.runs_in_state(*OPEN_STATES, plan_id=bp.plan_id)]
        if open_runs:
            notes.append(f"interrupted runs are finished or rolled back first: {', '.join(open_runs)}")
        notes.append("steps: create (a new value, stored before it is applied) -> stage -> test -> promote")
        notes.extend(self._dry_run_notifiers(bp, outcome))
        notes.append(self._dry_run_revoke(bp))
        return outcome

    @staticmethod
    def _probe_with_test(probe: _Run, current: Credential) -> None:
        """A plugin without DryRunProbe: its `test` with CURRENT. Its messages name the credential it was given
        as PENDING (that is what `test` is for), so they are reworded: here it is CURRENT."""
        try:
            probe.retry(lambda: probe.bp.plugin.test(probe.ctx, current))
        except RotatorError as exc:
            raise StepError(str(exc).replace("PENDING", "CURRENT")) from None

    def _dry_run_notifiers(self, bp: BoundPlan, outcome: RunOutcome) -> list[str]:
        if not bp.notifiers:
            return ["notify: no notifiers"]
        lines = []
        for name, notifier in bp.notifiers:
            kinds = ", ".join(sorted(bp.notifier_events.get(name, SUCCESS_EVENTS)))
            required = " (required: revoke waits for it)" if name in bp.required_notifiers else ""
            line = f"notify {name}{required}: events {kinds}"
            check = getattr(notifier, "probe", None)
            if callable(check):
                try:
                    line += f"; {call_with_retry(check, attempts=2, deadline_seconds=self.step_timeout)}"
                except Exception as exc:
                    line += f"; probe failed: {describe(exc)}"
                    if name in bp.required_notifiers:
                        outcome.outcome = "error"
                        outcome.error = f"required notifier {name} does not answer: {describe(exc)}"
                        outcome.fix = fix_of(exc)
            lines.append(line)
        return lines

    @staticmethod
    def _dry_run_revoke(bp: BoundPlan) -> str:
        grace = "at once" if bp.grace <= timedelta(0) else f"after grace {bp.grace}"
        gates = []
        if bp.required_notifiers:
            gates.append("until " + ", ".join(sorted(bp.required_notifiers)) + " succeeded")
        if isinstance(bp.plugin, UsageProbe):
            gates.append(f"while the old credential is still in use, up to {bp.revoke_deadline}")
        gated = f", waiting {' and '.join(gates)}" if gates else ""
        return f"revoke: the old credential is revoked {grace}{gated}"
