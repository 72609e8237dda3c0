"""Cloudflare API tokens (type ``cloudflare``), with two strategies.

**Rolling a token invalidates the old value AT ONCE.** Cloudflare's "Roll Token" (PUT /user/tokens/{token_id}/value)
gives the token a new secret and the old secret stops working the same moment ("Rolling your API token into a new
one will invalidate the previous token", https://developers.cloudflare.com/fundamentals/api/how-to/roll-token/).
There is no grace period and no way back. Hence two strategies:

- ``single-user`` (the default, and the recommended one): **a new token with the old one's policies**. create reads
  the old token (its policies, condition, not_before, expires_on) and creates a new token with the same ones, named
  ``rotator:<plan>:<run> <old name>``; the old token stays valid until revoke deletes it. No window, and a failure
  before promote rolls back by deleting the new token. The token id changes with every rotation (the store holds
  it). It is the default because nothing stops working and everything can be undone.
- ``roll``: roll the token in place (same id, same policies, new secret). Single-phase: create rolls and returns
  the new value, which the engine stores as PENDING at once; stage and revoke do nothing (the old value is already
  dead); test verifies the new value. **From create until promote, consumers reading CURRENT hold a dead token**
  (typically well under a second; at most the step timeout). It cannot roll back: the class declares
  ``rolls_forward = True`` (for the ``roll`` strategy: ``rolls_forward_strategies``), so an engine that honours it
  keeps PENDING and finishes forward after a failure; ``discard`` refuses with a StepError that says how to recover.
  A crash between the roll and the store write loses the new value: repeating create rolls again, which is the
  recovery. Use it only when consumers need the token id to stay the same.

Endpoints, permissions and statuses are from Cloudflare's API reference (https://developers.cloudflare.com/api/,
resources user/tokens and accounts/tokens): Get Token GET /user/tokens/{token_id}; Create Token POST /user/tokens
``{name (<= 120), policies, condition, not_before, expires_on}`` whose ``result.value`` is the secret, returned this
once; Roll Token PUT /user/tokens/{token_id}/value ``{}`` whose ``result`` is the new value; Verify Token
GET /user/tokens/verify (``result.status`` "active"; 401 for an invalid token); Delete Token
DELETE /user/tokens/{token_id}; List Tokens GET /user/tokens?page=&per_page= . Account-owned tokens have the same
calls under /accounts/{account_id}/tokens (option ``account_id``). Responses are ``{"success", "errors": [{"code",
"message"}], "messages", "result"}``; 429 carries Retry-After.

The secret: ``{"key_id", "token", "name"}``: ``key_id`` is the token's id (public), ``token`` its value (secret),
``name`` its name (public). Other fields of CURRENT are carried into each new version.

Admin credentials: a token with the permission "API Tokens Write" (for account-owned tokens "Account API Tokens
Write"), and "API Tokens Read" for reading the old token and listing, from ``admin_secret`` (a secret with ``token``)
or ``admin = {token = "env:CLOUDFLARE_ADMIN_TOKEN"}``. Cloudflare recommends giving that token nothing else, and
restricting it by client IP. It must belong to the same user as the rotated token (user tokens).

Calls per step (``<tokens>`` is /user/tokens or /accounts/{account_id}/tokens):

- create, single-user: ``GET <tokens>/{id}`` of CURRENT, ``POST <tokens>``; a repeated try first lists and deletes
  the token an earlier try created (``GET <tokens>``, ``DELETE <tokens>/{id}``).
- create, roll: ``PUT <tokens>/{id}/value`` of CURRENT.
- test: ``GET <tokens>/verify`` with the new value, until ``result.status`` is "active" (``propagation_timeout``).
- revoke, single-user: ``DELETE <tokens>/{id}`` of PREVIOUS. roll: nothing (the roll already invalidated it).
- discard, single-user: ``DELETE <tokens>/{id}`` of PENDING. roll: refuses (see above).
- reconcile, single-user: ``GET <tokens>?per_page=50&page=N``, ``DELETE <tokens>/{id}`` per orphan. roll: nothing.

Options: ``account_id``, ``base_url`` (default https://api.cloudflare.com/client/v4), the admin options, and the
transport options. Password policy: not applicable (Cloudflare mints the value).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, ClassVar

from msgspec import Meta
from rotator_plugins.http_transport import dig, json_of
from rotator_plugins.rotation.http_api_key import HttpApiKeyOptions, RequestSpec, TemplatedKeyApi
from rotator_plugins.rotation.http_keys import SINGLE_USER, ApiKeyRotation, KeyApi, KeyOptions, MintedKey

from rotator import ComponentSetup, Credential, RotationContext, StepError, parse_options

ROLL = "roll"
ADMIN_HEADERS = {"Authorization": "Bearer {admin.token}"}
NAME_LIMIT = 120
FIX_AUTH = (
    "check the admin token, and that it has API Tokens Write and API Tokens Read (Account API Tokens for "
    "account-owned tokens) and belongs to the rotated token's user"
)


class CloudflareOptions(KeyOptions):
    REQUIRED_ADMIN: ClassVar[tuple[str, ...]] = ("token",)

    base_url: Annotated[str, Meta(pattern=r"^https?://[^/?#]+")] = "https://api.cloudflare.com/client/v4"
    account_id: Annotated[str, Meta(pattern=r"^[0-9a-f]{32}\Z", description="for account-owned tokens")] | None = None

    def tokens(self) -> str:
        return f"/accounts/{self.account_id}/tokens" if self.account_id else "/user/tokens"


def cloudflare_spec(options: CloudflareOptions) -> HttpApiKeyOptions:
    """The http-api-key requests for Cloudflare tokens (the create body comes in whole as ``{extra.body}``)."""
    tokens = options.tokens()
    return parse_options(
        HttpApiKeyOptions,
        {
            **options.shared(),
            "base_url": options.base_url,
            "id_field": "key_id",
            "key_field": "token",
            "create": {
                "url": tokens,
                "headers": ADMIN_HEADERS,
                "json": "{extra.body}",
                "key_path": "result.value",
                "id_path": "result.id",
            },
            "test": {
                "url": f"{tokens}/verify",
                "headers": {"Authorization": "Bearer {key.token}"},
                "check_path": "result.status",
                "check_equals": "active",
            },
            "revoke": {"url": tokens + "/{key.key_id}", "headers": ADMIN_HEADERS, "expect": [200]},
            "list": {
                "url": tokens + "?per_page=50&page={page}",
                "headers": ADMIN_HEADERS,
                "items_path": "result",
                "id_path": "id",
                "name_path": "name",
                "page_start": 1,
                "page_size": 50,
            },
        },
    )


class _CloudflareTokens(TemplatedKeyApi):
    def __init__(self, options: CloudflareOptions, setup: ComponentSetup | None, **kwargs: Any) -> None:
        super().__init__("cloudflare", cloudflare_spec(options), setup, fix_auth=FIX_AUTH, **kwargs)
        tokens = options.tokens()
        self.get_token = RequestSpec(url=tokens + "/{current.key_id}", headers=ADMIN_HEADERS)
        self.roll_token = RequestSpec(
            method="PUT", url=tokens + "/{current.key_id}/value", headers=ADMIN_HEADERS, json_body={}
        )

    def mint(
        self, ctx: RotationContext, current: Credential, name: str, extra: Mapping[str, Any] | None = None
    ) -> MintedKey:
        """single-user: ``GET <tokens>/{id}`` of CURRENT, then ``POST <tokens>`` with its policies, condition and
        validity. roll: ``PUT <tokens>/{id}/value`` of CURRENT (the old value dies now)."""
        if ctx.strategy == ROLL:
            return self._roll(ctx, current)
        values = self._values(ctx, "create", current)
        response = self.send(ctx, "create", self.get_token, values)
        old = dig(json_of(ctx, "create", self.vendor, self.get_token.label, response), "result")
        if not isinstance(old, Mapping) or not isinstance(old.get("policies"), list) or not old["policies"]:
            raise StepError(
                f"plan {ctx.plan_id}: create: cloudflare: {self.get_token.label} answered without the token's "
                'policies\n  fix: give the admin token API Tokens Read, or use strategy = "roll"',
                plan_id=ctx.plan_id,
                step="create",
            )
        full_name = f"{name} {_original_name(str(old.get('name') or ''))}".strip()[:NAME_LIMIT]
        body: dict[str, Any] = {"name": full_name, "policies": [_policy(p) for p in old["policies"]]}
        for field in ("condition", "not_before", "expires_on"):
            if old.get(field):
                body[field] = old[field]
        return super().mint(ctx, current, full_name, {**(extra or {}), "body": body})

    def _roll(self, ctx: RotationContext, current: Credential) -> MintedKey:
        response = self.send(ctx, "create", self.roll_token, self._values(ctx, "create", current))
        value = dig(json_of(ctx, "create", self.vendor, self.roll_token.label, response), "result")
        if not isinstance(value, str) or not value:
            raise StepError(
                f"plan {ctx.plan_id}: create: cloudflare: {self.roll_token.label} answered without the new value; "
                "the old value may already be dead\n  fix: roll the token in the dashboard and store it with "
                "`rotator store put`",
                plan_id=ctx.plan_id,
                step="create",
            )
        return MintedKey(str(current.get("key_id")), value, str(current.get("name") or ""))


class CloudflareApiTokenPlugin(ApiKeyRotation):
    """Rotates one Cloudflare API token (see the module docstring for the two strategies)."""

    strategies = (SINGLE_USER, ROLL)
    # A roll invalidates the old value at create: after a failure the engine must finish forward, not roll back.
    rolls_forward = True
    rolls_forward_strategies: ClassVar[tuple[str, ...]] = (ROLL,)
    id_field = "key_id"
    secret_field = "token"  # noqa: S105 (a field name, not a secret)

    def connect(
        self, options: Mapping[str, Any] | None, setup: ComponentSetup | None, sleep: Callable[[float], None]
    ) -> tuple[KeyOptions, KeyApi]:
        parsed = parse_options(CloudflareOptions, options)
        return parsed, _CloudflareTokens(parsed, setup, sleep=sleep, name_limit=NAME_LIMIT)

    def mints_new_keys(self, ctx: RotationContext) -> bool:
        return ctx.strategy != ROLL

    def discard(self, ctx: RotationContext, pending: Credential) -> None:
        """single-user: ``DELETE <tokens>/{id}`` of PENDING. roll: nothing can be undone; a StepError says how to
        recover (no remote call)."""
        if ctx.strategy != ROLL:
            super().discard(ctx, pending)
            return
        raise StepError(
            f"plan {ctx.plan_id}: discard: cloudflare: the roll at create already invalidated the old value of "
            f"token {pending.get('key_id')}: there is nothing to roll back to, and the only valid value is PENDING "
            f"version {pending.version_id} of {ctx.secret_id}: finish forward with `rotator resume`\n  fix: remove "
            "the cause of the failure, then `rotator resume` (the engine finishes a rolls-forward run); by hand: "
            f"`rotator store get {ctx.secret_id} --stage PENDING > new.json && rotator store put {ctx.secret_id} "
            "--file new.json`; if that value does not work either, roll the token again in the Cloudflare dashboard "
            "and store it with `rotator store put`",
            plan_id=ctx.plan_id,
            step="discard",
        )

    def reconcile(self, ctx: RotationContext, known: Sequence[Credential]) -> list[str]:
        """single-user: see ApiKeyRotation.reconcile (``GET <tokens>``, ``DELETE <tokens>/{id}``). roll: nothing is
        ever minted, so nothing is listed or deleted."""
        if ctx.strategy == ROLL:
            return []
        return super().reconcile(ctx, known)

    def revoke(self, ctx: RotationContext, previous: Credential, current: Credential) -> None:
        """single-user: ``DELETE <tokens>/{id}`` of PREVIOUS. roll: nothing (PREVIOUS died at the roll)."""
        if ctx.strategy == ROLL:
            self._check_strategy(ctx, "revoke")
            return
        super().revoke(ctx, previous, current)


_GENERATED_NAME = re.compile(r"^rotator:\S+:[0-9a-f]{12} ")


def _original_name(name: str) -> str:
    """A token's name without the ``rotator:<plan>:<run> `` that an earlier rotation put in front of it."""
    return _GENERATED_NAME.sub("", name, count=1)


def _policy(policy: Mapping[str, Any]) -> dict[str, Any]:
    """A policy as Create Token takes it: effect, resources, permission group ids (and meta); no policy id."""
    groups = []
    for group in policy.get("permission_groups") or []:
        entry: dict[str, Any] = {"id": group["id"]}
        if group.get("meta"):
            entry["meta"] = group["meta"]
        groups.append(entry)
    return {
        "effect": policy.get("effect", "allow"),
        "resources": policy.get("resources", {}),
        "permission_groups": groups,
    }
