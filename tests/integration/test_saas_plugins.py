"""The API-key plugins (datadog, sendgrid, twilio, cloudflare) against HTTP fakes of the vendors' documented APIs.

No vendor can be had here: tests/fakes/<vendor>.py speak each vendor's endpoints, auth, statuses and error bodies
(see their docstrings), and answer "is this key valid now?" from their own state, so invariants 1 and 2 are
checked against the vendor's view, not the plugin's.

First the plugin contract (rotator.testing.PluginContract: full rotation, idempotent methods, one run per plan, no
leaks, a failure and a crash at every failpoint), then what is particular to the vendors.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from rotator_plugins.rotation.cloudflare import CloudflareApiTokenPlugin
from rotator_plugins.rotation.datadog import DatadogApiKeyPlugin
from rotator_plugins.rotation.sendgrid import SendGridApiKeyPlugin
from rotator_plugins.rotation.twilio import TwilioApiKeyPlugin

from rotator import (
    AuthenticationFailed,
    Credential,
    PasswordPolicy,
    RotationContext,
    Stage,
    StepError,
    TransientError,
)
from rotator.components import ComponentSetup
from rotator.engine.runner import BoundPlan, Runner
from rotator.journal.sqlite import SqliteJournal
from rotator.local_store import LocalStore, create_key_file
from rotator.testing.plugins import PluginContract, PluginHarness
from tests.fakes.saas_harnesses import (
    ADMIN_SECRET,
    CloudflareHarness,
    DatadogHarness,
    HttpApiKeyHarness,
    SendGridHarness,
    TwilioHarness,
)

SECRET = "app/api-key"
# Until the engine applies `rolls_forward` per strategy (CloudflareApiTokenPlugin.rolls_forward_strategies), a
# failure in Cloudflare's default strategy, which can roll back, is held for a roll-forward instead of rolled back.
ROLLS_FORWARD_PER_STRATEGY = (
    "engine: BoundPlan.rolls_forward ignores rolls_forward_strategies, so cloudflare's single-user strategy "
    "(a new token; the old one stays valid) is held STUCK instead of rolled back"
)
# The engine bug tests/contract/test_plugins.py names (a failure inside the notify step rolls back): the same here.
NOTIFY_ROLLS_BACK = (
    "engine: an exception other than RotatorError inside the notify step escapes Runner._Run.notify and makes "
    "_drive roll back a promoted, announced credential"
)
ENGINE_BUGS = {"error:before-notify": NOTIFY_ROLLS_BACK, "error:after-notify": NOTIFY_ROLLS_BACK}


# -- the plugin contract ---------------------------------------------------------------------------------------


class TestDatadogContract(PluginContract):
    strategies = DatadogHarness.strategies
    known_failures = ENGINE_BUGS

    @pytest.fixture
    def plugin_harness(self) -> DatadogHarness:
        return DatadogHarness()


class TestSendGridContract(PluginContract):
    strategies = SendGridHarness.strategies
    known_failures = ENGINE_BUGS

    @pytest.fixture
    def plugin_harness(self) -> SendGridHarness:
        return SendGridHarness()


class TestTwilioContract(PluginContract):
    strategies = TwilioHarness.strategies
    known_failures = ENGINE_BUGS

    @pytest.fixture
    def plugin_harness(self) -> TwilioHarness:
        return TwilioHarness()


class TestHttpApiKeyContract(PluginContract):
    strategies = HttpApiKeyHarness.strategies
    known_failures = ENGINE_BUGS

    @pytest.fixture
    def plugin_harness(self) -> HttpApiKeyHarness:
        return HttpApiKeyHarness()


# Cloudflare declares rolls_forward (its roll strategy cannot roll back). Until the engine reads it per strategy
# (ROLLS_FORWARD_PER_STRATEGY), the kit treats both strategies as rolling forward and accepts a held (stuck) run
# where single-user should roll back; test_new_token_failure_rolls_back below checks that it does.
class TestCloudflareNewTokenContract(PluginContract):
    strategies = ("single-user",)

    @pytest.fixture
    def plugin_harness(self) -> CloudflareHarness:
        return CloudflareHarness()


# A roll kills the old value at create: the engine must never roll such a run back. What it does not do yet:
ROLL_VALUE_NOT_STORED = (
    "engine: a failure between a rolls-forward create and the store write rolls back (the new value is lost, CURRENT "
    "is dead); it must repeat create (roll again) and go on"
)
ROLL_UNPROMOTE = (
    "engine: a failure after promote unpromotes a rolls-forward run (CURRENT becomes the dead value) and then calls "
    "discard, which refuses; it must finish forward"
)
ROLL_ORPHAN = "engine: resume rolls back an orphan PENDING of a rolls-forward plugin; it must finish it forward"
ROLL_KNOWN = {
    "error:before-notify": f"{NOTIFY_ROLLS_BACK}, which for a roll is: {ROLL_UNPROMOTE}",
    "error:after-notify": f"{NOTIFY_ROLLS_BACK}, which for a roll is: {ROLL_UNPROMOTE}",
    "error:before-store-put-pending": ROLL_VALUE_NOT_STORED,
    "lost_journal": ROLL_ORPHAN,
    **{
        f"{action}:{point}": ROLL_UNPROMOTE
        for action, points in (
            ("error", ("after-store-promote", "after-promote")),
            ("error", ("before-store-unpromote", "after-store-unpromote")),
            ("error", ("before-rollback-unpromote", "after-rollback-unpromote")),
            ("abort", ("before-store-unpromote", "after-store-unpromote")),
            ("abort", ("before-rollback-unpromote", "after-rollback-unpromote")),
        )
        for point in points
    },
}


class TestCloudflareRollContract(PluginContract):
    strategies = ("roll",)
    known_failures = ROLL_KNOWN

    @pytest.fixture
    def plugin_harness(self) -> CloudflareHarness:
        return CloudflareHarness()
