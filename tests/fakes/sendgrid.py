"""A small fake of Twilio SendGrid's API Keys API, for the sendgrid plugin's tests.

No SendGrid can be had here. Written from SendGrid's public API reference
(https://www.twilio.com/docs/sendgrid/api-reference/api-keys, .../api-key-permissions, and the OpenAPI file
github.com/twilio/sendgrid-oai spec/json/tsg_api_keys_v3.json):

- every call authenticates with ``Authorization: Bearer <api key>``: 401 {"errors": [{"field": null, "message":
  "authorization required"}]} for an unknown key; 403 {"errors": [{"field": null, "message": "access forbidden"}]}
  when the key lacks the call's scope
- POST   /v3/api_keys {"name", "scopes"}: 201 {"api_key", "api_key_id", "name", "scopes"} (the key only here);
         without "scopes" the key has Full Access; 400 {"errors": [{"field": "name", "message": ...}]} without a
         name; 403 beyond 100 keys; needs api_keys.create
- GET    /v3/api_keys?limit=N: 200 {"result": [{"name", "api_key_id"}]}; needs api_keys.read
- GET    /v3/api_keys/{api_key_id}: 200 {"api_key_id", "name", "scopes"}; 404; needs api_keys.read
- DELETE /v3/api_keys/{api_key_id}: 204; 404 when unknown; needs api_keys.delete
- GET    /v3/scopes: 200 {"scopes": [...]} of the calling key (no scope needed)
- keys are 69 characters: ``SG.<22>.<43>``; 429 carries X-RateLimit-Reset (a Unix time), injected with `fail(...)`.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from werkzeug.wrappers import Request, Response

from tests.fakes.saas_base import FakeSaas, HttpError, token

FULL_ACCESS = frozenset(
    {"api_keys.create", "api_keys.read", "api_keys.update", "api_keys.delete", "mail.send", "alerts.read"}
)
ALPHABET = string.ascii_letters + string.digits + "-_"
MAX_KEYS = 100


@dataclass
class ApiKey:
    api_key_id: str
    api_key: str
    name: str
    scopes: frozenset[str]


class FakeSendGrid(FakeSaas):
    vendor = "sendgrid"

    def __init__(self) -> None:
        super().__init__()
        self.keys: dict[str, ApiKey] = {}

    def add_key(self, name: str, scopes: Iterable[str] = FULL_ACCESS) -> ApiKey:
        with self.lock:
            key_id = token(22, ALPHABET)
            key = ApiKey(key_id, f"SG.{key_id}.{token(43, ALPHABET)}", name, frozenset(scopes))
            self.keys[key_id] = key
            return key

    def is_valid(self, api_key: str) -> bool:
        with self.lock:
            return any(k.api_key == api_key for k in self.keys.values())

    def live_ids(self) -> set[str]:
        with self.lock:
            return set(self.keys)

    # -- the API -----------------------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        caller = self._caller(request)
        path, method = request.path, request.method
        if path == "/v3/scopes" and method == "GET":
            return self.json({"scopes": sorted(caller.scopes)})
        if path == "/v3/api_keys" and method == "POST":
            self._need(caller, "api_keys.create")
            return self._create(self.body(request))
        if path == "/v3/api_keys" and method == "GET":
            self._need(caller, "api_keys.read")
            limit = int(request.args.get("limit", "50"))
            keys = list(self.keys.values())[:limit]
            return self.json({"result": [{"name": k.name, "api_key_id": k.api_key_id} for k in keys]})
        if path.startswith("/v3/api_keys/"):
            key_id = path.rsplit("/", 1)[1]
            if method == "GET":
                self._need(caller, "api_keys.read")
                key = self.keys.get(key_id)
                if key is None:
                    raise HttpError(404, "unable to find API key")
                return self.json({"api_key_id": key.api_key_id, "name": key.name, "scopes": sorted(key.scopes)})
            if method == "DELETE":
                self._need(caller, "api_keys.delete")
                if self.keys.pop(key_id, None) is None:
                    raise HttpError(404, "unable to find API key")
                return Response(status=204)
        raise HttpError(404, "not found")

    def error_body(self, status: int, message: str, extra: Mapping[str, Any]) -> Any:
        return {"errors": [{"field": extra.get("field"), "message": message}]}

    def _caller(self, request: Request) -> ApiKey:
        header = request.headers.get("Authorization", "")
        value = header.removeprefix("Bearer ") if header.startswith("Bearer ") else ""
        key = next((k for k in self.keys.values() if value and k.api_key == value), None)
        if key is None or not self.propagated(key.api_key):
            raise HttpError(401, "authorization required")
        return key

    @staticmethod
    def _need(caller: ApiKey, scope: str) -> None:
        if scope not in caller.scopes:
            raise HttpError(403, "access forbidden")

    def _create(self, body: Any) -> Response:
        name = body.get("name") if isinstance(body, dict) else None
        if not isinstance(name, str) or not name:
            raise HttpError(400, "missing required argument", field="name")
        if len(self.keys) >= MAX_KEYS:
            raise HttpError(403, "Cannot create more than 100 API Keys")
        scopes = body.get("scopes")
        key = self.add_key(name, FULL_ACCESS if scopes is None else scopes)
        self.new_secret_minted(key.api_key)
        return self.json(
            {"api_key": key.api_key, "api_key_id": key.api_key_id, "name": key.name, "scopes": sorted(key.scopes)},
            201,
        )
