"""When plans are due, with APScheduler's triggers; windows and jitter; catch-up after downtime.

Each plan is one APScheduler job with a one-shot date trigger, computed from the journal (the last promoted run)
and re-armed when its run ends. The journal, not the scheduler, is the memory: a rotation made by `rotate-now`
or by another daemon moves the next due time too, and a restart computes the same due times.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from apscheduler.triggers.cron import CronTrigger

from rotator.engine.states import FAILED_STATES, MAX_RETRY_DELAY, RETRY_AFTER_FAILURE, failure_backoff
from rotator.model import RunRecord
from rotator.schedules import Schedule, Window

if TYPE_CHECKING:
    from rotator.config import PlanConfig

FAILED = FAILED_STATES
__all__ = ["FAILED", "MAX_RETRY_DELAY", "RETRY_AFTER_FAILURE", "due_time", "failure_backoff", "next_due"]
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
