"""What every component factory receives besides its own options, and the secret-reference resolver.

An entry point in rotator.plugins, rotator.stores or rotator.notifiers names a factory called as
`factory(options, setup)`: `options` is the component's table from the config minus `type`, and `setup` is a
ComponentSetup. Options that hold a secret are written `env:VAR` (or `file:PATH`) in the config, never inline,
and resolved here at the moment they are needed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from rotator.errors import ConfigError

SECRET_REF_PREFIXES = ("env:", "file:")


@dataclass(frozen=True)
class ComponentSetup:
    name: str  # the component's name in the config ([stores.NAME]) or the plan id for plugins
    config_dir: Path
    state_dir: Path
    config_file: str = ""
    # What no component may write over: the state directory, the local stores' databases and keys, the journal
    # (Config.setup fills it in; a component writing files checks its paths with `protected_by`).
    protected_paths: tuple[Path, ...] = ()

    def path(self, value: str | os.PathLike[str]) -> Path:
        """A path from the config, relative to the config file."""
        path = Path(value).expanduser()
        return path if path.is_absolute() else (self.config_dir / path)

    def protected_by(self, path: str | os.PathLike[str]) -> Path | None:
        """The protected path that `path` (relative to the config file) would write into or over, symlinks
        resolved (a directory: anything inside it; a file: it, and SQLite's -wal, -shm and -journal beside it)."""
        target = Path(os.path.realpath(self.path(path)))
        for protected in self.protected_paths:
            real = Path(os.path.realpath(protected))
            if target == real or real in target.parents:
                return protected
            if target.parent == real.parent and target.name in {
                f"{real.name}{s}" for s in ("-wal", "-shm", "-journal")
            }:
                return protected
        return None


def is_secret_ref(value: object) -> bool:
    return isinstance(value, str) and value.startswith(SECRET_REF_PREFIXES)


def resolve_secret_ref(ref: str, *, key: str, setup: ComponentSetup | None = None) -> str:
    """The value behind `env:VAR` or `file:PATH`. Errors name the key, never the value."""
    if ref.startswith("env:"):
        var = ref[4:]
        value = os.environ.get(var)
        if not value:
            raise ConfigError(
                f"environment variable {var} is not set",
                key=key,
                fix=f"export {var}=... in the service's environment (or point {key} at another variable)",
            )
        return value
    if ref.startswith("file:"):
        path = setup.path(ref[5:]) if setup else Path(ref[5:])
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise ConfigError(
                f"cannot read {path}: {exc.strerror}", key=key, fix="check the path and its permissions"
            ) from None
    raise ConfigError("a secret must be a reference, not a value", key=key, fix=f'write {key} = "env:VAR"')
