"""Frozen values and enums shared by the engine, plugins, stores and notifiers."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from functools import cached_property
from typing import Any


class Stage(StrEnum):
    """Labels a store keeps on versions of a secret (AWSCURRENT, AWSPENDING, AWSPREVIOUS in AWS)."""

    CURRENT = "CURRENT"
    PENDING = "PENDING"
    PREVIOUS = "PREVIOUS"


class Step(StrEnum):
    CREATE = "create"
    STAGE = "stage"
    TEST = "test"
    PROMOTE = "promote"
    NOTIFY = "notify"
    REVOKE = "revoke"


class RunState(StrEnum):
    RUNNING = "running"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"
    AWAITING_REVOKE = "awaiting_revoke"  # promoted; PREVIOUS stays valid until revoke_due_at
    SUCCEEDED = "succeeded"
    STUCK = "stuck"  # a rollback or revoke failed: an operator must look (`rotator resume` retries)
    FAILED = "failed"  # the run could not start (secret not seeded, store unreadable): nothing was changed

    @property
    def is_open(self) -> bool:
        """An open run was interrupted or is in progress: `resume` must finish or roll it back."""
        return self in (RunState.RUNNING, RunState.ROLLING_BACK, RunState.STUCK)


class StepAction(StrEnum):
    """Which way a journaled step went: a forward step of the rotation, or the compensation that undoes one."""

    FORWARD = "forward"
    ROLLBACK = "rollback"


class StepStatus(StrEnum):
    STARTED = "started"  # journaled before it runs; a crash leaves it so, and `resume` repeats it
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # it may have changed the target, so it is compensated
    REFUSED = "refused"  # it failed before changing anything at the target (errors.NotApplied): nothing to undo


class Outcome(StrEnum):
    """What one call of the runner did to one plan (RunOutcome.outcome): the state the run ended in, or why no
    run went ahead."""

    RUNNING = RunState.RUNNING.value
    ROLLING_BACK = RunState.ROLLING_BACK.value
    ROLLED_BACK = RunState.ROLLED_BACK.value
    AWAITING_REVOKE = RunState.AWAITING_REVOKE.value
    SUCCEEDED = RunState.SUCCEEDED.value
    STUCK = RunState.STUCK.value
    FAILED = RunState.FAILED.value
    BUSY = "busy"  # another run holds the plan's lease
    DRY_RUN = "dry-run"
    NOTHING_TO_DO = "nothing-to-do"
    NOT_DUE = "not-due"  # another daemon rotated the plan meanwhile
    IN_SYNC = "in-sync"  # reconcile: CURRENT logs in, nothing to repair
    ERROR = "error"  # the call itself failed (a probe, a plugin without the capability asked for)
    NOTIFIED = "notified"  # a failed notification delivered on a later tick
    NOTIFY_FAILED = "notify-failed"


class Trigger(StrEnum):
    SCHEDULE = "schedule"
    MANUAL = "manual"
    RESUME = "resume"
    LAMBDA = "lambda"
    RECONCILE = "reconcile"  # drift repair: the admin credential reset a CURRENT that no longer logged in
    IMPORT = "import"  # a credential made elsewhere, recorded as rotated (rotator/baselines.py); no steps ran
    LEAK = "leak"  # a leak report (`rotator leak --rotate`, the daemon's leak endpoint): old credential revoked at once


class EventKind(StrEnum):
    """What a notifier is told. A notifier receives the kinds listed in its `events` (default: SUCCESS_EVENTS)."""

    ROTATED = "credential.rotated"  # the new version is live
    ROLLED_BACK = "credential.rolled_back"  # a required notifier failed after promote; PREVIOUS was put back
    ROTATION_FAILED = "credential.rotation_failed"  # the run failed and was rolled back: the old credential works
    ROTATION_STUCK = "credential.rotation_stuck"  # an operator must act (a rollback failed, or failures repeat)
    # Manual plans (plugin "manual", rotated by a person): the due date is near, or past (rotator/reminders.py).
    ROTATION_DUE = "credential.rotation_due"
    OVERDUE = "credential.overdue"


# What a notifier receives when its config names no `events` (the meaning configs had before failure events).
SUCCESS_EVENTS = frozenset({EventKind.ROTATED.value, EventKind.ROLLED_BACK.value})
FAILURE_EVENTS = frozenset({EventKind.ROTATION_FAILED.value, EventKind.ROTATION_STUCK.value})
# A manual plan's reminders go to each of its notifiers whose `events` lists them or is left at the default.
REMINDER_EVENTS = frozenset({EventKind.ROTATION_DUE.value, EventKind.OVERDUE.value})


# Keys of a secret's JSON whose values are never secret: they may be logged and shown.
PUBLIC_SECRET_KEYS = frozenset(
    {
        "engine",
        "host",
        "port",
        "username",
        "dbname",
        "masterarn",
        "ssl",
        "UserName",
        "AccessKeyId",
        "key_id",
        "id",
        "name",
        "region",
        "account",
        "proxy",
    }
)
_SENSITIVE_KEY = re.compile(r"pass|secret|token|key|value|credential|private|auth", re.IGNORECASE)


@dataclass(frozen=True)
class Credential:
    """One version of a secret as the store holds it. Its value never shows in repr or str."""

    version_id: str
    value: Mapping[str, Any] = field(repr=False)
    stages: frozenset[Stage] = frozenset()

    def __getitem__(self, key: str) -> Any:
        return self.value[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.value.get(key, default)

    def secret_strings(self) -> list[str]:
        """The strings in this value that must never be shown (for the log and error scrubber)."""
        return sensitive_strings(self.value)


def sensitive_strings(value: Mapping[str, Any]) -> list[str]:
    found: list[str] = []
    for key, item in value.items():
        if isinstance(item, Mapping):
            found.extend(sensitive_strings(item))
        elif (
            isinstance(item, str) and key not in PUBLIC_SECRET_KEYS and (_SENSITIVE_KEY.search(key) or len(item) >= 16)
        ):
            found.append(item)
    return [s for s in found if len(s) >= 6]


@dataclass(frozen=True)
class PasswordPolicy:
    """How a plugin generates a password. Defaults follow AWS's rotation samples."""

    length: int = 32
    exclude_characters: str = ":/@\"'\\"
    require_each_included_type: bool = True
    exclude_lowercase: bool = False
    exclude_uppercase: bool = False
    exclude_numbers: bool = False
    exclude_punctuation: bool = False


@dataclass(frozen=True)
class RotationContext:
    """What a plugin gets for every call: which plan and run, its options, and read access to other secrets."""

    plan_id: str
    run_id: str
    secret_id: str
    strategy: str
    options: Mapping[str, Any]
    password_policy: PasswordPolicy
    # Reads another secret from the plan's store (e.g. the admin secret named by `masterarn`), CURRENT stage.
    read_secret: Callable[[str], Credential]
    # Reads a stage of this plan's own secret (PREVIOUS, for a stage that finds CURRENT refused, as AWS's samples).
    read_stage: Callable[[Stage], Credential | None] = field(default=lambda _stage: None, repr=False)


@dataclass(frozen=True)
class RotationEvent:
    """What notifiers receive once the new credential is live. Carries no secret value, only its version."""

    plan_id: str
    run_id: str
    secret_id: str
    store: str
    version_id: str
    previous_version_id: str | None
    rotated_at: datetime
    trigger: str
    reason: str | None = None
    tags: tuple[str, ...] = ()
    # "credential.rotated" once the new version is live; "credential.rolled_back" when a required notifier failed
    # and the engine put PREVIOUS back as CURRENT (consumers that already moved must read the store again);
    # "credential.rotation_failed" / "credential.rotation_stuck" for a run that failed (EventKind).
    kind: str = "credential.rotated"
    # Failure events only: the run's error as one scrubbed line (never a secret), and what the operator should do.
    error: str | None = None
    action: str | None = None
    # Reads the value that is CURRENT now from the store, for a notifier that renders it on this host (`file`).
    # Never put what it returns in a payload; as_dict() leaves it out.
    read_value: Callable[[], Mapping[str, Any]] | None = field(default=None, repr=False, compare=False)
    # Reminder events only: who rotates the credential by hand, and when it is (was) due.
    owner: str | None = None
    due_at: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "event": self.kind,
            "plan": self.plan_id,
            "run_id": self.run_id,
            "secret": self.secret_id,
            "store": self.store,
            "version": self.version_id,
            "previous_version": self.previous_version_id,
            "rotated_at": self.rotated_at.isoformat(),
            "trigger": self.trigger,
            "reason": self.reason,
            "tags": list(self.tags),
            **({"error": self.error, "action": self.action} if self.is_failure else {}),
            **(
                {"owner": self.owner, "due_at": self.due_at.isoformat() if self.due_at else None, "action": self.action}
                if self.is_reminder
                else {}
            ),
        }

    @property
    def is_failure(self) -> bool:
        return self.kind in FAILURE_EVENTS

    @property
    def is_reminder(self) -> bool:
        return self.kind in REMINDER_EVENTS


@dataclass(frozen=True)
class Lease:
    """The right to run one plan (invariant 4). `token` is a fencing token: it grows on every new grant, and
    a journal refuses writes from a holder whose token is no longer the plan's latest."""

    plan_id: str
    holder: str  # "host:pid:nonce"
    host: str
    pid: int
    token: int
    expires_at: datetime


@dataclass(frozen=True)
class StepRecord:
    run_id: str
    step: Step
    action: StepAction
    status: StepStatus
    started_at: datetime
    ended_at: datetime | None = None
    error: str | None = None

    def __post_init__(self) -> None:
        if type(self.action) is not StepAction or type(self.status) is not StepStatus:  # given as plain text
            object.__setattr__(self, "action", StepAction(self.action))
            object.__setattr__(self, "status", StepStatus(self.status))


def _time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) and value else None


def _lines(value: Any) -> tuple[str, ...]:
    return tuple(str(item) for item in value) if isinstance(value, list | tuple) else ()


@dataclass(frozen=True, eq=False)
class RunDetails(Mapping[str, Any]):
    """Public facts about a run, never a secret: what revoke waits for and who still used PREVIOUS, the alerts
    sent, how a drift repair or a roll-forward run came about.

    The journal keeps them as one JSON object, with the keys below (both journals, and rows written before this
    class existed, read the same way). Keys this version does not know are kept in `extra`, so a newer writer's
    facts survive an older reader's rewrite. As a Mapping it is that JSON object, for readers of the old dict."""

    reconcile: str | None = None  # a drift repair (`rotator reconcile`): the refusal of CURRENT that started it
    roll_forward: bool = False  # held stuck with PENDING, the only valid credential: `resume` finishes it forward
    rollback_refused: str | None = None  # rollback_on_failure could not put PREVIOUS back (it no longer works)
    # By event kind (or "repeated_failures"): notifier -> "delivered" or "failed: <error>".
    alerts: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    revoke_waiting_for: tuple[str, ...] = ()  # why PREVIOUS is not revoked yet
    revoke_deadline_at: datetime | None = None  # revoke goes ahead then, even while PREVIOUS is still in use
    # Who used PREVIOUS since promote at the last check: () nobody, None unknown (or never checked).
    previous_in_use: tuple[str, ...] | None = None
    usage_checked_at: datetime | None = None
    usage_check_error: str | None = None
    revoked_while_in_use: tuple[str, ...] = ()  # revoked at the deadline while these still used it
    recorded_by: str | None = None  # a run recorded, not rotated: which command ("import", "mark-rotated")
    verified: bool | None = None  # ... and whether it checked that CURRENT logs in
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> RunDetails:
        """The details of a journal row's JSON object (None or {} for none)."""
        if not data:
            return NO_DETAILS
        if isinstance(data, RunDetails):
            return data
        known = _DETAIL_KEYS
        in_use = data.get("previous_in_use")
        alerts = data.get("alerts")
        return cls(
            reconcile=_text_or_none(data.get("reconcile")),
            roll_forward=bool(data.get("roll_forward")),
            rollback_refused=_text_or_none(data.get("rollback_refused")),
            alerts={str(k): dict(v) for k, v in alerts.items() if isinstance(v, Mapping)}
            if isinstance(alerts, Mapping)
            else {},
            revoke_waiting_for=_lines(data.get("revoke_waiting_for")),
            revoke_deadline_at=_time(data.get("revoke_deadline_at")),
            previous_in_use=_lines(in_use) if isinstance(in_use, list | tuple) else None,
            usage_checked_at=_time(data.get("usage_checked_at")),
            usage_check_error=_text_or_none(data.get("usage_check_error")),
            revoked_while_in_use=_lines(data.get("revoked_while_in_use")),
            recorded_by=_text_or_none(data.get("recorded_by")),
            verified=None if data.get("verified") is None else bool(data.get("verified")),
            extra={k: v for k, v in data.items() if k not in known},
        )

    def as_json(self) -> dict[str, Any]:
        """The JSON object the journal stores: only the facts that are set, times as ISO 8601 text."""
        return dict(self._json)

    @cached_property
    def _json(self) -> dict[str, Any]:
        found: dict[str, Any] = dict(self.extra)
        texts = {
            "reconcile": self.reconcile,
            "rollback_refused": self.rollback_refused,
            "usage_check_error": self.usage_check_error,
            "recorded_by": self.recorded_by,
            "revoke_deadline_at": self.revoke_deadline_at.isoformat() if self.revoke_deadline_at else None,
            "usage_checked_at": self.usage_checked_at.isoformat() if self.usage_checked_at else None,
        }
        found.update({k: v for k, v in texts.items() if v is not None})
        if self.roll_forward:
            found["roll_forward"] = True
        if self.alerts:
            found["alerts"] = {kind: dict(results) for kind, results in self.alerts.items()}
        for key, lines in (
            ("revoke_waiting_for", self.revoke_waiting_for),
            ("revoked_while_in_use", self.revoked_while_in_use),
        ):
            if lines:
                found[key] = list(lines)
        if self.previous_in_use is not None:
            found["previous_in_use"] = list(self.previous_in_use)
        if self.verified is not None:
            found["verified"] = self.verified
        return found

    def with_alerts(self, key: str, results: Mapping[str, str]) -> RunDetails:
        """These details with the results of one alert (by event kind, or "repeated_failures") added."""
        return dataclasses.replace(self, alerts={**self.alerts, key: dict(results)})

    def __getitem__(self, key: str) -> Any:
        return self._json[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._json)

    def __len__(self) -> int:
        return len(self._json)

    def __repr__(self) -> str:
        return f"RunDetails({self._json!r})"


def _text_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


_DETAIL_KEYS = frozenset(f.name for f in dataclasses.fields(RunDetails)) - {"extra"}
NO_DETAILS = RunDetails()


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    plan_id: str
    state: RunState
    trigger: Trigger
    started_at: datetime
    store: str
    secret_id: str
    step: Step | None = None  # the step in progress, or the last one done
    ended_at: datetime | None = None
    reason: str | None = None
    operator: str | None = None
    error: str | None = None
    version_id: str | None = None  # the PENDING version this run created
    previous_version_id: str | None = None  # CURRENT when the run started
    revoke_due_at: datetime | None = None
    steps: tuple[StepRecord, ...] = ()
    # Public facts about the run, never a secret (RunDetails). One JSON object in the journal; replaced whole by
    # update_run(details=...). A plain mapping given here (an older caller, a test) is read as RunDetails.
    details: RunDetails = field(default_factory=lambda: NO_DETAILS)

    def __post_init__(self) -> None:
        if type(self.details) is not RunDetails:
            object.__setattr__(self, "details", RunDetails.from_json(self.details))


class NotifyStatus(StrEnum):
    PENDING = "pending"  # not yet sent, or a retry is due at next_attempt_at
    FAILED = "failed"  # the last attempt failed; retried at next_attempt_at
    SUCCEEDED = "succeeded"
    GAVE_UP = "gave_up"  # a newer rotation superseded it, or attempts ran out


@dataclass(frozen=True)
class NotificationRecord:
    """One notifier's delivery of one run's event, kept in the journal so that a failure is retried on later
    ticks (by any daemon) and shows in `status` and metrics."""

    run_id: str
    plan_id: str
    notifier: str
    status: NotifyStatus
    required: bool = False
    attempts: int = 0
    next_attempt_at: datetime | None = None
    last_error: str | None = None
    updated_at: datetime | None = None
