"""The `aws-secretsmanager` store: AWS Secrets Manager, with its own staging labels.

- CURRENT, PENDING, PREVIOUS are AWSCURRENT, AWSPENDING, AWSPREVIOUS. A consumer's plain GetSecretValue reads
  AWSCURRENT, so it never sees PENDING (invariant 3).
- The version id of a rotated version is the engine's run id (32 hex characters), used as the ClientRequestToken.
  Writing PENDING twice with the same value is a no-op; with a different value it is a VersionConflict.
- promote is one UpdateSecretVersionStage moving AWSCURRENT (AWS moves AWSPREVIOUS onto the old version itself),
  then AWSPENDING is taken off the new version, so the secret is ready for the next rotation (AWS's RotateSecret
  included). A PENDING label left on the AWSCURRENT version (a crash between those two calls, or another rotator's
  finished rotation) is not a pending version: `get(PENDING)` reports none.
- The value is the JSON object in SecretString (AWS's rotation-sample shape). Binary secrets are refused.
- Every method's docstring names the AWS actions it calls; config/iam-policy-daemon.json is read off them.
- Errors are mapped in one place, rotator_plugins.aws.errors.
- The rotation function (lambda/) uses four narrower calls, one API call each: describe_rotation, get_version,
  put_version, move_current (see rotator.lambda_adapter).

Options (the store's table in the config): region, endpoint_url, profile, role_arn (assumed through STS, refreshed
before it expires), role_session_name, external_id, sts_endpoint_url, kms_key_id (used when `rotator store put`
creates a secret), max_attempts, connect_timeout, read_timeout; all but kms_key_id are the AWS connection options
every AWS component shares (rotator_plugins.aws.session, which also builds the client). Tests and the Lambda inject
a ready client with the keyword `client=`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rotator_plugins.aws.errors import aws_call, store_error
from rotator_plugins.aws.session import AwsConnectionOptions, configured_client

from rotator import (
    ComponentSetup,
    Credential,
    SecretNotFound,
    Stage,
    StoreError,
    VersionConflict,
    parse_options,
)

STORE = "aws-secretsmanager"
LABELS = {Stage.CURRENT: "AWSCURRENT", Stage.PENDING: "AWSPENDING", Stage.PREVIOUS: "AWSPREVIOUS"}
STAGES = {label: stage for stage, label in LABELS.items()}
CURRENT, PENDING, PREVIOUS = LABELS[Stage.CURRENT], LABELS[Stage.PENDING], LABELS[Stage.PREVIOUS]
# Boto3 method per action, so that docstrings, the IAM policy and the call sites use one vocabulary.
_METHODS = {
    "GetSecretValue": "get_secret_value",
    "DescribeSecret": "describe_secret",
    "PutSecretValue": "put_secret_value",
    "UpdateSecretVersionStage": "update_secret_version_stage",
    "CreateSecret": "create_secret",
}


class AwsStoreOptions(AwsConnectionOptions):
    """The store's table: the AWS connection options, and the KMS key `rotator store put` creates secrets with."""

    kms_key_id: str | None = None


class AwsSecretsManagerStore:
    """Type `aws-secretsmanager`: secrets in AWS Secrets Manager (see the module docstring)."""

    def __init__(
        self,
        options: Mapping[str, Any] | None = None,
        setup: ComponentSetup | None = None,
        *,
        client: Any = None,
    ):
        self.options = parse_options(AwsStoreOptions, options)
        self.setup = setup or ComponentSetup(name=STORE, config_dir=Path.cwd(), state_dir=Path.cwd() / "state")
        self._client = client
        self._owns_client = client is None
        if client is None:
            self._client = configured_client(
                "secretsmanager", self.options, component=STORE, key=f"stores.{self.setup.name}"
            )

    @property
    def client(self) -> Any:
        """The boto3 Secrets Manager client (for event hooks: `store.client.meta.events.register(...)`)."""
        return self._client

    def close(self) -> None:
        """For the daemon's reload and shutdown: the client's connections are closed (an injected one is left)."""
        if self._owns_client:
            self._client.close()

    # -- plumbing ---------------------------------------------------------------------------------------------

    def _call(self, action: str, secret_id: str, *, conflict: tuple[str, ...] = (), **params: Any) -> dict[str, Any]:
        method = getattr(self._client, _METHODS[action])
        with aws_call(
            lambda exc: store_error(
                exc, action=f"secretsmanager:{action}", secret_id=secret_id, store=STORE, conflict_codes=conflict
            )
        ):
            result: dict[str, Any] = method(**params)
        return result

    @staticmethod
    def _value(secret_id: str, response: Mapping[str, Any]) -> dict[str, Any]:
        text = response.get("SecretString")
        if text is None:
            raise StoreError(f"{STORE}: secret {secret_id!r} holds binary data; this store keeps JSON objects only")
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        if not isinstance(value, dict):
            # The message says what is wrong, never what the string holds.
            raise StoreError(f"{STORE}: secret {secret_id!r} is not a JSON object (plain text is not supported)")
        return value

    @staticmethod
    def _encode(value: Mapping[str, Any]) -> str:
        return json.dumps(dict(value))

    def _credential(self, secret_id: str, response: Mapping[str, Any]) -> Credential:
        labels = set(response.get("VersionStages") or ())
        stages = {STAGES[label] for label in labels if label in STAGES}
        if CURRENT in labels:
            stages.discard(Stage.PENDING)  # AWSPENDING on the AWSCURRENT version: a finished rotation
        return Credential(str(response["VersionId"]), self._value(secret_id, response), frozenset(stages))

    def _labels(self, secret_id: str) -> dict[str, set[str]]:
        """DescribeSecret: version id -> its staging labels. No secret value is read."""
        described = self._call("DescribeSecret", secret_id, SecretId=secret_id)
        return {vid: set(labels) for vid, labels in (described.get("VersionIdsToStages") or {}).items()}

    @staticmethod
    def _holder(labels: Mapping[str, set[str]], label: str) -> str | None:
        return next((vid for vid, stages in labels.items() if label in stages), None)

    def _get_version(self, secret_id: str, version_id: str) -> dict[str, Any] | None:
        try:
            return self._call("GetSecretValue", secret_id, SecretId=secret_id, VersionId=version_id)
        except SecretNotFound:
            return None  # no such version (or no such secret: the write that follows says which)

    # -- reads ------------------------------------------------------------------------------------------------

    def get(self, secret_id: str, stage: Stage = Stage.CURRENT) -> Credential | None:
        """GetSecretValue(VersionStage=AWSCURRENT|AWSPENDING|AWSPREVIOUS). When no version carries the label,
        DescribeSecret tells a missing label (None) from a missing secret (SecretNotFound): AWS answers both with
        ResourceNotFoundException."""
        label = LABELS[Stage(stage)]
        try:
            response = self._call("GetSecretValue", secret_id, SecretId=secret_id, VersionStage=label)
        except SecretNotFound:
            self._labels(secret_id)  # raises SecretNotFound if the secret itself is missing
            return None
        if label == PENDING and CURRENT in (response.get("VersionStages") or ()):
            return None  # AWSPENDING left on the AWSCURRENT version: the rotation finished, nothing is pending
        return self._credential(secret_id, response)

    # -- writes -----------------------------------------------------------------------------------------------

    def put_pending(self, secret_id: str, value: Mapping[str, Any], version_id: str) -> Credential:
        """GetSecretValue(VersionId=version_id) first, then PutSecretValue(ClientRequestToken=version_id,
        VersionStages=[AWSPENDING]) if the version is new (AWS moves AWSPENDING off any other version).
        If the version exists without AWSPENDING (it was discarded), DescribeSecret and
        UpdateSecretVersionStage(AWSPENDING, MoveToVersionId=version_id) put the label back.

        Same token and same value is idempotent in AWS; same token and another value AWS refuses
        (ResourceExistsException -> VersionConflict). moto overwrites the value instead, which is why the
        version is read and compared first: the check holds on both."""
        existing = self._get_version(secret_id, version_id)
        if existing is not None:
            if self._value(secret_id, existing) != dict(value):
                raise VersionConflict(
                    f"{STORE}: version {version_id} of {secret_id!r} already holds a different value; "
                    "a version's value never changes (start a new run)"
                )
            labels = set(existing.get("VersionStages") or ())
            if PENDING in labels or CURRENT in labels:
                return self._credential(secret_id, existing)
            holder = self._holder(self._labels(secret_id), PENDING)
            params: dict[str, Any] = {"SecretId": secret_id, "VersionStage": PENDING, "MoveToVersionId": version_id}
            if holder and holder != version_id:
                params["RemoveFromVersionId"] = holder
            self._call("UpdateSecretVersionStage", secret_id, conflict=("InvalidParameterException",), **params)
            return Credential(version_id, dict(value), frozenset({Stage.PENDING}))
        self._call(
            "PutSecretValue",
            secret_id,
            conflict=("ResourceExistsException",),
            SecretId=secret_id,
            ClientRequestToken=version_id,
            SecretString=self._encode(value),
            VersionStages=[PENDING],
        )
        return Credential(version_id, dict(value), frozenset({Stage.PENDING}))

    def promote(self, secret_id: str, version_id: str) -> None:
        """DescribeSecret to read the labels; UpdateSecretVersionStage(AWSCURRENT, MoveToVersionId=version_id,
        RemoveFromVersionId=<the AWSCURRENT version>), one call, after which AWS puts AWSPREVIOUS on the old
        version itself; then UpdateSecretVersionStage(AWSPENDING, RemoveFromVersionId=version_id).

        If AWSCURRENT moved since DescribeSecret, AWS refuses the move (InvalidParameterException ->
        VersionConflict). Already CURRENT: only a leftover AWSPENDING is removed."""
        labels = self._labels(secret_id)
        mine = labels.get(version_id, set())
        if CURRENT in mine:
            if PENDING in mine:
                self._remove_pending(secret_id, version_id)
            return
        if PENDING not in mine:
            raise VersionConflict(f"{STORE}: cannot promote version {version_id} of {secret_id!r}: it is not PENDING")
        params: dict[str, Any] = {"SecretId": secret_id, "VersionStage": CURRENT, "MoveToVersionId": version_id}
        current = self._holder(labels, CURRENT)
        if current:
            params["RemoveFromVersionId"] = current
        self._call("UpdateSecretVersionStage", secret_id, conflict=("InvalidParameterException",), **params)
        self._remove_pending(secret_id, version_id)

    def _remove_pending(self, secret_id: str, version_id: str) -> None:
        self._call(
            "UpdateSecretVersionStage",
            secret_id,
            conflict=("InvalidParameterException",),
            SecretId=secret_id,
            VersionStage=PENDING,
            RemoveFromVersionId=version_id,
        )

    def unpromote(self, secret_id: str, version_id: str) -> None:
        """DescribeSecret; UpdateSecretVersionStage(AWSPENDING, MoveToVersionId=version_id) first, then
        UpdateSecretVersionStage(AWSCURRENT, MoveToVersionId=<the AWSPREVIOUS version>,
        RemoveFromVersionId=version_id); AWS then puts AWSPREVIOUS on version_id itself.

        PENDING goes back first so that a crash between the two calls leaves version_id CURRENT (and the retry
        finishes the job) rather than neither CURRENT nor PENDING. No-op unless version_id is CURRENT."""
        labels = self._labels(secret_id)
        mine = labels.get(version_id, set())
        previous = self._holder(labels, PREVIOUS)
        if CURRENT not in mine or previous is None or previous == version_id:
            return
        if PENDING not in mine:
            params: dict[str, Any] = {"SecretId": secret_id, "VersionStage": PENDING, "MoveToVersionId": version_id}
            holder = self._holder(labels, PENDING)
            if holder and holder != version_id:
                params["RemoveFromVersionId"] = holder
            self._call("UpdateSecretVersionStage", secret_id, conflict=("InvalidParameterException",), **params)
        self._call(
            "UpdateSecretVersionStage",
            secret_id,
            conflict=("InvalidParameterException",),
            SecretId=secret_id,
            VersionStage=CURRENT,
            MoveToVersionId=previous,
            RemoveFromVersionId=version_id,
        )

    def discard_pending(self, secret_id: str, version_id: str) -> None:
        """DescribeSecret; UpdateSecretVersionStage(AWSPENDING, RemoveFromVersionId=version_id) if it carries the
        label. AWS has no call to delete one version: the unlabelled version is deprecated and AWS removes it
        itself later. No-op if version_id is not PENDING."""
        labels = self._labels(secret_id)
        if PENDING in labels.get(version_id, set()):
            self._remove_pending(secret_id, version_id)

    def put_current(self, secret_id: str, value: Mapping[str, Any]) -> Credential:
        """PutSecretValue(ClientRequestToken=<new uuid>) with the default stage AWSCURRENT (AWS moves AWSPREVIOUS);
        CreateSecret(Name, SecretString, KmsKeyId) when the secret does not exist yet (`rotator store put` run
        by an operator: the daemon's policy does not need it)."""
        token = uuid.uuid4().hex
        encoded = self._encode(value)
        try:
            response = self._call(
                "PutSecretValue", secret_id, SecretId=secret_id, ClientRequestToken=token, SecretString=encoded
            )
        except SecretNotFound:
            params: dict[str, Any] = {"Name": secret_id, "ClientRequestToken": token, "SecretString": encoded}
            if self.options.kms_key_id:
                params["KmsKeyId"] = self.options.kms_key_id
            response = self._call("CreateSecret", secret_id, conflict=("ResourceExistsException",), **params)
        return Credential(str(response.get("VersionId") or token), dict(value), frozenset({Stage.CURRENT}))

    # -- the rotation function's calls (lambda/, through rotator.lambda_adapter) ----------------------------------
    # Secrets Manager drives those rotations and creates the AWSPENDING version itself when one starts, so the
    # function needs fewer and narrower calls than the engine: one API call per method, each named below.

    def describe_rotation(self, secret_id: str) -> dict[str, Any]:
        """DescribeSecret: the secret's Name, RotationEnabled (absent when rotation was never configured),
        VersionIdsToStages and Tags. No secret value is read."""
        described = self._call("DescribeSecret", secret_id, SecretId=secret_id)
        keys = ("ARN", "Name", "RotationEnabled", "VersionIdsToStages", "Tags")
        return {key: described[key] for key in keys if key in described}

    def get_version(self, secret_id: str, version_id: str) -> Credential | None:
        """GetSecretValue(VersionId=version_id): the version's value, or None when the version holds none (the
        AWSPENDING version that starts a rotation has no value until createSecret puts one) or does not exist."""
        response = self._get_version(secret_id, version_id)
        return None if response is None else self._credential(secret_id, response)

    def put_version(
        self, secret_id: str, version_id: str, value: Mapping[str, Any], *, rotation_token: str | None = None
    ) -> None:
        """PutSecretValue(ClientRequestToken=version_id, VersionStages=[AWSPENDING], RotationToken=...) without
        reading first. The same value again is a no-op; another value for a version that already holds one AWS
        refuses (ResourceExistsException -> VersionConflict): the caller keeps the stored value. RotationToken,
        when Secrets Manager passed one in the event, lets it check the caller (a role assumed across accounts)."""
        params: dict[str, Any] = {
            "SecretId": secret_id,
            "ClientRequestToken": version_id,
            "SecretString": self._encode(value),
            "VersionStages": [PENDING],
        }
        if rotation_token:
            params["RotationToken"] = rotation_token
        self._call("PutSecretValue", secret_id, conflict=("ResourceExistsException",), **params)

    def move_current(self, secret_id: str, version_id: str, from_version_id: str | None) -> None:
        """UpdateSecretVersionStage(AWSCURRENT, MoveToVersionId=version_id, RemoveFromVersionId=from_version_id):
        one call; AWS puts AWSPREVIOUS on the old version itself. AWSPENDING stays on version_id, beside AWSCURRENT,
        a legal end state of a rotation for AWS (as its sample functions leave it). If AWSCURRENT moved away from
        from_version_id meanwhile, AWS refuses (InvalidParameterException -> VersionConflict)."""
        params: dict[str, Any] = {"SecretId": secret_id, "VersionStage": CURRENT, "MoveToVersionId": version_id}
        if from_version_id:
            params["RemoveFromVersionId"] = from_version_id
        self._call("UpdateSecretVersionStage", secret_id, conflict=("InvalidParameterException",), **params)
