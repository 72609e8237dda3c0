"""Type `file`: render the CURRENT secret into a file on this host, then optionally run a reload command.

This is the one notifier that handles a secret value: it reads CURRENT from the store through the event
(`event.read_value()`), because its consumer is a local program that reads a file (an env file for systemd, a
config snippet for a proxy). The value goes to the file only: its secret strings are registered for scrubbing
(rotator.register_secret) before anything else happens, and errors name keys and paths, never values.

The file, the reload's `cwd` and any path its argv names must not resolve (symlinks too) into `state_dir` or onto
a local store's database, its key file or the journal (ComponentSetup.protected_paths): refused at load, and the
file's path checked again before each write.

The file is replaced atomically: the text is rendered first (a rendering error leaves the old file as it was),
then written to a temporary file in the same directory created with mode `mode` (default 0600) and, if given,
`owner`/`group`, fsynced, renamed over `path`, and the directory fsynced. A reader sees the old file or the new
one, never a part.

Formats (`format`):
- `json`: the value as a JSON object (`keys` picks some of its keys);
- `env`: `NAME=value` lines, NAME = `env_prefix` + the key upper-cased (other characters than A-Z, 0-9 and _
  become _), the value quoted for a POSIX shell when needed (`set -a; . FILE` reads it back; systemd's
  EnvironmentFile too); objects and lists as JSON. A NAME that changes how a program runs (PATH, LD_*, PYTHON*,
  IFS, BASH_ENV, ... see _EXECUTION_VARIABLES) is never written: refused at load when `keys` says which names
  there will be, else by a NotifyError naming the key when the value has one (fix: `env_prefix`);
- `template`: the file `template`, with `{key}` placeholders replaced by the value's keys (`{{` and `}}` for
  literal braces); a placeholder naming a key the value lacks is an error (naming the key).

Then `reload` (an argv list, or a table {argv, timeout, cwd, env, pass_env, transient_exit_codes} as the `command`
notifier's options) runs with the event's ROTATOR_* variables and ROTATOR_FILE = the path; never the value.
No remote call (the store read is the engine's). Options: path, format, template, keys, env_prefix, mode, owner,
group, reload.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import pwd
import re
import shlex
import string
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from msgspec import Meta
from rotator_plugins.notifiers.command import CommandRun, argv_problem, event_environment, run_command
from rotator_plugins.notifiers.events import SUCCESS_KINDS

from rotator import (
    ComponentSetup,
    ConfigError,
    Credential,
    NotifyError,
    Options,
    OptionsError,
    RotationEvent,
    RotatorError,
    TransientError,
    invalid,
    parse_options,
    register_secret,
    scrub,
)

_ENV_NAME_CHAR = re.compile(r"[^A-Z0-9_]")
_SHELL_SAFE = re.compile(r"^[A-Za-z0-9_@%+=:,./-]*\Z")

# Variables that change how a program runs (what it executes, loads, trusts or where it connects), which an env
# file read by `set -a; . FILE` or systemd's EnvironmentFile would set for the consumer: never written. An
# env_prefix ("APP_") makes a name harmless; a prefix that is itself one of these ("LD_") does not.
_EXECUTION_VARIABLES = frozenset(
    {
        "PATH", "IFS", "ENV", "BASH_ENV", "SHELL", "SHELLOPTS", "BASHOPTS", "CDPATH", "GLOBIGNORE",
        "PROMPT_COMMAND", "PS1", "PS2", "PS3", "PS4", "HOME", "TMPDIR", "GLIBC_TUNABLES", "GCONV_PATH", "LOCPATH",
        "NLSPATH", "HOSTALIASES", "RESOLV_HOST_CONF", "OPENSSL_CONF", "OPENSSL_MODULES", "SSL_CERT_FILE",
        "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY",
        "NO_PROXY", "PERLLIB", "PERLIO", "RUBYOPT", "RUBYLIB", "GEM_HOME", "GEM_PATH", "CLASSPATH",
        "JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS", "JDK_JAVA_OPTIONS", "EDITOR", "VISUAL", "PAGER", "BROWSER",
    }
)  # fmt: skip
_EXECUTION_PREFIXES = ("LD_", "DYLD_", "PYTHON", "PERL5", "NODE_", "NPM_CONFIG_", "PIP_", "RUBY", "GIT_", "BASH_FUNC_")


def execution_variable(name: str) -> bool:
    """Whether setting the variable `name` changes how a program runs (see _EXECUTION_VARIABLES)."""
    return name in _EXECUTION_VARIABLES or name.startswith(_EXECUTION_PREFIXES)


def env_name(key: str, prefix: str) -> str:
    """The variable an env file sets for `key`: the prefix and the key upper-cased, other characters as _."""
    name = prefix + _ENV_NAME_CHAR.sub("_", key.upper())
    return f"_{name}" if name[:1].isdigit() else name


class FileOptions(Options):
    path: Annotated[str, Meta(min_length=1)]
    format: Literal["json", "env", "template"] = "json"
    template: str | None = None
    keys: Annotated[list[str], Meta(min_length=1)] | None = None
    env_prefix: Annotated[str, Meta(pattern=r"^([A-Za-z_][A-Za-z0-9_]*)?\Z")] = ""
    mode: int | str = "0600"  # an octal string, or an int (0o600); an int once validated
    owner: str | int | None = None
    group: str | int | None = None
    reload: list[str] | CommandRun | None = None

    def __post_init__(self) -> None:
        self.mode = _mode(self.mode)
        if self.format == "template" and not self.template:
            raise invalid("template", 'format = "template" needs template = "PATH" (a file with {key} placeholders)')
        if self.format != "template" and self.template:
            raise invalid("template", 'template is only used with format = "template"')
        if isinstance(self.reload, list) and (problem := argv_problem(self.reload)):
            raise invalid("reload", problem)

    def reload_run(self) -> CommandRun | None:
        if self.reload is None or isinstance(self.reload, CommandRun):
            return self.reload
        return CommandRun(argv=self.reload)


def _mode(value: int | str) -> int:
    """The file mode from an octal string or an int; only modes that keep the secret from others."""
    try:
        mode = int(value, 8) if isinstance(value, str) else value
    except ValueError:
        raise invalid("mode", 'mode must be an octal string such as "0600"') from None
    if not 0 <= mode <= 0o777:
        raise invalid("mode", 'mode must be a permission mode such as "0600" or "0640"')
    if mode & 0o007:
        raise invalid("mode", f"mode {mode:04o} gives others access to a secret; use 0600 (or 0640 with group)")
    if not mode & 0o400:
        raise invalid("mode", f"mode {mode:04o} does not let the owner read the file")
    return mode


def _text(value: Any) -> str:
    """A value as it appears in the file: strings as they are, objects and lists as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _shell_quote(text: str) -> str:
    return text if text and _SHELL_SAFE.match(text) else shlex.quote(text)


def parse_template(text: str, source: str) -> list[tuple[str, str | None]]:
    """(literal text, key or None) pairs. Only plain `{key}` placeholders: no attribute or index lookup, no
    conversion or format spec, so a template can only read the value's keys."""
    parts: list[tuple[str, str | None]] = []
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise ConfigError(f"template {source}: {exc}", fix="write {key} placeholders, {{ and }} for braces") from None
    for literal, field, spec, conversion in parsed:
        if field is not None and (not field or any(c in field for c in ".[]") or spec or conversion):
            raise ConfigError(
                f"template {source}: placeholder {{{field}{'!' + conversion if conversion else ''}"
                f"{':' + spec if spec else ''}}} is not a plain {{key}}",
                fix="use {key} with a key of the secret's JSON value, and {{ }} for literal braces",
            )
        parts.append((literal, field))
    return parts


class FileNotifier:
    """Renders the CURRENT secret into a file, atomically, then runs an optional reload (see the docstring)."""

    # A failed run left CURRENT as it was: there is nothing new to write, so the config refuses the failure kinds
    # for this notifier (rotator.registry) and __call__ ignores one handed to it all the same.
    event_kinds = SUCCESS_KINDS

    def __init__(self, options: Mapping[str, Any], setup: ComponentSetup):
        self.options = parse_options(FileOptions, options)
        self.setup = setup
        self.path = setup.path(self.options.path)
        self._what = f"file notifier {setup.name}"
        key = f"notifiers.{setup.name}"
        self.mode = int(self.options.mode)
        self.uid = self._id(self.options.owner, pwd.getpwnam, "owner", key) if self.options.owner is not None else -1
        self.gid = self._id(self.options.group, grp.getgrnam, "group", key) if self.options.group is not None else -1
        self.template: list[tuple[str, str | None]] = []
        if self.options.template:
            source = setup.path(self.options.template)
            try:
                text = source.read_text()
            except OSError as exc:
                raise ConfigError(
                    f"cannot read the template {source}: {exc.strerror}", key=f"{key}.template", fix="check the path"
                ) from None
            self.template = parse_template(text, str(source))
        self.reload = self.options.reload_run()
        self._refuse_protected_outputs()
        if self.options.format == "env" and self.options.keys:
            for name in self.options.keys:
                if execution_variable(variable := env_name(name, self.options.env_prefix)):
                    raise OptionsError(
                        f"keys: {name!r} becomes the variable {variable}, which changes how the programs reading "
                        "the file run",
                        option="env_prefix" if self.options.env_prefix else "keys",
                        fix='set env_prefix (e.g. env_prefix = "APP_") so that every name is the application\'s own',
                    )

    def _refuse_protected_outputs(self) -> None:
        """The file (and the reload's working directory, and any path its argv names) must not resolve into
        state_dir or onto the local store, its key or the journal: a file written over store.key makes every
        secret unreadable."""
        outputs: list[tuple[str, str | os.PathLike[str]]] = [("path", self.options.path)]
        if self.reload is not None:
            if self.reload.cwd:
                outputs.append(("reload.cwd", self.reload.cwd))
            base = self.setup.path(self.reload.cwd) if self.reload.cwd else self.setup.config_dir
            outputs += [("reload", base / arg) for arg in self.reload.argv[1:] if "/" in arg or (base / arg).exists()]
        for option, output in outputs:
            protected = self.setup.protected_by(output)
            if protected is not None:
                raise OptionsError(
                    f"{output} resolves into or onto {protected}, which the rotator keeps (its state, a store or its "
                    "key, the journal): writing there would destroy them",
                    option=option,
                    fix="write the file outside state_dir, e.g. /etc/myapp/credentials.env",
                )

    @staticmethod
    def _id(value: str | int, lookup: Any, what: str, key: str) -> int:
        if isinstance(value, int):
            return value
        try:
            return int(lookup(value)[2])
        except KeyError:
            raise ConfigError(f"no {what} named {value!r} on this host", key=f"{key}.{what}") from None

    def __call__(self, event: RotationEvent) -> None:
        """Reads CURRENT through event.read_value() (the engine's store read), writes the file, runs reload."""
        if event.kind not in self.event_kinds:
            return  # a failure event: no new credential, so nothing to write or reload
        value = self._read(event)
        text = self.render(value)
        self.write(text)
        if self.reload is not None:
            run_command(
                self.reload,
                setup=self.setup,
                what=f"{self._what}: reload",
                extra_env={**event_environment(event), "ROTATOR_FILE": str(self.path)},
            )

    def _read(self, event: RotationEvent) -> Mapping[str, Any]:
        if event.read_value is None:
            raise NotifyError(
                f"{self._what}: this event gives no way to read the secret (RotationEvent.read_value is None); "
                "the file notifier needs the engine to pass it (the rotator's own engine does)"
            )
        try:
            value = event.read_value()
        except TransientError:
            raise
        except RotatorError as exc:
            raise NotifyError(scrub(f"{self._what}: reading CURRENT of {event.secret_id} failed: {exc}")) from None
        except Exception as exc:
            raise NotifyError(
                f"{self._what}: reading CURRENT of {event.secret_id} failed: {type(exc).__name__}"
            ) from None
        if not isinstance(value, Mapping):
            raise NotifyError(f"{self._what}: CURRENT of {event.secret_id} is not a JSON object")
        register_secret(*Credential("current", value).secret_strings())
        return value

    def render(self, value: Mapping[str, Any]) -> str:
        """The file's text. Errors name keys, never values."""
        fmt = self.options.format
        if fmt == "template":
            missing = sorted({k for _, k in self.template if k is not None and k not in value})
            if missing:
                raise NotifyError(
                    f"{self._what}: the template names {', '.join(missing)}, which the secret's value lacks "
                    f"(it has: {', '.join(sorted(map(str, value)))})"
                )
            return "".join(literal + (_text(value[k]) if k is not None else "") for literal, k in self.template)
        if self.options.keys:
            missing = [k for k in self.options.keys if k not in value]
            if missing:
                raise NotifyError(f"{self._what}: keys names {', '.join(missing)}, which the secret's value lacks")
            value = {k: value[k] for k in self.options.keys}
        if fmt == "json":
            return json.dumps(dict(value), indent=2, sort_keys=True) + "\n"
        lines: dict[str, str] = {}
        for key in sorted(value):
            name = env_name(str(key), self.options.env_prefix)
            if execution_variable(name):
                raise NotifyError(
                    f"{self._what}: the secret's key {key!r} would set {name}, which changes how the programs "
                    'reading the file run; fix: set env_prefix (e.g. "APP_") or keys (the keys to write)'
                )
            if name in lines:
                raise NotifyError(f"{self._what}: keys {key!r} and another both become the variable {name}")
            lines[name] = f"{name}={_shell_quote(_text(value[key]))}\n"
        return "".join(lines.values())

    def write(self, text: str) -> None:
        """Temporary file in the same directory (mode, owner, group set before any byte is written), fsync,
        rename over the path, fsync the directory."""
        protected = self.setup.protected_by(self.path)
        if protected is not None:  # checked at load too; again here, as a directory may have become a symlink
            raise NotifyError(f"{self._what}: {self.path} now resolves into or onto {protected}; nothing written")
        directory = self.path.parent
        try:
            fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{self.path.name}.", suffix=".tmp")
        except OSError as exc:
            raise NotifyError(f"{self._what}: cannot create a file in {directory}: {exc.strerror}") from None
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                os.fchmod(handle.fileno(), self.mode)
                if self.uid != -1 or self.gid != -1:
                    os.fchown(handle.fileno(), self.uid, self.gid)
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise NotifyError(f"{self._what}: cannot write {self.path}: {exc.strerror}") from None
        _fsync_directory(directory)


def _fsync_directory(directory: Path) -> None:
    """Makes the rename durable; some file systems refuse to open a directory, which is not an error."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
