"""An in-process target for engine unit tests: it records which passwords each user accepts, so the tests can
check the invariants exactly. (Tests against real servers live in tests/integration and tests/faults.)"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rotator import AuthenticationFailed, Credential, RotationContext, TestFailed, generate_password


@dataclass
class FakeTarget:
    accepted: dict[str, set[str]] = field(default_factory=dict)
    fail: dict[str, Exception] = field(default_factory=dict)  # method name -> error to raise
    calls: list[str] = field(default_factory=list)

    def logs_in(self, credential: Mapping[str, Any]) -> bool:
        return credential["password"] in self.accepted.get(credential["username"], set())


class FakePlugin:
    """single-user: stage replaces the user's password. alternating-users: the other user gets it."""

    strategies = ("single-user", "alternating-users")

    def __init__(self, target: FakeTarget):
        self.target = target

    def _maybe_fail(self, name: str) -> None:
        self.target.calls.append(name)
        if name in self.target.fail:
            raise self.target.fail[name]

    def create(self, ctx: RotationContext, current: Credential) -> dict[str, Any]:
        self._maybe_fail("create")
        user = current["username"]
        if ctx.strategy == "alternating-users":
            user = user.removesuffix("_clone") if user.endswith("_clone") else user + "_clone"
        return {**current.value, "username": user, "password": generate_password(ctx.password_policy)}

    def stage(self, ctx: RotationContext, current: Credential, pending: Credential) -> None:
        self._maybe_fail("stage")
        if self.target.logs_in(pending.value):
            return
        if ctx.strategy == "single-user" and not self.target.logs_in(current.value):
            raise AuthenticationFailed("current password refused")
        self.target.accepted[pending["username"]] = {pending["password"]}

    def test(self, ctx: RotationContext, pending: Credential) -> None:
        self._maybe_fail("test")
        if not self.target.logs_in(pending.value):
            raise TestFailed("pending does not log in")

    def revoke(self, ctx: RotationContext, previous: Credential, current: Credential) -> None:
        self._maybe_fail("revoke")
        if previous["username"] != current["username"]:
            self.target.accepted[previous["username"]] = {generate_password()}

    def unstage(self, ctx: RotationContext, current: Credential, pending: Credential) -> None:
        self._maybe_fail("unstage")
        if ctx.strategy == "single-user":
            self.target.accepted[current["username"]] = {current["password"]}
        elif pending["username"] in self.target.accepted:
            self.target.accepted[pending["username"]] = {generate_password()}

    def discard(self, ctx: RotationContext, pending: Credential) -> None:
        self._maybe_fail("discard")
