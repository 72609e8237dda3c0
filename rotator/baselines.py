"""Credentials the engine did not rotate, recorded as if it had: `rotator import`, `rotator mark-rotated`, and
`rotator store put` of a manual plan's secret.

A baseline is one journal run with trigger `import`, started at the time the credential was really made (the
operator's `--rotated-at`, else now) and ended `succeeded` with nothing to revoke. Everything that reads the
journal then agrees without special cases: `status` shows the credential's real age, the scheduler computes the
next due time from it (an imported credential is not "overdue" and rotated seconds after the daemon starts), and a
manual plan's reminders stop until it falls due again.

A baseline takes the plan's lease like any run, so it never interleaves with a rotation in flight; it changes no
target and no store (the caller wrote the store first, when there was a value to write).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from rotator.engine.runner import BoundPlan
from rotator.errors import ConfigError, PlanBusy, StepError, describe
from rotator.fingerprints import FingerprintKey, version_fingerprints
from rotator.interfaces import Journal
from rotator.logs import get_logger
from rotator.model import Credential, RotationContext, RunDetails, RunRecord, RunState, Stage, Trigger

log = get_logger(__name__)

# How long a baseline may hold the plan's lease: it writes two journal rows.
_LEASE_SECONDS = 60.0


@dataclass(frozen=True)
class Baseline:
    """What was recorded: the journal run and the version it names."""

    run_id: str
    plan_id: str
    version_id: str | None
    rotated_at: datetime
    verified: bool


def parse_rotated_at(text: str | None, *, now: datetime, key: str = "--rotated-at") -> datetime:
    """`--rotated-at`: RFC 3339 (`2026-03-01T09:00:00Z`, an offset, or no zone meaning UTC) or a date
    (`2026-03-01`, midnight UTC); never in the future. None: now."""
    if text is None:
        return now
    try:
        value = datetime.fromisoformat(text.strip().replace("z", "Z"))
    except ValueError:
        raise ConfigError(
            f"{text!r} is not a date or time",
            key=key,
            fix="write RFC 3339, e.g. 2026-03-01T09:00:00Z, or a date such as 2026-03-01",
        ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    value = value.astimezone(UTC)
    if value > now + timedelta(minutes=5):  # a little clock skew between hosts is not an error
        raise ConfigError(
            f"{text!r} is in the future",
            key=key,
            fix="give the time the credential was really made (or leave it out for now)",
        )
    return value


def verify_login(bp: BoundPlan, credential: Credential) -> None:
    """Log in with `credential` as the plan's test step would (the plugin's `test`). Raises StepError (TestFailed,
    TargetUnreachable, ...) when the target refuses it; the remote call is the plugin's test login."""

    def read_other(secret_id: str) -> Credential:
        found = bp.store.get(secret_id, Stage.CURRENT)
        if found is None:
            raise StepError(f"plan {bp.plan_id}: secret {secret_id!r} has no CURRENT version")
        return found

    ctx = RotationContext(
        plan_id=bp.plan_id,
        run_id=f"verify-{uuid.uuid4().hex[:12]}",
        secret_id=bp.secret_id,
        strategy=bp.strategy,
        options=bp.options,
        password_policy=bp.password_policy,
        read_secret=read_other,
        read_stage=lambda stage: bp.store.get(bp.secret_id, stage),
    )
    bp.plugin.test(ctx, credential)


def record_baseline(
    journal: Journal,
    bp: BoundPlan,
    credential: Credential | None,
    *,
    rotated_at: datetime,
    how: str,
    reason: str | None = None,
    operator: str | None = None,
    verified: bool = False,
    fingerprint_key: FingerprintKey | None = None,
) -> Baseline:
    """Journal `credential` (CURRENT in the plan's store) as rotated at `rotated_at`, and keep its fingerprints.
    `credential` is None for a manual plan whose secret is not kept in a store (a vendor console key): the date
    alone is recorded. `how` says which command recorded it ("import", "mark-rotated", "store put"). Raises
    PlanBusy while a run holds the plan."""
    lease = journal.acquire_lease(bp.plan_id, _LEASE_SECONDS)
    if lease is None:
        holder = journal.lease_of(bp.plan_id)
        who = f" by {holder.host} pid {holder.pid}" if holder else ""
        raise PlanBusy(f"plan {bp.plan_id} is busy: a run holds its lease{who}; try again when it has finished")
    run_id = uuid.uuid4().hex
    try:
        journal.begin_run(
            RunRecord(
                run_id=run_id,
                plan_id=bp.plan_id,
                state=RunState.RUNNING,
                trigger=Trigger.IMPORT,
                started_at=rotated_at,
                store=bp.store_name,
                secret_id=bp.secret_id,
                reason=reason,
                operator=operator,
                version_id=credential.version_id if credential else None,
                details=RunDetails(recorded_by=how, verified=verified),
            ),
            lease,
        )
        journal.update_run(run_id, lease, state=RunState.SUCCEEDED, ended_at=datetime.now(UTC))
    finally:
        journal.release_lease(lease)
    if fingerprint_key is not None and credential is not None:
        try:
            journal.save_fingerprints(
                version_fingerprints(fingerprint_key, bp.plan_id, bp.secret_id, credential.version_id, credential.value)
            )
        except Exception as exc:  # the baseline stands; `rotator leak` may miss this version until it rotates
            log.warning("could not keep the credential's fingerprints", plan=bp.plan_id, error=describe(exc))
    log.info("credential recorded", plan=bp.plan_id, recorded_by=how, rotated_at=rotated_at.isoformat())
    return Baseline(run_id, bp.plan_id, credential.version_id if credential else None, rotated_at, verified)
