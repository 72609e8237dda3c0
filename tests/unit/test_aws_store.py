"""The AWS Secrets Manager store against moto's server (real HTTP): what AWS's labels look like after each step,
crash points inside promote and unpromote, races, assumed roles, KMS, and the API calls each method makes.

Written to hold on AWS; where moto differs it is said at the spot (see also tests/servers/aws.py).
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
from botocore.client import BaseClient
from botocore.exceptions import ClientError
from rotator_plugins.stores.aws_secretsmanager import AwsSecretsManagerStore

from rotator.errors import StoreError, TransientError, VersionConflict
from rotator.model import Stage
from rotator.testing import new_run_id, new_secret_id, sample_value
from tests.servers.aws import MotoServer

pytestmark = pytest.mark.usefixtures("moto_server")


@pytest.fixture
def store(moto_server: MotoServer) -> AwsSecretsManagerStore:
    return AwsSecretsManagerStore({"region": "us-east-1", "endpoint_url": moto_server.endpoint_url})


@pytest.fixture
def sm(moto_server: MotoServer) -> Any:
    """A second client: another process, an operator, or the consumer."""
    return moto_server.client("secretsmanager")


def labels(sm: Any, secret_id: str) -> dict[str, set[str]]:
    described = sm.describe_secret(SecretId=secret_id)["VersionIdsToStages"]
    return {vid: set(stages) for vid, stages in described.items() if stages}


def count_calls(store: AwsSecretsManagerStore) -> Counter[str]:
    calls: Counter[str] = Counter()

    def hook(model: Any, **_: Any) -> None:
        calls[model.name] += 1

    store.client.meta.events.register("before-call.secrets-manager", hook)
    return calls


def rotated(store: AwsSecretsManagerStore) -> tuple[str, str, str]:
    secret_id = new_secret_id("aws")
    seed = store.put_current(secret_id, sample_value("seed")).version_id
    run_id = new_run_id()
    store.put_pending(secret_id, sample_value("new"), run_id)
    return secret_id, seed, run_id


def test_after_promote_the_secret_is_ready_for_the_next_rotate_secret(store: AwsSecretsManagerStore, sm: Any) -> None:
    secret_id, seed, run_id = rotated(store)
    assert labels(sm, secret_id) == {seed: {"AWSCURRENT"}, run_id: {"AWSPENDING"}}
    store.promote(secret_id, run_id)
    # AWSCURRENT moved in one call, AWS moved AWSPREVIOUS itself, and no AWSPENDING is left anywhere: AWS's own
    # RotateSecret may start next (it refuses while AWSPENDING sits on a version other than AWSCURRENT).
    assert labels(sm, secret_id) == {seed: {"AWSPREVIOUS"}, run_id: {"AWSCURRENT"}}


def test_a_crash_inside_promote_leaves_nothing_pending_and_promote_finishes(
    store: AwsSecretsManagerStore, sm: Any
) -> None:
    secret_id, seed, run_id = rotated(store)
    # The first of promote's two calls happened, then the process died.
    sm.update_secret_version_stage(
        SecretId=secret_id, VersionStage="AWSCURRENT", MoveToVersionId=run_id, RemoveFromVersionId=seed
    )
    assert labels(sm, secret_id)[run_id] == {"AWSCURRENT", "AWSPENDING"}
    assert store.get(secret_id, Stage.PENDING) is None  # a PENDING on the CURRENT version is not pending
    current = store.get(secret_id, Stage.CURRENT)
    assert current is not None and current.stages == {Stage.CURRENT}
    store.promote(secret_id, run_id)
    assert labels(sm, secret_id) == {seed: {"AWSPREVIOUS"}, run_id: {"AWSCURRENT"}}


def test_a_crash_inside_unpromote_is_finished_by_the_retry(store: AwsSecretsManagerStore, sm: Any) -> None:
    secret_id, seed, run_id = rotated(store)
    store.promote(secret_id, run_id)
    # unpromote's first call (AWSPENDING back on the run's version) happened, then the process died.
    sm.update_secret_version_stage(SecretId=secret_id, VersionStage="AWSPENDING", MoveToVersionId=run_id)
    store.unpromote(secret_id, run_id)
    found = labels(sm, secret_id)
    assert "AWSCURRENT" in found[seed] and "AWSPENDING" in found[run_id] and "AWSCURRENT" not in found[run_id]
    pending = store.get(secret_id, Stage.PENDING)
    assert pending is not None and pending.version_id == run_id


def test_promote_refuses_when_another_writer_moved_awscurrent(
    store: AwsSecretsManagerStore, moto_server: MotoServer
) -> None:
    secret_id, _, run_id = rotated(store)
    other = AwsSecretsManagerStore({"region": "us-east-1", "endpoint_url": moto_server.endpoint_url})
    reseeded: list[str] = []

    def race(model: Any, **_: Any) -> None:
        # Between promote's DescribeSecret and its UpdateSecretVersionStage, an operator reseeds the secret.
        if model.name == "UpdateSecretVersionStage" and not reseeded:
            reseeded.append(other.put_current(secret_id, sample_value("operator")).version_id)

    store.client.meta.events.register("before-call.secrets-manager", race)
    with pytest.raises(VersionConflict):
        store.promote(secret_id, run_id)
    current = store.get(secret_id, Stage.CURRENT)
    assert current is not None and current.version_id == reseeded[0]  # the operator's value was not overwritten


def test_put_pending_conflict_leaves_the_stored_value_alone(store: AwsSecretsManagerStore, sm: Any) -> None:
    secret_id, _, run_id = rotated(store)
    before = sm.get_secret_value(SecretId=secret_id, VersionId=run_id)["SecretString"]
    with pytest.raises(VersionConflict):
        store.put_pending(secret_id, sample_value("different"), run_id)
    # AWS refuses a new value under an existing token; moto would overwrite it, so the store checks first.
    assert sm.get_secret_value(SecretId=secret_id, VersionId=run_id)["SecretString"] == before


def test_put_pending_again_after_discard_puts_the_label_back(store: AwsSecretsManagerStore, sm: Any) -> None:
    secret_id, _, run_id = rotated(store)
    value = json.loads(sm.get_secret_value(SecretId=secret_id, VersionId=run_id)["SecretString"])
    store.discard_pending(secret_id, run_id)
    assert store.get(secret_id, Stage.PENDING) is None
    store.put_pending(secret_id, value, run_id)
    pending = store.get(secret_id, Stage.PENDING)
    assert pending is not None and pending.version_id == run_id


def test_consumers_reading_without_a_stage_see_only_awscurrent(store: AwsSecretsManagerStore, sm: Any) -> None:
    secret_id, _, run_id = rotated(store)
    assert json.loads(sm.get_secret_value(SecretId=secret_id)["SecretString"])["password"].startswith("pw-seed")
    store.promote(secret_id, run_id)
    assert json.loads(sm.get_secret_value(SecretId=secret_id)["SecretString"])["password"].startswith("pw-new")


def test_api_calls_per_method(store: AwsSecretsManagerStore) -> None:
    """The figures in the README: what each method costs in AWS API calls on the usual path."""
    secret_id = new_secret_id("aws")
    store.put_current(secret_id, sample_value("seed"))
    calls = count_calls(store)
    run_id = new_run_id()

    def cost(fn: Any) -> dict[str, int]:
        calls.clear()
        fn()
        return dict(calls)

    assert cost(lambda: store.get(secret_id)) == {"GetSecretValue": 1}
    assert cost(lambda: store.get(secret_id, Stage.PENDING)) == {"GetSecretValue": 1, "DescribeSecret": 1}
    assert cost(lambda: store.put_pending(secret_id, sample_value("new"), run_id)) == {
        "GetSecretValue": 1,
        "PutSecretValue": 1,
    }
    assert cost(lambda: store.promote(secret_id, run_id)) == {"DescribeSecret": 1, "UpdateSecretVersionStage": 2}
    assert cost(lambda: store.promote(secret_id, run_id)) == {"DescribeSecret": 1}
    assert cost(lambda: store.unpromote(secret_id, run_id)) == {"DescribeSecret": 1, "UpdateSecretVersionStage": 2}
    assert cost(lambda: store.discard_pending(secret_id, run_id)) == {
        "DescribeSecret": 1,
        "UpdateSecretVersionStage": 1,
    }


def test_put_current_creates_a_new_secret_with_the_kms_key(moto_server: MotoServer, sm: Any) -> None:
    kms = moto_server.client("kms")
    key_id = kms.create_key(Description="rotator test")["KeyMetadata"]["KeyId"]
    store = AwsSecretsManagerStore(
        {"region": "us-east-1", "endpoint_url": moto_server.endpoint_url, "kms_key_id": key_id}
    )
    secret_id = new_secret_id("aws-kms")
    store.put_current(secret_id, sample_value("seed"))
    assert sm.describe_secret(SecretId=secret_id)["KmsKeyId"] == key_id


def test_role_arn_is_assumed_through_sts(moto_server: MotoServer) -> None:
    iam = moto_server.client("iam")
    trust = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}],
    }
    role_name = new_secret_id("rotator").replace("/", "-")
    role_arn = iam.create_role(RoleName=role_name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    store = AwsSecretsManagerStore(
        {
            "region": "us-east-1",
            "endpoint_url": moto_server.endpoint_url,
            "sts_endpoint_url": moto_server.endpoint_url,
            "role_arn": role_arn,
            "role_session_name": "rotator-test",
        }
    )
    secret_id = new_secret_id("aws-role")
    store.put_current(secret_id, sample_value("seed"))
    assert store.get(secret_id) is not None
    frozen = store.client._request_signer._credentials.get_frozen_credentials()
    assert frozen.access_key.startswith("ASIA")  # temporary credentials from sts:AssumeRole, not the base ones
    assert frozen.access_key != "testing"


def test_sts_out_of_reach_is_transient(moto_server: MotoServer) -> None:
    store = AwsSecretsManagerStore(
        {
            "region": "us-east-1",
            "endpoint_url": moto_server.endpoint_url,
            "sts_endpoint_url": "http://127.0.0.1:9",  # nothing listens on the discard port
            "role_arn": "arn:aws:iam::123456789012:role/rotator",
            "max_attempts": 1,
        }
    )
    with pytest.raises(TransientError, match="sts:AssumeRole on arn:aws:iam::123456789012:role/rotator"):
        store.get(new_secret_id("aws"))


def test_a_refused_assume_role_is_a_store_error_naming_the_role(
    moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = AwsSecretsManagerStore(
        {
            "region": "us-east-1",
            "endpoint_url": moto_server.endpoint_url,
            "sts_endpoint_url": moto_server.endpoint_url,
            "role_arn": "arn:aws:iam::123456789012:role/not-trusted",
        }
    )

    original = BaseClient._make_api_call

    def sts_refuses(self: Any, operation: str, params: dict[str, Any]) -> Any:
        # What STS answers when the role's trust policy does not name the caller.
        if self.meta.service_model.service_name == "sts":
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "not authorized"}}, operation)
        return original(self, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", sts_refuses)
    with pytest.raises(StoreError, match="cannot assume role arn:aws:iam::123456789012:role/not-trusted") as raised:
        store.get(new_secret_id("aws"))
    assert not isinstance(raised.value, TransientError)
