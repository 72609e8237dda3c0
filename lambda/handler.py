"""AWS Secrets Manager rotation function (handler: ``handler.lambda_handler``), a drop-in for AWS's samples.

A few lines over rotator.lambda_adapter, which holds the contract and is unit-tested: this module only builds the
Secrets Manager client, the store and the adapter, once per container (on the first invocation), and turns a
failure into one scrubbed error. Settings come from environment variables (see FunctionSettings and README).
"""

from __future__ import annotations

import os
import sys
from typing import Any

import boto3
from botocore.config import Config
from rotator_plugins.stores.aws_secretsmanager import AwsSecretsManagerStore

from rotator import logs
from rotator.errors import describe
from rotator.lambda_adapter import FunctionSettings, RotationFunction, failure

# Lambda sends stdout to the function's log group: one JSON object per line, secrets redacted.
logs.configure(json=True, stream=sys.stdout, level=os.environ.get("ROTATOR_LOG_LEVEL", "info"))
log = logs.get_logger("rotator.lambda")
SAFETY_SECONDS = 3.0  # leave time to log and return before Lambda's own timeout

_function: RotationFunction | None = None  # one per container, built on first use


def _build() -> RotationFunction:
    settings = FunctionSettings.from_env(os.environ)
    client = boto3.client(
        "secretsmanager",
        endpoint_url=settings.endpoint_url,
        config=Config(
            retries={"mode": "standard", "max_attempts": 3},
            connect_timeout=5,
            read_timeout=20,
            user_agent_extra="credential-rotator-lambda",
        ),
    )
    return RotationFunction(AwsSecretsManagerStore(client=client), settings)


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """One step of a rotation (createSecret, setSecret, testSecret or finishSecret), as Secrets Manager calls it."""
    global _function
    remaining = context.get_remaining_time_in_millis() / 1000 if context is not None else 60.0
    try:
        if _function is None:
            _function = _build()
        return _function.handle(event, deadline_seconds=max(1.0, remaining - SAFETY_SECONDS))
    except Exception as exc:
        log.error("rotation step failed", step=event.get("Step") if isinstance(event, dict) else None,
                  error=describe(exc))  # fmt: skip
        raise failure(exc) from None
