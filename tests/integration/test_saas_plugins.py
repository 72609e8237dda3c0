"""The API-key plugins (datadog, sendgrid, twilio, cloudflare) against HTTP fakes of the vendors' documented APIs.

No vendor can be had here: tests/fakes/<vendor>.py speak each vendor's endpoints, auth, statuses and error bodies
(see their docstrings), and answer "is this key valid now?" from their own state, so invariants 1 and 2 are
checked against the vendor's view, not the plugin's.

The plugin contract over them (rotator.testing.PluginContract) runs in tests/contract/test_plugins.py; here is what
is particular to the vendors.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
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
    ConfigError,
    Credential,
    OptionsError,
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
from tests.cli_env import CliEnv
from tests.contract.harnesses_saas import (
    ADMIN_SECRET,
    CloudflareHarness,
    DatadogHarness,
    SendGridHarness,
    TwilioHarness,
)
from tests.fakes.cloudflare import DNS_READ

SECRET = "app/api-key"
# -- what is particular to the vendors: one rig per vendor --------------------------------------------------------

VENDORS: dict[str, tuple[type[Any], type[Any]]] = {
    "datadog": (DatadogHarness, DatadogApiKeyPlugin),
    "sendgrid": (SendGridHarness, SendGridApiKeyPlugin),
    "twilio": (TwilioHarness, TwilioApiKeyPlugin),
    "cloudflare": (CloudflareHarness, CloudflareApiTokenPlugin),
}
CREATE_CALL = {  # (method, a piece of the path) of each vendor's create request, for fault injection
    "datadog": ("POST", "/api/v2/api_keys"),
    "sendgrid": ("POST", "/v3/api_keys"),
    "twilio": ("POST", "/Keys.json"),
    "cloudflare": ("POST", "/user/tokens"),
}
CREATE_LABEL = {
    "datadog": "POST /api/v2/api_keys",
    "sendgrid": "POST /v3/api_keys",
    "twilio": "POST /2010-04-01/Accounts/{current.account}/Keys.json",
    "cloudflare": "POST /user/tokens",
}
PROBE_PATH = {
    "datadog": "/api/v1/validate",
    "sendgrid": "/v3/scopes",
    "twilio": "/Usage/Records.json",
    "cloudflare": "/user/tokens/verify",
}


@dataclass
class Rig:
    """One vendor's fake (through its contract harness), an embedded store and journal, and plugin factories."""

    vendor: str
    harness: Any
    seeded: dict[str, Any]
    store: LocalStore
    journal: SqliteJournal
    tmp: Path
    sleeps: list[float]

    @property
    def fake(self) -> Any:
        return self.harness.fake

    def plugin(self, strategy: str = "single-user", **options: Any) -> Any:
        cls = VENDORS[self.vendor][1]
        setup = ComponentSetup(name="api", config_dir=self.tmp, state_dir=self.tmp)
        return cls({**self.harness.plugin_options(strategy), **options}, setup, sleep=self.sleeps.append)

    def bound(self, plugin: Any, strategy: str = "single-user", grace: timedelta = timedelta(hours=1)) -> BoundPlan:
        return BoundPlan(
            plan_id="api", secret_id=SECRET, store_name="local", store=self.store, plugin=plugin, strategy=strategy,
            grace=grace,
        )  # fmt: skip

    def ctx(self, strategy: str = "single-user", run_id: str | None = None) -> RotationContext:
        def read_secret(secret_id: str) -> Credential:
            credential = self.store.get(secret_id)
            assert credential is not None, secret_id
            return credential

        return RotationContext(
            plan_id="api", run_id=run_id or uuid.uuid4().hex, secret_id=SECRET, strategy=strategy, options={},
            password_policy=PasswordPolicy(), read_secret=read_secret,
            read_stage=lambda stage: self.store.get(SECRET, stage),
        )  # fmt: skip

    def current(self) -> Credential:
        credential = self.store.get(SECRET)
        assert credential is not None
        return credential

    def valid(self, value: Any) -> bool:
        return bool(self.harness.authenticates(value))


def make_rig(vendor: str, tmp: Path, strategy: str = "single-user") -> Iterator[Rig]:
    harness = VENDORS[vendor][0]()
    seeded = harness.seed(strategy)
    create_key_file(tmp / "store.key")
    store = LocalStore({}, ComponentSetup(name="local", config_dir=tmp, state_dir=tmp))
    journal = SqliteJournal(tmp / "journal.db")
    for secret_id, value in harness.other_secrets(strategy, seeded).items():
        store.put_current(secret_id, value)
    store.put_current(SECRET, seeded)
    try:
        yield Rig(vendor, harness, seeded, store, journal, tmp, [])
    finally:
        store.close()
        journal.close()
        harness.cleanup(seeded)


@pytest.fixture(params=list(VENDORS))
def rig(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Rig]:
    yield from make_rig(request.param, tmp_path)


@pytest.fixture
def cloudflare(tmp_path: Path) -> Iterator[Rig]:
    yield from make_rig("cloudflare", tmp_path)


def test_only_the_secret_field_is_treated_as_secret(rig: Rig) -> None:
    """What the engine registers for scrubbing (Credential.secret_strings) is the key's secret, not its public id,
    name or account: logs stay readable and the secret never shows."""
    value = rig.plugin().create(rig.ctx(), rig.current())
    secret_field = VENDORS[rig.vendor][1].secret_field
    assert Credential("v", value).secret_strings() == [value[secret_field]]
    assert Credential("v", rig.seeded).secret_strings() == [rig.seeded[secret_field]]


def test_orphan_from_a_crash_is_deleted_and_keys_the_plan_did_not_mint_are_kept(rig: Rig, capsys) -> None:
    """A key minted just before a crash (so never stored) is deleted by the next run's reconcile; keys made by
    hand, or by another plan (another prefix), are never touched."""
    orphan = rig.plugin().create(rig.ctx(), rig.current())  # minted; the process died before the store write
    assert rig.valid(orphan)
    by_hand = rig.harness.extra_key("made by hand")
    other_plan = rig.harness.extra_key(f"rotator:api-other:{uuid.uuid4().hex[:12]}")
    outcome = Runner(rig.journal).rotate(rig.bound(rig.plugin()), revoke_old_now=True)
    assert outcome.outcome == "succeeded", outcome.error
    live = rig.harness.live()
    assert orphan["key_id"] not in live and not rig.valid(orphan)
    assert {by_hand, other_plan} <= live
    assert live == {by_hand, other_plan, rig.current()["key_id"]}  # the seed was revoked
    out = capsys.readouterr()
    assert orphan["key_id"] in out.out + out.err  # reconcile logs the ids it deleted
    secret_field = VENDORS[rig.vendor][1].secret_field
    for value in (orphan, rig.seeded, rig.current().value):
        assert value[secret_field] not in out.out + out.err


def test_retry_after_is_honoured(rig: Rig) -> None:
    method, path = CREATE_CALL[rig.vendor]
    if rig.vendor == "datadog":  # Datadog says when to come back in X-RateLimit-Reset (seconds)
        rig.fake.fail(path, 429, times=2, method=method, headers={"X-RateLimit-Reset": "3"})
    elif rig.vendor == "sendgrid":  # SendGrid's X-RateLimit-Reset is a Unix time
        rig.fake.fail(path, 429, times=2, method=method, headers={"X-RateLimit-Reset": str(int(time.time()) + 4)})
    else:
        rig.fake.fail(path, 429, times=2, method=method, retry_after="3")
    value = rig.plugin().create(rig.ctx(), rig.current())
    assert rig.valid(value)
    assert len(rig.fake.calls(method, path)) == 3
    waits = [s for s in rig.sleeps if s >= 1]
    assert len(waits) == 2 and all(2 <= s <= 4 for s in waits), rig.sleeps


def test_retry_after_beyond_the_cap_is_not_slept(rig: Rig) -> None:
    method, path = CREATE_CALL[rig.vendor]
    rig.fake.fail(path, 429, times=5, method=method, retry_after="120")
    with pytest.raises(TransientError, match="asks to wait 120 s, more than retry_after_cap") as caught:
        rig.plugin(retry_after_cap=30).create(rig.ctx(), rig.current())
    assert CREATE_LABEL[rig.vendor] in str(caught.value)
    assert len(rig.fake.calls(method, path)) == 1 and rig.sleeps == []


def test_server_errors_are_retried_then_transient(rig: Rig) -> None:
    method, path = CREATE_CALL[rig.vendor]
    rig.fake.fail(path, 503, times=1, method=method)
    assert rig.valid(rig.plugin().create(rig.ctx(), rig.current()))
    rig.fake.fail(path, 502, times=3, method=method)
    with pytest.raises(TransientError, match="answered 502") as caught:
        rig.plugin(max_attempts=3).create(rig.ctx(), rig.current())
    assert CREATE_LABEL[rig.vendor] in str(caught.value) and "3 tries" in str(caught.value)


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_call_is_not_retried_and_names_the_call_and_the_fix(rig: Rig, status: int) -> None:
    method, path = CREATE_CALL[rig.vendor]
    rig.fake.fail(path, status, times=1, method=method)
    with pytest.raises(AuthenticationFailed) as caught:
        rig.plugin().create(rig.ctx(), rig.current())
    text = str(caught.value)
    assert f"refused {CREATE_LABEL[rig.vendor]} with {status}" in text and "; fix: " in text.splitlines()[0]
    assert len(rig.fake.calls(method, path)) == 1  # never retried
    for secret in rig.current().secret_strings():
        assert secret not in text


def test_a_new_key_that_has_not_propagated_yet_is_retried(rig: Rig) -> None:
    rig.fake.reject_new_keys(2)
    outcome = Runner(rig.journal).rotate(rig.bound(rig.plugin(propagation_timeout=30)))
    assert outcome.outcome == "awaiting_revoke", outcome.error
    assert len(rig.fake.calls("GET", PROBE_PATH[rig.vendor])) == 3
    assert len([s for s in rig.sleeps if s > 0]) == 2
    assert rig.valid(rig.current().value) and rig.valid(rig.seeded)  # both valid during grace


@pytest.mark.parametrize(
    "vendor",
    [
        "datadog",
        "sendgrid",
        "twilio",
        "cloudflare",
    ],
)
def test_a_failed_test_rolls_back_and_deletes_the_new_key(vendor: str, tmp_path: Path, monkeypatch) -> None:
    for rig in make_rig(vendor, tmp_path):
        monkeypatch.setenv("ROTATOR_FAILPOINTS", "after-test=error")
        before = rig.harness.live()
        outcome = Runner(rig.journal).rotate(rig.bound(rig.plugin()))
        assert outcome.outcome == "rolled_back", outcome.error
        assert (
            rig.current().version_id == rig.store.get(SECRET).version_id
            and rig.store.get(SECRET, Stage.PENDING) is None
        )
        assert rig.harness.live() == before and rig.valid(rig.seeded)


# -- Datadog --------------------------------------------------------------------------------------------------------


def test_datadog_site_names_the_api_host() -> None:
    admin = {"api_key": "env:DD_API_KEY", "application_key": "env:DD_APP_KEY"}
    for site, host in [
        ("datadoghq.com", "https://api.datadoghq.com/"),
        ("datadoghq.eu", "https://api.datadoghq.eu/"),
        ("us5.datadoghq.com", "https://api.us5.datadoghq.com/"),
        ("app.ddog-gov.com", "https://api.ddog-gov.com/"),
    ]:
        assert DatadogApiKeyPlugin({"site": site, "admin": admin}).api.transport.base_url == host
    with pytest.raises(OptionsError, match="Expected str matching regex") as caught:
        DatadogApiKeyPlugin({"site": "evil.example.com", "admin": admin})
    assert caught.value.option == "site"


def test_datadog_application_key_without_the_permission_is_refused_with_the_fix(tmp_path: Path) -> None:
    for rig in make_rig("datadog", tmp_path):
        narrow = rig.fake.add_app_key({"api_keys_read"})
        rig.store.put_current(ADMIN_SECRET, {**rig.harness.admin_value, "application_key": narrow})
        with pytest.raises(AuthenticationFailed, match="refused POST /api/v2/api_keys with 403") as caught:
            rig.plugin().create(rig.ctx(), rig.current())
        assert "api_keys_write" in str(caught.value) and narrow not in str(caught.value)


def test_datadog_reconcile_reads_every_page(tmp_path: Path) -> None:
    for rig in make_rig("datadog", tmp_path):
        orphans = {rig.harness.extra_key(f"rotator:api:{uuid.uuid4().hex[:12]}") for _ in range(105)}
        removed = rig.plugin().reconcile(rig.ctx(), [rig.current()])
        assert set(removed) == orphans and not orphans & rig.harness.live()
        pages = [c.query for c in rig.fake.calls("GET", "/api/v2/api_keys")]
        assert any("page%5Bnumber%5D=1" in q or "page[number]=1" in q for q in pages), pages


# -- SendGrid -------------------------------------------------------------------------------------------------------


def test_sendgrid_new_key_gets_current_keys_scopes_never_full_access(tmp_path: Path) -> None:
    for rig in make_rig("sendgrid", tmp_path):
        value = rig.plugin().create(rig.ctx(), rig.current())
        assert rig.fake.keys[value["key_id"]].scopes == {"mail.send"}  # as the seed, not Full Access
        explicit = rig.plugin(scopes=["mail.send", "alerts.read"]).create(rig.ctx(), rig.current())
        assert rig.fake.keys[explicit["key_id"]].scopes == {"mail.send", "alerts.read"}
        assert len(rig.fake.calls("GET", f"/v3/api_keys/{rig.seeded['key_id']}")) == 1  # only without `scopes`


def test_sendgrid_region_and_on_behalf_of() -> None:
    admin = {"api_key": "env:SG_ADMIN"}
    assert SendGridApiKeyPlugin({"admin": admin}).api.transport.base_url == "https://api.sendgrid.com/"
    eu = SendGridApiKeyPlugin({"admin": admin, "region": "eu", "on_behalf_of": "sub{user}"})
    assert eu.api.transport.base_url == "https://api.eu.sendgrid.com/"
    assert eu.api.sendgrid.headers()["on-behalf-of"] == "sub{{user}}"  # a literal in the template language


# -- Twilio ---------------------------------------------------------------------------------------------------------


def test_twilio_secret_carries_the_account_and_the_name_fits_friendly_name(tmp_path: Path) -> None:
    for rig in make_rig("twilio", tmp_path):
        value = rig.plugin().create(rig.ctx(), rig.current())
        assert value["account"] == rig.seeded["account"] and value["key_id"].startswith("SK")
        assert rig.fake.keys[value["key_id"]].friendly_name == value["name"] and len(value["name"]) <= 64
        with pytest.raises(StepError, match="longer than twilio's limit of 64 characters") as caught:
            rig.plugin(name_prefix="rotator:{plan}:" + "x" * 45).create(rig.ctx(), rig.current())
        assert "name_prefix" in str(caught.value)


def test_twilio_standard_key_as_admin_is_refused_with_the_fix(tmp_path: Path) -> None:
    for rig in make_rig("twilio", tmp_path):
        standard = rig.fake.add_key(rig.harness.account, "not a main key")
        rig.store.put_current(ADMIN_SECRET, {"username": standard.sid, "password": standard.secret})
        with pytest.raises(AuthenticationFailed, match=r"refused POST .*Keys\.json with 403: 20403") as caught:
            rig.plugin().create(rig.ctx(), rig.current())
        assert "Main key" in str(caught.value) and standard.secret not in str(caught.value)


def test_twilio_reconcile_follows_next_page_uri(tmp_path: Path) -> None:
    for rig in make_rig("twilio", tmp_path):
        for _ in range(110):
            rig.harness.extra_key("by hand")
        orphan = rig.harness.extra_key(f"rotator:api:{uuid.uuid4().hex[:12]}")  # the last: on the second page
        assert rig.plugin().reconcile(rig.ctx(), [rig.current()]) == [orphan]
        assert len(rig.fake.calls("GET", "/Keys.json")) == 2


# -- Cloudflare -----------------------------------------------------------------------------------------------------


def test_cloudflare_default_strategy_makes_a_new_token_with_the_old_ones_policies(cloudflare: Rig) -> None:
    rig = cloudflare
    plugin = rig.plugin()
    assert plugin.strategies[0] == "single-user"  # the plan's default strategy
    outcome = Runner(rig.journal).rotate(rig.bound(plugin))
    assert outcome.outcome == "awaiting_revoke", outcome.error
    new, old = rig.current(), rig.fake.tokens[rig.seeded["key_id"]]
    token = rig.fake.tokens[new["key_id"]]
    assert new["key_id"] != old.id and token.name == f"{new['name']}" and token.name.endswith(" dns reader")
    assert token.name.startswith(f"rotator:api:{outcome.run_id[:12]}")
    assert [[g["id"] for g in p["permission_groups"]] for p in token.policies] == [[DNS_READ]]
    assert token.policies[0]["resources"] == old.policies[0]["resources"] and token.condition == old.condition
    assert rig.valid(new.value) and rig.valid(rig.seeded)  # both during grace: no window
    later = Runner(rig.journal, clock=lambda: datetime.now(UTC) + timedelta(hours=2))
    assert [o.outcome for o in later.revoke_due(rig.bound(plugin))] == ["succeeded"]
    assert not rig.valid(rig.seeded) and rig.seeded["key_id"] not in rig.fake.tokens
    # The next rotation names its token after the original, not after the rotator's name.
    again = Runner(rig.journal).rotate(rig.bound(plugin), revoke_old_now=True)
    assert again.outcome == "succeeded", again.error
    assert rig.fake.tokens[rig.current()["key_id"]].name == f"rotator:api:{again.run_id[:12]} dns reader"


def test_cloudflare_roll_kills_the_old_value_at_create_and_keeps_the_id(cloudflare: Rig) -> None:
    rig = cloudflare
    plugin = rig.plugin("roll")
    assert plugin.rolls_forward and "roll" in plugin.rolls_forward_strategies
    value = plugin.create(rig.ctx("roll"), rig.current())
    assert value["key_id"] == rig.seeded["key_id"] and value["name"] == rig.seeded["name"]
    assert rig.valid(value) and not rig.valid(rig.seeded)  # the old value died with the roll: the window
    again = plugin.create(rig.ctx("roll"), rig.current())  # create repeated after a crash: roll again
    assert rig.valid(again) and not rig.valid(value)
    assert plugin.reconcile(rig.ctx("roll"), [rig.current()]) == []
    assert rig.fake.calls("GET", "/user/tokens") == [c for c in rig.fake.calls("GET", "/user/tokens/verify")]


def test_cloudflare_roll_rotation_and_revoke_touch_nothing_else(cloudflare: Rig) -> None:
    rig = cloudflare
    outcome = Runner(rig.journal).rotate(rig.bound(rig.plugin("roll"), "roll"), revoke_old_now=True)
    assert outcome.outcome == "succeeded", outcome.error
    assert rig.current()["key_id"] == rig.seeded["key_id"] and rig.valid(rig.current().value)
    assert rig.fake.calls("DELETE") == [] and rig.fake.calls("POST") == []
    assert [c.method for c in rig.fake.calls()] == ["PUT", "GET"]  # roll, verify


def test_cloudflare_roll_failure_after_create_is_held_then_finished_forward(cloudflare: Rig, monkeypatch) -> None:
    rig = cloudflare
    plugin = rig.plugin("roll")
    monkeypatch.setenv("ROTATOR_FAILPOINTS", "after-test=error")
    held = Runner(rig.journal).rotate(rig.bound(plugin, "roll"))
    assert held.outcome == "stuck" and "rotator resume" in (held.error or "")
    pending = rig.store.get(SECRET, Stage.PENDING)
    assert pending is not None and rig.valid(pending.value) and not rig.valid(rig.current().value)
    monkeypatch.delenv("ROTATOR_FAILPOINTS")
    [resumed] = Runner(rig.journal).resume(rig.bound(rig.plugin("roll"), "roll"))
    assert resumed.outcome in ("awaiting_revoke", "succeeded"), resumed.error
    assert rig.current().version_id == pending.version_id and rig.valid(rig.current().value)


def test_cloudflare_roll_discard_refuses_and_says_how_to_recover(cloudflare: Rig) -> None:
    rig = cloudflare
    plugin = rig.plugin("roll")
    ctx = rig.ctx("roll")
    pending = rig.store.put_pending(SECRET, plugin.create(ctx, rig.current()), ctx.run_id)
    with pytest.raises(StepError) as caught:
        plugin.discard(ctx, pending)
    first, _, fix = str(caught.value).partition("\n")
    assert "nothing to roll back to" in first and "rotator resume" in first and pending.version_id in first
    assert f"rotator store get {SECRET} --stage PENDING" in fix
    assert pending["token"] not in str(caught.value)
    assert rig.valid(pending.value)  # discard deleted nothing


def test_cloudflare_account_owned_tokens_use_the_account_path(tmp_path: Path) -> None:
    account = uuid.uuid4().hex
    harness = CloudflareHarness()
    harness.seed("single-user")
    try:
        item = harness.fake.add_token("ci deployer", owner=account)
        plugin = CloudflareApiTokenPlugin(
            {**harness.plugin_options("single-user"), "account_id": account, "admin": {}},
        )
        assert plugin.options.admin_secret == ADMIN_SECRET
        store = {SECRET: {"key_id": item.id, "token": item.value, "name": item.name}, ADMIN_SECRET: harness.admin_value}
        ctx = RotationContext(
            "api", uuid.uuid4().hex, SECRET, "single-user", {}, PasswordPolicy(),
            read_secret=lambda sid: Credential("v", store[sid]),
            read_stage=lambda stage: Credential("v", store[SECRET]) if stage is Stage.CURRENT else None,
        )  # fmt: skip
        value = plugin.create(ctx, Credential("v", store[SECRET]))
        assert harness.fake.tokens[value["key_id"]].owner == account
        assert {c.path for c in harness.fake.calls()} == {
            f"/client/v4/accounts/{account}/tokens/{item.id}",
            f"/client/v4/accounts/{account}/tokens",
        }
    finally:
        harness.cleanup({})


def test_vendor_options_are_checked_at_load() -> None:
    from rotator.registry import load_plugin

    setup = ComponentSetup(name="api", config_dir=Path("."), state_dir=Path("."), config_file="rotator.toml")
    cases = [
        ("datadog", {}, "plans[0].plugin.admin", "api_key, application_key"),
        ("datadog", {"admin": {"api_key": "abc", "application_key": "env:X"}}, "plans[0].plugin.admin", "reference"),
        ("sendgrid", {"admin_secret": "x", "region": "mars"}, "plans[0].plugin.region", ""),
        ("twilio", {"admin_secret": "x", "probe_path": "/x/{key.__class__}"}, "plans[0].plugin.probe_path", "{root"),
        ("cloudflare", {"admin_secret": "x", "account_id": "nope"}, "plans[0].plugin.account_id", ""),
        ("cloudflare", {"admin_secret": "x", "surprise": 1}, "plans[0].plugin.surprise", "remove"),
    ]
    for plugin_type, options, key, text in cases:
        with pytest.raises(ConfigError) as caught:
            load_plugin(plugin_type, options, setup, "plans[0].plugin")
        assert caught.value.key == key, (plugin_type, options, caught.value)
        assert text in str(caught.value)


# -- the rotator command ------------------------------------------------------------------------------------------


def test_cli_rotation_of_a_datadog_key(tmp_path: Path) -> None:
    """Through the real `rotator` command: init, store put, rotate-now (grace), rotate-now --revoke-old now, and a
    failing rotation that rolls back; no secret in the output or the state files."""
    harness = DatadogHarness()
    seeded = harness.seed("single-user")
    try:
        config = tmp_path / "rotator.toml"
        config.write_text(f"""
[rotator]
state_dir = "state"

[[plans]]
id = "metrics-key"
secret = "datadog/metrics"
grace = "1h"

[plans.plugin]
type = "datadog"
base_url = "{harness.fake.url}"
allow_plain_http = true
propagation_timeout = 5
admin = {{ api_key = "env:DD_ADMIN_API_KEY", application_key = "env:DD_ADMIN_APP_KEY" }}
""")
        env = {
            "DD_ADMIN_API_KEY": harness.admin_value["api_key"],
            "DD_ADMIN_APP_KEY": harness.admin_value["application_key"],
        }
        cli = CliEnv(tmp_path, config)
        assert cli.run("init").code == 0
        cli.seed("datadog/metrics", seeded)

        def stage(name: str) -> dict[str, Any] | None:
            result = cli.run("store", "get", "datadog/metrics", "--stage", name)
            return result.json() if result.code == 0 else None

        rotated = cli.run("rotate-now", "metrics-key", "--json", "--log-level", "debug", env=env)
        assert rotated.code == 0, rotated.stdout + rotated.stderr
        second = stage("CURRENT")
        assert second is not None and harness.authenticates(second) and harness.authenticates(seeded)
        now = cli.run("rotate-now", "metrics-key", "--revoke-old", "now", "--json", "--log-level", "debug", env=env)
        assert now.code == 0, now.stdout + now.stderr
        third = stage("CURRENT")
        assert third is not None and harness.live() == {third["key_id"]}  # the seed and the second were revoked
        failed = cli.run("rotate-now", "metrics-key", "--json", env={**env, "ROTATOR_FAILPOINTS": "after-test=error"})
        assert failed.code == 1 and failed.json()["results"][0]["outcome"] == "rolled_back"
        assert stage("CURRENT") == third and stage("PENDING") is None and harness.live() == {third["key_id"]}
        refused = cli.run("rotate-now", "metrics-key", "--json", env={**env, "DD_ADMIN_APP_KEY": "wrong" * 8})
        # Refused at the first call (reconcile's list): not retried; the error names the call and the fix. No
        # create call was made, so nothing was minted: the run rolls back cleanly and needs no `resume`.
        result = refused.json()["results"][0]
        assert refused.code == 1 and result["outcome"] == "rolled_back", result
        assert "refused GET /api/v2/api_keys with 403" in result["error"]
        assert "DD-APPLICATION-KEY" in result["error"] + (result["fix"] or "")
        assert stage("PENDING") is None and harness.live() == {third["key_id"]}
        assert cli.run("rotate-now", "metrics-key", "--json", env=env).code == 0  # fixed: rotates at once
        text = "\n".join(r.stdout + r.stderr for r in (rotated, now, failed, refused))
        files = b"".join(p.read_bytes() for p in cli.state_files())
        for secret in (seeded["api_key"], second["api_key"], third["api_key"], *env.values()):
            assert secret not in text and secret.encode() not in files
    finally:
        harness.cleanup(seeded)
