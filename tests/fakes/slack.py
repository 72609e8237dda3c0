"""A small fake of Slack's incoming webhooks, over HTTPS.

No Slack workspace can be used from tests, so this fake stands in for hooks.slack.com. It was written from Slack's
public documentation ("Sending messages using incoming webhooks", its "Handling errors" section, the changelog
"Improving error conditions for Incoming Webhooks", "Rate limits" (incoming webhooks: about one message per
second, HTTP 429 with Retry-After), and the Block Kit reference for the message layout), and answers as Slack does:

- POST /services/T.../B.../<secret> with a JSON body (Content-Type application/json): 200 `ok` (text/plain).
- 400 `invalid_payload`: the body is not JSON (or not an object); 400 `no_text`: neither `text` nor `blocks`;
  400 `invalid_blocks`: blocks that Block Kit refuses (an unknown block type, a section without text or fields,
  a text object of another type than plain_text/mrkdwn, a section text over 3000 characters, more than 10 fields,
  a field over 2000 characters, more than 50 blocks, a context without 1-10 elements).
- 403 `action_prohibited` (the workspace restricts posting, `restrict(url)`), 403 `invalid_token`.
- 404 `no_service` (an unknown or revoked webhook URL), 404 `channel_not_found` (`delete_channel(url)`).
- 410 `channel_is_archived` (`archive(url)`).
- 429 `rate_limited` with a Retry-After header (`rate_limit(times, retry_after)`), 500 `rollup_error` (`fail`).

`messages` keeps (channel, body) for each accepted post; `requests` every (path, status).
Not modelled: form-encoded `payload=` bodies, attachments, message threading, the rest of Block Kit's rules.
"""

from __future__ import annotations

import json
import secrets
import threading
from dataclasses import dataclass, field
from typing import Any

from werkzeug.wrappers import Request, Response

from tests.fakes.http_server import BackgroundServer, ServedFake
from tests.fakes.throwaway_ca import TlsFiles

BLOCK_TYPES = {"section", "context", "header", "divider", "actions", "image", "input", "rich_text", "file", "video"}
TEXT_TYPES = {"plain_text", "mrkdwn"}


@dataclass
class Hook:
    channel: str
    state: str = "ok"  # ok, revoked, restricted, deleted, archived


@dataclass
class Fault:
    status: int
    body: str
    times: int
    retry_after: int | None = None


class BlockError(ValueError):
    pass


@dataclass
class FakeSlack(ServedFake):
    tls: TlsFiles
    hooks: dict[str, Hook] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    messages: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    requests: list[tuple[str, int]] = field(default_factory=list)
    url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: BackgroundServer | None = None

    # -- set-up for tests -----------------------------------------------------------------------------------------

    def add_webhook(self, channel: str = "#ops") -> str:
        """A new incoming webhook URL posting to `channel` (the URL is a secret, as Slack's are)."""
        path = f"/services/T{secrets.token_hex(4).upper()}/B{secrets.token_hex(5).upper()}/{secrets.token_urlsafe(18)}"
        with self._lock:
            self.hooks[path] = Hook(channel)
        return self.url + path

    def _set(self, url: str, state: str) -> None:
        with self._lock:
            self.hooks[url.removeprefix(self.url)].state = state

    def revoke(self, url: str) -> None:
        self._set(url, "revoked")

    def restrict(self, url: str) -> None:
        self._set(url, "restricted")

    def delete_channel(self, url: str) -> None:
        self._set(url, "deleted")

    def archive(self, url: str) -> None:
        self._set(url, "archived")

    def rate_limit(self, times: int = 1, retry_after: int = 1) -> None:
        with self._lock:
            self.faults.append(Fault(429, "rate_limited", times, retry_after))

    def fail(self, status: int = 500, body: str = "rollup_error", times: int = 1) -> None:
        with self._lock:
            self.faults.append(Fault(status, body, times))

    def messages_for(self, url: str) -> list[dict[str, Any]]:
        with self._lock:
            channel = self.hooks[url.removeprefix(self.url)].channel
            return [body for ch, body in self.messages if ch == channel]

    # -- serving --------------------------------------------------------------------------------------------------

    def serve(self, host: str = "127.0.0.1") -> FakeSlack:
        self._serve_wsgi(name="fake-slack", host=host, ssl_context=self.tls.server_context())
        return self

    def wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        status, body, headers = self._handle(request)
        with self._lock:
            self.requests.append((request.path, status))
        response = Response(body, status=status, mimetype="text/plain", headers=headers)
        return response(environ, start_response)

    def _handle(self, request: Request) -> tuple[int, str, dict[str, str]]:
        with self._lock:
            hook = self.hooks.get(request.path)
            for fault in self.faults:
                if fault.times > 0:
                    fault.times -= 1
                    headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
                    return fault.status, fault.body, headers
        if request.method != "POST" or hook is None or hook.state == "revoked":
            return 404, "no_service", {}
        if hook.state == "restricted":
            return 403, "action_prohibited", {}
        if hook.state == "deleted":
            return 404, "channel_not_found", {}
        if hook.state == "archived":
            return 410, "channel_is_archived", {}
        if request.mimetype != "application/json":
            return 400, "invalid_payload", {}
        try:
            body = json.loads(request.get_data())
        except ValueError:
            return 400, "invalid_payload", {}
        if not isinstance(body, dict):
            return 400, "invalid_payload", {}
        if not body.get("text") and not body.get("blocks"):
            return 400, "no_text", {}
        try:
            _check_blocks(body.get("blocks", []))
        except BlockError:
            return 400, "invalid_blocks", {}
        with self._lock:
            self.messages.append((hook.channel, body))
        return 200, "ok", {}


def _text_object(obj: Any, limit: int) -> None:
    if not isinstance(obj, dict) or obj.get("type") not in TEXT_TYPES:
        raise BlockError("a text object must be plain_text or mrkdwn")
    text = obj.get("text")
    if not isinstance(text, str) or not 1 <= len(text) <= limit:
        raise BlockError(f"text must be 1 to {limit} characters")


def _check_blocks(blocks: Any) -> None:
    if not isinstance(blocks, list) or len(blocks) > 50:
        raise BlockError("blocks must be a list of at most 50")
    for block in blocks:
        if not isinstance(block, dict) or block.get("type") not in BLOCK_TYPES:
            raise BlockError("unknown block type")
        if block["type"] == "section":
            if "text" not in block and "fields" not in block:
                raise BlockError("a section needs text or fields")
            if "text" in block:
                _text_object(block["text"], 3000)
            fields = block.get("fields", [])
            if not isinstance(fields, list) or len(fields) > 10:
                raise BlockError("at most 10 fields")
            for item in fields:
                _text_object(item, 2000)
        elif block["type"] == "context":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 1 <= len(elements) <= 10:
                raise BlockError("a context needs 1 to 10 elements")
            for element in elements:
                _text_object(element, 3000)
        elif block["type"] == "header":
            _text_object(block.get("text"), 150)
