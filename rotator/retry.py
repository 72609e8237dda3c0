"""tenacity policies: retry TransientError only, with jittered backoff, bounded in attempts and time.

An authentication failure is never transient: retrying a wrong password only locks accounts and fills logs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)

from rotator.errors import TransientError

T = TypeVar("T")


def retrying(
    *, attempts: int = 4, deadline_seconds: float = 60.0, initial: float = 0.2, maximum: float = 5.0
) -> Retrying:
    """A tenacity Retrying for one step: TransientError only, at most `attempts` tries within the deadline."""
    return Retrying(
        retry=retry_if_exception_type(TransientError),
        stop=stop_after_attempt(attempts) | stop_after_delay(deadline_seconds),
        wait=wait_exponential_jitter(multiplier=initial, max=maximum, jitter=initial),
        reraise=True,
    )


def call_with_retry(fn: Callable[[], T], *, attempts: int = 4, deadline_seconds: float = 60.0) -> T:
    for attempt in retrying(attempts=attempts, deadline_seconds=deadline_seconds):
        with attempt:
            return fn()
    raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover
