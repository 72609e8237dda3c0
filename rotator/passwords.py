"""Passwords and tokens from a policy, drawn with the `secrets` module (never `random`)."""

from __future__ import annotations

import functools
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


def policy_problem(policy: PasswordPolicy) -> tuple[str, str, str] | None:
    """Why `policy` cannot make a password, as (option, reason, fix); None when it can."""
    classes = character_classes(policy)
    if not classes:
        return (
            "password_policy",
            "the password policy leaves no characters to choose from (every class excluded, or exclude_characters "
            "covers what the others leave)",
            "exclude fewer character classes or characters",
        )
    if policy.length < 12 or policy.length > 4096:
        return (
            "password_policy.length",
            f"password length {policy.length} is out of range",
            "use a length from 12 to 4096 (32 or more is recommended)",
        )
    if policy.require_each_included_type and len(classes) > policy.length:
        return (
            "password_policy.length",
            f"a password of {policy.length} characters cannot hold one of each of the {len(classes)} required classes",
            "raise the length or set require_each_included_type = false",
        )
    return None


def check_policy(policy: PasswordPolicy) -> None:
    """ConfigError naming the option and the fix when `policy` cannot make a password."""
    problem = policy_problem(policy)
    if problem is not None:
        key, reason, fix = problem
        raise ConfigError(reason, key=key, fix=fix)


@functools.lru_cache(maxsize=256)
def _checked_classes(policy: PasswordPolicy) -> tuple[str, ...]:
    """The policy's classes, checked once per policy (a policy is frozen; every plan of a kind shares one)."""
    check_policy(policy)
    return tuple(character_classes(policy))


def _draw(alphabet: str, length: int) -> str:
    """`length` characters of `alphabet`, uniformly, from one `secrets.token_bytes` call per batch: a byte is
    kept only below the largest multiple of the alphabet's size (rejection sampling, so no character is favoured)."""
    size = len(alphabet)
    limit = 256 - 256 % size
    chosen: list[str] = []
    while len(chosen) < length:
        for byte in secrets.token_bytes(2 * length):
            if byte < limit:
                chosen.append(alphabet[byte % size])
                if len(chosen) == length:
                    break
    return "".join(chosen)


def generate_password(policy: PasswordPolicy | None = None) -> str:
    """A password of `policy.length` characters; with require_each_included_type, one of each class at least."""
    policy = policy or PasswordPolicy()
    classes = _checked_classes(policy)
    alphabet = "".join(classes)
    while True:
        candidate = _draw(alphabet, policy.length)
        if not policy.require_each_included_type or all(any(c in cls for c in candidate) for cls in classes):
            return candidate


def generate_token(nbytes: int = 32, encoding: str = "urlsafe") -> str:
    """An opaque application secret (signing key, API token) of `nbytes` random bytes."""
    if encoding == "hex":
        return secrets.token_hex(nbytes)
    if encoding == "urlsafe":
        return secrets.token_urlsafe(nbytes)
    raise ConfigError(f"unknown token encoding {encoding!r}", key="encoding", fix="use 'hex' or 'urlsafe'")
