"""Redis ACL user passwords (Redis 6 and later), rotated without a window: an ACL user holds several passwords.

The secret: ``{"host", "port", "username", "password", "ssl"}`` (``port`` defaults to 6379, ``username`` to
``default``, the user that ``requirepass`` sets; ``ssl`` optional; ``masterarn`` optional, see below).

One strategy, **single-user**, and unlike a database's single-user it has no window: `stage` *adds* the new
password beside the old one (``ACL SETUSER app #<new>``), so both log in while clients move over, and `revoke`
removes the old one after the grace period (``ACL SETUSER app !<old>``). Alternating users would buy nothing.

Who runs ``ACL SETUSER``: an admin when one is configured (the ``admin_secret_id`` option, else the secret's
``masterarn``: a secret with ``username``/``password`` and optionally ``host``/``port``/``ssl``), else the
rotated user itself, logged in with CURRENT. The user then needs ``+acl|getuser +acl|setuser`` (plus
``+acl|save`` or ``+config|rewrite`` with the ``persist`` option): note that ``ACL SETUSER`` lets it change any
user, itself included, so an admin secret is the safer set-up.

Passwords are sent hashed: every ``ACL SETUSER`` carries ``#<sha256 hex>`` (add) or ``!<sha256 hex>`` (remove),
the exact form Redis stores, never ``>password`` / ``<password``. Redis 7 redacts ACL SETUSER's arguments in
SLOWLOG and MONITOR, but older servers, proxies and command-logging tools do not, and Redis echoes a rejected
modifier back in its error reply (``Error in ACL SETUSER modifier '<password': ...``), which would carry a plaintext
into our error messages and logs. With the hashed form the plaintext never leaves this process except inside AUTH,
which every client sends anyway; the SHA-256 of a long random password reveals nothing useful.

Limits: ACL changes live in the server's memory. With an ACL file set ``persist = "acl-save"`` (``ACL SAVE`` after
each change); with users in redis.conf, ``persist = "config-rewrite"`` (``CONFIG REWRITE``); otherwise a restart
brings back the old passwords. ACLs are not replicated: a plan rotates one node, so primaries, replicas and
cluster nodes each need the same change (one plan per node, or an external ACL file distribution).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Annotated, Any, Literal, cast

import redis
from msgspec import Meta
from redis.backoff import NoBackoff
from redis.retry import Retry
from rotator_plugins.rotation.database_checks import (
    ca_bundle_path,
    check_same_account,
    check_strategy,
    unverified_tls_reason,
)
from rotator_plugins.rotation.database_secret import DatabaseLogin, SecretShape

from rotator import (
    AuthenticationFailed,
    ComponentSetup,
    Credential,
    Options,
    RotationContext,
    RotatorError,
    StepError,
    TestFailed,
    TransientError,
    as_not_applied,
    generate_password,
    parse_options,
    scrub,
)

SINGLE_USER = "single-user"
DEFAULT_PORT = 6379
DEFAULT_USER = "default"

TlsMode = Literal["disabled", "required", "verify_ca", "verify_identity"]
# How this plugin reads the secret's JSON (CURRENT, PENDING, PREVIOUS and the admin secret).
SECRET = SecretShape(
    engine_name="redis",
    engines=None,  # not checked: AWS has no Redis sample, and a secret may name any engine or none
    required=("host", "password"),
    missing_fix='store a value with "host", "port", "username" and "password"',
    default_port=DEFAULT_PORT,
    default_user=DEFAULT_USER,
    admin_option="admin_secret_id (or masterarn)",
)
# In a connection error's text: a TLS problem (not the network), which retrying will not fix.
_TLS_MARKERS = ("certificate", "[ssl", "ssl:", "wrong version number", "tlsv1")


class RedisOptions(Options):
    """The plugin's options (the plan's plugin table minus `type`)."""

    connect_timeout: Annotated[float, Meta(gt=0, le=300, description="seconds to connect")] = 5.0
    socket_timeout: Annotated[float, Meta(gt=0, le=3600, description="seconds to wait for any one reply")] = 10.0
    tls: (
        Annotated[TlsMode, Meta(description='default from the secret\'s "ssl": true -> verify_identity, else disabled')]
        | None
    ) = None
    ssl_ca: (
        Annotated[str, Meta(description="CA bundle (PEM) for verify_ca/verify_identity, relative to the config")] | None
    ) = None
    admin_secret_id: (
        Annotated[
            str, Meta(description="secret id of an admin user that runs ACL SETUSER (default: the secret's masterarn)")
        ]
        | None
    ) = None
    persist: Annotated[
        Literal["none", "acl-save", "config-rewrite"],
        Meta(description="make each ACL change survive a restart: ACL SAVE or CONFIG REWRITE"),
    ] = "none"


def password_hash(password: str) -> str:
    """What Redis stores for a password and accepts in ``#``/``!`` modifiers: the SHA-256 hex of its UTF-8 bytes."""
    return hashlib.sha256(password.encode("utf-8")).hexdigest()


class RedisPlugin:
    """Adds the new password beside the old one on a Redis ACL user, and removes the old one at revoke."""

    strategies = (SINGLE_USER,)

    def __init__(self, options: Mapping[str, Any] | None = None, setup: ComponentSetup | None = None) -> None:
        self.options = parse_options(RedisOptions, options)
        self.setup = setup
        self._ssl_ca = ca_bundle_path(setup, self.options.ssl_ca, option="ssl_ca")

    # -- the RotationPlugin protocol -------------------------------------------------------------------------

    def create(self, ctx: RotationContext, current: Credential) -> dict[str, Any]:
        """Return CURRENT's value with a new generated password. No command: the engine stores it first."""
        self._check_strategy(ctx, "create")
        SECRET.login(ctx, "create", current, "CURRENT")
        value = dict(current.value)
        value["password"] = generate_password(ctx.password_policy)
        return value

    def stage(self, ctx: RotationContext, current: Credential, pending: Credential) -> None:
        """Add PENDING's password beside CURRENT's; both log in afterwards. Idempotent.

        Logs in as the admin (or as the user with CURRENT, falling back to PENDING if CURRENT is refused), runs
        ``ACL GETUSER <user>``, refuses a missing user (``ACL SETUSER`` would create one) or one flagged
        ``nopass`` (any password works: nothing to rotate), and, unless PENDING's hash is already listed,
        ``ACL SETUSER <user> #<sha256(PENDING)>``; then ``ACL SAVE`` / ``CONFIG REWRITE`` if ``persist`` says so.
        """
        self._check_strategy(ctx, "stage")
        old = SECRET.login(ctx, "stage", current, "CURRENT")
        new = SECRET.login(ctx, "stage", pending, "PENDING")
        check_same_account(ctx, "stage", old, new)
        with self._acl_session(ctx, "stage", current, old, new) as client:
            hashes = self._password_hashes(ctx, "stage", client, old)
            if password_hash(new.password) not in hashes:
                self._setuser(client, old.user, f"#{password_hash(new.password)}")

    def test(self, ctx: RotationContext, pending: Credential) -> None:
        """On a fresh connection, ``AUTH <user> <PENDING>`` (redis-py sends it at connect) and ``PING``.

        A refused login (WRONGPASS) raises TestFailed; a connection failure TransientError.
        """
        self._check_strategy(ctx, "test")
        login = SECRET.login(ctx, "test", pending, "PENDING")
        with self._session(ctx, "test", login, auth_error=TestFailed) as client:
            answer = client.ping()
        if answer is not True:
            raise TestFailed(
                f"plan {ctx.plan_id}: test: PING as user {login.user!r} at {login.where} answered {answer!r}",
                plan_id=ctx.plan_id,
                step="test",
            )

    def revoke(self, ctx: RotationContext, previous: Credential, current: Credential) -> None:
        """Remove PREVIOUS's password from the user; CURRENT's stays. Idempotent.

        Logs in as the admin (or as the user with CURRENT), runs ``ACL GETUSER <user>`` and, if PREVIOUS's hash is
        still listed, ``ACL SETUSER <user> !<sha256(PREVIOUS)>`` (then the ``persist`` command). Refuses
        (StepError) when CURRENT's hash is not listed: removing PREVIOUS could then lock every client out.
        Connections already authenticated with PREVIOUS stay open (Redis checks passwords at AUTH only).
        """
        self._check_strategy(ctx, "revoke")
        prev = SECRET.login(ctx, "revoke", previous, "PREVIOUS")
        cur = SECRET.login(ctx, "revoke", current, "CURRENT")
        if prev.user != cur.user:
            raise StepError(
                f"plan {ctx.plan_id}: revoke: PREVIOUS names user {prev.user!r} but CURRENT names {cur.user!r}; "
                f"this plugin never changes the user, so it will not touch {prev.user!r}\n  fix: remove its "
                f"password at {prev.where} by hand (ACL SETUSER ... resetpass) if it is no longer used",
                plan_id=ctx.plan_id,
                step="revoke",
            )
        if prev.password == cur.password:
            return
        with self._acl_session(ctx, "revoke", current, cur, None) as client:
            hashes = self._password_hashes(ctx, "revoke", client, cur)
            if password_hash(cur.password) not in hashes:
                raise StepError(
                    f"plan {ctx.plan_id}: revoke: CURRENT's password is not among user {cur.user!r}'s passwords at "
                    f"{cur.where}, so removing PREVIOUS could leave no working password\n  fix: add the CURRENT "
                    "password to the user (ACL SETUSER ... #<sha256>), then run `rotator resume`",
                    plan_id=ctx.plan_id,
                    step="revoke",
                )
            if password_hash(prev.password) in hashes:
                self._setuser(client, cur.user, f"!{password_hash(prev.password)}")

    def unstage(self, ctx: RotationContext, current: Credential, pending: Credential) -> None:
        """Roll back `stage`: CURRENT logs in and PENDING does not. Idempotent.

        Logs in as the admin (or as the user with CURRENT, falling back to PENDING), runs ``ACL GETUSER <user>``
        and one ``ACL SETUSER <user> [#<sha256(CURRENT)>] [!<sha256(PENDING)>]`` with whichever of the two is
        needed (nothing when neither is), then the ``persist`` command.
        """
        self._check_strategy(ctx, "unstage")
        old = SECRET.login(ctx, "unstage", current, "CURRENT")
        new = SECRET.login(ctx, "unstage", pending, "PENDING")
        check_same_account(ctx, "unstage", old, new)
        with self._acl_session(ctx, "unstage", current, old, new) as client:
            hashes = self._password_hashes(ctx, "unstage", client, old)
            changes = []
            if password_hash(old.password) not in hashes:
                changes.append(f"#{password_hash(old.password)}")
            if new.password != old.password and password_hash(new.password) in hashes:
                changes.append(f"!{password_hash(new.password)}")
            if changes:
                self._setuser(client, old.user, *changes)

    def discard(self, ctx: RotationContext, pending: Credential) -> None:
        """Roll back `create`: nothing to do, no command. The password was generated locally and is unknown to
        Redis unless `stage` ran (and `unstage` undoes that); the engine drops the PENDING version."""

    # -- drift repair (rotator reconcile) and dry runs: AdminReset, DryRunProbe ------------------------------

    def check_current(self, ctx: RotationContext, current: Credential) -> None:
        """``AUTH <user> <CURRENT>`` on a fresh connection and ``PING``; LoginRefused when Redis refuses it."""
        login = SECRET.login(ctx, "check", current, "CURRENT")
        with self._session(ctx, "check", login, probe=True):
            pass

    def check_admin(self, ctx: RotationContext, current: Credential) -> str:
        """``AUTH`` as the admin (option admin_secret_id, else the secret's masterarn) and ``PING``."""
        admin = SECRET.repair_admin(ctx, "check", current, self.options.admin_secret_id)
        with self._session(ctx, "check", admin, probe=True):
            pass
        return f"admin {admin.user!r} ({admin.what}) at {admin.where}"

    def reset_value(self, ctx: RotationContext, current: Credential) -> dict[str, Any]:
        """CURRENT's value with a new generated password, same user. No command; the admin secret is read (and
        must exist) first: the user's own CURRENT no longer logs in, so only an admin can reset it."""
        SECRET.repair_admin(ctx, "reconcile", current, self.options.admin_secret_id)
        value = dict(current.value)
        value["password"] = generate_password(ctx.password_policy)
        return value

    def reset(self, ctx: RotationContext, current: Credential, target: Credential) -> None:
        """As the admin: ``ACL GETUSER <user>`` (it must exist and not be nopass), then ``ACL SETUSER <user>
        resetpass #<sha256(target)>``: every other password of the user stops working (then the persist command)."""
        login = SECRET.login(ctx, "reconcile", target, "the new value")
        admin = SECRET.repair_admin(ctx, "reconcile", current, self.options.admin_secret_id)
        with self._session(ctx, "reconcile", admin, secrets=(login.password,)) as client:
            hashes = self._password_hashes(ctx, "reconcile", client, login)
            if hashes != {password_hash(login.password)}:
                self._setuser(client, login.user, "resetpass", f"#{password_hash(login.password)}")

    def dry_run(self, ctx: RotationContext, current: Credential) -> list[str]:
        """Changes nothing: ``AUTH`` with CURRENT and ``PING``; with an admin configured, the same as the admin."""
        self._check_strategy(ctx, "dry-run")
        login = SECRET.login(ctx, "dry-run", current, "CURRENT")
        with self._session(ctx, "dry-run", login, probe=True):
            pass
        facts = [f"CURRENT logs in as ACL user {login.user!r} at {login.where}"]
        if self.options.admin_secret_id or current.get("masterarn"):
            facts.append(f"{self.check_admin(ctx, current)} logs in and runs ACL SETUSER")
        else:
            facts.append(f"ACL SETUSER runs as {login.user!r} itself (no admin_secret_id or masterarn)")
        facts.append(
            "the next rotation adds a new password beside CURRENT's (both log in, no window) and removes the old "
            "one at revoke"
        )
        return facts

    # -- commands --------------------------------------------------------------------------------------------

    def _password_hashes(self, ctx: RotationContext, step: str, client: redis.Redis, target: DatabaseLogin) -> set[str]:
        # redis-py types every reply as one union; ACL GETUSER's (decoded) is a mapping or None.
        info = cast("dict[str, Any] | None", client.acl_getuser(target.user))
        if info is None:
            raise StepError(
                f"plan {ctx.plan_id}: {step}: there is no ACL user {target.user!r} at {target.where}; this plugin "
                "rotates existing users and never creates one\n  fix: check the secret's username, or create the "
                "user (ACL SETUSER ... on #<sha256> ~<keys> +<commands>) with the CURRENT password",
                plan_id=ctx.plan_id,
                step=step,
            )
        flags = {str(flag) for flag in info.get("flags") or []}
        if "nopass" in flags:
            raise StepError(
                f"plan {ctx.plan_id}: {step}: ACL user {target.user!r} at {target.where} is flagged nopass: any "
                "password logs in, so there is nothing to rotate\n  fix: give the user the CURRENT password "
                "(ACL SETUSER ... resetpass #<sha256>), then rotate",
                plan_id=ctx.plan_id,
                step=step,
            )
        return {str(h).lower() for h in info.get("passwords") or []}

    def _setuser(self, client: redis.Redis, user: str, *modifiers: str) -> None:
        """``ACL SETUSER <user> <modifiers>``, then the ``persist`` command. Modifiers are hashes, never passwords."""
        # redis-py leaves execute_command unannotated; acl_setuser cannot take arbitrary modifiers.
        client.execute_command("ACL", "SETUSER", user, *modifiers)  # type: ignore[no-untyped-call]
        if self.options.persist == "acl-save":
            client.acl_save()
        elif self.options.persist == "config-rewrite":
            client.config_rewrite()

    # -- logins ----------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _acl_session(
        self, ctx: RotationContext, step: str, current: Credential, cur: DatabaseLogin, new: DatabaseLogin | None
    ) -> Iterator[redis.Redis]:
        """A session allowed to run ACL SETUSER on the user: the admin's, else the user's own with CURRENT, else
        (when `new` is given and CURRENT is refused) with PENDING."""
        hidden = tuple(login.password for login in (cur, new) if login is not None)
        admin = self._admin_login(ctx, step, current, cur)
        if admin is not None:
            with self._session(ctx, step, admin, secrets=hidden) as client:
                yield client
            return
        try:
            with self._session(ctx, step, cur, secrets=hidden, probe=True):
                pass
            login = cur
        except AuthenticationFailed:
            if new is None:
                raise
            login = new
        with self._session(ctx, step, login, secrets=hidden) as client:
            yield client

    def _admin_login(
        self, ctx: RotationContext, step: str, current: Credential, target: DatabaseLogin
    ) -> DatabaseLogin | None:
        """The admin secret (option admin_secret_id, else CURRENT's masterarn), or None to act as the user itself."""
        secret_id = self.options.admin_secret_id or current.get("masterarn")
        if not secret_id:
            return None
        return SECRET.admin_login(ctx, step, str(secret_id), target)

    # -- connections and the error boundary ------------------------------------------------------------------

    @contextlib.contextmanager
    def _session(
        self,
        ctx: RotationContext,
        step: str,
        login: DatabaseLogin,
        *,
        auth_error: type[StepError] = AuthenticationFailed,
        secrets: Sequence[str] = (),
        probe: bool = False,
    ) -> Iterator[redis.Redis]:
        """One connection as `login` (AUTH at connect), closed afterwards. The one place where redis-py's errors
        become ours. With `probe`, only connects and authenticates."""
        hidden = [s for s in (login.password, *secrets) if s]
        # With single_connection_client, redis-py connects and authenticates in the constructor: a failure there
        # sent no command, so it is raised as its NotApplied kind (the step changed nothing at the server).
        connected = False
        try:
            client = redis.Redis(**self._connect_args(login))
            connected = True
            with contextlib.closing(client):
                if probe:
                    client.ping()
                yield client
        except (redis.exceptions.RedisError, OSError) as exc:
            mapped = self._map_error(ctx, step, login, exc, auth_error=auth_error, hidden=hidden)
            leaks = any(secret in str(exc) or password_hash(secret) in str(exc) for secret in hidden)
            raise (mapped if connected else as_not_applied(mapped)) from (None if leaks else exc)

    def _connect_args(self, login: DatabaseLogin) -> dict[str, Any]:
        args: dict[str, Any] = {
            "host": login.host,
            "port": login.port,
            "username": login.user,
            "password": login.password,
            "socket_connect_timeout": self.options.connect_timeout,
            "socket_timeout": self.options.socket_timeout,
            "single_connection_client": True,
            "decode_responses": True,
            "retry": Retry(NoBackoff(), 0),  # the engine retries TransientError, bounded by the step's deadline
            # No client_name: CLIENT SETNAME at connect fails with NOPERM for a user without +client|setname
            # (redis-py ignores a refused CLIENT SETINFO, not a refused SETNAME).
        }
        mode = self.options.tls or ("verify_identity" if _flag(login.ssl) else "disabled")
        if mode != "disabled":
            args.update(
                ssl=True,
                ssl_cert_reqs="none" if mode == "required" else "required",
                ssl_check_hostname=mode == "verify_identity",
                ssl_ca_certs=self._ssl_ca,
            )
        return args

    def _map_error(
        self,
        ctx: RotationContext,
        step: str,
        login: DatabaseLogin,
        exc: BaseException,
        *,
        auth_error: type[StepError],
        hidden: Sequence[str],
    ) -> RotatorError:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        reason = lines[0] if lines else type(exc).__name__
        for secret in hidden:
            reason = reason.replace(secret, "[REDACTED]").replace(password_hash(secret), "[REDACTED]")
        reason = scrub(reason)
        head = f"plan {ctx.plan_id}: {step}: as user {login.user!r} ({login.what}) at {login.where}: {reason}"
        lowered = reason.lower()
        errors = redis.exceptions
        if isinstance(exc, errors.AuthenticationWrongNumberOfArgsError) or "without any password configured" in lowered:
            return StepError(
                f"{head}\n  fix: this server has no ACL users (Redis before 6, or no password set); the redis plugin "
                "needs Redis 6+ with the user defined",
                plan_id=ctx.plan_id,
                step=step,
            )
        if isinstance(exc, errors.AuthenticationError) or lowered.startswith(("wrongpass", "noauth")):
            hint = f"check that {login.what} holds the user's password at {login.where}, and that the user is on"
            return auth_error(f"{head}\n  fix: {hint}", plan_id=ctx.plan_id, step=step)
        if isinstance(exc, errors.NoPermissionError) or lowered.startswith("noperm"):
            return StepError(
                f"{head}\n  fix: give {login.user!r} +acl|getuser +acl|setuser (and +acl|save or +config|rewrite "
                "with persist), or set the admin_secret_id option to an admin that has them",
                plan_id=ctx.plan_id,
                step=step,
            )
        if isinstance(exc, (errors.ConnectionError, errors.TimeoutError, OSError)):
            if any(marker in lowered for marker in _TLS_MARKERS) and "timed out" not in lowered:
                return StepError(
                    f"{head}\n  fix: check the server's TLS certificate against the tls and ssl_ca options (the "
                    'secret\'s "ssl": true means verify_identity with the system CA store)',
                    plan_id=ctx.plan_id,
                    step=step,
                )
            return TransientError(f"{head} (may pass on its own; retried)")
        if lowered.startswith(("loading", "busy", "tryagain", "masterdown")):
            return TransientError(f"{head} (may pass on its own; retried)")
        if "acl file" in lowered or "config file" in lowered or "rewriting config" in lowered:
            return StepError(
                f"{head}\n  fix: the persist option ({self.options.persist}) needs an ACL file (aclfile) for "
                "acl-save, or a writable config file for config-rewrite",
                plan_id=ctx.plan_id,
                step=step,
            )
        return StepError(head, plan_id=ctx.plan_id, step=step)

    # -- checks (the secret's JSON is read by SECRET; the checks the database plugins share: database_checks) ---

    def _check_strategy(self, ctx: RotationContext, step: str) -> None:
        check_strategy(
            ctx,
            step,
            plugin="redis",
            strategies=self.strategies,
            fix='strategy = "single-user": a Redis user holds the old and the new password at once, so there is no '
            "window to avoid",
        )

    def unverified_tls(self) -> str | None:
        """Why this plugin's connections may not verify the server's certificate, or None when they do: an optional
        method that `rotator validate` asks (a warning per plan; an error with [rotator] require_verified_tls)."""
        return unverified_tls_reason(
            "tls",
            self.options.tls,
            verified=("verify_ca", "verify_identity"),
            unset="true gives verify_identity, anything else no TLS at all",
            use="verify_identity",
            ca_option="ssl_ca",
        )


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "on")
    return bool(value)
