"""Type `webhook`: POST the rotation event as JSON, signed with HMAC-SHA256. The payload never carries a secret.

The body is the event's payload (rotator_plugins.notifiers.events: `event`, plan, run id, secret name, store,
version ids, time, trigger, reason, tags; failure events add `error`, one scrubbed line, and `action`, what the
operator should do). Every kind is signed alike; it takes every kind (events = [...] in its config chooses).

Headers: `X-Rotator-Timestamp` (Unix seconds) and `X-Rotator-Signature: v1=<hex>`, where
hex = HMAC-SHA256(signing_key, f"{timestamp}.{body}"). A receiver verifies it like this:

    expected = hmac.new(key, f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    ok = hmac.compare_digest(f"v1={expected}", signature) and abs(time.time() - int(ts)) < 300

Remote call: one HTTPS POST to `url`. 429 and 5xx are transient (the engine retries them with backoff).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping
from typing import Annotated, Any

import requests
from msgspec import Meta
from rotator_plugins.notifiers.events import EVERY_KIND, event_json
from rotator_plugins.notifiers.http_transport import probe_endpoint

from rotator import (
    ComponentSetup,
    NotifyError,
    Options,
    RotationEvent,
    TransientError,
    invalid,
    is_secret_ref,
    parse_options,
    resolve_secret_ref,
)


class WebhookOptions(Options):
    url: str
    signing_key: str | None = None  # "env:VAR" or "file:PATH"
    timeout: Annotated[float, Meta(gt=0, le=120)] = 10.0
    headers: dict[str, str] = {}
    ca_bundle: str | None = None
    allow_plain_http: bool = False  # only for a receiver on loopback or in tests

    def __post_init__(self) -> None:
        if not self.url.startswith(("https://", "http://")):
            raise invalid("url", "url must start with https://")
        if self.signing_key is not None and not is_secret_ref(self.signing_key):
            raise invalid(
                "signing_key", 'signing_key must be a reference such as "env:ROTATOR_WEBHOOK_KEY", not the key'
            )


def sign(key: bytes, timestamp: str, body: bytes) -> str:
    return "v1=" + hmac.new(key, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


class WebhookNotifier:
    event_kinds = EVERY_KIND

    def __init__(self, options: Mapping[str, Any], setup: ComponentSetup):
        self.options = parse_options(WebhookOptions, options)
        self.setup = setup
        if self.options.url.startswith("http://") and not self.options.allow_plain_http:
            raise ValueError("url must use https:// (set allow_plain_http = true only for a local receiver)")
        self._session = requests.Session()

    def probe(self) -> str:
        """For dry runs: a TCP connection (and TLS handshake) to `url`'s host; nothing is posted."""
        verify: bool | str = str(self.setup.path(self.options.ca_bundle)) if self.options.ca_bundle else True
        return probe_endpoint(
            self.options.url, verify=verify, timeout=self.options.timeout, what=f"webhook {self.setup.name}"
        )

    def __call__(self, event: RotationEvent) -> None:
        """POST `url` with the event JSON and signature headers."""
        body = event_json(event).encode()
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "X-Rotator-Timestamp": timestamp,
            **self.options.headers,
        }
        if self.options.signing_key:
            key = resolve_secret_ref(
                self.options.signing_key, key=f"notifiers.{self.setup.name}.signing_key", setup=self.setup
            )
            headers["X-Rotator-Signature"] = sign(key.encode(), timestamp, body)
        verify: bool | str = str(self.setup.path(self.options.ca_bundle)) if self.options.ca_bundle else True
        try:
            response = self._session.post(
                self.options.url, data=body, headers=headers, timeout=self.options.timeout, verify=verify
            )
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise TransientError(f"webhook {self.setup.name}: {type(exc).__name__} posting to the receiver") from None
        if response.status_code == 429 or response.status_code >= 500:
            raise TransientError(f"webhook {self.setup.name}: receiver answered {response.status_code}")
        if response.status_code >= 300:
            raise NotifyError(f"webhook {self.setup.name}: receiver refused the event with {response.status_code}")
