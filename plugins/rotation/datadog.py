"""Datadog API keys (type ``datadog``): a new key per rotation, the old one valid until revoke (no window).

Built on the http-api-key plugin: the calls below are its declarative requests, filled in for Datadog. Endpoints,
headers and statuses are from Datadog's public API reference:

- Key Management: https://docs.datadoghq.com/api/latest/key-management/ (create an API key: POST /api/v2/api_keys,
  201, the key at ``data.attributes.key``, its id at ``data.id``; get all API keys: GET /api/v2/api_keys with
  ``filter``, ``page[size]`` (at most 100), ``page[number]``; delete an API key: DELETE /api/v2/api_keys/{api_key_id},
  204; errors as ``{"errors": ["..."]}``);
- Validate API key: https://docs.datadoghq.com/api/latest/authentication/validate-api-key/ (GET /api/v1/validate
  with the key in DD-API-KEY: 200 ``{"valid": true}``, 403 when the key is invalid);
- Rate limits: https://docs.datadoghq.com/api/latest/rate-limits/ (429 with X-RateLimit-Reset, seconds to wait).

The secret: ``{"key_id", "api_key", "name"}`` (``key_id`` and ``name`` are public; ``api_key`` is secret). Other
fields of CURRENT are carried into each new version.

Admin credentials: the DD-API-KEY and DD-APPLICATION-KEY headers of the management calls, from ``admin_secret`` (a
secret in the plan's store with ``api_key`` and ``application_key``) or ``admin = {api_key = "env:DD_API_KEY",
application_key = "env:DD_APP_KEY"}``. Use a dedicated API key there, not the key being rotated. Least privilege: a
scoped application key with ``api_keys_read`` (reconcile), ``api_keys_write`` (create) and ``api_keys_delete``
(revoke, discard, reconcile), of a user or service account holding those permissions.

Calls per step:

- create: ``POST /api/v2/api_keys`` (name ``rotator:<plan>:<run>``); a repeated try first lists and deletes the
  key an earlier try minted (``GET /api/v2/api_keys``, ``DELETE /api/v2/api_keys/{id}``).
- test: ``GET /api/v1/validate`` with the new key, until it answers ``valid: true`` (``propagation_timeout``).
- revoke: ``DELETE /api/v2/api_keys/{id}`` of PREVIOUS. discard: the same for PENDING.
- reconcile: ``GET /api/v2/api_keys?filter=<prefix>`` (pages of 100), ``DELETE /api/v2/api_keys/{id}`` per orphan.

Options: ``site`` (``datadoghq.com``, ``datadoghq.eu``, ``us3.datadoghq.com``, ``us5.datadoghq.com``,
``ap1.datadoghq.com``, ``ap2.datadoghq.com``, ``uk1.datadoghq.com``, ``ddog-gov.com``, ``us2.ddog-gov.com``: the API
host is ``api.<site>``), ``base_url`` (overrides ``site``: a proxy, or a test server), the admin options, and the
transport options of rotator_plugins.http_transport. Password policy: not applicable (Datadog mints the key).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Any, ClassVar

from msgspec import Meta
from rotator_plugins.rotation.http_api_key import HttpApiKeyOptions, TemplatedKeyApi
from rotator_plugins.rotation.http_keys import ApiKeyRotation, KeyApi, KeyOptions

from rotator import ComponentSetup, parse_options

ADMIN_HEADERS = {"DD-API-KEY": "{admin.api_key}", "DD-APPLICATION-KEY": "{admin.application_key}"}


class DatadogOptions(KeyOptions):
    REQUIRED_ADMIN: ClassVar[tuple[str, ...]] = ("api_key", "application_key")

    site: Annotated[str, Meta(pattern=r"^(app\.)?([a-z0-9-]+\.)?(datadoghq\.(com|eu)|ddog-gov\.com)\Z")] = (
        "datadoghq.com"
    )
    base_url: Annotated[str, Meta(pattern=r"^https?://[^/?#]+")] | None = None

    def api_url(self) -> str:
        return self.base_url or f"https://api.{self.site.removeprefix('app.')}"


def datadog_spec(options: DatadogOptions) -> HttpApiKeyOptions:
    """The http-api-key requests that rotate a Datadog API key."""
    return parse_options(
        HttpApiKeyOptions,
        {
            **options.shared(),
            "base_url": options.api_url(),
            "create": {
                "method": "POST",
                "url": "/api/v2/api_keys",
                "headers": ADMIN_HEADERS,
                "json": {"data": {"type": "api_keys", "attributes": {"name": "{name}"}}},
                "expect": [201],
                "key_path": "data.attributes.key",
                "id_path": "data.id",
            },
            "test": {
                "url": "/api/v1/validate",
                "headers": {"DD-API-KEY": "{key.api_key}"},
                "check_path": "valid",
                "check_equals": True,
            },
            "revoke": {"url": "/api/v2/api_keys/{key.key_id}", "headers": ADMIN_HEADERS, "expect": [204]},
            "list": {
                "url": "/api/v2/api_keys?filter={prefix}&page[size]=100&page[number]={page}",
                "headers": ADMIN_HEADERS,
                "items_path": "data",
                "id_path": "id",
                "name_path": "attributes.name",
                "page_start": 0,
                "page_size": 100,
            },
        },
    )


class DatadogApiKeyPlugin(ApiKeyRotation):
    """Rotates one Datadog API key (see the module docstring)."""

    id_field = "key_id"
    secret_field = "api_key"  # noqa: S105 (a field name, not a secret)

    def connect(
        self, options: Mapping[str, Any] | None, setup: ComponentSetup | None, sleep: Callable[[float], None]
    ) -> tuple[KeyOptions, KeyApi]:
        parsed = parse_options(DatadogOptions, options)
        api = TemplatedKeyApi(
            "datadog",
            datadog_spec(parsed),
            setup,
            fix_auth=(
                "check DD-API-KEY and DD-APPLICATION-KEY in the admin credentials, and that the application key has "
                "api_keys_read, api_keys_write and api_keys_delete"
            ),
            sleep=sleep,
            reset_header=("X-RateLimit-Reset", "seconds"),
        )
        return parsed, api
