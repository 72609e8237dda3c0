"""The `vault-kv2` store: HashiCorp Vault's KV version 2 secrets engine, through hvac.

Where things live (mount `secret`, path_prefix `apps`, secret `orders/db`):

- CURRENT is the latest version of `secret/data/apps/orders/db`, the path consumers read. PREVIOUS is the
  version before it (read with `?version=N-1`). A consumer reading the path only ever sees CURRENT (invariant 3).
- PENDING is kept apart, at `secret/data/apps/.rotator-pending/orders/db` (`pending_prefix`), a path consumers do
  not read and their policies need not grant. It holds `{"version_id", "base_version", "value"}`: the run id, the
  version of the main path the run started from, and the new value. Discarding PENDING deletes that path's
  metadata and every version, so no PENDING material stays in Vault.
- promote writes the value as a new version of the main path with check-and-set `cas = base_version`: if anyone
  wrote the path since the run staged PENDING, Vault refuses the write (VersionConflict) and nothing is
  overwritten. It then records `rotator-version-<N> = <run id>` in the path's custom_metadata and deletes the
  staging path.
- Version ids: a version written by promote (or restored by unpromote) carries the id recorded for it in
  custom_metadata; any other version is `v<N>`, its Vault version number (`rotator store put` returns that).
- unpromote cannot move "latest" back (Vault has no such call): it writes PREVIOUS's value again as a new version
  (cas = the current version), records PREVIOUS's id for it, and stages the rolled-back value as PENDING again.

Mounts as operators configure them (tested against a real OpenBao server, tests/unit/test_vault_mounts.py):

- `cas_required` (mount-wide `<mount>/config`, or per secret): every data write passes `cas`, staging writes and
  unpromote's included, so nothing depends on the setting.
- `metadata_cas_required` (OpenBao): every metadata write passes `metadata_cas` (the `current_metadata_version`
  just read) whenever the server reports one; a metadata write that loses a race with another writer is read
  again and repeated (custom_metadata is merged, never replaced blind). If the record still fails after promote
  wrote the version, unpromote recognises that unrecorded version as this run's and restores PREVIOUS, so a
  rolled-back run never leaves its value as the latest version.
- `max_versions = 1` (the secret's, else the mount's): Vault would delete CURRENT's value at promote's write, so
  PREVIOUS (which revoke reads and a rollback restores) could not survive: put_pending refuses, before anything is
  written, with the fix (2 or more). The mount's setting is read from `GET <mount>/config` (cached 5 minutes;
  without `read` on it, the secret's own setting and its version history are used).
- `delete_version_after`: Vault gives every version a deletion time, CURRENT's included; a version is readable
  until then (PREVIOUS with a deletion time in the future is PREVIOUS). Once Vault deleted it, get(PREVIOUS) or
  get(CURRENT) is None: set it longer than the rotation interval plus grace (README, section Stores).

Crash safety: each method can be repeated after a crash at any point. promote recognises its own write that a
crash kept from being recorded (the version right after base_version, unrecorded, holding the staged value);
unpromote stages PENDING before it writes, and a retry recognises the restored version the same way. A staged
version whose id is already CURRENT is never reported as PENDING.

Auth (`auth` table, `method` = token | approle | kubernetes | aws): tokens and role secret ids are references
(`env:VAR`, `file:PATH`), resolved when the store logs in. Tokens are renewed (renew-self) when a third of their
TTL is left; a login method logs in again when renewal is refused or the token stops working (one retry on 403).
Options also: url (or VAULT_ADDR), namespace, mount_point, path_prefix, pending_prefix, ca_bundle, tls_verify,
client_cert/client_key, timeout. Errors are mapped in one place, rotator_plugins.stores.vault_errors.

Each method's docstring names the Vault endpoints it calls, for the daemon's Vault policy:
read, create and update on `<mount>/data/<prefix>/*` (the staging paths are under it), read and update on
`<mount>/metadata/<prefix>/*`, delete on `<mount>/metadata/<prefix>/<pending_prefix>/*`, read on `<mount>/config`.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import hvac
import requests
from hvac import exceptions as hvac_errors
from msgspec import Meta, field
from rotator_plugins.stores.vault_errors import STORE, vault_errors

from rotator import (
    ComponentSetup,
    ConfigError,
    Credential,
    Options,
    SecretNotFound,
    Stage,
    StoreError,
    TransientError,
    VersionConflict,
    invalid,
    is_secret_ref,
    parse_options,
    resolve_secret_ref,
)

T = TypeVar("T")
MAP_KEY = "rotator-version-"  # custom_metadata key prefix: rotator-version-<N> = version id of Vault version N
KEEP_MAPPINGS = 12  # version ids kept in custom_metadata (Vault allows 64 keys); only CURRENT and PREVIOUS matter
MOUNT_CONFIG_SECONDS = 300.0  # how long the mount's config (max_versions) is trusted before it is read again
METADATA_RACE_TRIES = 3  # a metadata write refused by metadata_cas is read again and repeated this many times
K8S_JWT = "/var/run/secrets/kubernetes.io/serviceaccount/token"


_NOT_A_REF = 'a secret must be a reference, not a value: write "env:VAR" or "file:PATH"'


class _Auth(Options, tag_field="method"):
    """The `auth` table; its `method` picks the class (msgspec's tagged union: `method` is the tag, not a field)."""


class TokenAuth(_Auth, tag="token"):
    token: str = "env:VAULT_TOKEN"  # noqa: S105 (a reference, not a value)

    def __post_init__(self) -> None:
        if not is_secret_ref(self.token):
            raise invalid("token", _NOT_A_REF)


class AppRoleAuth(_Auth, tag="approle"):
    role_id: str  # not secret on its own; may also be a reference
    secret_id: str  # a reference
    mount_point: str = "approle"

    def __post_init__(self) -> None:
        if not is_secret_ref(self.secret_id):
            raise invalid("secret_id", _NOT_A_REF)


class KubernetesAuth(_Auth, tag="kubernetes"):
    role: str
    jwt_path: str = K8S_JWT  # the service account token, re-read at every login (the kubelet rotates it)
    mount_point: str = "kubernetes"


class AwsIamAuth(_Auth, tag="aws"):
    role: str
    region: str = "us-east-1"
    header_value: str | None = None  # X-Vault-AWS-IAM-Server-ID, if the Vault role requires it
    profile: str | None = None  # AWS credentials used to sign sts:GetCallerIdentity (default chain if unset)
    mount_point: str = "aws"


AuthOptions = TokenAuth | AppRoleAuth | KubernetesAuth | AwsIamAuth


class VaultStoreOptions(Options):
    url: Annotated[str, Meta(pattern=r"^https?://")] | None = None  # default: VAULT_ADDR
    namespace: str | None = None
    mount_point: str = "secret"
    path_prefix: str = ""
    pending_prefix: Annotated[str, Meta(min_length=1)] = ".rotator-pending"
    auth: AuthOptions = field(default_factory=TokenAuth)
    ca_bundle: str | None = None
    tls_verify: bool = True
    client_cert: str | None = None
    client_key: str | None = None
    timeout: Annotated[float, Meta(gt=0)] = 10.0
    renew: bool = True

    def __post_init__(self) -> None:
        # Stripped of leading and trailing slashes; ".." refused (a path outside the prefix).
        for name in ("mount_point", "path_prefix", "pending_prefix"):
            value = str(getattr(self, name)).strip("/")
            if ".." in value.split("/"):
                raise invalid(name, "must not contain '..'")
            setattr(self, name, value)


@dataclass(frozen=True)
class Staged:
    """What the staging path holds for a PENDING version."""

    version_id: str
    base_version: int
    value: dict[str, Any]
    restore_id: str | None  # set by unpromote: the id the restored CURRENT version gets


@dataclass(frozen=True)
class Latest:
    version: int
    value: dict[str, Any] | None  # None: the latest version is deleted or destroyed
    mapping: dict[int, str]


def _mapping(custom_metadata: Mapping[str, Any] | None) -> dict[int, str]:
    found: dict[int, str] = {}
    for key, value in (custom_metadata or {}).items():
        if key.startswith(MAP_KEY) and key[len(MAP_KEY) :].isdigit():
            found[int(key[len(MAP_KEY) :])] = str(value)
    return found


def _id_of(mapping: Mapping[int, str], version: int) -> str:
    return mapping.get(version, f"v{version}")


def _vault_time(text: str) -> datetime | None:
    """Vault's RFC 3339 times carry nanoseconds ("2027-01-04T12:32:35.112730894Z"); Python reads microseconds."""
    if not text:
        return None
    head, _, tail = text.rstrip("Z").partition(".")
    digits = "".join(ch for ch in tail if ch.isdigit())[:6]
    try:
        return datetime.fromisoformat(f"{head}.{digits or '0'}+00:00")
    except ValueError:
        return None


def _deleted(info: Mapping[str, Any]) -> bool:
    """Whether a version's metadata says it is gone now: destroyed, or a deletion time already past (with
    delete_version_after every version carries its future deletion time from the moment it is written)."""
    if info.get("destroyed"):
        return True
    when = _vault_time(str(info.get("deletion_time") or ""))
    return when is not None and when <= datetime.now(UTC)


class VaultKv2Store:
    """Type `vault-kv2` (see the module docstring)."""

    def __init__(
        self,
        options: Mapping[str, Any] | None = None,
        setup: ComponentSetup | None = None,
        *,
        client: hvac.Client | None = None,
    ):
        self.options = parse_options(VaultStoreOptions, options)
        self.setup = setup or ComponentSetup(name=STORE, config_dir=Path.cwd(), state_dir=Path.cwd() / "state")
        self._lock = threading.RLock()
        self._managed_auth = client is None  # an injected client comes logged in; we leave its token alone
        self._client = client or self._make_client()
        self._logged_in = client is not None
        self._expires_at: float | None = None  # monotonic time the token expires; None: never, or unknown
        self._ttl = 0.0
        self._renewable = False
        self._mount_config: tuple[float, dict[str, Any] | None] | None = None  # (read at, config or None)

    @property
    def client(self) -> hvac.Client:
        return self._client

    def close(self) -> None:
        """For the daemon's reload and shutdown: revokes a token this store logged in for (AppRole, Kubernetes,
        AWS IAM; POST /v1/auth/token/revoke-self, best effort: it expires anyway) and closes the HTTP session's
        connections. A configured token and an injected client are left alone."""
        with self._lock:
            if not self._managed_auth:
                return
            if self._logged_in and not isinstance(self.options.auth, TokenAuth):
                # Unreachable or not allowed: the token lives out its TTL.
                with contextlib.suppress(hvac_errors.VaultError, requests.exceptions.RequestException):
                    self._client.auth.token.revoke_self()
            self._logged_in = False
            self._client.adapter.close()

    # -- client and auth --------------------------------------------------------------------------------------

    def _key(self, *parts: str) -> str:
        return ".".join(("stores", self.setup.name, *parts))

    def _make_client(self) -> hvac.Client:
        opts = self.options
        url = opts.url or os.environ.get("VAULT_ADDR")
        if not url:
            raise ConfigError(
                "no Vault address", key=self._key("url"), fix='set url = "https://vault:8200", or VAULT_ADDR'
            )
        verify: bool | str = str(self.setup.path(opts.ca_bundle)) if opts.ca_bundle else opts.tls_verify
        cert = None
        if opts.client_cert:
            cert = (str(self.setup.path(opts.client_cert)), str(self.setup.path(opts.client_key or opts.client_cert)))
        # token="" keeps hvac from picking up VAULT_TOKEN or ~/.vault-token on its own: auth is ours to do.
        return hvac.Client(url=url, token="", verify=verify, cert=cert, timeout=opts.timeout, namespace=opts.namespace)

    def _set_lease(self, ttl: float, renewable: bool) -> None:
        self._ttl = float(ttl or 0)
        self._renewable = bool(renewable)
        self._expires_at = time.monotonic() + self._ttl if self._ttl > 0 else None

    def _login(self) -> None:
        """Token: GET /v1/auth/token/lookup-self (its TTL). AppRole, Kubernetes, AWS IAM:
        POST /v1/auth/<mount>/login (the AWS one carries a signed sts:GetCallerIdentity request)."""
        auth = self.options.auth
        where = f"auth/{getattr(auth, 'mount_point', 'token')}/login"
        if isinstance(auth, TokenAuth):
            self._client.token = resolve_secret_ref(auth.token, key=self._key("auth", "token"), setup=self.setup)
            with vault_errors(capability="read", path="auth/token/lookup-self"):
                info = self._client.auth.token.lookup_self()["data"]
            self._set_lease(info.get("ttl") or 0, bool(info.get("renewable")))
            self._logged_in = True
            return
        self._client.token = None
        with vault_errors(capability="login", path=where):
            if isinstance(auth, AppRoleAuth):
                role_id = auth.role_id
                if is_secret_ref(role_id):
                    role_id = resolve_secret_ref(role_id, key=self._key("auth", "role_id"), setup=self.setup)
                secret = resolve_secret_ref(auth.secret_id, key=self._key("auth", "secret_id"), setup=self.setup)
                response = self._client.auth.approle.login(
                    role_id=role_id, secret_id=secret, mount_point=auth.mount_point
                )
            elif isinstance(auth, KubernetesAuth):
                jwt_path = self.setup.path(auth.jwt_path)
                try:
                    jwt = jwt_path.read_text().strip()
                except OSError as exc:
                    raise ConfigError(
                        f"cannot read the Kubernetes service account token {jwt_path}: {exc.strerror}",
                        key=self._key("auth", "jwt_path"),
                        fix="mount the service account token, or point jwt_path at it",
                    ) from None
                response = self._client.auth.kubernetes.login(role=auth.role, jwt=jwt, mount_point=auth.mount_point)
            else:
                response = self._aws_login(auth)
        lease = response["auth"]
        self._set_lease(lease.get("lease_duration") or 0, bool(lease.get("renewable")))
        self._logged_in = True

    def _aws_login(self, auth: AwsIamAuth) -> Any:
        import boto3  # the `aws` extra; only this auth method needs it

        credentials = boto3.Session(profile_name=auth.profile).get_credentials()
        if credentials is None:
            raise StoreError(f"{STORE}: AWS IAM login needs AWS credentials (profile, instance or task role, AWS_*)")
        frozen = credentials.get_frozen_credentials()
        return self._client.auth.aws.iam_login(
            frozen.access_key,
            frozen.secret_key,
            frozen.token,
            header_value=auth.header_value,
            role=auth.role,
            region=auth.region,
            mount_point=auth.mount_point,
        )

    def _ensure_token(self) -> None:
        """Log in if needed; POST /v1/auth/token/renew-self when a third of the token's TTL is left."""
        if not self._managed_auth:
            return
        with self._lock:
            if not self._logged_in:
                self._login()
                return
            if self._expires_at is None or self._expires_at - time.monotonic() > self._ttl / 3:
                return
            can_login = not isinstance(self.options.auth, TokenAuth)
            if self.options.renew and self._renewable:
                try:
                    with vault_errors(capability="update", path="auth/token/renew-self"):
                        lease = self._client.auth.token.renew_self()["auth"]
                    ttl = float(lease.get("lease_duration") or 0)
                    # Renewal capped by the token's max TTL: a login method gets a fresh token instead.
                    if not (can_login and ttl < self._ttl / 3):
                        self._set_lease(ttl, bool(lease.get("renewable")))
                        return
                except StoreError:
                    if not can_login:
                        raise
            if can_login:
                self._login()

    def _op(self, capability: str, api_path: str, secret_id: str, fn: Callable[[], T]) -> T:
        """One Vault call, with auth handled and errors mapped. A 403 with a login method logs in once more."""
        for attempt in (1, 2):
            self._ensure_token()
            try:
                with vault_errors(capability=capability, path=self._shown(api_path), secret=secret_id):
                    try:
                        return fn()
                    except hvac_errors.Forbidden:
                        if attempt == 1 and self._managed_auth and not isinstance(self.options.auth, TokenAuth):
                            self._logged_in = False
                            raise _Relogin() from None
                        raise
            except _Relogin:
                continue
        raise AssertionError("unreachable")  # pragma: no cover

    def _shown(self, api_path: str) -> str:
        return f"{self.options.namespace.strip('/')}/{api_path}" if self.options.namespace else api_path

    # -- paths ------------------------------------------------------------------------------------------------

    def _path(self, secret_id: str) -> str:
        parts = [p for p in (self.options.path_prefix, secret_id.strip("/")) if p]
        if not secret_id.strip("/") or ".." in secret_id.split("/"):
            raise StoreError(f"{STORE}: {secret_id!r} is not a usable secret path")
        return "/".join(parts)

    def _pending_path(self, secret_id: str) -> str:
        return "/".join(p for p in (self.options.path_prefix, self.options.pending_prefix, secret_id.strip("/")) if p)

    def _api(self, kind: str, path: str) -> str:
        return f"{self.options.mount_point}/{kind}/{path}"

    # -- primitive calls --------------------------------------------------------------------------------------

    def _read(self, secret_id: str, path: str, version: int | None = None) -> dict[str, Any] | None:
        """GET /v1/<mount>/data/<path>[?version=N]. None if the path has no such version; `data` None if the
        version is deleted or destroyed."""
        kv = self._client.secrets.kv.v2

        def call() -> dict[str, Any] | None:
            try:
                response = kv.read_secret_version(
                    path=path, version=version, mount_point=self.options.mount_point, raise_on_deleted_version=False
                )
            except hvac_errors.InvalidPath:
                return None
            data: dict[str, Any] = response["data"]
            return data

        return self._op("read", self._api("data", path), secret_id, call)

    def _metadata(self, secret_id: str, path: str) -> dict[str, Any] | None:
        """GET /v1/<mount>/metadata/<path>. None if the path does not exist."""
        kv = self._client.secrets.kv.v2

        def call() -> dict[str, Any] | None:
            try:
                data: dict[str, Any] = kv.read_secret_metadata(path=path, mount_point=self.options.mount_point)["data"]
            except hvac_errors.InvalidPath:
                return None
            return data

        return self._op("read", self._api("metadata", path), secret_id, call)

    def _write(self, secret_id: str, path: str, data: Mapping[str, Any], cas: int) -> int:
        """POST /v1/<mount>/data/<path> with options.cas (always: a mount or secret with cas_required refuses a
        write without it, and a concurrent writer is refused instead of overwritten). Returns the new version."""
        kv = self._client.secrets.kv.v2

        def call() -> int:
            response = kv.create_or_update_secret(
                path=path, secret=dict(data), cas=cas, mount_point=self.options.mount_point
            )
            return int(response["data"]["version"])

        return self._op("create/update", self._api("data", path), secret_id, call)

    def _record(self, secret_id: str, path: str, meta: Mapping[str, Any], version: int, vid: str) -> None:
        """POST /v1/<mount>/metadata/<path> with only custom_metadata (Vault leaves max_versions, cas_required and
        delete_version_after as they are; hvac's update_metadata would reset delete_version_after, so the
        adapter is used directly), and `metadata_cas` = the current_metadata_version of `meta` when the server
        reports one (OpenBao; with metadata_cas_required a write without it is refused). Refused because another
        writer changed the metadata meanwhile: GET /v1/<mount>/metadata/<path> and the merge again (at most
        METADATA_RACE_TRIES times). Keeps the ids of the last few versions only."""
        api = self._api("metadata", path)
        for attempt in range(1, METADATA_RACE_TRIES + 1):
            merged = {k: str(v) for k, v in (meta.get("custom_metadata") or {}).items()}
            merged[f"{MAP_KEY}{version}"] = vid
            for old in _mapping(merged):
                if old <= version - KEEP_MAPPINGS:
                    del merged[f"{MAP_KEY}{old}"]
            body: dict[str, Any] = {"custom_metadata": merged}
            if meta.get("current_metadata_version") is not None:
                body["metadata_cas"] = int(meta["current_metadata_version"])
            try:
                self._op(
                    "update", api, secret_id, functools.partial(self._client.adapter.post, f"/v1/{api}", json=body)
                )
                return
            except VersionConflict:
                fresh = self._metadata(secret_id, path)
                if attempt == METADATA_RACE_TRIES or fresh is None:
                    raise
                meta = fresh

    def _max_versions(self, secret_id: str, meta: Mapping[str, Any]) -> int | None:
        """How many versions Vault keeps of this secret: its own max_versions, else the mount's (GET
        /v1/<mount>/config, read at most every MOUNT_CONFIG_SECONDS), else 10. None when the mount's config may
        not be read and the secret's history cannot tell either."""
        own = int(meta.get("max_versions") or 0)
        if own:
            return own
        now = time.monotonic()
        if self._mount_config is None or now - self._mount_config[0] > MOUNT_CONFIG_SECONDS:
            api = f"{self.options.mount_point}/config"
            try:
                config = self._op("read", api, secret_id, lambda: self._client.adapter.get(f"/v1/{api}"))
                data = config.get("data") if isinstance(config, dict) else None
                self._mount_config = (now, data if isinstance(data, dict) else None)
            except StoreError as exc:
                if isinstance(exc, TransientError):
                    raise
                self._mount_config = (now, None)  # no `read` on <mount>/config: the policy did not grant it
        config = self._mount_config[1]
        if config is not None:
            return int(config.get("max_versions") or 0) or 10
        current, oldest = int(meta.get("current_version") or 0), int(meta.get("oldest_version") or 0)
        # Vault moves oldest_version only when it drops versions beyond max_versions.
        return 1 if current > 1 and oldest == current else None

    def _unstage(self, secret_id: str) -> None:
        """DELETE /v1/<mount>/metadata/<pending path>: every staged version and its metadata."""
        path = self._pending_path(secret_id)
        kv = self._client.secrets.kv.v2
        self._op(
            "delete",
            self._api("metadata", path),
            secret_id,
            lambda: kv.delete_metadata_and_all_versions(path=path, mount_point=self.options.mount_point),
        )

    def _latest(self, secret_id: str) -> Latest:
        """GET /v1/<mount>/data/<path>: the latest version, its value and the recorded version ids."""
        found = self._read(secret_id, self._path(secret_id))
        if found is None:
            raise SecretNotFound(
                f"{STORE}: no secret at {self._shown(self._api('data', self._path(secret_id)))} "
                f"(secret {secret_id!r}); seed it with `rotator store put`"
            )
        meta = found.get("metadata") or {}
        return Latest(int(meta.get("version") or 0), found.get("data"), _mapping(meta.get("custom_metadata")))

    def _staged(self, secret_id: str) -> tuple[Staged | None, int]:
        """GET /v1/<mount>/data/<pending path>: what is staged, and the staging path's version (for cas)."""
        found = self._read(secret_id, self._pending_path(secret_id))
        if found is None:
            return None, 0
        version = int((found.get("metadata") or {}).get("version") or 0)
        data = found.get("data")
        if not isinstance(data, dict) or "version_id" not in data or not isinstance(data.get("value"), dict):
            return None, version
        staged = Staged(
            version_id=str(data["version_id"]),
            base_version=int(data.get("base_version") or 0),
            value=dict(data["value"]),
            restore_id=str(data["restore_id"]) if data.get("restore_id") else None,
        )
        return staged, version

    def _stage(self, secret_id: str, staged: Staged, cas: int) -> None:
        """POST /v1/<mount>/data/<pending path> with cas = the staging path's version (0: nothing staged)."""
        body: dict[str, Any] = {
            "version_id": staged.version_id,
            "base_version": staged.base_version,
            "value": staged.value,
        }
        if staged.restore_id:
            body["restore_id"] = staged.restore_id
        self._write(secret_id, self._pending_path(secret_id), body, cas)

    # -- the SecretStore protocol -----------------------------------------------------------------------------

    def get(self, secret_id: str, stage: Stage = Stage.CURRENT) -> Credential | None:
        """CURRENT: GET /v1/<mount>/data/<path>.
        PREVIOUS: GET /v1/<mount>/metadata/<path>, then GET /v1/<mount>/data/<path>?version=<current-1>.
        PENDING: GET /v1/<mount>/data/<path> (the secret must exist, and a staged id that is already CURRENT is
        not pending), then GET /v1/<mount>/data/<pending path>."""
        stage = Stage(stage)
        if stage is Stage.PREVIOUS:
            return self._previous(secret_id)
        latest = self._latest(secret_id)
        if stage is Stage.CURRENT:
            if latest.value is None:
                return None
            return Credential(_id_of(latest.mapping, latest.version), latest.value, frozenset({Stage.CURRENT}))
        staged, _ = self._staged(secret_id)
        if staged is None or latest.mapping.get(latest.version) == staged.version_id:
            return None
        return Credential(staged.version_id, staged.value, frozenset({Stage.PENDING}))

    def _previous(self, secret_id: str) -> Credential | None:
        path = self._path(secret_id)
        meta = self._metadata(secret_id, path)
        if meta is None:
            raise SecretNotFound(f"{STORE}: no secret at {self._shown(self._api('metadata', path))} ({secret_id!r})")
        previous = int(meta.get("current_version") or 0) - 1
        info = (meta.get("versions") or {}).get(str(previous))
        if previous < 1 or not info or _deleted(info):
            return None
        found = self._read(secret_id, path, previous)
        if found is None or not isinstance(found.get("data"), dict):
            return None
        mapping = _mapping(meta.get("custom_metadata"))
        return Credential(_id_of(mapping, previous), found["data"], frozenset({Stage.PREVIOUS}))

    def put_pending(self, secret_id: str, value: Mapping[str, Any], version_id: str) -> Credential:
        """GET /v1/<mount>/metadata/<path> (the version PENDING is based on; is version_id CURRENT already, then
        also GET /v1/<mount>/data/<path> to compare the value; max_versions, with GET /v1/<mount>/config when
        the secret has none of its own), GET /v1/<mount>/data/<pending path> (same id staged already?), then
        POST /v1/<mount>/data/<pending path> with cas (0 when nothing is staged), so two writers of PENDING
        cannot both win. Refuses a secret that keeps one version (max_versions = 1) before writing anything."""
        path = self._path(secret_id)
        meta = self._metadata(secret_id, path)
        if meta is None:
            raise SecretNotFound(
                f"{STORE}: no secret at {self._shown(self._api('data', path))} (secret {secret_id!r}); "
                "seed it with `rotator store put`"
            )
        current = int(meta.get("current_version") or 0)
        if _mapping(meta.get("custom_metadata")).get(current) == version_id:
            latest = self._latest(secret_id)
            if latest.version != current or latest.value != dict(value):
                raise self._different(secret_id, version_id)
            return Credential(version_id, dict(value), frozenset({Stage.CURRENT}))
        if self._max_versions(secret_id, meta) == 1:
            raise StoreError(
                f"{STORE}: {self._shown(self._api('metadata', path))} keeps only one version (max_versions = 1), so "
                "promote's write would delete CURRENT's value and leave no PREVIOUS to revoke or roll back to; "
                "nothing was written. Fix: keep at least two versions, e.g. `bao kv metadata put -max-versions=2 "
                f"-mount={self.options.mount_point} {path}` (or the mount's max_versions in {self.options.mount_point}"
                "/config)"
            )
        staged, staging_version = self._staged(secret_id)
        if staged is not None and staged.version_id == version_id:
            if staged.value != dict(value):
                raise self._different(secret_id, version_id)
            return Credential(version_id, staged.value, frozenset({Stage.PENDING}))
        self._stage(secret_id, Staged(version_id, current, dict(value), None), cas=staging_version)
        return Credential(version_id, dict(value), frozenset({Stage.PENDING}))

    @staticmethod
    def _different(secret_id: str, version_id: str) -> VersionConflict:
        return VersionConflict(
            f"{STORE}: version {version_id} of {secret_id!r} already holds a different value; "
            "a version's value never changes (start a new run)"
        )

    def promote(self, secret_id: str, version_id: str) -> None:
        """GET /v1/<mount>/metadata/<path> and GET /v1/<mount>/data/<pending path>; then
        POST /v1/<mount>/data/<path> with cas=<the version PENDING was staged on> (a concurrent writer makes
        Vault refuse it: VersionConflict, nothing overwritten), POST /v1/<mount>/metadata/<path> (custom_metadata
        records the run id), DELETE /v1/<mount>/metadata/<pending path>.
        After a crash between the write and the record, GET /v1/<mount>/data/<path>?version=N recognises the
        run's own write. Already CURRENT: only a leftover staging path is deleted."""
        path = self._path(secret_id)
        meta = self._metadata(secret_id, path)
        if meta is None:
            raise SecretNotFound(f"{STORE}: no secret at {self._shown(self._api('metadata', path))} ({secret_id!r})")
        current = int(meta.get("current_version") or 0)
        mapping = _mapping(meta.get("custom_metadata"))
        staged, _ = self._staged(secret_id)
        if mapping.get(current) == version_id:
            if staged is not None and staged.version_id == version_id:
                self._unstage(secret_id)
            return
        if staged is None or staged.version_id != version_id:
            raise VersionConflict(f"{STORE}: cannot promote version {version_id} of {secret_id!r}: it is not PENDING")
        if current == staged.base_version:
            written = self._write(secret_id, path, staged.value, cas=staged.base_version)
        elif (
            current == staged.base_version + 1
            and current not in mapping
            and self._holds(secret_id, path, current, staged.value)
        ):
            written = current  # our own write, made before a crash kept it from being recorded
        else:
            raise VersionConflict(
                f"{STORE}: cannot promote version {version_id} of {secret_id!r}: "
                f"{self._shown(self._api('data', path))} changed since PENDING was staged "
                f"(version {staged.base_version}, now {current}); the other writer's version was not overwritten: "
                "start a new rotation"
            )
        self._record(secret_id, path, meta, written, version_id)
        self._unstage(secret_id)

    def _holds(self, secret_id: str, path: str, version: int, value: Mapping[str, Any]) -> bool:
        found = self._read(secret_id, path, version)
        return found is not None and found.get("data") == dict(value)

    def unpromote(self, secret_id: str, version_id: str) -> None:
        """GET /v1/<mount>/metadata/<path> and GET /v1/<mount>/data/<pending path>; GET
        /v1/<mount>/data/<path>?version=<current> and ?version=<current-1>; POST /v1/<mount>/data/<pending path>
        with cas (version_id is PENDING again), POST /v1/<mount>/data/<path> writing PREVIOUS's value back as a
        new version with cas=<current>, POST /v1/<mount>/metadata/<path> giving that version PREVIOUS's id.

        version_id is CURRENT when the metadata records it, or when promote wrote it and failed before recording
        it (the version right after the staged base, unrecorded, holding the staged value: checked with GET
        ?version=<current>): both are restored. No-op otherwise; a retry after a crash between the restoring
        write and its record finishes the record (checked with GET ?version=<current-1> and <current-2>)."""
        path = self._path(secret_id)
        meta = self._metadata(secret_id, path)
        if meta is None:
            return
        current = int(meta.get("current_version") or 0)
        mapping = _mapping(meta.get("custom_metadata"))
        staged, staging_version = self._staged(secret_id)
        if mapping.get(current) != version_id:
            if staged is None or staged.version_id != version_id or current in mapping:
                return
            if staged.restore_id:
                if staged.base_version == current and self._restored(secret_id, path, current, staged.value):
                    self._record(secret_id, path, meta, current, staged.restore_id)
                return
            if current != staged.base_version + 1 or not self._holds(secret_id, path, current, staged.value):
                return  # never written to the path, or another writer's version is the latest: nothing to undo
            # promote wrote this run's value and failed before recording it: it is live, so restore PREVIOUS.
        previous = self._read(secret_id, path, current - 1) if current > 1 else None
        mine = self._read(secret_id, path, current)
        if previous is None or not isinstance(previous.get("data"), dict) or mine is None or mine.get("data") is None:
            raise StoreError(
                f"{STORE}: cannot unpromote version {version_id} of {secret_id!r}: version {current - 1} of "
                f"{self._shown(self._api('data', path))} (PREVIOUS) is deleted or destroyed; restore it, then run "
                "`rotator resume`"
            )
        restore_id = _id_of(mapping, current - 1)
        restaged = Staged(version_id, current + 1, dict(mine["data"]), restore_id)
        self._stage(secret_id, restaged, cas=staging_version)
        written = self._write(secret_id, path, previous["data"], cas=current)
        self._record(secret_id, path, meta, written, restore_id)

    def _restored(self, secret_id: str, path: str, version: int, value: Mapping[str, Any]) -> bool:
        """Whether `version` is unpromote's restoring write: the run's value just before it, and the value from
        before the run (version - 2) again in it. GET /v1/<mount>/data/<path>?version=N, for the three."""
        if version < 3 or not self._holds(secret_id, path, version - 1, value):
            return False
        before = self._read(secret_id, path, version - 2)
        data = before.get("data") if before is not None else None
        return isinstance(data, dict) and self._holds(secret_id, path, version, data)

    def discard_pending(self, secret_id: str, version_id: str) -> None:
        """GET /v1/<mount>/data/<pending path>; DELETE /v1/<mount>/metadata/<pending path> if version_id is the
        one staged (every staged version goes: no PENDING material stays in Vault). No-op otherwise."""
        staged, _ = self._staged(secret_id)
        if staged is not None and staged.version_id == version_id:
            self._unstage(secret_id)

    def put_current(self, secret_id: str, value: Mapping[str, Any]) -> Credential:
        """GET /v1/<mount>/metadata/<path> (404: a new secret), then POST /v1/<mount>/data/<path> with
        cas=<current version> (0 for a new secret), so a concurrent writer is refused, not overwritten."""
        path = self._path(secret_id)
        meta = self._metadata(secret_id, path)
        current = int(meta.get("current_version") or 0) if meta else 0
        written = self._write(secret_id, path, value, cas=current)
        return Credential(f"v{written}", dict(value), frozenset({Stage.CURRENT}))


class _Relogin(Exception):
    """Internal: the token was refused; log in again and repeat the call once."""
