"""What Secrets Manager does around a rotation function, on moto's server (tests/servers/aws.py), for the tests.

moto cannot run a Lambda without Docker, and its RotateSecret without one does not behave like AWS (see
/work/shared/TEST-SERVERS.md): it makes the new, empty version AWSCURRENT at once. So the tests do what AWS does:
`start_rotation` creates the AWSPENDING version without a value (as RotateSecret does before it invokes the
function), and `rotate` invokes the function itself, step by step, with the events of tests/lambda/events/*.json.
Both reach into moto's in-process backend (the server runs in this process), only where its HTTP API cannot say
what AWS's would; every other call goes over HTTP through boto3.

`aws_put_semantics` corrects one more difference: moto's PutSecretValue overwrites the value of a version that
carries AWSPENDING, where AWS refuses another value for a version that already holds one
(ResourceExistsException, "you can't modify an existing version; you can only create new ones").
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

EVENTS = Path(__file__).resolve().parent / "events"
STEPS = ("createSecret", "setSecret", "testSecret", "finishSecret")
ACCOUNT = "123456789012"
REGION = "us-east-1"


def sample_event(step: str, secret_id: str, token: str, *, variant: str = "") -> dict[str, Any]:
    """The event of tests/lambda/events/<step>[-variant].json with this secret and token."""
    event: dict[str, Any] = json.loads((EVENTS / f"{step}{'-' + variant if variant else ''}.json").read_text())
    event["SecretId"] = secret_id
    event["ClientRequestToken"] = token
    return event


def _backend() -> Any:
    from moto.secretsmanager.models import secretsmanager_backends

    return secretsmanager_backends[ACCOUNT][REGION]


@contextmanager
def aws_put_semantics() -> Iterator[None]:
    """While active, moto's PutSecretValue refuses another value for a version that already holds one, as AWS."""
    from moto.secretsmanager.exceptions import ResourceExistsException
    from moto.secretsmanager.models import SecretsManagerBackend

    original = SecretsManagerBackend.put_secret_value

    def put_secret_value(self: Any, secret_id: str, secret_string: str, secret_binary: str,
                         client_request_token: str, version_stages: list[str]) -> Any:  # fmt: skip
        secret = self.secrets.get(secret_id)
        version = secret.versions.get(client_request_token) if secret is not None else None
        if version is not None and "secret_string" in version and version["secret_string"] != secret_string:
            raise ResourceExistsException(
                f"You can't modify an existing version, you can only create a new version. "
                f"VersionId: {client_request_token}"
            )
        return original(self, secret_id, secret_string, secret_binary, client_request_token, version_stages)

    SecretsManagerBackend.put_secret_value = put_secret_value  # type: ignore[method-assign]
    try:
        yield
    finally:
        SecretsManagerBackend.put_secret_value = original  # type: ignore[method-assign]


class SecretsManagerService:
    """Seeds secrets and plays Secrets Manager's part of a rotation against moto's server."""

    def __init__(self, client: Any):
        self.client = client

    def create(self, value: Mapping[str, Any], *, name: str | None = None, tags: Mapping[str, str] | None = None,
               rotation: bool = True) -> str:  # fmt: skip
        """A new secret holding `value` as AWSCURRENT (rotation enabled unless told otherwise); its ARN."""
        params: dict[str, Any] = {"Name": name or f"lambda-test/{uuid.uuid4().hex[:12]}",
                                  "SecretString": json.dumps(dict(value))}  # fmt: skip
        if tags:
            params["Tags"] = [{"Key": k, "Value": v} for k, v in tags.items()]
        arn = str(self.client.create_secret(**params)["ARN"])
        if rotation:
            self.set_rotation(arn, True)
        return arn

    def set_rotation(self, secret_id: str, enabled: bool) -> None:
        """RotationEnabled as DescribeSecret reports it. On AWS that is RotateSecret with a rotation function (and
        CancelRotateSecret to turn it off); moto's RotateSecret without a function also rotates the value, so
        the flag is set in its backend."""
        secret = _backend().secrets[secret_id]
        secret.rotation_requested = True
        secret.rotation_enabled = enabled
        secret.auto_rotate_after_days = 30 if enabled else 0

    def start_rotation(self, secret_id: str, token: str | None = None) -> str:
        """What RotateSecret does before it invokes the function: a new version `token` with AWSPENDING and no value.
        Refused, as on AWS, while AWSPENDING is on a version other than AWSCURRENT's (a rotation in progress)."""
        token = token or str(uuid.uuid4())
        secret = _backend().secrets[secret_id]
        for version in secret.versions.values():
            stages = version["version_stages"]
            if "AWSPENDING" in stages and "AWSCURRENT" not in stages:
                raise RuntimeError("previous rotation request is still in progress (AWSPENDING on another version)")
        for version in secret.versions.values():
            if "AWSPENDING" in version["version_stages"]:
                version["version_stages"].remove("AWSPENDING")
        secret.versions[token] = {"createdate": 0, "version_id": token, "version_stages": ["AWSPENDING"]}
        return token

    def rotate(self, handler: Callable[[dict[str, Any], Any], Any], secret_id: str, *, token: str | None = None,
               steps: tuple[str, ...] = STEPS, twice: bool = False, start: bool = True) -> str:  # fmt: skip
        """A whole rotation as Secrets Manager runs it: RotateSecret's AWSPENDING version, then each step (each
        twice in a row with `twice`, as Secrets Manager may when an invocation's answer is lost)."""
        token = self.start_rotation(secret_id, token) if start else (token or "")
        for step in steps:
            for _ in range(2 if twice else 1):
                handler(sample_event(step, secret_id, token), None)
        return token

    # -- reading back (over HTTP) --------------------------------------------------------------------------------

    def labels(self, secret_id: str) -> dict[str, set[str]]:
        described = self.client.describe_secret(SecretId=secret_id)
        return {vid: set(stages) for vid, stages in described.get("VersionIdsToStages", {}).items()}

    def holder(self, secret_id: str, label: str) -> str | None:
        return next((vid for vid, stages in self.labels(secret_id).items() if label in stages), None)

    def value(self, secret_id: str, stage: str = "AWSCURRENT") -> dict[str, Any]:
        text = self.client.get_secret_value(SecretId=secret_id, VersionStage=stage)["SecretString"]
        return dict(json.loads(text))

    def version_value(self, secret_id: str, version_id: str) -> dict[str, Any]:
        text = self.client.get_secret_value(SecretId=secret_id, VersionId=version_id)["SecretString"]
        return dict(json.loads(text))

    def snapshot(self, secret_id: str) -> dict[str, Any]:
        """Labels and values of every version that has one: to prove a refused step changed nothing."""
        secret = _backend().secrets[secret_id]
        return copy.deepcopy({vid: (sorted(v["version_stages"]), v.get("secret_string"))
                              for vid, v in secret.versions.items()})  # fmt: skip


class LambdaContext:
    """The part of Lambda's context object the handler reads."""

    function_name = "credential-rotator"
    aws_request_id = "test-request"

    def __init__(self, remaining_ms: int = 30_000):
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms
