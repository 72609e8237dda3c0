"""Fixtures for the rotation function's tests: Secrets Manager on moto's server, functions built like the handler
builds its one (rotator.lambda_adapter over the AWS store), with a botocore hook counting Secrets Manager calls."""

from __future__ import annotations

import importlib.util
import io
import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import structlog
from rotator_plugins.stores.aws_secretsmanager import AwsSecretsManagerStore

from rotator import logs
from rotator.interfaces import Notifier
from rotator.lambda_adapter import FunctionSettings, RotationFunction
from tests.servers.aws import MotoServer

from .rotation_service import SecretsManagerService, aws_put_semantics

HANDLER = Path(__file__).resolve().parents[2] / "lambda" / "handler.py"


@dataclass
class Function:
    """A rotation function as one Lambda container holds it, and the Secrets Manager calls it made."""

    function: RotationFunction
    calls: Counter[str] = field(default_factory=Counter)
    hooks: list[tuple[str, Callable[..., Any]]] = field(default_factory=list)

    def __call__(self, event: dict[str, Any], context: Any = None) -> dict[str, Any]:
        return self.function.handle(event, deadline_seconds=20)

    def on(self, event_name: str, hook: Callable[..., Any]) -> None:
        """A botocore event hook on the function's client, removed at the end of the test."""
        self.function.store.client.meta.events.register(event_name, hook)  # type: ignore[attr-defined]
        self.hooks.append((event_name, hook))


@pytest.fixture(scope="session")
def sm_client(moto_server: MotoServer) -> Any:
    """The functions' Secrets Manager client, one for the session (building one costs ~0.2 s)."""
    return moto_server.client("secretsmanager")


@pytest.fixture(scope="session")
def service_client(moto_server: MotoServer) -> Any:
    """The tests' own client (seeding, reading back): its calls are not the function's."""
    return moto_server.client("secretsmanager")


@pytest.fixture
def service(service_client: Any) -> Iterator[SecretsManagerService]:
    with aws_put_semantics():
        yield SecretsManagerService(service_client)


@pytest.fixture
def make_function(sm_client: Any) -> Iterator[Callable[..., Function]]:
    """`make_function(env={...}, notifiers=[...])`: a fresh container (empty caches) with these variables. All of
    them share the session's client, and one test's functions share one call counter."""
    calls: Counter[str] = Counter()
    hooks: list[tuple[str, Callable[..., Any]]] = []

    def count(model: Any, **_: Any) -> None:
        calls[model.name] += 1

    sm_client.meta.events.register("before-call.secrets-manager", count)
    hooks.append(("before-call.secrets-manager", count))

    def make(env: dict[str, str] | None = None, notifiers: list[tuple[str, Notifier]] | None = None) -> Function:
        store = AwsSecretsManagerStore(client=sm_client)
        settings = FunctionSettings.from_env(env or {}, file_exists=lambda _path: False)
        return Function(RotationFunction(store, settings, notifiers=notifiers), calls, hooks)

    yield make
    for event_name, hook in hooks:
        sm_client.meta.events.unregister(event_name, hook)


@pytest.fixture(autouse=True)
def _keep_the_logging_setup() -> Iterator[None]:
    """Put structlog's set-up back after each test: importing lambda/handler.py points it at the sys.stdout of the
    moment, which pytest's capsys closes after its test."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """Everything logged (JSON lines, as on Lambda) while the test runs."""
    stream = io.StringIO()
    logs.configure(json=True, stream=stream, level="debug")
    yield stream


def parsed_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def load_handler() -> ModuleType:
    """lambda/handler.py as a fresh module (lambda/ is a folder, not a package: `lambda` is a keyword)."""
    spec = importlib.util.spec_from_file_location("rotator_lambda_handler", HANDLER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
