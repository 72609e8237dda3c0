"""Twilio SendGrid API keys (type ``sendgrid``): a new key per rotation, the old one valid until revoke (no window).

Built on the http-api-key plugin: the calls below are its declarative requests, filled in for SendGrid. Endpoints,
auth and statuses are from SendGrid's public API reference (https://www.twilio.com/docs/sendgrid/api-reference/api-keys
and its OpenAPI file, github.com/twilio/sendgrid-oai spec/json/tsg_api_keys_v3.json):

- Create API keys: POST /v3/api_keys ``{"name", "scopes"}``, 201 ``{"api_key", "api_key_id", "name", "scopes"}``;
  the key is returned this once. Without ``scopes`` SendGrid makes a Full Access key, so this plugin always sends
  them: the ``scopes`` option, or CURRENT's own scopes (GET /v3/api_keys/{api_key_id}). At most 100 keys per account
  (403 beyond).
- Retrieve all API keys: GET /v3/api_keys?limit=N, 200 ``{"result": [{"api_key_id", "name"}]}``.
- Delete API keys: DELETE /v3/api_keys/{api_key_id}, 204; 404 when it does not exist ("authentications using a
  revoked key fail after a small propagation delay").
- Retrieve a list of scopes for which this user has access: GET /v3/scopes with the key as ``Authorization: Bearer``
  (https://www.twilio.com/docs/sendgrid/api-reference/api-key-permissions): the probe; 401 when the key is invalid.
- Errors are ``{"errors": [{"field", "message"}]}``; 429 carries X-RateLimit-Reset (a Unix time).
- Base URL https://api.sendgrid.com, or https://api.eu.sendgrid.com for EU regional subusers (``region = "eu"``).

The secret: ``{"key_id", "api_key", "name"}`` (``key_id`` is SendGrid's api_key_id; ``key_id`` and ``name`` are
public, ``api_key`` is secret). Other fields of CURRENT are carried into each new version.

Admin credentials: a SendGrid API key with the scopes ``api_keys.create``, ``api_keys.read`` and ``api_keys.delete``
(least privilege; a key can only grant scopes it has itself), from ``admin_secret`` (a secret with ``api_key``) or
``admin = {api_key = "env:SENDGRID_ADMIN_KEY"}``. ``on_behalf_of`` sends the on-behalf-of header (a subuser's keys).

Calls per step:

- create: ``GET /v3/api_keys/{id}`` of CURRENT (only without the ``scopes`` option), ``POST /v3/api_keys``; a repeated
  try first lists and deletes the key an earlier try minted (``GET /v3/api_keys``, ``DELETE /v3/api_keys/{id}``).
- test: ``GET /v3/scopes`` with the new key, until it is accepted (``propagation_timeout``).
- revoke: ``DELETE /v3/api_keys/{id}`` of PREVIOUS. discard: the same for PENDING.
- reconcile: ``GET /v3/api_keys?limit=100``, ``DELETE /v3/api_keys/{id}`` per orphan.

Password policy: not applicable (SendGrid mints the key).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Any, ClassVar, Literal

from msgspec import Meta
from rotator_plugins.http_transport import json_of
from rotator_plugins.rotation.http_api_key import HttpApiKeyOptions, RequestSpec, TemplatedKeyApi
from rotator_plugins.rotation.http_keys import ApiKeyRotation, KeyApi, KeyOptions, MintedKey

from rotator import ComponentSetup, Credential, RotationContext, StepError, parse_options

BASE_URLS = {"global": "https://api.sendgrid.com", "eu": "https://api.eu.sendgrid.com"}
FIX_AUTH = "check the admin API key, and that it has the scopes api_keys.create, api_keys.read and api_keys.delete"


class SendGridOptions(KeyOptions):
    REQUIRED_ADMIN: ClassVar[tuple[str, ...]] = ("api_key",)

    region: Literal["global", "eu"] = "global"
    base_url: Annotated[str, Meta(pattern=r"^https?://[^/?#]+")] | None = None
    scopes: Annotated[list[str], Meta(min_length=1, description="the new key's scopes; default: CURRENT's")] | None = (
        None
    )
    on_behalf_of: Annotated[str, Meta(min_length=1, description="a subuser's username, or account-id <id>")] | None = (
        None
    )

    def headers(self) -> dict[str, str]:
        headers = {"Authorization": "Bearer {admin.api_key}"}
        if self.on_behalf_of:
            headers["on-behalf-of"] = self.on_behalf_of.replace("{", "{{").replace("}", "}}")
        return headers


def sendgrid_spec(options: SendGridOptions) -> HttpApiKeyOptions:
    """The http-api-key requests that rotate a SendGrid API key (the scopes come in as ``{extra.scopes}``)."""
    headers = options.headers()
    return parse_options(
        HttpApiKeyOptions,
        {
            **options.shared(),
            "base_url": options.base_url or BASE_URLS[options.region],
            "create": {
                "url": "/v3/api_keys",
                "headers": headers,
                "json": {"name": "{name}", "scopes": "{extra.scopes}"},
                "expect": [201],
                "key_path": "api_key",
                "id_path": "api_key_id",
            },
            "test": {"url": "/v3/scopes", "headers": {"Authorization": "Bearer {key.api_key}"}},
            "revoke": {"url": "/v3/api_keys/{key.key_id}", "headers": headers, "expect": [204]},
            "list": {
                "url": "/v3/api_keys?limit=100",
                "headers": headers,
                "items_path": "result",
                "id_path": "api_key_id",
                "name_path": "name",
            },
        },
    )


class _SendGridKeys(TemplatedKeyApi):
    def __init__(self, options: SendGridOptions, setup: ComponentSetup | None, **kwargs: Any) -> None:
        super().__init__("sendgrid", sendgrid_spec(options), setup, fix_auth=FIX_AUTH, **kwargs)
        self.sendgrid = options

    def mint(
        self, ctx: RotationContext, current: Credential, name: str, extra: Mapping[str, Any] | None = None
    ) -> MintedKey:
        """``GET /v3/api_keys/{id}`` of CURRENT for its scopes (unless the ``scopes`` option is set), then
        ``POST /v3/api_keys`` with them: never a Full Access key by omission."""
        scopes = self.sendgrid.scopes or self._current_scopes(ctx, current)
        return super().mint(ctx, current, name, {**(extra or {}), "scopes": list(scopes)})

    def _current_scopes(self, ctx: RotationContext, current: Credential) -> list[str]:
        get_key = RequestSpec(url="/v3/api_keys/{current.key_id}", headers=self.sendgrid.headers())
        label = get_key.label
        response = self.send(ctx, "create", get_key, self._values(ctx, "create", current))
        assert response is not None
        body = json_of(ctx, "create", self.vendor, label, response)
        if isinstance(body, Mapping) and isinstance(body.get("result"), list) and body["result"]:
            body = body["result"][0]  # the OpenAPI file's example wraps the key in "result"
        scopes = body.get("scopes") if isinstance(body, Mapping) else None
        if not isinstance(scopes, list) or not scopes or not all(isinstance(s, str) for s in scopes):
            raise StepError(
                f"plan {ctx.plan_id}: create: sendgrid: {label} answered without the key's scopes\n  fix: set the "
                'plugin option scopes = ["mail.send", ...] (a key created without scopes would have Full Access)',
                plan_id=ctx.plan_id,
                step="create",
            )
        return [str(s) for s in scopes]


class SendGridApiKeyPlugin(ApiKeyRotation):
    """Rotates one SendGrid API key (see the module docstring)."""

    id_field = "key_id"
    secret_field = "api_key"  # noqa: S105 (a field name, not a secret)

    def connect(
        self, options: Mapping[str, Any] | None, setup: ComponentSetup | None, sleep: Callable[[float], None]
    ) -> tuple[KeyOptions, KeyApi]:
        parsed = parse_options(SendGridOptions, options)
        return parsed, _SendGridKeys(parsed, setup, sleep=sleep, reset_header=("X-RateLimit-Reset", "epoch"))
