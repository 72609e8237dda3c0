"""AWS Secrets Manager's rotation contract, driving the engine's step core (rotator/engine/steps.py): the pure
core of lambda/handler.py. The runner is the journal-and-lease driver of the same steps; this is the AWS-label
driver: Secrets Manager's labels, its retries and its one-rotation-per-secret rule take the journal's place, and
`LabelStore` is the step core's store port over the labels.

Secrets Manager drives a rotation by invoking the function four times with the same ClientRequestToken:
createSecret, setSecret, testSecret, finishSecret. It retries the whole rotation when a step fails, so every step
here is safe to repeat. Before every step, as AWS's sample functions do (and with the same meaning):

- rotation must be enabled on the secret (an explicit ``RotationEnabled: false`` refuses; absent means never
  configured, which the samples accept too);
- the token must be a version of the secret;
- a token that is already AWSCURRENT means the rotation is done: return at once, change nothing;
- a token without AWSPENDING is an error.

Steps, and what they call (store methods name their AWS actions; plugin methods their SQL or API calls; what each
step does with the plugin is the step core's, the same under the daemon):

- createSecret: revoke the version that is AWSPREVIOUS now (there is no revoke step in AWS's contract; see
  `revoke_previous`), then the plugin's `create`, stored as the token's version with AWSPENDING. A token whose
  version already holds a value keeps it (as the samples do). For a plugin that only generates a value locally
  (`LOCAL_CREATE_PLUGINS`) the value is written without reading first: PutSecretValue refuses another value for a
  version that has one, which is the check. A provider-minted key is only minted after reading that the version
  is empty, and deleted again if another invocation stored a value first.
- setSecret: the plugin's `stage` (CURRENT -> PENDING at the target).
- testSecret: the plugin's `test`; if it fails, `unstage` puts CURRENT back at the target before the error is
  raised (Secrets Manager then retries the whole rotation, and CURRENT keeps working meanwhile).
- finishSecret: one UpdateSecretVersionStage moves AWSCURRENT to the token (AWS puts AWSPREVIOUS on the old
  version). AWSPENDING stays on the token, beside AWSCURRENT: a legal end state for AWS (as the samples leave it).
  Then the notifiers run; a notifier failure is logged and reported, never raised (the secret is rotated).

A step that fails tells the notifiers that list failure events (``"events"`` in ROTATOR_NOTIFIERS) before its
error goes to Lambda: credential.rotation_failed (AWSCURRENT still works; Secrets Manager retries), or
credential.rotation_stuck when a failed testSecret could not put AWSCURRENT back at the target.

Values of versions are cached per container by (secret, version id): a version's value never changes in Secrets
Manager, so the four invocations of one rotation in a warm container read each value once. Labels are never
cached: every step describes the secret afresh.

No boto3 here (rotator/ imports no network client): the store is given, and so are the plugin loader, the
notifiers and the clock. lambda/handler.py builds them once per container.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from rotator import failpoints
from rotator.engine.alerts import failure_event, fix_of, send_alert
from rotator.engine.steps import NOTIFY_TRIES, StepCore, promote, tell
from rotator.errors import ConfigError, RotatorError, SecretNotFound, StepError, describe
from rotator.interfaces import Notifier, RotationPlugin, utc_now
from rotator.lambda_settings import (
    ENGINE_PLUGINS,
    ENV_SOURCE,
    LAMBDA_CA_BUNDLE,
    FunctionSettings,
    load_notifiers,
    plugin_type_for,
    registry_plugin_loader,
    strategy_for,
)
from rotator.logs import bound_contextvars, get_logger, register_secret, scrub
from rotator.model import Credential, EventKind, RotationContext, RotationEvent, Stage, Trigger
from rotator.retry import Deadline

# The function's settings live in rotator/lambda_settings.py; these names are imported from here too.
__all__ = [
    "ENGINE_PLUGINS",
    "LAMBDA_CA_BUNDLE",
    "FunctionSettings",
    "LabelStore",
    "RotationFailed",
    "RotationFunction",
    "RotationRefused",
    "RotationStore",
    "SecretDescription",
    "check_contract",
    "failure",
    "load_notifiers",
    "parse_event",
    "plugin_type_for",
    "registry_plugin_loader",
    "strategy_for",
]

log = get_logger("rotator.lambda")

AWSCURRENT, AWSPENDING, AWSPREVIOUS = "AWSCURRENT", "AWSPENDING", "AWSPREVIOUS"
LABELS = {Stage.CURRENT: AWSCURRENT, Stage.PENDING: AWSPENDING, Stage.PREVIOUS: AWSPREVIOUS}
STEPS = ("createSecret", "setSecret", "testSecret", "finishSecret")
STORE_NAME = "aws-secretsmanager"
# Plugins whose `create` only generates a value here (no call to the target): calling it again is harmless, so
# createSecret may write first and let PutSecretValue refuse a second value. Any other plugin may mint a key at a
# provider: for it the token's version is read first, so that nothing is minted twice.
LOCAL_CREATE_PLUGINS = frozenset({"postgres", "mysql", "redis", "generated"})


class RotationRefused(StepError):
    """The event does not fit the secret's state (Secrets Manager's rotation contract): nothing was changed."""


# -- what the adapter needs from the store ---------------------------------------------------------------------


class RotationStore(Protocol):
    """The AWS store's rotation calls (rotator_plugins.stores.aws_secretsmanager); each names its AWS action."""

    def describe_rotation(self, secret_id: str) -> Mapping[str, Any]:
        """DescribeSecret: Name, RotationEnabled (absent when never configured), VersionIdsToStages, Tags."""
        ...

    def get_version(self, secret_id: str, version_id: str) -> Credential | None:
        """GetSecretValue(VersionId): the version's value, or None when it has none (yet)."""
        ...

    def put_version(
        self, secret_id: str, version_id: str, value: Mapping[str, Any], *, rotation_token: str | None = None
    ) -> None:
        """PutSecretValue(ClientRequestToken=version_id, VersionStages=[AWSPENDING]). VersionConflict when the
        version already holds another value."""
        ...

    def move_current(self, secret_id: str, version_id: str, from_version_id: str | None) -> None:
        """UpdateSecretVersionStage(AWSCURRENT, MoveToVersionId=version_id, RemoveFromVersionId=from_version_id)."""
        ...

    def get(self, secret_id: str, stage: Stage = Stage.CURRENT) -> Credential | None:
        """Another secret's stage (the admin secret named by ``masterarn``)."""
        ...


# -- the event and the secret's state --------------------------------------------------------------------------


@dataclass(frozen=True)
class StepEvent:
    """One invocation by Secrets Manager."""

    step: str
    secret_id: str
    token: str  # ClientRequestToken: the id of the version being rotated in
    rotation_token: str | None = field(default=None, repr=False)  # sensitive (AWS keeps it out of CloudTrail)


def parse_event(event: Mapping[str, Any]) -> StepEvent:
    """The rotation event; a clear error for anything else (the function is only for Secrets Manager)."""
    if not isinstance(event, Mapping):
        raise RotationRefused(f"the event is a {type(event).__name__}, not a Secrets Manager rotation event")
    missing = [key for key in ("Step", "SecretId", "ClientRequestToken") if not isinstance(event.get(key), str)]
    if missing:
        raise RotationRefused(
            f"the event has no {', '.join(missing)}: this function only handles Secrets Manager rotation events "
            '{"Step", "SecretId", "ClientRequestToken"}\n  fix: set it as the secret\'s rotation function '
            "(RotateSecret / AWS::SecretsManager::RotationSchedule) instead of invoking it directly"
        )
    step = str(event["Step"])
    if step not in STEPS:
        raise RotationRefused(f"invalid step parameter {step!r} for secret {event['SecretId']}: expected one of "
                              f"{', '.join(STEPS)}")  # fmt: skip
    rotation_token = event.get("RotationToken")
    if isinstance(rotation_token, str) and rotation_token:
        register_secret(rotation_token)
    else:
        rotation_token = None
    return StepEvent(step, str(event["SecretId"]), str(event["ClientRequestToken"]), rotation_token)


@dataclass(frozen=True)
class SecretDescription:
    """What DescribeSecret says about a secret: no value, only its rotation state and labels."""

    secret_id: str
    name: str
    rotation_enabled: bool | None
    versions: Mapping[str, frozenset[str]]
    tags: Mapping[str, str]

    @classmethod
    def parse(cls, secret_id: str, described: Mapping[str, Any]) -> SecretDescription:
        raw_tags = described.get("Tags") or []
        tags = (
            {str(k): str(v) for k, v in raw_tags.items()}
            if isinstance(raw_tags, Mapping)
            else {str(t.get("Key")): str(t.get("Value", "")) for t in raw_tags if isinstance(t, Mapping)}
        )
        enabled = described.get("RotationEnabled")
        return cls(
            secret_id=secret_id,
            name=str(described.get("Name") or secret_id),
            rotation_enabled=None if enabled is None else bool(enabled),
            versions={str(v): frozenset(labels) for v, labels in (described.get("VersionIdsToStages") or {}).items()},
            tags=tags,
        )

    def holder(self, label: str) -> str | None:
        """The version carrying `label`, if any."""
        return next((vid for vid, labels in self.versions.items() if label in labels), None)

    def stages(self, version_id: str) -> frozenset[Stage]:
        labels = self.versions.get(version_id, frozenset())
        found = {stage for stage, label in LABELS.items() if label in labels}
        if Stage.CURRENT in found:
            found.discard(Stage.PENDING)  # AWSPENDING left beside AWSCURRENT: a finished rotation
        return frozenset(found)


def check_contract(described: SecretDescription, token: str) -> bool:
    """The samples' checks before every step. False: the token is already AWSCURRENT (return at once)."""
    name = described.name
    if described.rotation_enabled is False:
        raise RotationRefused(
            f"secret {name} is not enabled for rotation\n  fix: turn rotation on (RotateSecret with this function, "
            "or the RotationSchedule in lambda/template.yaml)"
        )
    labels = described.versions.get(token)
    if labels is None:
        raise RotationRefused(
            f"secret version {token} has no stage for rotation of secret {name}\n  fix: start rotations through "
            "Secrets Manager (RotateSecret), which creates the AWSPENDING version this token names"
        )
    if AWSCURRENT in labels:
        return False
    if AWSPENDING not in labels:
        raise RotationRefused(
            f"secret version {token} not set as AWSPENDING for rotation of secret {name}\n  fix: start a new "
            "rotation (RotateSecret); this token's rotation is over"
        )
    return True


# -- the function's settings (environment variables) -----------------------------------------------------------


# -- the function ----------------------------------------------------------------------------------------------


class RotationFunction:
    """One container's rotation function: a store, settings, a plugin loader, notifiers, a clock."""

    def __init__(
        self,
        store: RotationStore,
        settings: FunctionSettings | None = None,
        *,
        load_plugin: Callable[[str, Mapping[str, Any]], RotationPlugin] | None = None,
        notifiers: Sequence[tuple[str, Notifier]] | None = None,
        clock: Callable[[], datetime] = utc_now,
        cache_size: int = 64,
    ) -> None:
        self.store = store
        self.settings = settings or FunctionSettings()
        self._load_plugin = load_plugin or registry_plugin_loader()
        self._notifiers = list(notifiers) if notifiers is not None else None
        self.clock = clock
        self._plugins: dict[str, RotationPlugin] = {}
        self._values: OrderedDict[tuple[str, str], Mapping[str, Any]] = OrderedDict()
        self._cache_size = cache_size

    def handle(self, event: Mapping[str, Any], *, deadline_seconds: float = 60.0) -> dict[str, Any]:
        """Run one step of the rotation contract. Returns a summary without any secret; raises on failure (after
        telling the notifiers subscribed to failure events)."""
        parsed = parse_event(event)
        deadline = Deadline(deadline_seconds)
        deadline.start()  # every retry in this invocation shares its time, as a step's do under the runner
        with bound_contextvars(step=parsed.step, version=parsed.token):
            described = SecretDescription.parse(
                parsed.secret_id, deadline.retry(lambda: self.store.describe_rotation(parsed.secret_id))
            )
            with bound_contextvars(secret=described.name):
                summary: dict[str, Any] = {"step": parsed.step, "secret": described.name, "version": parsed.token}
                if not check_contract(described, parsed.token):
                    log.info("version already AWSCURRENT; nothing to do")
                    return {**summary, "result": "already-current"}
                invocation = _Invocation(self, parsed, described, deadline)
                try:
                    result = getattr(invocation, _METHODS[parsed.step])()
                except Exception as exc:
                    invocation.alert(exc)
                    raise
                log.info("step done", **{k: v for k, v in result.items() if k != "notify_failures"})
                return {**summary, **result}

    # -- container-wide caches -----------------------------------------------------------------------------------

    def plugin(self, type_name: str) -> RotationPlugin:
        if type_name not in self._plugins:
            self._plugins[type_name] = self._load_plugin(type_name, self.settings.options_for(type_name))
        return self._plugins[type_name]

    def notifiers(self) -> list[tuple[str, Notifier]]:
        if self._notifiers is None:
            self._notifiers = load_notifiers(self.settings.notifiers)
        return self._notifiers

    def cached_value(self, secret_id: str, version_id: str) -> Mapping[str, Any] | None:
        key = (secret_id, version_id)
        value = self._values.get(key)
        if value is not None:
            self._values.move_to_end(key)
        return value

    def remember(self, secret_id: str, version_id: str, value: Mapping[str, Any]) -> None:
        self._values[(secret_id, version_id)] = dict(value)
        self._values.move_to_end((secret_id, version_id))
        while len(self._values) > self._cache_size:
            self._values.popitem(last=False)


_METHODS = {
    "createSecret": "create_secret",
    "setSecret": "set_secret",
    "testSecret": "test_secret",
    "finishSecret": "finish_secret",
}


class LabelStore:
    """Secrets Manager's version labels as the step core's RunStore (rotator/engine/steps.py), for one invocation.

    Values are cached per container by (secret, version id): a version's value never changes in Secrets Manager,
    so the four invocations of one rotation in a warm container read each value once. Labels are never cached
    across invocations: each one describes the secret afresh, and promote moves this invocation's view as
    UpdateSecretVersionStage moves the labels."""

    def __init__(self, function: RotationFunction, event: StepEvent, described: SecretDescription, deadline: Deadline):
        self.function = function
        self.event = event
        self.described = described
        self.deadline = deadline
        self.secret_id = event.secret_id
        self._others: dict[str, Credential] = {}

    @property
    def version_id(self) -> str:
        return self.event.token

    def version(self, version_id: str) -> Credential | None:
        """A version of this secret (cached: values never change), with its labels as described now."""
        value = self.function.cached_value(self.secret_id, version_id)
        if value is None:
            credential = self.deadline.retry(lambda: self.function.store.get_version(self.secret_id, version_id))
            if credential is None:
                return None
            value = credential.value
            self.function.remember(self.secret_id, version_id, value)
        credential = Credential(version_id, value, self.described.stages(version_id))
        register_secret(*credential.secret_strings())
        return credential

    def holder(self, stage: Stage) -> str | None:
        return self.described.holder(LABELS[stage])

    def read(self, stage: Stage) -> Credential | None:
        if stage is Stage.PENDING:
            return self.version(self.version_id)
        version_id = self.holder(stage)
        return self.version(version_id) if version_id else None

    def read_secret(self, secret_id: str) -> Credential:
        """Another secret's AWSCURRENT (the admin secret named by masterarn), read once per invocation: its
        labels may move between invocations (it may be rotated itself)."""
        if secret_id not in self._others:
            credential = self.deadline.retry(lambda: self.function.store.get(secret_id, Stage.CURRENT))
            if credential is None:
                raise SecretNotFound(f"secret {secret_id!r} has no AWSCURRENT version")
            register_secret(*credential.secret_strings())
            self._others[secret_id] = credential
        return self._others[secret_id]

    def put_pending(self, value: Mapping[str, Any]) -> None:
        """PutSecretValue(ClientRequestToken=token, AWSPENDING): AWS refuses another value for a version that holds
        one, which is the check that createSecret has not stored a value already (VersionConflict)."""
        failpoints.hit("before-store-put-pending")
        self.deadline.retry(
            lambda: self.function.store.put_version(
                self.secret_id, self.version_id, value, rotation_token=self.event.rotation_token
            )
        )
        failpoints.hit("after-store-put-pending")
        self.function.remember(self.secret_id, self.version_id, value)

    def promote(self) -> None:
        """One UpdateSecretVersionStage: AWSCURRENT to the token (AWS puts AWSPREVIOUS on the old version).
        AWSPENDING stays on the token, beside AWSCURRENT: a legal end state for AWS, as the samples leave it."""
        previous_id = self.holder(Stage.CURRENT)
        failpoints.hit("before-store-promote")
        self.deadline.retry(lambda: self.function.store.move_current(self.secret_id, self.version_id, previous_id))
        failpoints.hit("after-store-promote")
        versions = {vid: labels - {AWSCURRENT, AWSPREVIOUS} for vid, labels in self.described.versions.items()}
        versions[self.version_id] = versions.get(self.version_id, frozenset()) | {AWSCURRENT}
        if previous_id is not None:
            versions[previous_id] = versions[previous_id] | {AWSPREVIOUS}
        self.described = dataclasses.replace(self.described, versions=versions)

    def missing(self, stage: Stage) -> RotatorError:
        if stage is Stage.PENDING:
            return StepError(
                f"version {self.version_id} of secret {self.described.name} holds no value yet: createSecret did "
                "not finish\n  fix: none needed: Secrets Manager retries the rotation from createSecret"
            )
        if stage is Stage.CURRENT:
            return StepError(
                f"secret {self.described.name} has no AWSCURRENT value to rotate from\n  fix: put the working "
                "credential into the secret (PutSecretValue) before rotating it"
            )
        return StepError(f"secret {self.described.name} has no {LABELS[stage]} value")


class _LoggedDeliveries:
    """The Lambda's delivery record: its log, and the failures listed in the invocation's result."""

    def __init__(self) -> None:
        self.failures: list[str] = []

    def told(self, notifier: str) -> bool:
        return False  # a retried finishSecret returns at once (the token is AWSCURRENT): nobody is told twice

    def delivered(self, notifier: str) -> None:
        log.info("notified", notifier=notifier)

    def failed(self, notifier: str, error: str) -> None:
        self.failures.append(f"{notifier}: {error}")
        log.error("notifier failed; the secret is rotated all the same", notifier=notifier, error=error)


class _Invocation:
    """One step of one rotation: the event, the secret's labels as described now, and the step core over them."""

    def __init__(self, function: RotationFunction, event: StepEvent, described: SecretDescription, deadline: Deadline):
        self.function = function
        self.event = event
        self.deadline = deadline
        self.store = LabelStore(function, event, described, deadline)
        self.core: StepCore | None = None

    @property
    def described(self) -> SecretDescription:
        return self.store.described

    def require(self, stage: Stage) -> Credential:
        credential = self.store.read(stage)
        if credential is None:
            raise self.store.missing(stage)
        return credential

    def core_for(self, value: Mapping[str, Any]) -> tuple[str, StepCore]:
        """The plugin that rotates a secret holding `value` (its engine, tags, ROTATOR_PLUGIN), and the step core."""
        settings = self.function.settings
        type_name = plugin_type_for(value, self.described.tags, settings)
        plugin = self.function.plugin(type_name)
        strategy, source = strategy_for(self.described.tags, settings)
        if strategy not in plugin.strategies:
            raise ConfigError(
                f"the {type_name} plugin has no strategy {strategy!r} (from {source})",
                file=ENV_SOURCE,
                key="ROTATOR_STRATEGY",
                fix=f"use one of {', '.join(plugin.strategies)}",
            )
        ctx = RotationContext(
            plan_id=self.described.name,
            run_id=self.event.token,
            secret_id=self.event.secret_id,
            strategy=strategy,
            options=settings.options_for(type_name),
            password_policy=settings.password_policy,
            read_secret=self.store.read_secret,
            read_stage=self.store.read,
        )
        self.core = StepCore(plugin, ctx, self.store, self.deadline)
        return type_name, self.core

    # -- the four steps -------------------------------------------------------------------------------------------

    def create_secret(self) -> dict[str, Any]:
        """Revoke PREVIOUS (policy next-rotation), then create PENDING unless the token's version has a value."""
        if self.function.settings.notifiers:
            self.function.notifiers()  # a notifier misconfigured must stop the rotation before it starts
        type_name, core = self.core_for(self.require(Stage.CURRENT).value)
        result: dict[str, Any] = {"plugin": type_name, "strategy": core.ctx.strategy}
        if self.function.settings.revoke_previous == "next-rotation":
            result["revoke"] = self.revoke(core, self.described.holder(AWSPREVIOUS))
        failpoints.hit("before-create")
        # A plugin that only generates a value writes first (PutSecretValue is the check); one that may mint a key
        # at a provider reads first, so that nothing is minted twice.
        if not core.create(read_first=type_name not in LOCAL_CREATE_PLUGINS):
            return {**result, "result": "pending-kept"}
        failpoints.hit("after-create")
        return {**result, "result": "pending-created"}

    def set_secret(self) -> dict[str, Any]:
        self.require(Stage.PENDING)
        type_name, core = self.core_for(self.require(Stage.CURRENT).value)
        failpoints.hit("before-stage")
        core.stage()
        failpoints.hit("after-stage")
        return {"plugin": type_name, "strategy": core.ctx.strategy, "result": "staged"}

    def test_secret(self) -> dict[str, Any]:
        type_name, core = self.core_for(self.require(Stage.PENDING).value)
        # A failure puts CURRENT back at the target before it is raised: Secrets Manager retries the whole
        # rotation, and until then the consumers' credential (AWSCURRENT) must keep working (invariant 1).
        with core.unstaged_on_failure():
            failpoints.hit("before-test")
            core.test()
            failpoints.hit("after-test")
        return {"plugin": type_name, "strategy": core.ctx.strategy, "result": "tested"}

    def finish_secret(self) -> dict[str, Any]:
        previous_id = self.described.holder(AWSCURRENT)
        failpoints.hit("before-promote")
        promote(self.store)
        log.info("AWSCURRENT moved to the new version", previous_version=previous_id)
        result: dict[str, Any] = {"result": "promoted", "previous_version": previous_id}
        result["notify_failures"] = self.notify(previous_id)
        if self.function.settings.revoke_previous == "finish" and previous_id:
            result["revoke"] = self.revoke_after_finish(previous_id)
        return result

    # -- after promote: notify, revoke; after a failure: alert ----------------------------------------------------

    def loaded_notifiers(self) -> list[tuple[str, Notifier]] | str:
        """The function's notifiers, or why they could not be loaded (logged)."""
        try:
            return self.function.notifiers()
        except Exception as exc:
            log.error("notifiers could not be loaded; nobody was told", error=describe(exc))
            return f"loading: {describe(exc)}"

    def notify(self, previous_id: str | None) -> list[str]:
        """Tell every notifier (transient failures retried); a failure is logged and returned, never raised."""
        notifiers = self.loaded_notifiers()
        if isinstance(notifiers, str):
            return [notifiers]
        if not notifiers:
            return []
        event = RotationEvent(
            plan_id=self.described.name,
            run_id=self.event.token,
            secret_id=self.event.secret_id,
            store=STORE_NAME,
            version_id=self.event.token,
            previous_version_id=previous_id,
            rotated_at=self.function.clock(),
            trigger=Trigger.LAMBDA.value,
            read_value=lambda: self.require(Stage.PENDING).value,
        )
        ledger = _LoggedDeliveries()
        tell(
            event,
            notifiers,
            ledger,
            tries=NOTIFY_TRIES,
            deadline_seconds=self.deadline.seconds_left(),
            wants=self.function.settings.wants,
        )
        return ledger.failures

    def alert(self, exc: BaseException) -> None:
        """Tell the notifiers subscribed to failure events that this step failed: credential.rotation_failed
        (Secrets Manager retries the rotation; AWSCURRENT still works), or credential.rotation_stuck when a failed
        testSecret could not put AWSCURRENT back at the target. Never raises: the step's own error is what
        Lambda reports."""
        settings = self.function.settings
        stuck = self.core.unstage_error if self.core is not None else None
        kind = EventKind.ROTATION_STUCK if stuck else EventKind.ROTATION_FAILED
        if stuck:
            action = (
                f"AWSCURRENT may not log in at the target: putting it back failed ({stuck}); make AWSCURRENT's "
                "credential valid at the target, then let Secrets Manager retry the rotation"
            )
        else:
            fix = fix_of(exc)
            head = "nothing is broken: AWSCURRENT still works and Secrets Manager retries the rotation"
            action = f"{head}; to make it succeed: {fix}" if fix else head
        notifiers = self.loaded_notifiers()
        if isinstance(notifiers, str) or not notifiers:
            return
        event = failure_event(
            kind=kind,
            plan_id=self.described.name,
            run_id=self.event.token,
            secret_id=self.event.secret_id,
            store=STORE_NAME,
            current_version_id=self.described.holder(AWSCURRENT),
            at=self.function.clock(),
            trigger=Trigger.LAMBDA.value,
            reason=f"{self.event.step} failed",
            tags=(),
            error=describe(exc),
            action=action,
        )
        send_alert(event, notifiers, settings.wants, deadline_seconds=max(self.deadline.seconds_left(), 1.0))

    def revoke(self, core: StepCore, previous_id: str | None) -> str:
        """Invalidate the version labelled AWSPREVIOUS at the target, never CURRENT. Idempotent; nothing to do
        without AWSPREVIOUS. A failure is logged and returned: it never blocks the rotation (DESIGN)."""
        try:
            revoked = core.revoke(previous_id)
        except Exception as exc:
            log.error("revoking AWSPREVIOUS failed; the rotation goes on", previous_version=previous_id,
                      error=describe(exc))  # fmt: skip
            return f"failed: {describe(exc)}"
        if not revoked:
            return "nothing to revoke"
        log.info("AWSPREVIOUS revoked at the target", previous_version=previous_id)
        return f"revoked {previous_id}"

    def revoke_after_finish(self, previous_id: str) -> str:
        try:
            _, core = self.core_for(self.require(Stage.PENDING).value)
        except Exception as exc:
            log.error("revoking AWSPREVIOUS failed; the rotation is done all the same", error=describe(exc))
            return f"failed: {describe(exc)}"
        return self.revoke(core, previous_id)


class RotationFailed(RotatorError):
    """What the handler raises to Lambda when a step fails: the original error's type and text, scrubbed, with no
    chained traceback (Lambda writes an unhandled error's message and stack to the function's log)."""


def failure(exc: BaseException) -> RotationFailed:
    text = scrub(str(exc).strip())
    return RotationFailed(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)
