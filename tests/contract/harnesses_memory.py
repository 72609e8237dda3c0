"""An in-memory target and plugin for testing the plugin contract kit itself: the correct plugin passes every
check, and each broken variant below must make a named check fail (tests in test_plugins.py). A kit whose checks
cannot fail would prove nothing about the real plugins.

The target is a set of accepted passwords per user, like a Redis ACL user: stage adds the new password beside the
old one, revoke removes the old one.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rotator import (
    AuthenticationFailed,
    ComponentSetup,
    Credential,
    RotationContext,
    Stage,
    TestFailed,
    generate_password,
    get_logger,
)
from rotator.interfaces import RotationPlugin
from rotator.testing.plugins import PluginHarness

log = get_logger("rotator_plugins.memory")


@dataclass
class MemoryTarget:
    accepted: dict[str, set[str]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def logs_in(self, value: Mapping[str, Any]) -> bool:
        with self.lock:
            return str(value.get("password")) in self.accepted.get(str(value.get("username")), set())

    def add(self, user: str, password: str) -> None:
        with self.lock:
            self.accepted.setdefault(user, set()).add(password)

    def remove(self, user: str, password: str) -> None:
        with self.lock:
            self.accepted.setdefault(user, set()).discard(password)

    def passwords(self, user: str) -> set[str]:
        with self.lock:
            return set(self.accepted.get(user, set()))


class MemoryPlugin:
    """A correct plugin: generated passwords, stored before they are applied."""

    strategies = ("single-user",)

    def __init__(self, target: MemoryTarget) -> None:
        self.target = target

    def create(self, ctx: RotationContext, current: Credential) -> dict[str, Any]:
        """No remote call."""
        return {**current.value, "password": generate_password(ctx.password_policy)}

    def stage(self, ctx: RotationContext, current: Credential, pending: Credential) -> None:
        """Adds PENDING's password."""
        self.target.add(pending["username"], pending["password"])

    def test(self, ctx: RotationContext, pending: Credential) -> None:
        """Logs in with PENDING."""
        if not self.target.logs_in(pending.value):
            raise TestFailed(f"plan {ctx.plan_id}: test: user {pending['username']!r} refused the new password")

    def revoke(self, ctx: RotationContext, previous: Credential, current: Credential) -> None:
        """Removes PREVIOUS's password (never CURRENT's)."""
        if previous["password"] != current["password"]:
            self.target.remove(previous["username"], previous["password"])

    def unstage(self, ctx: RotationContext, current: Credential, pending: Credential) -> None:
        """Removes PENDING's password."""
        if pending["password"] != current["password"]:
            self.target.remove(pending["username"], pending["password"])

    def discard(self, ctx: RotationContext, pending: Credential) -> None:
        """Nothing: the password was generated here."""


class MemoryHarness(PluginHarness):
    name = "memory"

    def __init__(self, plugin_class: type[MemoryPlugin] = MemoryPlugin) -> None:
        self.target = MemoryTarget()
        self.plugin_class = plugin_class

    def make_plugin(self, strategy: str, setup: ComponentSetup) -> RotationPlugin:
        return self.plugin_class(self.target)

    def seed(self, strategy: str) -> dict[str, Any]:
        user, password = f"user-{uuid.uuid4().hex[:8]}", generate_password()
        self.target.add(user, password)
        return {"username": user, "password": password}

    def authenticates(self, value: Mapping[str, Any]) -> bool:
        return self.target.logs_in(value)

    def unknown_valid(self, seeded: Mapping[str, Any], known: Sequence[Mapping[str, Any]]) -> list[str]:
        user = str(seeded["username"])
        held = {str(v["password"]) for v in known if v.get("username") == user}
        return [f"{user}: a password no stored value holds"] * len(self.target.passwords(user) - held)


# -- broken variants: each breaks one promise of the contract -------------------------------------------------


class UnstageForgets(MemoryPlugin):
    def unstage(self, ctx: RotationContext, current: Credential, pending: Credential) -> None:
        """Leaves PENDING's password valid after a rollback (invariant 2)."""


class RevokeForgets(MemoryPlugin):
    def revoke(self, ctx: RotationContext, previous: Credential, current: Credential) -> None:
        """Leaves PREVIOUS valid forever."""


class StageNotIdempotent(MemoryPlugin):
    def stage(self, ctx: RotationContext, current: Credential, pending: Credential) -> None:
        """Replaces the password, logged in with CURRENT: a second call is refused (invariant 5)."""
        if not self.target.logs_in(current.value):
            raise AuthenticationFailed(f"plan {ctx.plan_id}: stage: CURRENT refused")
        with self.target.lock:
            self.target.accepted[pending["username"]] = {pending["password"]}


class LogsTheNewPassword(MemoryPlugin):
    def create(self, ctx: RotationContext, current: Credential) -> dict[str, Any]:
        """Logs the value before the engine knows it is a secret (invariant 6)."""
        value = super().create(ctx, current)
        log.debug("generated", made=value["password"])
        return value


class ErrorShowsThePassword(MemoryPlugin):
    def test(self, ctx: RotationContext, pending: Credential) -> None:
        """Puts the refused password in its message (invariant 6)."""
        if not self.target.logs_in(pending.value):
            raise TestFailed(f"plan {ctx.plan_id}: test: password {pending['password']} refused")


class MintsWithoutReconcile(MemoryPlugin):
    """A provider-minted key: valid the moment create returns. Without reconcile, a crash before the store write
    leaves a valid key nobody holds (invariant 2)."""

    def create(self, ctx: RotationContext, current: Credential) -> dict[str, Any]:
        value = super().create(ctx, current)
        self.target.add(value["username"], value["password"])
        return value

    def discard(self, ctx: RotationContext, pending: Credential) -> None:
        """Deletes the minted key."""
        if pending["password"] != (ctx.read_stage(Stage.CURRENT) or pending)["password"]:
            self.target.remove(pending["username"], pending["password"])


class MintsWithReconcile(MintsWithoutReconcile):
    def reconcile(self, ctx: RotationContext, known: Sequence[Credential]) -> list[str]:
        """Deletes the user's keys that no stored version holds."""
        stored = [c for c in (ctx.read_stage(Stage.CURRENT), ctx.read_stage(Stage.PENDING)) if c is not None]
        held = {c["password"] for c in [*known, *stored]}
        removed = []
        for credential in known:
            for password in self.target.passwords(credential["username"]) - held:
                self.target.remove(credential["username"], password)
                removed.append("a key")
        return removed


class RollsForward(MintsWithReconcile):
    """Cloudflare's roll: minting the new token invalidates the old one, so a run can only go forward."""

    rolls_forward = True

    def create(self, ctx: RotationContext, current: Credential) -> dict[str, Any]:
        value = super().create(ctx, current)
        self.target.remove(current["username"], current["password"])
        return value

    def unstage(self, ctx: RotationContext, current: Credential, pending: Credential) -> None:
        """Nothing can be undone: the old token is gone."""

    def discard(self, ctx: RotationContext, pending: Credential) -> None:
        """Deleting the new token would leave none: keep it."""
