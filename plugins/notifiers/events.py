"""The event kinds notifiers deal with, and the payload every reporting notifier sends (webhook, sns, eventbridge,
command; slack renders the same fields as a message).

Kinds (rotator.model.EventKind; spelled out here because plugins import only rotator's public API, and
tests/unit/test_notifier_events.py pins them to the model's):

| kind | meaning | payload adds |
|---|---|---|
| credential.rotated | the new version is live | |
| credential.rolled_back | a required notifier failed after promote; PREVIOUS was put back as CURRENT | |
| credential.rotation_failed | the run failed and was rolled back: the old credential still works | error, action |
| credential.rotation_stuck | an operator must act (a rollback failed, or failures repeat) | error, action |
| credential.rotation_due | a manual plan falls due soon: its owner rotates it by hand | owner, due_at, action |
| credential.overdue | a manual plan's due date passed (repeated until recorded) | owner, due_at, action |

For a failure event `version` is the failed run's version (it never went live) and `previous_version` the CURRENT
one, which is still live.

A notifier declares the kinds it takes in a class attribute `event_kinds`; the registry refuses a config whose
`events` lists another kind for it. Those that redeploy or write the credential (ecs, kubernetes, file) take only
SUCCESS_KINDS, and do nothing if handed a failure event all the same.
"""

from __future__ import annotations

import json
from typing import Any

from rotator import RotationEvent, scrub

ROTATED = "credential.rotated"
ROLLED_BACK = "credential.rolled_back"
ROTATION_FAILED = "credential.rotation_failed"
ROTATION_STUCK = "credential.rotation_stuck"
ROTATION_DUE = "credential.rotation_due"
OVERDUE = "credential.overdue"
SUCCESS_KINDS = frozenset({ROTATED, ROLLED_BACK})
FAILURE_KINDS = frozenset({ROTATION_FAILED, ROTATION_STUCK})
REMINDER_KINDS = frozenset({ROTATION_DUE, OVERDUE})
EVERY_KIND = SUCCESS_KINDS | FAILURE_KINDS | REMINDER_KINDS

# The engine sends one scrubbed line; a payload keeps at most this much of a free-text field all the same, so that
# a runaway message cannot exceed a receiver's size limit (an environment variable, an SNS message).
FREE_TEXT_LIMIT = 4000
_FREE_TEXT_FIELDS = ("reason", "error", "action")


def one_line(text: str, limit: int = FREE_TEXT_LIMIT) -> str:
    """`text` on one line, every registered secret scrubbed out, cut in the middle (keeping its start, where the
    step and plan are named, and its end, where the cause usually is) when longer than `limit`."""
    flat = scrub(" ".join(text.split()))
    if len(flat) <= limit:
        return flat
    head = (limit - 3) * 3 // 4
    tail = limit - 3 - head
    return f"{flat[:head]} … {flat[len(flat) - tail :]}"


def event_payload(event: RotationEvent) -> dict[str, Any]:
    """`event.as_dict()` with its free text (reason, error, action) on one line and scrubbed: the engine already
    scrubs it, and a notifier scrubs again so that no code path can deliver a secret it has registered."""
    payload = event.as_dict()
    for name in _FREE_TEXT_FIELDS:
        if isinstance(payload.get(name), str):
            payload[name] = one_line(payload[name])
    return payload


def event_json(event: RotationEvent) -> str:
    """The payload as JSON, keys sorted (the webhook signs these bytes; SNS and EventBridge carry them)."""
    return json.dumps(event_payload(event), sort_keys=True)
