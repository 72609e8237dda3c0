"""Options that several commands share, declared once so that they read the same everywhere (names, help, choices).

`--config` is accepted before the command (`rotator -c FILE status`, kept by the root callback) and after it
(`rotator status -c FILE`); the one after wins. Also how a `--file` option's JSON object is read (store put, import).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

LogLevel = Literal["debug", "info", "warning", "error"]

# str, not Path: typer 0.2x coerces each value through a pydantic TypeAdapter, and the first one for a Path costs
# about 40 ms (its schema); a str costs 0.1 ms. The loader makes the path.
ConfigOption = Annotated[
    str | None,
    typer.Option(
        "--config",
        "-c",
        metavar="FILE",
        help="The config file (else ROTATOR_CONFIG, else ./rotator.toml); may also come before the command.",
        show_default=False,
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print one JSON document on stdout (errors too: error, key, fix).")
]
WideOption = Annotated[
    bool, typer.Option("--wide", "-w", help="Every column, and long texts in full instead of cut to the terminal.")
]
LogLevelOption = Annotated[
    LogLevel, typer.Option("--log-level", help="Log lines on stderr from this level up.", case_sensitive=False)
]
ConcurrencyOption = Annotated[
    int | None,
    typer.Option(
        "--concurrency",
        "-j",
        min=1,
        max=256,
        metavar="N",
        help="Plans at once (default: rotator.concurrency, 8).",
        show_default=False,
    ),
]
PlansArgument = Annotated[list[str] | None, typer.Argument(metavar="PLAN", help="Plan ids.", show_default=False)]
TagOption = Annotated[
    list[str] | None,
    typer.Option("--tag", "-t", metavar="TAG", help="Every plan with this tag (repeatable).", show_default=False),
]
AllOption = Annotated[bool, typer.Option("--all", help="Every enabled plan.")]
ReasonOption = Annotated[
    str | None, typer.Option("--reason", metavar="TEXT", help="Why (kept in the history).", show_default=False)
]

_before_command: dict[str, str | Path | None] = {"config": None}


def remember_root_config(path: str | Path | None) -> None:
    """The root callback's `--config` (given before the command), for this invocation."""
    _before_command["config"] = path


def config_choice(after_command: str | Path | None) -> str | Path | None:
    """The config file the user chose: after the command, else before it; None lets the loader fall back to
    ROTATOR_CONFIG, then ./rotator.toml."""
    return after_command or _before_command["config"]


def read_json_object(file: str | Path, key: str = "--file") -> dict[str, Any]:
    """The JSON object in `file` ('-' for stdin), or a ConfigError naming the option and the fix."""
    from rotator.errors import ConfigError

    try:
        text = sys.stdin.read() if str(file) == "-" else Path(file).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read {file}: {exc.strerror}", key=key, fix="check the path") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{file} is not JSON ({exc.msg}, line {exc.lineno})", key=key, fix="the file must hold one JSON object"
        ) from None
    if not isinstance(value, dict):
        raise ConfigError(
            f"{file} holds JSON but not an object",
            key=key,
            fix='write an object such as {"username": "...", "password": "..."}',
        )
    return value
