"""Twilio API keys (type ``twilio``): a new Standard API key per rotation, the old one valid until revoke (no window).

Built on the http-api-key plugin: the calls below are its declarative requests, filled in for Twilio. Endpoints,
auth and statuses are from Twilio's public docs:

- REST API: Key resource v2010 (https://www.twilio.com/docs/usage/api/keys): create
  POST /2010-04-01/Accounts/{AccountSid}/Keys.json (form ``FriendlyName``, up to 64 characters), 201
  ``{"sid": "SK...", "friendly_name", "date_created", "date_updated", "secret"}``; the secret is returned this once.
  Read GET .../Keys.json (``{"keys": [...], "next_page_uri", ...}``, pages of ``PageSize``); delete
  DELETE .../Keys/{Sid}.json, 204. Standard keys cannot call /Accounts or /Keys: the admin credentials must be the
  Account SID and Auth Token, or a Main key.
- How to use the Twilio APIs (https://www.twilio.com/docs/usage/requests-to-twilio): HTTP Basic auth with an API key
  SID as the user and its secret as the password.
- Errors: ``{"code": 20003, "message": "Authenticate", "more_info", "status": 401}``; 404 is code 20404; 429 is
  code 20429 with Retry-After (https://www.twilio.com/docs/usage/twilios-response).

The secret: ``{"account", "key_id", "secret", "name"}``: ``account`` is the Account SID (AC...), ``key_id`` the key's
SID (SK...), ``secret`` the key's secret; ``account``, ``key_id`` and ``name`` are public. Other fields of CURRENT
are carried into each new version.

Admin credentials: Basic auth for the Keys calls: ``username`` (the Account SID, or a Main key's SID) and
``password`` (the Auth Token, or that Main key's secret), from ``admin_secret`` (a secret with ``username`` and
``password``) or ``admin = {username = "env:TWILIO_ACCOUNT_SID", password = "env:TWILIO_AUTH_TOKEN"}``. Twilio has
no narrower permission for managing Standard keys (least privilege: a Main key used for nothing else).

Calls per step:

- create: ``POST /2010-04-01/Accounts/{account}/Keys.json``; a repeated try first lists and deletes the key an
  earlier try minted (``GET .../Keys.json``, ``DELETE .../Keys/{sid}.json``).
- test: ``probe_path`` (default ``GET /2010-04-01/Accounts/{account}/Usage/Records.json?PageSize=1``, a resource a
  Standard key may read) with Basic auth as the new key, until it is accepted (``propagation_timeout``).
- revoke: ``DELETE /2010-04-01/Accounts/{account}/Keys/{sid}.json`` of PREVIOUS. discard: the same for PENDING.
- reconcile: ``GET /2010-04-01/Accounts/{account}/Keys.json?PageSize=100`` (following ``next_page_uri``),
  ``DELETE .../Keys/{sid}.json`` per orphan.

Options: ``base_url`` (default https://api.twilio.com; a regional edge such as https://api.dublin.ie1.twilio.com),
``probe_path``, the admin options, and the transport options. Password policy: not applicable (Twilio mints the key).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Any, ClassVar

from msgspec import Meta
from rotator_plugins.rotation.http_api_key import HttpApiKeyOptions, TemplatedKeyApi
from rotator_plugins.rotation.http_keys import ApiKeyRotation, KeyApi, KeyOptions
from rotator_plugins.rotation.http_template import Template, TemplateError

from rotator import ComponentSetup, invalid, parse_options

ADMIN_AUTH = ["{admin.username}", "{admin.password}"]
KEYS = "/2010-04-01/Accounts/{current.account}/Keys"
NAME_LIMIT = 64  # FriendlyName


class TwilioOptions(KeyOptions):
    REQUIRED_ADMIN: ClassVar[tuple[str, ...]] = ("username", "password")

    base_url: Annotated[str, Meta(pattern=r"^https?://[^/?#]+")] = "https://api.twilio.com"
    probe_path: Annotated[str, Meta(pattern=r"^/")] = "/2010-04-01/Accounts/{key.account}/Usage/Records.json?PageSize=1"

    def __post_init__(self) -> None:
        super().__post_init__()
        try:
            Template.compile(self.probe_path, {"key", "current", "plan"})
        except TemplateError as exc:
            raise invalid("probe_path", str(exc)) from None


def twilio_spec(options: TwilioOptions) -> HttpApiKeyOptions:
    """The http-api-key requests that rotate a Twilio API key."""
    return parse_options(
        HttpApiKeyOptions,
        {
            **options.shared(),
            "base_url": options.base_url,
            "id_field": "key_id",
            "key_field": "secret",
            "create": {
                "url": f"{KEYS}.json",
                "basic_auth": ADMIN_AUTH,
                "form": {"FriendlyName": "{name}"},
                "expect": [201],
                "key_path": "secret",
                "id_path": "sid",
            },
            "test": {"url": options.probe_path, "basic_auth": ["{key.key_id}", "{key.secret}"]},
            "revoke": {"url": KEYS + "/{key.key_id}.json", "basic_auth": ADMIN_AUTH, "expect": [204]},
            "list": {
                "url": f"{KEYS}.json?PageSize=100",
                "basic_auth": ADMIN_AUTH,
                "items_path": "keys",
                "id_path": "sid",
                "name_path": "friendly_name",
                "next_path": "next_page_uri",
            },
        },
    )


class TwilioApiKeyPlugin(ApiKeyRotation):
    """Rotates one Twilio API key (see the module docstring)."""

    id_field = "key_id"
    secret_field = "secret"  # noqa: S105 (a field name, not a secret)

    def connect(
        self, options: Mapping[str, Any] | None, setup: ComponentSetup | None, sleep: Callable[[float], None]
    ) -> tuple[KeyOptions, KeyApi]:
        parsed = parse_options(TwilioOptions, options)
        api = TemplatedKeyApi(
            "twilio",
            twilio_spec(parsed),
            setup,
            fix_auth=(
                "check the admin username and password (the Account SID and Auth Token, or a Main key's SID and "
                "secret: Standard keys cannot manage keys)"
            ),
            sleep=sleep,
            name_limit=NAME_LIMIT,
        )
        return parsed, api
