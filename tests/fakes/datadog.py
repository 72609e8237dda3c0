"""A small fake of Datadog's API-key management API, for the datadog plugin's tests.

No Datadog can be had here. Written from Datadog's public API reference:
https://docs.datadoghq.com/api/latest/key-management/ and .../authentication/validate-api-key/ and
.../rate-limits/:

- POST   /api/v2/api_keys  body {"data": {"type": "api_keys", "attributes": {"name"}}}: 201 {"data": {"type":
         "api_keys", "id", "attributes": {"created_at", "key", "last4", "modified_at", "name"}}}; needs
         api_keys_write
- GET    /api/v2/api_keys?filter=&page[size]=&page[number]=: 200 {"data": [... without "key" ...], "meta": {"page":
         {"total_filtered_count"}}}; page[size] at most 100 (400 beyond); needs api_keys_read
- DELETE /api/v2/api_keys/{api_key_id}: 204, 404 when unknown; needs api_keys_delete
- GET    /api/v1/validate with DD-API-KEY: 200 {"valid": true}; 403 {"errors": ["Forbidden"]} when invalid
- management calls need DD-API-KEY (a valid API key of the org) and DD-APPLICATION-KEY (an application key whose
  scopes include the call's permission): 403 {"errors": ["Forbidden"]} otherwise
- errors are {"errors": ["..."]}; 429 carries X-RateLimit-Reset (seconds), injected with `fail(...)`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from werkzeug.wrappers import Request, Response

from tests.fakes.saas_base import FakeSaas, HttpError, token

ALL_PERMISSIONS = frozenset({"api_keys_read", "api_keys_write", "api_keys_delete"})


@dataclass
class ApiKey:
    id: str
    key: str
    name: str
    created_at: str

    def public(self) -> dict[str, Any]:
        return {
            "type": "api_keys",
            "id": self.id,
            "attributes": {
                "created_at": self.created_at,
                "last4": self.key[-4:],
                "modified_at": self.created_at,
                "name": self.name,
            },
        }


class FakeDatadog(FakeSaas):
    vendor = "datadog"

    def __init__(self) -> None:
        super().__init__()
        self.keys: dict[str, ApiKey] = {}
        self.app_keys: dict[str, frozenset[str]] = {}

    # -- test controls -----------------------------------------------------------------------------------

    def add_key(self, name: str) -> ApiKey:
        with self.lock:
            key = ApiKey(str(uuid.uuid4()), token(32), name, _now())
            self.keys[key.id] = key
            return key

    def add_app_key(self, permissions: Iterable[str] = ALL_PERMISSIONS) -> str:
        with self.lock:
            app_key = token(40)
            self.app_keys[app_key] = frozenset(permissions)
            return app_key

    def is_valid(self, api_key: str) -> bool:
        with self.lock:
            return any(k.key == api_key for k in self.keys.values())

    def live_ids(self) -> set[str]:
        with self.lock:
            return set(self.keys)

    # -- the API -----------------------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        path = request.path
        if path == "/api/v1/validate" and request.method == "GET":
            key = self._key_by_value(request.headers.get("DD-API-KEY", ""))
            if key is None or not self.propagated(key.key):
                raise HttpError(403, "Forbidden")
            return self.json({"valid": True})
        if path == "/api/v2/api_keys" and request.method == "POST":
            self._authorize(request, "api_keys_write")
            return self._create(self.body(request))
        if path == "/api/v2/api_keys" and request.method == "GET":
            self._authorize(request, "api_keys_read")
            return self._list(request.args)
        if path.startswith("/api/v2/api_keys/") and request.method == "DELETE":
            self._authorize(request, "api_keys_delete")
            key_id = path.rsplit("/", 1)[1]
            if self.keys.pop(key_id, None) is None:
                raise HttpError(404, "API key not found")
            return Response(status=204)
        raise HttpError(404, "Not found")

    def error_body(self, status: int, message: str, extra: Mapping[str, Any]) -> Any:
        return {"errors": [message]}

    def _authorize(self, request: Request, permission: str) -> None:
        if self._key_by_value(request.headers.get("DD-API-KEY", "")) is None:
            raise HttpError(403, "Forbidden")
        scopes = self.app_keys.get(request.headers.get("DD-APPLICATION-KEY", ""))
        if scopes is None or permission not in scopes:
            raise HttpError(403, "Forbidden")

    def _create(self, body: Any) -> Response:
        data = body.get("data") if isinstance(body, dict) else None
        name = (data or {}).get("attributes", {}).get("name") if isinstance(data, dict) else None
        if not isinstance(data, dict) or data.get("type") != "api_keys" or not isinstance(name, str) or not name:
            raise HttpError(400, "invalid request: data.type must be api_keys and data.attributes.name is required")
        key = self.add_key(name)
        self.new_secret_minted(key.key)
        full = key.public()
        full["attributes"]["key"] = key.key
        return self.json({"data": full}, 201)

    def _list(self, args: Mapping[str, str]) -> Response:
        size = int(args.get("page[size]", "10"))
        number = int(args.get("page[number]", "0"))
        if not 1 <= size <= 100:
            raise HttpError(400, "page[size] must be between 1 and 100")
        wanted = args.get("filter", "")
        found = sorted((k for k in self.keys.values() if wanted in k.name), key=lambda k: k.created_at)
        page = found[number * size : (number + 1) * size]
        return self.json({"data": [k.public() for k in page], "meta": {"page": {"total_filtered_count": len(found)}}})

    def _key_by_value(self, value: str) -> ApiKey | None:
        return next((k for k in self.keys.values() if value and k.key == value), None)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+00:00"
