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

    def __call__(self, event: dict[str, Any], context: Any = None) -> dict[str, Any]:
        return self.function.handle(event, deadline_seconds=20)

    def count(self) -> int:
        return sum(self.calls.values())


@pytest.fixture
def service(moto_server: MotoServer) -> Iterator[SecretsManagerService]:
    with aws_put_semantics():
        yield SecretsManagerService(moto_server.client("secretsmanager"))


@pytest.fixture
def make_function(moto_server: MotoServer) -> Callable[..., Function]:
    """`make_function(env={...}, notifiers=[...])`: a fresh container (empty caches) with these variables. All of
    one test's functions share one boto3 client (building one costs ~0.2 s) and so one call counter."""
    client = moto_server.client("secretsmanager")
    calls: Counter[str] = Counter()

    def count(model: Any, **_: Any) -> None:
        calls[model.name] += 1

    client.meta.events.register("before-call.secrets-manager", count)

    def make(env: dict[str, str] | None = None, notifiers: list[tuple[str, Notifier]] | None = None) -> Function:
        store = AwsSecretsManagerStore(client=client)
        settings = FunctionSettings.from_env(env or {}, file_exists=lambda _path: False)
        return Function(RotationFunction(store, settings, notifiers=notifiers), calls)

    return make


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """Everything logged (JSON lines, as on Lambda) while the test runs."""
    stream = io.StringIO()
    logs.configure(json=True, stream=stream, level="debug")
    yield stream
    logs.configure(json=True, level="info")


def parsed_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def load_handler() -> ModuleType:
    """lambda/handler.py as a fresh module (lambda/ is a folder, not a package: `lambda` is a keyword)."""
    spec = importlib.util.spec_from_file_location("rotator_lambda_handler", HANDLER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
