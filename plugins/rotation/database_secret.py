"""The secret's JSON in the shape of AWS's rotation samples, read once for the postgres, mysql and redis plugins.

The shape: ``{"engine", "host", "port", "username", "password", "dbname", "masterarn", "ssl"}``. Each plugin states
its variant in one `SecretShape` (the engines it accepts, the keys it requires, its defaults, the words of its
messages) and reads CURRENT, PENDING, PREVIOUS and the admin secret into a `DatabaseLogin` through it. A bad value
is a StepRefused (a StepError that sent nothing to the target) naming the plan, the step, which secret and the fix;
no message carries a value of the secret.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from rotator import Credential, RotationContext, SecretNotFound, StepRefused


@dataclass(frozen=True)
class DatabaseLogin:
    """Where and as whom to connect. `what` names it in messages ("CURRENT", "the admin secret ...")."""

    what: str
    host: str
    port: int
    user: str
    password: str = field(repr=False)
    dbname: str | None = None
    ssl: Any = None

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


def ssl_choice(value: Any) -> bool | None:
    """The secret's "ssl" as AWS's sample functions read it: True (TLS required and verified) for true or "true",
    False (no TLS) for false or "false", None (TLS if the server offers it, else plain) when absent or anything else."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None


def secret_port(ctx: RotationContext, step: str, raw: Any, what: str) -> int:
    """`raw` (the secret's "port", a number or a string) as a TCP port, else a StepError naming `what`."""
    try:
        port = int(raw)
    except (TypeError, ValueError):
        port = 0
    if not 0 < port < 65536:
        raise StepRefused(
            f"plan {ctx.plan_id}: {step}: {what} has port {raw!r}, not a TCP port", plan_id=ctx.plan_id, step=step
        )
    return port


@dataclass(frozen=True)
class SecretShape:
    """One plugin's reading of the shape."""

    engine_name: str  # in messages: "... is for engine 'x', not <engine_name>"
    engines: Collection[str] | None  # accepted "engine" values (lower case); None: the secret names no engine
    required: tuple[str, ...]  # keys that must be non-empty; the admin secret needs the same but "host"
    missing_fix: str  # the fix when a required key is missing
    default_port: int
    default_user: str = ""
    default_dbname: str | None = None
    account: str = "user"  # what the target calls the rotated account ("role" in PostgreSQL)
    admin_option: str = "masterarn"  # where the admin secret is named, for the fix when its host is another
    admin_rights: str = ""  # what the masterarn admin can do, for the error when masterarn is missing
    reset_rights: str = ""  # what reconcile's admin must be able to do, when it differs from admin_rights

    def login(self, ctx: RotationContext, step: str, cred: Credential, what: str) -> DatabaseLogin:
        """CURRENT, PENDING or PREVIOUS (`what`) read into a login: engine checked, required keys present, port
        parsed, the defaults filled in."""
        value = cred.value
        engine = value.get("engine")
        if self.engines is not None and engine is not None and str(engine).lower() not in self.engines:
            raise StepRefused(
                f"plan {ctx.plan_id}: {step}: {what} of {ctx.secret_id} is for engine {engine!r}, not "
                f"{self.engine_name}",
                plan_id=ctx.plan_id,
                step=step,
            )
        missing = [key for key in self.required if not value.get(key)]
        if missing:
            raise StepRefused(
                f"plan {ctx.plan_id}: {step}: {what} of {ctx.secret_id} has no {', '.join(missing)}\n"
                f"  fix: {self.missing_fix}",
                plan_id=ctx.plan_id,
                step=step,
            )
        dbname = value.get("dbname") or self.default_dbname
        return DatabaseLogin(
            what=what,
            host=str(value["host"]),
            port=secret_port(ctx, step, value.get("port", self.default_port), what),
            user=str(value.get("username") or self.default_user),
            password=str(value["password"]),
            dbname=str(dbname) if dbname else None,
            ssl=value.get("ssl"),
        )

    def masterarn(self, ctx: RotationContext, step: str, current: Credential) -> str:
        """CURRENT's "masterarn" (alternating-users needs it), else a StepError with the fix."""
        arn = current.get("masterarn")
        if not arn:
            raise StepRefused(
                f'plan {ctx.plan_id}: {step}: alternating-users needs "masterarn" in the secret {ctx.secret_id}, '
                f"naming the admin secret that can {self.admin_rights}\n  fix: add masterarn to the secret, or use "
                'strategy = "single-user"',
                plan_id=ctx.plan_id,
                step=step,
            )
        return str(arn)

    def admin_login(self, ctx: RotationContext, step: str, secret_id: str, target: DatabaseLogin) -> DatabaseLogin:
        """The admin secret `secret_id` (read from the store) as a login to the target's server and database.

        As AWS's multi-user samples: the admin's host must be the target's host (it defaults to it); its port and
        "ssl" default to the target's."""
        try:
            value = ctx.read_secret(secret_id).value
        except SecretNotFound as exc:
            # Nothing was sent to the target yet: a refusal, so the run rolls back cleanly instead of needing the
            # same missing admin for its compensation.
            raise StepRefused(
                f"plan {ctx.plan_id}: {step}: the admin secret {secret_id!r} (named by {self.admin_option}) is not in "
                f"the plan's store ({exc})\n  fix: store it with `rotator store put {secret_id} --file admin.json` "
                '(a JSON object with "username" and "password" of an account that can '
                f"{self.admin_rights or 'manage the ' + self.account}), or correct {self.admin_option}",
                plan_id=ctx.plan_id,
                step=step,
            ) from None
        missing = [key for key in self.required if key != "host" and not value.get(key)]
        if missing:
            raise StepRefused(
                f"plan {ctx.plan_id}: {step}: the admin secret {secret_id} has no {', '.join(missing)}",
                plan_id=ctx.plan_id,
                step=step,
            )
        host = str(value.get("host") or target.host)
        if host.lower() != target.host.lower():
            raise StepRefused(
                f"plan {ctx.plan_id}: {step}: the admin secret {secret_id} is for host {host}, but the rotated "
                f"{self.account} lives at {target.host}\n  fix: point {self.admin_option} at the admin secret of "
                f"{target.host}",
                plan_id=ctx.plan_id,
                step=step,
            )
        what = f"the admin secret {secret_id}"
        return DatabaseLogin(
            what=what,
            host=host,
            port=secret_port(ctx, step, value.get("port", target.port), what),
            user=str(value.get("username") or self.default_user),
            password=str(value["password"]),
            dbname=target.dbname,
            ssl=value.get("ssl", target.ssl),
        )

    def repair_admin(
        self, ctx: RotationContext, step: str, current: Credential, admin_secret_id: str | None
    ) -> DatabaseLogin:
        """The admin that `rotator reconcile` resets the account with: the plugin's admin_secret_id option, else
        CURRENT's masterarn; a StepRefused saying exactly what to add when there is neither."""
        target = self.login(ctx, step, current, "CURRENT")
        secret_id = admin_secret_id or current.get("masterarn")
        if not secret_id:
            raise StepRefused(
                f"plan {ctx.plan_id}: {step}: no admin credential to reset {self.account} {target.user!r} with\n"
                f'  fix: add "masterarn": "<admin secret id>" to the secret {ctx.secret_id}, or set admin_secret_id '
                "in the plan's plugin table, naming a secret in the plan's store that holds the username and password "
                f"of an account that can {self.reset_rights or self.admin_rights}",
                plan_id=ctx.plan_id,
                step=step,
            )
        return self.admin_login(ctx, step, str(secret_id), target)
