"""moto's server mode for the whole test session: a real HTTP endpoint speaking the AWS APIs.

`moto_server` starts `moto.server.ThreadedMotoServer` on a free port of 127.0.0.1 and gives tests its endpoint URL
and boto3 sessions/clients with dummy credentials in us-east-1. For the session it also sets the AWS_* variables
to those dummy values (and turns off the EC2 metadata lookup), so code that builds its own boto3 client from
options (a store or plugin loaded through the config, the CLI in a subprocess) talks to moto and never finds
real credentials; the old environment is put back at the end.

The server keeps its state for the whole session: tests use unique resource names (see `unique_name`).
moto's server runs in this process and shares moto's in-memory backends with `moto.mock_aws`: a test that starts
mock_aws resets them, so tests that use this fixture must not use mock_aws at the same time.
See /work/shared/TEST-SERVERS.md for where moto differs from AWS.

One difference is corrected here, because it would make tests pass or fail for moto's sake rather than AWS's:
moto 5's UpdateSecretVersionStage moves the AWSCURRENT label but not the secret's "default version", which moto
uses for a GetSecretValue without a stage and for the next PutSecretValue. After a promote by label, moto then
serves the old value to a plain GetSecretValue, and its next PutSecretValue puts AWSPREVIOUS on the stale version
and leaves AWSCURRENT on two versions. AWS documents that a read without a stage reads AWSCURRENT and that
PutSecretValue moves AWSCURRENT to the new version and AWSPREVIOUS to the one that had it. The fixture wraps moto's
backend method so the default version follows AWSCURRENT (the server runs in this process); the wrap is removed at
the end of the session, and harmless once moto fixes this.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.servers.processes import free_port
from tests.servers.watch import ServerUnavailable, WatchedServer, watched

REGION = "us-east-1"
DUMMY_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
    "AWS_EC2_METADATA_DISABLED": "true",
}


def unique_name(prefix: str = "test") -> str:
    return f"{prefix}/{uuid.uuid4().hex[:12]}"


@dataclass
class MotoServer(WatchedServer):
    """moto's server in a thread of this process; its log gets werkzeug's and moto's warnings and errors (a request
    that failed inside moto)."""

    label = "moto"

    endpoint_url: str
    region: str = REGION
    threaded: Any = field(default=None, repr=False)  # moto.server.ThreadedMotoServer
    log_file: Path | None = None

    @property
    def log_path(self) -> Path | None:
        return self.log_file

    def exit_status(self) -> str | None:
        thread = getattr(self.threaded, "_thread", None)
        if thread is None or thread.is_alive():
            return None
        return "stopped serving (its thread ended)"

    def session(self) -> Any:
        """A boto3 session with dummy credentials, in us-east-1."""
        import boto3

        return boto3.Session(
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            aws_session_token="testing",
            region_name=self.region,
        )

    def client(self, service: str, **kwargs: Any) -> Any:
        """A boto3 client for `service` pointed at the server."""
        return self.session().client(service, endpoint_url=self.endpoint_url, **kwargs)


def _default_version_follows_awscurrent() -> Any:
    """Wrap moto's UpdateSecretVersionStage (see the module docstring). Returns a function that unwraps it."""
    from moto.secretsmanager.models import SecretsManagerBackend

    original = SecretsManagerBackend.update_secret_version_stage

    def update_secret_version_stage(
        self: Any, secret_id: str, version_stage: str, remove_from_version_id: str, move_to_version_id: str
    ) -> Any:
        result = original(self, secret_id, version_stage, remove_from_version_id, move_to_version_id)
        if version_stage == "AWSCURRENT" and move_to_version_id:
            self.secrets[secret_id].set_default_version_id(move_to_version_id)
        return result

    SecretsManagerBackend.update_secret_version_stage = update_secret_version_stage  # type: ignore[method-assign]

    def undo() -> None:
        SecretsManagerBackend.update_secret_version_stage = original  # type: ignore[method-assign]

    return undo


def start_moto_server() -> tuple[MotoServer, Callable[[], None]]:
    """Start the server (and the AWS_* dummy environment); returns it and the function that stops it all.
    Also used by bench/store_calls.py."""
    from moto.server import ThreadedMotoServer

    saved = {name: os.environ.get(name) for name in DUMMY_ENV}
    os.environ.update(DUMMY_ENV)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    log_dir = Path(tempfile.mkdtemp(prefix="rotator-moto-"))
    log_file = log_dir / "moto.log"
    handler = logging.FileHandler(log_file)
    handler.setLevel(logging.WARNING)
    for name in ("werkzeug", "moto"):
        logging.getLogger(name).addHandler(handler)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    undo_fix = _default_version_follows_awscurrent()
    server.start()

    def stop() -> None:
        server.stop()
        undo_fix()
        for name in ("werkzeug", "moto"):
            logging.getLogger(name).removeHandler(handler)
        handler.close()
        shutil.rmtree(log_dir, ignore_errors=True)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    return MotoServer(endpoint_url=f"http://127.0.0.1:{port}", threaded=server, log_file=log_file), stop


def _start_watched() -> tuple[MotoServer, Callable[[], None]]:
    try:
        import boto3  # noqa: F401
        import moto.server  # noqa: F401
    except ImportError:
        raise ServerUnavailable("boto3 or moto[server] is not installed (pip install -e '.[dev]')") from None
    return start_moto_server()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """moto's server for the whole session (and the AWS_* dummy environment); watched."""
    stops: list[Callable[[], None]] = []

    def start() -> MotoServer:
        server, stop = _start_watched()
        stops.append(stop)
        return server

    with watched("moto_server", start, lambda _server: stops.pop()()) as server:
        yield server
