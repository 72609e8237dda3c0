"""AWS IAM access keys (type ``aws-iam-key``): a key that IAM mints, rotated with two valid keys during grace.

The secret: ``{"UserName", "AccessKeyId", "SecretAccessKey"}``. Strategy: ``single-user`` only; IAM lets a user
hold two access keys, so the old and the new key are both valid until `revoke` (there is no window).

Steps and the IAM/STS actions each calls (every method's docstring says the same; grant exactly these):

- reconcile (before create, and in rollback): ``iam:ListAccessKeys`` on the user, ``iam:DeleteAccessKey`` for each
  key that no store version knows (a key minted just before a crash kept it from the store). With
  ``delete_after`` > 0 it also deletes Inactive keys that are not CURRENT and unused for ``delete_after`` seconds
  (``iam:GetAccessKeyLastUsed``).
- create: ``iam:ListAccessKeys``; when the user already has two keys, ``iam:DeleteAccessKey`` on the one that is
  neither CURRENT nor PENDING (never CURRENT); then ``iam:CreateAccessKey``. The engine stores the returned key as
  PENDING at once.
- stage, unstage: nothing (an IAM key is valid the moment it is minted).
- test: ``sts:GetCallerIdentity`` signed with the new key, retried until ``propagation_timeout`` (IAM is
  eventually consistent: a new key may be refused for some seconds).
- revoke: ``iam:UpdateAccessKey`` (Status=Inactive) on PREVIOUS's key, then ``iam:DeleteAccessKey`` (at once when
  ``delete_after`` is 0, else by a later reconcile). CURRENT's key is never touched.
- discard: ``iam:DeleteAccessKey`` on PENDING's key.
- last_used, in_use: ``iam:GetAccessKeyLastUsed``: when a key was last used; in_use asks it of PREVIOUS before
  revoke (used after promote? then the engine waits, up to the plan's revoke_deadline).

The IAM user must belong to this plan alone: reconcile deletes every key of the user that the plan's store does
not hold, and create deletes a key beyond the store's when the user is at IAM's two-key limit.

Options (the plan's plugin table): region, endpoint_url, sts_endpoint_url, profile, role_arn (assumed through STS
for the IAM calls, with role_session_name and external_id), max_attempts, connect_timeout, read_timeout (the AWS
connection options of rotator_plugins.aws.session), propagation_timeout (seconds, default 30), delete_after
(seconds, default 0).
Errors: throttling, HTTP 5xx and connection failures are TransientError (the engine retries); AccessDenied is a
StepError naming the IAM action and the user; LimitExceeded a StepError with the fix. No message carries a secret.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, TypeVar

import boto3
from botocore.exceptions import BotoCoreError, ClientError
from msgspec import Meta
from rotator_plugins.aws.errors import aws_problem, iam_error
from rotator_plugins.aws.session import AwsConnectionOptions, aws_client, client_config
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_exponential

from rotator import (
    ComponentSetup,
    Credential,
    RotationContext,
    Stage,
    StepError,
    TestFailed,
    TransientError,
    parse_options,
)

SINGLE_USER = "single-user"
IAM_KEY_LIMIT = 2  # access keys per IAM user (a hard AWS limit)
T = TypeVar("T")


class AwsIamKeyOptions(AwsConnectionOptions):
    """The plugin's options (the plan's plugin table minus `type`): the AWS connection options every AWS component
    shares (endpoint_url is IAM's, tests: moto; sts_endpoint_url is STS's, for role_arn and for `test`'s probe, which
    falls back to endpoint_url), and the plugin's own two below."""

    propagation_timeout: Annotated[float, Meta(gt=0, le=600, description="seconds test waits for a new key")] = 30.0
    delete_after: Annotated[float, Meta(ge=0, description="seconds between deactivation and deletion of PREVIOUS")] = (
        0.0
    )


class _NotYet(Exception):
    """The new key was refused; IAM may not have propagated it yet (retried inside `test`)."""


class AwsIamKeyPlugin:
    """Rotates one IAM user's access key (see the module docstring)."""

    strategies = (SINGLE_USER,)

    def __init__(
        self,
        options: Mapping[str, Any] | None = None,
        setup: ComponentSetup | None = None,
        *,
        iam_client: Any = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.options = parse_options(AwsIamKeyOptions, options)
        self.setup = setup
        self._iam_client = iam_client
        self._sts_session: Any = None
        self._clock = clock or (lambda: datetime.now(UTC))

    # -- the RotationPlugin protocol -------------------------------------------------------------------------

    def create(self, ctx: RotationContext, current: Credential) -> dict[str, Any]:
        """Mint a new access key for CURRENT's user and return it (the engine stores it as PENDING at once).

        ``iam:ListAccessKeys``; if the user has two keys, ``iam:DeleteAccessKey`` on the one that is neither
        CURRENT's nor PENDING's (never CURRENT's); then ``iam:CreateAccessKey``.
        """
        self._check_strategy(ctx, "create")
        user, current_id = self._key(ctx, "create", current, "CURRENT")
        pending = ctx.read_stage(Stage.PENDING)
        keep = {current_id} | ({str(pending.get("AccessKeyId"))} if pending is not None else set())
        keys = self._list_keys(ctx, "create", user)
        if len(keys) >= IAM_KEY_LIMIT:
            # Inactive keys first, then the oldest: the least likely to be in use.
            ordered = sorted(keys, key=lambda k: (k.get("Status") != "Inactive", str(k.get("CreateDate", ""))))
            spare = [k["AccessKeyId"] for k in ordered if k["AccessKeyId"] not in keep]
            if not spare:
                raise StepError(
                    f"plan {ctx.plan_id}: create: IAM user {user!r} already has {len(keys)} access keys and the "
                    "store holds both (CURRENT and PENDING)\n  fix: run `rotator resume` to finish or roll back "
                    "the rotation that left PENDING, then rotate again",
                    plan_id=ctx.plan_id,
                    step="create",
                )
            for key_id in spare[: len(keys) - IAM_KEY_LIMIT + 1]:
                self._delete_key(ctx, "create", user, key_id)
        response = self._call(ctx, "create", "CreateAccessKey", user, UserName=user)
        key = response["AccessKey"]
        return {"UserName": user, "AccessKeyId": key["AccessKeyId"], "SecretAccessKey": key["SecretAccessKey"]}

    def stage(self, ctx: RotationContext, current: Credential, pending: Credential) -> None:
        """Nothing to do: IAM makes an access key valid the moment it mints it (at `create`)."""
        self._check_strategy(ctx, "stage")

    def test(self, ctx: RotationContext, pending: Credential) -> None:
        """``sts:GetCallerIdentity`` signed with PENDING's key; the caller must be PENDING's user.

        IAM is eventually consistent, so a refused key is retried with backoff until ``propagation_timeout``;
        then TestFailed. (moto does not verify signatures, so in tests this proves less than on AWS, where a
        successful call proves the key and its secret.)
        """
        self._check_strategy(ctx, "test")
        user, key_id = self._key(ctx, "test", pending, "PENDING")
        secret = str(pending.get("SecretAccessKey") or "")
        if not secret:
            raise TestFailed(
                f"plan {ctx.plan_id}: test: PENDING has no SecretAccessKey", plan_id=ctx.plan_id, step="test"
            )
        sts = self._sts_as(key_id, secret)

        def probe() -> str:
            try:
                arn = str(sts.get_caller_identity().get("Arn", ""))
            except ClientError as exc:
                mapped = iam_error(ctx, "test", "sts:GetCallerIdentity", user, exc)
                if isinstance(mapped, TransientError):
                    raise mapped from None
                raise _NotYet(aws_problem(exc).label) from None
            except (BotoCoreError, OSError) as exc:
                raise iam_error(ctx, "test", "sts:GetCallerIdentity", user, exc) from None
            return arn

        retrying = Retrying(
            retry=retry_if_exception_type(_NotYet),
            stop=stop_after_delay(self.options.propagation_timeout),
            wait=wait_exponential(multiplier=0.5, max=5),
            reraise=True,
        )
        try:
            arn = retrying(probe)
        except _NotYet as exc:
            raise TestFailed(
                f"plan {ctx.plan_id}: test: sts:GetCallerIdentity with the new key {key_id} of IAM user {user!r} "
                f"was refused ({exc}) for {self.options.propagation_timeout:g} s\n  fix: check that the key exists "
                "and is Active, and that no SCP or permissions boundary denies sts:GetCallerIdentity",
                plan_id=ctx.plan_id,
                step="test",
            ) from None
        if not arn.endswith(f"/{user}"):
            raise TestFailed(
                f"plan {ctx.plan_id}: test: the new key {key_id} signs as {arn!r}, not as IAM user {user!r}",
                plan_id=ctx.plan_id,
                step="test",
            )

    def _sts_as(self, key_id: str, secret: str) -> Any:
        # One plain session for every probe: a new boto3 Session per call re-reads botocore's service models
        # (tens of ms of CPU each); client() takes the key explicitly and never uses the session's own.
        return self._probe_session().client(
            "sts",
            endpoint_url=self.options.sts_endpoint_url or self.options.endpoint_url,
            config=client_config(self.options),
            aws_access_key_id=key_id,
            aws_secret_access_key=secret,
            aws_session_token=None,
        )

    def dry_run(self, ctx: RotationContext, current: Credential) -> list[str]:
        """Changes nothing: ``sts:GetCallerIdentity`` once, signed with CURRENT's key (no propagation wait)."""
        self._check_strategy(ctx, "dry-run")
        user, key_id = self._key(ctx, "dry-run", current, "CURRENT")
        try:
            arn = str(self._sts_as(key_id, str(current.get("SecretAccessKey") or "")).get_caller_identity()["Arn"])
        except (ClientError, BotoCoreError, OSError) as exc:
            raise iam_error(ctx, "dry-run", "sts:GetCallerIdentity", user, exc) from None
        return [
            f"CURRENT's key {key_id} signs as {arn}",
            f"the next rotation mints a second access key for IAM user {user!r} (iam:CreateAccessKey); the old one "
            "is deactivated, then deleted, at revoke",
        ]

    def revoke(self, ctx: RotationContext, previous: Credential, current: Credential) -> None:
        """``iam:UpdateAccessKey`` Status=Inactive on PREVIOUS's key, then ``iam:DeleteAccessKey`` (unless
        ``delete_after`` > 0: then a later reconcile deletes it). Never CURRENT's key. A key already gone is done.
        """
        self._check_strategy(ctx, "revoke")
        user, previous_id = self._key(ctx, "revoke", previous, "PREVIOUS")
        _, current_id = self._key(ctx, "revoke", current, "CURRENT")
        if previous_id == current_id:
            return
        self._call(
            ctx, "revoke", "UpdateAccessKey", user, missing_ok=True, UserName=user, AccessKeyId=previous_id,
            Status="Inactive",
        )  # fmt: skip
        if self.options.delete_after <= 0:
            self._delete_key(ctx, "revoke", user, previous_id)

    def unstage(self, ctx: RotationContext, current: Credential, pending: Credential) -> None:
        """Nothing to do: `stage` did nothing (`discard` deletes the minted key)."""
        self._check_strategy(ctx, "unstage")

    def discard(self, ctx: RotationContext, pending: Credential) -> None:
        """``iam:DeleteAccessKey`` on PENDING's key (never CURRENT's). A key already gone is done."""
        self._check_strategy(ctx, "discard")
        user, key_id = self._key(ctx, "discard", pending, "PENDING")
        current = ctx.read_stage(Stage.CURRENT)
        if current is not None and current.get("AccessKeyId") == key_id:
            return
        self._delete_key(ctx, "discard", user, key_id)

    # -- the Reconciler protocol -----------------------------------------------------------------------------

    def reconcile(self, ctx: RotationContext, known: Sequence[Credential]) -> list[str]:
        """Delete the user's keys that no `known` version holds (crash orphans); return their ids.

        ``iam:ListAccessKeys`` per user named in `known`, ``iam:DeleteAccessKey`` per orphan. With ``delete_after``
        > 0 also deletes Inactive keys other than CURRENT's that were unused (``iam:GetAccessKeyLastUsed``; never
        used: since creation) for ``delete_after`` seconds. With no known key id it deletes nothing.
        """
        known_ids: set[str] = set()
        users: list[str] = []
        for credential in known:
            user, key_id = self._key(ctx, "reconcile", credential, "a stored version")
            known_ids.add(key_id)
            if user not in users:
                users.append(user)
        current = ctx.read_stage(Stage.CURRENT)
        current_id = str(current.get("AccessKeyId")) if current is not None else None
        pending = ctx.read_stage(Stage.PENDING)
        for stored in (current, pending):
            if stored is not None and stored.get("AccessKeyId"):
                known_ids.add(str(stored.get("AccessKeyId")))
        if not known_ids:
            return []
        removed: list[str] = []
        for user in users:
            for key in self._list_keys(ctx, "reconcile", user):
                key_id = key["AccessKeyId"]
                if key_id == current_id:
                    continue
                if key_id not in known_ids or self._expired_inactive(ctx, user, key):
                    self._delete_key(ctx, "reconcile", user, key_id)
                    removed.append(key_id)
        return removed

    # -- extra -----------------------------------------------------------------------------------------------

    def last_used(self, ctx: RotationContext, credential: Credential) -> datetime | None:
        """When the credential's key was last used to sign a request (``iam:GetAccessKeyLastUsed``), or None
        if never (or the key no longer exists). AWS updates it with a delay of up to hours: read it as
        "used after promote?" some time after the grace period, not to the second."""
        user, key_id = self._key(ctx, "last_used", credential, "the credential")
        response = self._call(ctx, "last_used", "GetAccessKeyLastUsed", user, missing_ok=True, AccessKeyId=key_id)
        used = (response or {}).get("AccessKeyLastUsed", {}).get("LastUsedDate")
        return used if isinstance(used, datetime) else None

    def in_use(
        self, ctx: RotationContext, credential: Credential, *, since: datetime | None = None
    ) -> list[str] | None:
        """Was the credential's key (PREVIOUS, before revoke) used after `since` (the promote)?
        ``iam:GetAccessKeyLastUsed``: one line naming the key, when, the service and region, or [] if it was not
        used since. None without `since`. AWS records the last use with a delay (up to hours), so a consumer that
        moved on still shows until the engine's revoke_deadline; the engine then revokes and records the line."""
        if since is None:
            return None
        user, key_id = self._key(ctx, "in_use", credential, "the credential")
        response = self._call(ctx, "in_use", "GetAccessKeyLastUsed", user, missing_ok=True, AccessKeyId=key_id)
        used = (response or {}).get("AccessKeyLastUsed", {})
        when = used.get("LastUsedDate")
        if not isinstance(when, datetime) or when < since:
            return []
        service, region = used.get("ServiceName") or "-", used.get("Region") or "-"
        return [f"access key {key_id} last used {when:%Y-%m-%dT%H:%M:%SZ} by {service} in {region}, after promote"]

    # -- helpers ---------------------------------------------------------------------------------------------

    def _expired_inactive(self, ctx: RotationContext, user: str, key: Mapping[str, Any]) -> bool:
        if self.options.delete_after <= 0 or key.get("Status") != "Inactive":
            return False
        since = self.last_used(ctx, Credential("", {"UserName": user, "AccessKeyId": key["AccessKeyId"]}))
        since = since or key.get("CreateDate")
        if not isinstance(since, datetime):
            return False
        return self._clock() - since >= timedelta(seconds=self.options.delete_after)

    def _list_keys(self, ctx: RotationContext, step: str, user: str) -> list[dict[str, Any]]:
        response = self._call(ctx, step, "ListAccessKeys", user, UserName=user)
        return list(response.get("AccessKeyMetadata", []))

    def _delete_key(self, ctx: RotationContext, step: str, user: str, key_id: str) -> None:
        self._call(ctx, step, "DeleteAccessKey", user, missing_ok=True, UserName=user, AccessKeyId=key_id)

    def _call(
        self, ctx: RotationContext, step: str, action: str, user: str, *, missing_ok: bool = False, **params: Any
    ) -> dict[str, Any]:
        """One IAM call: the one place where botocore errors become ours. NoSuchEntity is {} when missing_ok."""
        method = getattr(self._iam(), _snake(action))
        try:
            result: dict[str, Any] = method(**params)
            return result
        except ClientError as exc:
            if missing_ok and aws_problem(exc).code == "NoSuchEntity":
                return {}
            raise iam_error(ctx, step, f"iam:{action}", user, exc) from None
        except (BotoCoreError, OSError) as exc:
            raise iam_error(ctx, step, f"iam:{action}", user, exc) from None

    def _region(self) -> str:
        return self.options.region or "us-east-1"  # IAM is global; its endpoint answers in us-east-1

    def _probe_session(self) -> Any:
        if self._sts_session is None:
            self._sts_session = boto3.Session(region_name=self._region())
        return self._sts_session

    def _iam(self) -> Any:
        """The IAM client: injected, or built from profile, role_arn, region and endpoint_url."""
        if self._iam_client is None:
            self._iam_client = aws_client(
                "iam", self.options, component="aws-iam-key", refused=StepError, region=self._region()
            )
        return self._iam_client

    def _check_strategy(self, ctx: RotationContext, step: str) -> None:
        if ctx.strategy not in self.strategies:
            raise StepError(
                f"plan {ctx.plan_id}: {step}: the aws-iam-key plugin has no strategy {ctx.strategy!r}\n  fix: use "
                "single-user (IAM's two keys per user already give two valid keys during grace)",
                plan_id=ctx.plan_id,
                step=step,
            )

    @staticmethod
    def _key(ctx: RotationContext, step: str, credential: Credential, what: str) -> tuple[str, str]:
        user, key_id = credential.get("UserName"), credential.get("AccessKeyId")
        if not user or not key_id:
            raise StepError(
                f"plan {ctx.plan_id}: {step}: {what} of {ctx.secret_id} has no UserName or AccessKeyId\n  fix: store "
                'a value {"UserName", "AccessKeyId", "SecretAccessKey"} as CURRENT',
                plan_id=ctx.plan_id,
                step=step,
            )
        return str(user), str(key_id)


def _snake(action: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() and i else c.lower() for i, c in enumerate(action))
