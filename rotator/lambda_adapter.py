"""AWS Secrets Manager's rotation contract, mapped onto a RotationPlugin: the pure core of lambda/handler.py.

Secrets Manager drives a rotation by invoking the function four times with the same ClientRequestToken:
createSecret, setSecret, testSecret, finishSecret. It retries the whole rotation when a step fails, so every step
here is safe to repeat. Before every step, as AWS's sample functions do (and with the same meaning):

- rotation must be enabled on the secret (an explicit ``RotationEnabled: false`` refuses; absent means never
  configured, which the samples accept too);
- the token must be a version of the secret;
- a token that is already AWSCURRENT means the rotation is done: return at once, change nothing;
- a token without AWSPENDING is an error.

Steps, and what they call (store methods name their AWS actions; plugin methods their SQL or API calls):

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

Values of versions are cached per container by (secret, version id): a version's value never changes in Secrets
Manager, so the four invocations of one rotation in a warm container read each value once. Labels are never
cached: every step describes the secret afresh.

No boto3 here (rotator/ imports no network client): the store is given, and so are the plugin loader, the
notifiers and the clock. lambda/handler.py builds them once per container.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

from rotator import failpoints
from rotator.components import ComponentSetup
from rotator.errors import ConfigError, RotatorError, SecretNotFound, StepError, VersionConflict
from rotator.interfaces import Notifier, Reconciler, RotationPlugin
from rotator.logs import bound_contextvars, get_logger, register_secret, scrub
from rotator.model import Credential, PasswordPolicy, RotationContext, RotationEvent, Stage, Trigger
from rotator.passwords import check_policy
from rotator.retry import call_with_retry

T = TypeVar("T")
log = get_logger("rotator.lambda")

AWSCURRENT, AWSPENDING, AWSPREVIOUS = "AWSCURRENT", "AWSPENDING", "AWSPREVIOUS"
LABELS = {Stage.CURRENT: AWSCURRENT, Stage.PENDING: AWSPENDING, Stage.PREVIOUS: AWSPREVIOUS}
STEPS = ("createSecret", "setSecret", "testSecret", "finishSecret")
STORE_NAME = "aws-secretsmanager"
ENV_SOURCE = "environment"  # what a ConfigError names as its "file": the function's environment variables

# The secret's "engine" (AWS's sample secret shape) -> the plugin that rotates it.
ENGINE_PLUGINS = {
    "postgres": "postgres",
    "postgresql": "postgres",
    "aurora-postgresql": "postgres",
    "mysql": "mysql",
    "aurora-mysql": "mysql",
    "aurora": "mysql",  # Aurora MySQL 5.6's engine name
    "mariadb": "mysql",
    "redis": "redis",
}
# Plugins whose `create` only generates a value here (no call to the target): calling it again is harmless, so
# createSecret may write first and let PutSecretValue refuse a second value. Any other plugin may mint a key at a
# provider: for it the token's version is read first, so that nothing is minted twice.
LOCAL_CREATE_PLUGINS = frozenset({"postgres", "mysql", "redis", "generated"})
# A plugin's option naming the CA bundle that verifies the server's TLS certificate.
CA_OPTION = {"postgres": "sslrootcert", "mysql": "ssl_ca", "redis": "ssl_ca"}
# The CA bundle AWS's sample functions verify database certificates with on Lambda's image.
LAMBDA_CA_BUNDLE = "/etc/pki/tls/cert.pem"

PLUGIN_TAG = "rotator:plugin"
STRATEGY_TAG = "rotator:strategy"
REVOKE_POLICIES = ("next-rotation", "finish")
_TRUE = ("true", "1", "y", "yes")  # as the samples' get_environment_bool
_FALSE = ("false", "0", "n", "no", "")


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


def _env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{raw!r} is not a boolean", file=ENV_SOURCE, key=name, fix=f"set {name} to true or false")


def _env_json(env: Mapping[str, str], name: str, kind: type) -> Any:
    raw = env.get(name, "").strip()
    if not raw:
        return kind()
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"not valid JSON ({exc.msg} at character {exc.pos})", file=ENV_SOURCE, key=name, fix="fix the JSON"
        ) from None
    if not isinstance(value, kind):
        expected = "an object" if kind is dict else "a list"
        raise ConfigError(f"must be {expected} in JSON", file=ENV_SOURCE, key=name, fix=f"write {name} as {expected}")
    return value


@dataclass(frozen=True)
class FunctionSettings:
    """The function's configuration, from its environment variables (the samples' names where they have one).

    | variable | meaning (default) |
    |---|---|
    | SECRETS_MANAGER_ENDPOINT | the Secrets Manager endpoint (a VPC endpoint's URL); default: the region's |
    | EXCLUDE_CHARACTERS | characters a new password never has (``:/@"'\\``) |
    | PASSWORD_LENGTH | length of a new password (32) |
    | EXCLUDE_NUMBERS, EXCLUDE_PUNCTUATION, EXCLUDE_UPPERCASE, EXCLUDE_LOWERCASE | (false) |
    | REQUIRE_EACH_INCLUDED_TYPE | at least one character of each class (true) |
    | ROTATOR_PLUGIN | the plugin for secrets without a known ``engine`` (aws-iam-key, http-api-key, ...) |
    | ROTATOR_STRATEGY | single-user (default) or alternating-users (AWS's multi-user samples) |
    | ROTATOR_PLUGIN_OPTIONS | options by plugin type, a JSON object: ``{"postgres": {"connect_timeout": 3}}`` |
    | ROTATOR_NOTIFIERS | notifiers run after finishSecret: a JSON list of ``{"type": ..., ...options}`` |
    | ROTATOR_REVOKE_PREVIOUS | next-rotation (default): at the next createSecret; finish: right after finishSecret |
    | ROTATOR_CA_BUNDLE | CA bundle that verifies database certificates (default: /etc/pki/tls/cert.pem if present) |

    A secret's tags ``rotator:plugin`` and ``rotator:strategy`` override ROTATOR_PLUGIN and ROTATOR_STRATEGY.
    """

    endpoint_url: str | None = None
    password_policy: PasswordPolicy = field(default_factory=PasswordPolicy)
    plugin: str | None = None
    strategy: str | None = None
    plugin_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    notifiers: tuple[Mapping[str, Any], ...] = ()
    revoke_previous: str = "next-rotation"
    ca_bundle: str | None = None

    @classmethod
    def from_env(
        cls, env: Mapping[str, str], *, file_exists: Callable[[str], bool] = os.path.isfile
    ) -> FunctionSettings:
        raw_length = env.get("PASSWORD_LENGTH", "32").strip()
        try:
            length = int(raw_length)
        except ValueError:
            length = 0
        if not 12 <= length <= 4096:
            raise ConfigError(
                f"{raw_length!r} is not a password length from 12 to 4096",
                file=ENV_SOURCE,
                key="PASSWORD_LENGTH",
                fix="set PASSWORD_LENGTH to 32 or more (at most 4096)",
            )
        policy = PasswordPolicy(
            length=length,
            exclude_characters=env.get("EXCLUDE_CHARACTERS", PasswordPolicy.exclude_characters),
            require_each_included_type=_env_bool(env, "REQUIRE_EACH_INCLUDED_TYPE", True),
            exclude_lowercase=_env_bool(env, "EXCLUDE_LOWERCASE", False),
            exclude_uppercase=_env_bool(env, "EXCLUDE_UPPERCASE", False),
            exclude_numbers=_env_bool(env, "EXCLUDE_NUMBERS", False),
            exclude_punctuation=_env_bool(env, "EXCLUDE_PUNCTUATION", False),
        )
        try:
            check_policy(policy)
        except ConfigError as exc:
            raise ConfigError(
                f"the password settings are not usable ({str(exc).splitlines()[0]})",
                file=ENV_SOURCE,
                key="PASSWORD_LENGTH / EXCLUDE_*",
                fix=exc.fix,
            ) from None
        strategy = env.get("ROTATOR_STRATEGY", "").strip() or None
        revoke = env.get("ROTATOR_REVOKE_PREVIOUS", "").strip() or "next-rotation"
        if revoke not in REVOKE_POLICIES:
            raise ConfigError(
                f"unknown value {revoke!r}",
                file=ENV_SOURCE,
                key="ROTATOR_REVOKE_PREVIOUS",
                fix=f"use one of {', '.join(REVOKE_POLICIES)}",
            )
        notifiers = _env_json(env, "ROTATOR_NOTIFIERS", list)
        for index, spec in enumerate(notifiers):
            if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
                raise ConfigError(
                    'each notifier must be an object with a string "type"',
                    file=ENV_SOURCE,
                    key=f"ROTATOR_NOTIFIERS[{index}]",
                    fix='write it as {"type": "webhook", "url": "https://..."}',
                )
        plugin_options = _env_json(env, "ROTATOR_PLUGIN_OPTIONS", dict)
        for type_name, options in plugin_options.items():
            if not isinstance(options, dict):
                raise ConfigError(
                    "must map each plugin type to an object of its options",
                    file=ENV_SOURCE,
                    key=f"ROTATOR_PLUGIN_OPTIONS.{type_name}",
                    fix='write it as {"postgres": {"connect_timeout": 3}}',
                )
        endpoint = env.get("SECRETS_MANAGER_ENDPOINT", "").strip() or None
        if endpoint is not None and not endpoint.startswith(("https://", "http://")):
            raise ConfigError(
                f"{endpoint!r} is not a URL",
                file=ENV_SOURCE,
                key="SECRETS_MANAGER_ENDPOINT",
                fix="set it to https://secretsmanager.<region>.amazonaws.com or a VPC endpoint's https:// URL",
            )
        ca_bundle = env.get("ROTATOR_CA_BUNDLE", "").strip() or None
        if ca_bundle is None and file_exists(LAMBDA_CA_BUNDLE):
            ca_bundle = LAMBDA_CA_BUNDLE
        return cls(
            endpoint_url=endpoint,
            password_policy=policy,
            plugin=env.get("ROTATOR_PLUGIN", "").strip() or None,
            strategy=strategy,
            plugin_options=plugin_options,
            notifiers=tuple(notifiers),
            revoke_previous=revoke,
            ca_bundle=ca_bundle,
        )

    def options_for(self, plugin_type: str) -> dict[str, Any]:
        """The plugin's options from ROTATOR_PLUGIN_OPTIONS, plus the CA bundle under the plugin's own option."""
        options = dict(self.plugin_options.get(plugin_type, {}))
        ca_option = CA_OPTION.get(plugin_type)
        if self.ca_bundle and ca_option and ca_option not in options:
            options[ca_option] = self.ca_bundle
        return options


def plugin_type_for(value: Mapping[str, Any], tags: Mapping[str, str], settings: FunctionSettings) -> str:
    """Which plugin rotates this secret: its ``rotator:plugin`` tag, else its ``engine`` (AWS's sample shape),
    else ROTATOR_PLUGIN (for secrets that are not databases: IAM keys, API keys)."""
    tagged = tags.get(PLUGIN_TAG, "").strip()
    if tagged:
        return tagged
    engine = value.get("engine")
    mapped = ENGINE_PLUGINS.get(str(engine).strip().lower()) if engine is not None else None
    if mapped:
        return mapped
    if settings.plugin:
        return settings.plugin
    if engine is not None:
        raise ConfigError(
            f"the secret's engine {engine!r} has no plugin here (known: {', '.join(sorted(ENGINE_PLUGINS))})",
            file=ENV_SOURCE,
            key="ROTATOR_PLUGIN",
            fix=f"set ROTATOR_PLUGIN, or tag the secret {PLUGIN_TAG}=<plugin type>",
        )
    raise ConfigError(
        'the secret has no "engine", so the plugin that rotates it is not known',
        file=ENV_SOURCE,
        key="ROTATOR_PLUGIN",
        fix=f"set ROTATOR_PLUGIN (aws-iam-key, http-api-key, ...), or tag the secret {PLUGIN_TAG}=<plugin type>",
    )


def strategy_for(tags: Mapping[str, str], settings: FunctionSettings) -> tuple[str, str]:
    """The rotation strategy and where it came from (for the error when the plugin has no such strategy)."""
    tagged = tags.get(STRATEGY_TAG, "").strip()
    if tagged:
        return tagged, f"the secret's tag {STRATEGY_TAG}"
    if settings.strategy:
        return settings.strategy, "ROTATOR_STRATEGY"
    return "single-user", "the default (ROTATOR_STRATEGY unset)"


def registry_plugin_loader(setup: ComponentSetup | None = None) -> Callable[[str, Mapping[str, Any]], RotationPlugin]:
    """Load plugins through the registry (entry points), as the daemon does; options errors name the variable."""
    from rotator.registry import load_plugin

    component_setup = setup or _environment_setup("plugin")

    def load(type_name: str, options: Mapping[str, Any]) -> RotationPlugin:
        return load_plugin(type_name, options, component_setup, key=f"ROTATOR_PLUGIN_OPTIONS.{type_name}")

    return load


def load_notifiers(
    specs: Sequence[Mapping[str, Any]], setup: ComponentSetup | None = None
) -> list[tuple[str, Notifier]]:
    """Build ROTATOR_NOTIFIERS through the registry. Errors name ROTATOR_NOTIFIERS[i] and the option."""
    from rotator.registry import load_notifier

    component_setup = setup or _environment_setup("notifiers")
    built: list[tuple[str, Notifier]] = []
    for index, spec in enumerate(specs):
        options = {k: v for k, v in spec.items() if k not in ("type", "name")}
        name = str(spec.get("name") or f"{spec['type']}#{index}")
        notifier = load_notifier(str(spec["type"]), options, component_setup, key=f"ROTATOR_NOTIFIERS[{index}]")
        built.append((name, notifier))
    return built


def _environment_setup(name: str) -> ComponentSetup:
    # Relative paths in options start at the function's code directory (/var/task on Lambda); state goes to /tmp.
    return ComponentSetup(
        name=name, config_dir=Path.cwd(), state_dir=Path(tempfile.gettempdir()), config_file=ENV_SOURCE
    )


def one_line(exc: BaseException) -> str:
    """An error as one line, every known secret scrubbed out (for logs and the invocation's summary)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return scrub(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


def utc_now() -> datetime:
    return datetime.now(UTC)


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
        """Run one step of the rotation contract. Returns a summary without any secret; raises on failure."""
        parsed = parse_event(event)
        with bound_contextvars(step=parsed.step, version=parsed.token):
            described = SecretDescription.parse(
                parsed.secret_id,
                call_with_retry(
                    lambda: self.store.describe_rotation(parsed.secret_id), deadline_seconds=deadline_seconds
                ),
            )
            with bound_contextvars(secret=described.name):
                summary: dict[str, Any] = {"step": parsed.step, "secret": described.name, "version": parsed.token}
                if not check_contract(described, parsed.token):
                    log.info("version already AWSCURRENT; nothing to do")
                    return {**summary, "result": "already-current"}
                invocation = _Invocation(self, parsed, described, deadline_seconds)
                result = getattr(invocation, _METHODS[parsed.step])()
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


class _Invocation:
    """One step of one rotation: the event, the secret's labels as described now, and the plugin's context."""

    def __init__(self, function: RotationFunction, event: StepEvent, described: SecretDescription, deadline: float):
        self.function = function
        self.event = event
        self.described = described
        self.deadline = deadline
        self.secret_id = event.secret_id
        self.token = event.token
        self._others: dict[str, Credential] = {}

    # -- reading ------------------------------------------------------------------------------------------------

    def retry(self, fn: Callable[[], T]) -> T:
        return call_with_retry(fn, deadline_seconds=self.deadline)

    def version(self, version_id: str) -> Credential | None:
        """A version of this secret (cached: values never change), with its labels as described now."""
        value = self.function.cached_value(self.secret_id, version_id)
        if value is None:
            credential = self.retry(lambda: self.function.store.get_version(self.secret_id, version_id))
            if credential is None:
                return None
            value = credential.value
            self.function.remember(self.secret_id, version_id, value)
        credential = Credential(version_id, value, self.described.stages(version_id))
        register_secret(*credential.secret_strings())
        return credential

    def labelled(self, label: str) -> Credential | None:
        version_id = self.described.holder(label)
        return self.version(version_id) if version_id else None

    def current(self) -> Credential:
        credential = self.labelled(AWSCURRENT)
        if credential is None:
            raise StepError(
                f"secret {self.described.name} has no AWSCURRENT value to rotate from\n  fix: put the working "
                "credential into the secret (PutSecretValue) before rotating it"
            )
        return credential

    def pending(self) -> Credential:
        credential = self.version(self.token)
        if credential is None:
            raise StepError(
                f"version {self.token} of secret {self.described.name} holds no value yet: createSecret did not "
                "finish\n  fix: none needed: Secrets Manager retries the rotation from createSecret"
            )
        return credential

    def read_stage(self, stage: Stage) -> Credential | None:
        if stage is Stage.PENDING:
            return self.version(self.token)
        return self.labelled(LABELS[stage])

    def read_secret(self, secret_id: str) -> Credential:
        """Another secret's AWSCURRENT (the admin secret named by masterarn), read once per invocation: its
        labels may move between invocations (it may be rotated itself)."""
        if secret_id not in self._others:
            credential = self.retry(lambda: self.function.store.get(secret_id, Stage.CURRENT))
            if credential is None:
                raise SecretNotFound(f"secret {secret_id!r} has no AWSCURRENT version")
            register_secret(*credential.secret_strings())
            self._others[secret_id] = credential
        return self._others[secret_id]

    # -- the plugin -----------------------------------------------------------------------------------------------

    def plugin_for(self, value: Mapping[str, Any]) -> tuple[str, RotationPlugin, RotationContext]:
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
            run_id=self.token,
            secret_id=self.secret_id,
            strategy=strategy,
            options=settings.options_for(type_name),
            password_policy=settings.password_policy,
            read_secret=self.read_secret,
            read_stage=self.read_stage,
        )
        return type_name, plugin, ctx

    # -- the four steps -------------------------------------------------------------------------------------------

    def create_secret(self) -> dict[str, Any]:
        """Revoke PREVIOUS (policy next-rotation), then create PENDING unless the token's version has a value."""
        if self.function.settings.notifiers:
            self.function.notifiers()  # a notifier misconfigured must stop the rotation before it starts
        current = self.current()
        type_name, plugin, ctx = self.plugin_for(current.value)
        result: dict[str, Any] = {"plugin": type_name, "strategy": ctx.strategy}
        if self.function.settings.revoke_previous == "next-rotation":
            result["revoke"] = self.revoke(plugin, ctx, self.described.holder(AWSPREVIOUS), current)
        failpoints.hit("before-create")
        if type_name not in LOCAL_CREATE_PLUGINS:
            if self.version(self.token) is not None:
                log.info("AWSPENDING already holds a value; kept")
                return {**result, "result": "pending-kept"}
            if isinstance(plugin, Reconciler):
                reconciler: Reconciler = plugin
                known = [c for c in (current, self.labelled(AWSPREVIOUS)) if c is not None]
                removed = self.retry(lambda: reconciler.reconcile(ctx, known))
                if removed:
                    log.warning("reconcile deleted credentials the secret does not hold", removed=removed)
        value = self.retry(lambda: plugin.create(ctx, current))
        register_secret(*Credential(self.token, value).secret_strings())
        try:
            self.retry(
                lambda: self.function.store.put_version(
                    self.secret_id, self.token, value, rotation_token=self.event.rotation_token
                )
            )
        except VersionConflict:
            # The version already holds a value (an earlier createSecret of this rotation, this function's or
            # AWS's sample's): it is kept, as the samples keep it. A key minted here is deleted again.
            if type_name not in LOCAL_CREATE_PLUGINS:
                self.retry(lambda: plugin.discard(ctx, Credential(self.token, value, frozenset({Stage.PENDING}))))
            log.info("AWSPENDING already holds a value; kept")
            return {**result, "result": "pending-kept"}
        failpoints.hit("after-store-put-pending")
        self.function.remember(self.secret_id, self.token, value)
        failpoints.hit("after-create")
        return {**result, "result": "pending-created"}

    def set_secret(self) -> dict[str, Any]:
        pending = self.pending()
        current = self.current()
        type_name, plugin, ctx = self.plugin_for(current.value)
        failpoints.hit("before-stage")
        self.retry(lambda: plugin.stage(ctx, current, pending))
        failpoints.hit("after-stage")
        return {"plugin": type_name, "strategy": ctx.strategy, "result": "staged"}

    def test_secret(self) -> dict[str, Any]:
        pending = self.pending()
        type_name, plugin, ctx = self.plugin_for(pending.value)
        try:
            failpoints.hit("before-test")
            self.retry(lambda: plugin.test(ctx, pending))
            failpoints.hit("after-test")
        except Exception as exc:
            # Put CURRENT back at the target before failing: Secrets Manager retries the whole rotation, and
            # until then the consumers' credential (AWSCURRENT) must keep working (invariant 1).
            log.error("test failed; putting CURRENT back at the target", error=one_line(exc))
            try:
                current = self.current()
                self.retry(lambda: plugin.unstage(ctx, current, pending))
            except Exception as undo:
                log.error("unstage failed: AWSCURRENT may not work at the target", error=one_line(undo))
            raise
        return {"plugin": type_name, "strategy": ctx.strategy, "result": "tested"}

    def finish_secret(self) -> dict[str, Any]:
        previous_id = self.described.holder(AWSCURRENT)
        failpoints.hit("before-promote")
        self.retry(lambda: self.function.store.move_current(self.secret_id, self.token, previous_id))
        failpoints.hit("after-store-promote")
        log.info("AWSCURRENT moved to the new version", previous_version=previous_id)
        result: dict[str, Any] = {"result": "promoted", "previous_version": previous_id}
        result["notify_failures"] = self.notify(previous_id)
        if self.function.settings.revoke_previous == "finish" and previous_id:
            result["revoke"] = self.revoke_after_finish(previous_id)
        return result

    # -- after promote: notify, revoke ----------------------------------------------------------------------------

    def notify(self, previous_id: str | None) -> list[str]:
        """Run every notifier (transient failures retried); a failure is logged and returned, never raised."""
        try:
            notifiers = self.function.notifiers()
        except Exception as exc:
            log.error("notifiers could not be loaded; nobody was told", error=one_line(exc))
            return [f"loading: {one_line(exc)}"]
        if not notifiers:
            return []
        event = RotationEvent(
            plan_id=self.described.name,
            run_id=self.token,
            secret_id=self.secret_id,
            store=STORE_NAME,
            version_id=self.token,
            previous_version_id=previous_id,
            rotated_at=self.function.clock(),
            trigger=Trigger.LAMBDA.value,
            read_value=lambda: self.pending().value,
        )
        failures: list[str] = []
        for name, notifier in notifiers:
            try:
                self.retry(lambda notifier=notifier: notifier(event))  # type: ignore[misc]
            except Exception as exc:
                failures.append(f"{name}: {one_line(exc)}")
                log.error("notifier failed; the secret is rotated all the same", notifier=name, error=one_line(exc))
        return failures

    def revoke(self, plugin: RotationPlugin, ctx: RotationContext, previous_id: str | None, current: Credential) -> str:
        """Invalidate the version labelled AWSPREVIOUS at the target, never CURRENT. Idempotent; nothing to do
        without AWSPREVIOUS. A failure is logged and returned: it never blocks the rotation (DESIGN)."""
        if previous_id is None or previous_id in (current.version_id, self.token):
            return "nothing to revoke"
        try:
            previous = self.version(previous_id)
            if previous is None:
                return "nothing to revoke"
            self.retry(lambda: plugin.revoke(ctx, previous, current))
        except Exception as exc:
            log.error("revoking AWSPREVIOUS failed; the rotation goes on", previous_version=previous_id,
                      error=one_line(exc))  # fmt: skip
            return f"failed: {one_line(exc)}"
        log.info("AWSPREVIOUS revoked at the target", previous_version=previous_id)
        return f"revoked {previous_id}"

    def revoke_after_finish(self, previous_id: str) -> str:
        try:
            new_current = self.pending()
            _, plugin, ctx = self.plugin_for(new_current.value)
        except Exception as exc:
            log.error("revoking AWSPREVIOUS failed; the rotation is done all the same", error=one_line(exc))
            return f"failed: {one_line(exc)}"
        return self.revoke(plugin, ctx, previous_id, new_current)


class RotationFailed(RotatorError):
    """What the handler raises to Lambda when a step fails: the original error's type and text, scrubbed, with no
    chained traceback (Lambda writes an unhandled error's message and stack to the function's log)."""


def failure(exc: BaseException) -> RotationFailed:
    text = scrub(str(exc).strip())
    return RotationFailed(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)
