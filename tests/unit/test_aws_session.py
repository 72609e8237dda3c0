"""plugins/aws/session.py: a refused sts:AssumeRole names the component that asked, with that component's error kind."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.client import BaseClient
from botocore.exceptions import ClientError
from rotator_plugins.aws.session import AwsConnectionOptions, aws_client

from rotator import NotifyError, RotatorError, StepError, StoreError, TransientError, parse_options

ROLE = "arn:aws:iam::123456789012:role/not-trusted"


@pytest.mark.parametrize(
    ("service", "component", "refused"),
    [
        ("secretsmanager", "aws-secretsmanager", StoreError),
        ("iam", "aws-iam-key", StepError),
        ("sns", "notifiers.rotated", NotifyError),
    ],
)
def test_a_refused_assume_role_names_the_component(
    monkeypatch: pytest.MonkeyPatch, service: str, component: str, refused: type[RotatorError]
) -> None:
    original = BaseClient._make_api_call
    sts_calls: list[dict[str, Any]] = []

    def sts_refuses(self: Any, operation: str, params: dict[str, Any]) -> Any:
        if self.meta.service_model.service_name == "sts":  # what STS answers when the trust policy omits the caller
            sts_calls.append(params)
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "not authorized"}}, operation)
        return original(self, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", sts_refuses)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    options = parse_options(
        AwsConnectionOptions,
        {"region": "us-east-1", "role_arn": ROLE, "endpoint_url": "http://127.0.0.1:9", "max_attempts": 1},
    )
    client = aws_client(service, options, component=component, refused=refused)
    call = {"secretsmanager": lambda: client.list_secrets(), "iam": lambda: client.list_users(),
            "sns": lambda: client.list_topics()}[service]  # fmt: skip
    with pytest.raises(refused) as raised:
        call()
    assert str(raised.value).startswith(f"{component}: cannot assume role {ROLE} (AccessDenied)")
    assert not isinstance(raised.value, TransientError)
    assert sts_calls and sts_calls[0]["RoleArn"] == ROLE and sts_calls[0]["RoleSessionName"] == "credential-rotator"
