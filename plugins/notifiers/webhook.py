"""Type `webhook`: POST the rotation event as JSON, signed with HMAC-SHA256. The payload never carries a secret.

The body is the event's payload (rotator_plugins.notifiers.events: `event`, plan, run id, secret name, store,
version ids, time, trigger, reason, tags; failure events add `error`, one scrubbed line, and `action`, what the
operator should do). Every kind is signed alike; it takes every kind (events = [...] in its config chooses).

Headers: `X-Rotator-Timestamp` (Unix seconds) and `X-Rotator-Signature: v1=<hex>`, where
hex = HMAC-SHA256(signing_key, f"{timestamp}.{body}"). A receiver verifies it like this:

    expected = hmac.new(key, f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    ok = hmac.compare_digest(f"v1={expected}", signature) and abs(time.time() - int(ts)) < 300

Remote call: one HTTPS POST to `url`, through rotator_plugins.http_transport: 429, 5xx, a refused or reset connection
and a timeout are transient (the engine retries them with backoff); a TLS verification failure is a NotifyError (a
wrong certificate or ca_bundle does not fix itself, so it is never retried), as is any other refusal.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping
from typing import Annotated, Any

import requests
from msgspec import Meta
from rotator_plugins.http_transport import (
    is_transient_status,
    probe_endpoint,
    retry_after_seconds,
    send,
    tls_verify,
)
from rotator_plugins.notifiers.events import EVERY_KIND, event_json

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

    def close(self) -> None:
        """For the daemon's reload and shutdown: the HTTP session's keep-alive connections are closed."""
        self._session.close()

    def probe(self) -> str:
        """For dry runs: a TCP connection (and TLS handshake) to `url`'s host; nothing is posted."""
        verify = tls_verify(self.options.ca_bundle, self.setup)
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
        response = send(
            self._session,
            "POST",
            self.options.url,
            what=f"webhook {self.setup.name}",
            data=body,
            headers=headers,
            timeout=self.options.timeout,
            verify=tls_verify(self.options.ca_bundle, self.setup),
            allow_redirects=False,
        )
        status = response.status_code
        if is_transient_status(status):
            wait = retry_after_seconds(response)
            after = f" (Retry-After {wait:g}s)" if wait is not None else ""
            raise TransientError(f"webhook {self.setup.name}: receiver answered {status}{after}; retried")
        if status >= 300:
            raise NotifyError(f"webhook {self.setup.name}: receiver refused the event with {status}")
