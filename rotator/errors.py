"""One exception tree for the whole project.

A message says what failed, for which plan and step, and what to do. Messages never carry a secret value:
the engine scrubs anything a plugin raises before it reaches a log, the journal or the terminal.
"""

from __future__ import annotations

from rotator.logs import scrub


class RotatorError(Exception):
    """Base of every error this project raises on purpose."""

    exit_code = 1


class ConfigError(RotatorError):
    """The configuration (or a command-line argument) is wrong. Always names the file or argument and the fix."""

    exit_code = 2

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None, fix: str | None = None):
        self.file = file
        self.key = key
        self.fix = fix
        where = ": ".join(part for part in (file, key) if part)
        text = f"{where}: {message}" if where else message
        if fix:
            text = f"{text}\n  fix: {fix}"
        super().__init__(text)


class PluginLoadError(ConfigError):
    """A plugin, store or notifier named in the config cannot be found or does not fit its interface."""


class PlanBusy(RotatorError):
    """Another run holds this plan's lease (invariant 4)."""


class StepError(RotatorError):
    """A rotation step failed at the target. The engine rolls back."""

    def __init__(self, message: str, *, plan_id: str | None = None, step: str | None = None):
        self.plan_id = plan_id
        self.step = step
        super().__init__(message)


class TestFailed(StepError):
    """The new credential did not pass the plugin's probe."""

    __test__ = False  # not a pytest test class


class AuthenticationFailed(StepError):
    """The target refused a credential. Never retried: retrying a wrong password only locks accounts."""


class NotApplied(RotatorError):
    """Marks a step failure that changed nothing at the target: the connection or the login was refused, or a
    check failed, before any change was sent. The engine then needs no compensation for that step (and would
    often be unable to run one: it needs the very login that was refused), so the run rolls back cleanly.

    Raise one of the concrete kinds below; a plugin that cannot tell whether a change reached the target raises
    an ordinary StepError or TransientError, and the engine compensates as before."""


class LoginRefused(AuthenticationFailed, NotApplied):
    """The target refused the credential at login: nothing was sent after it."""


class StepRefused(StepError, NotApplied):
    """A step refused to act before sending anything (a check of the secret or of the target failed)."""


class StoreError(RotatorError):
    """The secret store refused or failed an operation."""


class SecretNotFound(StoreError):
    """The named secret, or the asked-for stage of it, does not exist."""


class VersionConflict(StoreError):
    """A write lost a race or contradicts what is stored (same version id, different value; check-and-set)."""


class NotifyError(RotatorError):
    """A notifier could not tell its consumers."""


class RollbackError(RotatorError):
    """A compensation failed; the run is stuck and needs an operator (`rotator resume` retries it)."""


class IllegalTransition(RotatorError):
    """The engine tried a run state change that engine/states.py's table does not allow: a bug, never retried."""


class LeaseLost(RotatorError):
    """This process no longer holds the plan's lease (expired and taken over); it must stop writing."""


class TransientError(RotatorError):
    """Marks a failure that may pass on its own (connection refused or reset, timeout, throttling, 5xx).

    Only these are retried (see rotator.retry). Raise it directly, or chain the original:
    ``raise TransientError("...") from exc``.
    """


class TargetUnreachable(TransientError, NotApplied):
    """The target could not be reached (connection refused, name not resolved, connect timeout): nothing was
    sent, so nothing needs undoing. Retried like any TransientError until the step's deadline."""


def as_not_applied(exc: RotatorError) -> RotatorError:
    """The NotApplied kind of `exc`, with the same message: for a plugin's error boundary to mark a failure that
    happened before anything was sent (at connect or at login). An error already NotApplied, or a TestFailed (a
    test changes nothing, so it never needs compensating), is returned as it is."""
    if isinstance(exc, NotApplied | TestFailed):
        return exc
    if isinstance(exc, AuthenticationFailed):
        refused: RotatorError = LoginRefused(str(exc), plan_id=exc.plan_id, step=exc.step)
    elif isinstance(exc, TransientError):
        refused = TargetUnreachable(str(exc))
    elif isinstance(exc, StepError):
        refused = StepRefused(str(exc), plan_id=exc.plan_id, step=exc.step)
    else:
        return exc
    refused.__cause__ = exc.__cause__
    refused.__suppress_context__ = exc.__suppress_context__
    return refused


def describe(exc: BaseException) -> str:
    """An error as one line for the journal, the terminal and alerts, with every known secret scrubbed out."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    name = type(exc).__name__
    return scrub(f"{name}: {text}" if text else name)
