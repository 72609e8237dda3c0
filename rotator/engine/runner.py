"""The run state machine: drives the steps of a rotation (rotator/engine/steps.py) under the plan's lease,
journals each before and after it runs, rolls back last-in-first-out, and resumes interrupted runs. Every state
a run is written in is checked against engine/states.py's table. It knows plugins, stores and notifiers only
through rotator.interfaces.

Around it, each in its own module: journaled notification delivery and its retries (delivery.py), what holds
back revoke (revoke_gate.py), PENDING versions no run claims (orphans.py), failure events (alerts.py), runs that
could not start and plans that keep failing (failed_runs.py), dry runs and reconcile's check (probes.py). A run
(`_Run`) gets the settings every run shares (plans.RunSettings), never the Runner.

Crash model: the process may die at any instruction (failpoints.py crashes it at named points). Every step and
every compensation is idempotent, the store holds PENDING before anything is applied, and the journal says
which step was in flight, so `resume` can repeat that step, or go on rolling back, and converge.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from rotator import failpoints
from rotator.engine.alerts import (
    consecutive_failures,
    failure_action,
    failure_event,
    fix_of,
    send_alert,
)
from rotator.engine.delivery import deliver, retry_notifications, rotation_event, tell_rolled_back
from rotator.engine.failed_runs import AlertedPlan, alert_repeated_failures, record_failed_start
from rotator.engine.orphans import adopt_orphan, mark_lost_steps
from rotator.engine.plan_store import PlanStore, core_for
from rotator.engine.plans import BoundPlan, RunOutcome, RunSettings, plugin_name
from rotator.engine.probes import current_refused, dry_run, probe_core, reconcile_dry_run
from rotator.engine.revoke_gate import check_revoke
from rotator.engine.states import COMPENSATION, check_transition, compensations_due, resume_point, steps_from
from rotator.engine.steps import default_wants
from rotator.errors import (
    AuthenticationFailed,
    LeaseLost,
    NotifyError,
    PlanBusy,
    RollbackError,
    RotatorError,
    SecretNotFound,
    StepRefused,
    describe,
)
from rotator.fingerprints import FingerprintKey, version_fingerprints
from rotator.interfaces import AdminReset, Clock, Journal, Notifier, utc_now
from rotator.logs import bound_contextvars, get_logger
from rotator.model import (
    Credential,
    EventKind,
    Lease,
    Outcome,
    RotationEvent,
    RunDetails,
    RunRecord,
    RunState,
    Stage,
    Step,
    StepAction,
    StepStatus,
    Trigger,
)
from rotator.retry import Deadline

# Names the CLI, the daemon and the testing kit import from here.
__all__ = ["BoundPlan", "RunOutcome", "Runner", "ShutdownRequested", "plugin_name", "utc_now"]

OPEN_STATES = (RunState.RUNNING, RunState.ROLLING_BACK, RunState.STUCK)
log = get_logger("rotator.engine")


class ShutdownRequested(BaseException):
    """The process is stopping (SIGTERM): the run pauses at a step boundary, its lease is released, and it stays
    open in the journal for `resume` (this daemon at its next start, or another daemon's sweep at once)."""


class RequiredNotifyFailed(RotatorError):
    """A required notifier failed after promote, PREVIOUS still works and the plan asks to roll back."""


class _Run:
    """One run being driven: its record, its lease (renewed before each step), and its steps over the plan's
    store (a StepCore)."""

    def __init__(self, settings: RunSettings, bp: BoundPlan, record: RunRecord, lease: Lease):
        self.settings = settings
        self.journal = settings.journal
        self.bp = bp
        self.record = record
        self.lease = lease
        self.step_seconds: dict[str, float] = {}
        repair = bp.plugin if record.details.reconcile is not None and isinstance(bp.plugin, AdminReset) else None
        self.store = PlanStore(bp.store, bp.plan_id, bp.secret_id, record.run_id, Deadline(settings.step_timeout))
        self.core = core_for(bp, self.store, repair=repair)

    @property
    def run_id(self) -> str:
        return self.record.run_id

    @property
    def reconciling(self) -> bool:
        """A drift repair (`rotator reconcile`): create and stage reset CURRENT's account through the admin."""
        return self.record.details.reconcile is not None

    def _check_repair(self) -> None:
        if self.reconciling and self.core.repair is None:
            raise StepRefused(f"plan {self.bp.plan_id}: the plugin cannot reconcile (no admin reset)")

    # -- the record ------------------------------------------------------------------------------------------

    def move(self, state: RunState, **changes: Any) -> None:
        """Write the run in `state` (a change the states table must allow), with other fields changed too."""
        check_transition(self.record.state, state, run_id=self.run_id)
        self.update(state=state, **changes)

    def update(self, **changes: Any) -> None:
        """Change run fields other than its state (details, error, revoke_due_at)."""
        self.journal.update_run(self.run_id, self.lease, **changes)
        self.record = dataclasses.replace(self.record, **changes)

    def refreshed(self) -> RunRecord:
        """The run as the journal has it now, with its steps."""
        self.record = self.journal.get_run(self.run_id) or self.record
        return self.record

    def renew(self) -> None:
        """Extend the lease once half of it is used (the fence is checked on every journal write anyway)."""
        remaining = (self.lease.expires_at - datetime.now(UTC)).total_seconds()
        if remaining < self.settings.lease_seconds / 2:
            self.lease = self.journal.renew_lease(self.lease, self.settings.lease_seconds)

    def timed_step(self, step: Step, action: StepAction, fn: Callable[[], None], point: str) -> None:
        """Journal the step as started, run it (retrying transient errors until the step's deadline), journal
        it as finished: succeeded, failed, or refused (a create or stage that changed nothing at the target)."""
        self.renew()
        self.journal.step_started(self.run_id, step, action, self.lease)
        failpoints.hit(f"before-{point}")
        started = time.perf_counter()
        self.core.deadline.start()
        self.core.begin_step()
        try:
            fn()
        except Exception as exc:
            # A BaseException (SIGKILL's in-process stand-in, KeyboardInterrupt, SystemExit) is not journaled:
            # the step stays "started", as after a crash, and `resume` repeats it.
            refused = action is StepAction.FORWARD and step in (Step.CREATE, Step.STAGE) and self.core.refused(exc)
            self.journal.step_finished(self.run_id, step, action, self.lease, error=describe(exc), refused=refused)
            raise
        finally:
            self.core.deadline.stop()
            key = step.value if action is StepAction.FORWARD else f"rollback-{COMPENSATION.get(step, step.value)}"
            self.step_seconds[key] = round(time.perf_counter() - started, 6)
        failpoints.hit(f"after-{point}")
        self.journal.step_finished(self.run_id, step, action, self.lease)
        log.debug("step done", step=step.value, action=action.value, seconds=self.step_seconds.get(step.value))

    # -- forward ---------------------------------------------------------------------------------------------

    def forward(self, start: Step) -> None:
        """Run the steps from `start` through promote and notify. Raises on a failure before promote.

        A stop request (SIGTERM) pauses the run at the next step boundary where stopping leaves every consumer
        working: before stage and before notify. Between stage and promote the new credential is half-applied
        (a single-user plan's old password already stopped working), so the run goes on through test and
        promote first: milliseconds for a database, where a pause would last until some daemon resumes it."""
        steps: dict[Step, Callable[[], None]] = {
            Step.CREATE: self.do_create,
            Step.STAGE: self.do_stage,
            Step.TEST: self.core.test,
            Step.PROMOTE: self.do_promote,
        }
        for step in steps_from(start):
            if step in (Step.STAGE, Step.NOTIFY) and self.settings.stopping():
                log.warning("stopping: run paused; `resume` or another daemon finishes it", before=step.value)
                raise ShutdownRequested(f"plan {self.bp.plan_id}: paused before {step.value} for shutdown")
            if step is Step.NOTIFY:
                self.notify()
                continue
            self.timed_step(step, StepAction.FORWARD, steps[step], step.value)

    def do_create(self) -> None:
        self._check_repair()
        self.core.create()

    def do_stage(self) -> None:
        self._check_repair()
        self.core.stage()

    def do_promote(self) -> None:
        self.core.promote()
        if self.store.own is not None:  # kept at promote, and again on a repeat: a crash may have cut it
            self.keep_fingerprints(self.store.own)

    def created(self) -> bool:
        """Whether this run's create step started: a rolls-forward provider may have invalidated CURRENT."""
        return any(s.step is Step.CREATE and s.action is StepAction.FORWARD for s in self.refreshed().steps)

    def keep_fingerprints(self, credential: Credential) -> None:
        """Journal the keyed fingerprints of a version that went live (rotator/fingerprints.py), so that `rotator
        leak` finds the plan from a leaked string. Best effort: a failure is logged and never fails the run (the
        next rotation, import or `store put` fingerprints again)."""
        key = self.settings.fingerprint_key
        if key is None:
            return
        try:
            found = version_fingerprints(
                key, self.bp.plan_id, self.bp.secret_id, credential.version_id, credential.value
            )
            self.journal.save_fingerprints(found)
        except Exception as exc:
            log.warning(
                "could not keep the new version's fingerprints; `rotator leak` may miss it", error=describe(exc)
            )

    def event(self, kind: EventKind = EventKind.ROTATED) -> RotationEvent:
        """This run's notification (no secret, only ids); `read_value` reads CURRENT through the run's store."""

        def read_current() -> dict[str, Any]:
            return dict(self.core.current().value)

        return rotation_event(self.bp, self.record, self.settings.now(), read_current, kind)

    def notify(self) -> None:
        """Tell consumers the new credential is live. Each notifier's delivery is journaled; a failed one is
        retried on later ticks (Runner.retry_notifications) and, if it is required, holds back revoke. A failure
        never rolls back, unless the plan has rollback_on_failure, a required notifier failed and PREVIOUS still
        works (then RequiredNotifyFailed makes the run roll back, unpromote first)."""
        if not any(self.bp.wants(name, EventKind.ROTATED) for name, _ in self.bp.notifiers):
            return
        failed: list[str] = []

        def tell_all() -> None:
            self.refreshed()
            failed.extend(deliver(self.settings, self.bp, self.event(), self.lease))
            if failed:
                raise NotifyError(f"notifiers failed: {', '.join(failed)} (retried on later ticks)")

        try:
            self.timed_step(Step.NOTIFY, StepAction.FORWARD, tell_all, Step.NOTIFY.value)
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
        previous = self.store.read(Stage.PREVIOUS)
        if previous is None or previous.version_id != self.record.previous_version_id:
            return
        try:
            self.core.test(previous)
        except Exception as exc:
            note = f"required notifier {', '.join(required)} failed, but PREVIOUS no longer works ({describe(exc)})"
            log.error("cannot roll back after promote; the new credential stays", reason=note)
            self.update(details=dataclasses.replace(self.record.details, rollback_refused=note))
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
            at=self.settings.now(),
            trigger=self.record.trigger.value,
            reason=self.record.reason,
            tags=self.bp.tags,
            error=error,
            action=action,
        )
        results = send_alert(event, self.bp.notifiers, self.bp.wants, deadline_seconds=self.settings.step_timeout)
        if results:
            self.update(details=self.record.details.with_alerts(kind.value, results))

    # -- revoke ----------------------------------------------------------------------------------------------

    def revoke(self, *, force: bool = False) -> bool:
        """Invalidate PREVIOUS at the target. True when done (or nothing left to revoke). Unless `force`d (a
        leak: `--revoke-old now`; or a new rotation superseding this one), it first waits for required notifiers
        and for consumers still on PREVIOUS (revoke_gate.py): then it returns False, leaving the run awaiting
        revoke with a later revoke_due_at and no error."""
        details = self.record.details
        if not force:
            gate = check_revoke(self.settings, self.bp, self.record, self.core)
            if not gate.open:
                self.update(revoke_due_at=gate.recheck_at, details=gate.details)
                return False
            details = gate.details

        def act() -> None:
            self.core.revoke(self.record.previous_version_id, superseded_by=self.run_id)

        try:
            self.timed_step(Step.REVOKE, StepAction.FORWARD, act, Step.REVOKE.value)
        except Exception as exc:
            if details is not self.record.details:
                self.update(details=details)
            self.record_revoke_failure(exc)
            return False
        done = dataclasses.replace(details, revoke_waiting_for=())
        self.move(RunState.SUCCEEDED, ended_at=self.settings.now(), error=None, details=done)
        return True

    def record_revoke_failure(self, exc: BaseException) -> None:
        failures = sum(1 for s in self.refreshed().steps if s.step is Step.REVOKE and s.status is StepStatus.FAILED)
        delay = min(timedelta(minutes=2 ** min(failures, 6)), timedelta(hours=1))
        log.error("revoke failed; will retry", error=describe(exc), attempt=failures, retry_in=str(delay))
        self.update(error=f"revoke: {describe(exc)}", revoke_due_at=self.settings.now() + delay)

    # -- rollback --------------------------------------------------------------------------------------------

    def rollback(self, reason: str) -> None:
        """Undo what the run did, last first, each compensation once. STUCK if one fails."""
        reason = reason.split("; rollback ", 1)[0]  # a resumed rollback: the failure before, not the last attempt's
        self.move(RunState.ROLLING_BACK, error=reason)
        undo: dict[str, Callable[[], None]] = {
            "unpromote": self.store.unpromote,
            "unstage": self.undo_unstage,
            "discard": self.undo_discard,
        }
        for step in compensations_due(self.refreshed().steps):
            action = COMPENSATION[step]
            try:
                self.timed_step(step, StepAction.ROLLBACK, undo[action], f"rollback-{action}")
            except LeaseLost:
                raise
            except Exception as exc:
                message = f"{reason}; rollback {action} failed: {describe(exc)}"
                log.error("rollback failed; run is stuck", action=action, error=describe(exc))
                self.move(RunState.STUCK, error=message)
                fix = fix_of(exc)
                raise RollbackError(
                    f"plan {self.bp.plan_id}: {message}\n  fix: "
                    + (f"{fix}; " if fix else "fix the cause named above, ")
                    + "then run `rotator resume` (PENDING is kept until the rollback completes)"
                ) from None
        self.move(RunState.ROLLED_BACK, ended_at=self.settings.now(), error=reason)

    def undo_unstage(self) -> None:
        self._check_repair()
        self.core.unstage()

    def undo_discard(self) -> None:
        if self.core.discard():
            self.store.discard_pending()


class Runner:
    """Drives runs for bound plans, under the plan's lease in the journal."""

    def __init__(
        self,
        journal: Journal,
        *,
        clock: Clock = utc_now,
        lease_seconds: float = 600,
        step_timeout: float = 120,
        revoke_recheck_seconds: float = 60,
        notify_retry_for: timedelta = timedelta(hours=24),
        notify_retry_seconds: float = 60.0,
        alert_after_failures: int = 3,
        fingerprint_key: FingerprintKey | None = None,
        stop: threading.Event | None = None,
    ):
        self.settings = RunSettings(
            journal=journal,
            clock=clock,
            lease_seconds=lease_seconds,
            step_timeout=step_timeout,
            revoke_recheck_seconds=revoke_recheck_seconds,
            notify_retry_for=notify_retry_for,
            notify_retry_seconds=notify_retry_seconds,
            alert_after_failures=alert_after_failures,
            fingerprint_key=fingerprint_key,
            stop=stop or threading.Event(),
        )
        self.journal = journal
        self.clock = clock
        self.stop = self.settings.stop

    def stopping(self) -> bool:
        return self.settings.stopping()

    def _run(self, bp: BoundPlan, record: RunRecord, lease: Lease) -> _Run:
        return _Run(self.settings, bp, record, lease)

    # -- leases ----------------------------------------------------------------------------------------------

    def _acquire(self, plan_id: str) -> Lease:
        lease = self.journal.acquire_lease(plan_id, self.settings.lease_seconds)
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
                    return RunOutcome(bp.plan_id, Outcome.NOT_DUE, notes=["rotated meanwhile (another daemon or run)"])
                prepared = self._prepare(bp, lease, trigger, reason, operator)
                if isinstance(prepared, RunOutcome):
                    return prepared
                notes, current = prepared
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

    def _prepare(
        self, bp: BoundPlan, lease: Lease, trigger: Trigger, reason: str | None, operator: str | None
    ) -> tuple[list[str], Credential] | RunOutcome:
        """Before a new run, under the plan's lease: settle what earlier runs left (notes on what was done) and read
        CURRENT. A plan that cannot start is recorded as a failed run, whose outcome is returned instead."""
        if self.stopping():
            raise ShutdownRequested(f"plan {bp.plan_id}: not started, shutting down")
        try:
            notes = self._settle(bp, lease)
            return notes, self._start_current(bp)
        except (LeaseLost, ShutdownRequested):
            raise
        except Exception as exc:
            return self._could_not_start(bp, exc, trigger, reason, operator, lease)

    @staticmethod
    def _start_current(bp: BoundPlan) -> Credential:
        current = bp.store.get(bp.secret_id, Stage.CURRENT)
        if current is None:
            raise SecretNotFound(
                f"plan {bp.plan_id}: secret {bp.secret_id!r} has no CURRENT version in store {bp.store_name}\n  fix: "
                f"seed it with `rotator store put {bp.secret_id} --file VALUE.json --store {bp.store_name}`"
            )
        return current

    def _could_not_start(
        self,
        bp: BoundPlan,
        error: BaseException,
        trigger: Trigger,
        reason: str | None,
        operator: str | None,
        lease: Lease,
    ) -> RunOutcome:
        return record_failed_start(
            self.settings, AlertedPlan.of(bp), lease, error, trigger=trigger, reason=reason, operator=operator
        )

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
        wants: Callable[[str, str], bool] | None = None,
        tags: tuple[str, ...] = (),
    ) -> RunOutcome:
        """Record a run that could not start (nothing was changed) as `failed`, alert, and return its outcome
        (failed_runs.py). Takes the plan's lease unless the caller holds it (`lease`)."""
        plan = AlertedPlan(plan_id, secret_id, store_name, notifiers, wants or default_wants, tags)
        held = lease or self._acquire(plan_id)
        try:
            return record_failed_start(
                self.settings, plan, held, error, trigger=trigger, reason=reason, operator=operator
            )
        finally:
            if lease is None:
                self.journal.release_lease(held)

    def consecutive_failures(self, plan_id: str, *, limit: int = 100) -> int:
        """How many of the plan's newest runs in a row ended failed, rolled back or stuck."""
        return consecutive_failures(self.journal, plan_id, limit=limit)

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
        run = self._run(bp, record, lease)
        run.store.remember(Stage.CURRENT, current)  # read under this lease a moment ago: no second read and decrypt
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
                run.bp.plan_id, Outcome.ROLLED_BACK, run.run_id, reason, run.step_seconds, fix=fix_of(exc)
            )
            if isinstance(exc, AuthenticationFailed) and isinstance(run.bp.plugin, AdminReset) and not run.reconciling:
                # The target refused the stored credential: drift, which reconcile repairs.
                repair = f"`rotator reconcile {run.bp.plan_id}` resets it with the admin credential"
                outcome.fix = f"{outcome.fix}; or {repair}" if outcome.fix else repair
            if isinstance(exc, RequiredNotifyFailed):
                tell_rolled_back(self.settings, run.bp, run.record, outcome.notes)
            else:
                run.alert(EventKind.ROTATION_FAILED, reason, failure_action(EventKind.ROTATION_FAILED, exc))
                alert_repeated_failures(self.settings, AlertedPlan.of(run.bp), run.lease, outcome)
            return outcome
        return self._after_promote(run, revoke_old_now)

    def _stuck(self, run: _Run, stuck: RollbackError) -> RunOutcome:
        """A compensation failed: the run is stuck. Alert (once: when it became stuck) and say what to do."""
        message = describe(stuck)
        outcome = RunOutcome(run.bp.plan_id, Outcome.STUCK, run.run_id, message, run.step_seconds)
        outcome.fix = fix_of(stuck) or "fix the cause named in the error, then run `rotator resume`"
        run.alert(EventKind.ROTATION_STUCK, message, outcome.fix)
        return outcome

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
        was_held = run.record.details.roll_forward  # held before, and alerted then: a resume that failed again
        run.move(RunState.STUCK, error=message, details=dataclasses.replace(run.record.details, roll_forward=True))
        fix = "fix the cause, then run `rotator resume` to finish the run forward"
        if not was_held:
            run.alert(EventKind.ROTATION_STUCK, message, fix)
        return RunOutcome(run.bp.plan_id, Outcome.STUCK, run.run_id, message, run.step_seconds, fix=fix)

    def _after_promote(self, run: _Run, revoke_old_now: bool) -> RunOutcome:
        now = self.clock()
        if run.reconciling:
            # PREVIOUS is the drifted value of the same account: it no longer logs in, so there is nothing to revoke.
            run.move(RunState.SUCCEEDED, ended_at=now, error=None)
            log.info("reconciled: CURRENT was reset with the admin credential and logs in")
            return RunOutcome(
                run.bp.plan_id,
                Outcome.SUCCEEDED,
                run.run_id,
                step_seconds=run.step_seconds,
                notes=["CURRENT was reset with the admin credential; it logs in again"],
            )
        # A run started with --revoke-old now carries its due time from the start (see _rotate_locked).
        revoke_old_now = revoke_old_now or run.record.revoke_due_at is not None
        due = now if revoke_old_now else now + run.bp.grace
        run.move(RunState.AWAITING_REVOKE, revoke_due_at=due)
        log.info("promoted; the new credential is live", revoke_due_at=due.isoformat())
        outcome = RunOutcome(run.bp.plan_id, Outcome.AWAITING_REVOKE, run.run_id, step_seconds=run.step_seconds)
        if revoke_old_now or run.bp.grace <= timedelta(0):
            if run.revoke(force=revoke_old_now):
                outcome.outcome = Outcome.SUCCEEDED
                outcome.revoked = True
                log.info("previous credential revoked")
            elif run.record.error:
                outcome.error = run.record.error
            else:
                outcome.notes.append("revoke waits: " + "; ".join(run.record.details.revoke_waiting_for))
        failed_notify = (
            [s for s in run.refreshed().steps if s.step is Step.NOTIFY and s.status is StepStatus.FAILED]
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
                if outcome.outcome is Outcome.STUCK:
                    raise RollbackError(
                        f"plan {bp.plan_id}: an earlier run {record.run_id} is stuck, so no new run starts "
                        f"({outcome.error})\n  fix: {outcome.fix or 'fix its cause, then run `rotator resume`'}"
                    )
        awaiting = [r for r in earlier if r.state is RunState.AWAITING_REVOKE]
        if any(r.state in OPEN_STATES for r in earlier):  # continuing them may have promoted: look again
            awaiting = self.journal.runs_in_state(RunState.AWAITING_REVOKE, plan_id=bp.plan_id)
        for record in awaiting:
            if record.plan_id == bp.plan_id:
                run = self._run(bp, record, lease)
                with bound_contextvars(run=record.run_id):
                    if run.revoke(force=True):
                        notes.append(f"revoked the PREVIOUS of run {record.run_id} early: a new rotation supersedes it")
                    else:
                        # Never blocks the next rotation (DESIGN): the new run replaces the credential again.
                        run.move(
                            RunState.SUCCEEDED,
                            ended_at=self.clock(),
                            error=f"{run.record.error}; superseded by a new rotation",
                        )
                        notes.append(f"revoke of run {record.run_id} failed; superseded")
        self._recover_orphan_pending(bp, lease, notes)
        return notes

    def _recover_orphan_pending(self, bp: BoundPlan, lease: Lease, notes: list[str]) -> None:
        """Roll back (or, rolling forward, finish) a PENDING version that no run claims (orphans.py)."""
        record = adopt_orphan(self.settings, bp, lease)
        if record is None:
            return
        run = self._run(bp, record, lease)
        if bp.rolls_forward:
            # The provider invalidated CURRENT when it minted this PENDING: finish it forward, never discard it.
            outcome = self._drive(run, Step.STAGE, revoke_old_now=False)
            notes.append(f"finished an orphan PENDING version {record.run_id} forward: {outcome.outcome}")
            return
        mark_lost_steps(self.settings, record, lease)
        run.rollback("orphan PENDING version rolled back")
        notes.append(f"rolled back an orphan PENDING version {record.run_id}")

    def _continue(self, bp: BoundPlan, record: RunRecord, lease: Lease) -> RunOutcome:
        """Finish or roll back one interrupted run (under the plan's lease)."""
        with bound_contextvars(run=record.run_id):
            run = self._run(bp, record, lease)
            forward_only = record.state is RunState.STUCK and record.details.roll_forward
            point = resume_point(RunState.RUNNING if forward_only else record.state, record.steps)
            log.warning("resuming interrupted run", state=record.state.value, step=point.step, rollback=point.rollback)
            if point.rollback:
                try:
                    run.rollback(record.error or "interrupted")
                except RollbackError as stuck:
                    if record.state is RunState.STUCK:  # still stuck: it was alerted when it became stuck
                        message = describe(stuck)
                        return RunOutcome(
                            bp.plan_id, Outcome.STUCK, run.run_id, message, run.step_seconds, fix=fix_of(stuck)
                        )
                    return self._stuck(run, stuck)
                error = record.error or "interrupted"
                run.alert(EventKind.ROTATION_FAILED, error, failure_action(EventKind.ROTATION_FAILED, error))
                return RunOutcome(bp.plan_id, Outcome.ROLLED_BACK, run.run_id, record.error, run.step_seconds)
            assert point.step is not None
            if forward_only:
                run.move(RunState.RUNNING)  # a roll-forward run held stuck: finished forward now
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
                    outcomes.append(RunOutcome(bp.plan_id, Outcome.ROLLED_BACK, notes=notes))
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
                run = self._run(bp, record, lease)
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

    def retry_notifications(self, bp: BoundPlan) -> list[RunOutcome]:
        """Deliver again every failed notification of `bp` whose next attempt is due (the daemon's tick)."""
        lease = self._acquire(bp.plan_id)
        try:
            with bound_contextvars(plan=bp.plan_id):
                return retry_notifications(self.settings, bp, lease)
        finally:
            self.journal.release_lease(lease)

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
                Outcome.ERROR,
                error=f"plan {bp.plan_id}: its plugin cannot reconcile (it has no admin reset)",
                fix="reset the credential at the target by hand, then `rotator store put` it as CURRENT",
            )
        lease = self._acquire(bp.plan_id) if not dry_run else None
        try:
            with bound_contextvars(plan=bp.plan_id):
                if dry_run:
                    return reconcile_dry_run(self.settings, bp, plugin)
                assert lease is not None
                prepared = self._prepare(bp, lease, Trigger.RECONCILE, reason, operator)
                if isinstance(prepared, RunOutcome):
                    return prepared
                notes, current = prepared
                try:
                    refused = current_refused(probe_core(self.settings, bp), plugin, current)
                except Exception as exc:
                    return RunOutcome(
                        bp.plan_id,
                        Outcome.ERROR,
                        error=f"cannot tell whether CURRENT logs in: {describe(exc)}",
                        fix=fix_of(exc) or "make the target reachable, then run reconcile again",
                        notes=notes,
                    )
                if refused is None:
                    return RunOutcome(
                        bp.plan_id,
                        Outcome.IN_SYNC,
                        notes=[*notes, "CURRENT logs in at the target: nothing to reconcile"],
                    )
                outcome = self._reconcile_locked(bp, lease, current, refused, reason, operator)
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
            refused = current_refused(probe_core(self.settings, bp), plugin, current)
        except Exception as exc:
            log.warning("could not check CURRENT before the rotation", error=describe(exc))
            return None
        if refused is None:
            return None
        return self._reconcile_locked(
            bp, lease, current, refused, reason or "reconcile = auto: CURRENT was refused", operator
        )

    def _reconcile_locked(
        self,
        bp: BoundPlan,
        lease: Lease,
        current: Credential,
        refused: str,
        reason: str | None,
        operator: str | None,
    ) -> RunOutcome:
        run_id = uuid.uuid4().hex
        with bound_contextvars(run=run_id):
            record = RunRecord(
                run_id=run_id,
                plan_id=bp.plan_id,
                state=RunState.RUNNING,
                trigger=Trigger.RECONCILE,
                started_at=self.clock(),
                store=bp.store_name,
                secret_id=bp.secret_id,
                reason=reason or "CURRENT was refused at the target (drift)",
                operator=operator,
                version_id=run_id,
                previous_version_id=current.version_id,
                details=RunDetails(reconcile=refused),
            )
            self.journal.begin_run(record, lease)
            log.warning("CURRENT is refused at the target; reconciling with the admin credential", refused=refused)
            return self._drive(self._run(bp, record, lease), Step.CREATE, revoke_old_now=False)

    def dry_run(self, bp: BoundPlan) -> RunOutcome:
        """What a rotation of `bp` would do now, changing nothing (probes.py)."""
        return dry_run(self.settings, bp)
