"""Named crash points for fault tests. Inert unless ROTATOR_FAILPOINTS is set.

ROTATOR_FAILPOINTS is a comma-separated list of `name=action`, where action is
  crash  the process kills itself with SIGKILL, as `kill -9` would (no cleanup, no finally blocks);
  error  a RuntimeError is raised at that point (the engine's rollback path);
  abort  SimulatedCrash (a BaseException) is raised: the engine records nothing of the step in flight and does
         not roll back, as after a crash, but the lease is released; for in-process crash tests
         (rotator.testing's plugin contract), where a real `kill -9` would take the test runner with it;
  sleep:N  the process sleeps N seconds there (to signal a daemon while a run is in a known step).
Names are `before-<step>` / `after-<step>` for every step and rollback action, and `before-store-<op>` /
`after-store-<op>` for every store write (put-pending, promote, unpromote, discard-pending). See POINTS.
"""

from __future__ import annotations

import os
import signal
import time

from rotator.model import Step

STORE_OPS = ("put-pending", "promote", "unpromote", "discard-pending")
ROLLBACK_ACTIONS = ("unstage", "discard", "unpromote")

POINTS: tuple[str, ...] = tuple(
    [f"{when}-{step.value}" for step in Step for when in ("before", "after")]
    + [f"{when}-store-{op}" for op in STORE_OPS for when in ("before", "after")]
    + [f"{when}-rollback-{action}" for action in ROLLBACK_ACTIONS for when in ("before", "after")]
)


class FailpointError(RuntimeError):
    """Raised at a failpoint whose action is `error`."""


class SimulatedCrash(BaseException):
    """Raised at a failpoint whose action is `abort`: the engine treats it as the process dying there."""


def _armed() -> dict[str, str]:
    spec = os.environ.get("ROTATOR_FAILPOINTS", "")
    armed: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, action = item.partition("=")
        armed[name] = action or "crash"
    return armed


def hit(name: str) -> None:
    """Called by the engine at each named point; does nothing unless the point is armed."""
    if "ROTATOR_FAILPOINTS" not in os.environ:
        return
    action = _armed().get(name)
    if action == "crash":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "error":
        raise FailpointError(f"failpoint {name} fired")
    elif action == "abort":
        raise SimulatedCrash(f"failpoint {name} fired")
    elif action is not None and action.startswith("sleep:"):
        time.sleep(float(action.partition(":")[2]))
