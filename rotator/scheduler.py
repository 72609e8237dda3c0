"""When plans are due, and the daemon's APScheduler: this module owns APScheduler (rotator/schedules.py only
borrows its cron trigger, inside a function, to check cron expressions).

Due times: from the journal alone (the last promoted run, the failed runs since), with windows, jitter and the
catch-up spread after downtime (`due_time`, `due_times`). The journal, not the scheduler, is the memory: a rotation
made by `rotate-now` or by another daemon moves the next due time too, and a restart computes the same due times.

Jobs (`PlanScheduler`): each plan's next start is planned; only starts within ARM_HORIZON hold an APScheduler job
(a one-shot date trigger), and a tick every ARM_TICK gives the next ones theirs. 10,000 plans of `rate(30 days)`
keep a handful of jobs instead of 10,000 (each costs ~0.2 ms to create and a few KB), and a start-up arms only
what is near. The daemon re-plans a plan from the journal when its run ends.
"""

from __future__ import annotations

import functools
import random
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from rotator.engine.states import FAILED_STATES, MAX_RETRY_DELAY, RETRY_AFTER_FAILURE, failure_backoff
from rotator.interfaces import Journal
from rotator.model import RunRecord
from rotator.schedules import Schedule, Window

if TYPE_CHECKING:
    from rotator.config import PlanConfig

FAILED = FAILED_STATES
__all__ = [
    "ARM_HORIZON",
    "ARM_TICK",
    "FAILED",
    "MAX_RETRY_DELAY",
    "RETRY_AFTER_FAILURE",
    "PlanScheduler",
    "due_time",
    "due_times",
    "failure_backoff",
    "next_due",
]
ARM_HORIZON = timedelta(minutes=5)
ARM_TICK = timedelta(minutes=1)
ARM_JOB = "__arm__"
_JITTER = random.Random()  # start times inside a window; not a secret, so no need for `secrets`


def next_due(schedule: Schedule, last_rotation: datetime | None, now: datetime) -> datetime | None:
    """When the plan is next due: None for manual; `now` if it never rotated; else after the last rotation."""
    if schedule.kind == "manual":
        return None
    if last_rotation is None:
        return now
    if schedule.kind == "rate":
        assert schedule.interval is not None
        return last_rotation + schedule.interval
    from apscheduler.triggers.cron import CronTrigger  # 20 ms of import: only cron schedules need it (`status`)

    trigger = CronTrigger(timezone=UTC, **schedule.cron)
    fire: datetime | None = trigger.get_next_fire_time(None, last_rotation + timedelta(seconds=1))
    return fire


def place_in_window(due: datetime, window: Window | None, rng: random.Random | None = None) -> datetime:
    """A random moment in the first window at or after `due` (or `due` itself without a window)."""
    if window is None:
        return due
    rng = rng or _JITTER
    day = due.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    for offset in (-1, 0, 1):
        start = day + timedelta(days=offset, hours=window.start.hour, minutes=window.start.minute)
        end = start + timedelta(seconds=window.seconds)
        if end <= due:
            continue
        begin = max(start, due)
        return begin + timedelta(seconds=rng.uniform(0, (end - begin).total_seconds()))
    raise AssertionError("unreachable: a daily window recurs within two days")  # pragma: no cover


def spread_catch_up(
    overdue: list[str], now: datetime, seconds_each: float = 0.5, cap: float = 300.0
) -> dict[str, datetime]:
    """Start times for plans that fell due while the daemon was down: spread evenly so that a restart never
    fires hundreds of rotations at once (at most `cap` seconds of spreading)."""
    if not overdue:
        return {}
    span = min(cap, seconds_each * len(overdue))
    step = span / len(overdue)
    return {plan_id: now + timedelta(seconds=index * step) for index, plan_id in enumerate(overdue)}


def due_time(
    plan: PlanConfig,
    latest: RunRecord | None,
    success: RunRecord | None,
    now: datetime,
    failures: Callable[[], int] = lambda: 1,
) -> datetime | None:
    """When `plan` is next due, from the journal alone: the schedule after the last promoted run; after a failed
    run (rolled back or stuck, newer than the last success), not before the failure backoff. None: never."""
    if not plan.enabled or plan.is_manual:  # a manual plan is reminded of (rotator/reminders.py), never run
        return None
    base = next_due(plan.parsed_schedule, success.started_at if success else None, now)
    if base is None:
        return None
    failed_since_success = (
        latest is not None and latest.state in FAILED and (success is None or latest.started_at > success.started_at)
    )
    if failed_since_success and latest is not None:
        ended = latest.ended_at or latest.started_at
        return max(base, ended + failure_backoff(failures()))
    return base


def failures_in_a_row(journal: Journal, plan_id: str) -> int:
    """The plan's newest failed runs in a row (at least 1: asked only when its newest run failed), at most 12."""
    count = 0
    for record in journal.runs(plan_id, limit=12):
        if record.state not in FAILED:
            break
        count += 1
    return max(count, 1)


def due_for(journal: Journal, plan: PlanConfig, now: datetime) -> datetime | None:
    """One plan's next due time, from the journal (two or three queries)."""
    newest = journal.runs(plan.id, limit=1)
    return due_time(
        plan,
        newest[0] if newest else None,
        journal.last_success(plan.id),
        now,
        lambda: failures_in_a_row(journal, plan.id),
    )


def _streak(streaks: dict[str, int], plan_id: str) -> int:
    """The plan's failed runs in a row, for the backoff (asked only when its newest run failed: at least 1)."""
    return max(streaks.get(plan_id, 0), 1)


def due_times(
    journal: Journal, plans: Iterable[PlanConfig], now: datetime, *, catch_up_cap: float
) -> dict[str, datetime]:
    """Every plan's next start, in three journal queries however many plans (and however many are failing):
    inside its window; the overdue ones spread over at most `catch_up_cap` seconds, in a random order."""
    latest = journal.latest_runs()
    successes = journal.last_successes()
    streaks = journal.failure_streaks()
    due: dict[str, datetime] = {}
    overdue: list[PlanConfig] = []
    for plan in plans:
        when = due_time(
            plan, latest.get(plan.id), successes.get(plan.id), now, functools.partial(_streak, streaks, plan.id)
        )
        if when is None:
            continue
        if when <= now:
            overdue.append(plan)
        else:
            due[plan.id] = place_in_window(when, plan.parsed_window)
    # Each daemon shuffles the catch-up order, so that daemons sharing a journal do not all reach for the same
    # plan at the same moment after a common outage.
    random.shuffle(overdue)
    windows = {plan.id: plan.parsed_window for plan in overdue}
    for plan_id, when in spread_catch_up([p.id for p in overdue], now, cap=catch_up_cap).items():
        window = windows[plan_id]
        due[plan_id] = when if window is None else place_in_window(when, window)
    return due


class PlanScheduler:
    """The daemon's APScheduler, and which plan starts when: `plan(plan_id, start)` plans a start (a job now if
    it is within ARM_HORIZON, else the arming tick gives it one later), `unplan` forgets it, `replace` makes the
    planned starts exactly a new set (a reload), `every` adds a periodic job (the sweep). When a plan's job fires,
    `fire(plan_id)` runs on one of `workers` threads; the caller plans its next start from the journal."""

    def __init__(self, fire: Callable[[str], None], *, workers: int) -> None:
        # Imported here, not at the top: the CLI's `status` imports this module for due times and never
        # schedules anything (the background scheduler and its thread pool cost ~15 ms to import).
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.schedulers.background import BackgroundScheduler

        self._fire = fire
        self._scheduler = BackgroundScheduler(
            timezone=UTC,
            executors={"default": ThreadPoolExecutor(max_workers=workers)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        self._lock = threading.Lock()
        self._planned: dict[str, datetime] = {}  # plan id -> its next start (armed, or within the horizon later)
        self._armed: set[str] = set()  # plans that hold an APScheduler job now

    # -- what is planned ------------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return bool(self._scheduler.running)

    def planned(self) -> dict[str, datetime]:
        """A copy of every planned start (for /metrics' next-due gauge and /healthz)."""
        with self._lock:
            return dict(self._planned)

    @property
    def planned_count(self) -> int:
        return len(self._planned)

    @property
    def armed_count(self) -> int:
        return len(self._armed)

    def job_ids(self) -> set[str]:
        """The APScheduler jobs that exist now: the armed plans, and the periodic jobs."""
        return {job.id for job in self._scheduler.get_jobs()}

    # -- planning -------------------------------------------------------------------------------------------

    def plan(self, plan_id: str, start: datetime) -> None:
        """Plan the next start; give it an APScheduler job now if it is within the horizon."""
        with self._lock:
            self._planned[plan_id] = start
            near = start <= datetime.now(UTC) + ARM_HORIZON
            if near:
                self._armed.add(plan_id)
            elif plan_id in self._armed:
                self._armed.discard(plan_id)
                self._remove_job(plan_id)
        if near:
            self._add_job(plan_id, start)

    def unplan(self, plan_id: str) -> None:
        with self._lock:
            self._planned.pop(plan_id, None)
            had_job = plan_id in self._armed
            self._armed.discard(plan_id)
        if had_job:
            self._remove_job(plan_id)

    def replace(self, wanted: dict[str, datetime]) -> None:
        """Plan exactly `wanted`: plans not in it (removed, disabled or made manual by a reload) are forgotten."""
        for plan_id in set(self.planned()) - set(wanted):
            self.unplan(plan_id)
        for plan_id, start in wanted.items():
            self.plan(plan_id, start)

    def arm_due(self) -> None:
        """The arming tick: give a job to every planned start that came within the horizon."""
        horizon = datetime.now(UTC) + ARM_HORIZON
        with self._lock:
            near = [(p, t) for p, t in self._planned.items() if p not in self._armed and t <= horizon]
            self._armed.update(p for p, _ in near)
        for plan_id, start in near:
            self._add_job(plan_id, start)

    def _add_job(self, plan_id: str, start: datetime) -> None:
        from apscheduler.triggers.date import DateTrigger

        self._scheduler.add_job(
            self._fired,
            DateTrigger(run_date=start, timezone=UTC),
            args=[plan_id],
            id=plan_id,
            name=plan_id,
            replace_existing=True,
        )

    def _remove_job(self, plan_id: str) -> None:
        job = self._scheduler.get_job(plan_id)
        if job is not None:
            job.remove()

    def _fired(self, plan_id: str) -> None:
        with self._lock:
            self._armed.discard(plan_id)  # a date trigger fires once: its job is gone
        self._fire(plan_id)

    # -- periodic jobs and life cycle ----------------------------------------------------------------------

    def every(self, job_id: str, seconds: float, work: Callable[[], Any], *, first_now: bool = False) -> None:
        """Run `work` every `seconds` on the same threads (first at once with `first_now`, else after `seconds`)."""
        from apscheduler.triggers.interval import IntervalTrigger

        extra: dict[str, Any] = {"next_run_time": datetime.now(UTC)} if first_now else {}
        self._scheduler.add_job(
            work,
            IntervalTrigger(seconds=seconds, timezone=UTC),
            id=job_id,
            name=job_id.strip("_"),
            replace_existing=True,
            **extra,
        )

    def start(self) -> None:
        self.every(ARM_JOB, ARM_TICK.total_seconds(), self.arm_due)
        self._scheduler.start()

    def shutdown(self, *, wait: bool = True) -> None:
        """Stop firing; with `wait`, return once every job in flight has ended."""
        self._scheduler.shutdown(wait=wait)
