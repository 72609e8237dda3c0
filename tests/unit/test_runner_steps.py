"""rotator/engine/steps.py on its own, over an in-memory RunStore: the semantics both drivers (the runner and the
Lambda adapter) get from it. Store-first create, reading first only when asked, discarding the value that lost
the write; promote by labels; the revoke guard; putting CURRENT back when a step after stage fails; the fan-out."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from rotator.engine.steps import StepCore, default_wants, promote, tell
from rotator.errors import NotifyError, RotatorError, StepError, StoreError, TestFailed, VersionConflict
from rotator.model import Credential, PasswordPolicy, RotationContext, RotationEvent, Stage
from rotator.retry import Deadline
from tests.unit.fake_target import FakePlugin, FakeTarget

RUN = "run-2"


@dataclass
class MemoryStore:
    """A RunStore over a dict of versions and their labels; counts reads and writes."""

    versions: dict[str, dict[str, Any]] = field(default_factory=dict)
    labels: dict[Stage, str] = field(default_factory=dict)
    reads: int = 0
    writes: list[str] = field(default_factory=list)

    @property
    def version_id(self) -> str:
        return RUN

    def read(self, stage: Stage) -> Credential | None:
        self.reads += 1
        version = RUN if stage is Stage.PENDING else self.labels.get(stage)
        if version is None or version not in self.versions:
            return None
        return Credential(version, self.versions[version], frozenset({stage}))

    def holder(self, stage: Stage) -> str | None:
        return self.labels.get(stage)

    def read_secret(self, secret_id: str) -> Credential:
        raise AssertionError("no other secret here")

    def put_pending(self, value: Mapping[str, Any]) -> None:
        self.writes.append("put-pending")
        if RUN in self.versions and self.versions[RUN] != dict(value):
            raise VersionConflict("the version holds another value")
        self.versions[RUN] = dict(value)
        self.labels[Stage.PENDING] = RUN

    def promote(self) -> None:
        self.writes.append("promote")
        self.labels[Stage.PREVIOUS] = self.labels[Stage.CURRENT]
        self.labels[Stage.CURRENT] = RUN

    def missing(self, stage: Stage) -> RotatorError:
        return StoreError(f"no {stage.value}")


class Minting(FakePlugin):
    """A provider that mints at create (counted), with a Reconciler that says what it deleted."""

    def __init__(self, target: FakeTarget):
        super().__init__(target)
        self.minted: list[str] = []
        self.discarded: list[str] = []
        self.known: list[list[str]] = []

    def create(self, ctx: RotationContext, current: Credential) -> dict[str, Any]:
        value = super().create(ctx, current)
        self.minted.append(value["password"])
        return value

    def discard(self, ctx: RotationContext, pending: Credential) -> None:
        super().discard(ctx, pending)
        self.discarded.append(pending["password"])

    def reconcile(self, ctx: RotationContext, known: list[Credential]) -> list[str]:
        self.known.append([c.version_id for c in known])
        return []


def core_over(store: MemoryStore, plugin: FakePlugin) -> StepCore:
    ctx = RotationContext("p1", RUN, "s", "single-user", {}, PasswordPolicy(), read_secret=store.read_secret)
    return StepCore(plugin, ctx, store, Deadline(5))


@pytest.fixture
def seeded() -> tuple[MemoryStore, FakeTarget]:
    store = MemoryStore(
        versions={"run-0": {"username": "app", "password": "older-password-0"},
                  "run-1": {"username": "app", "password": "first-password-1"}},
        labels={Stage.PREVIOUS: "run-0", Stage.CURRENT: "run-1"},
    )  # fmt: skip
    target = FakeTarget(accepted={"app": {"first-password-1"}})
    return store, target


def test_create_stores_first_and_reconciles_before_minting(seeded: tuple[MemoryStore, FakeTarget]) -> None:
    store, target = seeded
    plugin = Minting(target)
    core = core_over(store, plugin)
    assert core.create() is True
    assert store.writes == ["put-pending"] and store.versions[RUN]["password"] == plugin.minted[0]
    assert plugin.known == [["run-1", "run-0"]], "reconcile saw CURRENT and PREVIOUS before the mint"
    assert target.calls == ["create"] and core.maybe_applied and core.target_calls == 1
    assert core.create() is False and len(plugin.minted) == 1, "read first: a repeat mints nothing"


def test_a_write_that_finds_another_value_keeps_it_and_discards_the_new_one(
    seeded: tuple[MemoryStore, FakeTarget],
) -> None:
    store, target = seeded
    store.versions[RUN] = {"username": "app", "password": "stored-first-by-another"}
    plugin = Minting(target)
    core = core_over(store, plugin)
    assert core.create(read_first=False) is False
    assert store.versions[RUN]["password"] == "stored-first-by-another"
    assert plugin.discarded == plugin.minted, "the value that lost the write is deleted at the provider"


def test_stage_test_and_promote(seeded: tuple[MemoryStore, FakeTarget]) -> None:
    store, target = seeded
    core = core_over(store, FakePlugin(target))
    with pytest.raises(StoreError, match="no PENDING"):
        core.stage()
    core.create()
    core.begin_step()
    core.stage()
    core.test()
    assert promote(store) is True and store.labels[Stage.CURRENT] == RUN
    assert promote(store) is False and store.writes == ["put-pending", "promote"], "a repeat finds it done"


def test_promote_reads_labels_only() -> None:
    store = MemoryStore(versions={}, labels={Stage.CURRENT: "run-1", Stage.PENDING: RUN})
    assert promote(store) is True and store.reads == 0
    with pytest.raises(StoreError, match="no PENDING"):
        promote(MemoryStore(labels={Stage.CURRENT: "run-1"}))


def test_the_revoke_guard(seeded: tuple[MemoryStore, FakeTarget]) -> None:
    store, target = seeded
    core = core_over(store, FakePlugin(target))
    assert core.revoke(None) is False and core.revoke(RUN) is False
    assert core.revoke("run-9") is False, "the labels moved: not this rotation's to revoke"
    assert core.revoke("run-0", superseded_by=RUN) is False, "CURRENT is not the version that replaced it"
    assert target.calls == []
    assert core.revoke("run-0") is True and target.calls == ["revoke"]
    store.labels[Stage.PREVIOUS] = "run-1"  # a reseed left one version under both labels
    assert core.revoke("run-1") is False and target.calls == ["revoke"], "CURRENT is never revoked"


def test_a_failure_after_stage_puts_current_back(seeded: tuple[MemoryStore, FakeTarget]) -> None:
    store, target = seeded
    core = core_over(store, FakePlugin(target))
    core.create()
    core.stage()
    target.fail["test"] = TestFailed("pending refused")
    with pytest.raises(TestFailed), core.unstaged_on_failure():
        core.test()
    assert target.calls[-2:] == ["test", "unstage"] and core.unstage_error is None
    assert target.logs_in(store.versions["run-1"]), "CURRENT logs in again"
    target.fail["unstage"] = StepError("target down")
    with pytest.raises(TestFailed), core.unstaged_on_failure():
        core.test()
    assert core.unstage_error is not None and "target down" in core.unstage_error


def test_refused_only_when_nothing_may_have_acted(seeded: tuple[MemoryStore, FakeTarget]) -> None:
    store, target = seeded
    core = core_over(store, FakePlugin(target))
    core.begin_step()
    assert core.refused(StoreError("the store failed first")), "no target call was made"
    target.fail["create"] = StepError("the connection dropped mid-statement")
    with pytest.raises(StepError):
        core.create()
    assert not core.refused(StepError("x")), "a call that failed after it was sent may have acted"


class _Ledger:
    def __init__(self, told: set[str]):
        self.told_before = told
        self.results: dict[str, str] = {}

    def told(self, notifier: str) -> bool:
        return notifier in self.told_before

    def delivered(self, notifier: str) -> None:
        self.results[notifier] = "delivered"

    def failed(self, notifier: str, error: str) -> None:
        self.results[notifier] = error


def test_tell_skips_the_told_and_the_unsubscribed_and_never_raises() -> None:
    from datetime import UTC, datetime

    got: list[str] = []

    def ok(event: RotationEvent) -> None:
        got.append(event.kind)

    def broken(event: RotationEvent) -> None:
        raise NotifyError("receiver said 500")

    event = RotationEvent("p1", RUN, "s", "local", RUN, "run-1", datetime.now(UTC), "manual")
    ledger = _Ledger(told={"before"})
    notifiers = [("ops", ok), ("before", ok), ("down", broken), ("failures-only", ok)]
    wants = lambda name, kind: name != "failures-only" and default_wants(name, kind)  # noqa: E731
    failed = tell(event, notifiers, ledger, tries=2, deadline_seconds=5, wants=wants)
    assert failed == ["down"] and got == ["credential.rotated"]
    assert ledger.results == {"ops": "delivered", "down": "NotifyError: receiver said 500"}
