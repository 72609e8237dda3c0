"""Notifier kit: the notifier contract, and a recording notifier for tests of plugins, the engine and notifiers.

The notifier contract is what the engine and consumers rely on from every notifier, checked against its real
receiver (an HTTP endpoint, a queue, a process):

- an event is delivered, and the delivery carries the plan, the version, the kind ("credential.rotated" or
  "credential.rolled_back") and the run id (so a receiver can drop a repeated delivery);
- the delivery carries no secret value, even when the store holds one (the events the checks send can read a
  secret-looking CURRENT value through `read_value`, as the engine's do), nor any secret the notifier holds
  itself (a webhook URL, a token: the harness names them);
- a failing receiver makes the notifier raise NotifyError or TransientError, never another exception type, and
  never with a secret in the message (nor in a chained exception's);
- calling it twice with the same event is harmless: both calls succeed, the receiver gets it at most twice;
- failure events ("credential.rotation_failed", "credential.rotation_stuck"): a notifier that takes them (its
  `event_kinds` lists them, or it declares no `event_kinds`) delivers each, saying which it is, with the error
  and the action; one that does not take them (a redeploy, a file write) delivers nothing and raises nothing;
- nothing delivered for a failure event holds a secret: neither one the store holds, nor one planted in the
  event's error and action text that the engine has registered (rotator.register_secret), as it does for every
  secret it handles: a notifier scrubs free text before sending it, so that no path can deliver a registered
  secret. A failing receiver's error for a failure event holds none either.

A harness tells the checks how to reach the notifier and its receiver: a factory of new notifiers over the same
receiver, a function returning everything the receiver has got so far as text (request bodies, queue messages,
a process's environment), and a factory of a notifier whose receiver fails. Run it in one of two ways.

As a pytest class: subclass `NotifierContract` (name the subclass Test...) and give it a `notifier_harness`
fixture::

    import pytest
    from rotator.testing import NotifierContract, NotifierHarness

    class TestMyNotifier(NotifierContract):
        @pytest.fixture
        def notifier_harness(self, my_receiver, setup):
            return NotifierHarness(
                new_notifier=lambda: MyNotifier({"url": my_receiver.url}, setup),
                deliveries=lambda: [r.body for r in my_receiver.requests],
                new_failing_notifier=lambda: MyNotifier({"url": my_receiver.url + "/refuses"}, setup),
            )

As plain functions, e.g. from a script: `run_notifier_contract(harness)`, or each `check_*` in `NOTIFIER_CHECKS`.
A notifier whose delivery cannot carry the event (a redeploy) sets `carries=()`; the other checks still apply.
"""

from __future__ import annotations

import secrets
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from rotator.errors import NotifyError, TransientError
from rotator.interfaces import Notifier
from rotator.logs import register_secret
from rotator.model import FAILURE_EVENTS, EventKind, RotationEvent, sensitive_strings

__all__ = [
    "NOTIFIER_CHECKS",
    "NotifierContract",
    "NotifierHarness",
    "RecordingNotifier",
    "check_delivers_event",
    "check_delivers_rollback",
    "check_failure_events",
    "check_no_secret_in_delivery",
    "check_no_secret_in_failure_events",
    "check_receiver_failure",
    "check_receiver_failure_on_failure_events",
    "check_same_event_twice",
    "run_notifier_contract",
    "sample_event",
    "secret_value",
    "takes_kind",
]

ROTATED = EventKind.ROTATED.value
ROLLED_BACK = EventKind.ROLLED_BACK.value
ROTATION_FAILED = EventKind.ROTATION_FAILED.value
ROTATION_STUCK = EventKind.ROTATION_STUCK.value
FAILURE_KINDS = tuple(kind.value for kind in EventKind if kind.value in FAILURE_EVENTS)
# The error and action the failure events of the checks carry, by kind: plain text (no characters that a receiver
# escapes, such as Slack's &, < and >, or JSON's quotes), so that it can be found in what was delivered.
FAILURE_TEXT = {
    ROTATION_FAILED: (
        "stage failed for the contract plan: the target refused the login",
        "nothing to undo: the old credential still works; fix the login and rotate again",
    ),
    ROTATION_STUCK: (
        "rollback of stage failed for the contract plan: the target did not answer",
        "check the target, then run rotator resume to finish the rollback",
    ),
}
# What a delivery may be asked to carry, and where the event holds it.
CARRIED_FIELDS: dict[str, Callable[[RotationEvent], str]] = {
    "plan": lambda e: e.plan_id,
    "version": lambda e: e.version_id,
    "event": lambda e: e.kind,
    "run_id": lambda e: e.run_id,
}


@dataclass
class RecordingNotifier:
    """A notifier that keeps every event it is given. `fail_times` makes its first N calls raise NotifyError
    (to test retries, required notifiers and rollback_on_failure)."""

    fail_times: int = 0
    events: list[RotationEvent] = field(default_factory=list)
    calls: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __call__(self, event: RotationEvent) -> None:
        with self._lock:
            self.calls += 1
            if self.calls <= self.fail_times:
                raise NotifyError(f"recording notifier: planned failure {self.calls} of {self.fail_times}")
            self.events.append(event)

    def payloads(self) -> list[dict[str, object]]:
        """What a remote receiver would have got: each event's as_dict()."""
        return [event.as_dict() for event in self.events]


@dataclass
class NotifierHarness:
    """How the contract reaches one notifier and its receiver."""

    # A new notifier object over the same receiver, each time it is called.
    new_notifier: Callable[[], Notifier]
    # Everything the receiver has got so far, oldest first, each delivery as text. The checks look at what is
    # new after their own call, so it may hold other deliveries before.
    deliveries: Callable[[], Sequence[str]]
    # A notifier whose receiver fails (refuses, is missing, or exits non-zero).
    new_failing_notifier: Callable[[], Notifier]
    # What a delivery carries, among "plan", "version", "event" (the kind) and "run_id". () for a redeploy.
    carries: tuple[str, ...] = ("plan", "version", "event", "run_id")
    # Secrets the notifier itself holds (a webhook URL, a bearer token) that must never be delivered or shown.
    secrets: tuple[str, ...] = ()
    # What a delivery of a failure event carries besides `carries`, among "error" and "action" (the event's text).
    failure_carries: tuple[str, ...] = ("error", "action")


def secret_value() -> dict[str, Any]:
    """A CURRENT value as a store holds it: public fields and secret-looking ones, fresh each time."""
    return {
        "engine": "postgres",
        "host": "db.internal",
        "port": 5432,
        "username": "app",
        "password": f"contract-password-{secrets.token_urlsafe(18)}",
        "api_key": f"contract-key-{secrets.token_hex(16)}",
    }


def sample_event(
    kind: str = ROTATED,
    value: Mapping[str, Any] | None = None,
    *,
    error: str | None = None,
    action: str | None = None,
) -> RotationEvent:
    """A fresh event, as the engine makes them: new plan, run and version ids; `read_value` returns `value`.
    A failure event carries `error` and `action` (by default FAILURE_TEXT's); its version is the failed run's and
    its previous version CURRENT, as the engine's."""
    run_id = uuid.uuid4().hex
    held = dict(value) if value is not None else secret_value()
    if kind in FAILURE_EVENTS:
        default_error, default_action = FAILURE_TEXT.get(kind, ("the run failed", "see rotator history"))
        error = default_error if error is None else error
        action = default_action if action is None else action
    return RotationEvent(
        plan_id=f"contract-plan-{uuid.uuid4().hex[:8]}",
        run_id=run_id,
        secret_id=f"contract/{uuid.uuid4().hex[:12]}",
        store="contract-store",
        version_id=run_id,
        previous_version_id=uuid.uuid4().hex,
        rotated_at=datetime.now(UTC).replace(microsecond=0),
        trigger="manual",
        reason="notifier contract",
        tags=("contract",),
        kind=kind,
        error=error,
        action=action,
        read_value=lambda: dict(held),
    )


def takes_kind(notifier: Notifier, kind: str) -> bool:
    """Whether `notifier` takes events of `kind`: those in its `event_kinds`, or every kind if it declares none."""
    kinds = getattr(notifier, "event_kinds", None)
    return kinds is None or kind in kinds


def _new_deliveries(harness: NotifierHarness, before: int) -> list[str]:
    return [str(item) for item in list(harness.deliveries())[before:]]


def _secrets_of(harness: NotifierHarness, value: Mapping[str, Any]) -> list[str]:
    return [*sensitive_strings(value), *(s for s in harness.secrets if s)]


def _deliver(harness: NotifierHarness, event: RotationEvent, notifier: Notifier | None = None) -> list[str]:
    before = len(harness.deliveries())
    (notifier or harness.new_notifier())(event)
    delivered = _new_deliveries(harness, before)
    assert delivered, f"the receiver got nothing for event {event.kind} of plan {event.plan_id}"
    return delivered


def _assert_carries(harness: NotifierHarness, event: RotationEvent, delivered: Sequence[str]) -> None:
    for name in harness.carries:
        expected = CARRIED_FIELDS[name](event)
        assert any(expected in text for text in delivered), f"no delivery carries the {name} ({expected!r})"


# -- the checks ---------------------------------------------------------------------------------------------------


def check_delivers_event(harness: NotifierHarness) -> None:
    """A "credential.rotated" event reaches the receiver, with the plan, version, kind and run id."""
    event = sample_event(ROTATED)
    _assert_carries(harness, event, _deliver(harness, event))


def check_delivers_rollback(harness: NotifierHarness) -> None:
    """A "credential.rolled_back" event reaches the receiver too, and says it is a rollback."""
    event = sample_event(ROLLED_BACK)
    delivered = _deliver(harness, event)
    _assert_carries(harness, event, delivered)
    if "event" in harness.carries:
        assert not any(ROTATED in text for text in delivered), "a rollback was delivered as a rotation"


def check_failure_events(harness: NotifierHarness) -> None:
    """Each failure kind: a notifier that takes it delivers it, saying which kind it is, with the error and the
    action; one that does not take it (a redeploy, a file write) delivers nothing and raises nothing."""
    for kind in FAILURE_KINDS:
        event = sample_event(kind)
        notifier = harness.new_notifier()
        if not takes_kind(notifier, kind):
            before = len(harness.deliveries())
            notifier(event)
            assert not _new_deliveries(harness, before), f"a notifier that does not take {kind} delivered one"
            continue
        delivered = _deliver(harness, event, notifier)
        _assert_carries(harness, event, delivered)
        if "event" in harness.carries:
            others = [other for other in (ROTATED, *FAILURE_KINDS) if other != kind]
            for other in others:
                assert not any(other in text for text in delivered), f"a {kind} event was delivered as {other}"
        for name in harness.failure_carries:
            expected = str(getattr(event, name))
            assert any(expected in text for text in delivered), f"no delivery of {kind} carries its {name}"


def check_no_secret_in_delivery(harness: NotifierHarness) -> None:
    """With a secret-looking CURRENT value readable through the event, nothing delivered contains it, nor any
    secret the notifier holds."""
    value = secret_value()
    event = sample_event(ROTATED, value)
    delivered = _deliver(harness, event)
    for secret in _secrets_of(harness, value):
        for text in delivered:
            assert secret not in text, "a delivery carries a secret value"


def _planted_failure(kind: str, value: Mapping[str, Any]) -> tuple[RotationEvent, list[str], str]:
    """A failure event whose error and action quote secrets the engine has registered (as it registers every
    secret it handles), the store holding `value`. Returns the event, the planted secrets, and the error's text
    before the secret (which a delivery must still carry: scrubbed, not dropped)."""
    planted = [f"contract-planted-{secrets.token_urlsafe(18)}", f"contract-planted-{secrets.token_urlsafe(18)}"]
    register_secret(*planted)
    lead = "stage failed for the contract plan: the target answered"
    event = sample_event(
        kind, value, error=f"{lead} {planted[0]} to the login", action=f"check the target ({planted[1]}), then retry"
    )
    return event, planted, lead


def check_no_secret_in_failure_events(harness: NotifierHarness) -> None:
    """Each failure kind, with a secret-looking CURRENT value readable through the event and secrets planted in its
    error and action text (registered, as the engine registers them): nothing delivered contains any of them,
    while the rest of the error still arrives."""
    for kind in FAILURE_KINDS:
        value = secret_value()
        event, planted, lead = _planted_failure(kind, value)
        notifier = harness.new_notifier()
        before = len(harness.deliveries())
        notifier(event)
        delivered = _new_deliveries(harness, before)
        for secret in [*_secrets_of(harness, value), *planted]:
            for text in delivered:
                assert secret not in text, f"a delivery of {kind} carries a secret value"
        if takes_kind(notifier, kind):
            assert delivered, f"the receiver got nothing for {kind}"
            if "error" in harness.failure_carries:
                assert any(lead in text for text in delivered), f"the error of {kind} was dropped, not scrubbed"


def _chain(exc: BaseException) -> list[BaseException]:
    found: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in found:
        found.append(current)
        current = current.__cause__ or current.__context__
    return found


def check_receiver_failure(harness: NotifierHarness) -> None:
    """A failing receiver raises NotifyError or TransientError, without a secret in any message of the chain."""
    value = secret_value()
    event = sample_event(ROTATED, value)
    notifier = harness.new_failing_notifier()
    try:
        notifier(event)
    except (NotifyError, TransientError) as exc:
        for link in _chain(exc):
            text = f"{type(link).__name__}: {link}"
            for secret in _secrets_of(harness, value):
                assert secret not in text, f"the error shows a secret: {type(link).__name__}"
        assert str(exc).strip(), "the error has no message"
    except Exception as exc:
        raise AssertionError(
            f"a failing receiver raised {type(exc).__name__}, not NotifyError or TransientError"
        ) from None
    else:
        raise AssertionError("a failing receiver raised nothing")


def check_receiver_failure_on_failure_events(harness: NotifierHarness) -> None:
    """Each failure kind through a failing receiver: a notifier that takes it raises NotifyError or TransientError
    without a secret (the store's or one planted in the event's text) in any message; one that does not take it
    does not even call the receiver, so it raises nothing."""
    for kind in FAILURE_KINDS:
        value = secret_value()
        event, planted, _ = _planted_failure(kind, value)
        notifier = harness.new_failing_notifier()
        if not takes_kind(notifier, kind):
            notifier(event)  # raises if it called the failing receiver
            continue
        try:
            notifier(event)
        except (NotifyError, TransientError) as exc:
            for link in _chain(exc):
                text = f"{type(link).__name__}: {link}"
                for secret in [*_secrets_of(harness, value), *planted]:
                    assert secret not in text, f"the error for {kind} shows a secret: {type(link).__name__}"
        except Exception as exc:
            raise AssertionError(
                f"a failing receiver raised {type(exc).__name__} for {kind}, not NotifyError or TransientError"
            ) from None
        else:
            raise AssertionError(f"a failing receiver raised nothing for {kind}")


def check_same_event_twice(harness: NotifierHarness) -> None:
    """The same event twice (a retry after a timeout, a resumed run): both calls succeed, the receiver gets it
    once or twice, each time with the run id to drop the repeat by."""
    event = sample_event(ROTATED)
    notifier = harness.new_notifier()
    before = len(harness.deliveries())
    notifier(event)
    notifier(event)
    delivered = _new_deliveries(harness, before)
    assert 1 <= len(delivered) <= 2, f"the same event twice gave {len(delivered)} deliveries"
    _assert_carries(harness, event, delivered)
    if "run_id" in harness.carries:
        for text in delivered:
            assert event.run_id in text, "a repeated delivery lacks the run id to drop it by"


NOTIFIER_CHECKS: tuple[Callable[[NotifierHarness], None], ...] = (
    check_delivers_event,
    check_delivers_rollback,
    check_no_secret_in_delivery,
    check_receiver_failure,
    check_same_event_twice,
    check_failure_events,
    check_no_secret_in_failure_events,
    check_receiver_failure_on_failure_events,
)


def run_notifier_contract(harness: NotifierHarness) -> None:
    """Every check, in order; the first failure raises AssertionError (or the notifier's own error)."""
    for check in NOTIFIER_CHECKS:
        check(harness)


class NotifierContract:
    """The notifier contract as pytest tests. Subclass it as Test... and give it a `notifier_harness` fixture."""

    def test_delivers_event(self, notifier_harness: NotifierHarness) -> None:
        check_delivers_event(notifier_harness)

    def test_delivers_rollback(self, notifier_harness: NotifierHarness) -> None:
        check_delivers_rollback(notifier_harness)

    def test_no_secret_in_delivery(self, notifier_harness: NotifierHarness) -> None:
        check_no_secret_in_delivery(notifier_harness)

    def test_receiver_failure(self, notifier_harness: NotifierHarness) -> None:
        check_receiver_failure(notifier_harness)

    def test_same_event_twice(self, notifier_harness: NotifierHarness) -> None:
        check_same_event_twice(notifier_harness)

    def test_failure_events(self, notifier_harness: NotifierHarness) -> None:
        check_failure_events(notifier_harness)

    def test_no_secret_in_failure_events(self, notifier_harness: NotifierHarness) -> None:
        check_no_secret_in_failure_events(notifier_harness)

    def test_receiver_failure_on_failure_events(self, notifier_harness: NotifierHarness) -> None:
        check_receiver_failure_on_failure_events(notifier_harness)
