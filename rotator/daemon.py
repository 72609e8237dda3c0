"""The long-running service: APScheduler fires each plan when due; a periodic sweep resumes interrupted runs
(this daemon's after a restart, or another daemon's once its lease is free), revokes PREVIOUS when due and
retries failed notifications; /healthz and /metrics are served when `metrics_address` is set.

Several daemons may share one PostgreSQL journal. The journal, not any daemon, is the memory: each daemon
computes the same due times from it, fires each plan at its own (jittered) moment, and the run checks under the
plan's lease that the plan is still due (`Runner.rotate(still_due=...)`), so each due time rotates a plan once.
A failed run's retry time is computed from the journal too (backoff by consecutive failures), so all daemons
agree on it.

Signals: SIGTERM and SIGINT stop it: no new run starts, runs in flight pause at the next safe step boundary
(see Runner.forward), their leases are released and they stay open for `resume` or another daemon; SIGHUP
reloads the config (schedule edits take effect, removed plans stop; an invalid config is refused and logged).
"""

from __future__ import annotations

import functools
import random
import signal
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from rotator.config import Config, PlanConfig, load_config
from rotator.engine.runner import BoundPlan, RunOutcome, ShutdownRequested
from rotator.errors import PlanBusy, RotatorError, describe
from rotator.interfaces import Journal
from rotator.logs import bound_contextvars, get_logger
from rotator.metrics import HealthServer, JournalCollector, Metrics, health_app
from rotator.model import SUCCESS_EVENTS, NotifyStatus, RunState, Trigger
from rotator.scheduler import FAILED, due_time, place_in_window, spread_catch_up
from rotator.workspace import Workspace

log = get_logger("rotator.daemon")
STUCK_RETRY = timedelta(minutes=10)
SWEEP_JOB = "__sweep__"
ARM_JOB = "__arm__"
# Only plans that start within this horizon hold an APScheduler job; a tick every ARM_TICK arms the next ones.
# 10,000 plans of `rate(30 days)` keep a handful of jobs, instead of 10,000 (each costs ~0.2 ms to create and
# a few KB), and a start-up arms only what is near.
ARM_HORIZON = timedelta(minutes=5)
ARM_TICK = timedelta(minutes=1)
OPEN = (RunState.RUNNING, RunState.ROLLING_BACK)


def _streak(streaks: dict[str, int], plan_id: str) -> int:
    """The plan's failed runs in a row, for the backoff (asked only when its newest run failed: at least 1)."""
    return max(streaks.get(plan_id, 0), 1)


class Daemon:
    def __init__(self, config: Config):
        self.config = config
        self.stopping = threading.Event()
        self.reload_requested = threading.Event()
        self.workspace = Workspace(config)
        self.runner = self.workspace.runner(stop=self.stopping)
        self.planned: dict[str, datetime] = {}  # plan id -> its next start (armed or within the horizon later)
        self._jobs: set[str] = set()  # plans that hold an APScheduler job now
        self._plan_lock = threading.Lock()
        self._stuck_tried: dict[str, datetime] = {}
        self._last_sweep: float | None = None
        self._sweep_lock = threading.Lock()
        self.scheduler = BackgroundScheduler(
            timezone=UTC,
            executors={"default": ThreadPoolExecutor(max_workers=config.model.rotator.concurrency)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        self.metrics = Metrics(
            JournalCollector(
                journal=lambda: self.workspace.journal,
                plan_ids=lambda: [p.id for p in self.config.plans],
                next_due=lambda: dict(self.planned),
            )
        )
        self.http: HealthServer | None = None

    @property
    def journal(self) -> Journal:
        return self.workspace.journal

    # -- scheduling -----------------------------------------------------------------------------------------

    def _failures(self, plan_id: str) -> int:
        count = 0
        for record in self.journal.runs(plan_id, limit=12):
            if record.state not in FAILED:
                break
            count += 1
        return max(count, 1)

    def _due_for(self, plan: PlanConfig, now: datetime) -> datetime | None:
        newest = self.journal.runs(plan.id, limit=1)
        return due_time(
            plan,
            newest[0] if newest else None,
            self.journal.last_success(plan.id),
            now,
            lambda: self._failures(plan.id),
        )

    def _due_times(self) -> dict[str, datetime]:
        """Every plan's next start, in three journal queries however many plans (and however many are failing)."""
        now = datetime.now(UTC)
        latest = self.journal.latest_runs()
        successes = self.journal.last_successes()
        streaks = self.journal.failure_streaks()
        due: dict[str, datetime] = {}
        overdue: list[str] = []
        for plan in self.config.plans:
            when = due_time(
                plan, latest.get(plan.id), successes.get(plan.id), now, functools.partial(_streak, streaks, plan.id)
            )
            if when is None:
                continue
            if when <= now:
                overdue.append(plan.id)
            else:
                due[plan.id] = place_in_window(when, plan.parsed_window)
        # Each daemon shuffles the catch-up order, so that daemons sharing a journal do not all reach for the
        # same plan at the same moment after a common outage.
        random.shuffle(overdue)
        spread = spread_catch_up(overdue, now, cap=self.config.model.rotator.catch_up_spread_seconds)
        for plan_id, when in spread.items():
            window = self.config.plan(plan_id).parsed_window
            due[plan_id] = when if window is None else place_in_window(when, window)
        return due

    def _arm(self, plan_id: str, start: datetime) -> None:
        """Plan the next start; give it an APScheduler job now if it is within the horizon (else arm_due will)."""
        with self._plan_lock:
            self.planned[plan_id] = start
            near = start <= datetime.now(UTC) + ARM_HORIZON
            if near:
                self._jobs.add(plan_id)
            elif plan_id in self._jobs:
                self._jobs.discard(plan_id)
                self._remove_job(plan_id)
        if near:
            self._add_job(plan_id, start)

    def _add_job(self, plan_id: str, start: datetime) -> None:
        self.scheduler.add_job(
            self._fire,
            DateTrigger(run_date=start, timezone=UTC),
            args=[plan_id],
            id=plan_id,
            name=plan_id,
            replace_existing=True,
        )

    def _remove_job(self, plan_id: str) -> None:
        job = self.scheduler.get_job(plan_id)
        if job is not None:
            job.remove()

    def _unplan(self, plan_id: str) -> None:
        with self._plan_lock:
            self.planned.pop(plan_id, None)
            had_job = plan_id in self._jobs
            self._jobs.discard(plan_id)
        if had_job:
            self._remove_job(plan_id)

    def arm_due(self) -> None:
        """The arming tick: give a job to every planned start that came within the horizon."""
        horizon = datetime.now(UTC) + ARM_HORIZON
        with self._plan_lock:
            near = [(p, t) for p, t in self.planned.items() if p not in self._jobs and t <= horizon]
            self._jobs.update(p for p, _ in near)
        for plan_id, start in near:
            self._add_job(plan_id, start)

    def schedule_all(self) -> None:
        started = time.monotonic()
        wanted = self._due_times()
        for plan_id in list(self.planned):
            if plan_id not in wanted:
                self._unplan(plan_id)  # the plan was removed, disabled or made manual
        for plan_id, start in wanted.items():
            self._arm(plan_id, start)
        log.info(
            "plans scheduled",
            scheduled=len(wanted),
            armed_now=len(self._jobs),
            plans=len(self.config.plans),
            seconds=round(time.monotonic() - started, 3),
        )

    def _rearm(self, plan_id: str, *, soon: bool = False) -> None:
        """Arm the plan's next start from the journal (after its run, or after another daemon's)."""
        try:
            plan = self.config.plan(plan_id)
        except RotatorError:
            self._unplan(plan_id)
            return  # removed by a reload
        now = datetime.now(UTC)
        if soon:  # busy elsewhere: look again shortly; the due check decides then
            self._arm(plan_id, now + timedelta(seconds=random.uniform(5, 30)))
            return
        when = self._due_for(plan, now)
        if when is None:
            self._unplan(plan_id)
            return
        self._arm(plan_id, place_in_window(max(when, now), plan.parsed_window))

    # -- jobs -----------------------------------------------------------------------------------------------

    def _fire(self, plan_id: str) -> None:
        with self._plan_lock:
            self._jobs.discard(plan_id)  # a date trigger fires once: its job is gone
        if self.stopping.is_set():
            return
        busy = False
        try:
            plan = self.config.plan(plan_id)

            def still_due() -> bool:
                when = self._due_for(plan, datetime.now(UTC))
                return when is not None and when <= datetime.now(UTC) + timedelta(seconds=1)

            try:
                bp = self.workspace.bind(plan)
            except Exception as exc:
                # The plan cannot even be set up (its store's key missing, a state directory left empty): record
                # it as a failed run, so that the schedule backs off from it (never a hot loop), and status and
                # history say why.
                outcome = self._could_not_start(plan, exc)
            else:
                outcome = self.runner.rotate(bp, trigger=Trigger.SCHEDULE, operator="daemon", still_due=still_due)
            self.metrics.observe(outcome, Trigger.SCHEDULE.value)
            if outcome.outcome == "not-due":
                log.info("plan rotated meanwhile; re-armed from the journal", plan=plan_id)
            elif not outcome.ok and outcome.outcome != RunState.FAILED.value:  # a failed start logged itself
                log.error("scheduled rotation failed", plan=plan_id, outcome=outcome.outcome, error=outcome.error)
        except PlanBusy as exc:
            log.info("plan busy; will look again", plan=plan_id, detail=str(exc))
            busy = True
        except ShutdownRequested:
            log.warning("run paused for shutdown; it stays open for resume", plan=plan_id)
            return
        except Exception as exc:
            log.error("scheduled rotation failed", plan=plan_id, error=describe(exc))
        if not self.stopping.is_set():
            try:
                self._rearm(plan_id, soon=busy)
            except Exception as exc:
                # The journal cannot tell the next due time (an outage): look again in a minute, never at once.
                log.error("cannot re-arm the plan; trying again in a minute", plan=plan_id, error=describe(exc))
                self._arm(plan_id, datetime.now(UTC) + timedelta(seconds=random.uniform(45, 75)))

    def _could_not_start(self, plan: PlanConfig, error: BaseException) -> RunOutcome:
        """Journal a scheduled run that could not be set up as failed (and alert whoever subscribed)."""
        notifiers = []
        for name in plan.notify:
            try:
                notifiers.append((name, self.workspace.notifier(name)))
            except Exception as exc:  # the alert goes to the others; this one's fault is in the same log line
                log.error("notifier cannot be loaded for an alert", plan=plan.id, notifier=name, error=describe(exc))
        events = {name: self.config.model.notifiers[name].event_kinds for name in plan.notify}
        with bound_contextvars(plan=plan.id):
            return self.runner.fail_to_start(
                plan.id,
                plan.secret,
                plan.store,
                error,
                trigger=Trigger.SCHEDULE,
                operator="daemon",
                notifiers=tuple(notifiers),
                wants=lambda name, kind: kind in events.get(name, SUCCESS_EVENTS),
                tags=plan.tags,
            )

    def sweep(self) -> None:
        """One tick: resume interrupted runs whose lease is free, revoke what is due, retry failed notifications.
        Every action takes the plan's lease, so daemons sharing a journal never do one twice."""
        if not self._sweep_lock.acquire(blocking=False):
            return  # the previous tick is still going
        try:
            self._resume_open(log_level="warning")
            self._revoke_due()
            self._retry_notifications()
        finally:
            self._last_sweep = time.monotonic()
            self._sweep_lock.release()

    def _each(self, plan_ids: Iterable[str], action: str, work: Callable[[BoundPlan], list[RunOutcome]]) -> None:
        for plan_id in sorted(set(plan_ids)):
            if self.stopping.is_set():
                return
            try:
                plan = self.config.plan(plan_id)
            except RotatorError:
                continue  # removed from the config; its history stays
            try:
                for outcome in work(self.workspace.bind(plan)):
                    self.metrics.observe(outcome, Trigger.RESUME.value if action == "resume" else "sweep")
                    if action == "resume":
                        log.warning(
                            "interrupted run settled", plan=plan_id, run=outcome.run_id, outcome=outcome.outcome
                        )
            except PlanBusy:
                continue  # a run holds the plan; next tick
            except ShutdownRequested:
                return
            except Exception as exc:
                log.error(f"{action} failed", plan=plan_id, error=describe(exc))

    def _resume_open(self, log_level: str = "warning") -> None:
        now = datetime.now(UTC)
        held = self.journal.live_leases()
        candidates = []
        for record in self.journal.runs_in_state(*OPEN, RunState.STUCK):
            if record.plan_id in held:
                continue  # its holder is alive (here or elsewhere, lease not expired)
            if record.state is RunState.STUCK:
                tried = self._stuck_tried.get(record.plan_id)
                if tried is not None and now - tried < STUCK_RETRY:
                    continue  # stuck needs an operator; look again now and then, not every tick
                self._stuck_tried[record.plan_id] = now
            candidates.append(record.plan_id)
        if candidates:
            self._each(candidates, "resume", self.runner.resume)
            for plan_id in set(candidates):
                self._rearm(plan_id)

    def _revoke_due(self) -> None:
        now = datetime.now(UTC)
        due = [
            r.plan_id
            for r in self.journal.runs_in_state(RunState.AWAITING_REVOKE)
            if r.revoke_due_at is None or r.revoke_due_at <= now
        ]
        self._each(due, "revoke", self.runner.revoke_due)

    def _retry_notifications(self) -> None:
        now = datetime.now(UTC)
        due = [
            r.plan_id
            for r in self.journal.notifications(statuses=(NotifyStatus.FAILED, NotifyStatus.PENDING))
            if r.next_attempt_at is None or r.next_attempt_at <= now
        ]
        self._each(due, "notification retry", self.runner.retry_notifications)

    # -- health ---------------------------------------------------------------------------------------------

    def health(self) -> tuple[bool, dict[str, Any]]:
        interval = self.config.model.rotator.revoke_sweep_seconds
        problems: list[str] = []
        started = time.monotonic()
        try:
            stuck = len(self.journal.runs_in_state(RunState.STUCK))
        except Exception as exc:
            stuck = None
            problems.append(f"journal unreachable: {describe(exc)}")
        journal_ms = round((time.monotonic() - started) * 1000, 1)
        if not self.scheduler.running:
            problems.append("scheduler not running")
        sweep_age = None if self._last_sweep is None else round(time.monotonic() - self._last_sweep, 1)
        if sweep_age is not None and sweep_age > max(3 * interval, 60):
            problems.append(f"no sweep for {sweep_age} s")
        body = {
            "status": "ok" if not problems else "unhealthy",
            "problems": problems,
            "plans": len(self.config.plans),
            "planned": len(self.planned),
            "armed_jobs": len(self._jobs),
            "stuck_runs": stuck,
            "journal_ms": journal_ms,
            "last_sweep_seconds_ago": sweep_age,
            "stopping": self.stopping.is_set(),
        }
        return not problems, body

    # -- lifecycle ------------------------------------------------------------------------------------------

    def reload(self) -> None:
        try:
            config = load_config(self.config.path)
            Workspace(config).check_components()
        except RotatorError as exc:
            log.error("reload refused: the new config is invalid; keeping the old one", error=str(exc))
            return
        old = self.workspace
        self.config = config
        self.workspace = Workspace(config)
        self.runner = self.workspace.runner(stop=self.stopping)
        self.schedule_all()
        log.info("config reloaded", plans=len(config.plans))
        del old  # runs in flight keep their own references to the old components

    def start(self) -> None:
        """Everything but the wait loop: check the config, start serving, resume, schedule (for tests/benches)."""
        started = time.monotonic()
        log.info("daemon starting", config=str(self.config.path), plans=len(self.config.plans))
        for warning in self.workspace.check_components():
            log.warning("config warning", warning=warning)
        address = self.config.model.rotator.metrics_host_port
        if address is not None:
            self.http = HealthServer(*address, health_app(self.metrics, self.health))
            self.http.start()
        self._resume_open()
        self.schedule_all()
        self.scheduler.add_job(
            self.sweep,
            IntervalTrigger(seconds=self.config.model.rotator.revoke_sweep_seconds, timezone=UTC),
            id=SWEEP_JOB,
            name="sweep",
            replace_existing=True,
            next_run_time=datetime.now(UTC),
        )
        self.scheduler.add_job(
            self.arm_due,
            IntervalTrigger(seconds=ARM_TICK.total_seconds(), timezone=UTC),
            id=ARM_JOB,
            name="arm",
            replace_existing=True,
        )
        self.scheduler.start()
        log.info("daemon running", startup_seconds=round(time.monotonic() - started, 3))

    def shutdown(self) -> None:
        log.info("daemon stopping: runs in flight pause at their next safe step")
        self.stopping.set()
        self.scheduler.shutdown(wait=True)
        if self.http is not None:
            self.http.stop()
        self.workspace.close()
        log.info("daemon stopped")

    def run(self) -> int:
        self.start()
        while not self.stopping.is_set():
            if self.reload_requested.wait(timeout=0.5):
                self.reload_requested.clear()
                self.reload()
        self.shutdown()
        return 0

    def install_signal_handlers(self) -> None:
        def stop(signum: int, _frame: FrameType | None) -> None:
            log.info("signal received", signal=signal.Signals(signum).name)
            self.stopping.set()

        def hup(_signum: int, _frame: FrameType | None) -> None:
            self.reload_requested.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, hup)


def run_daemon(config: Config) -> int:
    daemon = Daemon(config)
    daemon.install_signal_handlers()
    return daemon.run()
