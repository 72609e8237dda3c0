"""The HTTP(S) calls of every plugin and notifier, and the one place where HTTP outcomes become rotator errors.

Every call: TLS verified (``ca_bundle`` adds a private CA; verification is never turned off), timeouts, no
redirects followed. Transport failures are mapped once (`request`):

| requests raises | rotator raises |
|---|---|
| a TLS verification failure (SSLError) | the caller's refusal (NotifyError, StepError), never retried |
| connection refused or reset, timeout | Unreachable, a TransientError (the engine retries) |
| anything else (the request could not be sent) | the caller's refusal |

A wrong certificate or CA bundle does not fix itself: a TLS failure names the host and ca_bundle and is final.

Answers: 429 and 5xx may pass on a later try (`is_transient_status`); ``Retry-After`` (seconds or an HTTP date, or
a vendor's reset header) is read by `retry_after_seconds`. The notifiers (webhook, slack, kubernetes) send once
with `send` and map the status themselves (each receiver words its refusals); the API-key plugins go through
`HttpTransport`, which retries 429, 5xx and connection failures a bounded number of times, honouring
``Retry-After`` but never sleeping longer than ``retry_after_cap`` (a vendor asking for a longer wait gets a
TransientError at once, and the engine's own backoff decides what happens next):

| the vendor answers | HttpTransport raises |
|---|---|
| an expected status | nothing: the response is returned |
| 404 where the caller allows it (deleting a key that is already gone) | nothing: None is returned |
| 429, 5xx, connection refused or reset, timeout (after ``max_attempts`` tries) | TransientError (the engine retries) |
| 401, 403 | AuthenticationFailed naming the call and the fix (never retried) |
| TLS verification failure | StepError naming the host and ``ca_bundle`` |
| anything else | StepError with the status and the vendor's error text |

Messages name a call by what the caller says (``DELETE /api/v2/api_keys/{key.key_id}``, "webhook ops"), never by
the URL (a Slack webhook URL is itself a secret, and requests' own exception texts quote it), and never carry a
header or a body: a vendor's error text is scrubbed of every registered secret and shortened.
"""

from __future__ import annotations

import email.utils
import random
import socket
import ssl
import time
from collections.abc import Callable, Collection, Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, NoReturn
from urllib.parse import urljoin, urlsplit

import requests
from msgspec import Meta
from tenacity import RetryCallState, Retrying, retry_if_exception_type

from rotator import (
    AuthenticationFailed,
    ComponentSetup,
    NotifyError,
    Options,
    RotationContext,
    RotatorError,
    StepError,
    TransientError,
    get_logger,
    scrub,
)

log = get_logger("rotator.plugins.http")
ResetKind = Literal["seconds", "epoch"]
Refusal = Callable[[str], RotatorError]  # the caller's error for what will not pass on its own


# -- what every caller shares ----------------------------------------------------------------------------------


class Unreachable(TransientError):
    """The server did not answer (connection refused or reset, a timeout): it may on a later try."""

    def __init__(self, message: str, *, host: str | None, cause: str) -> None:
        super().__init__(message)
        self.host = host
        self.cause = cause


def tls_verify(ca_bundle: str | None, setup: ComponentSetup | None) -> bool | str:
    """requests' `verify`: the CA bundle (a path relative to the config file) or the system's CAs. Never False."""
    if not ca_bundle:
        return True
    return str(setup.path(ca_bundle)) if setup else ca_bundle


def require_https(url: str, *, what: str) -> None:
    if not url.startswith("https://"):
        raise NotifyError(f"{what}: the URL must start with https:// (TLS is required)")


def send(
    session: requests.Session,
    method: str,
    url: str,
    *,
    what: str,
    refused: Refusal = NotifyError,
    tls_fix: str = "check the server's certificate and ca_bundle",
    **kwargs: Any,
) -> requests.Response:
    """One HTTP request; a transport failure becomes the rotator error for it, naming `what`, never the URL: a TLS
    verification failure and a request that could not be sent are `refused(...)` (never retried), a connection
    refused or reset and a timeout are Unreachable (a TransientError)."""
    host = urlsplit(url).hostname
    try:
        return session.request(method, url, **kwargs)
    except requests.exceptions.SSLError:
        # Checked before ConnectionError, of which it is a subclass: retrying a bad certificate never helps.
        raise refused(f"{what}: TLS verification of {host} failed; fix: {tls_fix}") from None
    except (requests.ConnectionError, requests.Timeout) as exc:
        cause = type(exc).__name__
        raise Unreachable(f"{what}: cannot reach {host} ({cause}); retried", host=host, cause=cause) from None
    except requests.RequestException as exc:
        raise refused(f"{what}: the request could not be sent ({type(exc).__name__})") from None


def is_transient_status(status: int) -> bool:
    """429 (slow down) and 5xx (the server's own failure) may pass on a later try; no other status does."""
    return status == 429 or status >= 500


def retry_after_seconds(
    response: requests.Response, *, reset_header: tuple[str, ResetKind] | None = None, now: float | None = None
) -> float | None:
    """How long the server asks to wait: ``Retry-After`` (RFC 9110: delay-seconds or an HTTP date), else the
    vendor's `reset_header` (its name, and whether it holds seconds to wait or the Unix time of the reset); None
    when the answer says nothing."""
    current = time.time() if now is None else now
    raw = (response.headers.get("Retry-After") or "").strip()
    if raw:
        if raw.isdigit():
            return float(raw)
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, (when - datetime.fromtimestamp(current, UTC)).total_seconds())
    if reset_header:
        name, kind = reset_header
        try:
            number = float((response.headers.get(name) or "").strip())
        except ValueError:
            return None
        return max(0.0, number - current) if kind == "epoch" else max(0.0, number)
    return None


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


# -- the API-key plugins' transport, with its retries ----------------------------------------------------------


class HttpOptions(Options):
    """Transport options every API-key plugin accepts."""

    ca_bundle: Annotated[str, Meta(description="PEM file of the CA that signs the API's certificate")] | None = None
    connect_timeout: Annotated[float, Meta(gt=0, le=60)] = 5.0
    read_timeout: Annotated[float, Meta(gt=0, le=300)] = 20.0
    max_attempts: Annotated[
        int, Meta(ge=1, le=10, description="tries per call for 429, 5xx and connection failures")
    ] = 4
    retry_after_cap: Annotated[float, Meta(ge=0, le=600, description="the longest Retry-After the plugin sleeps")] = (
        30.0
    )
    allow_plain_http: Annotated[bool, Meta(description="http:// for a loopback test server only")] = False


class _Retry(Exception):
    """A try that may pass on a later one (429, 5xx, connection failure); retried inside `request`."""

    def __init__(self, reason: str, retry_after: float | None = None):
        self.reason = reason
        self.retry_after = retry_after
        super().__init__(reason)


class HttpTransport:
    """One vendor's HTTPS endpoint: a requests Session with verification, timeouts and the retry policy."""

    def __init__(
        self,
        vendor: str,
        base_url: str,
        options: HttpOptions,
        setup: ComponentSetup | None = None,
        *,
        reset_header: tuple[str, ResetKind] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        error_text: Callable[[Any], str] | None = None,
    ) -> None:
        scheme = urlsplit(base_url).scheme
        if scheme != "https" and not (scheme == "http" and options.allow_plain_http):
            raise ValueError(
                f"{vendor}: base URL {base_url!r} must use https:// (allow_plain_http = true only for a test server "
                "on loopback)"
            )
        self.vendor = vendor
        self.base_url = base_url.rstrip("/") + "/"
        self.options = options
        self.reset_header = reset_header
        self._sleep = sleep
        self._error_text = error_text or vendor_error_text
        self._verify = tls_verify(options.ca_bundle, setup)
        self.session = requests.Session()

    def close(self) -> None:
        """The session's keep-alive connections (the plugin's close, at the daemon's reload and shutdown)."""
        self.session.close()

    def url(self, path_or_url: str) -> str:
        """An absolute URL: a path is joined to the base URL (a leading / keeps the base's own path prefix)."""
        if urlsplit(path_or_url).scheme:
            return path_or_url
        return urljoin(self.base_url, path_or_url.lstrip("/"))

    def request(
        self,
        ctx: RotationContext,
        step: str,
        label: str,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        json: Any = None,
        data: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        expect: Collection[int] = (200,),
        missing_ok: bool = False,
        fix_auth: str = "check the admin credentials and their permissions",
    ) -> requests.Response | None:
        """Send one request (retrying what may pass); the response if its status is expected, None for a 404 when
        `missing_ok`; else the rotator error for it. `label` names the call in messages (method and path template).
        """
        target = self.url(url)
        attempt = 0

        def once() -> requests.Response | None:
            nonlocal attempt
            attempt += 1
            try:
                response = send(
                    self.session,
                    method,
                    target,
                    what=f"plan {ctx.plan_id}: {step}: {self.vendor}: {label}",
                    refused=lambda text: StepError(text, plan_id=ctx.plan_id, step=step),
                    tls_fix="set ca_bundle to the PEM file of the CA that signed its certificate (verification is "
                    "never turned off)",
                    headers=dict(headers or {}),
                    json=json,
                    data=dict(data) if data is not None else None,
                    auth=auth,
                    timeout=(self.options.connect_timeout, self.options.read_timeout),
                    verify=self._verify,
                    allow_redirects=False,
                )
            except Unreachable as exc:
                raise _Retry(f"cannot reach {exc.host} ({exc.cause})") from None
            log.debug("vendor call", vendor=self.vendor, call=label, status=response.status_code, attempt=attempt)
            status = response.status_code
            if status in expect:
                return response
            if status == 404 and missing_ok:
                return None
            if is_transient_status(status):
                raise _Retry(
                    f"answered {status}{self._text(response)}",
                    retry_after_seconds(response, reset_header=self.reset_header),
                )
            self._refuse(ctx, step, label, response, fix_auth)

        retrying = Retrying(
            retry=retry_if_exception_type(_Retry),
            stop=self._stop,
            wait=self._wait,
            sleep=self._sleep,
            reraise=True,
        )
        try:
            return retrying(once)
        except _Retry as exc:
            cap = self.options.retry_after_cap
            if exc.retry_after is not None and exc.retry_after > cap:
                detail = f"it asks to wait {exc.retry_after:g} s, more than retry_after_cap ({cap:g} s)"
            else:
                detail = f"{attempt} tries"
            raise TransientError(
                f"plan {ctx.plan_id}: {step}: {self.vendor}: {label} failed for now: {exc.reason} ({detail}); "
                "the engine retries the step"
            ) from None

    # -- the retry policy ------------------------------------------------------------------------------------

    def _stop(self, state: RetryCallState) -> bool:
        if state.attempt_number >= self.options.max_attempts:
            return True
        exc = state.outcome.exception() if state.outcome else None
        return (
            isinstance(exc, _Retry) and exc.retry_after is not None and exc.retry_after > self.options.retry_after_cap
        )

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _Retry) and exc.retry_after is not None:
            return exc.retry_after
        backoff = 0.25 * 2.0 ** (state.attempt_number - 1)
        return min(backoff, 4.0) + random.uniform(0, 0.1)  # jitter, not a secret

    # -- refusals --------------------------------------------------------------------------------------------

    def _text(self, response: requests.Response) -> str:
        try:
            body = response.json()
        except ValueError:
            return ""
        text = scrub(self._error_text(body))[:200]
        return f": {text}" if text else ""

    def _refuse(
        self, ctx: RotationContext, step: str, label: str, response: requests.Response, fix_auth: str
    ) -> NoReturn:
        status = response.status_code
        head = f"plan {ctx.plan_id}: {step}: {self.vendor} refused {label} with {status}{self._text(response)}"
        if status in (401, 403):  # the fix on the same line: the engine keeps an error's first line only
            raise AuthenticationFailed(f"{head}; fix: {fix_auth}", plan_id=ctx.plan_id, step=step)
        raise StepError(head, plan_id=ctx.plan_id, step=step)


def vendor_error_text(body: Any) -> str:
    """The error text of the common JSON error shapes: {"errors": ["..."]} (Datadog), {"errors": [{"message",
    "field"}]} (SendGrid), {"errors": [{"code", "message"}]} (Cloudflare), {"code", "message"} (Twilio)."""
    if not isinstance(body, Mapping):
        return ""
    parts: list[str] = []
    errors = body.get("errors")
    if isinstance(errors, list):
        for error in errors[:3]:
            if isinstance(error, str):
                parts.append(error)
            elif isinstance(error, Mapping):
                code = error.get("code")
                message = str(error.get("message") or "")
                field = error.get("field")
                parts.append(" ".join(str(p) for p in (code, message, f"(field {field})" if field else None) if p))
    elif body.get("message"):
        parts.append(" ".join(str(p) for p in (body.get("code"), body.get("message")) if p))
    return "; ".join(" ".join(p.split()) for p in parts if p)


def json_of(ctx: RotationContext, step: str, vendor: str, label: str, response: requests.Response) -> Any:
    """The response's JSON body, or a StepError naming the call."""
    try:
        return response.json()
    except ValueError:
        raise StepError(
            f"plan {ctx.plan_id}: {step}: {vendor}: {label} answered {response.status_code} without a JSON body",
            plan_id=ctx.plan_id,
            step=step,
        ) from None


def dig(data: Any, path: str) -> Any:
    """The value at a dotted path such as ``data.attributes.key`` (a numeric segment indexes a list); None if absent."""
    current = data
    for segment in path.split("."):
        if isinstance(current, Mapping):
            current = current.get(segment)
        elif isinstance(current, list) and segment.isdigit() and int(segment) < len(current):
            current = current[int(segment)]
        else:
            return None
    return current
