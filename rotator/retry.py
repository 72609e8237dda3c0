"""tenacity policies: retry TransientError only, with jittered backoff, bounded by the step's deadline.

An authentication failure is never transient: retrying a wrong password only locks accounts and fills logs.

The bound is time, not a count of attempts: a target that restarts (a few seconds down, then "starting up") must
be waited out for as long as the step may take (`step_timeout`, README), so that a rotation caught by an outage
ends rotated or cleanly rolled back, not stuck after four tries in two seconds. `stop_before_delay` never starts a
sleep that would end past the deadline.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_before_delay,
    wait_exponential_jitter,
)
from tenacity.stop import stop_base

from rotator.errors import TransientError

T = TypeVar("T")


def retrying(
    *, attempts: int | None = None, deadline_seconds: float = 60.0, initial: float = 0.2, maximum: float = 5.0
) -> Retrying:
    """A tenacity Retrying for one step: TransientError only, until the deadline (and at most `attempts` tries,
    when given). Waits grow from `initial` to `maximum` seconds, jittered so that many runs hit by one outage do
    not come back in step."""
    stop: stop_base = stop_before_delay(max(deadline_seconds, 0.0))
    if attempts is not None:
        stop = stop | stop_after_attempt(attempts)
    return Retrying(
        retry=retry_if_exception_type(TransientError),
        stop=stop,
        wait=wait_exponential_jitter(multiplier=initial, max=maximum, jitter=initial),
        reraise=True,
    )


def call_with_retry(fn: Callable[[], T], *, attempts: int | None = None, deadline_seconds: float = 60.0) -> T:
    for attempt in retrying(attempts=attempts, deadline_seconds=deadline_seconds):
        with attempt:
            return fn()
    raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover


class Deadline:
    """The time one step may take, shared by every retry inside it (README: the whole step shares one
    `step_timeout`, however many calls it makes). Outside a started step, a retry gets the whole timeout."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._ends: float | None = None

    def start(self) -> None:
        self._ends = time.monotonic() + self.seconds

    def stop(self) -> None:
        self._ends = None

    def seconds_left(self) -> float:
        if self._ends is None:
            return self.seconds
        return max(self._ends - time.monotonic(), 0.0)

    def retry(self, fn: Callable[[], T], *, attempts: int | None = None) -> T:
        """`fn`, its transient errors retried until the step's time is up (and at most `attempts` tries)."""
        return call_with_retry(fn, attempts=attempts, deadline_seconds=self.seconds_left())
