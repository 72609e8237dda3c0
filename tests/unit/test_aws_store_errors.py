"""AWS errors become rotator errors at one boundary (rotator_plugins.aws.errors), for every store method.

The client is a real botocore client; botocore's Stubber answers in place of AWS with the error AWS would send,
so these run without any server. A refused connection is a real one (a closed port on 127.0.0.1).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ParamValidationError
from botocore.stub import Stubber
from rotator_plugins.aws.errors import store_error
from rotator_plugins.stores.aws_secretsmanager import AwsSecretsManagerStore

from rotator.components import ComponentSetup
from rotator.errors import ConfigError, SecretNotFound, StoreError, TransientError, VersionConflict
from rotator.model import Stage
from rotator.registry import load_store
from rotator.retry import call_with_retry

SECRET = "prod/orders/db"
RUN = "0123456789abcdef0123456789abcdef"
OLD = "fedcba9876543210fedcba9876543210"
VALUE = {"username": "app", "password": "correct-horse-battery-staple-1"}


@pytest.fixture
def client() -> Any:
    return boto3.client(
        "secretsmanager",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture
def stub(client: Any) -> Iterator[Stubber]:
    with Stubber(client) as stubber:
        yield stubber
        stubber.assert_no_pending_responses()


@pytest.fixture
def store(client: Any) -> AwsSecretsManagerStore:
    return AwsSecretsManagerStore({"region": "us-east-1"}, client=client)


def error(stub: Stubber, method: str, code: str, status: int = 400, message: str = "") -> None:
    stub.add_client_error(method, service_error_code=code, service_message=message or code, http_status_code=status)


def secret_response(version: str, value: dict[str, Any], stages: list[str]) -> dict[str, Any]:
    return {
        "ARN": f"arn:aws:secretsmanager:us-east-1:123456789012:secret:{SECRET}-AbCdEf",
        "Name": SECRET,
        "VersionId": version,
        "SecretString": json.dumps(value),
        "VersionStages": stages,
    }


@pytest.mark.parametrize(
    ("method", "action", "call"),
    [
        ("get_secret_value", "GetSecretValue", lambda s: s.get(SECRET)),
        ("get_secret_value", "GetSecretValue", lambda s: s.put_pending(SECRET, VALUE, RUN)),
        ("describe_secret", "DescribeSecret", lambda s: s.promote(SECRET, RUN)),
        ("describe_secret", "DescribeSecret", lambda s: s.unpromote(SECRET, RUN)),
        ("describe_secret", "DescribeSecret", lambda s: s.discard_pending(SECRET, RUN)),
        ("put_secret_value", "PutSecretValue", lambda s: s.put_current(SECRET, VALUE)),
    ],
)
def test_access_denied_names_the_action_and_the_secret(
    store: AwsSecretsManagerStore, stub: Stubber, method: str, action: str, call: Any
) -> None:
    error(
        stub,
        method,
        "AccessDeniedException",
        message=f"User: arn:aws:sts::123456789012:assumed-role/rotator/x is not authorized to perform: "
        f"secretsmanager:{action} on resource: {SECRET}",
    )
    with pytest.raises(StoreError) as raised:
        call(store)
    assert not isinstance(raised.value, SecretNotFound | TransientError | VersionConflict)
    message = str(raised.value)
    assert f"secretsmanager:{action}" in message and SECRET in message
    assert "iam-policy-daemon.json" in message


def test_access_denied_on_put_pending_write_names_put_secret_value(
    store: AwsSecretsManagerStore, stub: Stubber
) -> None:
    error(stub, "get_secret_value", "ResourceNotFoundException", 400)  # the version does not exist yet
    error(stub, "put_secret_value", "AccessDeniedException")
    with pytest.raises(StoreError, match="secretsmanager:PutSecretValue") as raised:
        store.put_pending(SECRET, VALUE, RUN)
    assert VALUE["password"] not in str(raised.value)


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("ThrottlingException", 400),
        ("Throttling", 400),
        ("TooManyRequestsException", 429),
        ("RequestLimitExceeded", 400),
        ("InternalServiceError", 500),
        ("InternalFailure", 500),
        ("ServiceUnavailable", 503),
        ("SomethingNew", 502),
    ],
)
def test_throttling_and_5xx_are_transient(store: AwsSecretsManagerStore, stub: Stubber, code: str, status: int) -> None:
    error(stub, "get_secret_value", code, status)
    with pytest.raises(TransientError, match="retried"):
        store.get(SECRET)


def test_a_transient_error_is_retried_by_the_engine_policy(store: AwsSecretsManagerStore, stub: Stubber) -> None:
    error(stub, "get_secret_value", "ThrottlingException")
    error(stub, "get_secret_value", "InternalServiceError", 500)
    stub.add_response("get_secret_value", secret_response(OLD, VALUE, ["AWSCURRENT"]))
    credential = call_with_retry(lambda: store.get(SECRET), attempts=4, deadline_seconds=30)
    assert credential is not None and credential.value == VALUE


def test_resource_not_found_names_the_secret(store: AwsSecretsManagerStore, stub: Stubber) -> None:
    error(stub, "get_secret_value", "ResourceNotFoundException")
    error(stub, "describe_secret", "ResourceNotFoundException")
    with pytest.raises(SecretNotFound, match="prod/orders/db"):
        store.get(SECRET, Stage.PREVIOUS)


def test_a_missing_label_on_an_existing_secret_is_none(store: AwsSecretsManagerStore, stub: Stubber) -> None:
    # AWS answers ResourceNotFoundException for a label on no version too; DescribeSecret tells them apart.
    error(stub, "get_secret_value", "ResourceNotFoundException")
    stub.add_response("describe_secret", {"Name": SECRET, "VersionIdsToStages": {OLD: ["AWSCURRENT"]}})
    assert store.get(SECRET, Stage.PENDING) is None


def test_put_pending_on_a_missing_secret_names_it(store: AwsSecretsManagerStore, stub: Stubber) -> None:
    error(stub, "get_secret_value", "ResourceNotFoundException")
    error(stub, "put_secret_value", "ResourceNotFoundException")
    with pytest.raises(SecretNotFound, match="prod/orders/db"):
        store.put_pending(SECRET, VALUE, RUN)


def test_aws_refusing_a_changed_version_is_a_conflict(store: AwsSecretsManagerStore, stub: Stubber) -> None:
    # Another writer created the version between our check and our write: AWS refuses a different value.
    error(stub, "get_secret_value", "ResourceNotFoundException")
    error(stub, "put_secret_value", "ResourceExistsException", message="A version with this token already exists")
    with pytest.raises(VersionConflict):
        store.put_pending(SECRET, VALUE, RUN)


def test_a_label_that_moved_under_promote_is_a_conflict(store: AwsSecretsManagerStore, stub: Stubber) -> None:
    stub.add_response(
        "describe_secret", {"Name": SECRET, "VersionIdsToStages": {OLD: ["AWSCURRENT"], RUN: ["AWSPENDING"]}}
    )
    error(stub, "update_secret_version_stage", "InvalidParameterException", message="AWSCURRENT is on another version")
    with pytest.raises(VersionConflict):
        store.promote(SECRET, RUN)


def test_kms_refusal_names_kms_decrypt(store: AwsSecretsManagerStore, stub: Stubber) -> None:
    error(stub, "get_secret_value", "DecryptionFailure")
    with pytest.raises(StoreError, match="kms:Decrypt"):
        store.get(SECRET)


def test_bad_credentials_are_not_transient(store: AwsSecretsManagerStore, stub: Stubber) -> None:
    error(stub, "get_secret_value", "UnrecognizedClientException")
    with pytest.raises(StoreError, match="rejected the credentials") as raised:
        store.get(SECRET)
    assert not isinstance(raised.value, TransientError)


def test_binary_and_plain_text_secrets_are_refused_without_showing_them(
    store: AwsSecretsManagerStore, stub: Stubber
) -> None:
    stub.add_response("get_secret_value", {"Name": SECRET, "VersionId": OLD, "SecretBinary": b"\x00binary-secret"})
    with pytest.raises(StoreError, match="binary"):
        store.get(SECRET)
    plain = {"Name": SECRET, "VersionId": OLD, "SecretString": "plain-text-password-hunter2"}
    stub.add_response("get_secret_value", plain)
    with pytest.raises(StoreError, match="not a JSON object") as raised:
        store.get(SECRET)
    assert "hunter2" not in str(raised.value)


def test_parameter_validation_errors_never_quote_parameters() -> None:
    exc = ParamValidationError(report="Invalid type for parameter SecretString, value: s3cr3t-value-hunter2")
    mapped = store_error(exc, action="secretsmanager:PutSecretValue", secret_id=SECRET)
    assert isinstance(mapped, StoreError) and "hunter2" not in str(mapped)
    assert "secretsmanager:PutSecretValue" in str(mapped)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_connection_refused_is_transient(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    store = AwsSecretsManagerStore(
        {
            "region": "us-east-1",
            "endpoint_url": f"http://127.0.0.1:{closed_port()}",
            "max_attempts": 1,
            "connect_timeout": 1,
        }
    )
    with pytest.raises(TransientError, match="cannot reach AWS"):
        store.get(SECRET)


# -- options, through the registry as the config loads them ---------------------------------------------------


def setup_for(tmp_path: Path) -> ComponentSetup:
    return ComponentSetup(name="aws", config_dir=tmp_path, state_dir=tmp_path, config_file=str(tmp_path / "r.toml"))


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"region": "us-east-1", "regoin": "x"}, "stores.aws.regoin"),
        ({"region": "us-east-1", "role_arn": "arn:aws:iam::12:user/x"}, "stores.aws.role_arn"),
        ({"region": "not a region"}, "stores.aws.region"),
        ({"region": "us-east-1", "max_attempts": 0}, "stores.aws.max_attempts"),
    ],
)
def test_bad_options_are_config_errors_naming_the_key(tmp_path: Path, options: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_store("aws-secretsmanager", options, setup_for(tmp_path), "stores.aws")
    assert key in str(raised.value)


def test_an_unknown_profile_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(ConfigError, match=r"stores\.aws"):
        load_store("aws-secretsmanager", {"region": "us-east-1", "profile": "nope"}, setup_for(tmp_path), "stores.aws")
