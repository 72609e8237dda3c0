"""A PENDING version that no run claims: its run was lost (the journal lost after a power cut, or deleted), while
the store, which fsyncs every write, still holds what that run stored. The runner adopts it as a run of its own
(trigger `resume`) and rolls it back, or, for a plugin that rolls forward, finishes it.
"""

from __future__ import annotations

from rotator.engine.plans import BoundPlan, RunSettings
from rotator.errors import SecretNotFound
from rotator.logs import get_logger
from rotator.model import Lease, RunRecord, RunState, Stage, Step, StepAction, Trigger

log = get_logger("rotator.engine")
LOST = "interrupted; run was lost"


def adopt_orphan(settings: RunSettings, bp: BoundPlan, lease: Lease) -> RunRecord | None:
    """The plan's PENDING version as a run journaled now (running), when the store holds one and no run claims it;
    None otherwise. A PENDING that an open run claims is that run's to settle; one whose run has ended is left
    as it is, with a warning (nothing accepts it: its run unstaged it, and the next rotation replaces it)."""
    try:
        pending = bp.store.get(bp.secret_id, Stage.PENDING)
        current = bp.store.get(bp.secret_id, Stage.CURRENT) if pending is not None else None
    except SecretNotFound:
        return None
    if pending is None or current is None:
        return None
    claimed = settings.journal.get_run(pending.version_id)
    if claimed is not None:
        if not claimed.state.is_open:
            log.warning("a PENDING version belongs to a run that ended; left as it is", run=claimed.run_id,
                        state=claimed.state.value)  # fmt: skip
        return None
    record = RunRecord(
        run_id=pending.version_id,
        plan_id=bp.plan_id,
        state=RunState.RUNNING,
        trigger=Trigger.RESUME,
        started_at=settings.now(),
        store=bp.store_name,
        secret_id=bp.secret_id,
        reason="recovered a PENDING version that no run claimed",
        version_id=pending.version_id,
        previous_version_id=current.version_id,
    )
    settings.journal.begin_run(record, lease)
    return record


def mark_lost_steps(settings: RunSettings, record: RunRecord, lease: Lease) -> None:
    """Journal create and stage as started and failed: the lost run may have got that far, so both are undone."""
    for step in (Step.CREATE, Step.STAGE):
        settings.journal.step_started(record.run_id, step, StepAction.FORWARD, lease)
        settings.journal.step_finished(record.run_id, step, StepAction.FORWARD, lease, error=LOST)
