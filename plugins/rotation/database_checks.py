"""The checks the postgres, mysql and redis plugins share, written once: the CA bundle an option names, the plan's
strategy, that CURRENT and PENDING name one account in a single-user rotation, and what `rotator validate` says of
a TLS mode that does not verify the server.

Each check raises the error its caller would: a ConfigError naming the option for a CA file that is not there
(at load, before any plan runs), a StepRefused for a strategy or an account the plugin cannot rotate (nothing was
sent to the target). Messages name the plan, the step and the fix, never a value of the secret.
"""

from __future__ import annotations

from collections.abc import Collection

from rotator_plugins.rotation.database_secret import DatabaseLogin

from rotator import ComponentSetup, ConfigError, RotationContext, StepRefused


def ca_bundle_path(setup: ComponentSetup | None, value: str | None, *, option: str) -> str | None:
    """The CA bundle that `option` names (a path relative to the config file), checked to be a file; None when the
    option is unset. Without a setup (a plugin built in code) the path is taken as given."""
    if not value:
        return None
    path = setup.path(value) if setup else None
    if path is None:
        return value
    if not path.is_file():
        raise ConfigError(
            f"{option} {path} does not exist",
            file=setup.config_file if setup else None,
            key=option,
            fix=f"point {option} at a PEM CA bundle (relative paths start at the config file)",
        )
    return str(path)


def check_strategy(ctx: RotationContext, step: str, *, plugin: str, strategies: Collection[str], fix: str) -> None:
    """The plan's strategy is one of the plugin's `strategies`, else a StepRefused with `fix`."""
    if ctx.strategy not in strategies:
        raise StepRefused(
            f"plan {ctx.plan_id}: {step}: the {plugin} plugin has no strategy {ctx.strategy!r}\n  fix: {fix}",
            plan_id=ctx.plan_id,
            step=step,
        )


def check_same_account(
    ctx: RotationContext, step: str, old: DatabaseLogin, new: DatabaseLogin, *, account: str = "user"
) -> None:
    """In a single-user rotation CURRENT (`old`) and PENDING (`new`) name the same account (`account`: what the
    target calls it, "role" in PostgreSQL), else a StepRefused: a PENDING for another account is a stale one."""
    if old.user != new.user:
        raise StepRefused(
            f"plan {ctx.plan_id}: {step}: single-user rotation, but CURRENT names {account} {old.user!r} and "
            f"PENDING {new.user!r}\n  fix: discard the PENDING version and rotate again",
            plan_id=ctx.plan_id,
            step=step,
        )


def unverified_tls_reason(
    option: str, mode: str | None, *, verified: Collection[str], unset: str, use: str, ca_option: str
) -> str | None:
    """Why connections with TLS mode `mode` (the plugin's `option`) may not verify the server's certificate, or
    None when they do (`mode` in `verified`). `unset` says what happens without the option; `use` is the mode to
    recommend and `ca_option` the option for a private CA."""
    if mode is None:
        return f'{option} is unset, so the secret\'s "ssl" field decides: {unset}; set {option} = "{use}"'
    if mode in verified:
        return None
    return (
        f'{option} = "{mode}" does not verify the server\'s certificate: use "{use}" (with {ca_option} for a '
        "private CA)"
    )
