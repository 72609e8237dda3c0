"""The contracts between the engine and everything it drives.

Plugins, stores and notifiers are found through entry-point groups (rotator.plugins, rotator.stores,
rotator.notifiers). Each group's entry point names a class (or factory) called with the component's validated
options; the result must satisfy the Protocol here. `rotator.testing` runs one contract suite over each.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

from rotator.fingerprints import Fingerprint
from rotator.model import (
    Credential,
    Lease,
    NotificationRecord,
    NotifyStatus,
    RotationContext,
    RotationEvent,
    RunRecord,
    RunState,
    Stage,
    Step,
    StepAction,
)


@runtime_checkable
class RotationPlugin(Protocol):
    """Knows one kind of credential. Every method must be idempotent: the engine repeats it after a crash.

    Plugins never write to stores; the engine does. They receive the versions they need and return values.
    Each method's docstring names the remote calls it makes (SQL, AWS actions, HTTP endpoints).
    """

    strategies: tuple[str, ...]

    def create(self, ctx: RotationContext, current: Credential) -> dict[str, Any]:
        """Return the new secret value. A generated password is only generated here (the engine stores it
        before `stage` applies it). A provider-minted key is minted here and returned at once."""
        ...

    def stage(self, ctx: RotationContext, current: Credential, pending: Credential) -> None:
        """Make `pending` valid at the target (for a single user, `current` may stop working)."""
        ...

    def test(self, ctx: RotationContext, pending: Credential) -> None:
        """Log in with `pending` and run the probe. Raise TestFailed if it does not work."""
        ...

    def revoke(self, ctx: RotationContext, previous: Credential, current: Credential) -> None:
        """Invalidate `previous` at the target (never `current`)."""
        ...

    def unstage(self, ctx: RotationContext, current: Credential, pending: Credential) -> None:
        """Roll back `stage`: the target accepts `current` again and nothing accepts `pending`."""
        ...

    def discard(self, ctx: RotationContext, pending: Credential) -> None:
        """Roll back `create`: delete a provider-minted key. Nothing to do for a generated password."""
        ...


@runtime_checkable
class Reconciler(Protocol):
    """Optional: plugins whose provider mints keys delete the ones no store version knows (crash orphans)."""

    def reconcile(self, ctx: RotationContext, known: Sequence[Credential]) -> list[str]:
        """Delete credentials at the target that none of `known` holds; return their public ids."""
        ...


@runtime_checkable
class UsageProbe(Protocol):
    """Optional: plugins that can tell whether a credential is still in use (consumer-aware revoke)."""

    def in_use(
        self, ctx: RotationContext, credential: Credential, *, since: datetime | None = None
    ) -> list[str] | None:
        """Who still uses `credential` (since `since`, the promote time, where the provider can tell): one public
        line per consumer (session, host, last-use time), [] when nobody does, None when it cannot be known."""
        ...


@runtime_checkable
class AdminReset(Protocol):
    """Optional: plugins that repair drift (`rotator reconcile`, a plan's `reconcile = "auto"`), as CyberArk's
    reconcile account does: when CURRENT no longer logs in (changed by hand, restored from a backup), an admin
    credential sets the account to a new password that the store then holds as CURRENT.

    The engine runs it as a rotation of its own (trigger `reconcile`): reset_value, stored as PENDING before it is
    applied; reset; test; promote; notify. Its rollback resets the account to CURRENT's stored value."""

    def check_current(self, ctx: RotationContext, current: Credential) -> None:
        """Log in with CURRENT and change nothing. AuthenticationFailed when the target refuses it."""
        ...

    def check_admin(self, ctx: RotationContext, current: Credential) -> str:
        """Log in with the admin credential and change nothing; return it in public words ("admin 'postgres' at
        db:5432"). StepRefused naming exactly what to add when the plan has no admin credential."""
        ...

    def reset_value(self, ctx: RotationContext, current: Credential) -> dict[str, Any]:
        """CURRENT's value with a freshly generated password for the same account. Nothing is sent; raises
        StepRefused when the plan has no admin credential (so nothing is stored)."""
        ...

    def reset(self, ctx: RotationContext, current: Credential, target: Credential) -> None:
        """As the admin, make `target`'s password the account's only valid one. Idempotent."""
        ...


@runtime_checkable
class DryRunProbe(Protocol):
    """Optional: plugins that can tell, changing nothing, what the next rotation would do and whether it can:
    CURRENT logs in, the admin logs in where the strategy needs one, the account the next run stages."""

    def dry_run(self, ctx: RotationContext, current: Credential) -> list[str]:
        """Probe and describe; one public line per fact. Raise the step's error when a probe fails. Messages
        speak of CURRENT and of "the new password", never of a PENDING that does not exist."""
        ...


@runtime_checkable
class SecretStore(Protocol):
    """Where the live secret is kept. Version ids of rotated versions are the engine's run ids.

    Invariant 3: a consumer reading the store's default never sees PENDING.
    """

    def get(self, secret_id: str, stage: Stage = Stage.CURRENT) -> Credential | None:
        """The version carrying `stage`, or None when no version carries it. SecretNotFound if no secret."""
        ...

    def put_pending(self, secret_id: str, value: Mapping[str, Any], version_id: str) -> Credential:
        """Store `value` as PENDING under `version_id`. Same id and value again: no-op.
        Same id, different value: VersionConflict. A PENDING of another version is replaced."""
        ...

    def promote(self, secret_id: str, version_id: str) -> None:
        """PENDING `version_id` becomes CURRENT, CURRENT becomes PREVIOUS, in one operation where the store
        allows. No-op if `version_id` is already CURRENT."""
        ...

    def unpromote(self, secret_id: str, version_id: str) -> None:
        """Undo `promote`: PREVIOUS becomes CURRENT again and `version_id` PENDING. No-op if not CURRENT."""
        ...

    def discard_pending(self, secret_id: str, version_id: str) -> None:
        """Remove the PENDING label from `version_id` (and its value where the store can). No-op if absent."""
        ...

    def put_current(self, secret_id: str, value: Mapping[str, Any]) -> Credential:
        """Seed or overwrite a secret outside rotation (`rotator store put`): a new CURRENT version."""
        ...


class Journal(Protocol):
    """The durable record of runs, steps and leases. SQLite embedded; PostgreSQL for several daemons."""

    def acquire_lease(self, plan_id: str, ttl_seconds: float) -> Lease | None:
        """Take the plan's lease if free, expired, or held by a dead process on this host. None if busy."""
        ...

    def renew_lease(self, lease: Lease, ttl_seconds: float) -> Lease:
        """Extend the lease. LeaseLost if another holder took it (its fencing token moved on)."""
        ...

    def release_lease(self, lease: Lease) -> None: ...

    def lease_of(self, plan_id: str) -> Lease | None: ...

    def begin_run(self, run: RunRecord, lease: Lease) -> None: ...

    def step_started(self, run_id: str, step: Step, action: StepAction, lease: Lease) -> None: ...

    def step_finished(
        self,
        run_id: str,
        step: Step,
        action: StepAction,
        lease: Lease,
        error: str | None = None,
        *,
        refused: bool = False,
    ) -> None:
        """Mark the step's last started row finished: succeeded, or failed (refused when it changed nothing)."""
        ...

    def update_run(self, run_id: str, lease: Lease | None, **changes: Any) -> None:
        """Change run fields (state, step, error, version ids, revoke_due_at, ended_at, details)."""
        ...

    def get_run(self, run_id: str) -> RunRecord | None: ...

    def runs(self, plan_id: str | None = None, limit: int = 50) -> list[RunRecord]:
        """Newest first, with their steps."""
        ...

    def runs_in_state(self, *states: RunState, plan_id: str | None = None) -> list[RunRecord]:
        """Runs in any of `states` (of one plan, if given), oldest first, with their steps."""
        ...

    def last_success(self, plan_id: str) -> RunRecord | None:
        """The newest run of the plan that promoted (awaiting revoke or succeeded)."""
        ...

    def latest_runs(self) -> dict[str, RunRecord]:
        """The newest run of every plan, in one query (status, metrics, the daemon's start with 10,000 plans).
        The records come without their steps (`steps` is empty): get_run has them."""
        ...

    def last_successes(self) -> dict[str, RunRecord]:
        """The newest promoted run of every plan, in one query; without steps, as latest_runs."""
        ...

    def failure_streaks(self) -> dict[str, int]:
        """By plan, how many of its newest runs in a row ended failed, rolled back or stuck; plans whose newest run
        did not fail are absent. One query, however many plans (status, the daemon's start)."""
        ...

    def save_fingerprints(self, fingerprints: Sequence[Fingerprint]) -> None:
        """Keep keyed fingerprints of a stored version (rotator.fingerprints); the same one again is ignored."""
        ...

    def find_fingerprints(self, digests: Collection[str]) -> list[Fingerprint]:
        """The stored fingerprints among `digests`, newest first."""
        ...

    def live_leases(self) -> dict[str, Lease]:
        """Leases held now (not expired, holder not known dead), by plan id."""
        ...

    def save_notification(self, record: NotificationRecord, lease: Lease | None) -> None:
        """Insert or replace the delivery record of (run_id, notifier); fenced by the plan's lease when given."""
        ...

    def notifications(
        self,
        *,
        plan_id: str | None = None,
        run_id: str | None = None,
        statuses: Sequence[NotifyStatus] = (),
    ) -> list[NotificationRecord]:
        """Delivery records, oldest first, filtered by plan, run and status."""
        ...

    def close(self) -> None: ...


# A notifier is a plain callable: it tells consumers about an event, raising NotifyError on failure.
# Entry points in rotator.notifiers name a factory called with the notifier's options that returns one.
Notifier = Callable[[RotationEvent], None]

# How the engine tells the time; injected so tests and the Lambda adapter can fix it.
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The default Clock: now, in UTC."""
    return datetime.now(UTC)
