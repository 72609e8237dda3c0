"""A small fake of Twilio's REST API (2010-04-01) Keys resource, for the twilio plugin's tests.

No Twilio can be had here. Written from Twilio's public docs: REST API: Key resource v2010
(https://www.twilio.com/docs/usage/api/keys), How to use the Twilio APIs (HTTP Basic auth with an Account SID and
Auth Token, or an API key SID and secret), and Twilio API responses (error bodies, paging):

- HTTP Basic auth on every call; bad credentials: 401 {"code": 20003, "message": "Authenticate", "more_info":
  "https://www.twilio.com/docs/errors/20003", "status": 401}
- Standard keys may not use /Keys (only the Account SID with its Auth Token, or a Main key): 403 code 20403
- POST   /2010-04-01/Accounts/{AccountSid}/Keys.json (form FriendlyName, up to 64 characters): 201 {"sid": "SK...",
         "friendly_name", "date_created", "date_updated", "secret"} (the secret only here)
- GET    /2010-04-01/Accounts/{AccountSid}/Keys.json?PageSize=&Page=: 200 {"keys": [...], "first_page_uri",
         "next_page_uri", "previous_page_uri", "page", "page_size", "start", "end", "uri"}
- DELETE /2010-04-01/Accounts/{AccountSid}/Keys/{Sid}.json: 204; 404 {"code": 20404, ...} when unknown
- GET    /2010-04-01/Accounts/{AccountSid}/Usage/Records.json: 200 for any credential of the account (the probe)
- 429 (code 20429) with Retry-After, injected with `fail(...)`.
"""

from __future__ import annotations

import base64
import contextlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from werkzeug.wrappers import Request, Response

from tests.fakes.saas_base import FakeSaas, HttpError, token

PATH = re.compile(r"^/2010-04-01/Accounts/(?P<account>AC[0-9a-f]{32})(?P<rest>/.*)$")


@dataclass
class Key:
    sid: str
    secret: str
    friendly_name: str
    account: str
    main: bool
    created: str

    def public(self) -> dict[str, Any]:
        return {
            "sid": self.sid,
            "friendly_name": self.friendly_name,
            "date_created": self.created,
            "date_updated": self.created,
        }


class FakeTwilio(FakeSaas):
    vendor = "twilio"

    def __init__(self) -> None:
        super().__init__()
        self.accounts: dict[str, str] = {}  # Account SID -> Auth Token
        self.keys: dict[str, Key] = {}

    def add_account(self) -> tuple[str, str]:
        with self.lock:
            sid = "AC" + token(32)
            self.accounts[sid] = token(32)
            return sid, self.accounts[sid]

    def add_key(self, account: str, name: str = "", *, main: bool = False) -> Key:
        with self.lock:
            key = Key("SK" + token(32), token(32, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"),
                      name, account, main, format_datetime(datetime.now(UTC), usegmt=True))  # fmt: skip
            self.keys[key.sid] = key
            return key

    def is_valid(self, sid: str, secret: str) -> bool:
        with self.lock:
            key = self.keys.get(sid)
            return key is not None and key.secret == secret

    def live_ids(self, account: str) -> set[str]:
        with self.lock:
            return {k.sid for k in self.keys.values() if k.account == account}

    # -- the API -----------------------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        match = PATH.match(request.path)
        if match is None:
            raise HttpError(404, f"The requested resource {request.path} was not found", code=20404)
        account, rest = match["account"], match["rest"]
        principal = self._authenticate(request, account)
        if rest == "/Usage/Records.json" and request.method == "GET":
            return self.json({"usage_records": [], "page": 0, "page_size": 1, "next_page_uri": None})
        if rest.startswith("/Keys"):
            if principal != "account" and not (isinstance(principal, Key) and principal.main):
                raise HttpError(403, "Forbidden", code=20403)
            return self._keys(request, account, rest)
        raise HttpError(404, f"The requested resource {request.path} was not found", code=20404)

    def error_body(self, status: int, message: str, extra: Mapping[str, Any]) -> Any:
        code = extra.get("code", {401: 20003, 404: 20404, 429: 20429, 403: 20403}.get(status, 20500))
        return {"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}",
                "status": status}  # fmt: skip

    def _authenticate(self, request: Request, account: str) -> str | Key:
        header = request.headers.get("Authorization", "")
        user = password = ""
        if header.startswith("Basic "):
            with contextlib.suppress(ValueError, UnicodeDecodeError):
                user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        if user == account and self.accounts.get(account) == password and password:
            return "account"
        key = self.keys.get(user)
        if key is not None and key.account == account and key.secret == password and self.propagated(key.secret):
            return key
        raise HttpError(401, "Authenticate", code=20003)

    def _keys(self, request: Request, account: str, rest: str) -> Response:
        if rest == "/Keys.json" and request.method == "POST":
            name = request.form.get("FriendlyName", "")
            if len(name) > 64:
                raise HttpError(400, "FriendlyName must be 64 characters or fewer", code=21100)
            key = self.add_key(account, name)
            self.new_secret_minted(key.secret)
            return self.json({**key.public(), "secret": key.secret}, 201)
        if rest == "/Keys.json" and request.method == "GET":
            size = int(request.args.get("PageSize", "50"))
            number = int(request.args.get("Page", "0"))
            mine = [k for k in self.keys.values() if k.account == account and not k.main]
            page = mine[number * size : (number + 1) * size]
            base = f"/2010-04-01/Accounts/{account}/Keys.json"
            more = (number + 1) * size < len(mine)
            return self.json(
                {
                    "keys": [k.public() for k in page],
                    "first_page_uri": f"{base}?PageSize={size}&Page=0",
                    "next_page_uri": f"{base}?PageSize={size}&Page={number + 1}&PageToken=PA{token(8)}"
                    if more
                    else None,
                    "previous_page_uri": f"{base}?PageSize={size}&Page={number - 1}" if number else None,
                    "page": number,
                    "page_size": size,
                    "start": number * size,
                    "end": number * size + max(len(page) - 1, 0),
                    "uri": f"{base}?PageSize={size}&Page={number}",
                }
            )
        match = re.match(r"^/Keys/(SK[0-9a-f]{32})\.json$", rest)
        if match and request.method == "DELETE":
            key = self.keys.get(match[1])
            if key is None or key.account != account:
                raise HttpError(404, f"The requested resource {request.path} was not found", code=20404)
            del self.keys[key.sid]
            return Response(status=204)
        raise HttpError(404, f"The requested resource {request.path} was not found", code=20404)
