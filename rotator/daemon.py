"""The long-running service: APScheduler fires each plan when due, a sweep revokes PREVIOUS after grace,
interrupted runs are resumed at start. SIGTERM and SIGINT stop it after the runs in flight end; SIGHUP reloads
the config (schedule edits take effect, removed plans stop).
"""

from __future__ import annotations

import signal
import threading
import time
from datetime import UTC, datetime, timedelta
from types import FrameType

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from rotator.config import Config, load_config
from rotator.engine.runner import describe
from rotator.errors import PlanBusy, RotatorError
from rotator.logs import get_logger
from rotator.model import RunState, Trigger
from rotator.scheduler import next_due, place_in_window, spread_catch_up
from rotator.workspace import Workspace

log = get_logger("rotator.daemon")
RETRY_AFTER_FAILURE = timedelta(minutes=5)
SWEEP_JOB = "__revoke_sweep__"


class Daemon:
    def __init__(self, config: Config):
        self.config = config
        self.workspace = Workspace(config)
        self.runner = self.workspace.runner()
        self.stopping = threading.Event()
        self.reload_requested = threading.Event()
        self._failures: dict[str, int] = {}
        self.scheduler = BackgroundScheduler(
            timezone=UTC,
            executors={"default": ThreadPoolExecutor(max_workers=config.model.rotator.concurrency)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )

    # -- scheduling -----------------------------------------------------------------------------------------

    def _due_times(self) -> dict[str, datetime]:
        now = datetime.now(UTC)
        due: dict[str, datetime] = {}
        overdue: list[str] = []
        for plan in self.config.plans:
            if not plan.enabled:
                continue
            last = self.workspace.journal.last_success(plan.id)
            when = next_due(plan.parsed_schedule, last.started_at if last else None, now)
            if when is None:
                continue
            if when <= now:
                overdue.append(plan.id)
            else:
                due[plan.id] = when
        due.update(spread_catch_up(overdue, now))
        return due

    def _arm(self, plan_id: str, when: datetime) -> None:
        plan = self.config.plan(plan_id)
        start = place_in_window(when, plan.parsed_window)
        self.scheduler.add_job(
            self._fire,
            DateTrigger(run_date=start, timezone=UTC),
            args=[plan_id],
            id=plan_id,
            name=plan_id,
            replace_existing=True,
        )
        log.debug("plan armed", plan=plan_id, at=start.isoformat())

    def schedule_all(self) -> None:
        wanted = self._due_times()
        for job in self.scheduler.get_jobs():
            if job.id != SWEEP_JOB and job.id not in wanted:
                job.remove()  # the plan was removed or made manual
        for plan_id, when in wanted.items():
            self._arm(plan_id, when)
        log.info("plans scheduled", scheduled=len(wanted), plans=len(self.config.plans))

    # -- jobs -----------------------------------------------------------------------------------------------

    def _fire(self, plan_id: str) -> None:
        if self.stopping.is_set():
            return
        try:
            plan = self.config.plan(plan_id)
            bp = self.workspace.bind(plan)
            outcome = self.runner.rotate(bp, trigger=Trigger.SCHEDULE, operator="daemon")
            ok = outcome.ok
            if not ok:
                log.error("scheduled rotation failed", plan=plan_id, outcome=outcome.outcome, error=outcome.error)
        except PlanBusy as exc:
            log.info("plan busy; will look again", plan=plan_id, detail=str(exc))
            ok = False
        except Exception as exc:
            log.error("scheduled rotation failed", plan=plan_id, error=describe(exc))
            ok = False
        if self.stopping.is_set():
            return
        self._rearm_after(plan_id, ok)

    def _rearm_after(self, plan_id: str, ok: bool) -> None:
        now = datetime.now(UTC)
        if ok:
            self._failures.pop(plan_id, None)
            plan = self.config.plan(plan_id)
            last = self.workspace.journal.last_success(plan_id)
            when = next_due(plan.parsed_schedule, last.started_at if last else now, now)
            if when is not None:
                self._arm(plan_id, max(when, now))
            return
        failures = self._failures[plan_id] = self._failures.get(plan_id, 0) + 1
        delay = min(RETRY_AFTER_FAILURE * (2 ** (failures - 1)), timedelta(hours=6))
        self.scheduler.add_job(
            self._fire,
            DateTrigger(run_date=now + delay, timezone=UTC),
            args=[plan_id],
            id=plan_id,
            name=plan_id,
            replace_existing=True,
        )

    def sweep_revokes(self) -> None:
        now = datetime.now(UTC)
        due_plans = {
            r.plan_id
            for r in self.workspace.journal.runs_in_state(RunState.AWAITING_REVOKE)
            if r.revoke_due_at is None or r.revoke_due_at <= now
        }
        for plan_id in sorted(due_plans):
            try:
                plan = self.config.plan(plan_id)
            except RotatorError:
                continue  # removed from the config; its history stays
            try:
                self.runner.revoke_due(self.workspace.bind(plan))
            except PlanBusy:
                continue  # a run holds the plan; next sweep
            except Exception as exc:
                log.error("revoke sweep failed", plan=plan_id, error=describe(exc))

    def resume_interrupted(self) -> None:
        open_plans = {
            r.plan_id
            for r in self.workspace.journal.runs_in_state(RunState.RUNNING, RunState.ROLLING_BACK, RunState.STUCK)
        }
        for plan_id in sorted(open_plans):
            try:
                outcomes = self.runner.resume(self.workspace.bind(self.config.plan(plan_id)))
                for outcome in outcomes:
                    log.warning("interrupted run settled", plan=plan_id, run=outcome.run_id, outcome=outcome.outcome)
            except PlanBusy:
                log.info("interrupted run is held by a live process; its lease decides", plan=plan_id)
            except Exception as exc:
                log.error("could not resume interrupted run", plan=plan_id, error=describe(exc))

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
        self.runner = self.workspace.runner()
        self.schedule_all()
        log.info("config reloaded", plans=len(config.plans))
        del old  # components of the old config close with it; runs in flight keep their own references

    def run(self) -> int:
        log.info("daemon starting", config=str(self.config.path), plans=len(self.config.plans))
        self.workspace.check_components()
        self.resume_interrupted()
        self.scheduler.start()
        self.schedule_all()
        self.scheduler.add_job(
            self.sweep_revokes,
            IntervalTrigger(seconds=self.config.model.rotator.revoke_sweep_seconds, timezone=UTC),
            id=SWEEP_JOB,
            name="revoke sweep",
            replace_existing=True,
            next_run_time=datetime.now(UTC),
        )
        log.info("daemon running")
        while not self.stopping.is_set():
            if self.reload_requested.wait(timeout=0.5):
                self.reload_requested.clear()
                self.reload()
        log.info("daemon stopping: waiting for runs in flight")
        self.scheduler.shutdown(wait=True)
        self.workspace.close()
        log.info("daemon stopped")
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
    started = time.monotonic()
    code = daemon.run()
    log.debug("daemon uptime", seconds=round(time.monotonic() - started, 1))
    return code
