"""The long-running service: the plan scheduler (rotator.scheduler, the one owner of APScheduler) fires each plan
when due, and the daemon plans its next start from the journal when its run ends; a periodic sweep resumes
interrupted runs (this daemon's after a restart, or another daemon's once its lease is free), revokes PREVIOUS
when due and retries failed notifications; /healthz and /metrics are served when `metrics_address` is set.

Several daemons may share one PostgreSQL journal. The journal, not any daemon, is the memory: each daemon
computes the same due times from it, fires each plan at its own (jittered) moment, and the run checks under the
plan's lease that the plan is still due (`Runner.rotate(still_due=...)`), so each due time rotates a plan once.
A failed run's retry time is computed from the journal too (backoff by consecutive failures), so all daemons
agree on it.

Signals: SIGTERM and SIGINT stop it: no new run starts, runs in flight pause at the next safe step boundary
(see Runner.forward), their leases are released and they stay open for `resume` or another daemon; SIGHUP
reloads the config (schedule edits take effect, removed plans stop; an invalid config is refused and logged).

A reload opens the new config's components (a _Generation: journal, stores, plugins, notifiers, runner) before it
retires the old ones, and the old ones are closed when the last job that took them ends: a run in flight finishes
on what it started with, and 50 reloads hold as many connections and files as one
(tests/integration/test_daemon_reload.py).

Manual plans (plugin "manual") are never fired: each sweep sends the reminders that are due (rotator/reminders.py).
With `[rotator.leak_reports]`, a signed leak endpoint (rotator/leak_reports.py) matches reports against the current
config and rotates what leaked with revoke-now, on components taken like any job's.
"""

from __future__ import annotations

import functools
import random
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any

from rotator.config import Config, PlanConfig, load_config
from rotator.engine.runner import BoundPlan, Runner, RunOutcome, ShutdownRequested
from rotator.errors import PlanBusy, RotatorError, describe
from rotator.interfaces import Journal
from rotator.leak_reports import LeakContext, LeakReportServer, server_for, workspace_context
from rotator.logs import bound_contextvars, get_logger
from rotator.metrics import HealthServer, JournalCollector, Metrics, health_app
from rotator.model import SUCCESS_EVENTS, NotifyStatus, RunState, Trigger
from rotator.reminders import ReminderSender, sender_for
from rotator.scheduler import PlanScheduler, due_for, due_times, place_in_window
from rotator.workspace import Workspace

log = get_logger("rotator.daemon")
STUCK_RETRY = timedelta(minutes=10)
SWEEP_JOB = "__sweep__"
OPEN = (RunState.RUNNING, RunState.ROLLING_BACK)


class _Generation:
    """What one loaded config opened: its Workspace (journal connections, store clients, plugins, notifiers) and
    the runner over them. Jobs take the current one for as long as they work (`Daemon._components`); a reload
    retires it, and it is closed when the last job that took it lets go."""

    def __init__(self, config: Config, workspace: Workspace, runner: Runner):
        self.config = config
        self.workspace = workspace
        self.runner = runner
        self.users = 0
        self.retired_by = ""  # "reload" or "shutdown" once retired
        self.closed = False

    @functools.cached_property
    def reminders(self) -> ReminderSender | None:
        """The manual plans' reminder sender (None without manual plans), built on first use."""
        return sender_for(self.workspace)

    @property
    def journal(self) -> Journal:
        return self.workspace.journal


def _open_generation(config: Config, stop: threading.Event) -> tuple[_Generation, list[str]]:
    """Build and check the config's components and open its journal; on any failure, close what was opened."""
    workspace = Workspace(config)
    try:
        warnings = workspace.check_components()
        runner = workspace.runner(stop=stop)  # opens the journal: one that cannot be reached fails here, not later
    except BaseException:
        workspace.close()
        raise
    return _Generation(config, workspace, runner), warnings


class Daemon:
    def __init__(self, config: Config):
        self.stopping = threading.Event()
        self.reload_requested = threading.Event()
        self._generation_lock = threading.Lock()
        workspace = Workspace(config)
        self._generation = _Generation(config, workspace, workspace.runner(stop=self.stopping))
        self._stuck_tried: dict[str, datetime] = {}
        self._last_sweep: float | None = None
        self._sweep_lock = threading.Lock()
        self.scheduler = PlanScheduler(self._fire, workers=config.model.rotator.concurrency)
        self.metrics = Metrics(
            JournalCollector(
                journal=self._journal_in_use,
                plan_ids=lambda: [p.id for p in self.config.plans],
                next_due=self._next_due_times,
            )
        )
        self.http: HealthServer | None = None
        self.leak_endpoint: LeakReportServer | None = None
        self._leak_settings: object = None  # [rotator.leak_reports] as the endpoint was started with
        self._http_address: tuple[str, int] | None = None  # as configured (port 0: any free one)

    # -- the current config's components --------------------------------------------------------------------

    @property
    def config(self) -> Config:
        return self._generation.config

    @property
    def workspace(self) -> Workspace:
        return self._generation.workspace

    @property
    def runner(self) -> Runner:
        return self._generation.runner

    @property
    def journal(self) -> Journal:
        return self._generation.journal

    @contextmanager
    def _components(self) -> Iterator[_Generation]:
        """The current config's components, kept open until the caller is done, even if a reload retires them
        meanwhile: taken under the lock that a reload swaps them under, so nobody takes one being closed."""
        with self._generation_lock:
            generation = self._generation
            generation.users += 1
        try:
            yield generation
        finally:
            self._let_go(generation)

    @contextmanager
    def _journal_in_use(self) -> Iterator[Journal]:
        with self._components() as generation:
            yield generation.journal

    def _let_go(self, generation: _Generation) -> None:
        with self._generation_lock:
            generation.users -= 1
            close = bool(generation.retired_by) and generation.users == 0 and not generation.closed
            if close:
                generation.closed = True
        if close:
            self._close(generation)

    def _retire(self, generation: _Generation, by: str) -> None:
        """No new job takes `generation`; it is closed now, or when the last job using it ends."""
        with self._generation_lock:
            generation.retired_by = by
            generation.users += 1  # held for the moment, so that the close happens in _let_go, exactly once
        self._let_go(generation)

    def _close(self, generation: _Generation) -> None:
        try:
            generation.workspace.close()
        except Exception as exc:  # a component that fails to close must not take the daemon down
            log.error("closing a config's components failed", after=generation.retired_by, error=describe(exc))
            return
        log.info("config's components closed", after=generation.retired_by, plans=len(generation.config.plans))

    def _next_due_times(self) -> dict[str, datetime | None]:
        """Every plan's next due time for /metrics: the scheduler's planned starts, and manual plans' due dates."""
        due: dict[str, datetime | None] = dict(self.scheduler.planned())
        with self._components() as generation:
            sender = generation.reminders
            if sender is not None:
                due.update({plan_id: state.due_at for plan_id, state in sender.states().items()})
        return due

    # -- scheduling -----------------------------------------------------------------------------------------

    def schedule_all(self) -> None:
        started = time.monotonic()
        with self._components() as generation:
            config = generation.config
            wanted = due_times(
                generation.journal,
                config.plans,
                datetime.now(UTC),
                catch_up_cap=config.model.rotator.catch_up_spread_seconds,
            )
            plans = len(config.plans)
        self.scheduler.replace(wanted)
        log.info(
            "plans scheduled",
            scheduled=len(wanted),
            armed_now=self.scheduler.armed_count,
            plans=plans,
            seconds=round(time.monotonic() - started, 3),
        )

    def _rearm(self, plan_id: str, *, soon: bool = False) -> None:
        """Arm the plan's next start from the journal (after its run, or after another daemon's), as the current
        config has it: a run that began before a reload is re-armed by the reloaded config."""
        with self._components() as generation:
            try:
                plan = generation.config.plan(plan_id)
            except RotatorError:
                self.scheduler.unplan(plan_id)
                return  # removed by a reload
            now = datetime.now(UTC)
            if soon:  # busy elsewhere: look again shortly; the due check decides then
                self.scheduler.plan(plan_id, now + timedelta(seconds=random.uniform(5, 30)))
                return
            when = due_for(generation.journal, plan, now)
        if when is None:
            self.scheduler.unplan(plan_id)
            return
        self.scheduler.plan(plan_id, place_in_window(max(when, now), plan.parsed_window))

    # -- jobs -----------------------------------------------------------------------------------------------

    def _fire(self, plan_id: str) -> None:
        if self.stopping.is_set():
            return
        with self._components() as generation:
            busy = self._rotate(generation, plan_id)
        if busy is None or self.stopping.is_set():
            return
        try:
            self._rearm(plan_id, soon=busy)
        except Exception as exc:
            # The journal cannot tell the next due time (an outage): look again in a minute, never at once.
            log.error("cannot re-arm the plan; trying again in a minute", plan=plan_id, error=describe(exc))
            self.scheduler.plan(plan_id, datetime.now(UTC) + timedelta(seconds=random.uniform(45, 75)))

    def _rotate(self, generation: _Generation, plan_id: str) -> bool | None:
        """The scheduled run of `plan_id` on these components. True: another run holds the plan; None: paused for
        shutdown (not re-armed); False: done, whatever its outcome."""
        journal, runner = generation.journal, generation.runner
        try:
            plan = generation.config.plan(plan_id)

            def still_due() -> bool:
                when = due_for(journal, plan, datetime.now(UTC))
                return when is not None and when <= datetime.now(UTC) + timedelta(seconds=1)

            try:
                bp = generation.workspace.bind(plan)
            except Exception as exc:
                # The plan cannot even be set up (its store's key missing, a state directory left empty): record
                # it as a failed run, so that the schedule backs off from it (never a hot loop), and status and
                # history say why.
                outcome = self._could_not_start(generation, plan, exc)
            else:
                outcome = runner.rotate(bp, trigger=Trigger.SCHEDULE, operator="daemon", still_due=still_due)
            self.metrics.observe(outcome, Trigger.SCHEDULE.value)
            if outcome.outcome == "not-due":
                log.info("plan rotated meanwhile; re-armed from the journal", plan=plan_id)
            elif not outcome.ok and outcome.outcome != RunState.FAILED.value:  # a failed start logged itself
                log.error("scheduled rotation failed", plan=plan_id, outcome=outcome.outcome, error=outcome.error)
        except PlanBusy as exc:
            log.info("plan busy; will look again", plan=plan_id, detail=str(exc))
            return True
        except ShutdownRequested:
            log.warning("run paused for shutdown; it stays open for resume", plan=plan_id)
            return None
        except Exception as exc:
            log.error("scheduled rotation failed", plan=plan_id, error=describe(exc))
        return False

    def _could_not_start(self, generation: _Generation, plan: PlanConfig, error: BaseException) -> RunOutcome:
        """Journal a scheduled run that could not be set up as failed (and alert whoever subscribed)."""
        workspace, config = generation.workspace, generation.config
        notifiers = []
        for name in plan.notify:
            try:
                notifiers.append((name, workspace.notifier(name)))
            except Exception as exc:  # the alert goes to the others; this one's fault is in the same log line
                log.error("notifier cannot be loaded for an alert", plan=plan.id, notifier=name, error=describe(exc))
        events = {name: config.model.notifiers[name].event_kinds for name in plan.notify}
        with bound_contextvars(plan=plan.id):
            return generation.runner.fail_to_start(
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
            with self._components() as generation:
                self._resume_open(generation, log_level="warning")
                self._revoke_due(generation)
                self._retry_notifications(generation)
                self._remind(generation)
        finally:
            self._last_sweep = time.monotonic()
            self._sweep_lock.release()

    def _remind(self, generation: _Generation) -> None:
        """Send the manual plans' reminders that are due; a failure is logged, never stops the sweep."""
        try:
            sender = generation.reminders
            if sender is not None and not self.stopping.is_set():
                sender.tick()
        except Exception as exc:
            log.error("reminders failed; tried again next sweep", error=describe(exc))

    def _each(
        self,
        generation: _Generation,
        plan_ids: Iterable[str],
        action: str,
        work: Callable[[BoundPlan], list[RunOutcome]],
    ) -> None:
        for plan_id in sorted(set(plan_ids)):
            if self.stopping.is_set():
                return
            try:
                plan = generation.config.plan(plan_id)
            except RotatorError:
                continue  # removed from the config; its history stays
            try:
                for outcome in work(generation.workspace.bind(plan)):
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

    def _resume_open(self, generation: _Generation, log_level: str = "warning") -> None:
        now = datetime.now(UTC)
        journal = generation.journal
        held = journal.live_leases()
        candidates = []
        for record in journal.runs_in_state(*OPEN, RunState.STUCK):
            if record.plan_id in held:
                continue  # its holder is alive (here or elsewhere, lease not expired)
            if record.state is RunState.STUCK:
                tried = self._stuck_tried.get(record.plan_id)
                if tried is not None and now - tried < STUCK_RETRY:
                    continue  # stuck needs an operator; look again now and then, not every tick
                self._stuck_tried[record.plan_id] = now
            candidates.append(record.plan_id)
        if candidates:
            self._each(generation, candidates, "resume", generation.runner.resume)
            for plan_id in set(candidates):
                self._rearm(plan_id)

    def _revoke_due(self, generation: _Generation) -> None:
        now = datetime.now(UTC)
        due = [
            r.plan_id
            for r in generation.journal.runs_in_state(RunState.AWAITING_REVOKE)
            if r.revoke_due_at is None or r.revoke_due_at <= now
        ]
        self._each(generation, due, "revoke", generation.runner.revoke_due)

    def _retry_notifications(self, generation: _Generation) -> None:
        now = datetime.now(UTC)
        due = [
            r.plan_id
            for r in generation.journal.notifications(statuses=(NotifyStatus.FAILED, NotifyStatus.PENDING))
            if r.next_attempt_at is None or r.next_attempt_at <= now
        ]
        self._each(generation, due, "notification retry", generation.runner.retry_notifications)

    # -- health ---------------------------------------------------------------------------------------------

    def health(self) -> tuple[bool, dict[str, Any]]:
        problems: list[str] = []
        with self._components() as generation:
            interval = generation.config.model.rotator.revoke_sweep_seconds
            plans = len(generation.config.plans)
            started = time.monotonic()
            try:
                stuck = len(generation.journal.runs_in_state(RunState.STUCK))
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
            "plans": plans,
            "planned": self.scheduler.planned_count,
            "armed_jobs": self.scheduler.armed_count,
            "stuck_runs": stuck,
            "journal_ms": journal_ms,
            "last_sweep_seconds_ago": sweep_age,
            "stopping": self.stopping.is_set(),
        }
        return not problems, body

    # -- lifecycle ------------------------------------------------------------------------------------------

    def reload(self) -> None:
        """Load the config again and switch to it: the new components are opened (and checked) first, so a config
        that is invalid, or whose journal cannot be reached, is refused and the old one keeps working. The old
        components close once no job uses them."""
        try:
            config = load_config(self.config.path)
            new, warnings = _open_generation(config, self.stopping)
        except Exception as exc:  # whatever the new config does wrong, the daemon keeps running the old one
            log.error("reload refused: the new config is invalid; keeping the old one", error=describe(exc))
            return
        for warning in warnings:
            log.warning("config warning", warning=warning)
        self._move_http(config)
        self._move_leak_endpoint(config)
        with self._generation_lock:
            old, self._generation = self._generation, new
        try:
            self.schedule_all()
        except Exception as exc:  # the journal went away between opening and scheduling: the next reload retries
            log.error("reloaded config not scheduled; the previous schedule stays", error=describe(exc))
        log.info("config reloaded", plans=len(config.plans))
        self._retire(old, by="reload")

    def _move_http(self, config: Config) -> None:
        """Serve /healthz and /metrics where the reloaded config says: the new address is bound before the old
        one is let go (a refused bind keeps the old one, and says so)."""
        address = config.model.rotator.metrics_host_port
        if address == self._http_address:
            return
        server = None
        if address is not None:
            try:
                server = HealthServer(*address, health_app(self.metrics, self.health))
            except OSError as exc:
                log.error("cannot serve /metrics at the reloaded address; keeping the old one", error=describe(exc))
                return
            server.start()
        if self.http is not None:
            self.http.stop()
        self.http, self._http_address = server, address

    def _leak_context(self) -> LeakContext:
        """The leak endpoint's view of the current config; its rotations take the components as a job does."""
        with self._components() as generation:
            matched = workspace_context(generation.workspace, generation.runner)

        def rotate(plan_ids: list[str], reasons: dict[str, str]) -> None:
            with self._components() as current:
                workspace_context(current.workspace, current.runner).rotate(plan_ids, reasons)

        return LeakContext(matched.journal, matched.fingerprint_key, rotate, matched.is_manual)

    def _start_leak_endpoint(self, config: Config) -> LeakReportServer | None:
        """The endpoint `[rotator.leak_reports]` asks for, bound and started (ConfigError: a key too short or
        missing, no fingerprint key, a port that cannot be bound)."""
        server = server_for(config, self._leak_context)
        if server is not None:
            workspace_context(self.workspace, self.runner)  # no fingerprint key: refuse now, not at the first report
            server.start()
        return server

    def _move_leak_endpoint(self, config: Config) -> None:
        """A reload keeps the endpoint when its settings did not change (it reads the new config per report), and
        replaces it when they did; a replacement that fails keeps the old one."""
        settings = config.model.rotator.leak_reports
        if settings == self._leak_settings:
            return
        try:
            server = self._start_leak_endpoint(config) if settings is not None else None
        except Exception as exc:
            log.error("leak endpoint not moved; keeping the old one", error=describe(exc))
            return
        if self.leak_endpoint is not None:
            self.leak_endpoint.close(wait_seconds=0)  # its rotations hold their own components and finish
        self.leak_endpoint, self._leak_settings = server, settings

    def start(self) -> None:
        """Everything but the wait loop: check the config, start serving, resume, schedule (for tests/benches)."""
        started = time.monotonic()
        log.info("daemon starting", config=str(self.config.path), plans=len(self.config.plans))
        for warning in self.workspace.check_components():
            log.warning("config warning", warning=warning)
        address = self.config.model.rotator.metrics_host_port
        if address is not None:  # a port that cannot be bound fails the start (a reload keeps the old one instead)
            self.http = HealthServer(*address, health_app(self.metrics, self.health))
            self.http.start()
            self._http_address = address
        self.leak_endpoint = self._start_leak_endpoint(self.config)
        self._leak_settings = self.config.model.rotator.leak_reports
        with self._components() as generation:
            self._resume_open(generation)
        self.schedule_all()
        self.scheduler.every(SWEEP_JOB, self.config.model.rotator.revoke_sweep_seconds, self.sweep, first_now=True)
        self.scheduler.start()
        log.info("daemon running", startup_seconds=round(time.monotonic() - started, 3))

    def shutdown(self) -> None:
        log.info("daemon stopping: runs in flight pause at their next safe step")
        self.stopping.set()
        self.scheduler.shutdown(wait=True)  # every job has ended: only a scrape may still hold the components
        if self.http is not None:
            self.http.stop()
        if self.leak_endpoint is not None:
            self.leak_endpoint.close(wait_seconds=30)  # rotations in flight pause at their next safe step
        self._retire(self._generation, by="shutdown")
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
