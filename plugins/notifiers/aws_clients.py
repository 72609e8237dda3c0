"""boto3 clients for the AWS notifiers (sns, eventbridge, ecs), and the one place their errors are mapped.

Clients are built from the connection options every AWS component shares (rotator_plugins.aws_session:
region, endpoint_url, profile, role_arn assumed through STS and refreshed before it expires); tests and embedders
inject a ready client instead (the notifier's keyword `client=`).

Errors are classified with the store's vocabulary (rotator_plugins.stores.aws_errors: throttling and server error
codes, access denied, bad credentials) and raised as notifier errors: throttling, 5xx and connection failures are
TransientError (the engine retries them); everything else is a NotifyError whose text names the AWS action and
the resource, and what to grant or fix. Texts are built from error codes, never from request parameters.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from rotator_plugins.aws_session import AwsConnectionOptions, aws_client
from rotator_plugins.stores.aws_errors import (
    ACCESS_DENIED_CODES,
    BAD_CREDENTIALS_CODES,
    SERVER_ERROR_CODES,
    THROTTLING_CODES,
    error_code,
    http_status,
    map_unanswered_aws_call,
)

from rotator import ComponentSetup, ConfigError, NotifyError, RotatorError, TransientError, scrub

# Codes that say the target (topic, bus, cluster, service) does not exist, across SNS, EventBridge and ECS.
NOT_FOUND_CODES = frozenset(
    {
        "NotFound",
        "NotFoundException",
        "ResourceNotFoundException",
        "ClusterNotFoundException",
        "ServiceNotFoundException",
        "ServiceNotActiveException",
    }
)
# SNS: the topic's KMS key is unusable (a permanent problem of the key or its policy); KMSThrottling is transient.
KMS_CODES = frozenset({"KMSAccessDenied", "KMSDisabled", "KMSInvalidState", "KMSNotFound", "KMSOptInRequired"})
TRANSIENT_CODES = THROTTLING_CODES | SERVER_ERROR_CODES | {"KMSThrottling", "ServerException", "InternalException"}


class AwsClientOptions(AwsConnectionOptions):
    """Where and as whom the notifier calls AWS (the connection options every AWS component shares); a notifier's
    options class extends this."""


def make_aws_client(service: str, opts: AwsClientOptions, setup: ComponentSetup) -> Any:
    """A boto3 client for `service` (profile, then the role to assume, region, endpoint). A problem of the
    config (no region, unknown profile) is a ConfigError naming the notifier's table."""
    try:
        return aws_client(service, opts, component=f"notifiers.{setup.name}", refused=NotifyError)
    except BotoCoreError as exc:
        raise ConfigError(
            f"cannot make an AWS {service} client: {type(exc).__name__}",
            key=f"notifiers.{setup.name}",
            fix='set region = "..." (or AWS_REGION), and a profile that exists in ~/.aws/config',
        ) from None


def aws_notify_error(exc: BaseException, *, what: str, action: str, resource: str) -> RotatorError:
    """The rotator error for what a boto3 call of `action` (e.g. "sns:Publish") on `resource` raised."""
    where = f"{what}: {action} on {resource}"
    if isinstance(exc, RotatorError):
        return exc  # raised by our own code inside the call (an assume-role refresh): already mapped
    if isinstance(exc, ClientError):
        code, status = error_code(exc), http_status(exc)
        if code in TRANSIENT_CODES or status >= 500 or status == 429:
            return TransientError(f"{where} failed for now ({code or status}); retried")
        if code in ACCESS_DENIED_CODES or code == "AuthorizationError":
            return NotifyError(f"{where}: access denied; grant {action} on {resource} to the rotator's AWS identity")
        if code in NOT_FOUND_CODES:
            return NotifyError(f"{where}: it does not exist ({code}); check the name, the account and the region")
        if code in KMS_CODES:
            return NotifyError(
                f"{where}: the topic's KMS key refused ({code}); grant kms:GenerateDataKey and kms:Decrypt on it"
            )
        if code in BAD_CREDENTIALS_CODES:
            return NotifyError(f"{where}: AWS rejected the credentials ({code}); check the profile, role or env")
        message = str(exc.response.get("Error", {}).get("Message", "")).strip()
        return NotifyError(scrub(f"{where} failed: {code or status}: {message}"))
    return map_unanswered_aws_call(
        exc,
        where=where,
        error=NotifyError,
        retried="retried",
        tls_fix="check endpoint_url",
        no_region=NotifyError(f'{where}: no AWS region; set region = "..." in the notifier\'s table, or AWS_REGION'),
    )


@contextmanager
def aws_call(*, what: str, action: str, resource: str) -> Iterator[None]:
    """Run one AWS call; re-raise whatever it raises as the matching rotator error (see aws_notify_error)."""
    try:
        yield
    except RotatorError:
        raise
    except (ClientError, BotoCoreError) as exc:
        raise aws_notify_error(exc, what=what, action=action, resource=resource) from None
