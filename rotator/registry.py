"""Finds plugins, stores and notifiers through entry-point groups, builds them, and checks them at load.

Built-ins register in the same groups as third-party packages (see pyproject.toml), so there is one path.
A factory is called as `factory(options, setup)`; a pydantic ValidationError it raises becomes a ConfigError
naming the component's key in the config file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from pydantic import ValidationError

from rotator.components import ComponentSetup
from rotator.errors import ConfigError, PluginLoadError
from rotator.interfaces import RotationPlugin, SecretStore

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
    except ValidationError as exc:
        error = exc.errors()[0]
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
    except ConfigError as exc:
        if exc.file is None and not str(exc).startswith(setup.config_file):
            raise ConfigError(str(exc), file=setup.config_file) from None
        raise


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


def load_notifier(type_name: str, options: Mapping[str, Any], setup: ComponentSetup, key: str) -> Callable[..., None]:
    notifier = _build("notifier", type_name, options, setup, key)
    if not callable(notifier):
        raise PluginLoadError(
            f"notifier {type_name!r} is not callable",
            file=setup.config_file,
            key=key,
            fix="upgrade or fix the notifier package",
        )
    result: Callable[..., None] = notifier
    return result
