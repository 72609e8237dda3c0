"""The rotation function's settings, from its environment variables (AWS's sample functions' names where they
have one), and how a secret finds its plugin and strategy: what rotator/lambda_adapter.py is configured with.
A bad variable fails with a ConfigError that names it ("file": environment) and the fix.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rotator.components import ComponentSetup
from rotator.errors import ConfigError
from rotator.interfaces import Notifier, RotationPlugin
from rotator.model import SUCCESS_EVENTS, EventKind, PasswordPolicy
from rotator.passwords import check_policy

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
# A plugin's option naming the CA bundle that verifies the server's TLS certificate.
CA_OPTION = {"postgres": "sslrootcert", "mysql": "ssl_ca", "redis": "ssl_ca"}
# The CA bundle AWS's sample functions verify database certificates with on Lambda's image.
LAMBDA_CA_BUNDLE = "/etc/pki/tls/cert.pem"

PLUGIN_TAG = "rotator:plugin"
STRATEGY_TAG = "rotator:strategy"
REVOKE_POLICIES = ("next-rotation", "finish")
_TRUE = ("true", "1", "y", "yes")  # as the samples' get_environment_bool
_FALSE = ("false", "0", "n", "no", "")


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
    | ROTATOR_NOTIFIERS | notifiers run after finishSecret: a JSON list of ``{"type": ..., ...options}``; one with |
    |   | ``"events": ["credential.rotation_failed", ...]`` is also told when a step fails (default: rotated only) |
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

    def wants(self, notifier: str, kind: str) -> bool:
        """Whether the notifier named `notifier` subscribed to events of `kind` (its `events`; by default the
        success events, as in the daemon's config)."""
        for index, spec in enumerate(self.notifiers):
            if notifier_name(spec, index) == notifier and spec.get("events") is not None:
                return kind in spec["events"]
        return kind in SUCCESS_EVENTS

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
            _check_events(spec.get("events"), f"ROTATOR_NOTIFIERS[{index}].events")
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
        options = {k: v for k, v in spec.items() if k not in ("type", "name", "events")}
        events = spec.get("events")
        notifier = load_notifier(
            str(spec["type"]), options, component_setup, key=f"ROTATOR_NOTIFIERS[{index}]", events=events
        )
        built.append((notifier_name(spec, index), notifier))
    return built


def notifier_name(spec: Mapping[str, Any], index: int) -> str:
    """A ROTATOR_NOTIFIERS entry's name in logs and results: its "name", else its type and place."""
    return str(spec.get("name") or f"{spec['type']}#{index}")


# The events the function sends: the rotation, once finishSecret moved AWSCURRENT, and a failed step.
FUNCTION_EVENTS = (EventKind.ROTATED.value, EventKind.ROTATION_FAILED.value, EventKind.ROTATION_STUCK.value)


def _check_events(events: Any, key: str) -> None:
    if events is None:
        return
    if not isinstance(events, list) or not events or not all(isinstance(kind, str) for kind in events):
        raise ConfigError(
            "must be a non-empty list of event kinds",
            file=ENV_SOURCE,
            key=key,
            fix=f'write it as ["{EventKind.ROTATED.value}", "{EventKind.ROTATION_FAILED.value}"]',
        )
    unknown = [kind for kind in events if kind not in FUNCTION_EVENTS]
    if unknown:
        raise ConfigError(
            f"the function never sends {', '.join(unknown)}",
            file=ENV_SOURCE,
            key=key,
            fix=f"list only {', '.join(FUNCTION_EVENTS)}",
        )


def _environment_setup(name: str) -> ComponentSetup:
    # Relative paths in options start at the function's code directory (/var/task on Lambda); state goes to /tmp.
    return ComponentSetup(
        name=name, config_dir=Path.cwd(), state_dir=Path(tempfile.gettempdir()), config_file=ENV_SOURCE
    )
