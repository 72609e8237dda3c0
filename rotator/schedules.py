"""Schedule, window and duration syntax, parsed without a scheduler so that `validate` and the Lambda path
stay light. rotator.scheduler turns a parsed Schedule into an APScheduler trigger.

- `rate(N unit)` as AWS: minute(s), hour(s), day(s); singular when N is 1 ("rate(1 day)"), plural otherwise.
- `cron(min hour day-of-month month day-of-week year)` as AWS: exactly one of the two day fields is `?`;
  day-of-week 1-7 is SUN-SAT (or SUN, MON, ...). `L` as AWS documents it: in day-of-month the month's last day;
  alone in day-of-week the week's last day (SAT); after a day (`6L`, `FRIL`) that day's last occurrence in the
  month. `#` is the nth weekday of the month (`MON#1`, `2#1`: the first Monday; N from 1 to 5), one expression
  only, as AWS wants it. `6L` and `MON#1` stand alone in day-of-week (AWS refuses a list with `#`; APScheduler
  treats them as day-of-month expressions, which a list of weekdays would AND, not OR). `W` is refused.
- a 5-field crontab `min hour dom month dow` (dow 0-7, 0 and 7 are Sunday).
- `manual`: only `rotate-now` rotates the plan.

Bounds: a rate of at most 1000 days (Secrets Manager's longest rotation interval), a cron expression that matches
some date from now on (not February 30, not a year gone), a window of some length, durations of at most 365 days.
Every refusal is a ValueError with the reason; the config names the file, the key and the fix.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta

_RATE = re.compile(r"^rate\(\s*(\d+)\s+(minute|minutes|hour|hours|day|days)\s*\)$")
_DURATION_PART = re.compile(r"(\d+)\s*(d|h|m|s)")
MAX_RATE = timedelta(days=1000)  # Secrets Manager's longest rotation interval
MAX_DURATION = timedelta(days=365)  # grace, revoke_deadline, notify_retry_for: a year is already far too long
_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_ORDINALS = {1: "1st", 2: "2nd", 3: "3rd", 4: "4th", 5: "5th"}

SCHEDULE_FIX = (
    'use "rate(30 days)", "rate(1 day)", "cron(0 2 ? * SUN *)" (AWS: min hour dom month dow year, '
    'one day field "?"), a 5-field crontab "0 2 * * 0", or "manual"'
)


@dataclass(frozen=True)
class Schedule:
    text: str
    kind: str  # "rate", "cron" or "manual"
    interval: timedelta | None = None
    cron: dict[str, str] = field(default_factory=dict)  # APScheduler CronTrigger keyword arguments


def _aws_day(token: str) -> str:
    """One AWS day-of-week (1-7 = SUN-SAT, or a name) in APScheduler's words."""
    if token.isdigit():
        number = int(token)
        if not 1 <= number <= 7:
            raise ValueError(f"day-of-week {token} is out of range 1-7 (1 is Sunday in AWS cron)")
        return _DAY_NAMES[number - 1]
    if token.lower() in _DAY_NAMES:
        return token.lower()
    raise ValueError(f"unknown day-of-week {token!r}")


def _aws_dow_item(value: str) -> str:
    """One item of a list of AWS days of the week (a day, a range, or `L` alone: Saturday) for APScheduler's
    day_of_week."""
    if value in ("*", "?"):
        return "*"
    if value == "L":
        return "sat"  # AWS: "L" alone in day-of-week is the last day of the week
    if "-" in value:
        start, _, end = value.partition("-")
        return f"{_aws_day(start)}-{_aws_day(end)}"
    return _aws_day(value)


def _aws_nth_weekday(dow: str) -> str | None:
    """`D#N` (the nth weekday D of the month) or `DL` (its last one) as APScheduler's `day` expression ("1st mon",
    "last fri"), or None when `dow` is neither. Either stands alone in the field."""
    if "#" not in dow and not (dow.endswith("L") and dow != "L"):
        return None
    if "," in dow or "-" in dow:
        raise ValueError(
            f"day-of-week {dow!r}: `#` and `L` after a day stand alone in the field (AWS refuses a list with `#`)"
        )
    if "#" in dow:
        weekday, _, nth = dow.partition("#")
        if not nth.isdigit() or int(nth) not in _ORDINALS:
            raise ValueError(f"bad nth weekday {dow!r}: use DAY#N with N from 1 to 5")
        return f"{_ORDINALS[int(nth)]} {_aws_day(weekday)}"
    return f"last {_aws_day(dow[:-1])}"


def _crontab_dow(value: str) -> str:
    def day(token: str) -> str:
        if token.isdigit():
            number = int(token)
            if not 0 <= number <= 7:
                raise ValueError(f"day-of-week {token} is out of range 0-7")
            return _DAY_NAMES[number % 7]
        if token.lower() in _DAY_NAMES:
            return token.lower()
        raise ValueError(f"unknown day-of-week {token!r}")

    if value == "*":
        return "*"
    step = ""
    if "/" in value:
        value, _, step = value.partition("/")
        step = f"/{step}"
    if "-" in value:
        start, _, end = value.partition("-")
        return f"{day(start)}-{day(end)}{step}"
    return day(value) + step


def _cron_kwargs(
    minute: str, hour: str, dom: str, month: str, dow: str, year: str | None, *, aws: bool
) -> dict[str, str]:
    if aws:
        if (dom == "?") == (dow == "?"):
            raise ValueError('AWS cron needs "?" in exactly one of day-of-month and day-of-week')
        if "W" in dom:
            raise ValueError('the "W" (nearest weekday) form is not supported')
        nth_weekday = _aws_nth_weekday(dow)
        if nth_weekday is not None:  # APScheduler spells "the nth weekday of the month" in its day field
            dom, dow = nth_weekday, "*"
        else:
            dom = "last" if dom == "L" else ("*" if dom == "?" else dom)
            dow = ",".join(_aws_dow_item(item) for item in dow.split(",")) if dow != "?" else "*"
    else:
        if dom != "*" and dow != "*":
            raise ValueError(
                "restrict either day-of-month or day-of-week, not both (crontab ORs them; this scheduler cannot)"
            )
        dow = ",".join(_crontab_dow(item) for item in dow.split(","))
    kwargs = {"minute": minute, "hour": hour, "day": dom, "month": month, "day_of_week": dow}
    if year and year not in ("*", "?"):
        kwargs["year"] = year
    return kwargs


@functools.lru_cache(maxsize=4096)
def parse_schedule(text: str) -> Schedule:
    """Parse a schedule; ValueError with the reason otherwise (the caller adds file, key and fix)."""
    spec = text.strip()
    if spec == "manual":
        return Schedule(spec, "manual")
    rate = _RATE.match(spec)
    if rate:
        number, unit = int(rate.group(1)), rate.group(2)
        if number < 1:
            raise ValueError("a rate must be at least 1")
        if (number == 1) != (not unit.endswith("s")):
            right = unit.rstrip("s") if number == 1 else unit + ("" if unit.endswith("s") else "s")
            raise ValueError(f"AWS wants rate({number} {right})")
        seconds = {"minute": 60, "hour": 3600, "day": 86400}[unit.rstrip("s")]
        if number * seconds > MAX_RATE.total_seconds():
            raise ValueError(f"rate({number} {unit}) is longer than {MAX_RATE.days} days (Secrets Manager's longest)")
        return Schedule(spec, "rate", interval=timedelta(seconds=number * seconds))
    if spec.startswith("cron(") and spec.endswith(")"):
        fields = spec[5:-1].split()
        if len(fields) != 6:
            raise ValueError(f"AWS cron has 6 fields (min hour dom month dow year), this has {len(fields)}")
        kwargs = _cron_kwargs(*fields, aws=True)
    else:
        fields = spec.split()
        if len(fields) != 5:
            raise ValueError("not a rate(...), cron(...), 5-field crontab or manual")
        minute, hour, dom, month, dow = fields
        kwargs = _cron_kwargs(minute, hour, dom, month, dow, None, aws=False)
    _check_cron(kwargs)
    return Schedule(spec, "cron", cron=kwargs)


def _check_cron(kwargs: dict[str, str]) -> None:
    from apscheduler.triggers.cron import CronTrigger

    try:
        trigger = CronTrigger(timezone="UTC", **kwargs)
    except ValueError as exc:
        raise ValueError(str(exc)) from None
    # A day that no month has (February 30, April 31) or a year gone: the plan would never rotate.
    if trigger.get_next_fire_time(None, datetime.now(UTC)) is None:
        raise ValueError(
            "this cron expression matches no date from now on (a day the month does not have, or a past year)"
        )


@dataclass(frozen=True)
class Window:
    """A daily UTC window in which a due run starts, at a random moment inside it."""

    start: time
    end: time

    @property
    def seconds(self) -> int:
        start = self.start.hour * 3600 + self.start.minute * 60
        end = self.end.hour * 3600 + self.end.minute * 60
        return (end - start) % 86400 or 86400


@functools.lru_cache(maxsize=4096)
def parse_window(text: str) -> Window:
    """ "HH:MM-HH:MM" in UTC; it may wrap past midnight ("23:00-01:00"); "00:00-24:00" is the whole day."""
    match = re.fullmatch(r"(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})", text.strip())
    if not match:
        raise ValueError(f"bad window {text!r}")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if h1 > 23 or h2 > 24 or m1 > 59 or m2 > 59 or (h2 == 24 and m2):
        raise ValueError(f"bad window {text!r}: hours 00-23, minutes 00-59")
    if (h1, m1) == (h2, m2):
        raise ValueError(f"window {text!r} has no length (for the whole day, leave window out or use 00:00-24:00)")
    return Window(time(h1, m1), time(h2 % 24, m2))


def parse_duration(text: str | int | float) -> timedelta:
    """`"1h"`, `"30m"`, `"1h30m"`, `"2d"`, `"90s"`, `"0"`, or a number of seconds; at most MAX_DURATION."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        if not math.isfinite(text):
            raise ValueError("a duration must be a finite number of seconds")
        if text < 0:
            raise ValueError("a duration cannot be negative")
        seconds = float(text)
    else:
        spec = str(text).strip().replace(" ", "")
        if spec == "0":
            return timedelta(0)
        parts = _DURATION_PART.findall(spec)
        if not parts or "".join(n + u for n, u in parts) != spec or any(len(n) > 12 for n, _ in parts):
            raise ValueError(f"bad duration {text!r}")
        unit_seconds = {"d": 86400, "h": 3600, "m": 60, "s": 1}
        seconds = float(sum(int(n) * unit_seconds[u] for n, u in parts))
    if seconds > MAX_DURATION.total_seconds():
        raise ValueError(f"duration {text!r} is longer than {MAX_DURATION.days} days")
    return timedelta(seconds=seconds)
