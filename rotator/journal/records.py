"""Rows of the journal's tables as the model's records, read the same way by both backends (sqlite.py, postgres.py).

Only what is the same in both lives here: how they store a time differs (SQLite: ISO text; PostgreSQL:
timestamptz), so each passes its own parser.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from rotator.logs import scrub
from rotator.model import NotificationRecord, NotifyStatus, StepAction, StepStatus

# Run fields fixed when a run begins: update_run refuses to change them.
FIXED_RUN_FIELDS = frozenset({"run_id", "plan_id", "trigger", "started_at", "store", "secret_id"})


def check_run_changes(changes: Mapping[str, Any], columns: Iterable[str]) -> None:
    """update_run's guard: only existing, changeable run columns (the names also become SQL identifiers)."""
    unknown = set(changes) - (frozenset(columns) - FIXED_RUN_FIELDS)
    if unknown:
        raise ValueError(f"cannot update run fields {sorted(unknown)}")


# The notifications table's columns, in the order `notification_record` reads a row.
NOTIFICATION_COLUMNS = (
    "run_id",
    "plan_id",
    "notifier",
    "status",
    "required",
    "attempts",
    "next_attempt_at",
    "last_error",
    "updated_at",
)


def notification_record(row: Sequence[Any], parse_time: Callable[[Any], datetime | None]) -> NotificationRecord:
    """A notifications row (NOTIFICATION_COLUMNS order) as a record; `parse_time` reads the backend's stored time
    (None stays None)."""
    return NotificationRecord(
        run_id=row[0],
        plan_id=row[1],
        notifier=row[2],
        status=NotifyStatus(row[3]),
        required=bool(row[4]),
        attempts=row[5],
        next_attempt_at=parse_time(row[6]),
        last_error=row[7],
        updated_at=parse_time(row[8]),
    )


def scrubbed(value: Any) -> Any:
    """Free text as a journal keeps it: every secret this process has handled replaced (invariant 6), inside
    mappings and lists too."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, Mapping):
        return {str(k): scrubbed(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrubbed(v) for v in value]
    return value


def step_status(error: str | None, refused: bool) -> StepStatus:
    """A finished step's status: succeeded; failed (it may have changed the target, so it is compensated);
    refused (it failed before changing anything at the target: nothing to compensate, see errors.NotApplied)."""
    if not error:
        return StepStatus.SUCCEEDED
    return StepStatus.REFUSED if refused else StepStatus.FAILED


# Stored text -> enum, by dict (a lookup per step row: the daemon's start reads the steps of many runs).
STEP_ACTIONS = {action.value: action for action in StepAction}
STEP_STATUSES = {status.value: status for status in StepStatus}
