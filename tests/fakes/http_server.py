"""A werkzeug server for the HTTP fakes (vault, kubernetes, slack, the SaaS key APIs): a free port of 127.0.0.1,
HTTP or HTTPS, served from a daemon thread until `stop()`, with werkzeug's request log silenced.

A fake extends `ServedFake` and calls `self._serve_wsgi(name=..., ...)` from its own `serve(...)`; `url` and `stop()`
come with it."""

from __future__ import annotations

import ssl
import threading
from typing import Any

from werkzeug.serving import WSGIRequestHandler, make_server


class QuietHandler(WSGIRequestHandler):
    """werkzeug's handler without the per-request access log line (tests' output stays readable)."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


class BackgroundServer:
    """Serves the WSGI `app` at `url` until `stop()`; HTTPS when given an `ssl_context`."""

    def __init__(
        self,
        app: Any,
        *,
        name: str,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
        poll_interval: float = 0.05,  # how soon stop() is noticed by the serving loop
    ) -> None:
        self._server = make_server(
            host, port, app, threaded=True, request_handler=QuietHandler, ssl_context=ssl_context
        )
        scheme = "https" if ssl_context is not None else "http"
        self.url = f"{scheme}://{host}:{self._server.server_port}"
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": poll_interval}, name=name, daemon=True
        ).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class ServedFake:
    """What a fake served by a BackgroundServer shares: its `url` once served, and `stop()`. The fake implements
    `wsgi(environ, start_response)` and its own `serve(...)`, which calls `_serve_wsgi`."""

    url: str
    _server: BackgroundServer | None

    def wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        raise NotImplementedError

    def _serve_wsgi(self, *, name: str, **server_options: Any) -> None:
        self._server = BackgroundServer(self.wsgi, name=name, **server_options)
        self.url = self._server.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
