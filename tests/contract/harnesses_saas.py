"""Plugin-contract harnesses (rotator.testing.PluginHarness) for the API-key plugins, over the SaaS fakes.

Each scenario gets a fresh fake (started in `seed`, stopped in `cleanup`), so that keys of one scenario never
meet another's: `unknown_valid` is then exactly "keys the vendor holds that the store does not" (invariant 2),
minus the admin's own key. Admin credentials come from a secret in the plan's store (`admin_secret`, through
`other_secrets`) for Datadog, Twilio and Cloudflare, and from environment references (`admin = {...}`) for
SendGrid and the generic http-api-key plugin, so both paths run.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from rotator.testing.plugins import PluginHarness
from tests.fakes.cloudflare import TOKENS_READ, TOKENS_WRITE, FakeCloudflare
from tests.fakes.datadog import FakeDatadog
from tests.fakes.saas_base import FakeSaas
from tests.fakes.sendgrid import FakeSendGrid
from tests.fakes.twilio import FakeTwilio

PROPAGATION = 1.0  # seconds test() retries a refused key: short, so that refusal tests stay fast
ADMIN_SECRET = "ops/saas-admin"


class _FakeHarness(PluginHarness):
    fake: FakeSaas
    admin_ids: set[str]

    def __init__(self) -> None:
        self.env = f"ROTATOR_TEST_{self.name.upper().replace('-', '_')}_{secrets.token_hex(4).upper()}"

    def base_options(self) -> dict[str, Any]:
        return {"base_url": self.fake.url, "allow_plain_http": True, "propagation_timeout": PROPAGATION}

    def cleanup(self, seeded: Mapping[str, Any]) -> None:
        self.fake.stop()

    @staticmethod
    def known_ids(known: Sequence[Mapping[str, Any]]) -> set[str]:
        return {str(v.get("key_id")) for v in known}

    def extra_key(self, name: str) -> str:
        """A key made at the vendor outside rotation (by hand, or by another plan); its id."""
        raise NotImplementedError

    def live(self) -> set[str]:
        """Ids of every key the vendor holds now, the admin's own excepted."""
        raise NotImplementedError


class DatadogHarness(_FakeHarness):
    name = "datadog"
    plugin_type = "datadog"

    def seed(self, strategy: str) -> dict[str, Any]:
        self.fake = FakeDatadog().serve()
        admin = self.fake.add_key("ops admin")
        self.admin_ids = {admin.id}
        self.admin_value = {"api_key": admin.key, "application_key": self.fake.add_app_key()}
        key = self.fake.add_key("orders service")
        return {"key_id": key.id, "api_key": key.key, "name": key.name}

    def other_secrets(self, strategy: str, seeded: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        return {ADMIN_SECRET: self.admin_value}

    def plugin_options(self, strategy: str) -> dict[str, Any]:
        return {**self.base_options(), "admin_secret": ADMIN_SECRET}

    def authenticates(self, value: Mapping[str, Any]) -> bool:
        return self.fake.is_valid(str(value["api_key"]))

    def unknown_valid(self, seeded: Mapping[str, Any], known: Sequence[Mapping[str, Any]]) -> list[str]:
        return sorted(self.fake.live_ids() - self.known_ids(known) - self.admin_ids)

    def extra_key(self, name: str) -> str:
        return self.fake.add_key(name).id

    def live(self) -> set[str]:
        return self.fake.live_ids() - self.admin_ids


class SendGridHarness(_FakeHarness):
    name = "sendgrid"
    plugin_type = "sendgrid"

    def seed(self, strategy: str) -> dict[str, Any]:
        self.fake = FakeSendGrid().serve()
        admin = self.fake.add_key("ops admin", {"api_keys.create", "api_keys.read", "api_keys.delete", "mail.send"})
        self.admin_ids = {admin.api_key_id}
        os.environ[self.env] = admin.api_key
        key = self.fake.add_key("mailer", {"mail.send"})
        return {"key_id": key.api_key_id, "api_key": key.api_key, "name": key.name}

    def plugin_options(self, strategy: str) -> dict[str, Any]:
        return {**self.base_options(), "admin": {"api_key": f"env:{self.env}"}}

    def authenticates(self, value: Mapping[str, Any]) -> bool:
        return self.fake.is_valid(str(value["api_key"]))

    def unknown_valid(self, seeded: Mapping[str, Any], known: Sequence[Mapping[str, Any]]) -> list[str]:
        return sorted(self.fake.live_ids() - self.known_ids(known) - self.admin_ids)

    def extra_key(self, name: str) -> str:
        return self.fake.add_key(name, {"mail.send"}).api_key_id

    def live(self) -> set[str]:
        return self.fake.live_ids() - self.admin_ids


class HttpApiKeyHarness(SendGridHarness):
    """The generic plugin, declared in config to speak SendGrid's documented API (the SendGrid fake)."""

    name = "http-api-key"
    plugin_type = "http-api-key"

    def plugin_options(self, strategy: str) -> dict[str, Any]:
        return http_api_key_options(self.fake.url, f"env:{self.env}") | {"propagation_timeout": PROPAGATION}


def http_api_key_options(base_url: str, admin_ref: str, **more: Any) -> dict[str, Any]:
    """An http-api-key plugin table that rotates a SendGrid key (as a config file would declare it)."""
    admin = {"Authorization": "Bearer {admin.token}"}
    return {
        "base_url": base_url,
        "allow_plain_http": base_url.startswith("http://"),
        "admin": {"token": admin_ref},
        "create": {
            "method": "POST",
            "url": "/v3/api_keys",
            "headers": admin,
            "json": {"name": "{name}", "scopes": ["mail.send"]},
            "expect": [201],
            "key_path": "api_key",
            "id_path": "api_key_id",
        },
        "test": {"url": "/v3/scopes", "headers": {"Authorization": "Bearer {key.api_key}"}},
        "revoke": {"method": "DELETE", "url": "/v3/api_keys/{key.key_id}", "headers": admin, "expect": [204]},
        "list": {"url": "/v3/api_keys?limit=100", "headers": admin, "items_path": "result", "id_path": "api_key_id"},
        **more,
    }


class TwilioHarness(_FakeHarness):
    name = "twilio"
    plugin_type = "twilio"

    def seed(self, strategy: str) -> dict[str, Any]:
        self.fake = fake = FakeTwilio().serve()
        self.account, auth_token = fake.add_account()
        self.admin_ids = set()
        self.admin_value = {"username": self.account, "password": auth_token}
        key = fake.add_key(self.account, "sms sender")
        return {"account": self.account, "key_id": key.sid, "secret": key.secret, "name": key.friendly_name}

    def other_secrets(self, strategy: str, seeded: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        return {ADMIN_SECRET: self.admin_value}

    def plugin_options(self, strategy: str) -> dict[str, Any]:
        return {**self.base_options(), "admin_secret": ADMIN_SECRET}

    def authenticates(self, value: Mapping[str, Any]) -> bool:
        return self.fake.is_valid(str(value["key_id"]), str(value["secret"]))

    def unknown_valid(self, seeded: Mapping[str, Any], known: Sequence[Mapping[str, Any]]) -> list[str]:
        return sorted(self.fake.live_ids(self.account) - self.known_ids(known))

    def extra_key(self, name: str) -> str:
        return self.fake.add_key(self.account, name).sid

    def live(self) -> set[str]:
        return self.fake.live_ids(self.account)


class CloudflareHarness(_FakeHarness):
    name = "cloudflare"
    plugin_type = "cloudflare"
    strategies = ("single-user", "roll")

    def seed(self, strategy: str) -> dict[str, Any]:
        self.fake = FakeCloudflare().serve()
        admin = self.fake.add_token("rotator admin", (TOKENS_WRITE, TOKENS_READ))
        self.admin_ids = {admin.id}
        self.admin_value = {"token": admin.value}
        item = self.fake.add_token("dns reader", condition={"request_ip": {"in": ["192.0.2.0/24"]}})
        return {"key_id": item.id, "token": item.value, "name": item.name}

    def other_secrets(self, strategy: str, seeded: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        return {ADMIN_SECRET: self.admin_value}

    def plugin_options(self, strategy: str) -> dict[str, Any]:
        return {**self.base_options(), "base_url": f"{self.fake.url}/client/v4", "admin_secret": ADMIN_SECRET}

    def authenticates(self, value: Mapping[str, Any]) -> bool:
        return self.fake.is_valid(str(value["token"]))

    def unknown_valid(self, seeded: Mapping[str, Any], known: Sequence[Mapping[str, Any]]) -> list[str]:
        return sorted(self.fake.live_ids() - self.known_ids(known) - self.admin_ids)

    def previous_still_valid_during_grace(self, strategy: str) -> bool:
        return strategy != "roll"  # a roll kills the old value at create

    def extra_key(self, name: str) -> str:
        return self.fake.add_token(name).id

    def live(self) -> set[str]:
        return self.fake.live_ids() - self.admin_ids
