"""structlog set-up: JSON lines in the daemon, readable lines in a terminal, secrets redacted in both.

Redaction works two ways (invariant 6):
- a field whose name says it holds a secret (password, token, secret_access_key, ...) is replaced;
- every secret value the engine has handled in this process is registered (`register_secret`) and scrubbed
  out of every string of every event, exception text included, whatever the field is called: in the forms a
  vendor or a library echoes it (percent-encoded, JSON- or HTML-escaped, base64 at any byte offset) and any piece
  of 12 or more characters of those (a vendor answering "key sk/EvAG... invalid").

Standard-library logging (urllib3, APScheduler, botocore, ...) goes through the same processors and renderer: a
structlog ProcessorFormatter on the root logger's one handler.

structlog itself is imported at the first line logged at the configured level or above, not with this module nor
by `configure` or `get_logger`: the errors and the scrubber are imported by every command, `rotator --help`
included, and a command that logs nothing at its level (rotate-now at warning, when all goes well) need not pay
structlog's import (about 30 ms with asyncio; with rich, when installed, more than the whole of `--help` may cost:
bench/cli_startup.py). The plan and run bound to a context are kept in this module's own context variable.
"""

from __future__ import annotations

import base64
import functools
import html
import json as json_text
import logging
import re
import sys
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import compress
from types import MappingProxyType, ModuleType
from typing import Any, TextIO, cast
from urllib.parse import quote

REDACTED = "[REDACTED]"
_SECRET_FIELD = re.compile(r"pass(word)?|secret|token|api_?key|private|credential|authorization", re.I)

# Values shorter than this are not scrubbed at all: they would mangle ordinary words.
MIN_SECRET_LENGTH = 6
# A piece this long of any form of a registered secret is redacted wherever it appears ("key sk/EvAG... invalid").
# Secrets shorter than this are replaced only where one of their forms appears whole.
MIN_PIECE_LENGTH = 12
# Bounds (the least recently registered secrets are forgotten first): how many secrets, and how many entries
# their index may hold (about 115 bytes each, so at most about 23 MB: a 32-character password takes about 110
# entries in the sparse layout below, a 4096-character one about 15,000; bench/scrub.py measures it).
MAX_SECRETS = 4096
MAX_INDEX_ENTRIES = 200_000
# Up to this many entries the index uses the dense layout (fewer lookups per text); past it, the sparse one.
DENSE_INDEX_ENTRIES = 40_000

_GRAM = 6


@dataclass(frozen=True)
class _Layout:
    """How texts are searched for pieces of MIN_PIECE_LENGTH (12) or more characters, in time linear in the text.

    A text's 6-character grams are looked up every `stride` positions; a form's grams are in the index at the
    positions p with p % period in `phases`. A 12-character piece holds 7 consecutive gram starts, so the layout
    must index, among any 7 consecutive positions of a form, one of every remainder modulo `stride`: then one of
    them lines up with a looked-up position of the text whatever the piece's offset (tests/unit/test_scrub.py
    checks both layouts at every offset). A hit is extended both ways against its form; a run of 12 or more
    characters is redacted.
    """

    stride: int
    period: int
    phases: tuple[int, ...]

    def grams(self, form: str) -> set[str]:
        """The grams of `form` the index holds."""
        length = len(form)
        slices = self._form_slices(length) if length <= 256 else self._form_slices.__wrapped__(self, length)
        return set(map(form.__getitem__, slices))

    @functools.lru_cache(maxsize=512)  # noqa: B019 - two layouts, short forms' lengths, for the process's life
    def _form_slices(self, length: int) -> list[slice]:
        return [
            slice(start, start + _GRAM)
            for base in range(0, length - _GRAM + 1, self.period)
            for start in (base + phase for phase in self.phases)
            if start + _GRAM <= length
        ]

    def slices(self, length: int) -> Iterable[slice]:
        """Where a text of `length` characters is looked up."""
        count = (length - _GRAM) // self.stride + 1
        if count <= len(self._slices):
            return self._slices[:count]
        return map(slice, range(0, length - _GRAM + 1, self.stride), range(_GRAM, length + 1, self.stride))

    @functools.cached_property
    def _slices(self) -> list[slice]:  # made once: cheaper than building slices for every text
        return [slice(start, start + _GRAM) for start in range(0, 8192, self.stride)]


# Dense: every gram of a form, a text looked up every 7th position. Sparse: half the grams (p % 6 in 0, 1, 2),
# a text looked up every 3rd position (among 7 consecutive positions, 3 or 4 indexed ones: every remainder mod 3).
_DENSE = _Layout(stride=7, period=1, phases=(0,))
_SPARSE = _Layout(stride=3, period=6, phases=(0, 1, 2))


def _one_alphabet(text: str) -> str:
    """The two base64 alphabets as one, in the index and in a searched text: "-" and "_" stand for "+" and "/"
    (two str.replace calls: ten times cheaper than str.translate)."""
    return text.replace("-", "+").replace("_", "/")


def _percent_forms(value: str) -> set[str]:
    """As URLs carry it: urllib's quote (with and without "/" kept) and quote_plus (form bodies, requests' params)."""
    # One quote() (pure Python, the slow part): the others differ from it only in "/" kept and " " as "+".
    every = quote(value, safe="")
    plus = every.replace("%20", "+")
    return {every, every.replace("%2F", "/"), plus, plus.replace("%2F", "/")}


def _json_forms(value: str) -> set[str]:
    """As a JSON string's body: with and without \\u escapes, "/" also as "\\/" (PHP, some Java libraries), and
    escaped twice (JSON inside a JSON string)."""
    forms: set[str] = set()
    for text in (json_text.dumps(value)[1:-1], json_text.dumps(value, ensure_ascii=False)[1:-1]):
        forms.update((text, text.replace("/", "\\/"), json_text.dumps(text)[1:-1]))
    return forms


def _base64_forms(value: str) -> set[str]:
    """base64 of the value's UTF-8 bytes (and Latin-1, as requests encodes Basic credentials, when that differs),
    standard and URL-safe alphabets: the whole encoding (padded and not), and the characters that depend on the
    value alone when it starts 1 or 2 bytes into the encoded data (as in Basic auth's base64("user:" + password))."""
    encodings = [value.encode()]
    try:
        if (latin1 := value.encode("latin-1")) != encodings[0]:
            encodings.append(latin1)
    except UnicodeEncodeError:
        pass
    forms: set[str] = set()
    for data in encodings:
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            whole = encode(data).decode()
            forms.update((whole, whole.rstrip("=")))
            for offset in (1, 2):
                shifted = encode(b"\0" * offset + data).decode()
                # Character i holds bits 6i..6i+5: it depends on the value alone from bit 8*offset to 8*(offset+len).
                forms.add(shifted[-(-8 * offset // 6) : 8 * (offset + len(data)) // 6])
    return forms


def secret_forms(value: str) -> set[str]:
    """The forms in which `value` may be echoed back: itself, percent-encoded, JSON-escaped, HTML-escaped, base64
    (those of MIN_SECRET_LENGTH characters or more)."""
    forms = {value, html.escape(value), *_percent_forms(value), *_json_forms(value), *_base64_forms(value)}
    return {form for form in forms if len(form) >= MIN_SECRET_LENGTH}


def _contained_dropped(forms: Iterable[str]) -> list[str]:
    """`forms` without those found inside a longer one (longest first)."""
    kept: list[str] = []
    for form in sorted(forms, key=len, reverse=True):
        if not any(form in longer for longer in kept):
            kept.append(form)
    return kept


def _common_prefix(text: str, start: int, form: str, at: int) -> int:
    """How many characters text[start:] and form[at:] have in common (binary search over C-level compares)."""
    low, high = 0, min(len(text) - start, len(form) - at)
    if text[start : start + high] == form[at : at + high]:
        return high
    while high - low > 1:  # text[start:start+low] matches, text[start:start+high] does not
        middle = (low + high) // 2
        if text[start : start + middle] == form[at : at + middle]:
            low = middle
        else:
            high = middle
    return low


def _common_suffix(text: str, end: int, form: str, at: int) -> int:
    """How many characters end text[:end] and form[:at] alike."""
    low, high = 0, min(end, at)
    if text[end - high : end] == form[at - high : at]:
        return high
    while high - low > 1:
        middle = (low + high) // 2
        if text[end - middle : end] == form[at - middle : at]:
            low = middle
        else:
            high = middle
    return low


class _SecretRegistry:
    """The secret strings seen by this process, with their encoded forms, for scrubbing free text.

    A secret of MIN_PIECE_LENGTH or more characters: each of its forms goes into the gram index, so any piece of
    12 or more characters of any form is found. A shorter one: each form is replaced where it appears whole.
    Bounded: past `max_secrets` secrets or `max_index_entries` index entries the least recently registered secret
    is dropped. Readers take no lock: the (layout, index) pair is swapped whole, an index value is replaced, never
    changed in place, and the exact forms are one tuple.
    """

    def __init__(
        self,
        max_secrets: int = MAX_SECRETS,
        max_index_entries: int = MAX_INDEX_ENTRIES,
        dense_index_entries: int = DENSE_INDEX_ENTRIES,
    ) -> None:
        self.max_secrets = max_secrets
        self.max_index_entries = max_index_entries
        self.dense_index_entries = dense_index_entries
        self._lock = threading.Lock()
        # secret -> (its indexed forms, its exact forms), least recently registered first
        self._secrets: OrderedDict[str, tuple[tuple[str, ...], tuple[str, ...]]] = OrderedDict()
        self._indexed_users: dict[str, int] = {}  # indexed form -> how many registered secrets have it
        self._exact_users: dict[str, int] = {}  # exact form -> how many registered secrets have it
        # the layout, and gram -> the indexed form(s) holding it
        self._index: tuple[_Layout, dict[str, str | tuple[str, ...]]] = (_DENSE, {})
        self._entries = 0  # (gram, form) pairs in the index
        self._exact: tuple[str, ...] = ()  # longest first
        # Registered but not yet indexed: indexing a secret's forms costs ~100 us, and most secrets a rotation
        # handles never meet a log line or an error. The first scrub indexes them (before it looks at any text).
        self._waiting: dict[str, None] = {}

    def __len__(self) -> int:
        self._index_waiting()
        return len(self._secrets)

    @property
    def index_entries(self) -> int:
        self._index_waiting()
        return self._entries

    @property
    def layout(self) -> str:
        self._index_waiting()
        return "dense" if self._index[0] is _DENSE else "sparse"

    def add(self, values: Iterable[Any]) -> None:
        with self._lock:
            for value in values:
                if isinstance(value, str) and len(value) >= MIN_SECRET_LENGTH:
                    self._waiting[value] = None

    def _index_waiting(self) -> None:
        if not self._waiting:
            return
        with self._lock:
            # _waiting is emptied only when its secrets are in the index: a reader that finds it empty must
            # find them there (emptied first, a scrub in another thread while this one indexes would skip the lock
            # and search an index still missing the very secret that thread registered a moment before).
            waiting = self._waiting
            exact_changed = False
            for value in waiting:
                if not isinstance(value, str) or len(value) < MIN_SECRET_LENGTH:
                    continue
                if value in self._secrets:
                    self._secrets.move_to_end(value)
                    continue
                forms = secret_forms(value)
                if len(value) >= MIN_PIECE_LENGTH:
                    canonical = {_one_alphabet(f) for f in forms if len(f) >= MIN_PIECE_LENGTH}
                    indexed = tuple(_contained_dropped(canonical))
                    exact = tuple(f for f in forms if len(f) < MIN_PIECE_LENGTH)
                else:
                    indexed, exact = (), tuple(forms)
                self._secrets[value] = (indexed, exact)
                for form in indexed:
                    self._add_indexed(form)
                for form in exact:
                    self._exact_users[form] = self._exact_users.get(form, 0) + 1
                exact_changed = exact_changed or bool(exact)
                # Evicted at once, so that the index never grows far past its bound (a dict does not shrink).
                while len(self._secrets) > 1 and (
                    len(self._secrets) > self.max_secrets or self._entries > self.max_index_entries
                ):
                    exact_changed = self._forget_oldest() or exact_changed
                if self._index[0] is _DENSE and self._entries > self.dense_index_entries:
                    self._rebuild(_SPARSE)
            if exact_changed:
                self._exact = tuple(sorted(self._exact_users, key=len, reverse=True))
            self._waiting = {}

    def _forget_oldest(self) -> bool:
        """Drop the least recently registered secret; whether it had exact forms."""
        _oldest, (indexed, exact) = self._secrets.popitem(last=False)
        for form in indexed:
            users = self._indexed_users[form] - 1
            if users:
                self._indexed_users[form] = users
            else:
                del self._indexed_users[form]
                self._unindex(form)
        for form in exact:
            self._exact_users[form] -= 1
            if not self._exact_users[form]:
                del self._exact_users[form]
        return bool(exact)

    def _add_indexed(self, form: str) -> None:
        users = self._indexed_users.get(form, 0)
        self._indexed_users[form] = users + 1
        if not users:
            layout, grams = self._index
            self._entries += _index_form(grams, layout, form)

    def _unindex(self, form: str) -> None:
        layout, grams = self._index
        for gram in layout.grams(form):
            held = grams[gram]
            rest = () if isinstance(held, str) else tuple(f for f in held if f != form)
            if not rest:
                del grams[gram]
            else:
                grams[gram] = rest[0] if len(rest) == 1 else rest
            self._entries -= 1

    def _rebuild(self, layout: _Layout) -> None:
        grams: dict[str, str | tuple[str, ...]] = {}
        self._entries = sum(_index_form(grams, layout, form) for form in self._indexed_users)
        self._index = (layout, grams)

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Where registered secret material sits in `text`, as merged (start, end) spans."""
        self._index_waiting()
        found: list[tuple[int, int]] = []
        layout, grams = self._index
        if grams and len(text) >= MIN_PIECE_LENGTH:
            searched = _one_alphabet(text)
            looked_up = map(searched.__getitem__, layout.slices(len(searched)))
            hits = compress(range(0, len(searched) - _GRAM + 1, layout.stride), map(grams.__contains__, looked_up))
            done: dict[tuple[int, int], int] = {}  # (form, diagonal) -> end of the run already found on it
            for start in hits:
                found.extend(_runs_at(searched, start, grams.get(searched[start : start + _GRAM]), done))
        for form in self._exact:
            at = text.find(form)
            while at != -1:
                found.append((at, at + len(form)))
                at = text.find(form, at + 1)
        return _merged(found)

    def scrub(self, text: str) -> str:
        self._index_waiting()
        if len(text) < MIN_SECRET_LENGTH or not (self._index[1] or self._exact):
            return text
        spans = self.spans(text)
        if not spans:
            return text
        parts: list[str] = []
        kept = 0
        for start, end in spans:
            parts += (text[kept:start], REDACTED)
            kept = end
        parts.append(text[kept:])
        return "".join(parts)


def _index_form(grams: dict[str, str | tuple[str, ...]], layout: _Layout, form: str) -> int:
    """Put `form`'s grams into `grams`; how many entries that added."""
    added = 0
    for gram in layout.grams(form):
        held = grams.setdefault(gram, form)  # one call when the gram is new, the usual case
        if held is not form:
            grams[gram] = (held, form) if isinstance(held, str) else (*held, form)
        added += 1
    return added


def _runs_at(
    text: str, start: int, held: str | tuple[str, ...] | None, done: dict[tuple[int, int], int]
) -> list[tuple[int, int]]:
    """The runs of MIN_PIECE_LENGTH or more characters that text and a form holding text[start:start+6] share
    through that gram (each form and offset once: `done` remembers where a run found earlier ends)."""
    if held is None:  # dropped by another thread meanwhile
        return []
    gram = text[start : start + _GRAM]
    runs = []
    for form in (held,) if isinstance(held, str) else held:
        at = form.find(gram)
        while at != -1:
            diagonal = (id(form), start - at)
            if done.get(diagonal, -1) < start + _GRAM:
                left = _common_suffix(text, start, form, at)
                right = _common_prefix(text, start + _GRAM, form, at + _GRAM)
                if left + _GRAM + right >= MIN_PIECE_LENGTH:
                    runs.append((start - left, start + _GRAM + right))
                    done[diagonal] = start + _GRAM + right
            at = form.find(gram, at + 1)
    return runs


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Overlapping or touching spans as one, in order."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


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


# isoformat()'s "+00:00" (what callers pass as a field: `revoke_due_at=due.isoformat()`), to be written with Z.
_PLUS_ZERO = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?)\+00:00$")


def utc_times_processor(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: every time in a log line is RFC 3339 in UTC with Z, as the line's own timestamp is: a
    datetime field is written so, and an isoformat() string ending in +00:00 gets Z instead."""
    for key, value in event_dict.items():
        if isinstance(value, datetime):
            aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
            event_dict[key] = aware.astimezone(UTC).isoformat().replace("+00:00", "Z")
        elif isinstance(value, str) and value.endswith("+00:00") and (matched := _PLUS_ZERO.match(value)):
            event_dict[key] = matched[1] + "Z"
    return event_dict


def redact_processor(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: redact secret-named fields and scrub registered secrets from all text."""
    for key in list(event_dict):
        event_dict[key] = _redact_value(key, event_dict[key])
    return event_dict


# Libraries whose debug output is every request and response in full: never below info.
_VERBOSE_LIBRARIES = ("botocore", "boto3", "s3transfer")
# Libraries whose INFO lines say nothing an operator needs: APScheduler logs "Running job" / "executed
# successfully" twice per job per tick (the daemon logs what its jobs did). Their warnings and errors still show.
_CHATTY_LIBRARIES = ("apscheduler",)


def _structlog() -> ModuleType:
    """structlog, imported on first use. When rich is installed and not yet imported, structlog is imported with
    rich hidden: structlog imports rich (about half its import time) only for its rich tracebacks and
    pretty-printing, which nothing here uses (tracebacks are plain_traceback or format_exc_info text, so that they
    are scrubbed). The Lambda zip has no rich at all, so it imports structlog exactly as before."""
    loaded = sys.modules.get("structlog")
    if loaded is not None:
        return loaded
    hide_rich = "rich" not in sys.modules
    if hide_rich:
        sys.modules["rich"] = None  # type: ignore[assignment]  # `import rich` raises ImportError meanwhile
    try:
        import structlog
        import structlog.contextvars
        import structlog.dev
        import structlog.processors
        import structlog.stdlib
    finally:
        if hide_rich and sys.modules.get("rich", "") is None:
            del sys.modules["rich"]
    return structlog


class _CurrentStderr:
    """sys.stderr as it is at each write, not as it was at `configure`: while rich's progress bar runs it replaces
    sys.stderr with a proxy that prints each line above the bar (so a log line never lands inside the bar), and
    typer's CliRunner swaps it per invocation."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


@dataclass
class _Setup:
    """What configure() asked for; applied to structlog (imported then) at the first line that is logged."""

    json: bool
    level_number: int
    stream: TextIO
    handler: logging.Handler
    applied: bool = False


_setup: _Setup | None = None
_setup_lock = threading.Lock()
# The configured level: a logger call below it returns at once, without importing structlog (None: not configured,
# every call goes to structlog as it is set up by default).
_level_floor: int | None = None


class _RootHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The root logger's one handler: its formatter (structlog's ProcessorFormatter) is made with the first record."""

    def format(self, record: logging.LogRecord) -> str:
        if self.formatter is None:
            _apply_setup()
        return super().format(record)


def configure(*, json: bool | None = None, level: str = "info", stream: TextIO | None = None) -> None:
    """Set up structlog, and standard-library logging through the same processors and renderer. `json=None`
    chooses JSON when the stream is not a terminal, readable lines (colored) when it is. Timestamps are RFC 3339
    in UTC with `T` and `Z` in both. `stream` defaults to sys.stderr as it is at each write. An unknown `level`
    raises KeyError.

    structlog itself is imported and configured at the first line logged at `level` or above (or now, when it is
    already imported): a command that logs nothing at its level (rotate-now at warning, when all goes well) does
    not pay its import (about 30 ms, asyncio included; bench/cli_startup.py)."""
    global _setup, _level_floor
    level_number = logging.getLevelNamesMapping()[level.upper()]
    if stream is None:
        stream = cast(TextIO, _CurrentStderr())
    if json is None:
        json = not stream.isatty()
    handler = _RootHandler(stream)
    root = logging.getLogger()
    # The only handler: an earlier one (ours, or a runtime's such as AWS Lambda's) would print unredacted text.
    root.handlers = [handler]
    root.setLevel(level_number)
    for name in _VERBOSE_LIBRARIES:
        logging.getLogger(name).setLevel(max(level_number, logging.INFO))
    for name in _CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(max(level_number, logging.WARNING))
    with _setup_lock:
        _setup = _Setup(json=json, level_number=level_number, stream=stream, handler=handler)
        _level_floor = level_number
    if "structlog" in sys.modules:  # already paid for (a test saving structlog's config, the Lambda): apply now
        _apply_setup()


def _apply_setup() -> None:
    """Configure structlog and the root handler's formatter as configure() asked, once."""
    with _setup_lock:
        setup = _setup
        if setup is None or setup.applied:
            return
        structlog = _structlog()
        renderer: Any
        if setup.json:
            renderer = structlog.processors.JSONRenderer()
        else:
            renderer = structlog.dev.ConsoleRenderer(
                colors=setup.stream.isatty(), exception_formatter=structlog.dev.plain_traceback
            )
        shared: list[Any] = [
            structlog.contextvars.merge_contextvars,
            merge_context_processor,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
        ]
        # format_exc_info before redact_processor, so that tracebacks are scrubbed too
        processors: list[Any] = [
            *shared,
            structlog.processors.format_exc_info,
            utc_times_processor,
            redact_processor,
            renderer,
        ]
        writer = _LineWriter(setup.handler, setup.stream)
        structlog.configure(
            processors=processors,
            wrapper_class=structlog.make_filtering_bound_logger(setup.level_number),
            logger_factory=lambda *_args: writer,
            cache_logger_on_first_use=False,
        )
        formatter = structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                utc_times_processor,
                redact_processor,
                renderer,
            ],
        )
        setup.handler.setFormatter(formatter)
        setup.applied = True


class _LineWriter:
    """structlog's output: each line in one write, under the root handler's lock, so that a structlog line and a
    standard-library record (another thread) never interleave on the stream (structlog's PrintLogger has a lock of
    its own and writes the newline apart)."""

    def __init__(self, handler: logging.Handler, stream: TextIO) -> None:
        self._handler = handler
        self._stream = stream

    def msg(self, message: str) -> None:
        self._handler.acquire()
        try:
            self._stream.write(message + "\n")
            self._stream.flush()
        finally:
            self._handler.release()

    debug = info = warning = warn = error = critical = exception = fatal = failure = err = log = msg


_LEVEL_OF = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "err": logging.ERROR,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
    "fatal": logging.CRITICAL,
}


class _Logger:
    """What get_logger returns: structlog's logger for `name`, imported at the first line that is logged. A call
    below the configured level returns at once (structlog's filtering logger would drop it as well); everything
    else (bind, new, log, ...) is structlog's own."""

    __slots__ = ("_name", "_real")

    def __init__(self, name: str) -> None:
        self._name = name
        self._real: Any = None

    def _logger(self) -> Any:
        _apply_setup()
        if self._real is None:
            self._real = _structlog().get_logger(self._name)
        return self._real

    def _call(self, method: str, event: Any, args: tuple[Any, ...], fields: dict[str, Any]) -> Any:
        floor = _level_floor
        if floor is not None and _LEVEL_OF[method] < floor:
            return None
        return getattr(self._logger(), method)(event, *args, **fields)

    def debug(self, event: Any = None, *args: Any, **fields: Any) -> Any:
        return self._call("debug", event, args, fields)

    def info(self, event: Any = None, *args: Any, **fields: Any) -> Any:
        return self._call("info", event, args, fields)

    def warning(self, event: Any = None, *args: Any, **fields: Any) -> Any:
        return self._call("warning", event, args, fields)

    warn = warning

    def error(self, event: Any = None, *args: Any, **fields: Any) -> Any:
        return self._call("error", event, args, fields)

    def exception(self, event: Any = None, *args: Any, **fields: Any) -> Any:
        return self._call("exception", event, args, fields)

    def critical(self, event: Any = None, *args: Any, **fields: Any) -> Any:
        return self._call("critical", event, args, fields)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._logger(), name)


def get_logger(name: str = "rotator") -> Any:
    return _Logger(name)


# The fields bound for the lines logged in this context (plan, run), kept here rather than in structlog's
# contextvars so that binding them needs no structlog import; merge_context_processor adds them to each line.
_context: ContextVar[Mapping[str, Any]] = ContextVar("rotator_log_context", default=MappingProxyType({}))


def merge_context_processor(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: the fields bound with bind_contextvars / bound_contextvars (a line's own win)."""
    bound = _context.get()
    if bound:
        return {**bound, **event_dict}
    return event_dict


def bind_contextvars(**values: Any) -> Token[Mapping[str, Any]]:
    """Bind fields to every line logged from now on in this context (thread or task)."""
    return _context.set(MappingProxyType({**_context.get(), **values}))


@contextmanager
def bound_contextvars(**values: Any) -> Iterator[None]:
    """`with bound_contextvars(plan=...):` binds fields to the lines logged inside."""
    token = _context.set(MappingProxyType({**_context.get(), **values}))
    try:
        yield
    finally:
        _context.reset(token)
