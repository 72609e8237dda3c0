"""An application secret with no target system: a signing key, an encryption key, a shared token.

The new value is drawn with the `secrets` module and becomes valid the moment consumers read it from the store,
so there is nothing to stage, revoke or roll back at a target: the engine's store operations (PENDING, promote,
PREVIOUS during the grace period) are the whole rotation. Consumers that must accept both values for a while
(e.g. to verify tokens signed with the old key) read PREVIOUS as well as CURRENT.

Options:

- ``field`` (default ``"value"``): the key of the secret's JSON that holds the secret; other keys are kept.
- ``bytes`` (default 32): random bytes for the ``urlsafe`` and ``hex`` encodings.
- ``encoding``: ``"urlsafe"`` (base64url without padding), ``"hex"``, or ``"password"`` (a password from the
  plan's password policy; ``bytes`` is then ignored).
"""

from __future__ import annotations

import base64
import binascii
import string
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from msgspec import Meta

from rotator import (
    ComponentSetup,
    Credential,
    Options,
    PasswordPolicy,
    RotationContext,
    StepError,
    TestFailed,
    generate_password,
    generate_token,
    parse_options,
)

_URLSAFE = frozenset(string.ascii_letters + string.digits + "-_")
_HEX = frozenset("0123456789abcdef")


class GeneratedOptions(Options):
    field: Annotated[str, Meta(min_length=1, description="the key of the secret's JSON that holds the secret")] = (
        "value"
    )
    bytes: Annotated[int, Meta(ge=16, le=4096, description="random bytes (urlsafe and hex encodings)")] = 32
    encoding: Literal["urlsafe", "hex", "password"] = "urlsafe"


class GeneratedSecretPlugin:
    """Rotates an application secret that only lives in the store (type ``generated``)."""

    strategies = ("single-user",)

    def __init__(self, options: Mapping[str, Any] | None = None, setup: ComponentSetup | None = None) -> None:
        self.options = parse_options(GeneratedOptions, options)
        self.setup = setup

    def create(self, ctx: RotationContext, current: Credential) -> dict[str, Any]:
        """CURRENT's value with `field` replaced by fresh random material. No remote call."""
        self._check_strategy(ctx, "create")
        value = dict(current.value)
        if self.options.encoding == "password":
            value[self.options.field] = generate_password(ctx.password_policy)
        else:
            value[self.options.field] = generate_token(self.options.bytes, self.options.encoding)
        return value

    def stage(self, ctx: RotationContext, current: Credential, pending: Credential) -> None:
        """Nothing to do: there is no target system; the secret is valid once consumers read it from the store."""
        self._check_strategy(ctx, "stage")

    def test(self, ctx: RotationContext, pending: Credential) -> None:
        """Check, locally, that PENDING holds `field` with the configured length and encoding (TestFailed if not).

        There is no service to log in to, so this is a shape check: it catches a truncated or mangled value
        before consumers get it. The value itself never appears in the message.
        """
        self._check_strategy(ctx, "test")
        problem = self._problem(pending.get(self.options.field), ctx.password_policy)
        if problem:
            raise TestFailed(
                f"plan {ctx.plan_id}: test: field {self.options.field!r} of the PENDING value of {ctx.secret_id} "
                f"{problem}\n  fix: rotate again (a new value is generated), or check the plugin's options",
                plan_id=ctx.plan_id,
                step="test",
            )

    def dry_run(self, ctx: RotationContext, current: Credential) -> list[str]:
        """Changes nothing, no remote call: CURRENT's shape, and what the next rotation makes."""
        self._check_strategy(ctx, "dry-run")
        facts = ["no target system: consumers read the value from the store"]
        problem = self._problem(current.get(self.options.field), ctx.password_policy)
        if problem:
            facts.append(f"note: CURRENT's field {self.options.field!r} {problem} (the next value will not)")
        made = "a password" if self.options.encoding == "password" else f"{self.options.bytes} random bytes"
        facts.append(f"the next rotation writes {made} ({self.options.encoding}) into field {self.options.field!r}")
        return facts

    def revoke(self, ctx: RotationContext, previous: Credential, current: Credential) -> None:
        """Nothing to do: no system accepts PREVIOUS except by reading it from the store, and the store drops it
        at the next rotation. (A consumer that still honours old values must stop doing so itself.)"""
        self._check_strategy(ctx, "revoke")

    def unstage(self, ctx: RotationContext, current: Credential, pending: Credential) -> None:
        """Nothing to do: `stage` changed nothing outside the store."""
        self._check_strategy(ctx, "unstage")

    def discard(self, ctx: RotationContext, pending: Credential) -> None:
        """Nothing to do: the value was generated locally; the engine drops the PENDING version from the store."""

    # -- helpers ---------------------------------------------------------------------------------------------

    def _problem(self, value: Any, policy: PasswordPolicy) -> str | None:
        if value is None:
            return "is missing"
        if not isinstance(value, str):
            return f"is a {type(value).__name__}, not a string"
        encoding, nbytes = self.options.encoding, self.options.bytes
        if encoding == "hex":
            if len(value) != 2 * nbytes:
                return f"has {len(value)} characters; hex of {nbytes} bytes has {2 * nbytes}"
            if not set(value) <= _HEX:
                return "is not lowercase hex"
            return None
        if encoding == "urlsafe":
            expected = len(base64.urlsafe_b64encode(b"\0" * nbytes).rstrip(b"="))
            if len(value) != expected:
                return f"has {len(value)} characters; base64url of {nbytes} bytes has {expected}"
            if not set(value) <= _URLSAFE:
                return "is not base64url (A-Z a-z 0-9 - _)"
            try:
                decoded = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
            except (binascii.Error, ValueError):
                return "does not decode as base64url"
            if len(decoded) != nbytes:
                return f"decodes to {len(decoded)} bytes, not {nbytes}"
            return None
        return self._password_problem(value, policy)

    @staticmethod
    def _password_problem(value: str, policy: PasswordPolicy) -> str | None:
        if len(value) != policy.length:
            return f"has {len(value)} characters; the password policy asks for {policy.length}"
        if any(c in policy.exclude_characters for c in value):
            return "holds a character the password policy excludes"
        classes = (
            (policy.exclude_lowercase, string.ascii_lowercase, "lowercase letters"),
            (policy.exclude_uppercase, string.ascii_uppercase, "uppercase letters"),
            (policy.exclude_numbers, string.digits, "digits"),
            (policy.exclude_punctuation, string.punctuation, "punctuation"),
        )
        allowed = "".join(chars for excluded, chars, _ in classes if not excluded)
        if any(c not in allowed for c in value):
            return "holds a character outside the password policy's classes"
        return None

    def _check_strategy(self, ctx: RotationContext, step: str) -> None:
        if ctx.strategy not in self.strategies:
            raise StepError(
                f"plan {ctx.plan_id}: {step}: the generated plugin has no strategy {ctx.strategy!r}\n  fix: use "
                'strategy = "single-user" (there is no target system to alternate users on)',
                plan_id=ctx.plan_id,
                step=step,
            )
