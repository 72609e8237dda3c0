"""Where and as whom a component calls AWS: the connection options every AWS component shares, and the one builder
of boto3 sessions and clients from them (the aws-secretsmanager store, the sns/eventbridge/ecs notifiers and the
aws-iam-key plugin all use it).

A component's options model extends `AwsConnectionOptions` with its own fields. The client is built from a
profile (or the default credential chain), then, with `role_arn`, from credentials that sts:AssumeRole returns and
botocore refreshes before they expire. `configured_client` is what a component calls at load: a problem of the
config (no region, a profile that does not exist) becomes a ConfigError naming the component's table.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import boto3
import botocore.session
from botocore.config import Config
from botocore.credentials import DeferredRefreshableCredentials
from botocore.exceptions import BotoCoreError, ClientError
from msgspec import Meta
from rotator_plugins.aws.errors import TRANSIENT, aws_problem

from rotator import ComponentSetup, ConfigError, NotifyError, Options, RotatorError, StoreError, TransientError


class AwsConnectionOptions(Options):
    """region, endpoint_url, profile, role_arn (with role_session_name, external_id, sts_endpoint_url), and the
    client's max_attempts, connect_timeout and read_timeout."""

    # ASCII classes, not \d or \w: IAM means ASCII (and a Unicode class is slower to compile on the cold path).
    region: Annotated[str, Meta(pattern=r"^[a-z]{2}(-[a-z]+)+-[0-9]+\Z")] | None = None
    endpoint_url: Annotated[str, Meta(pattern=r"^https?://")] | None = None
    profile: str | None = None
    role_arn: Annotated[str, Meta(pattern=r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/.+\Z")] | None = None
    role_session_name: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_+=,.@-]{2,64}\Z")] = "credential-rotator"
    external_id: str | None = None
    sts_endpoint_url: Annotated[str, Meta(pattern=r"^https?://")] | None = None
    max_attempts: Annotated[int, Meta(ge=1, le=10)] = 3
    connect_timeout: Annotated[float, Meta(gt=0)] = 5.0
    read_timeout: Annotated[float, Meta(gt=0)] = 20.0


def client_config(opts: AwsConnectionOptions) -> Config:
    """botocore's standard retries (max_attempts), the timeouts, and the rotator named in the User-Agent."""
    return Config(
        retries={"mode": "standard", "max_attempts": opts.max_attempts},
        connect_timeout=opts.connect_timeout,
        read_timeout=opts.read_timeout,
        user_agent_extra="credential-rotator",
    )


def assumed_role_session(
    base: boto3.Session,
    opts: AwsConnectionOptions,
    region: str | None,
    *,
    component: str,
    refused: type[RotatorError] = StoreError,
) -> boto3.Session:
    """A session whose credentials come from sts:AssumeRole (signed by `base`) and are refreshed by botocore
    before they expire. A refused AssumeRole raises `refused` (the caller's kind: StoreError for the store,
    StepError for a plugin, NotifyError for a notifier) naming `component` and the role; an unreachable STS is a
    TransientError."""
    role_arn = opts.role_arn or ""

    def refresh() -> dict[str, str]:
        sts = base.client("sts", region_name=region, endpoint_url=opts.sts_endpoint_url, config=client_config(opts))
        params: dict[str, Any] = {"RoleArn": role_arn, "RoleSessionName": opts.role_session_name}
        if opts.external_id:
            params["ExternalId"] = opts.external_id
        try:
            credentials = sts.assume_role(**params)["Credentials"]
        except (ClientError, BotoCoreError) as exc:
            problem = aws_problem(exc)
            if problem.kind == TRANSIENT:
                raise TransientError(
                    f"{component}: sts:AssumeRole on {role_arn} failed for now; it will be retried"
                ) from exc
            raise refused(
                f"{component}: cannot assume role {role_arn} ({problem.code or type(exc).__name__}); the base "
                "identity needs sts:AssumeRole on it and the role's trust policy must allow that identity"
            ) from None
        expiry = credentials["Expiration"]
        return {
            "access_key": credentials["AccessKeyId"],
            "secret_key": credentials["SecretAccessKey"],
            "token": credentials["SessionToken"],
            "expiry_time": expiry.isoformat() if isinstance(expiry, datetime) else str(expiry),
        }

    core = botocore.session.get_session()
    # The documented way to give a session refreshable credentials that are not in a profile: botocore has no
    # public setter for them.
    core._credentials = DeferredRefreshableCredentials(refresh_using=refresh, method="sts-assume-role")
    if region or base.region_name:
        core.set_config_variable("region", region or base.region_name)
    return boto3.Session(botocore_session=core)


def aws_client(
    service: str,
    opts: AwsConnectionOptions,
    *,
    component: str,
    refused: type[RotatorError] = StoreError,
    region: str | None = None,
) -> Any:
    """The boto3 client for `service` the options describe: profile, then the role to assume, region (`region`
        overrides opts.region: IAM's plugin defaults it), endpoint_url. `component` and `refused` name the caller in a
    refused AssumeRole (see assumed_role_session). botocore's BotoCoreError (no region, unknown
        profile) is the caller's to turn into a ConfigError naming its table."""
    region = region or opts.region
    session = boto3.Session(profile_name=opts.profile, region_name=region)
    if opts.role_arn:
        session = assumed_role_session(session, opts, region, component=component, refused=refused)
    return session.client(service, endpoint_url=opts.endpoint_url, config=client_config(opts))


def configured_client(
    service: str,
    opts: AwsConnectionOptions,
    *,
    component: str,
    key: str,
    refused: type[RotatorError] = StoreError,
    region: str | None = None,
) -> Any:
    """`aws_client`, with botocore's complaints about the config (no region, a profile that does not exist) as a
    ConfigError naming the component's table `key` ("stores.aws", "notifiers.ops")."""
    try:
        return aws_client(service, opts, component=component, refused=refused, region=region)
    except BotoCoreError as exc:
        raise ConfigError(
            f"cannot make an AWS {service} client: {type(exc).__name__}",
            key=key,
            fix='set region = "..." (or AWS_REGION), and a profile that exists in ~/.aws/config',
        ) from None


def notifier_client(service: str, opts: AwsConnectionOptions, setup: ComponentSetup) -> Any:
    """The boto3 client of a notifier (sns, eventbridge, ecs) named `setup.name`: a refused AssumeRole is a
    NotifyError, a problem of the config a ConfigError naming its table."""
    name = f"notifiers.{setup.name}"
    return configured_client(service, opts, component=name, key=name, refused=NotifyError)
