"""Secret encodings as vendors and libraries echo them, computed with the standard library alone (independently of
rotator.logs), for the scrubber's tests and the end-to-end leak test: a form the scrubber forgot then shows up as a
failure rather than agreeing with itself."""

from __future__ import annotations

import base64
import html
import json
import secrets
import string
from collections.abc import Callable, Iterable
from urllib.parse import quote, quote_plus

# Every character class a password policy may draw from, and the characters that encode differently everywhere.
ALPHABET = string.ascii_letters + string.digits + "!#$%&()*+,-./;<=>?[]^_`{|}~ \"'\\"


def random_secret(length: int = 40) -> str:
    # Always one of the awkward characters, so that every encoding below differs from the raw value.
    body = "".join(secrets.choice(ALPHABET) for _ in range(length - 8))
    return f'{body[:5]}/+= &<"{body[5:]}'


def b64_at(value: str, prefix: str, urlsafe: bool = False, encoding: str = "utf-8") -> str:
    encode = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    return encode((prefix + value).encode(encoding)).decode()


# name -> how a vendor or library might echo the value (the whole text it would send back)
ENCODINGS: dict[str, Callable[[str], str]] = {
    "raw": lambda v: v,
    "quote": lambda v: quote(v, safe=""),
    "quote-keep-slash": lambda v: quote(v),
    "quote_plus": lambda v: quote_plus(v),
    "json": lambda v: json.dumps(v),
    "json-unicode": lambda v: json.dumps(v, ensure_ascii=False),
    "json-slash-escaped": lambda v: json.dumps(v).replace("/", "\\/"),
    "json-in-json": lambda v: json.dumps(json.dumps(v)),
    "html": lambda v: html.escape(v),
    "base64": lambda v: b64_at(v, ""),
    "base64-urlsafe": lambda v: b64_at(v, "", urlsafe=True),
    "basic-auth": lambda v: "Basic " + b64_at(v, "user:"),  # 5 bytes before the value: offset 2 of 3
    # requests encodes Basic credentials as Latin-1 (a value it cannot encode so is sent as UTF-8)
    "basic-auth-latin1": lambda v: "Basic " + b64_at(v, "user:", encoding=_latin1_or_utf8(v)),
    "base64-offset-1": lambda v: b64_at(v, "a"),
    "base64-offset-2": lambda v: b64_at(v, "ab"),
    "base64-urlsafe-offset-1": lambda v: b64_at(v, "a", urlsafe=True),
    "base64-urlsafe-offset-2": lambda v: b64_at(v, "ab", urlsafe=True),
}


def windows(text: str, size: int = 12) -> set[str]:
    return {text[i : i + size] for i in range(len(text) - size + 1)}


def core(name: str, value: str) -> str:
    """The part of an encoding that depends on the value alone: without a JSON string's quotes, and without the
    edges of a base64 encoding (a shifted encoding's edge characters also hold its neighbours' bits)."""
    encoded = ENCODINGS[name](value)
    if name.startswith("basic-auth"):  # "Basic " and base64("user:"): 5 bytes, the value's bits start at character 7
        return encoded[len("Basic ") + 7 : -4]
    if name.startswith("base64"):
        return encoded[4:-4]
    if name == "json-in-json":
        return encoded[3:-3]
    if name.startswith("json"):
        return encoded[1:-1]
    return encoded


def leaked(output: str, value: str) -> list[str]:
    """Which encodings of `value` still have a 12-character piece in `output`."""
    return [name for name in ENCODINGS if any(piece in output for piece in windows(core(name, value)))]


def _latin1_or_utf8(value: str) -> str:
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return "utf-8"
    return "latin-1"


def all_pieces(values: Iterable[str], size: int = 12) -> dict[str, tuple[str, str]]:
    """Every `size`-character piece of every encoding of every value -> (the value, the encoding's name)."""
    pieces: dict[str, tuple[str, str]] = {}
    for value in values:
        for name in ENCODINGS:
            for piece in windows(core(name, value), size):
                pieces.setdefault(piece, (value, name))
    return pieces


def pieces_in(text: str, pieces: dict[str, tuple[str, str]], size: int = 12) -> list[tuple[str, str, str]]:
    """The pieces found in `text`, as (piece, value, encoding): one scan of the text's `size`-grams."""
    found = {text[i : i + size] for i in range(len(text) - size + 1)} & pieces.keys()
    return [(piece, *pieces[piece]) for piece in sorted(found)]
