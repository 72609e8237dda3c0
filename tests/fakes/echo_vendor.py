"""A deliberately hostile API-key vendor: it echoes the credentials it receives, in every form seen in the wild, in
its error bodies. It is no real vendor (no public API is copied here); it exists to test invariant 6 end to end
(tests/integration/test_no_leaks.py): whatever a vendor sends back, no secret reaches an output or a state file.

The API, for the http-api-key plugin to be configured against:

- POST   /v1/keys?echo=MODE  (Authorization: Bearer ADMIN), body {"name"}: 201 {"data": {"id", "key", "name"}}.
         With echo=admin-FORM it mints nothing and answers 400 {"errors": ["admin token FORM(ADMIN) refused"]}.
- GET    /v1/keys            (Bearer ADMIN): 200 {"data": [{"id", "name"}]}
- DELETE /v1/keys/ID         (Bearer ADMIN): 204; 404 when unknown
- GET    /v1/whoami?echo=FORM&api_key=KEY (the key only in the query, as some vendors insist), or with Basic auth
         (user, KEY) and echo=header: 200 {"ok": true} when echo is absent; otherwise 400
         {"errors": ["key FORM(KEY) invalid"]} (with echo=header: the Authorization header as received).

FORM: raw, quote, quote_plus, query (the raw query string as received), json (the key as a JSON string),
json-slash (the same with "/" written "\\/"), json-unicode, base64, base64-urlsafe, truncated (the first 14
characters and "..."), truncated-middle (14 characters from the middle), header (the Authorization header).
Keys are minted with the characters that encode differently everywhere: "/", "+", "=", "&", "%", "?", "#", space,
a double quote, a backslash and a non-ASCII letter.
"""

from __future__ import annotations

import base64
import json
import secrets
import string
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, quote_plus

from werkzeug.wrappers import Request, Response

from tests.fakes.saas_base import FakeSaas, HttpError

KEY_ALPHABET = string.ascii_letters + string.digits + '/+=&%?# "\\é'
ECHO_FORMS = (
    "raw",
    "quote",
    "quote_plus",
    "query",
    "json",
    "json-slash",
    "json-unicode",
    "base64",
    "base64-urlsafe",
    "truncated",
    "truncated-middle",
)


def mint_key() -> str:
    body = "".join(secrets.choice(KEY_ALPHABET) for _ in range(34))
    return f"sk/Ev+{body[:10]}é{body[10:]}"  # always a "/", a "+" and a non-ASCII letter


def echoed(form: str, value: str, request: Request) -> str:
    """`value` as the hostile vendor writes it back in `form`."""
    forms = {
        "raw": lambda: value,
        "quote": lambda: quote(value, safe=""),
        "quote_plus": lambda: quote_plus(value),
        "query": lambda: request.query_string.decode("latin-1"),
        "json": lambda: json.dumps(value),
        "json-slash": lambda: json.dumps(value).replace("/", "\\/"),
        "json-unicode": lambda: json.dumps(value, ensure_ascii=False),
        "base64": lambda: base64.b64encode(value.encode()).decode(),
        "base64-urlsafe": lambda: base64.urlsafe_b64encode(value.encode()).decode(),
        "truncated": lambda: value[:14] + "...",
        "truncated-middle": lambda: "..." + value[10:24] + "...",
        "header": lambda: request.headers.get("Authorization", ""),
    }
    if form not in forms:
        raise HttpError(400, f"unknown echo form {form!r}")
    return forms[form]()


@dataclass
class EchoKey:
    id: str
    key: str
    name: str


class FakeEchoVendor(FakeSaas):
    vendor = "echo"

    def __init__(self, admin_token: str) -> None:
        super().__init__()
        self.admin_token = admin_token
        self.keys: dict[str, EchoKey] = {}
        self.minted: list[str] = []  # every key value ever minted (the test greps for each)
        self.echoes: list[str] = []  # every form echoed, in order

    # -- test controls -----------------------------------------------------------------------------------

    def add_key(self, name: str) -> EchoKey:
        with self.lock:
            key = EchoKey(uuid.uuid4().hex, mint_key(), name)
            self.keys[key.id] = key
            self.minted.append(key.key)
            return key

    def is_valid(self, api_key: str) -> bool:
        with self.lock:
            return any(k.key == api_key for k in self.keys.values())

    def live_ids(self) -> set[str]:
        with self.lock:
            return set(self.keys)

    # -- the API -----------------------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        path, method = request.path, request.method
        if path == "/v1/whoami" and method == "GET":
            return self._whoami(request)
        self._admin(request)
        if path == "/v1/keys" and method == "POST":
            form = request.args.get("echo", "")
            if form.startswith("admin-"):
                self.echoes.append(form)
                value = echoed(form.removeprefix("admin-"), self.admin_token, request)
                raise HttpError(400, f"admin token {value} refused")
            body = self.body(request)
            key = self.add_key(str(body.get("name") or ""))
            return self.json({"data": {"id": key.id, "key": key.key, "name": key.name}}, 201)
        if path == "/v1/keys" and method == "GET":
            return self.json({"data": [{"id": k.id, "name": k.name} for k in self.keys.values()]})
        if path.startswith("/v1/keys/") and method == "DELETE":
            if self.keys.pop(path.removeprefix("/v1/keys/"), None) is None:
                raise HttpError(404, "no such key")
            return Response(status=204)
        raise HttpError(404, "no such endpoint")

    def _admin(self, request: Request) -> None:
        if request.headers.get("Authorization") != f"Bearer {self.admin_token}":
            raise HttpError(401, "bad admin token")

    def _whoami(self, request: Request) -> Response:
        if request.args.get("echo") == "header":  # whatever the credentials, the header goes back as received
            self.echoes.append("header")
            raise HttpError(400, f"credentials {echoed('header', '', request)} invalid")
        if request.authorization is not None and request.authorization.type == "basic":
            key = request.authorization.password or ""
        else:
            key = request.args.get("api_key", "")
        if not self.is_valid(key):
            raise HttpError(401, "unknown key")
        form = request.args.get("echo")
        if form is None:
            return self.json({"ok": True})
        self.echoes.append(form)
        raise HttpError(400, f"key {echoed(form, key, request)} invalid")

    def error_body(self, status: int, message: str, extra: Mapping[str, Any]) -> Any:
        return {"errors": [message]}
