"""The public test kit for people who write stores (and, later, plugins and notifiers) for the rotator.

The store contract is what the engine relies on from every SecretStore: PENDING writes idempotent per version id
and refusing a different value, promote moving the labels (CURRENT to PREVIOUS) idempotently, unpromote, discard,
each stage readable, a consumer's default read never seeing PENDING (invariant 3), and a run that crashed between
put_pending and promote finishing with a new store object. The same suite runs over the built-in stores in
tests/contract/; run it over yours in one of two ways.

As a pytest class: subclass `StoreContract` (name the subclass Test...) and give it a `store_factory` fixture,
a callable that returns a new store object over the same backend each time it is called::

    import pytest
    from rotator.testing import StoreContract

    class TestMyStore(StoreContract):
        @pytest.fixture
        def store_factory(self, tmp_path):
            return lambda: MyStore({"url": ...}, setup)

        def read_as_consumer(self, store, secret_id):  # optional: how your consumers read the secret
            return my_client.read(secret_id)

As plain functions, e.g. from a script: `run_store_contract(factory)`, or each `check_*` in `STORE_CHECKS`.
Each check uses its own new secret id (`contract/<random>`), so checks share a backend safely.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from typing import Any

from rotator.errors import SecretNotFound, VersionConflict
from rotator.interfaces import SecretStore
from rotator.model import Credential, Stage, sensitive_strings

StoreFactory = Callable[[], SecretStore]
# What a consumer sees when it reads the secret the way consumers do (the store's default), or None.
ConsumerRead = Callable[[SecretStore, str], Mapping[str, Any] | None]

__all__ = [
    "STORE_CHECKS",
    "ConsumerRead",
    "StoreContract",
    "StoreFactory",
    "new_run_id",
    "new_secret_id",
    "read_current",
    "run_store_contract",
    "sample_value",
]


def new_secret_id(prefix: str = "contract") -> str:
    return f"{prefix}/{uuid.uuid4().hex[:16]}"


def new_run_id() -> str:
    """A run id as the engine makes them (uuid4 hex: 32 characters, a valid AWS ClientRequestToken)."""
    return uuid.uuid4().hex


def sample_value(tag: str = "") -> dict[str, Any]:
    """A secret value in the shape of AWS's rotation samples, with a fresh password."""
    return {
        "engine": "postgres",
        "host": "db.internal",
        "port": 5432,
        "username": "app",
        "password": f"pw-{tag}-{uuid.uuid4().hex}",
        "dbname": "orders",
    }


def read_current(store: SecretStore, secret_id: str) -> Mapping[str, Any] | None:
    """The default consumer read: the store's CURRENT."""
    credential = store.get(secret_id, Stage.CURRENT)
    return None if credential is None else credential.value


def _must_get(store: SecretStore, secret_id: str, stage: Stage) -> Credential:
    credential = store.get(secret_id, stage)
    assert credential is not None, f"{stage.value} of {secret_id} is missing"
    return credential


def _seed(store: SecretStore) -> tuple[str, Credential]:
    secret_id = new_secret_id()
    return secret_id, store.put_current(secret_id, sample_value("seed"))


def _assert_no_value_in(text: str, *values: Mapping[str, Any]) -> None:
    for value in values:
        for secret in sensitive_strings(value):
            assert secret not in text, "an error message shows a secret value"


# -- the checks -------------------------------------------------------------------------------------------------


def check_seed_and_read(new_store: StoreFactory, consumer_read: ConsumerRead = read_current) -> None:
    """put_current makes a CURRENT version; each stage reads back; a second put_current moves CURRENT to PREVIOUS."""
    store = new_store()
    secret_id = new_secret_id()
    value = sample_value("seed")
    seeded = store.put_current(secret_id, value)
    assert Stage.CURRENT in seeded.stages and dict(seeded.value) == value
    current = _must_get(store, secret_id, Stage.CURRENT)
    assert current.version_id == seeded.version_id
    assert dict(current.value) == value
    assert Stage.CURRENT in current.stages
    assert store.get(secret_id, Stage.PENDING) is None
    assert dict(consumer_read(store, secret_id) or {}) == value
    second = store.put_current(secret_id, sample_value("reseed"))
    assert second.version_id != seeded.version_id
    assert _must_get(store, secret_id, Stage.CURRENT).version_id == second.version_id
    previous = _must_get(store, secret_id, Stage.PREVIOUS)
    assert previous.version_id == seeded.version_id and dict(previous.value) == value


def check_missing_secret(new_store: StoreFactory, consumer_read: ConsumerRead = read_current) -> None:
    """Reading any stage of a secret that does not exist raises SecretNotFound naming it."""
    store = new_store()
    secret_id = new_secret_id("missing")
    for stage in Stage:
        try:
            store.get(secret_id, stage)
        except SecretNotFound as exc:
            assert secret_id in str(exc), f"SecretNotFound does not name the secret: {exc}"
        else:
            raise AssertionError(f"get({stage.value}) of a missing secret did not raise SecretNotFound")


def check_put_pending(new_store: StoreFactory, consumer_read: ConsumerRead = read_current) -> None:
    """put_pending stores PENDING under the run id; CURRENT and the consumer's read do not change."""
    store = new_store()
    secret_id, seeded = _seed(store)
    run_id, value = new_run_id(), sample_value("new")
    written = store.put_pending(secret_id, value, run_id)
    assert written.version_id == run_id and Stage.PENDING in written.stages and dict(written.value) == value
    pending = _must_get(store, secret_id, Stage.PENDING)
    assert pending.version_id == run_id and dict(pending.value) == value
    assert Stage.PENDING in pending.stages
    assert _must_get(store, secret_id, Stage.CURRENT).version_id == seeded.version_id
    assert dict(consumer_read(store, secret_id) or {}) == dict(seeded.value)


def check_put_pending_idempotent(new_store: StoreFactory, consumer_read: ConsumerRead = read_current) -> None:
    """The same run id and value again (also from a new store object) is a no-op."""
    store = new_store()
    secret_id, seeded = _seed(store)
    run_id, value = new_run_id(), sample_value("new")
    store.put_pending(secret_id, value, run_id)
    again = store.put_pending(secret_id, dict(value), run_id)
    assert again.version_id == run_id and dict(again.value) == value
    new_store().put_pending(secret_id, value, run_id)
    pending = _must_get(store, secret_id, Stage.PENDING)
    assert pending.version_id == run_id and dict(pending.value) == value
    assert _must_get(store, secret_id, Stage.CURRENT).version_id == seeded.version_id


def check_put_pending_conflict(new_store: StoreFactory, consumer_read: ConsumerRead = read_current) -> None:
    """The same run id with another value raises VersionConflict, shows neither value, and changes nothing."""
    store = new_store()
    secret_id, _ = _seed(store)
    run_id, value, other = new_run_id(), sample_value("new"), sample_value("other")
    store.put_pending(secret_id, value, run_id)
    try:
        store.put_pending(secret_id, other, run_id)
    except VersionConflict as exc:
        _assert_no_value_in(str(exc), value, other)
    else:
        raise AssertionError("put_pending with the same run id and another value did not raise VersionConflict")
    pending = _must_get(store, secret_id, Stage.PENDING)
    assert pending.version_id == run_id and dict(pending.value) == value


def check_put_pending_replaces_other_run(new_store: StoreFactory, consumer_read: ConsumerRead = read_current) -> None:
    """A PENDING of another run id is replaced."""
    store = new_store()
    secret_id, _ = _seed(store)
    first, second = new_run_id(), new_run_id()
    store.put_pending(secret_id, sample_value("first"), first)
    value = sample_value("second")
    store.put_pending(secret_id, value, second)
    pending = _must_get(store, secret_id, Stage.PENDING)
    assert pending.version_id == second and dict(pending.value) == value


def check_promote(new_store: StoreFactory, consumer_read: ConsumerRead = read_current) -> None:
    """promote: PENDING becomes CURRENT, CURRENT becomes PREVIOUS, nothing is PENDING; consumers see the new value."""
    store = new_store()
    secret_id, seeded = _seed(store)
    run_id, value = new_run_id(), sample_value("new")
    store.put_pending(secret_id, value, run_id)
    store.promote(secret_id, run_id)
    current = _must_get(store, secret_id, Stage.CURRENT)
    assert current.version_id == run_id and dict(current.value) == value and Stage.CURRENT in current.stages
    previous = _must_get(store, secret_id, Stage.PREVIOUS)
    assert previous.version_id == seeded.version_id and dict(previous.value) == dict(seeded.value)
    assert store.get(secret_id, Stage.PENDING) is None
    assert dict(consumer_read(store, secret_id) or {}) == value


def check_promote_idempotent(new_store: StoreFactory, consumer_read: ConsumerRead = read_current) -> None:
    """promote again (also from a new store object) changes nothing."""
    store = new_store()
    secret_id, seeded = _seed(store)
    run_id, value = new_run_id(), sample_value("new")
    store.put_pending(secret_id, value, run_id)
    store.promote(secret_id, run_id)
    store.promote(secret_id, run_id)
    new_store().promote(secret_id, run_id)
    assert _must_get(store, secret_id, Stage.CURRENT).version_id == run_id
    assert _must_get(store, secret_id, Stage.PREVIOUS).version_id == seeded.version_id
    assert store.get(secret_id, Stage.PENDING) is None
    assert dict(consumer_read(store, secret_id) or {}) == value


def check_promote_requires_pending(new_store: StoreFactory, consumer_read: ConsumerRead = read_current) -> None:
    """promote of a version that is not PENDING raises VersionConflict and changes nothing."""
    store = new_store()
    secret_id, seeded = _seed(store)
    try:
        store.promote(secret_id, new_run_id())
    except VersionConflict:
        pass
    else:
        raise AssertionError("promote of a version that is not PENDING did not raise VersionConflict")
    assert _must_get(store, secret_id, Stage.CURRENT).version_id == seeded.version_id


def check_unpromote(new_store: StoreFactory, consumer_read: ConsumerRead = read_current) -> None:
    """unpromote: the old CURRENT is CURRENT again and the run's version PENDING; again is a no-op; promote works
    after it."""
    store = new_store()
    secret_id, seeded = _seed(store)
    run_id, value = new_run_id(), sample_value("new")
    store.put_pending(secret_id, value, run_id)
    store.promote(secret_id, run_id)
    store.unpromote(secret_id, run_id)
    current = _must_get(store, secret_id, Stage.CURRENT)
    assert current.version_id == seeded.version_id and dict(current.value) == dict(seeded.value)
    pending = _must_get(store, secret_id, Stage.PENDING)
    assert pending.version_id == run_id and dict(pending.value) == value
    assert dict(consumer_read(store, secret_id) or {}) == dict(seeded.value)
    new_store().unpromote(secret_id, run_id)
    assert _must_get(store, secret_id, Stage.CURRENT).version_id == seeded.version_id
    assert _must_get(store, secret_id, Stage.PENDING).version_id == run_id
    store.promote(secret_id, run_id)
    assert _must_get(store, secret_id, Stage.CURRENT).version_id == run_id
    assert _must_get(store, secret_id, Stage.PREVIOUS).version_id == seeded.version_id
    assert store.get(secret_id, Stage.PENDING) is None


def check_unpromote_not_current_is_noop(new_store: StoreFactory, consumer_read: ConsumerRead = read_current) -> None:
    """unpromote of a version that is not CURRENT changes nothing."""
    store = new_store()
    secret_id, seeded = _seed(store)
    run_id, value = new_run_id(), sample_value("new")
    store.put_pending(secret_id, value, run_id)
    store.unpromote(secret_id, run_id)
    store.unpromote(secret_id, new_run_id())
    assert _must_get(store, secret_id, Stage.CURRENT).version_id == seeded.version_id
    assert _must_get(store, secret_id, Stage.PENDING).version_id == run_id


def check_discard(new_store: StoreFactory, consumer_read: ConsumerRead = read_current) -> None:
    """discard_pending removes PENDING; again is a no-op; discarding another id keeps the PENDING there is."""
    store = new_store()
    secret_id, seeded = _seed(store)
    run_id = new_run_id()
    store.put_pending(secret_id, sample_value("new"), run_id)
    store.discard_pending(secret_id, new_run_id())
    assert _must_get(store, secret_id, Stage.PENDING).version_id == run_id
    store.discard_pending(secret_id, run_id)
    assert store.get(secret_id, Stage.PENDING) is None
    store.discard_pending(secret_id, run_id)
    new_store().discard_pending(secret_id, run_id)
    assert store.get(secret_id, Stage.PENDING) is None
    assert _must_get(store, secret_id, Stage.CURRENT).version_id == seeded.version_id
    assert dict(consumer_read(store, secret_id) or {}) == dict(seeded.value)


def check_default_read_never_sees_pending(new_store: StoreFactory, consumer_read: ConsumerRead = read_current) -> None:
    """Invariant 3: through put_pending, a replaced PENDING, discard and a rolled-back promote, a consumer reads
    only values that were CURRENT."""
    store = new_store()
    secret_id, seeded = _seed(store)
    seen: list[Mapping[str, Any] | None] = []

    def look() -> None:
        seen.append(consumer_read(store, secret_id))

    first, second = new_run_id(), new_run_id()
    first_value, second_value = sample_value("first"), sample_value("second")
    store.put_pending(secret_id, first_value, first)
    look()
    store.put_pending(secret_id, second_value, second)
    look()
    store.discard_pending(secret_id, second)
    look()
    store.put_pending(secret_id, second_value, second)
    store.promote(secret_id, second)
    store.unpromote(secret_id, second)
    look()
    for value in seen:
        assert dict(value or {}) == dict(seeded.value), "a consumer read a value that was never CURRENT"


def check_crash_between_put_pending_and_promote(
    new_store: StoreFactory, consumer_read: ConsumerRead = read_current
) -> None:
    """A run that stored PENDING and crashed resumes with a new store object: it sees its PENDING and promotes."""
    crashed = new_store()
    secret_id, seeded = _seed(crashed)
    run_id, value = new_run_id(), sample_value("new")
    crashed.put_pending(secret_id, value, run_id)
    del crashed
    resumed = new_store()
    pending = _must_get(resumed, secret_id, Stage.PENDING)
    assert pending.version_id == run_id and dict(pending.value) == value
    resumed.promote(secret_id, run_id)
    assert _must_get(resumed, secret_id, Stage.CURRENT).version_id == run_id
    assert _must_get(resumed, secret_id, Stage.PREVIOUS).version_id == seeded.version_id
    assert resumed.get(secret_id, Stage.PENDING) is None
    assert dict(consumer_read(resumed, secret_id) or {}) == value


def check_two_rotations(new_store: StoreFactory, consumer_read: ConsumerRead = read_current) -> None:
    """A second rotation makes the first one's version PREVIOUS; a reseed then makes the second PREVIOUS."""
    store = new_store()
    secret_id, _ = _seed(store)
    first, second = new_run_id(), new_run_id()
    store.put_pending(secret_id, sample_value("first"), first)
    store.promote(secret_id, first)
    value = sample_value("second")
    store.put_pending(secret_id, value, second)
    store.promote(secret_id, second)
    assert _must_get(store, secret_id, Stage.CURRENT).version_id == second
    assert _must_get(store, secret_id, Stage.PREVIOUS).version_id == first
    reseeded = store.put_current(secret_id, sample_value("reseed"))
    assert _must_get(store, secret_id, Stage.CURRENT).version_id == reseeded.version_id
    assert _must_get(store, secret_id, Stage.PREVIOUS).version_id == second


def check_values_round_trip(new_store: StoreFactory, consumer_read: ConsumerRead = read_current) -> None:
    """JSON values come back as written: nested objects, lists, numbers, booleans, null, non-ASCII text."""
    store = new_store()
    secret_id = new_secret_id()
    value = {
        "username": "ünïcødé-用户",
        "password": 'p@ss "quoted" \\ back',
        "port": 6379,
        "ratio": 0.5,
        "ssl": True,
        "proxy": None,
        "hosts": ["a", "b"],
        "nested": {"key": "value", "n": [1, 2, {"deep": False}]},
    }
    store.put_current(secret_id, value)
    assert dict(_must_get(new_store(), secret_id, Stage.CURRENT).value) == value
    run_id, following = new_run_id(), {**value, "password": sample_value("next")["password"]}
    store.put_pending(secret_id, following, run_id)
    assert dict(_must_get(new_store(), secret_id, Stage.PENDING).value) == following


STORE_CHECKS: tuple[Callable[[StoreFactory, ConsumerRead], None], ...] = (
    check_seed_and_read,
    check_missing_secret,
    check_put_pending,
    check_put_pending_idempotent,
    check_put_pending_conflict,
    check_put_pending_replaces_other_run,
    check_promote,
    check_promote_idempotent,
    check_promote_requires_pending,
    check_unpromote,
    check_unpromote_not_current_is_noop,
    check_discard,
    check_default_read_never_sees_pending,
    check_crash_between_put_pending_and_promote,
    check_two_rotations,
    check_values_round_trip,
)


def run_store_contract(new_store: StoreFactory, consumer_read: ConsumerRead = read_current) -> None:
    """Every check, in order; the first failure raises AssertionError (or the store's own error)."""
    for check in STORE_CHECKS:
        check(new_store, consumer_read)


class StoreContract:
    """The store contract as pytest tests. Subclass it as Test..., give it a `store_factory` fixture, and
    override `read_as_consumer` if consumers read your store some other way than `get(CURRENT)`."""

    def read_as_consumer(self, store: SecretStore, secret_id: str) -> Mapping[str, Any] | None:
        return read_current(store, secret_id)

    def test_seed_and_read(self, store_factory: StoreFactory) -> None:
        check_seed_and_read(store_factory, self.read_as_consumer)

    def test_missing_secret(self, store_factory: StoreFactory) -> None:
        check_missing_secret(store_factory, self.read_as_consumer)

    def test_put_pending(self, store_factory: StoreFactory) -> None:
        check_put_pending(store_factory, self.read_as_consumer)

    def test_put_pending_idempotent(self, store_factory: StoreFactory) -> None:
        check_put_pending_idempotent(store_factory, self.read_as_consumer)

    def test_put_pending_conflict(self, store_factory: StoreFactory) -> None:
        check_put_pending_conflict(store_factory, self.read_as_consumer)

    def test_put_pending_replaces_other_run(self, store_factory: StoreFactory) -> None:
        check_put_pending_replaces_other_run(store_factory, self.read_as_consumer)

    def test_promote(self, store_factory: StoreFactory) -> None:
        check_promote(store_factory, self.read_as_consumer)

    def test_promote_idempotent(self, store_factory: StoreFactory) -> None:
        check_promote_idempotent(store_factory, self.read_as_consumer)

    def test_promote_requires_pending(self, store_factory: StoreFactory) -> None:
        check_promote_requires_pending(store_factory, self.read_as_consumer)

    def test_unpromote(self, store_factory: StoreFactory) -> None:
        check_unpromote(store_factory, self.read_as_consumer)

    def test_unpromote_not_current_is_noop(self, store_factory: StoreFactory) -> None:
        check_unpromote_not_current_is_noop(store_factory, self.read_as_consumer)

    def test_discard(self, store_factory: StoreFactory) -> None:
        check_discard(store_factory, self.read_as_consumer)

    def test_default_read_never_sees_pending(self, store_factory: StoreFactory) -> None:
        check_default_read_never_sees_pending(store_factory, self.read_as_consumer)

    def test_crash_between_put_pending_and_promote(self, store_factory: StoreFactory) -> None:
        check_crash_between_put_pending_and_promote(store_factory, self.read_as_consumer)

    def test_two_rotations(self, store_factory: StoreFactory) -> None:
        check_two_rotations(store_factory, self.read_as_consumer)

    def test_values_round_trip(self, store_factory: StoreFactory) -> None:
        check_values_round_trip(store_factory, self.read_as_consumer)
