"""Schedules, windows and durations (rotator/schedules.py) and the due times the scheduler computes from them
(rotator/scheduler.py): the next due moment of every form (rate, AWS cron with `?`, `L` and `#`, a 5-field
crontab, manual), a window's random start (the jitter), and the failure backoff after failed runs.

Every expected moment is written out by hand from a calendar (January 2026 starts on a Thursday), never computed
by the code under test.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, time, timedelta

import pytest

from rotator.config import PlanConfig
from rotator.engine.states import failure_backoff
from rotator.model import RunRecord, RunState, Trigger
from rotator.scheduler import due_time, next_due, place_in_window
from rotator.schedules import Window, parse_duration, parse_schedule, parse_window

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)  # a Thursday


def at(day: int, hour: int = 0, minute: int = 0, *, month: int = 1, year: int = 2026) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def fires(text: str, after: datetime, count: int = 3) -> list[datetime]:
    """The next `count` due moments of `text`, each after a rotation at the one before."""
    schedule = parse_schedule(text)
    out: list[datetime] = []
    last = after
    for _ in range(count):
        due = next_due(schedule, last, NOW)
        assert due is not None
        out.append(due)
        last = due
    return out


# -- rate ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "interval"),
    [
        ("rate(1 minute)", timedelta(minutes=1)),
        ("rate(5 minutes)", timedelta(minutes=5)),
        ("rate(1 hour)", timedelta(hours=1)),
        ("rate(12 hours)", timedelta(hours=12)),
        ("rate(1 day)", timedelta(days=1)),
        ("rate(30 days)", timedelta(days=30)),
        ("rate(1000 days)", timedelta(days=1000)),
    ],
)
def test_a_rate_is_due_one_interval_after_the_last_rotation(text: str, interval: timedelta) -> None:
    last = at(3, 7, 15)
    assert next_due(parse_schedule(text), last, NOW) == last + interval


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("rate(1 days)", "rate(1 day)"),
        ("rate(2 day)", "rate(2 days)"),
        ("rate(0 days)", "at least 1"),
        ("rate(1001 days)", "longer than 1000 days"),
        ("rate(1 week)", "not a rate"),
    ],
)
def test_a_bad_rate_is_refused_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        parse_schedule(text)


def test_a_plan_that_never_rotated_is_due_now_and_a_manual_one_never() -> None:
    assert next_due(parse_schedule("rate(30 days)"), None, NOW) == NOW
    assert next_due(parse_schedule("cron(0 2 ? * SUN *)"), None, NOW) == NOW
    assert next_due(parse_schedule("manual"), at(1), NOW) is None
    assert next_due(parse_schedule("manual"), None, NOW) is None


# -- AWS cron --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "after", "expected"),
    [
        # every day at 10:00, "?" in day-of-week
        ("cron(0 10 * * ? *)", at(1, 12), [at(2, 10), at(3, 10), at(4, 10)]),
        # Sundays at 02:00; 1 is Sunday in AWS (January 2026: the 4th, 11th, 18th)
        ("cron(0 2 ? * SUN *)", at(1, 12), [at(4, 2), at(11, 2), at(18, 2)]),
        ("cron(0 2 ? * 1 *)", at(1, 12), [at(4, 2), at(11, 2), at(18, 2)]),
        # weekdays at 18:00: Friday the 2nd, then Monday the 5th
        ("cron(0 18 ? * MON-FRI *)", at(1, 19), [at(2, 18), at(5, 18), at(6, 18)]),
        ("cron(0 18 ? * 2-6 *)", at(1, 19), [at(2, 18), at(5, 18), at(6, 18)]),
        # Mondays and Thursdays at 09:30 (a list)
        ("cron(30 9 ? * MON,THU *)", at(1, 12), [at(5, 9, 30), at(8, 9, 30), at(12, 9, 30)]),
        # the 15th of each month, "?" in day-of-week
        ("cron(0 3 15 * ? *)", at(1, 12), [at(15, 3), at(15, 3, month=2), at(15, 3, month=3)]),
        # every 6 hours from midnight (an increment)
        ("cron(0 0/6 * * ? *)", at(1, 12), [at(1, 18), at(2, 0), at(2, 6)]),
        # the last day of the month: L in day-of-month (2026 is no leap year)
        ("cron(0 4 L * ? *)", at(1, 12), [at(31, 4), at(28, 4, month=2), at(31, 4, month=3)]),
        # L alone in day-of-week: the last day of the week, Saturday (January 2026: the 3rd, 10th, 17th)
        ("cron(0 4 ? * L *)", at(1, 12), [at(3, 4), at(10, 4), at(17, 4)]),
        # 6L: the month's last Friday (January 30th, February 27th, March 27th)
        ("cron(0 18 ? * 6L *)", at(1, 12), [at(30, 18), at(27, 18, month=2), at(27, 18, month=3)]),
        ("cron(0 18 ? * FRIL *)", at(1, 12), [at(30, 18), at(27, 18, month=2), at(27, 18, month=3)]),
        # MON#1 and 2#1: the month's first Monday (January 5th, February 2nd, March 2nd)
        ("cron(0 4 ? * MON#1 *)", at(1, 12), [at(5, 4), at(2, 4, month=2), at(2, 4, month=3)]),
        ("cron(0 4 ? * 2#1 *)", at(1, 12), [at(5, 4), at(2, 4, month=2), at(2, 4, month=3)]),
        # 3#2: AWS's own example, the second Tuesday (January 13th, February 10th, March 10th)
        ("cron(0 9 ? * 3#2 *)", at(1, 12), [at(13, 9), at(10, 9, month=2), at(10, 9, month=3)]),
        # the fifth Thursday only exists in some months (January 29th 2026, then April 30th)
        ("cron(0 1 ? * THU#5 *)", at(1, 12), [at(29, 1), at(30, 1, month=4), at(30, 1, month=7)]),
        # a year field: only in 2027
        ("cron(0 0 1 1 ? 2027)", at(1, 12), [at(1, 0, year=2027)]),
    ],
)
def test_aws_cron_is_due_at_its_next_match(text: str, after: datetime, expected: list[datetime]) -> None:
    assert fires(text, after, len(expected)) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("cron(0 10 * * * *)", "exactly one of day-of-month and day-of-week"),
        ("cron(0 10 ? * ? *)", "exactly one of day-of-month and day-of-week"),
        ("cron(0 10 15W * ? *)", '"W"'),
        ("cron(0 10 ? * 8 *)", "out of range 1-7"),
        ("cron(0 10 ? * 0 *)", "out of range 1-7"),
        ("cron(0 10 ? * XYZ *)", "unknown day-of-week"),
        ("cron(0 4 ? * MON#6 *)", "N from 1 to 5"),
        ("cron(0 4 ? * MON#0 *)", "N from 1 to 5"),
        ("cron(0 4 ? * 3#1,6#3 *)", "stand alone"),  # AWS's own example of a refused list
        ("cron(0 4 ? * MON,6L *)", "stand alone"),
        ("cron(0 4 ? * 8L *)", "out of range 1-7"),
        ("cron(0 10 30 2 ? *)", "matches no date"),
        ("cron(0 10 1 1 ? 2020)", "matches no date"),
        ("cron(0 10 * * ?)", "6 fields"),
    ],
)
def test_a_bad_aws_cron_is_refused_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason.replace("(", r"\(")):
        parse_schedule(text)


# -- 5-field crontab -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "after", "expected"),
    [
        ("0 2 * * 0", at(1, 12), [at(4, 2), at(11, 2), at(18, 2)]),  # 0 is Sunday
        ("0 2 * * 7", at(1, 12), [at(4, 2), at(11, 2), at(18, 2)]),  # so is 7
        ("0 2 * * sun", at(1, 12), [at(4, 2), at(11, 2), at(18, 2)]),
        ("30 6 * * 1-5", at(2, 7), [at(5, 6, 30), at(6, 6, 30), at(7, 6, 30)]),
        ("0 0 1 * *", at(1, 12), [at(1, 0, month=2), at(1, 0, month=3), at(1, 0, month=4)]),
        ("0 */8 * * *", at(1, 12), [at(1, 16), at(2, 0), at(2, 8)]),
    ],
)
def test_a_crontab_is_due_at_its_next_match(text: str, after: datetime, expected: list[datetime]) -> None:
    assert fires(text, after, len(expected)) == expected


def test_a_crontab_restricting_both_day_fields_is_refused() -> None:
    with pytest.raises(ValueError, match="not both"):
        parse_schedule("0 2 15 * 1")


# -- windows and their jitter ----------------------------------------------------------------------------------


def test_windows_parse_with_their_length() -> None:
    assert parse_window("02:00-04:00") == Window(time(2, 0), time(4, 0))
    assert parse_window("02:00-04:00").seconds == 2 * 3600
    assert parse_window("23:00-01:00").seconds == 2 * 3600  # wraps past midnight
    assert parse_window("00:00-24:00").seconds == 86400
    for bad in ("02:00-02:00", "25:00-26:00", "2-4", "02:60-03:00"):
        with pytest.raises(ValueError):
            parse_window(bad)


def test_a_due_run_starts_inside_the_first_window_at_or_after_it() -> None:
    window = parse_window("02:00-04:00")
    rng = random.Random(7)
    # due before today's window: somewhere in today's window
    for _ in range(50):
        start = place_in_window(at(5, 0, 30), window, rng)
        assert at(5, 2) <= start <= at(5, 4)
    # due inside the window: not before the due moment, not after the window's end
    for _ in range(50):
        start = place_in_window(at(5, 3), window, rng)
        assert at(5, 3) <= start <= at(5, 4)
    # due after today's window: tomorrow's window
    for _ in range(50):
        start = place_in_window(at(5, 5), window, rng)
        assert at(6, 2) <= start <= at(6, 4)
    assert place_in_window(at(5, 5), None) == at(5, 5)  # no window: at once


def test_a_window_past_midnight_takes_the_part_after_midnight_too() -> None:
    window = parse_window("23:00-01:00")
    rng = random.Random(3)
    for _ in range(50):
        start = place_in_window(at(5, 0, 30), window, rng)  # inside the window that began on the 4th
        assert at(5, 0, 30) <= start <= at(5, 1)
    for _ in range(50):
        start = place_in_window(at(5, 12), window, rng)
        assert at(5, 23) <= start <= at(6, 1)


def test_the_start_inside_a_window_is_spread_over_all_of_it() -> None:
    """The jitter: many plans due at one moment start at moments spread over the window, not at its start."""
    window = parse_window("02:00-04:00")
    rng = random.Random(11)
    minutes = [(place_in_window(at(5), window, rng) - at(5, 2)).total_seconds() / 60 for _ in range(400)]
    assert min(minutes) < 10 and max(minutes) > 110  # both ends of the two hours are reached
    quarters = [sum(1 for m in minutes if q * 30 <= m < (q + 1) * 30) for q in range(4)]
    assert all(60 <= count <= 140 for count in quarters), quarters  # about 100 in each half hour


# -- failure backoff, through the scheduler's due time ---------------------------------------------------------


def plan(schedule: str = "rate(1 day)", *, enabled: bool = True) -> PlanConfig:
    return PlanConfig(id="p1", plugin={"type": "fake"}, secret="s", schedule=schedule, enabled=enabled)


def run(state: RunState, started: datetime, ended: datetime | None = None) -> RunRecord:
    return RunRecord(
        run_id=f"r-{started:%d%H%M}",
        plan_id="p1",
        state=state,
        trigger=Trigger.SCHEDULE,
        started_at=started,
        ended_at=ended,
        store="local",
        secret_id="s",
    )


def test_after_a_success_the_plan_is_due_on_its_schedule() -> None:
    success = run(RunState.SUCCEEDED, at(1, 2), at(1, 2, 1))
    assert due_time(plan(), success, success, NOW) == at(2, 2)
    assert due_time(plan("cron(0 18 ? * 6L *)"), success, success, NOW) == at(30, 18)
    assert due_time(plan("manual"), success, success, NOW) is None
    assert due_time(plan(enabled=False), success, success, NOW) is None
    assert due_time(plan(), None, None, NOW) == NOW  # never rotated: due now


@pytest.mark.parametrize(
    ("failures", "backoff"),
    [(1, timedelta(minutes=5)), (2, timedelta(minutes=10)), (3, timedelta(minutes=20)), (8, timedelta(hours=6))],
)
def test_after_failures_in_a_row_the_plan_waits_the_backoff(failures: int, backoff: timedelta) -> None:
    assert failure_backoff(failures) == backoff
    failed = run(RunState.ROLLED_BACK, at(3, 10), at(3, 10, 2))
    # due on the schedule long ago (a success on the 1st, rate(1 day)): the backoff from the failure's end decides
    success = run(RunState.SUCCEEDED, at(1, 2), at(1, 2, 1))
    assert due_time(plan(), failed, success, at(3, 10, 3), lambda: failures) == at(3, 10, 2) + backoff
    # a plan that never succeeded waits the backoff too
    assert due_time(plan(), failed, None, at(3, 10, 3), lambda: failures) == at(3, 10, 2) + backoff


def test_a_schedule_later_than_the_backoff_wins() -> None:
    success = run(RunState.SUCCEEDED, at(3, 2), at(3, 2, 1))
    failed = run(RunState.ROLLED_BACK, at(3, 10), at(3, 10, 2))  # a rotate-now after the success, failed
    assert due_time(plan(), failed, success, at(3, 11), lambda: 1) == at(4, 2)


def test_a_failure_older_than_the_last_success_is_forgotten() -> None:
    failed = run(RunState.ROLLED_BACK, at(1, 2), at(1, 2, 1))
    success = run(RunState.SUCCEEDED, at(1, 3), at(1, 3, 1))
    assert due_time(plan(), success, success, NOW, lambda: 99) == at(2, 3)
    assert due_time(plan(), failed, success, NOW, lambda: 99) == at(2, 3)


def test_a_stuck_run_backs_off_like_a_rolled_back_one() -> None:
    stuck = run(RunState.STUCK, at(3, 10))  # no end time: the backoff counts from its start
    assert due_time(plan(), stuck, None, at(3, 10, 1), lambda: 2) == at(3, 10, 10)


# -- durations -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1h", 3600), ("30m", 1800), ("1h30m", 5400), ("2d", 172800), ("90s", 90), ("0", 0), (45, 45), (1.5, 1.5)],
)
def test_durations(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["1w", "h", "-5", -5, float("inf"), "366d", "1h 30"])
def test_bad_durations_are_refused(text: str | float) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)
