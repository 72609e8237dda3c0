"""A small fake of Cloudflare's API-token API (client/v4), for the cloudflare plugin's tests.

No Cloudflare can be had here. Written from Cloudflare's public API reference (https://developers.cloudflare.com/api/,
resources user/tokens and accounts/tokens: Create, Get, List, Delete, Verify, Roll Token) and
https://developers.cloudflare.com/fundamentals/api/how-to/roll-token/ ("rolling ... will invalidate the previous
token"):

- ``Authorization: Bearer <token>`` on every call; an unknown, rolled or deleted value: 401 {"success": false,
  "errors": [{"code": 1000, "message": "Invalid API Token"}], "messages": [], "result": null}; a token without the
  permission "API Tokens Write" (reads: "API Tokens Read" or Write): 403 code 9109
- GET    <tokens>/verify: 200 {"result": {"id", "status": "active"}, "success": true, ...}
- POST   <tokens> {name (1..120), policies (non-empty; effect, resources, permission_groups [{id}]), condition,
         not_before, expires_on}: 200 {"result": {..., "value"}} (the value only here)
- GET    <tokens>/{id}: 200 {"result": {id, name, status, issued_on, modified_on, policies (with policy ids and
         permission group names), condition, ...}}
- GET    <tokens>?page=&per_page= (at most 50): 200 {"result": [...], "result_info": {page, per_page, count,
         total_count, total_pages}}
- PUT    <tokens>/{id}/value {}: 200 {"result": "<new value>"}; the old value stops working at once
- DELETE <tokens>/{id}: 200 {"result": {"id"}}
- an unknown token id: 404 code 1003 (assumed: the reference documents only the error envelope)
- ``<tokens>`` is /client/v4/user/tokens or /client/v4/accounts/{account_id}/tokens (account-owned tokens, kept
  apart). What it simplifies: permissions are checked by permission group only (not by resource).
- 429 with Retry-After, injected with `fail(...)`.
"""

from __future__ import annotations

import re
import string
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from werkzeug.wrappers import Request, Response

from tests.fakes.saas_base import FakeSaas, HttpError, token

TOKENS_WRITE = "686d18d5ac6c441c867cbf6771e58a0a"  # the fake's ids for the two permission groups it checks
TOKENS_READ = "0cc3a61731504c89b99ec1be78b77aa0"
DNS_READ = "c8fed203ed3043cba015a93ad1616f1f"
GROUP_NAMES = {TOKENS_WRITE: "API Tokens Write", TOKENS_READ: "API Tokens Read", DNS_READ: "Zone DNS Read"}
PATH = re.compile(r"^/client/v4/(?:user|accounts/(?P<account>[0-9a-f]{32}))/tokens(?P<rest>/.*)?$")
VALUE_ALPHABET = string.ascii_letters + string.digits + "_-"


@dataclass
class Token:
    id: str
    value: str
    name: str
    owner: str  # "user" or an account id
    policies: list[dict[str, Any]]
    condition: dict[str, Any] = field(default_factory=dict)
    not_before: str | None = None
    expires_on: str | None = None
    issued_on: str = ""
    modified_on: str = ""
    status: str = "active"

    def groups(self) -> set[str]:
        return {g["id"] for p in self.policies if p.get("effect") == "allow" for g in p.get("permission_groups", [])}

    def public(self) -> dict[str, Any]:
        found: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "status": self.status,
            "issued_on": self.issued_on,
            "modified_on": self.modified_on,
            "policies": self.policies,
        }
        for name in ("condition", "not_before", "expires_on"):
            if getattr(self, name):
                found[name] = getattr(self, name)
        return found


def policy(groups: Iterable[str], resources: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A policy as Get Token returns it (with a policy id and permission group names)."""
    return {
        "id": token(32),
        "effect": "allow",
        "resources": dict(resources or {"com.cloudflare.api.account.*": "*"}),
        "permission_groups": [{"id": g, "name": GROUP_NAMES.get(g, g)} for g in groups],
    }


class FakeCloudflare(FakeSaas):
    vendor = "cloudflare"

    def __init__(self) -> None:
        super().__init__()
        self.tokens: dict[str, Token] = {}

    def add_token(
        self,
        name: str,
        groups: Iterable[str] = (DNS_READ,),
        *,
        owner: str = "user",
        condition: Mapping[str, Any] | None = None,
        expires_on: str | None = None,
    ) -> Token:
        with self.lock:
            now = _now()
            item = Token(uuid.uuid4().hex, token(40, VALUE_ALPHABET), name, owner, [policy(groups)],
                         dict(condition or {}), None, expires_on, now, now)  # fmt: skip
            self.tokens[item.id] = item
            return item

    def is_valid(self, value: str) -> bool:
        with self.lock:
            return any(t.value == value and t.status == "active" for t in self.tokens.values())

    def live_ids(self, owner: str = "user") -> set[str]:
        with self.lock:
            return {t.id for t in self.tokens.values() if t.owner == owner}

    # -- the API -----------------------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        match = PATH.match(request.path)
        if match is None:
            raise HttpError(404, "No route for that URI", code=7000)
        owner, rest, method = match["account"] or "user", match["rest"] or "", request.method
        caller = self._caller(request)
        if rest == "/verify" and method == "GET":
            if not self.propagated(caller.value):
                raise HttpError(401, "Invalid API Token", code=1000)
            return self._ok({"id": caller.id, "status": caller.status})
        if rest == "" and method == "GET":
            self._need(caller, TOKENS_READ, TOKENS_WRITE)
            return self._list(owner, request.args)
        if rest == "" and method == "POST":
            self._need(caller, TOKENS_WRITE)
            return self._create(owner, self.body(request))
        found = re.match(r"^/([0-9a-f]{32})(/value)?$", rest)
        if found is None:
            raise HttpError(404, "No route for that URI", code=7000)
        item = self.tokens.get(found[1])
        if method == "GET" and not found[2]:
            self._need(caller, TOKENS_READ, TOKENS_WRITE)
            return self._ok(self._known(item, owner).public())
        if method == "DELETE" and not found[2]:
            self._need(caller, TOKENS_WRITE)
            del self.tokens[self._known(item, owner).id]
            return self._ok({"id": found[1]})
        if method == "PUT" and found[2]:
            self._need(caller, TOKENS_WRITE)
            rolled = self._known(item, owner)
            rolled.value = token(40, VALUE_ALPHABET)  # the old value is dead from now on
            rolled.modified_on = _now()
            self.new_secret_minted(rolled.value)
            return self._ok(rolled.value)
        raise HttpError(405, "Method not allowed", code=10000)

    def error_body(self, status: int, message: str, extra: Mapping[str, Any]) -> Any:
        code = extra.get("code", {401: 1000, 403: 9109, 404: 1003, 429: 10000}.get(status, 1001))
        return {"success": False, "errors": [{"code": code, "message": message}], "messages": [], "result": None}

    def _ok(self, result: Any, **more: Any) -> Response:
        return self.json({"success": True, "errors": [], "messages": [], "result": result, **more})

    def _caller(self, request: Request) -> Token:
        header = request.headers.get("Authorization", "")
        value = header.removeprefix("Bearer ") if header.startswith("Bearer ") else ""
        caller = next((t for t in self.tokens.values() if value and t.value == value), None)
        if caller is None or caller.status != "active":
            raise HttpError(401, "Invalid API Token", code=1000)
        return caller

    @staticmethod
    def _need(caller: Token, *groups: str) -> None:
        if not caller.groups() & set(groups):
            raise HttpError(403, "Unauthorized to access requested resource", code=9109)

    @staticmethod
    def _known(item: Token | None, owner: str) -> Token:
        if item is None or item.owner != owner:
            raise HttpError(404, "Token not found", code=1003)
        return item

    def _list(self, owner: str, args: Mapping[str, str]) -> Response:
        page, per_page = int(args.get("page", "1")), int(args.get("per_page", "20"))
        if not 5 <= per_page <= 50 or page < 1:
            raise HttpError(400, "per_page must be between 5 and 50", code=1001)
        mine = [t for t in self.tokens.values() if t.owner == owner]
        chunk = mine[(page - 1) * per_page : page * per_page]
        pages = max(1, -(-len(mine) // per_page))
        info = {"page": page, "per_page": per_page, "count": len(chunk), "total_count": len(mine), "total_pages": pages}
        return self._ok([t.public() for t in chunk], result_info=info)

    def _create(self, owner: str, body: Any) -> Response:
        name = body.get("name") if isinstance(body, dict) else None
        policies = body.get("policies") if isinstance(body, dict) else None
        if not isinstance(name, str) or not 1 <= len(name) <= 120:
            raise HttpError(400, "name is required and must be at most 120 characters", code=1001)
        if not isinstance(policies, list) or not policies:
            raise HttpError(400, "policies are required", code=1001)
        stored = []
        for item in policies:
            groups = [g.get("id") for g in item.get("permission_groups", []) if isinstance(g, dict)]
            if item.get("effect") not in ("allow", "deny") or not groups or not all(g in GROUP_NAMES for g in groups):
                raise HttpError(400, "invalid policy", code=1001)
            stored.append(policy(groups, item.get("resources")))
        now = _now()
        created = Token(
            uuid.uuid4().hex,
            token(40, VALUE_ALPHABET),
            name,
            owner,
            stored,
            dict(body.get("condition") or {}),
            body.get("not_before"),
            body.get("expires_on"),
            now,
            now,
        )
        self.tokens[created.id] = created
        self.new_secret_minted(created.value)
        return self._ok({**created.public(), "value": created.value})


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
