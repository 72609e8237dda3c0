"""Credential rotator: the public API that plugins, stores and notifiers import (and nothing else of rotator).

The names are loaded on first use (PEP 562 `__getattr__`), not when the package is: every `rotator.<module>` import
runs this file first, `rotator --help` included, and loading the whole API up front cost more than the command's
whole budget (bench/cli_startup.py). `from rotator import X` and `rotator.X` work as before.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rotator.components import ComponentSetup, is_secret_ref, resolve_secret_ref
    from rotator.errors import (
        AuthenticationFailed,
        ConfigError,
        LoginRefused,
        NotApplied,
        NotifyError,
        PluginLoadError,
        RollbackError,
        RotatorError,
        SecretNotFound,
        StepError,
        StepRefused,
        StoreError,
        TargetUnreachable,
        TestFailed,
        TransientError,
        VersionConflict,
        as_not_applied,
    )
    from rotator.interfaces import (
        AdminReset,
        DryRunProbe,
        Notifier,
        Reconciler,
        RotationPlugin,
        SecretStore,
        UsageProbe,
    )
    from rotator.logs import get_logger, register_secret, scrub
    from rotator.model import (
        FAILURE_EVENTS,
        SUCCESS_EVENTS,
        Credential,
        EventKind,
        PasswordPolicy,
        RotationContext,
        RotationEvent,
        Stage,
        Step,
    )
    from rotator.options import Options, OptionsError, invalid, options_dict, parse_options, replace_options
    from rotator.passwords import generate_password, generate_token

__version__ = "0.1.0"

__all__ = [
    "FAILURE_EVENTS",
    "SUCCESS_EVENTS",
    "AdminReset",
    "AuthenticationFailed",
    "ComponentSetup",
    "ConfigError",
    "Credential",
    "DryRunProbe",
    "EventKind",
    "LoginRefused",
    "NotApplied",
    "Notifier",
    "NotifyError",
    "Options",
    "OptionsError",
    "PasswordPolicy",
    "PluginLoadError",
    "Reconciler",
    "RollbackError",
    "RotationContext",
    "RotationEvent",
    "RotationPlugin",
    "RotatorError",
    "SecretNotFound",
    "SecretStore",
    "Stage",
    "Step",
    "StepError",
    "StepRefused",
    "StoreError",
    "TargetUnreachable",
    "TestFailed",
    "TransientError",
    "UsageProbe",
    "VersionConflict",
    "as_not_applied",
    "generate_password",
    "generate_token",
    "get_logger",
    "invalid",
    "is_secret_ref",
    "options_dict",
    "parse_options",
    "register_secret",
    "replace_options",
    "resolve_secret_ref",
    "scrub",
]

# Where each public name lives, for __getattr__.
_HOMES = {
    "rotator.components": ("ComponentSetup", "is_secret_ref", "resolve_secret_ref"),
    "rotator.errors": (
        "AuthenticationFailed",
        "ConfigError",
        "LoginRefused",
        "NotApplied",
        "NotifyError",
        "PluginLoadError",
        "RollbackError",
        "RotatorError",
        "SecretNotFound",
        "StepError",
        "StepRefused",
        "StoreError",
        "TargetUnreachable",
        "TestFailed",
        "TransientError",
        "VersionConflict",
        "as_not_applied",
    ),
    "rotator.interfaces": (
        "AdminReset",
        "DryRunProbe",
        "Notifier",
        "Reconciler",
        "RotationPlugin",
        "SecretStore",
        "UsageProbe",
    ),
    "rotator.logs": ("get_logger", "register_secret", "scrub"),
    "rotator.model": (
        "FAILURE_EVENTS",
        "SUCCESS_EVENTS",
        "Credential",
        "EventKind",
        "PasswordPolicy",
        "RotationContext",
        "RotationEvent",
        "Stage",
        "Step",
    ),
    "rotator.options": ("Options", "OptionsError", "invalid", "options_dict", "parse_options", "replace_options"),
    "rotator.passwords": ("generate_password", "generate_token"),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _HOME_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'rotator' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
