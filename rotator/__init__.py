"""Credential rotator: the public API that plugins, stores and notifiers import (and nothing else of rotator)."""

from rotator.components import ComponentSetup, is_secret_ref, resolve_secret_ref
from rotator.errors import (
    AuthenticationFailed,
    ConfigError,
    NotifyError,
    PluginLoadError,
    RollbackError,
    RotatorError,
    SecretNotFound,
    StepError,
    StoreError,
    TestFailed,
    TransientError,
    VersionConflict,
)
from rotator.interfaces import Notifier, Reconciler, RotationPlugin, SecretStore, UsageProbe
from rotator.logs import get_logger, register_secret, scrub
from rotator.model import (
    Credential,
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
    "AuthenticationFailed",
    "ComponentSetup",
    "ConfigError",
    "Credential",
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
    "StoreError",
    "TestFailed",
    "TransientError",
    "UsageProbe",
    "VersionConflict",
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
