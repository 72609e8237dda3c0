"""How every command reports: JSON documents, error messages, exit codes and times. A command module
(rotator/cli/*_commands.py) prints and fails through these, so that a new command behaves as the others do:

- `--json` prints exactly one JSON document on stdout, on success and on error alike (`error_document`), with the
  exit code unchanged; timestamps are RFC 3339 in UTC with `T` and `Z`;
- an error is one message on stderr naming the file, the key and the fix, never a traceback, every secret the
  process knows scrubbed out; exit 2 for bad usage or config, 1 for a failed rotation (EXIT_* below).

Imports stay light (no rich, no pydantic): `rotator --help` imports this module through every command module.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, NoReturn

import typer

from rotator.errors import ConfigError, RotatorError, describe
from rotator.logs import scrub

EXIT_OK = 0
EXIT_FAILED = 1  # a rotation failed: rolled back, could not start, or stuck
EXIT_USAGE = 2  # bad usage or config


def rfc3339(value: datetime | None) -> str | None:
    """`2024-05-01T02:00:00.123456Z`: RFC 3339 in UTC, the fraction only when there is one (None stays None)."""
    if value is None:
        return None
    if value.tzinfo is None:  # the journal's times are UTC; a naive one is read as such
        value = value.replace(tzinfo=UTC)
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if value.microsecond else "%Y-%m-%dT%H:%M:%SZ")


def when(value: datetime | None) -> str:
    """A time as the tables show it: RFC 3339 in UTC to the second, or `-`."""
    if value is None:
        return "-"
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return rfc3339(value)
    return str(value)  # paths, timedeltas, anything else: as text


# A timestamp written with an offset other than Z or +00:00, or with none (a naive datetime).
_NOT_UTC = re.compile(rb'"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:\+(?!00:00)\d\d:\d\d|-\d\d:\d\d)?"')
_PLUS_ZERO = re.compile(rb'("\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?)\+00:00"')


def json_text(data: Any) -> str:
    """`data` as indented JSON (msgspec: C speed, which the standard library's indenting encoder is not: 10,000
    status rows took it about a second). Datetimes are RFC 3339 in UTC (`Z`): msgspec writes a UTC one so, and in
    the rare document that holds another (an offset, or naive), every datetime is converted first."""
    import msgspec.json

    encoded = msgspec.json.encode(data, enc_hook=_json_default)
    if _NOT_UTC.search(encoded):
        encoded = msgspec.json.encode(_utc(data), enc_hook=_json_default)
    # Times the journal keeps as text (a run's details) are isoformat's "+00:00": written with Z, as every other.
    encoded = _PLUS_ZERO.sub(rb'\1Z"', encoded)
    return msgspec.json.format(encoded, indent=2).decode()


def _utc(data: Any) -> Any:
    """Datetimes anywhere in `data` as RFC 3339 strings (dicts and lists are walked; a row of strings and
    numbers, the usual case, costs one isinstance per value)."""
    if isinstance(data, dict):
        return {key: _utc(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [_utc(value) for value in data]
    if isinstance(data, datetime):
        return rfc3339(data)
    return data


def emit_json(data: Any) -> None:
    """The command's one JSON document, on stdout."""
    sys.stdout.write(json_text(data) + "\n")
    sys.stdout.flush()


def _color(stream: Any) -> bool:
    return not os.environ.get("NO_COLOR") and hasattr(stream, "isatty") and stream.isatty()


def _label(word: str, code: str) -> str:
    return f"\033[{code}m{word}\033[0m" if _color(sys.stderr) else word


def print_error(message: str) -> None:
    sys.stderr.write(f"{_label('error:', '1;31')} {scrub(message)}\n")
    sys.stderr.flush()


def print_warning(message: str) -> None:
    sys.stderr.write(f"{_label('warning:', '33')} {scrub(message)}\n")
    sys.stderr.flush()


def error_message(exc: ConfigError) -> str:
    """A ConfigError's own message, without the file and key its text starts with and the fix it ends with."""
    text = str(exc).split("\n  fix: ", 1)[0]
    for prefix in (exc.file, exc.key):
        if prefix and text.startswith(prefix + ": "):
            text = text[len(prefix) + 2 :]
    return text


def error_document(exc: BaseException) -> dict[str, Any]:
    """`{"error", "key", "fix"}` (and `file`, and `problems` when a config has several) for --json."""
    if isinstance(exc, ConfigError):
        document: dict[str, Any] = {
            "error": scrub(error_message(exc)),
            "key": exc.key,
            "fix": scrub(exc.fix) if exc.fix else None,
            "file": exc.file,
        }
        problems = getattr(exc, "problems", None)
        if problems:  # rotator.config.ConfigProblems: each problem in full, the error says how many
            document["error"] = f"{len(problems)} problems"
            document["problems"] = [error_document(problem) for problem in problems]
        return document
    if isinstance(exc, RotatorError):
        text = str(exc)
        message, _, fix = text.partition("\n  fix: ")
        return {"error": scrub(message.strip()), "key": None, "fix": scrub(fix.strip()) or None}
    return {"error": f"unexpected {describe(exc)}", "key": None, "fix": None}


def fail(
    message: str,
    code: int = EXIT_USAGE,
    *,
    json_output: bool = False,
    key: str | None = None,
    fix: str | None = None,
) -> NoReturn:
    """Report an error found by the command itself and exit with `code`."""
    error = ConfigError(message, key=key, fix=fix)
    print_error(str(error))
    if json_output:
        document = error_document(error)
        del document["file"]
        emit_json(document)
    raise typer.Exit(code)


@contextmanager
def reported_errors(json_output: bool = False) -> Iterator[None]:
    """Turn the project's errors into a message (and, with --json, an error document) and an exit code, never a
    traceback: ConfigError 2, other RotatorErrors their own exit_code, anything else 1."""
    try:
        yield
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        print_error("interrupted; run `rotator resume` to finish or roll back what was in flight")
        if json_output:
            emit_json({"error": "interrupted", "key": None, "fix": "run `rotator resume`"})
        raise typer.Exit(EXIT_FAILED) from None
    except Exception as exc:
        if isinstance(exc, ConfigError):
            code, text = EXIT_USAGE, str(exc)
        elif isinstance(exc, RotatorError):
            code, text = exc.exit_code, str(exc)
        else:
            code, text = EXIT_FAILED, f"unexpected {describe(exc)}"
        print_error(text)
        if json_output:
            emit_json(error_document(exc))
        raise typer.Exit(code) from None


# -- times as the tables show them ------------------------------------------------------------------------------


def span(seconds: float) -> str:
    """A length of time in one unit, as kubectl's AGE: 45s, 12m, 5h, 3d."""
    seconds = int(abs(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def age(value: datetime | None, now: datetime) -> str:
    """How long ago: `5m`, or `-`."""
    return span((now - value).total_seconds()) if value else "-"


def due(value: datetime | None, now: datetime) -> str:
    """When something is due: `in 29d`, `now`, `overdue 3h`, or `-`."""
    if value is None:
        return "-"
    seconds = (value - now).total_seconds()
    if abs(seconds) < 60:
        return "now"
    return f"in {span(seconds)}" if seconds > 0 else f"overdue {span(seconds)}"
