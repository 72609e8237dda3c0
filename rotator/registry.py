"""Finds plugins, stores and notifiers through entry-point groups, builds them, and checks them at load.

Built-ins register in the same groups as third-party packages (see pyproject.toml), so there is one path.
A factory is called as `factory(options, setup)`; an OptionsError it raises (rotator.options: how built-ins
validate their options), or a pydantic ValidationError from a third-party component that validates with pydantic,
becomes a ConfigError naming the config file and the option's full key.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Collection, Mapping
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from rotator.components import ComponentSetup
from rotator.errors import ConfigError, PluginLoadError
from rotator.interfaces import RotationPlugin, SecretStore
from rotator.model import FAILURE_EVENTS, EventKind
from rotator.options import OptionsError

GROUPS = {"plugin": "rotator.plugins", "store": "rotator.stores", "notifier": "rotator.notifiers"}


@cache
def available(kind: str) -> dict[str, EntryPoint]:
    """Entry points of one kind by type name."""
    return {ep.name: ep for ep in entry_points(group=GROUPS[kind])}


def _factory(kind: str, type_name: str, key: str, file: str) -> Callable[..., Any]:
    found = available(kind)
    if type_name not in found:
        known = ", ".join(sorted(found)) or "none installed"
        raise PluginLoadError(
            f"unknown {kind} type {type_name!r} (installed: {known})",
            file=file,
            key=key,
            fix=f"use one of the installed types, or install the package that provides {type_name!r}",
        )
    try:
        factory: Callable[..., Any] = found[type_name].load()
    except Exception as exc:  # an import error inside a third-party plugin: name it, don't crash
        raise PluginLoadError(
            f"{kind} {type_name!r} failed to load: {type(exc).__name__}: {exc}",
            file=file,
            key=key,
            fix="reinstall the package that provides it (pip install ...)",
        ) from None
    return factory


def _build(kind: str, type_name: str, options: Mapping[str, Any], setup: ComponentSetup, key: str) -> Any:
    factory = _factory(kind, type_name, key, setup.config_file)
    try:
        return factory(dict(options), setup)
    except OptionsError as exc:
        full_key = f"{key}.{exc.option}" if exc.option else key
        raise ConfigError(exc.message, file=setup.config_file, key=full_key, fix=exc.fix) from None
    except ConfigError as exc:
        if exc.file is None and not str(exc).startswith(setup.config_file):
            raise ConfigError(str(exc), file=setup.config_file) from None
        raise
    except Exception as exc:
        if not _is_pydantic_error(exc):
            raise
        error = exc.errors()[0]  # type: ignore[attr-defined]
        option = ".".join(str(part) for part in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        fix = (
            f"remove {option!r} or check its spelling"
            if error["type"] == "extra_forbidden"
            else f"add {option} = ..."
            if error["type"] == "missing"
            else "see the component's documentation for the allowed values"
        )
        raise ConfigError(message, file=setup.config_file, key=f"{key}.{option}" if option else key, fix=fix) from None


def _is_pydantic_error(exc: Exception) -> bool:
    """A pydantic ValidationError, checked without importing pydantic: if a component raised one, pydantic-core is
    already imported (the Lambda's cold path never imports it)."""
    core = sys.modules.get("pydantic_core")
    return core is not None and isinstance(exc, core.ValidationError)


def load_plugin(type_name: str, options: Mapping[str, Any], setup: ComponentSetup, key: str) -> RotationPlugin:
    plugin = _build("plugin", type_name, options, setup, key)
    missing = [
        name
        for name in ("create", "stage", "test", "revoke", "unstage", "discard")
        if not callable(getattr(plugin, name, None))
    ]
    if missing or not isinstance(getattr(plugin, "strategies", None), tuple):
        raise PluginLoadError(
            f"plugin {type_name!r} does not implement RotationPlugin (missing: {', '.join(missing) or 'strategies'})",
            file=setup.config_file,
            key=key,
            fix="upgrade or fix the plugin package",
        )
    result: RotationPlugin = plugin
    return result


def load_store(type_name: str, options: Mapping[str, Any], setup: ComponentSetup, key: str) -> SecretStore:
    store = _build("store", type_name, options, setup, key)
    if not isinstance(store, SecretStore):
        raise PluginLoadError(
            f"store {type_name!r} does not implement SecretStore",
            file=setup.config_file,
            key=key,
            fix="upgrade or fix the store package",
        )
    return store


def load_notifier(
    type_name: str,
    options: Mapping[str, Any],
    setup: ComponentSetup,
    key: str,
    *,
    events: Collection[str] | None = None,
) -> Callable[..., None]:
    """Build a notifier. With `events` (the config's `events`), also check that the notifier takes those kinds:
    one that declares `event_kinds` (a class attribute) takes only those; one that declares none takes every kind."""
    notifier = _build("notifier", type_name, options, setup, key)
    if not callable(notifier):
        raise PluginLoadError(
            f"notifier {type_name!r} is not callable",
            file=setup.config_file,
            key=key,
            fix="upgrade or fix the notifier package",
        )
    if events is not None:
        _check_event_kinds(type_name, getattr(notifier, "event_kinds", None), events, setup, key)
    result: Callable[..., None] = notifier
    return result


def _in_event_order(kinds: Collection[str]) -> list[str]:
    order = [kind.value for kind in EventKind]
    return sorted(kinds, key=lambda kind: order.index(kind) if kind in order else len(order))


def _check_event_kinds(
    type_name: str, supported: Collection[str] | None, events: Collection[str], setup: ComponentSetup, key: str
) -> None:
    """A notifier that redeploys or writes the new credential (ecs, kubernetes, file) declares only the success
    kinds: a failed run has no new credential for it to act on, so listing a failure kind is a config error."""
    if supported is None:
        return
    refused = _in_event_order(set(events) - set(supported))
    if not refused:
        return
    kept = [kind for kind in events if kind in supported]
    failure = any(kind in FAILURE_EVENTS for kind in refused)
    raise ConfigError(
        f"notifier type {type_name!r} does not take {', '.join(refused)} "
        f"(it takes only: {', '.join(_in_event_order(supported))})"
        + ("; a failed run has no new credential for a notifier that redeploys or writes it" if failure else ""),
        file=setup.config_file,
        key=f"{key}.events",
        fix=(f"write events = {json.dumps(kept)}" if kept else "remove events (the default is the success events)")
        + (
            "; to be told of failed rotations, list the failure events on a notifier that reports them "
            "(slack, webhook, sns, eventbridge or command)"
            if failure
            else ""
        ),
    )
