"""The plugin-facing steps of a rotation, written once for every way of running one.

Two drivers use them. The runner (rotator/engine/runner.py) journals each step, holds the plan's lease, rolls back
last-in-first-out and resumes after a crash; the Lambda adapter (rotator/lambda_adapter.py) has Secrets Manager's
labels and retries in their place. A driver decides when a step runs, what is recorded about it and what a
failure leads to; this module says what each step does with the plugin and the store, in which order:

- create: a Reconciler plugin first deletes the provider-minted keys that no stored version holds (a crash's
  orphans); then the plugin's `create`, stored as this rotation's PENDING at once, before it is valid anywhere
  (invariant 2). A version that already holds a value keeps it: where creating twice could mint twice, PENDING is
  read first; a write that finds another value stored (VersionConflict) discards the value just made.
- stage and test: the plugin's, with this rotation's PENDING. `unstaged_on_failure` puts CURRENT back at the
  target when a step fails after stage, for a driver without journaled compensations (the Lambda's testSecret).
- promote: PENDING becomes CURRENT; a repeat after a crash finds it done.
- notify: `tell` fans one event out to the notifiers subscribed to its kind, recording each delivery in a
  DeliveryLedger (the journal, an alert's results, the Lambda's log); a failure is recorded, never raised.
- revoke: only the PREVIOUS this rotation's driver names, never CURRENT nor the version being rotated in.
- unstage and discard: the plugin's part of the compensations (the runner's rollback).

A drift repair (`rotator reconcile`, AdminReset) is the same run with the admin's reset in place of create and
stage, and its unstage resets the account to CURRENT's stored value.

The store is reached through RunStore, a small port each driver implements over its own store: the runner's
over any SecretStore with a per-run read cache (rotator/engine/plan_store.py), the Lambda's over Secrets
Manager's version labels. Neither this module nor a port touches the journal.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

from rotator.errors import NotApplied, RotatorError, VersionConflict, describe
from rotator.interfaces import AdminReset, Notifier, Reconciler, RotationPlugin
from rotator.logs import get_logger, register_secret
from rotator.model import SUCCESS_EVENTS, Credential, RotationContext, RotationEvent, Stage
from rotator.retry import Deadline, call_with_retry

T = TypeVar("T")
log = get_logger("rotator.engine")
# Tries of one notifier's delivery (its transient errors) within a step; the runner retries a failed one on later
# ticks (rotator/engine/delivery.py).
NOTIFY_TRIES = 4


class RunStore(Protocol):
    """The store as one rotation sees it: the stages of its secret and the version it rotates in (`version_id`:
    the runner's run id, the Lambda's ClientRequestToken). Each method retries its own transient errors."""

    @property
    def version_id(self) -> str: ...

    def read(self, stage: Stage) -> Credential | None:
        """The version labelled `stage`, with its value. PENDING is this rotation's version: None while it holds
        no value (or, for the runner, while PENDING is another version)."""
        ...

    def holder(self, stage: Stage) -> str | None:
        """The id of the version labelled `stage`; without reading any value where the store's labels tell."""
        ...

    def read_secret(self, secret_id: str) -> Credential:
        """Another secret's CURRENT (the admin secret named by ``masterarn``)."""
        ...

    def put_pending(self, value: Mapping[str, Any]) -> None:
        """Store `value` as this rotation's version, labelled PENDING. The same value again is no change;
        VersionConflict when the version holds another value."""
        ...

    def promote(self) -> None:
        """This rotation's version becomes CURRENT and CURRENT becomes PREVIOUS, in one store operation where the
        store allows."""
        ...

    def missing(self, stage: Stage) -> RotatorError:
        """The error, with its fix, for a step that needs `stage` and finds no such version."""
        ...


class DeliveryLedger(Protocol):
    """Where one event's deliveries are recorded: the journal's notifications (retried on later ticks), an
    alert's results (kept in the run's details), the Lambda's log."""

    def told(self, notifier: str) -> bool:
        """Whether `notifier` was told of this event before (a crash after it): it is never told twice."""
        ...

    def delivered(self, notifier: str) -> None: ...

    def failed(self, notifier: str, error: str) -> None:
        """`error` is one scrubbed line."""
        ...


def default_wants(_notifier: str, kind: str) -> bool:
    """A notifier that names no `events` receives the success events (the meaning configs had before)."""
    return kind in SUCCESS_EVENTS


def tell(
    event: RotationEvent,
    notifiers: Iterable[tuple[str, Notifier]],
    ledger: DeliveryLedger,
    *,
    tries: int,
    deadline_seconds: float,
    wants: Callable[[str, str], bool] = default_wants,
) -> list[str]:
    """Deliver `event` to every notifier subscribed to its kind that the ledger has not seen told, each with a few
    quick tries of its transient errors. Returns the names that failed; a failure is recorded, never raised."""
    failed: list[str] = []
    for name, notifier in notifiers:
        if not wants(name, event.kind) or ledger.told(name):
            continue
        try:
            call_with_retry(functools.partial(notifier, event), attempts=tries, deadline_seconds=deadline_seconds)
        except Exception as exc:
            ledger.failed(name, describe(exc))
            failed.append(name)
            continue
        ledger.delivered(name)
    return failed


def promote(store: RunStore) -> bool:
    """This rotation's PENDING becomes CURRENT. True when this call moved it; False when it was CURRENT already (a
    repeat after a crash). Reads labels only, no value, and needs no plugin."""
    if store.holder(Stage.CURRENT) == store.version_id:
        return False
    if store.holder(Stage.PENDING) != store.version_id:
        raise store.missing(Stage.PENDING)
    store.promote()
    return True


class StepCore:
    """The steps of one rotation of one secret with one plugin, over a RunStore.

    It also counts, per step, the plugin calls that may change the target (create, stage): a driver that journals
    a failed step as "refused" when none of them may have acted (errors.NotApplied) asks `refused`."""

    def __init__(
        self,
        plugin: RotationPlugin,
        ctx: RotationContext,
        store: RunStore,
        deadline: Deadline,
        *,
        repair: AdminReset | None = None,
    ) -> None:
        self.plugin = plugin
        self.ctx = ctx
        self.store = store
        self.deadline = deadline
        self.repair = repair  # a drift repair: the admin's reset replaces create and stage
        self.target_calls = 0
        self.maybe_applied = False
        self.unstage_error: str | None = None  # set when unstaged_on_failure could not put CURRENT back

    @property
    def version_id(self) -> str:
        return self.store.version_id

    # -- calls ------------------------------------------------------------------------------------------------

    def retry(self, fn: Callable[[], T]) -> T:
        """`fn`, its transient errors retried until the step's deadline."""
        return self.deadline.retry(fn)

    def begin_step(self) -> None:
        self.target_calls = 0
        self.maybe_applied = False

    def call_target(self, fn: Callable[[], T]) -> T:
        """A plugin call that may change the target (create, stage), retried as `retry`. Records whether any
        attempt may have acted: one that returned, or failed with anything but errors.NotApplied."""

        def attempt() -> T:
            self.target_calls += 1
            try:
                result = fn()
            except NotApplied:
                raise
            except BaseException:
                self.maybe_applied = True
                raise
            self.maybe_applied = True
            return result

        return self.retry(attempt)

    def refused(self, exc: BaseException) -> bool:
        """Whether the step that failed with `exc` changed nothing at the target: no call in it may have acted, and
        either none was made (the store failed first) or the last one refused before sending anything."""
        return not self.maybe_applied and (self.target_calls == 0 or isinstance(exc, NotApplied))

    # -- reading --------------------------------------------------------------------------------------------

    def current(self) -> Credential:
        credential = self.store.read(Stage.CURRENT)
        if credential is None:
            raise self.store.missing(Stage.CURRENT)
        return credential

    def pending(self) -> Credential:
        """This rotation's PENDING version; the store's error when it holds none."""
        credential = self.store.read(Stage.PENDING)
        if credential is None:
            raise self.store.missing(Stage.PENDING)
        return credential

    # -- forward --------------------------------------------------------------------------------------------

    def create(self, *, read_first: bool = True) -> bool:
        """Make the new value and store it as PENDING before anything else sees it. True when this call stored
        it; False when the version already held a value, which is kept (a repeat after a crash, another
        invocation of the same rotation, or a value an earlier rotation function left there).

        `read_first=False` skips reading PENDING first, for plugins whose `create` only generates a value locally:
        the write itself then finds a value already stored. A plugin that mints at a provider must read first."""
        if read_first and self.store.read(Stage.PENDING) is not None:
            log.info("PENDING already holds a value; kept")
            return False
        current = self.current()
        if self.repair is not None:
            repair = self.repair
            value = self.call_target(lambda: repair.reset_value(self.ctx, current))
        else:
            if isinstance(self.plugin, Reconciler):
                reconciler: Reconciler = self.plugin
                known = [c for c in (current, self.store.read(Stage.PREVIOUS)) if c is not None]
                removed = self.retry(lambda: reconciler.reconcile(self.ctx, known))
                if removed:
                    log.warning("reconcile deleted credentials the store did not know", removed=removed)
            value = self.call_target(lambda: self.plugin.create(self.ctx, current))
        made = Credential(self.version_id, value, frozenset({Stage.PENDING}))
        register_secret(*made.secret_strings())
        try:
            self.store.put_pending(value)  # stored the moment it exists, before it is valid anywhere
        except VersionConflict:
            # Another value was stored first (an earlier try of this rotation): it is kept, and a key minted
            # here is deleted again, never left valid without the store holding it.
            self.retry(lambda: self.plugin.discard(self.ctx, made))
            log.info("PENDING already holds a value; kept")
            return False
        return True

    def stage(self) -> None:
        """Make PENDING valid at the target (for a single user, CURRENT may stop working)."""
        pending = self.pending()
        current = self.current()
        if self.repair is not None:
            repair = self.repair
            self.call_target(lambda: repair.reset(self.ctx, current, pending))
            return
        self.call_target(lambda: self.plugin.stage(self.ctx, current, pending))

    def test(self, credential: Credential | None = None) -> None:
        """The plugin's probe with PENDING (or with `credential`: PREVIOUS, whether it still works; CURRENT, in a
        dry run)."""
        probed = credential if credential is not None else self.pending()
        self.retry(lambda: self.plugin.test(self.ctx, probed))

    @contextmanager
    def unstaged_on_failure(self) -> Iterator[None]:
        """Put CURRENT back at the target when the block fails, then re-raise: for a driver without journaled
        compensations, so that consumers of CURRENT keep working until the rotation is tried again. An unstage
        that fails too is logged and kept in `unstage_error`; the block's own error is raised."""
        try:
            yield
        except Exception as exc:
            log.error("step failed after stage; putting CURRENT back at the target", error=describe(exc))
            try:
                self.unstage()
            except Exception as undo:
                self.unstage_error = describe(undo)
                log.error("unstage failed: CURRENT may not work at the target", error=self.unstage_error)
            raise

    def promote(self) -> bool:
        """PENDING becomes CURRENT (see `promote`)."""
        return promote(self.store)

    def revoke(self, previous_id: str | None, *, superseded_by: str | None = None) -> bool:
        """Invalidate PREVIOUS at the target when it is the version `previous_id` (the one the driver means to
        revoke), is neither CURRENT nor this rotation's version, and, given `superseded_by`, CURRENT is that
        version. True when the plugin revoked it; False when there was nothing (any more) to revoke: a later
        rotation or a reseed moved the labels, and that credential is no longer this rotation's to revoke."""
        if previous_id is None or previous_id == self.version_id:
            return False
        previous = self.store.read(Stage.PREVIOUS)
        if previous is None or previous.version_id != previous_id:
            return False
        current = self.current()
        if current.version_id == previous_id:
            return False
        if superseded_by is not None and current.version_id != superseded_by:
            return False
        self.retry(lambda: self.plugin.revoke(self.ctx, previous, current))
        return True

    # -- compensations ----------------------------------------------------------------------------------------

    def unstage(self) -> None:
        """Undo stage: the target accepts CURRENT again and nothing accepts PENDING. Nothing to do when PENDING
        was never stored (so never staged)."""
        pending = self.store.read(Stage.PENDING)
        if pending is None:
            return
        current = self.current()
        if self.repair is not None:
            # The account's password before the reset is unknown (that is the drift): put CURRENT's stored one
            # back, so that the store and the target agree again and nothing accepts PENDING.
            repair = self.repair
            self.retry(lambda: repair.reset(self.ctx, current, current))
            return
        self.retry(lambda: self.plugin.unstage(self.ctx, current, pending))

    def discard(self) -> bool:
        """The plugin's part of undoing create: delete PENDING's provider-minted key. True when PENDING is stored
        (the driver then drops it from the store); without one, a key minted before a crash kept it from the store
        may still exist at the provider, and a Reconciler finds and deletes it."""
        pending = self.store.read(Stage.PENDING)
        if pending is not None:
            self.retry(lambda: self.plugin.discard(self.ctx, pending))
            return True
        if isinstance(self.plugin, Reconciler):
            reconciler: Reconciler = self.plugin
            known = [c for c in (self.store.read(Stage.CURRENT), self.store.read(Stage.PREVIOUS)) if c is not None]
            self.retry(lambda: reconciler.reconcile(self.ctx, known))
        return False
