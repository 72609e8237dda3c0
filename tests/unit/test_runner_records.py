"""The runner's typed records: a run's details as fields (stored as the same JSON object as before, old rows
loadable, unknown keys kept), outcomes and step statuses as StrEnums that still read as their text."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from pathlib import Path

from rotator.engine.plans import RunOutcome
from rotator.journal.sqlite import SqliteJournal
from rotator.model import NO_DETAILS, Outcome, RunDetails, RunRecord, RunState, Trigger

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

# A row's details as the journal stored them before RunDetails existed (every key the engine wrote).
OLD_ROW = {
    "reconcile": "LoginRefused: password authentication failed for user app",
    "roll_forward": True,
    "rollback_refused": "required notifier deploy failed, but PREVIOUS no longer works",
    "alerts": {"credential.rotation_failed": {"ops": "delivered"}, "repeated_failures": {"ops": "failed: x"}},
    "revoke_waiting_for": ["PREVIOUS still in use by 1: pid 7"],
    "revoke_deadline_at": "2024-05-01T14:00:00+00:00",
    "previous_in_use": ["pid 7 from 10.0.0.9"],
    "usage_checked_at": "2024-05-01T12:00:00+00:00",
    "usage_check_error": "TransientError: timeout",
    "revoked_while_in_use": ["pid 7 from 10.0.0.9"],
    "some_newer_key": {"kept": [1, 2]},
}


def test_an_old_row_loads_as_typed_fields_and_writes_back_the_same_json() -> None:
    details = RunDetails.from_json(OLD_ROW)
    assert details.reconcile is not None and details.roll_forward
    assert details.revoke_deadline_at == datetime(2024, 5, 1, 14, 0, tzinfo=UTC)
    assert details.previous_in_use == ("pid 7 from 10.0.0.9",)
    assert details.alerts["repeated_failures"] == {"ops": "failed: x"}
    assert details.extra == {"some_newer_key": {"kept": [1, 2]}}
    assert details.as_json() == OLD_ROW
    assert details == OLD_ROW and dict(details) == OLD_ROW, "as a Mapping it is the stored object"
    assert details["previous_in_use"] == ["pid 7 from 10.0.0.9"] and details.get("missing") is None


def test_unset_facts_are_left_out_and_nobody_in_use_is_kept() -> None:
    assert RunDetails().as_json() == {} and not NO_DETAILS and RunDetails.from_json(None) is NO_DETAILS
    nobody = RunDetails(previous_in_use=())
    assert nobody.as_json() == {"previous_in_use": []}, "nobody on PREVIOUS is a fact; unknown (None) is not"
    waited = dataclasses.replace(RunDetails.from_json(OLD_ROW), revoke_waiting_for=())
    assert "revoke_waiting_for" not in waited
    alerted = NO_DETAILS.with_alerts("credential.rotation_stuck", {"pager": "delivered"})
    assert alerted.as_json() == {"alerts": {"credential.rotation_stuck": {"pager": "delivered"}}}


def test_details_round_trip_through_the_journal(tmp_path: Path) -> None:
    journal = SqliteJournal(tmp_path / "journal.db")
    try:
        lease = journal.acquire_lease("p1", 60)
        assert lease is not None
        journal.begin_run(RunRecord("r1", "p1", RunState.RUNNING, Trigger.MANUAL, NOW, "local", "s"), lease)
        journal.update_run("r1", lease, details=RunDetails.from_json(OLD_ROW))
        stored = journal._db.execute("select details from runs where run_id = 'r1'").fetchone()[0]
        assert json.loads(stored) == OLD_ROW, "the stored format is the JSON object it always was"
        got = journal.get_run("r1")
        assert got is not None and got.details == OLD_ROW and got.details.revoked_while_in_use
        journal.update_run("r1", lease, details={"plain": "dict"})  # a caller still handing a mapping
        assert journal.get_run("r1").details.extra == {"plain": "dict"}  # type: ignore[union-attr]
    finally:
        journal.close()


def test_a_record_given_a_mapping_holds_run_details() -> None:
    record = RunRecord("r1", "p1", RunState.RUNNING, Trigger.MANUAL, NOW, "local", "s", details={"roll_forward": True})
    assert isinstance(record.details, RunDetails) and record.details.roll_forward


def test_outcomes_are_an_enum_that_reads_as_its_text() -> None:
    outcome = RunOutcome("p1", "busy", error="held")  # callers outside the engine may name it by its text
    assert outcome.outcome is Outcome.BUSY and outcome.outcome == "busy" and f"{outcome.outcome}" == "busy"
    assert not outcome.ok and outcome.as_dict()["outcome"] == "busy"
    assert json.dumps(outcome.as_dict())
    for state in RunState:
        assert Outcome(state.value).value == state.value, "every run state is an outcome"
    assert RunOutcome("p1", Outcome.ROLLED_BACK).settled and RunOutcome("p1", RunState.SUCCEEDED.value).ok
