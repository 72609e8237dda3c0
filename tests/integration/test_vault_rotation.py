"""Rotations through the engine (rotator.engine.runner.Runner) on a real OpenBao server, with KV v2 mounts and
secrets configured as operators configure them: mount-wide `cas_required`, per-secret and mount-wide
`metadata_cas_required`, `max_versions` of 1 and 2, `delete_version_after`; a human writing the secret during a
run; a read-only consumer token polling the secret through rotations and rollbacks (invariant 3); and Vault
hung, sealed or refusing the token in the middle of a run.

The store logs in with a token holding exactly README's least-privilege policy for its mount and prefix. The
plugin is `generated` (no target system: the store is the whole rotation), wrapped to record what each run made
and what revoke was handed, and to act at the test step (a human's write, an outage).
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import hvac
import pytest
from rotator_plugins.rotation.generated import GeneratedSecretPlugin
from rotator_plugins.stores.vault_kv2 import VaultKv2Store

from rotator.components import ComponentSetup
from rotator.engine.runner import BoundPlan, Runner, RunOutcome
from rotator.journal.sqlite import SqliteJournal
from rotator.model import Credential, RotationContext, RunState, Stage
from rotator.registry import load_store
from tests.servers.vault import PENDING_PREFIX, RequestLog, VaultServer

PREFIX = "rotator"
TOKEN_ENV = "ROTATOR_TEST_VAULT_TOKEN"


class RecordingPlugin(GeneratedSecretPlugin):
    """`generated`, recording each run's new value and what revoke got; `at_test` runs inside the test step."""

    def __init__(self) -> None:
        super().__init__({})
        self.made: dict[str, str] = {}  # run id -> the value it created
        self.revoked: list[tuple[str, str]] = []  # (PREVIOUS's version id, its value)
        self.at_test: Callable[[], None] | None = None

    def create(self, ctx: RotationContext, current: Credential) -> dict[str, Any]:
        value = super().create(ctx, current)
        self.made[ctx.run_id] = str(value["value"])
        return value

    def test(self, ctx: RotationContext, pending: Credential) -> None:
        super().test(ctx, pending)
        if self.at_test is not None:
            action, self.at_test = self.at_test, None
            action()

    def revoke(self, ctx: RotationContext, previous: Credential, current: Credential) -> None:
        super().revoke(ctx, previous, current)
        self.revoked.append((previous.version_id, str(previous.value["value"])))


@dataclasses.dataclass
class VaultPlan:
    server: VaultServer
    mount: str
    secret_id: str
    store: VaultKv2Store
    plugin: RecordingPlugin
    runner: Runner
    bp: BoundPlan
    journal: SqliteJournal
    seed: str
    log: RequestLog

    @property
    def path(self) -> str:
        return f"{PREFIX}/{self.secret_id}"

    def rotate(self, **kwargs: Any) -> RunOutcome:
        return self.runner.rotate(self.bp, **kwargs)

    def latest(self) -> dict[str, Any]:
        """What a consumer reads: the path's latest version, as root sees it (data and metadata)."""
        data: dict[str, Any] = self.server.client().secrets.kv.v2.read_secret_version(
            path=self.path, mount_point=self.mount, raise_on_deleted_version=True
        )["data"]
        return data

    def latest_value(self) -> str:
        return str(self.latest()["data"]["value"])

    def staging(self) -> dict[str, Any] | None:
        return self.server.metadata(f"{PREFIX}/{PENDING_PREFIX}/{self.secret_id}", mount=self.mount)

    def meta(self, **settings: Any) -> None:
        """POST <mount>/metadata/<path> as an operator (per-secret settings)."""
        self.server.client().adapter.post(f"/v1/{self.mount}/metadata/{self.path}", json=settings)

    def current(self) -> Credential:
        credential = self.store.get(self.secret_id, Stage.CURRENT)
        assert credential is not None
        return credential


@pytest.fixture
def vault_plan(
    vault_server: VaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., VaultPlan]]:
    journals: list[SqliteJournal] = []

    def make(mount: str = "secret", *, step_timeout: float = 30, timeout: float = 10, **bp: Any) -> VaultPlan:
        setup = ComponentSetup(name="vault", config_dir=tmp_path, state_dir=tmp_path)
        monkeypatch.setenv(TOKEN_ENV, vault_server.rotator_token_for(mount, PREFIX))
        options = {
            "url": vault_server.url,
            "mount_point": mount,
            "path_prefix": PREFIX,
            "timeout": timeout,
            "auth": {"method": "token", "token": f"env:{TOKEN_ENV}"},
        }
        store = load_store("vault-kv2", options, setup, "stores.vault")
        assert isinstance(store, VaultKv2Store)
        log = RequestLog(store.client)
        secret_id = f"app/{uuid.uuid4().hex[:12]}"
        seed = "seed-" + uuid.uuid4().hex
        store.put_current(secret_id, {"value": seed})
        plugin = RecordingPlugin()
        journal = SqliteJournal(tmp_path / f"journal-{uuid.uuid4().hex[:6]}.db")
        journals.append(journal)
        plan = BoundPlan(
            plan_id=f"vault-{uuid.uuid4().hex[:6]}",
            secret_id=secret_id,
            store_name="vault",
            store=store,
            plugin=plugin,
            **bp,
        )
        runner = Runner(journal, step_timeout=step_timeout)
        return VaultPlan(vault_server, mount, secret_id, store, plugin, runner, plan, journal, seed, log)

    yield make
    for journal in journals:
        journal.close()


def data_writes(plan: VaultPlan) -> list[Any]:
    return [r for r in plan.log.since() if r.method == "POST" and f"/v1/{plan.mount}/data/" in r.path]


# -- mount-wide cas_required -----------------------------------------------------------------------------------


@pytest.mark.parametrize("failpoint", [None, "after-test=error", "after-store-promote=error", "after-promote=error"])
def test_cas_required_mount(
    vault_plan: Callable[..., VaultPlan], vault_server: VaultServer, monkeypatch: pytest.MonkeyPatch, failpoint: Any
) -> None:
    """On a mount with `cas_required = true` every data write passes cas (staging and unpromote's included), and
    a run that fails after promote rolls back to rolled_back (it used to be stuck: unpromote's staging write had
    no cas)."""
    mount = vault_server.kv_mount(cas_required=True)
    plan = vault_plan(mount)
    if failpoint:
        monkeypatch.setenv("ROTATOR_FAILPOINTS", failpoint)
    outcome = plan.rotate(revoke_old_now=True)
    writes = data_writes(plan)
    assert writes and all("cas" in (w.body or {}).get("options", {}) for w in writes), writes
    if failpoint is None:
        assert outcome.outcome == RunState.SUCCEEDED.value, outcome
        assert plan.latest_value() == plan.plugin.made[str(outcome.run_id)]
        return
    assert outcome.outcome == RunState.ROLLED_BACK.value, outcome
    assert plan.latest_value() == plan.seed
    assert plan.current().version_id == "v1"
    assert plan.staging() is None  # PENDING discarded
    run = plan.journal.get_run(str(outcome.run_id))
    assert run is not None and run.state is RunState.ROLLED_BACK
    monkeypatch.delenv("ROTATOR_FAILPOINTS")
    assert plan.rotate(revoke_old_now=True).outcome == RunState.SUCCEEDED.value  # and the next run works


# -- metadata_cas_required ------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["secret", "mount"])
def test_metadata_cas_required_rotation_succeeds_and_is_recorded(
    vault_plan: Callable[..., VaultPlan], vault_server: VaultServer, where: str
) -> None:
    """OpenBao's metadata_cas_required (on the secret, or mount-wide): promote's record of the run passes
    metadata_cas, so the rotation succeeds and the journal and Vault agree (it used to write the new version,
    fail the record, and leave that version live while the journal said rolled back)."""
    mount = vault_server.kv_mount(metadata_cas_required=True) if where == "mount" else "secret"
    plan = vault_plan(mount)
    if where == "secret":
        plan.meta(metadata_cas_required=True)
    for _ in range(2):
        outcome = plan.rotate(revoke_old_now=True)
        assert outcome.outcome == RunState.SUCCEEDED.value, outcome
        assert plan.current().version_id == outcome.run_id
        assert plan.latest_value() == plan.plugin.made[str(outcome.run_id)]
        run = plan.journal.get_run(str(outcome.run_id))
        assert run is not None and run.state is RunState.SUCCEEDED
    assert plan.staging() is None


def test_metadata_cas_required_failure_after_promote_rolls_back(
    vault_plan: Callable[..., VaultPlan], monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = vault_plan()
    plan.meta(metadata_cas_required=True)
    monkeypatch.setenv("ROTATOR_FAILPOINTS", "after-promote=error")
    outcome = plan.rotate(revoke_old_now=True)
    assert outcome.outcome == RunState.ROLLED_BACK.value, outcome
    assert plan.latest_value() == plan.seed and plan.current().version_id == "v1"
    assert plan.staging() is None


def test_a_record_that_keeps_losing_the_metadata_race_never_leaves_the_new_value_live(
    vault_plan: Callable[..., VaultPlan], vault_server: VaultServer
) -> None:
    """Promote wrote the new version; then every try of its record loses to another metadata writer, so promote
    fails after the write. The rollback recognises the unrecorded version as the run's and restores the old
    value: the journal says rolled back and Vault's latest version is the old value (never the new one)."""
    plan = vault_plan()
    plan.meta(metadata_cas_required=True)
    root = vault_server.client()
    metadata_url = f"/v1/secret/metadata/{plan.path}"
    original = plan.store.client.adapter.post
    raced: list[int] = []

    def racing(url: str, **kwargs: Any) -> Any:
        if url == metadata_url and len(raced) < 3:  # promote's three tries; the rollback's record goes through
            raced.append(1)
            current = root.secrets.kv.v2.read_secret_metadata(path=plan.path)["data"]["current_metadata_version"]
            root.adapter.post(url, json={"custom_metadata": {"touched": str(len(raced))}, "metadata_cas": current})
        return original(url, **kwargs)

    plan.store.client.adapter.post = racing  # type: ignore[method-assign]
    outcome = plan.rotate(revoke_old_now=True)
    assert len(raced) == 3
    assert outcome.outcome == RunState.ROLLED_BACK.value, outcome
    run = plan.journal.get_run(str(outcome.run_id))
    assert run is not None and run.state is RunState.ROLLED_BACK
    new_value = plan.plugin.made[str(outcome.run_id)]
    assert plan.latest_value() == plan.seed != new_value
    assert plan.current().version_id == "v1"
    assert plan.staging() is None
    assert root.secrets.kv.v2.read_secret_metadata(path=plan.path)["data"]["custom_metadata"]["touched"] == "3"


# -- max_versions and delete_version_after ----------------------------------------------------------------------


@pytest.mark.parametrize("where", ["secret", "mount"])
def test_max_versions_1_is_refused_before_anything_is_written(
    vault_plan: Callable[..., VaultPlan], vault_server: VaultServer, where: str
) -> None:
    """max_versions = 1 would make Vault delete CURRENT's value at promote's write (no PREVIOUS left to revoke or
    restore): the run fails at create, before the new value is written anywhere, and says how to fix it."""
    mount = vault_server.kv_mount(max_versions=1) if where == "mount" else "secret"
    plan = vault_plan(mount)
    if where == "secret":
        plan.meta(max_versions=1)
    outcome = plan.rotate(revoke_old_now=True)
    assert outcome.outcome == RunState.ROLLED_BACK.value, outcome
    assert "max_versions = 1" in str(outcome.error) and "-max-versions=2" in str(outcome.error)
    assert plan.latest()["metadata"]["version"] == 1 and plan.latest_value() == plan.seed
    assert plan.staging() is None
    assert not data_writes(plan)[1:]  # only the seed was ever written


def test_max_versions_2_keeps_previous(vault_plan: Callable[..., VaultPlan], monkeypatch: pytest.MonkeyPatch) -> None:
    plan = vault_plan()
    plan.meta(max_versions=2)
    first = plan.rotate(revoke_old_now=True)
    second = plan.rotate(revoke_old_now=True)
    assert first.outcome == second.outcome == RunState.SUCCEEDED.value
    previous = plan.store.get(plan.secret_id, Stage.PREVIOUS)
    assert previous is not None and previous.version_id == first.run_id
    assert plan.plugin.revoked[-1] == (first.run_id, plan.plugin.made[str(first.run_id)])
    assert sorted(plan.server.metadata(plan.path)["versions"]) == ["2", "3"]  # type: ignore[index]
    monkeypatch.setenv("ROTATOR_FAILPOINTS", "after-promote=error")
    failed = plan.rotate(revoke_old_now=True)  # writes version 4, restores version 3's value as version 5
    assert failed.outcome == RunState.ROLLED_BACK.value, failed
    assert plan.current().version_id == second.run_id
    assert plan.latest_value() == plan.plugin.made[str(second.run_id)]


def test_delete_version_after_leaves_previous_readable_until_its_time(
    vault_plan: Callable[..., VaultPlan], vault_server: VaultServer
) -> None:
    """With delete_version_after (here mount-wide, as an operator sets it) every version carries a deletion time
    from its write on; until then PREVIOUS is PREVIOUS, and revoke gets it after grace (it used to look deleted at
    once, and revoke skipped it: the old credential stayed valid)."""
    plan = vault_plan(vault_server.kv_mount(delete_version_after="768h"), grace=timedelta(minutes=5))
    assert plan.server.metadata(plan.path, mount=plan.mount)["versions"]["1"]["deletion_time"]  # type: ignore[index]
    outcome = plan.rotate()
    assert outcome.outcome == RunState.AWAITING_REVOKE.value, outcome
    previous = plan.store.get(plan.secret_id, Stage.PREVIOUS)
    assert previous is not None and previous.value["value"] == plan.seed
    later = Runner(plan.journal, clock=lambda: datetime.now(UTC) + timedelta(minutes=10))
    [revoked] = later.revoke_due(plan.bp)
    assert revoked.outcome == RunState.SUCCEEDED.value, revoked
    assert plan.plugin.revoked == [("v1", plan.seed)]


def test_a_short_delete_version_after_deletes_current_too(
    vault_plan: Callable[..., VaultPlan], vault_server: VaultServer
) -> None:
    """Documented (README, Stores): Vault deletes every version once its delete_version_after has passed,
    CURRENT's included. Consumers then read nothing, PREVIOUS is gone for revoke, and the next run cannot start
    (recorded as failed, with the fix); set it longer than the rotation interval plus grace."""
    mount = vault_server.kv_mount(delete_version_after="3s")
    plan = vault_plan(mount)
    outcome = plan.rotate(revoke_old_now=True)
    assert outcome.outcome == RunState.SUCCEEDED.value, outcome
    time.sleep(3.5)
    consumer = vault_server.client(vault_server.consumer_token_for(mount, PREFIX))
    with pytest.raises(hvac.exceptions.InvalidPath):
        consumer.secrets.kv.v2.read_secret_version(path=plan.path, mount_point=mount, raise_on_deleted_version=True)
    assert plan.store.get(plan.secret_id, Stage.CURRENT) is None
    assert plan.store.get(plan.secret_id, Stage.PREVIOUS) is None
    again = plan.rotate(revoke_old_now=True)
    assert again.outcome == RunState.FAILED.value and "no CURRENT version" in str(again.error), again


# -- a human writes during the run -------------------------------------------------------------------------------


def test_a_human_write_during_the_run_is_kept_and_the_run_rolls_back(
    vault_plan: Callable[..., VaultPlan], vault_server: VaultServer
) -> None:
    plan = vault_plan()
    human = {"value": "human-" + uuid.uuid4().hex}
    root = vault_server.client()
    plan.plugin.at_test = lambda: root.secrets.kv.v2.create_or_update_secret(path=plan.path, secret=human)
    outcome = plan.rotate(revoke_old_now=True)
    assert outcome.outcome == RunState.ROLLED_BACK.value, outcome
    assert "changed since PENDING was staged" in str(outcome.error)
    assert plan.latest()["data"] == human and plan.latest()["metadata"]["version"] == 2
    assert plan.staging() is None
    assert plan.current().version_id == "v2"  # the human's version, as `rotator store put` names it
    assert plan.rotate(revoke_old_now=True).outcome == RunState.SUCCEEDED.value  # the next run starts from it


# -- what consumers read ------------------------------------------------------------------------------------------


def test_a_consumer_never_reads_a_value_that_was_not_current(
    vault_plan: Callable[..., VaultPlan], vault_server: VaultServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read-only consumer token (its own policy: the secrets, not the staging paths) polls the secret's path
    while real runs rotate, fail before promote, roll back after promote, and meet a human's write. It sees only
    values that were CURRENT: never the value of a run that failed before promote."""
    plan = vault_plan()
    consumer = vault_server.client(vault_server.consumer_token_for("secret", PREFIX))
    seen: set[str] = set()
    reads = [0]
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            response = consumer.secrets.kv.v2.read_secret_version(path=plan.path, raise_on_deleted_version=True)
            seen.add(str(response["data"]["data"]["value"]))
            reads[0] += 1

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    promoted = {plan.seed}
    never_current: set[str] = set()
    humans: set[str] = set()
    root = vault_server.client()
    try:
        for round_ in range(3):
            for failpoint in ("", "after-test=error", "after-promote=error", "after-store-put-pending=error"):
                monkeypatch.setenv("ROTATOR_FAILPOINTS", failpoint)
                outcome = plan.rotate(revoke_old_now=True)
                value = plan.plugin.made[str(outcome.run_id)]
                if failpoint in ("", "after-promote=error"):
                    promoted.add(value)  # it was CURRENT (until the rollback, for the second)
                else:
                    never_current.add(value)
                assert outcome.outcome == (RunState.SUCCEEDED if not failpoint else RunState.ROLLED_BACK).value
            monkeypatch.delenv("ROTATOR_FAILPOINTS")
            human = f"human-{round_}-{uuid.uuid4().hex}"
            humans.add(human)

            def write(human: str = human) -> None:
                root.secrets.kv.v2.create_or_update_secret(path=plan.path, secret={"value": human})

            plan.plugin.at_test = write
            conflicted = plan.rotate(revoke_old_now=True)
            assert conflicted.outcome == RunState.ROLLED_BACK.value
            never_current.add(plan.plugin.made[str(conflicted.run_id)])
        time.sleep(0.2)
    finally:
        stop.set()
        poller.join(timeout=10)
    assert reads[0] > 50, "the consumer barely polled"
    assert seen & never_current == set(), "a consumer read a PENDING value"
    assert seen <= promoted | humans
    assert len(seen) > 3
    with pytest.raises(hvac.exceptions.Forbidden):
        consumer.secrets.kv.v2.read_secret_version(
            path=f"{PREFIX}/{PENDING_PREFIX}/{plan.secret_id}", raise_on_deleted_version=True
        )


# -- Vault hung, sealed, refusing ---------------------------------------------------------------------------------


def test_vault_hung_for_three_seconds_mid_run(vault_plan: Callable[..., VaultPlan], vault_server: VaultServer) -> None:
    """The server stops answering (SIGSTOP) for 3 s right before promote: the calls time out (1 s), are retried
    until the step's deadline, and the run finishes once the server answers again."""
    plan = vault_plan(timeout=1)
    plan.plugin.at_test = lambda: vault_server.pause_for(3)
    started = time.monotonic()
    outcome = plan.rotate(revoke_old_now=True)
    assert outcome.outcome == RunState.SUCCEEDED.value, outcome
    assert time.monotonic() - started >= 2.5
    assert plan.latest_value() == plan.plugin.made[str(outcome.run_id)]


def test_vault_sealed_for_three_seconds_mid_run(
    vault_plan: Callable[..., VaultPlan], vault_server: VaultServer
) -> None:
    """Sealed (503 "Vault is sealed") for 3 s right before promote: retried, then the run finishes."""
    plan = vault_plan()

    def seal_for_three_seconds() -> None:
        vault_server.client().sys.seal()
        timer = threading.Timer(3, vault_server.unseal)
        timer.daemon = True
        timer.start()

    plan.plugin.at_test = seal_for_three_seconds
    outcome = plan.rotate(revoke_old_now=True)
    assert outcome.outcome == RunState.SUCCEEDED.value, outcome
    assert any(r.status == 503 for r in plan.log.since())
    assert plan.latest_value() == plan.plugin.made[str(outcome.run_id)]


def test_vault_refusing_the_token_mid_run_is_stuck_with_the_fix_then_resumes(
    vault_plan: Callable[..., VaultPlan], vault_server: VaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The token is revoked during the run: promote is refused (403), and so is the rollback's discard of
    PENDING, so the run is stuck with a fix naming the policy and the token; PENDING stays in Vault (on the path
    consumers do not read). With a valid token again, `resume` finishes the rollback."""
    plan = vault_plan()
    token = plan.store.client.token
    plan.plugin.at_test = lambda: vault_server.client().auth.token.revoke(token)
    outcome = plan.rotate(revoke_old_now=True)
    assert outcome.outcome == RunState.STUCK.value, outcome
    assert "permission denied" in str(outcome.error) and "token is still valid" in str(outcome.error)
    assert "rotator resume" in str(outcome.fix)
    assert plan.latest_value() == plan.seed and plan.staging() is not None
    monkeypatch.setenv(TOKEN_ENV, vault_server.rotator_token_for("secret", PREFIX))
    setup = ComponentSetup(name="vault", config_dir=tmp_path, state_dir=tmp_path)
    options = {"url": vault_server.url, "path_prefix": PREFIX, "auth": {"method": "token", "token": f"env:{TOKEN_ENV}"}}
    fresh = dataclasses.replace(plan.bp, store=load_store("vault-kv2", options, setup, "stores.vault"))
    [resumed] = plan.runner.resume(fresh)
    assert resumed.outcome == RunState.ROLLED_BACK.value, resumed
    assert plan.staging() is None and plan.latest_value() == plan.seed
