"""Notifier kit: a recording notifier for tests of plugins, the engine and notifiers."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from rotator.errors import NotifyError
from rotator.model import RotationEvent

__all__ = ["RecordingNotifier"]


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
