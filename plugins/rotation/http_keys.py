"""What every API-key plugin shares: the rotation of a provider-minted key over a vendor's key API.

A vendor module supplies a `KeyApi` (mint, probe, delete, list) and the names of its secret fields; `ApiKeyRotation`
turns it into a RotationPlugin and a Reconciler:

- create: mint a key named ``<name_prefix><run id>`` (the engine stores it as PENDING the moment it is returned);
  a create that the engine repeats in the same process first deletes the key its earlier try minted, if the vendor
  can list keys.
- stage, unstage: nothing (a minted key is valid at once; `discard` deletes it).
- test: the vendor's probe with PENDING, retried while the vendor refuses it (401/403) for up to
  ``propagation_timeout`` seconds (new keys take a moment to reach every region), then TestFailed.
- revoke: delete PREVIOUS's key (never CURRENT's; a key already gone is done).
- discard: delete PENDING's key (never CURRENT's).
- reconcile: list the vendor's keys and delete those whose name starts with this plan's ``name_prefix`` and that no
  stored version (CURRENT, PENDING, PREVIOUS) holds: keys minted just before a crash kept them from the store. Keys
  without the prefix (made by hand, or by another plan) are never touched.

Admin credentials (what the plugin uses to mint and delete keys) come from a secret in the plan's store
(``admin_secret``, read with the run's `read_secret`) and/or from ``admin = {field = "env:VAR"}`` references; every
value is registered with the scrubber the moment it is read. A password policy does not apply: the vendor mints the
key.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Protocol

import msgspec
from msgspec import Meta
from rotator_plugins.http_transport import HttpOptions
from rotator_plugins.rotation.http_template import Template, TemplateError
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_exponential

from rotator import (
    AuthenticationFailed,
    ComponentSetup,
    Credential,
    RotationContext,
    Stage,
    StepError,
    TestFailed,
    get_logger,
    invalid,
    is_secret_ref,
    options_dict,
    register_secret,
    resolve_secret_ref,
)

SINGLE_USER = "single-user"
DEFAULT_PREFIX = "rotator:{plan}:"
# What the engine's scrubber treats as a secret field (rotator/model.py); a secret field must match it.
SECRET_FIELD = re.compile(r"pass|secret|token|key|value|credential|private|auth", re.IGNORECASE)
log = get_logger("rotator.plugins.api_keys")


class KeyOptions(HttpOptions):
    """Options every API-key plugin accepts (besides the transport's)."""

    admin_secret: (
        Annotated[str, Meta(description="id of a secret in the plan's store with the admin fields")] | None
    ) = None
    admin: Annotated[dict[str, str], Meta(description='admin fields as references: {token = "env:X"}')] = {}
    name_prefix: Annotated[str, Meta(min_length=3, max_length=64)] = DEFAULT_PREFIX
    propagation_timeout: Annotated[
        float, Meta(ge=0, le=600, description="seconds test waits for a new key to work")
    ] = 30.0

    # Admin fields a vendor plugin needs; checked at load when no admin_secret is given (else when it is read).
    REQUIRED_ADMIN: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        for name, ref in self.admin.items():
            if not is_secret_ref(ref):
                raise invalid(
                    "admin", f'admin.{name} must be a reference such as "env:VAR" or "file:PATH", not a value'
                )
        try:
            Template.compile(self.name_prefix, {"plan"})
        except TemplateError as exc:
            raise invalid("name_prefix", str(exc)) from None
        missing = [name for name in self.REQUIRED_ADMIN if name not in self.admin]
        if self.admin_secret is None and missing:
            raise invalid(
                "admin",
                f'the admin credentials need {", ".join(self.REQUIRED_ADMIN)}: set admin_secret = "<a secret in the '
                f'store with those fields>" or admin = {{{missing[0]} = "env:VAR", ...}}',
            )

    def shared(self) -> dict[str, Any]:
        """The option values every API-key plugin shares (for a vendor plugin's declarative spec), by config name."""
        values = options_dict(self)
        return {f.encode_name: values[f.encode_name] for f in msgspec.structs.fields(KeyOptions)}


@dataclass(frozen=True)
class MintedKey:
    """A key the vendor just minted. `secret` is shown once by the vendor and is registered for scrubbing at once."""

    key_id: str
    secret: str = field(repr=False)
    name: str
    extra: Mapping[str, Any] = field(default_factory=dict)  # more public fields for the stored value


@dataclass(frozen=True)
class ListedKey:
    key_id: str
    name: str


class KeyApi(Protocol):
    """One vendor's key API. Every method names its HTTP calls in its docstring."""

    vendor: str

    def mint(self, ctx: RotationContext, current: Credential, name: str) -> MintedKey: ...

    def probe(self, ctx: RotationContext, credential: Credential) -> None:
        """Authenticate with `credential`; AuthenticationFailed when the vendor refuses it."""
        ...

    def delete(self, ctx: RotationContext, step: str, key: Mapping[str, Any], current: Credential | None) -> None:
        """Delete `key` (a stored value, or {id field, "name"} of a listed key); a key already gone is done."""
        ...

    def list_keys(self, ctx: RotationContext, step: str) -> list[ListedKey] | None:
        """Every key the admin credentials can see, or None when this vendor (or config) cannot list keys."""
        ...


class AdminCredentials:
    """The admin fields of one plan, resolved when a call needs them (never at load: a secret may rotate)."""

    def __init__(self, options: KeyOptions, setup: ComponentSetup | None, vendor: str, required: Sequence[str]):
        self.options = options
        self.setup = setup
        self.vendor = vendor
        self.required = tuple(required)

    def values(self, ctx: RotationContext, step: str) -> dict[str, str]:
        found: dict[str, str] = {}
        if self.options.admin_secret:
            credential = ctx.read_secret(self.options.admin_secret)
            found.update({k: str(v) for k, v in credential.value.items() if isinstance(v, str | int)})
            register_secret(*credential.secret_strings())
        for name, ref in self.options.admin.items():
            value = resolve_secret_ref(ref, key=f"plugin.admin.{name} of plan {ctx.plan_id}", setup=self.setup)
            register_secret(value)
            found[name] = value
        missing = [name for name in self.required if not found.get(name)]
        if missing:
            where = f"secret {self.options.admin_secret!r}" if self.options.admin_secret else "the admin table"
            raise StepError(
                f"plan {ctx.plan_id}: {step}: {self.vendor}: the admin credentials lack {', '.join(missing)}\n  fix: "
                f"add {', '.join(missing)} to {where} (admin_secret = a secret in the plan's store, or "
                f'admin = {{{missing[0]} = "env:VAR"}})',
                plan_id=ctx.plan_id,
                step=step,
            )
        return found


class ApiKeyRotation:
    """RotationPlugin and Reconciler over a KeyApi (see the module docstring). Subclasses parse the vendor's options
    and make its api in `connect`, and set its secret field names and its strategies."""

    strategies: tuple[str, ...] = (SINGLE_USER,)
    id_field = "key_id"
    secret_field = "api_key"  # noqa: S105 (a field name, not a secret)

    def __init__(
        self,
        options: Mapping[str, Any] | None = None,
        setup: ComponentSetup | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.options, self.api = self.connect(options, setup, sleep)
        self._sleep = sleep
        self._attempted: set[str] = set()  # runs whose create this process has tried (a repeat deletes the stray)

    def connect(
        self, options: Mapping[str, Any] | None, setup: ComponentSetup | None, sleep: Callable[[float], None]
    ) -> tuple[KeyOptions, KeyApi]:
        """The plugin's options (the plan's plugin table, parsed) and the vendor's key API built from them."""
        raise NotImplementedError

    def close(self) -> None:
        """For the daemon's reload and shutdown: the vendor transport's connections are closed."""
        transport = getattr(self.api, "transport", None)
        if transport is not None:
            transport.close()

    # -- the RotationPlugin protocol -------------------------------------------------------------------------

    def create(self, ctx: RotationContext, current: Credential) -> dict[str, Any]:
        """Mint a new key (see the vendor's `mint` for the HTTP calls) and return the secret value to store."""
        self._check_strategy(ctx, "create")
        self._key_id(ctx, "create", current, "CURRENT")
        name = self.key_name(ctx)
        if ctx.run_id in self._attempted and self.mints_new_keys(ctx):
            self._delete_strays(ctx, name)
        self._attempted.add(ctx.run_id)
        minted = self.api.mint(ctx, current, name)
        register_secret(minted.secret)
        carried = {k: v for k, v in current.value.items() if k not in (self.id_field, self.secret_field, "name")}
        return {
            **carried,
            **dict(minted.extra),
            self.id_field: minted.key_id,
            self.secret_field: minted.secret,
            "name": minted.name,
        }

    def stage(self, ctx: RotationContext, current: Credential, pending: Credential) -> None:
        """Nothing to do: the vendor made the key valid when it minted it (at `create`)."""
        self._check_strategy(ctx, "stage")

    def test(self, ctx: RotationContext, pending: Credential) -> None:
        """The vendor's probe with PENDING (see its `probe`), retried while refused for ``propagation_timeout``."""
        self._check_strategy(ctx, "test")
        key_id = self._key_id(ctx, "test", pending, "the credential under test")
        if not pending.get(self.secret_field):
            raise TestFailed(
                f"plan {ctx.plan_id}: test: the credential has no {self.secret_field!r}",
                plan_id=ctx.plan_id,
                step="test",
            )
        retrying = Retrying(
            retry=retry_if_exception_type(AuthenticationFailed),
            stop=stop_after_delay(self.options.propagation_timeout),
            wait=wait_exponential(multiplier=0.25, max=5),
            sleep=self._sleep,
            reraise=True,
        )
        try:
            retrying(lambda: self.api.probe(ctx, pending))
        except AuthenticationFailed as exc:
            first = str(exc).splitlines()[0].split(": ", 2)[-1].split("; fix: ")[0]
            raise TestFailed(
                f"plan {ctx.plan_id}: test: {self.api.vendor} refused the new key {key_id} "
                f"for {self.options.propagation_timeout:g} s ({first})\n  fix: check that the key exists and is "
                "enabled at the vendor; raise propagation_timeout if new keys take longer to work",
                plan_id=ctx.plan_id,
                step="test",
            ) from None

    def dry_run(self, ctx: RotationContext, current: Credential) -> list[str]:
        """Changes nothing: the vendor's probe once with CURRENT (no propagation wait: CURRENT is not new)."""
        self._check_strategy(ctx, "dry-run")
        key_id = self._key_id(ctx, "dry-run", current, "CURRENT")
        self.api.probe(ctx, current)
        return [
            f"CURRENT's key {key_id} works at {self.api.vendor}",
            f"the next rotation mints a new key named {self.key_name(ctx)!r}; the old key is deleted at revoke",
        ]

    def revoke(self, ctx: RotationContext, previous: Credential, current: Credential) -> None:
        """Delete PREVIOUS's key (the vendor's `delete`); never CURRENT's. A key already gone is done."""
        self._check_strategy(ctx, "revoke")
        previous_id = self._key_id(ctx, "revoke", previous, "PREVIOUS")
        if previous_id == self._key_id(ctx, "revoke", current, "CURRENT"):
            return
        self.api.delete(ctx, "revoke", previous.value, current)

    def unstage(self, ctx: RotationContext, current: Credential, pending: Credential) -> None:
        """Nothing to do: `stage` did nothing (`discard` deletes the minted key)."""
        self._check_strategy(ctx, "unstage")

    def discard(self, ctx: RotationContext, pending: Credential) -> None:
        """Delete PENDING's key (the vendor's `delete`); never CURRENT's. A key already gone is done."""
        self._check_strategy(ctx, "discard")
        pending_id = self._key_id(ctx, "discard", pending, "PENDING")
        current = ctx.read_stage(Stage.CURRENT)
        if current is not None and current.get(self.id_field) == pending_id:
            return
        self.api.delete(ctx, "discard", pending.value, current)

    # -- the Reconciler protocol -----------------------------------------------------------------------------

    def reconcile(self, ctx: RotationContext, known: Sequence[Credential]) -> list[str]:
        """Delete keys named with this plan's prefix that no stored version holds; return their ids.

        The vendor's `list_keys`, then its `delete` per orphan. Without a known key id, or when the vendor cannot
        list keys, it deletes nothing.
        """
        known_ids = self._known_ids(ctx, known)
        if not known_ids:
            return []
        listed = self.api.list_keys(ctx, "reconcile")
        if not listed:
            return []
        prefix = self.prefix(ctx)
        current = ctx.read_stage(Stage.CURRENT)
        removed: list[str] = []
        for key in listed:
            if key.name.startswith(prefix) and key.key_id not in known_ids:
                self.api.delete(ctx, "reconcile", {self.id_field: key.key_id, "name": key.name}, current)
                removed.append(key.key_id)
        if removed:
            log.warning(
                "deleted keys this plan minted that no stored version holds", vendor=self.api.vendor, ids=removed
            )
        return removed

    # -- helpers ---------------------------------------------------------------------------------------------

    def mints_new_keys(self, ctx: RotationContext) -> bool:
        """Whether create mints a new key (named with the plan's prefix), as opposed to changing CURRENT's."""
        return True

    def prefix(self, ctx: RotationContext) -> str:
        return Template.compile(self.options.name_prefix, {"plan"}).render({"plan": ctx.plan_id})

    def key_name(self, ctx: RotationContext) -> str:
        """The name of the key this run mints: the plan's prefix and the run id's first 12 characters."""
        return f"{self.prefix(ctx)}{ctx.run_id[:12]}"

    def _delete_strays(self, ctx: RotationContext, name: str) -> None:
        """Delete keys an earlier try of this run's create minted (the response was lost, so nothing stored them)."""
        listed = self.api.list_keys(ctx, "create") or []
        known = self._known_ids(ctx, [])
        current = ctx.read_stage(Stage.CURRENT)
        for key in listed:
            if key.name.startswith(name) and key.key_id not in known:
                self.api.delete(ctx, "create", {self.id_field: key.key_id, "name": key.name}, current)
                log.warning("deleted a key an earlier try of create minted", vendor=self.api.vendor, id=key.key_id)

    def _known_ids(self, ctx: RotationContext, known: Sequence[Credential]) -> set[str]:
        stored = [*known, *(ctx.read_stage(stage) for stage in (Stage.CURRENT, Stage.PENDING, Stage.PREVIOUS))]
        return {str(c.get(self.id_field)) for c in stored if c is not None and c.get(self.id_field)}

    def _check_strategy(self, ctx: RotationContext, step: str) -> None:
        if ctx.strategy not in self.strategies:
            raise StepError(
                f"plan {ctx.plan_id}: {step}: the {self.api.vendor} plugin has no strategy {ctx.strategy!r}\n  fix: "
                f"use one of: {', '.join(self.strategies)}",
                plan_id=ctx.plan_id,
                step=step,
            )

    def _key_id(self, ctx: RotationContext, step: str, credential: Credential, what: str) -> str:
        key_id = credential.get(self.id_field)
        if not key_id:
            raise StepError(
                f"plan {ctx.plan_id}: {step}: {what} of {ctx.secret_id} has no {self.id_field!r}\n  fix: store a value "
                f'with "{self.id_field}" and "{self.secret_field}" as CURRENT (see the {self.api.vendor} plugin\'s '
                "secret JSON)",
                plan_id=ctx.plan_id,
                step=step,
            )
        return str(key_id)
