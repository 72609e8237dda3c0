"""Failure events: tell the notifiers that subscribed to them (their `events`) that a run failed or needs an operator.

- `credential.rotation_failed`: the run failed and was rolled back (or could not start): the old credential still
  works, nothing for consumers to do; the next scheduled run tries again after a backoff.
- `credential.rotation_stuck`: an operator must act: a compensation failed (the run is stuck), a roll-forward
  plugin holds the only valid credential as PENDING, or the plan failed `alert_after_failures` times in a row.

Unlike a rotation's delivery (journaled per notifier, retried on later ticks, gating revoke), an alert is sent
when the run ends, with a few quick tries per notifier; what happened is kept in the run's details (`alerts`) and
logged. An alert carries the run's error as one scrubbed line and the fix, never a secret value.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime

from rotator.engine.states import FAILED_STATES, MAX_RETRY_DELAY
from rotator.engine.steps import tell
from rotator.interfaces import Journal, Notifier
from rotator.logs import get_logger, scrub
from rotator.model import EventKind, RotationEvent

log = get_logger("rotator.engine")
ALERT_TRIES = 3


def fix_of(error: BaseException | str | None) -> str | None:
    """The "fix:" line of an error message (the project's errors end with one), scrubbed; None without one."""
    if error is None:
        return None
    text = str(error)
    marker = "fix: "
    index = text.rfind(marker)
    if index < 0:
        return None
    fix = " ".join(text[index + len(marker) :].split())
    return scrub(fix) or None


def failure_action(kind: EventKind, error: BaseException | str | None) -> str:
    """What the operator should do, for the event's `action`: the error's own fix first."""
    fix = fix_of(error)
    if kind is EventKind.ROTATION_FAILED:
        head = "nothing is broken: the old credential still works and the next run tries again"
        return f"{head}; to make it succeed: {fix}" if fix else head
    return fix or "read `rotator status` and `rotator history PLAN`, fix the cause, then run `rotator resume`"


def failure_event(
    *,
    kind: EventKind,
    plan_id: str,
    run_id: str,
    secret_id: str,
    store: str,
    current_version_id: str | None,
    at: datetime,
    trigger: str,
    reason: str | None,
    tags: tuple[str, ...],
    error: str,
    action: str,
) -> RotationEvent:
    """The event for a failed run: `version` is the run's own (never live), `previous_version` what is CURRENT."""
    return RotationEvent(
        plan_id=plan_id,
        run_id=run_id,
        secret_id=secret_id,
        store=store,
        version_id=run_id,
        previous_version_id=current_version_id,
        rotated_at=at,
        trigger=trigger,
        reason=reason,
        tags=tags,
        kind=kind.value,
        error=scrub(error),
        action=scrub(action),
    )


class _AlertResults:
    """An alert's deliveries, by notifier: "delivered" or "failed: <scrubbed error>" (kept in the run's details)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.results: dict[str, str] = {}

    def told(self, notifier: str) -> bool:
        return False  # an alert is sent once, when the run ends: there is no earlier try to skip

    def delivered(self, notifier: str) -> None:
        self.results[notifier] = "delivered"
        log.info("alert delivered", notifier=notifier, kind=self.kind)

    def failed(self, notifier: str, error: str) -> None:
        self.results[notifier] = f"failed: {error}"
        log.error("could not deliver an alert", notifier=notifier, kind=self.kind, error=error)


def send_alert(
    event: RotationEvent,
    notifiers: Iterable[tuple[str, Notifier]],
    wants: Callable[[str, str], bool],
    *,
    deadline_seconds: float,
) -> dict[str, str]:
    """Deliver `event` to every notifier that subscribed to its kind. Returns, by notifier, "delivered" or
    "failed: <scrubbed error>"; a failure is logged, never raised (an alert must not change the run's end)."""
    ledger = _AlertResults(event.kind)
    tell(event, notifiers, ledger, tries=ALERT_TRIES, deadline_seconds=deadline_seconds, wants=wants)
    return ledger.results


def repeated_failures_action(count: int, fix: str | None) -> str:
    """What to do about a plan that failed `count` times in a row (the rotation_stuck alert's action)."""
    return (
        f"this plan failed {count} times in a row; automatic runs go on with backoff (at most every "
        f"{int(MAX_RETRY_DELAY.total_seconds() // 3600)} h), but it will not heal alone: "
        + (fix or "read `rotator history PLAN` and fix the cause")
        + "; then `rotator rotate-now PLAN`"
    )


def consecutive_failures(journal: Journal, plan_id: str, *, limit: int = 100) -> int:
    """How many of the plan's newest runs in a row ended failed, rolled back or stuck."""
    count = 0
    for record in journal.runs(plan_id, limit=limit):
        if record.state not in FAILED_STATES:
            break
        count += 1
    return count
