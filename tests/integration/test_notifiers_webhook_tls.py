"""The webhook notifier against a real local HTTPS receiver (a throwaway CA, tests/fakes/throwaway_ca.py): a TLS
verification failure is a NotifyError that the engine's retry policy does not retry (one connection, however many
tries are allowed), while a receiver answering 503 over verified TLS is retried; a receiver whose certificate the
ca_bundle verifies gets the event.

The receiver counts the TCP connections it accepts, before any handshake, so a retry shows as a second one."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from rotator_plugins.notifiers.webhook import WebhookNotifier

from rotator import ComponentSetup, NotifyError, TransientError
from rotator.retry import call_with_retry
from rotator.testing import sample_event
from tests.fakes.throwaway_ca import TlsFiles, make_throwaway_tls

TRIES = 4


class TlsReceiver(ThreadingHTTPServer):
    """An HTTPS server that counts accepted connections and answers every POST with `status`."""

    status = 200

    def __init__(self, tls: TlsFiles) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.context = tls.server_context()
        self.connections = 0
        self.posts = 0
        self._count = threading.Lock()

    def get_request(self) -> tuple[Any, Any]:
        sock, address = self.socket.accept()
        with self._count:
            self.connections += 1
        try:
            return self.context.wrap_socket(sock, server_side=True), address
        except (ssl.SSLError, OSError):  # the client gave up on our certificate: socketserver drops this request
            sock.close()
            raise

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hung up mid-request is what some tests do on purpose


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        server: TlsReceiver = self.server  # type: ignore[assignment]
        server.posts += 1
        self.send_response(server.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@dataclass
class Rig:
    receiver: TlsReceiver
    tls: TlsFiles
    other_ca: Path  # a CA that did not sign the receiver's certificate
    tmp_path: Path

    def notifier(self, *, host: str = "127.0.0.1", ca_bundle: Path | None = None) -> WebhookNotifier:
        setup = ComponentSetup(name="ops", config_dir=self.tmp_path, state_dir=self.tmp_path)
        url = f"https://{host}:{self.receiver.server_address[1]}/rotated"
        options: dict[str, Any] = {"url": url, "timeout": 5}
        if ca_bundle is not None:
            options["ca_bundle"] = str(ca_bundle)
        return WebhookNotifier(options, setup)


def serve(tls: TlsFiles) -> TlsReceiver:
    receiver = TlsReceiver(tls)
    threading.Thread(target=receiver.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return receiver


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    tls = make_throwaway_tls(tmp_path / "receiver")  # names 127.0.0.1 and localhost
    other = make_throwaway_tls(tmp_path / "other")
    receiver = serve(tls)
    yield Rig(receiver, tls, other.ca_cert, tmp_path)
    receiver.shutdown()
    receiver.server_close()


def deliver_with_retries(notifier: WebhookNotifier) -> None:
    """As the engine delivers: TransientError is retried (here up to TRIES tries), anything else is final."""
    call_with_retry(lambda: notifier(sample_event()), attempts=TRIES, deadline_seconds=20)


def test_a_certificate_from_another_ca_fails_once_and_is_not_retried(rig: Rig) -> None:
    notifier = rig.notifier(ca_bundle=rig.other_ca)
    with pytest.raises(NotifyError, match=r"webhook ops: TLS verification of 127\.0\.0\.1 failed") as caught:
        deliver_with_retries(notifier)
    assert not isinstance(caught.value, TransientError)
    assert rig.receiver.connections == 1  # one try: a wrong CA does not fix itself
    assert rig.receiver.posts == 0


def test_the_system_cas_do_not_verify_a_private_ca(rig: Rig) -> None:
    with pytest.raises(NotifyError, match="TLS verification") as caught:
        deliver_with_retries(rig.notifier())
    assert not isinstance(caught.value, TransientError)
    assert rig.receiver.connections == 1


def test_a_certificate_for_another_host_name_is_not_retried(tmp_path: Path) -> None:
    tls = make_throwaway_tls(tmp_path / "named", hosts=("localhost",))  # not 127.0.0.1
    receiver = serve(tls)
    try:
        rig = Rig(receiver, tls, tls.ca_cert, tmp_path)
        with pytest.raises(NotifyError, match="TLS verification"):
            deliver_with_retries(rig.notifier(host="127.0.0.1", ca_bundle=tls.ca_cert))
        assert receiver.connections == 1 and receiver.posts == 0
    finally:
        receiver.shutdown()
        receiver.server_close()


def test_a_verified_receiver_answering_503_is_retried(rig: Rig) -> None:
    """The contrast: over verified TLS a 503 is transient, so every allowed try reaches the receiver."""
    rig.receiver.status = 503
    with pytest.raises(TransientError, match="receiver answered 503"):
        deliver_with_retries(rig.notifier(ca_bundle=rig.tls.ca_cert))
    assert rig.receiver.posts == TRIES


def test_a_verified_receiver_gets_the_event(rig: Rig) -> None:
    rig.notifier(ca_bundle=rig.tls.ca_cert)(sample_event())
    assert rig.receiver.posts == 1


def test_a_receiver_that_is_gone_is_transient(rig: Rig) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    setup = ComponentSetup(name="ops", config_dir=rig.tmp_path, state_dir=rig.tmp_path)
    notifier = WebhookNotifier({"url": f"https://127.0.0.1:{port}/rotated", "timeout": 2}, setup)
    with pytest.raises(TransientError, match=r"webhook ops: cannot reach 127.0.0.1 \(ConnectionError\)"):
        notifier(sample_event())
