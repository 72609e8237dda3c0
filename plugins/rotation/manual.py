"""A credential that a person rotates, not the engine: a vendor console key, a certificate bought once a year, a
password behind a change-approval board.

A plan with `plugin = "manual"` is never rotated by the engine. The daemon reminds its `owner` instead (events
`credential.rotation_due` ahead of the due date, `credential.overdue` after it, repeated until someone records the
rotation with `rotator mark-rotated PLAN` or `rotator store put`); `status` and the metrics show its age and due
date. Every step refuses, before touching anything, so a run started by mistake (`rotate-now`) ends as a clean
failure that says what to do.

No options.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rotator import ComponentSetup, Credential, Options, RotationContext, StepRefused, parse_options

_FIX = "rotate it by hand, then record it: `rotator mark-rotated {plan} --reason ...` (or `rotator store put`)"


class ManualOptions(Options):
    pass


class ManualPlugin:
    """Type ``manual``: the engine reminds, a person rotates. Makes no remote call."""

    strategies = ("single-user",)

    def __init__(self, options: Mapping[str, Any] | None = None, setup: ComponentSetup | None = None) -> None:
        self.options = parse_options(ManualOptions, options)

    def _refuse(self, ctx: RotationContext) -> StepRefused:
        return StepRefused(
            f"plan {ctx.plan_id} is rotated by hand (plugin manual)\n  fix: {_FIX.format(plan=ctx.plan_id)}"
        )

    def create(self, ctx: RotationContext, current: Credential) -> dict[str, Any]:
        raise self._refuse(ctx)

    def stage(self, ctx: RotationContext, current: Credential, pending: Credential) -> None:
        raise self._refuse(ctx)

    def test(self, ctx: RotationContext, pending: Credential) -> None:
        """`rotator import --verify` of a manual plan: there is nothing to log in to."""
        raise self._refuse(ctx)

    def revoke(self, ctx: RotationContext, previous: Credential, current: Credential) -> None:
        raise self._refuse(ctx)

    def unstage(self, ctx: RotationContext, current: Credential, pending: Credential) -> None:
        return None  # stage never ran

    def discard(self, ctx: RotationContext, pending: Credential) -> None:
        return None  # create never ran
