"""The one place where AWS errors (botocore) become rotator errors.

Every AWS call a store makes goes through `aws_errors(...)`, so the mapping is the same everywhere:

| AWS says | rotator raises | the engine |
|---|---|---|
| throttling, any HTTP 5xx, connection refused/reset, timeouts | TransientError | retries within the deadline |
| AccessDenied(Exception) | StoreError naming the missing action and the secret | fails the step, rolls back |
| ResourceNotFoundException | SecretNotFound naming the secret | as StoreError |
| a code the caller lists as a conflict (ResourceExists, a label that moved) | VersionConflict | as StoreError |
| anything else | StoreError with AWS's code and message | as StoreError |

What AWS never answered (TLS, connection, no credentials or region) is mapped by `map_unanswered_aws_call`, which
the AWS notifiers share with their own error class and wording.

Messages never carry a secret value: AWS's own error messages do not echo SecretString, and botocore's parameter
validation errors (which can quote a parameter) are replaced by a message naming only the action.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from contextlib import contextmanager
from typing import Any

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    CredentialRetrievalError,
    HTTPClientError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    SSLError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from rotator import (
    ConfigError,
    RotatorError,
    SecretNotFound,
    StoreError,
    TransientError,
    VersionConflict,
)

# Error codes AWS services use for "slow down"; with HTTP 5xx, these are the transient ones.
THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "ProvisionedThroughputExceededException",
        "SlowDown",
        "BandwidthLimitExceeded",
        "PriorRequestNotComplete",
        "EC2ThrottledException",
    }
)
SERVER_ERROR_CODES = frozenset(
    {"InternalServiceError", "InternalServiceErrorException", "InternalFailure", "InternalError", "ServiceUnavailable"}
)
ACCESS_DENIED_CODES = frozenset({"AccessDenied", "AccessDeniedException"})
BAD_CREDENTIALS_CODES = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "ExpiredTokenException",
        "RequestExpired",
    }
)


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def http_status(exc: ClientError) -> int:
    status: Any = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return int(status or 0)


def map_aws_error(
    exc: BaseException,
    *,
    action: str,
    secret_id: str,
    store: str = "aws-secretsmanager",
    conflict_codes: Collection[str] = (),
) -> RotatorError:
    """The rotator error for a botocore exception raised by `action` (e.g. "secretsmanager:PutSecretValue")."""
    where = f"{store}: {action} on secret {secret_id!r}"
    if isinstance(exc, RotatorError):
        return exc  # raised by our own code inside the call (e.g. an assume-role refresh): already mapped
    if isinstance(exc, ClientError):
        code, status = error_code(exc), http_status(exc)
        message = str(exc.response.get("Error", {}).get("Message", "")).strip()
        if code in THROTTLING_CODES or code in SERVER_ERROR_CODES or status >= 500 or status == 429:
            return TransientError(f"{where} failed for now ({code or status}); it will be retried")
        if code in ACCESS_DENIED_CODES:
            return StoreError(
                f"{store}: access denied: the daemon's AWS identity may not call {action} on secret {secret_id!r}. "
                f"Grant {action} on that secret's ARN (see config/iam-policy-daemon.json)"
            )
        if code == "ResourceNotFoundException":
            return SecretNotFound(
                f"{store}: no secret named {secret_id!r} "
                "(check the name and region, or seed it with `rotator store put`)"
            )
        if code in conflict_codes:
            return VersionConflict(f"{where}: conflict: {code}: {message}")
        if code == "DecryptionFailure":
            return StoreError(
                f"{where}: the secret's KMS key refused to decrypt; grant kms:Decrypt on the key to the daemon's "
                f"identity (with kms:ViaService = secretsmanager)"
            )
        if code in BAD_CREDENTIALS_CODES:
            return StoreError(f"{where}: AWS rejected the credentials ({code}); check the profile, role or environment")
        return StoreError(f"{where} failed: {code or status}: {message}")
    return map_unanswered_aws_call(
        exc,
        where=where,
        error=StoreError,
        retried="it will be retried",
        tls_fix="check endpoint_url and the CA bundle",
        no_region=ConfigError(f"{where}: no AWS region", fix='set region = "..." in the store\'s table, or AWS_REGION'),
    )


def map_unanswered_aws_call(
    exc: BaseException,
    *,
    where: str,
    error: type[RotatorError],
    retried: str,
    tls_fix: str,
    no_region: RotatorError,
) -> RotatorError:
    """The rotator error for a botocore exception other than ClientError: AWS never answered the call (TLS,
    connection, missing credentials or region, a request botocore refused to send). Shared by the store and the
    AWS notifiers; each passes its error class for what will not fix itself, its wording of "retried", the fix for
    a TLS failure and its error for a missing region. `where` names the component, the action and the resource."""
    if isinstance(exc, SSLError):
        return error(f"{where}: TLS verification failed for the endpoint; {tls_fix}")
    if isinstance(exc, BotoConnectionError | HTTPClientError):
        return TransientError(f"{where}: cannot reach AWS ({type(exc).__name__}); {retried}")
    if isinstance(exc, NoCredentialsError | PartialCredentialsError | CredentialRetrievalError):
        return error(
            f"{where}: no usable AWS credentials ({type(exc).__name__}); set `profile` or `role_arn`, "
            "or give the service an instance/task role or AWS_* environment variables"
        )
    if isinstance(exc, NoRegionError):
        return no_region
    # e.g. ParamValidationError: its text may quote a parameter value, so it is never shown.
    return error(f"{where} failed: {type(exc).__name__} (request rejected before it was sent)")


@contextmanager
def aws_errors(
    *, action: str, secret_id: str, store: str = "aws-secretsmanager", conflict_codes: Collection[str] = ()
) -> Iterator[None]:
    """Run one AWS call; re-raise whatever it raises as the matching rotator error."""
    try:
        yield
    except RotatorError:
        raise
    except ClientError as exc:
        raise map_aws_error(
            exc, action=action, secret_id=secret_id, store=store, conflict_codes=conflict_codes
        ) from exc
    except (BotoConnectionError, HTTPClientError) as exc:
        mapped = map_aws_error(exc, action=action, secret_id=secret_id, store=store)
        raise mapped from exc
    except BotoCoreError as exc:
        raise map_aws_error(exc, action=action, secret_id=secret_id, store=store) from None
