"""A plan's store as one run of the runner sees it: the runner's RunStore (rotator/engine/steps.py).

Stages are read once per run until the run's next store write: a remote store is billed and throttled per call
(AWS reads fall from 13 to a handful per rotation). Every write passes the named crash points around it
(`before-store-<op>`, `after-store-<op>`, rotator/failpoints.py), and every value read is registered with the
log scrubber before anything can print it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from rotator import failpoints
from rotator.engine.plans import BoundPlan
from rotator.engine.steps import StepCore
from rotator.errors import RotatorError, SecretNotFound, StoreError
from rotator.interfaces import AdminReset, SecretStore
from rotator.logs import register_secret
from rotator.model import Credential, RotationContext, Stage
from rotator.retry import Deadline

T = TypeVar("T")


class PlanStore:
    """The stages of one plan's secret for the run `version_id` (its run id), over any SecretStore."""

    def __init__(self, store: SecretStore, plan_id: str, secret_id: str, version_id: str, deadline: Deadline):
        self.store = store
        self.plan_id = plan_id
        self.secret_id = secret_id
        self._version_id = version_id
        self.deadline = deadline
        self._reads: dict[tuple[str, Stage], Credential | None] = {}
        # This run's own version, once known: a version's value never changes, so it outlives the read cache
        # (the runner keeps its fingerprints after promote without reading it again).
        self.own: Credential | None = None

    @property
    def version_id(self) -> str:
        return self._version_id

    # -- reading ---------------------------------------------------------------------------------------------

    def get(self, stage: Stage, secret_id: str | None = None) -> Credential | None:
        """A stage of this plan's secret (or of another secret in the plan's store), cached until the next write."""
        secret = secret_id or self.secret_id
        key = (secret, stage)
        if key not in self._reads:
            credential = self.deadline.retry(lambda: self.store.get(secret, stage))
            self._remember(key, credential)
        return self._reads[key]

    def remember(self, stage: Stage, credential: Credential | None) -> None:
        """Seed the cache with a stage just read under this run's lease (no second read and decrypt)."""
        self._remember((self.secret_id, stage), credential)

    def _remember(self, key: tuple[str, Stage], credential: Credential | None) -> None:
        if credential is not None:
            register_secret(*credential.secret_strings())
            if key[0] == self.secret_id and credential.version_id == self._version_id:
                self.own = credential
        self._reads[key] = credential

    def read(self, stage: Stage) -> Credential | None:
        credential = self.get(stage)
        if stage is Stage.PENDING and credential is not None and credential.version_id != self._version_id:
            return None  # another version's PENDING (an orphan, or a newer run's): not this run's
        return credential

    def holder(self, stage: Stage) -> str | None:
        credential = self.read(stage)
        return credential.version_id if credential is not None else None

    def read_secret(self, secret_id: str) -> Credential:
        credential = self.get(Stage.CURRENT, secret_id)
        if credential is None:
            raise SecretNotFound(f"plan {self.plan_id}: secret {secret_id!r} has no CURRENT version")
        return credential

    def missing(self, stage: Stage) -> RotatorError:
        if stage is Stage.PENDING:
            return StoreError(
                f"plan {self.plan_id}: the store lost this run's PENDING version {self._version_id}; rolling back"
            )
        return SecretNotFound(f"plan {self.plan_id}: secret {self.secret_id!r} has no {stage.value} version")

    # -- writing ---------------------------------------------------------------------------------------------

    def _write(self, op: str, fn: Callable[[], T]) -> T:
        self._reads.clear()
        failpoints.hit(f"before-store-{op}")
        try:
            result = self.deadline.retry(fn)
        finally:
            self._reads.clear()
        failpoints.hit(f"after-store-{op}")
        return result

    def put_pending(self, value: Mapping[str, Any]) -> None:
        current = self._reads.get((self.secret_id, Stage.CURRENT))
        credential = Credential(self._version_id, value, frozenset({Stage.PENDING}))
        self._write("put-pending", lambda: self.store.put_pending(self.secret_id, value, self._version_id))
        # put_pending leaves CURRENT as it was and PENDING as written: no need to read either back.
        if current is not None:
            self.remember(Stage.CURRENT, current)
        self.remember(Stage.PENDING, credential)

    def promote(self) -> None:
        self._write("promote", lambda: self.store.promote(self.secret_id, self._version_id))

    def unpromote(self) -> None:
        self._write("unpromote", lambda: self.store.unpromote(self.secret_id, self._version_id))

    def discard_pending(self) -> None:
        self._write("discard-pending", lambda: self.store.discard_pending(self.secret_id, self._version_id))


def core_for(bp: BoundPlan, store: PlanStore, *, repair: AdminReset | None = None) -> StepCore:
    """The step core for one run of `bp` over its PlanStore, with the context the plugin gets for every call.
    The store and the core share one Deadline: every retry inside a step, of a plugin call or a store call alike,
    shares the step's time."""
    ctx = RotationContext(
        plan_id=bp.plan_id,
        run_id=store.version_id,
        secret_id=bp.secret_id,
        strategy=bp.strategy,
        options=bp.options,
        password_policy=bp.password_policy,
        read_secret=store.read_secret,
        read_stage=store.read,
    )
    return StepCore(bp.plugin, ctx, store, store.deadline, repair=repair)
