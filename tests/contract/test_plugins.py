"""The plugin contract (rotator.testing.PluginContract) over every built-in rotation plugin: on real servers, and
for the API-key plugins over the HTTP fakes of the vendors' APIs (no vendor can be reached from the tests).

Per plugin and strategy: a full rotation with grace and revoke, each method twice, one run per plan, no secret
anywhere, the plugin's own errors, and a failure (`error`) and a crash (`abort`, then resume with new objects) at
every failpoint of rotator/failpoints.py. The harnesses are in tests/contract/harnesses.py (real servers) and
harnesses_saas.py (the SaaS fakes).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rotator.errors import RotatorError
from rotator.failpoints import POINTS
from rotator.local_store import LocalStore
from rotator.testing.plugins import (
    CONTRACT_SECRET_ID,
    FAULTS,
    Fault,
    PluginContract,
    check_crash_then_resume,
    check_errors_carry_no_secret,
    check_failure_rolls_back,
    check_full_rotation,
    check_methods_idempotent,
    check_no_secret_leaks,
)
from tests.contract.harnesses import (
    AwsIamKeyHarness,
    GeneratedHarness,
    MySqlHarness,
    PostgresHarness,
    RedisHarness,
)
from tests.contract.harnesses_memory import (
    ErrorShowsThePassword,
    LogsTheNewPassword,
    MemoryHarness,
    MintsWithoutReconcile,
    MintsWithReconcile,
    RevokeForgets,
    RollsForward,
    StageNotIdempotent,
    UnstageForgets,
)
from tests.contract.harnesses_saas import (
    CloudflareHarness,
    DatadogHarness,
    HttpApiKeyHarness,
    SendGridHarness,
    TwilioHarness,
)
from tests.servers.aws import MotoServer
from tests.servers.mariadb import MariaDbServer
from tests.servers.postgres import PgServer
from tests.servers.redis import RedisServer

SINGLE = "single-user"


# Harnesses live as long as the module: each makes its admin account once; every scenario seeds its own credential.


@pytest.fixture(scope="module")
def postgres_harness(pg_server: PgServer) -> Iterator[PostgresHarness]:
    harness = PostgresHarness(pg_server)
    yield harness
    harness.close()


@pytest.fixture(scope="module")
def mysql_harness(mariadb_server: MariaDbServer) -> Iterator[MySqlHarness]:
    harness = MySqlHarness(mariadb_server)
    yield harness
    harness.close()


class TestGeneratedPlugin(PluginContract):
    strategies = GeneratedHarness.strategies

    @pytest.fixture
    def plugin_harness(self) -> GeneratedHarness:
        return GeneratedHarness()


class TestPostgresPlugin(PluginContract):
    strategies = PostgresHarness.strategies

    @pytest.fixture
    def plugin_harness(self, postgres_harness: PostgresHarness) -> PostgresHarness:
        return postgres_harness


class TestMySqlPlugin(PluginContract):
    strategies = MySqlHarness.strategies

    @pytest.fixture
    def plugin_harness(self, mysql_harness: MySqlHarness) -> MySqlHarness:
        return mysql_harness


class TestRedisPlugin(PluginContract):
    strategies = RedisHarness.strategies

    @pytest.fixture
    def plugin_harness(self, redis_server: RedisServer) -> RedisHarness:
        return RedisHarness(redis_server)


class TestAwsIamKeyPlugin(PluginContract):
    strategies = AwsIamKeyHarness.strategies

    @pytest.fixture
    def plugin_harness(self, moto_server: MotoServer) -> AwsIamKeyHarness:
        return AwsIamKeyHarness(moto_server)


# -- the API-key plugins, over the SaaS fakes written from the vendors' API references (tests/fakes) --------------


class TestDatadogContract(PluginContract):
    strategies = DatadogHarness.strategies

    @pytest.fixture
    def plugin_harness(self) -> DatadogHarness:
        return DatadogHarness()


class TestSendGridContract(PluginContract):
    strategies = SendGridHarness.strategies

    @pytest.fixture
    def plugin_harness(self) -> SendGridHarness:
        return SendGridHarness()


class TestTwilioContract(PluginContract):
    strategies = TwilioHarness.strategies

    @pytest.fixture
    def plugin_harness(self) -> TwilioHarness:
        return TwilioHarness()


class TestHttpApiKeyContract(PluginContract):
    strategies = HttpApiKeyHarness.strategies

    @pytest.fixture
    def plugin_harness(self) -> HttpApiKeyHarness:
        return HttpApiKeyHarness()


# Cloudflare rolls forward only in its `roll` strategy (rolls_forward_strategies): single-user (a new token, the old
# one valid until revoke) rolls back like any two-phase plugin.
class TestCloudflareNewTokenContract(PluginContract):
    strategies = ("single-user",)

    @pytest.fixture
    def plugin_harness(self) -> CloudflareHarness:
        return CloudflareHarness()


class TestCloudflareRollContract(PluginContract):
    strategies = ("roll",)

    @pytest.fixture
    def plugin_harness(self) -> CloudflareHarness:
        return CloudflareHarness()


# -- the kit itself: a correct in-memory plugin passes, and each broken one is caught ----------------------------


class TestMemoryPlugin(PluginContract):
    """The whole contract over a correct in-memory plugin (no server): the kit raises no false alarm."""

    strategies = ("single-user",)

    @pytest.fixture
    def plugin_harness(self) -> MemoryHarness:
        return MemoryHarness()


class RollsForwardHarness(MemoryHarness):
    def previous_still_valid_during_grace(self, strategy: str) -> bool:
        return False  # the roll invalidated it at create


class TestRollsForwardMemoryPlugin(PluginContract):
    """The whole contract over an in-memory provider that kills the old key when it mints the new one (Cloudflare's
    roll)."""

    strategies = ("single-user",)

    @pytest.fixture
    def plugin_harness(self) -> RollsForwardHarness:
        return RollsForwardHarness(RollsForward)


def fault(fault_id: str) -> Fault:
    [found] = [f for f in FAULTS if f.id == fault_id]
    return found


@pytest.mark.parametrize(
    ("broken", "check", "message"),
    [
        (UnstageForgets, lambda h, p: check_failure_rolls_back(h, SINGLE, fault("error:after-test"), p), "invariant 2"),
        (RevokeForgets, lambda h, p: check_full_rotation(h, SINGLE, p), "PREVIOUS still authenticates after revoke"),
        (StageNotIdempotent, lambda h, p: check_methods_idempotent(h, SINGLE, p), "stage is not idempotent"),
        (LogsTheNewPassword, lambda h, p: check_no_secret_leaks(h, SINGLE, p), "invariant 6: .* in the logs"),
        (ErrorShowsThePassword, lambda h, p: check_errors_carry_no_secret(h, SINGLE, p), "invariant 6"),
        (
            MintsWithoutReconcile,
            lambda h, p: check_crash_then_resume(h, SINGLE, fault("abort:before-store-put-pending"), p),
            "invariant 2: .*create returned",
        ),
        (
            MintsWithoutReconcile,
            lambda h, p: check_methods_idempotent(h, SINGLE, p),
            "repeated create is valid but in no store",
        ),
    ],
    ids=[
        "unstage-forgets",
        "revoke-forgets",
        "stage-twice",
        "logs-secret",
        "error-secret",
        "orphan-crash",
        "orphan-create-twice",
    ],
)
def test_the_kit_catches_a_broken_plugin(broken, check, message: str, tmp_path: Path) -> None:
    with pytest.raises((AssertionError, RotatorError), match=message):
        check(MemoryHarness(broken), tmp_path)


def test_a_minting_plugin_with_reconcile_passes_the_crash_checks(tmp_path: Path) -> None:
    harness = MemoryHarness(MintsWithReconcile)
    for point in ("before-store-put-pending", "after-create", "after-store-put-pending", "after-stage"):
        check_crash_then_resume(harness, SINGLE, fault(f"abort:{point}"), tmp_path / point)
        check_failure_rolls_back(harness, SINGLE, fault(f"error:{point}"), tmp_path / f"error-{point}")
    check_methods_idempotent(harness, SINGLE, tmp_path / "idempotent")


def test_the_kit_catches_a_store_that_shows_pending(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Invariant 3 as the kit sees it: a store whose put_pending also moves CURRENT is caught at the first
    failpoint after it."""
    original = LocalStore.put_pending

    def put_pending_and_show_it(self: LocalStore, secret_id: str, value: Any, version_id: str) -> Any:
        written = original(self, secret_id, value, version_id)
        if secret_id == CONTRACT_SECRET_ID:
            self.promote(secret_id, version_id)
            original(self, secret_id, value, version_id)  # PENDING again, on the version consumers now read
        return written

    monkeypatch.setattr(LocalStore, "put_pending", put_pending_and_show_it)
    with pytest.raises(AssertionError, match="invariant 3"):
        check_failure_rolls_back(MemoryHarness(), SINGLE, fault("error:after-test"), tmp_path)


def test_fault_scenarios_cover_every_failpoint() -> None:
    for action in ("error", "abort"):
        assert {f.point for f in FAULTS if f.action == action} == set(POINTS)
    assert fault("error:before-rollback-unpromote").trigger == "after-store-promote"
    assert fault("abort:after-store-discard-pending").trigger == "after-test"
    assert fault("error:after-stage").trigger is None


def test_a_rolls_forward_plugin_keeps_a_valid_credential_after_a_failure(tmp_path: Path) -> None:
    """The engine holds PENDING (stuck) instead of rolling back, and resume finishes forward: the kit accepts it.
    The same plugin with the flag cleared is rolled back to a CURRENT that no longer works, and the kit says so."""
    check_failure_rolls_back(RollsForwardHarness(RollsForward), SINGLE, fault("error:after-test"), tmp_path / "a")
    check_crash_then_resume(RollsForwardHarness(RollsForward), SINGLE, fault("abort:after-stage"), tmp_path / "b")

    class ClaimsToRollBack(RollsForward):
        rolls_forward = False

    with pytest.raises(AssertionError, match="invariant 1"):
        harness = RollsForwardHarness(ClaimsToRollBack)
        check_failure_rolls_back(harness, SINGLE, fault("error:after-test"), tmp_path / "c")


def test_a_rolls_forward_plugin_rotates(tmp_path: Path) -> None:
    check_full_rotation(RollsForwardHarness(RollsForward), SINGLE, tmp_path)
