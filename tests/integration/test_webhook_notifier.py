"""The webhook notifier through the engine: a receiver verifies the signature with the documented recipe;
the payload names the plan and version but never the secret; a failing receiver never rolls back."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from rotator_plugins.notifiers.webhook import WebhookNotifier

from rotator import ComponentSetup, RotationEvent, register_secret
from rotator.testing import sample_event
from tests.cli_env import CliEnv

KEY = "test-signing-key-0123456789"


class Receiver(ThreadingHTTPServer):
    status = 200
    received: list[tuple[dict[str, str], bytes]]


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        server: Receiver = self.server  # type: ignore[assignment]
        server.received.append(({k: v for k, v in self.headers.items()}, body))
        self.send_response(server.status)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver(("127.0.0.1", 0), Handler)
    server.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


def verify(headers: dict[str, str], body: bytes) -> bool:
    """The verification recipe from plugins/notifiers/webhook.py's docstring."""
    ts, signature = headers["X-Rotator-Timestamp"], headers["X-Rotator-Signature"]
    expected = hmac.new(KEY.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(f"v1={expected}", signature) and abs(time.time() - int(ts)) < 300


def receiver_body(notifier: WebhookNotifier, receiver: Receiver, event: RotationEvent) -> bytes:
    """What the receiver got for `event`, sent now."""
    notifier(event)
    return receiver.received[-1][1]


def make_cli(tmp_path: Path, port: int) -> CliEnv:
    config = tmp_path / "rotator.toml"
    config.write_text(f"""
[rotator]
state_dir = "state"

[notifiers.ops]
type = "webhook"
url = "http://127.0.0.1:{port}/rotated"
allow_plain_http = true
signing_key = "env:TEST_WEBHOOK_KEY"
timeout = 5

[[plans]]
id = "signing-key"
plugin = {{type = "generated"}}
secret = "app/signing-key"
notify = ["ops"]
tags = ["web"]
""")
    cli = CliEnv(tmp_path, config)
    assert cli.run("init").code == 0
    cli.seed("app/signing-key", {"value": "s" * 43})
    return cli


def test_signed_event_without_secret(tmp_path: Path, receiver: Receiver) -> None:
    cli = make_cli(tmp_path, receiver.server_address[1])
    result = cli.run("rotate-now", "signing-key", "--reason", "drill", "--json", env={"TEST_WEBHOOK_KEY": KEY})
    assert result.code == 0, result.stderr
    [(headers, body)] = receiver.received
    assert verify(headers, body)
    event = json.loads(body)
    current = cli.run("store", "get", "app/signing-key").json()["value"]
    assert event["plan"] == "signing-key" and event["reason"] == "drill" and event["tags"] == ["web"]
    assert event["version"] == result.json()["results"][0]["run_id"]
    assert current not in body.decode() and "s" * 43 not in body.decode()
    assert not verify({**headers, "X-Rotator-Signature": "v1=" + "0" * 64}, body)


def test_failing_receiver_is_recorded_not_rolled_back(tmp_path: Path, receiver: Receiver) -> None:
    receiver.status = 400
    cli = make_cli(tmp_path, receiver.server_address[1])
    before = cli.run("store", "get", "app/signing-key").json()
    result = cli.run("rotate-now", "signing-key", "--json", env={"TEST_WEBHOOK_KEY": KEY})
    assert result.code == 0
    [outcome] = result.json()["results"]
    assert outcome["outcome"] == "awaiting_revoke" and any("notify failed" in n for n in outcome["notes"])
    assert cli.run("store", "get", "app/signing-key").json() != before  # the new credential stays live
    [run] = cli.run("history", "--json").json()
    assert [(s["step"], s["status"]) for s in run["steps"]][-1] == ("notify", "failed")


@pytest.mark.parametrize("kind", ["credential.rotation_failed", "credential.rotation_stuck"])
def test_a_failure_event_is_signed_and_carries_error_and_action(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """Failure payloads go through the same signing as rotations (a receiver that verifies drops unsigned ones),
    and carry the error and the action; a secret registered by the engine is scrubbed out of the error."""
    planted = f"planted-{uuid.uuid4().hex}"
    register_secret(planted)
    monkeypatch.setenv("TEST_WEBHOOK_KEY", KEY)
    setup = ComponentSetup(name="ops", config_dir=tmp_path, state_dir=tmp_path)
    notifier = WebhookNotifier(
        {
            "url": f"http://127.0.0.1:{receiver.server_address[1]}/events",
            "allow_plain_http": True,
            "signing_key": "env:TEST_WEBHOOK_KEY",
        },
        setup,
    )
    event = sample_event(kind, error=f"stage failed: the target answered {planted}", action="rotate again")
    notifier(event)
    [(headers, body)] = receiver.received
    assert verify(headers, body)
    payload = json.loads(body)
    assert payload == {
        **event.as_dict(),
        "error": "stage failed: the target answered [REDACTED]",
        "action": "rotate again",
    }
    assert payload["event"] == kind and payload["version"] == event.run_id
    assert payload["previous_version"] == event.previous_version_id  # CURRENT, still live
    assert planted not in body.decode()
    assert "error" not in json.loads(receiver_body(notifier, receiver, sample_event()))  # only failure events
