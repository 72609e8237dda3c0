"""The one place where botocore's exceptions become rotator errors, for every AWS component.

`aws_problem` sorts what a call raised into one kind, from AWS's error code and HTTP status (or, when AWS never
answered, from botocore's exception class); each component then words that kind in its own terms: the store
(`store_error`), the notifiers (`notify_error`), the aws-iam-key plugin (`iam_error`).

| AWS says | kind | the store raises |
|---|---|---|
| throttling, a server error, HTTP 429 or 5xx; connection refused or reset, a timeout | transient | TransientError |
| AccessDenied(Exception), AuthorizationError | access-denied | StoreError naming the action to grant |
| ResourceNotFoundException, NoSuchEntity, NotFound, ... | not-found | SecretNotFound |
| a bad or expired signature, an unknown key | bad-credentials | StoreError |
| a KMS key that refuses (DecryptionFailure, KMSDisabled, ...) | kms | StoreError: grant kms:Decrypt |
| TLS verification of the endpoint failed | tls | StoreError (never retried: a bad CA does not fix itself) |
| no credentials; no region | no-credentials; no-region | StoreError; ConfigError |
| botocore refused to send the request (ParamValidationError) | rejected | StoreError naming only the action |
| any other code | other | StoreError (VersionConflict for the caller's conflict codes) |

A notifier raises NotifyError where the store raises StoreError, SecretNotFound or ConfigError; the aws-iam-key
plugin a StepError (and nothing for NoSuchEntity where the missing key is the goal). Transient stays transient.

Messages never carry a secret value: they are built from codes, actions and resource names, AWS's own messages do
not echo SecretString (and are scrubbed all the same), and botocore's parameter validation errors (which can
quote a parameter) are replaced by a message naming only the action.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Final

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
    NotifyError,
    RotationContext,
    RotatorError,
    SecretNotFound,
    StepError,
    StoreError,
    TransientError,
    VersionConflict,
    scrub,
)

# Error codes AWS services use for "slow down" or for their own failure; with HTTP 429 and 5xx, the transient ones.
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
        "KMSThrottling",  # SNS: the topic's KMS key is throttled
    }
)
SERVER_ERROR_CODES = frozenset(
    {
        "InternalServiceError",
        "InternalServiceErrorException",
        "InternalFailure",
        "InternalError",
        "InternalException",
        "ServiceUnavailable",
        "ServerException",
    }
)
TRANSIENT_CODES = THROTTLING_CODES | SERVER_ERROR_CODES
ACCESS_DENIED_CODES = frozenset({"AccessDenied", "AccessDeniedException", "AuthorizationError"})
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
# The target (secret, topic, bus, cluster, service, IAM user or key) does not exist.
NOT_FOUND_CODES = frozenset(
    {
        "ResourceNotFoundException",
        "NoSuchEntity",
        "NotFound",
        "NotFoundException",
        "ClusterNotFoundException",
        "ServiceNotFoundException",
        "ServiceNotActiveException",
    }
)
# A KMS key that refuses for good (its state or its policy): Secrets Manager's DecryptionFailure, SNS's KMS*.
KMS_CODES = frozenset(
    {"DecryptionFailure", "KMSAccessDenied", "KMSDisabled", "KMSInvalidState", "KMSNotFound", "KMSOptInRequired"}
)

NO_CREDENTIALS_FIX = (
    "set `profile` or `role_arn`, or give the service an instance/task role or AWS_* environment variables"
)

TRANSIENT: Final = "transient"
ACCESS_DENIED: Final = "access-denied"
NOT_FOUND: Final = "not-found"
BAD_CREDENTIALS: Final = "bad-credentials"
KMS: Final = "kms"
TLS: Final = "tls"
NO_CREDENTIALS: Final = "no-credentials"
NO_REGION: Final = "no-region"
REJECTED: Final = "rejected"
OTHER: Final = "other"


@dataclass(frozen=True)
class AwsProblem:
    """What an AWS call raised, sorted: its kind, AWS's error code and HTTP status (when AWS answered), AWS's
    message (scrubbed), and the exception class's name."""

    kind: str
    code: str = ""
    status: int = 0
    message: str = ""
    exception: str = ""

    @property
    def label(self) -> str:
        """The code, else the status, else the exception's class: what a message names the failure by."""
        return self.code or (str(self.status) if self.status else self.exception)

    def error(
        self,
        where: str,
        refused: Callable[[str], RotatorError],
        *,
        retried: str = "retried",
        tls_fix: str = "check endpoint_url",
        with_message: bool = True,
    ) -> RotatorError:
        """The error in the words every component shares, for `where` (the component, the action, the resource): a
        TransientError for what may pass, else `refused(text)`. A component words the kinds particular to it
        (access denied, not found, KMS, no region) before asking this."""
        if self.kind == TRANSIENT:
            if self.code or self.status:
                return TransientError(f"{where} failed for now ({self.label}); {retried}")
            return TransientError(f"{where}: cannot reach AWS ({self.exception}); {retried}")
        if self.kind == BAD_CREDENTIALS:
            text = f"{where}: AWS rejected the credentials ({self.code}); check the profile, role or environment"
        elif self.kind == TLS:
            text = f"{where}: TLS verification failed for the endpoint; {tls_fix}"
        elif self.kind == NO_CREDENTIALS:
            text = f"{where}: no usable AWS credentials ({self.exception}); {NO_CREDENTIALS_FIX}"
        elif self.kind == REJECTED:
            text = f"{where} failed: {self.exception} (request rejected before it was sent)"
        elif self.message and with_message:
            text = f"{where} failed: {self.label}: {self.message}"
        else:
            text = f"{where} failed: {self.label}"
        return refused(text)


def aws_problem(exc: BaseException) -> AwsProblem:
    """Sort a botocore exception (or an OSError from beneath it) into one kind (see the module docstring)."""
    name = type(exc).__name__
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        message = scrub(str(error.get("Message", "")).strip())
        if code in TRANSIENT_CODES or status >= 500 or status == 429:
            kind = TRANSIENT
        elif code in ACCESS_DENIED_CODES:
            kind = ACCESS_DENIED
        elif code in NOT_FOUND_CODES:
            kind = NOT_FOUND
        elif code in KMS_CODES:
            kind = KMS
        elif code in BAD_CREDENTIALS_CODES:
            kind = BAD_CREDENTIALS
        else:
            kind = OTHER
        return AwsProblem(kind, code, status, message, name)
    if isinstance(exc, SSLError):  # before the connection errors, of which it is one: a bad CA never fixes itself
        return AwsProblem(TLS, exception=name)
    if isinstance(exc, BotoConnectionError | HTTPClientError | OSError):
        return AwsProblem(TRANSIENT, exception=name)
    if isinstance(exc, NoCredentialsError | PartialCredentialsError | CredentialRetrievalError):
        return AwsProblem(NO_CREDENTIALS, exception=name)
    if isinstance(exc, NoRegionError):
        return AwsProblem(NO_REGION, exception=name)
    return AwsProblem(REJECTED, exception=name)  # e.g. ParamValidationError: its text may quote a parameter


@contextmanager
def aws_call(mapper: Callable[[BaseException], RotatorError]) -> Iterator[None]:
    """Run one AWS call; re-raise whatever botocore raises as `mapper` words it. A RotatorError raised inside (an
    assume-role refresh) is already mapped."""
    try:
        yield
    except RotatorError:
        raise
    except (ClientError, BotoCoreError) as exc:
        raise mapper(exc) from None


# -- the store ---------------------------------------------------------------------------------------------------


def store_error(
    exc: BaseException,
    *,
    action: str,
    secret_id: str,
    store: str = "aws-secretsmanager",
    conflict_codes: Collection[str] = (),
) -> RotatorError:
    """The store's error for what `action` (e.g. "secretsmanager:PutSecretValue") on `secret_id` raised."""
    if isinstance(exc, RotatorError):
        return exc
    where = f"{store}: {action} on secret {secret_id!r}"
    problem = aws_problem(exc)
    if problem.kind != TRANSIENT and problem.code in conflict_codes:
        return VersionConflict(f"{where}: conflict: {problem.code}: {problem.message}")
    if problem.kind == ACCESS_DENIED:
        return StoreError(
            f"{store}: access denied: the daemon's AWS identity may not call {action} on secret {secret_id!r}. "
            f"Grant {action} on that secret's ARN (see config/iam-policy-daemon.json)"
        )
    if problem.kind == NOT_FOUND:
        return SecretNotFound(
            f"{store}: no secret named {secret_id!r} (check the name and region, or seed it with `rotator store put`)"
        )
    if problem.kind == KMS:
        return StoreError(
            f"{where}: the secret's KMS key refused to decrypt; grant kms:Decrypt on the key to the daemon's "
            "identity (with kms:ViaService = secretsmanager)"
        )
    if problem.kind == NO_REGION:
        return ConfigError(f"{where}: no AWS region", fix='set region = "..." in the store\'s table, or AWS_REGION')
    return problem.error(
        where, StoreError, retried="it will be retried", tls_fix="check endpoint_url and the CA bundle"
    )


# -- the notifiers -----------------------------------------------------------------------------------------------


def notify_error(exc: BaseException, *, what: str, action: str, resource: str) -> RotatorError:
    """A notifier's error for what a boto3 call of `action` (e.g. "sns:Publish") on `resource` raised."""
    if isinstance(exc, RotatorError):
        return exc
    where = f"{what}: {action} on {resource}"
    problem = aws_problem(exc)
    if problem.kind == ACCESS_DENIED:
        return NotifyError(f"{where}: access denied; grant {action} on {resource} to the rotator's AWS identity")
    if problem.kind == NOT_FOUND:
        return NotifyError(f"{where}: it does not exist ({problem.code}); check the name, the account and the region")
    if problem.kind == KMS:
        return NotifyError(
            f"{where}: the topic's KMS key refused ({problem.code}); grant kms:GenerateDataKey and kms:Decrypt on it"
        )
    if problem.kind == NO_REGION:
        return NotifyError(f'{where}: no AWS region; set region = "..." in the notifier\'s table, or AWS_REGION')
    return problem.error(where, NotifyError)


def notifier_call(*, what: str, action: str, resource: str) -> AbstractContextManager[None]:
    """A notifier's AWS call of `action` on `resource`, its errors worded by `notify_error`."""
    return aws_call(lambda exc: notify_error(exc, what=what, action=action, resource=resource))


# -- the aws-iam-key plugin --------------------------------------------------------------------------------------


def iam_error(ctx: RotationContext, step: str, action: str, user: str, exc: BaseException) -> RotatorError:
    """The aws-iam-key plugin's error for what `action` ("iam:CreateAccessKey", "sts:GetCallerIdentity") for IAM
    user `user` raised, in `step` of `ctx`'s plan."""
    if isinstance(exc, RotatorError):
        return exc
    head = f"plan {ctx.plan_id}: {step}: {action} for IAM user {user!r}"
    problem = aws_problem(exc)
    if problem.kind == ACCESS_DENIED:
        fix = (
            f"grant {action} on arn:aws:iam::<account>:user/{user} to the rotator's identity (see the docstring of "
            "rotator_plugins.rotation.aws_iam_key)"
        )
        return StepError(f"{head}: access denied\n  fix: {fix}", plan_id=ctx.plan_id, step=step)
    if problem.code == "LimitExceeded":
        return StepError(
            f"{head}: the user already has the maximum number of access keys\n  fix: delete the key that is "
            "neither the store's CURRENT nor PENDING (aws iam delete-access-key), then rotate again",
            plan_id=ctx.plan_id,
            step=step,
        )
    if problem.code == "NoSuchEntity":
        return StepError(
            f"{head}: no such user or key\n  fix: check UserName in the secret", plan_id=ctx.plan_id, step=step
        )
    # Texts are built from codes, never from request parameters: AWS's message is left out.
    return problem.error(head, lambda text: StepError(text, plan_id=ctx.plan_id, step=step), with_message=False)
