"""HTTPS calls shared by the HTTP notifiers (slack, kubernetes): TLS verification and transport failures.

A transport failure is mapped here, once: connection refused or reset and timeouts are TransientError (the engine
retries them); a TLS verification failure is a NotifyError (a wrong CA bundle does not fix itself). The URL is
never put in a message: a Slack webhook URL is itself a secret, and requests' own exception texts quote it.
"""

from __future__ import annotations

import email.utils
import socket
import ssl
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import requests

from rotator import ComponentSetup, NotifyError, TransientError

__all__ = ["probe_endpoint", "require_https", "retry_after_seconds", "send", "tls_verify"]


def tls_verify(ca_bundle: str | None, setup: ComponentSetup) -> bool | str:
    """requests' `verify`: the CA bundle (a path relative to the config file) or the system's CAs. Never False."""
    return str(setup.path(ca_bundle)) if ca_bundle else True


def require_https(url: str, *, what: str) -> None:
    if not url.startswith("https://"):
        raise NotifyError(f"{what}: the URL must start with https:// (TLS is required)")


def send(session: requests.Session, method: str, url: str, *, what: str, **kwargs: Any) -> requests.Response:
    """One HTTP request; transport failures become rotator errors that name `what`, never the URL."""
    try:
        return session.request(method, url, **kwargs)
    except requests.exceptions.SSLError:
        # Checked before ConnectionError, of which it is a subclass: retrying a bad certificate never helps.
        raise NotifyError(
            f"{what}: TLS verification of the server failed; check the server's certificate and ca_bundle"
        ) from None
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise TransientError(f"{what}: {type(exc).__name__} (the server did not answer); retried") from None
    except requests.RequestException as exc:
        raise NotifyError(f"{what}: the request could not be sent ({type(exc).__name__})") from None


def retry_after_seconds(response: requests.Response, *, now: float | None = None) -> float | None:
    """The Retry-After header in seconds (RFC 9110: delay-seconds or an HTTP date), or None."""
    raw = (response.headers.get("Retry-After") or "").strip()
    if not raw:
        return None
    if raw.isdigit():
        return float(raw)
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    return max(0.0, (when - current).total_seconds())


def probe_endpoint(url: str, *, verify: bool | str, timeout: float, what: str) -> str:
    """A dry run's reachability probe: open a TCP connection to the URL's host and port and, for https, complete
    the TLS handshake with the certificate verified as a delivery would; no HTTP request is sent. Returns a public
    line (the host and port only: the URL may be a secret); raises TransientError or NotifyError like `send`."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            if parts.scheme == "https":
                context = ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)
                with context.wrap_socket(sock, server_hostname=host):
                    pass
    except ssl.SSLError:
        raise NotifyError(
            f"{what}: TLS verification of {host}:{port} failed; check its certificate and ca_bundle"
        ) from None
    except OSError as exc:
        raise TransientError(f"{what}: {host}:{port} does not answer ({type(exc).__name__})") from None
    return f"{host}:{port} answers" + (" (TLS verified)" if parts.scheme == "https" else "")
