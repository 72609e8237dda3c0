"""What the runner works with: a plan bound to its components, the settings every run shares, and what one call
did to one plan (RunOutcome, for the CLI's summary table and --json, the daemon's log and metrics)."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from rotator.fingerprints import FingerprintKey
from rotator.interfaces import Clock, Journal, Notifier, RotationPlugin, SecretStore, utc_now
from rotator.model import SUCCESS_EVENTS, Outcome, PasswordPolicy


@dataclass(frozen=True)
class BoundPlan:
    """A plan with its components resolved: what the runner needs to rotate it."""

    plan_id: str
    secret_id: str
    store_name: str
    store: SecretStore
    plugin: RotationPlugin
    strategy: str = "single-user"
    grace: timedelta = timedelta(hours=1)
    options: dict[str, Any] = field(default_factory=dict)
    password_policy: PasswordPolicy = field(default_factory=PasswordPolicy)
    notifiers: tuple[tuple[str, Notifier], ...] = ()
    tags: tuple[str, ...] = ()
    required_notifiers: frozenset[str] = frozenset()  # PREVIOUS is not revoked until these succeeded
    revoke_deadline: timedelta = timedelta(hours=24)  # how long revoke waits while PREVIOUS is still in use
    rollback_on_failure: bool = False  # a required notifier failing puts PREVIOUS back, if it still works
    # `reconcile = "auto"`: a run that finds CURRENT refused at the target first resets it (AdminReset), then rotates.
    reconcile_auto: bool = False
    # The event kinds each notifier receives (its `events`); a notifier not named here gets SUCCESS_EVENTS.
    notifier_events: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def wants(self, notifier: str, kind: str) -> bool:
        """Whether the plan's notifier `notifier` subscribed to events of `kind`."""
        return kind in self.notifier_events.get(notifier, SUCCESS_EVENTS)

    @property
    def rolls_forward(self) -> bool:
        """The provider invalidates the old credential when it mints the new one (e.g. Cloudflare's token roll):
        after create there is nothing to roll back to, so a failed run keeps PENDING and finishes forward.
        A plugin may roll forward in some strategies only (`rolls_forward_strategies`)."""
        if not getattr(self.plugin, "rolls_forward", False):
            return False
        only = getattr(self.plugin, "rolls_forward_strategies", None)
        return only is None or self.strategy in only


@dataclass(frozen=True)
class RunSettings:
    """What every run of one Runner shares: the journal, the clock, and the config's timings. A run gets this,
    not the Runner that made it."""

    journal: Journal
    clock: Clock = utc_now
    lease_seconds: float = 600
    step_timeout: float = 120
    revoke_recheck_seconds: float = 60
    notify_retry_for: timedelta = timedelta(hours=24)
    notify_retry_seconds: float = 60.0
    alert_after_failures: int = 3
    fingerprint_key: FingerprintKey | None = None
    stop: threading.Event = field(default_factory=threading.Event)

    def stopping(self) -> bool:
        return self.stop.is_set()

    def now(self) -> datetime:
        return self.clock()


# Outcomes after which nothing is wrong with the plan (`RunOutcome.ok`).
_OK = frozenset(
    {
        Outcome.SUCCEEDED,
        Outcome.AWAITING_REVOKE,
        Outcome.DRY_RUN,
        Outcome.NOTHING_TO_DO,
        Outcome.NOT_DUE,
        Outcome.IN_SYNC,
    }
)


@dataclass(init=False)
class RunOutcome:
    """What one call of the runner did to one plan (for the CLI's summary table and --json)."""

    plan_id: str
    outcome: Outcome
    run_id: str | None
    error: str | None
    step_seconds: dict[str, float]
    revoked: bool
    notes: list[str]
    fix: str | None  # what to do about `error`, when the error says (its "fix:" line)

    def __init__(
        self,
        plan_id: str,
        outcome: Outcome | str,
        run_id: str | None = None,
        error: str | None = None,
        step_seconds: dict[str, float] | None = None,
        revoked: bool = False,
        notes: list[str] | None = None,
        fix: str | None = None,
    ) -> None:
        self.plan_id = plan_id
        self.outcome = Outcome(outcome)  # callers outside the engine may still name it by its text
        self.run_id = run_id
        self.error = error
        self.step_seconds = step_seconds if step_seconds is not None else {}
        self.revoked = revoked
        self.notes = notes if notes is not None else []
        self.fix = fix

    @property
    def ok(self) -> bool:
        return self.outcome in _OK

    @property
    def settled(self) -> bool:
        """For `resume`: the run ended, forward or rolled back (nothing left for an operator)."""
        return self.ok or self.outcome is Outcome.ROLLED_BACK

    def as_dict(self) -> dict[str, Any]:
        return {
            "plan": self.plan_id,
            "outcome": self.outcome.value,
            "ok": self.ok,
            "run_id": self.run_id,
            "error": self.error,
            "revoked": self.revoked,
            "step_seconds": self.step_seconds,
            "notes": self.notes,
            "fix": self.fix,
        }


def plugin_name(plugin: object) -> str:
    """A plugin's name for messages: its class name, as the registry loaded it."""
    return type(plugin).__name__
