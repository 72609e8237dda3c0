"""What the SaaS key-API fakes share: a werkzeug server (HTTP, or HTTPS with a throwaway CA's certificate from
tests/fakes/throwaway_ca.py), a request log and fault injection.

No vendor server can be had on this machine, so each vendor's fake (datadog.py, sendgrid.py, twilio.py,
cloudflare.py) speaks the vendor's documented endpoints, auth headers, statuses and error bodies; each says which
docs it follows. Every fake answers "is this key valid now?" (`is_valid`) and "which keys exist?" (`live_ids`), so
tests can check DESIGN.md's invariants 1 and 2 against the vendor's own state.

Faults: ``fail(path_contains, status, times=1, method=None, retry_after=None, headers=None)`` answers the next
`times` matching requests with `status` and the vendor's error body (with Retry-After when given);
``reject_new_keys(n)`` makes each new key fail authentication `n` times first (propagation delay).
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from werkzeug.wrappers import Request, Response

from tests.fakes.http_server import BackgroundServer, ServedFake
from tests.fakes.throwaway_ca import TlsFiles


@dataclass
class Fault:
    status: int
    path_contains: str
    times: int
    method: str | None = None
    retry_after: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Logged:
    method: str
    path: str
    query: str
    status: int = 0


class HttpError(Exception):
    """Raised by a handler: the fake answers `status` with the vendor's error body for `message`."""

    def __init__(self, status: int, message: str, **extra: Any):
        self.status = status
        self.message = message
        self.extra = extra
        super().__init__(status, message)


class FakeSaas(ServedFake):
    """Base of the vendor fakes. Subclasses implement `handle(request)` and `error_body(status, message, extra)`."""

    vendor = "saas"

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.faults: list[Fault] = []
        self.requests: list[Logged] = []
        self.rejections_left: dict[str, int] = {}  # new key's secret -> refusals before it works
        self.reject_new = 0
        self.url = ""
        self._server: BackgroundServer | None = None

    # -- test controls -----------------------------------------------------------------------------------

    def fail(
        self,
        path_contains: str,
        status: int,
        times: int = 1,
        *,
        method: str | None = None,
        retry_after: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        with self.lock:
            self.faults.append(Fault(status, path_contains, times, method, retry_after, dict(headers or {})))

    def reject_new_keys(self, times: int) -> None:
        """Each key minted from now on fails authentication `times` times before it works (propagation)."""
        self.reject_new = times

    def calls(self, method: str | None = None, path_contains: str = "") -> list[Logged]:
        with self.lock:
            return [r for r in self.requests if (method in (None, r.method)) and path_contains in r.path]

    def new_secret_minted(self, secret: str) -> None:
        if self.reject_new:
            self.rejections_left[secret] = self.reject_new

    def propagated(self, secret: str) -> bool:
        """False (and one fewer refusal left) while a new key has not yet propagated."""
        left = self.rejections_left.get(secret, 0)
        if left > 0:
            self.rejections_left[secret] = left - 1
            return False
        return True

    # -- serving -----------------------------------------------------------------------------------------

    def serve(self, *, tls: TlsFiles | None = None, host: str = "127.0.0.1") -> FakeSaas:
        context = tls.server_context() if tls is not None else None
        # A short poll interval: stop() waits for the serving loop to notice, once per test scenario.
        self._serve_wsgi(name=f"fake-{self.vendor}", host=host, ssl_context=context, poll_interval=0.02)
        return self

    def wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        logged = Logged(request.method, request.path, request.query_string.decode())
        with self.lock:
            self.requests.append(logged)
            fault = next(
                (
                    f
                    for f in self.faults
                    if f.times > 0 and f.path_contains in request.path and f.method in (None, request.method)
                ),
                None,
            )
            if fault is not None:
                fault.times -= 1
        if fault is not None:
            response = self.json(self.error_body(fault.status, _reason(fault.status), {}), fault.status)
            if fault.retry_after is not None:
                response.headers["Retry-After"] = fault.retry_after
            response.headers.update(fault.headers)
        else:
            try:
                with self.lock:
                    response = self.handle(request)
            except HttpError as err:
                response = self.json(self.error_body(err.status, err.message, err.extra), err.status)
        logged.status = response.status_code
        return response(environ, start_response)

    # -- for subclasses ----------------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        raise NotImplementedError

    def error_body(self, status: int, message: str, extra: Mapping[str, Any]) -> Any:
        raise NotImplementedError

    @staticmethod
    def json(body: Any, status: int = 200) -> Response:
        return Response(json.dumps(body), status=status, mimetype="application/json")

    @staticmethod
    def body(request: Request) -> Any:
        if not request.data:
            return {}
        try:
            return json.loads(request.data)
        except ValueError:
            raise HttpError(400, "malformed JSON body") from None


def _reason(status: int) -> str:
    return {
        400: "Bad Request",
        401: "Unauthorized",
        403: "Forbidden",
        404: "Not Found",
        429: "Too many requests",
        500: "Internal Server Error",
        502: "Bad Gateway",
        503: "Service Unavailable",
    }.get(status, "Error")


def token(length: int, alphabet: str = "0123456789abcdef") -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))
