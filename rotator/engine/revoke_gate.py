"""What holds back revoking PREVIOUS once its grace has ended, under the runner:

- a required notifier that has not succeeded (no deadline: it must succeed first, or an operator forces revoke
  with `--revoke-old now`);
- consumers the plugin still sees on PREVIOUS (UsageProbe), until the plan's `revoke_deadline`; then revoke goes
  ahead and the run's details say who was still on it.

A check that cannot tell (the probe failed, or the plugin does not know) never holds revoke back.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime, timedelta

from rotator.engine.delivery import promoted_at
from rotator.engine.plans import BoundPlan, RunSettings
from rotator.engine.steps import StepCore
from rotator.errors import describe
from rotator.interfaces import UsageProbe
from rotator.logs import get_logger, scrub
from rotator.model import Credential, NotifyStatus, RunDetails, RunRecord, Stage

log = get_logger("rotator.engine")


@dataclass(frozen=True)
class RevokeGate:
    """What a look before revoke found: why revoke must wait (empty: it may go ahead), the run's details with
    what was found, and when to look again while it waits."""

    waiting_for: tuple[str, ...]
    details: RunDetails
    recheck_at: datetime | None = None

    @property
    def open(self) -> bool:
        return not self.waiting_for


def check_revoke(settings: RunSettings, bp: BoundPlan, record: RunRecord, core: StepCore) -> RevokeGate:
    """Whether the PREVIOUS of run `record` may be revoked now (see the module docstring)."""
    now = settings.now()
    details = record.details
    waiting: list[str] = []
    if bp.required_notifiers:
        records = {r.notifier: r for r in settings.journal.notifications(run_id=record.run_id)}
        for name, _ in bp.notifiers:
            if name not in bp.required_notifiers:
                continue
            delivery = records.get(name)
            if delivery is None or delivery.status is not NotifyStatus.SUCCEEDED:
                why = f": {delivery.last_error}" if delivery is not None and delivery.last_error else ""
                waiting.append(f"required notifier {name} has not succeeded{why}")
    previous = core.store.read(Stage.PREVIOUS)
    ours = previous is not None and previous.version_id == record.previous_version_id
    if not waiting and ours and previous is not None and isinstance(bp.plugin, UsageProbe):
        details, users = _users_of(settings, bp.plugin, record, core, previous, details)
        if users:
            deadline = details.revoke_deadline_at or now + bp.revoke_deadline
            details = dataclasses.replace(details, revoke_deadline_at=deadline)
            if now < deadline:
                waiting.append(f"PREVIOUS still in use by {len(users)}: " + "; ".join(users[:5]))
            else:
                details = dataclasses.replace(details, revoked_while_in_use=users)
    if not waiting:
        return RevokeGate((), dataclasses.replace(details, revoke_waiting_for=()))
    recheck_at = now + timedelta(seconds=settings.revoke_recheck_seconds)
    if details.revoke_deadline_at and not any(w.startswith("required") for w in waiting):
        recheck_at = min(recheck_at, details.revoke_deadline_at)
    if tuple(waiting) != record.details.revoke_waiting_for:
        log.warning("revoke waits", waiting_for=waiting, recheck_at=recheck_at.isoformat())
    return RevokeGate(tuple(waiting), dataclasses.replace(details, revoke_waiting_for=tuple(waiting)), recheck_at)


def _users_of(
    settings: RunSettings,
    probe: UsageProbe,
    record: RunRecord,
    core: StepCore,
    previous: Credential,
    details: RunDetails,
) -> tuple[RunDetails, tuple[str, ...]]:
    """Ask the plugin who still uses PREVIOUS (since promote); the details with what it said, and the users.
    Unknown, or a check that failed: nobody (revoke is not held back by what cannot be known)."""
    since = promoted_at(record) or record.started_at
    try:
        users = core.retry(lambda: probe.in_use(core.ctx, previous, since=since))
    except Exception as exc:
        log.warning("could not tell whether PREVIOUS is still in use; revoking as planned", error=describe(exc))
        return dataclasses.replace(details, usage_check_error=describe(exc)), ()
    in_use = tuple(scrub(line) for line in users) if users is not None else None
    return dataclasses.replace(details, usage_checked_at=settings.now(), previous_in_use=in_use), in_use or ()
