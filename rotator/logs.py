"""structlog set-up: JSON lines in the daemon, readable lines in a terminal, secrets redacted in both.

Redaction works two ways (invariant 6):
- a field whose name says it holds a secret (password, token, secret_access_key, ...) is replaced;
- every secret value the engine has handled in this process is registered (`register_secret`) and scrubbed
  out of every string of every event, exception text included, whatever the field is called.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections import OrderedDict
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

import structlog

REDACTED = "[REDACTED]"
_SECRET_FIELD = re.compile(r"pass(word)?|secret|token|api_?key|private|credential|authorization", re.I)
_MAX_REMEMBERED = 8192


class _SecretRegistry:
    """The secret strings seen by this process, newest kept, for scrubbing free text."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: OrderedDict[str, None] = OrderedDict()

    def add(self, values: Iterable[str]) -> None:
        with self._lock:
            for value in values:
                if len(value) < 6:
                    continue  # too short to scrub without mangling ordinary words
                self._values[value] = None
                self._values.move_to_end(value)
            while len(self._values) > _MAX_REMEMBERED:
                self._values.popitem(last=False)

    def scrub(self, text: str) -> str:
        with self._lock:
            values = list(self._values)
        for value in values:
            if value in text:
                text = text.replace(value, REDACTED)
        return text


_registry = _SecretRegistry()


def register_secret(*values: str) -> None:
    """Remember secret strings so that they are scrubbed from every log line and error message."""
    _registry.add(values)


def scrub(text: str) -> str:
    """`text` with every registered secret replaced by [REDACTED]."""
    return _registry.scrub(text)


def _redact_value(key: str, value: Any) -> Any:
    if isinstance(value, str):
        if _SECRET_FIELD.search(key) and not key.endswith(("_id", "_ref", "_version")):
            return REDACTED
        return scrub(value)
    if isinstance(value, dict):
        return {k: _redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact_value(key, v) for v in value]
    if isinstance(value, BaseException):
        return scrub(f"{type(value).__name__}: {value}")
    return value


def redact_processor(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: redact secret-named fields and scrub registered secrets from all text."""
    for key in list(event_dict):
        event_dict[key] = _redact_value(key, event_dict[key])
    return event_dict


def configure(*, json: bool | None = None, level: str = "info", stream: TextIO | None = None) -> None:
    """Set up structlog. `json=None` chooses JSON when the stream is not a terminal."""
    stream = stream or sys.stderr
    if json is None:
        json = not stream.isatty()
    renderer: Any
    if json:
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(
            colors=stream.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redact_processor,  # after format_exc_info, so that tracebacks are scrubbed too
        renderer,
    ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str = "rotator") -> Any:
    return structlog.get_logger(name)


bind_contextvars = structlog.contextvars.bind_contextvars
bound_contextvars = structlog.contextvars.bound_contextvars
