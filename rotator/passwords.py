"""Passwords and tokens from a policy, drawn with the `secrets` module (never `random`)."""

from __future__ import annotations

import secrets
import string

from rotator.errors import ConfigError
from rotator.model import PasswordPolicy


def character_classes(policy: PasswordPolicy) -> list[str]:
    """The character classes the policy allows, each minus the excluded characters (as GetRandomPassword)."""
    wanted = [
        (policy.exclude_lowercase, string.ascii_lowercase),
        (policy.exclude_uppercase, string.ascii_uppercase),
        (policy.exclude_numbers, string.digits),
        (policy.exclude_punctuation, string.punctuation),
    ]
    classes = []
    for excluded, chars in wanted:
        if excluded:
            continue
        kept = "".join(c for c in chars if c not in policy.exclude_characters)
        if kept:
            classes.append(kept)
    return classes


def check_policy(policy: PasswordPolicy) -> None:
    classes = character_classes(policy)
    if not classes:
        raise ConfigError(
            "the password policy leaves no characters to choose from",
            key="password_policy",
            fix="exclude fewer character classes or characters",
        )
    if policy.length < 12 or policy.length > 4096:
        raise ConfigError(
            f"password length {policy.length} is out of range",
            key="password_policy.length",
            fix="use a length from 12 to 4096 (32 or more is recommended)",
        )
    if policy.require_each_included_type and len(classes) > policy.length:
        raise ConfigError(
            "the password is shorter than the number of required character classes",
            key="password_policy.length",
            fix="raise the length or set require_each_included_type = false",
        )


def generate_password(policy: PasswordPolicy | None = None) -> str:
    """A password of `policy.length` characters; with require_each_included_type, one of each class at least."""
    policy = policy or PasswordPolicy()
    check_policy(policy)
    classes = character_classes(policy)
    alphabet = "".join(classes)
    while True:
        candidate = "".join(secrets.choice(alphabet) for _ in range(policy.length))
        if not policy.require_each_included_type or all(any(c in cls for c in candidate) for cls in classes):
            return candidate


def generate_token(nbytes: int = 32, encoding: str = "urlsafe") -> str:
    """An opaque application secret (signing key, API token) of `nbytes` random bytes."""
    if encoding == "hex":
        return secrets.token_hex(nbytes)
    if encoding == "urlsafe":
        return secrets.token_urlsafe(nbytes)
    raise ConfigError(f"unknown token encoding {encoding!r}", key="encoding", fix="use 'hex' or 'urlsafe'")
