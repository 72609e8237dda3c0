"""Keyed fingerprints of managed credentials: how a leaked string is matched to plans without reading stores.

At each rotation (promote), import or `store put`, the engine keeps in the journal, for every secret string of the
new version (rotator.model.sensitive_strings) and for its public key ids (AccessKeyId, key_id), a fingerprint:
HMAC-SHA256 under the fingerprint key, truncated to 128 bits. `rotator leak` and the daemon's leak endpoint
fingerprint the candidate strings of a report the same way and look them up: no store is read in bulk, and the
journal alone (a backup, a shared PostgreSQL) reveals nothing.

Why keyed: a plain hash of a human-chosen password can be brute-forced from a dictionary; without the key an
HMAC cannot be computed at all, so the journal's fingerprints are no help to whoever reads the journal. The key
(32 random bytes) lives apart from the journal: `state_dir/fingerprint.key` (mode 0600, made by `rotator init`),
or `[rotator] fingerprint_key = "env:VAR"` / `"file:PATH"` (base64), which daemons sharing a journal must share.

The encodings a secret travels in are fingerprinted too (base64, as in a Kubernetes Secret manifest; percent-
encoded, as in a URL), so a leak found in those forms matches as well.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, quote_plus

from rotator.errors import ConfigError
from rotator.key_files import create_key_file as create_key_file  # the one way keys are made (re-exported)
from rotator.model import sensitive_strings

KEY_FILE_NAME = "fingerprint.key"
# Public fields that identify a credential at its provider: a report that names only the id (AWS's exposed-key
# event names the AccessKeyId) still finds the plan.
ID_FIELDS = ("AccessKeyId", "key_id")
MIN_CANDIDATE = 8  # shorter strings are never fingerprinted: too many ordinary words would be looked up


@dataclass(frozen=True)
class Fingerprint:
    """One stored fingerprint: which plan, secret and version it came from, and whether it is of a secret value
    ("secret") or of a public key id ("id")."""

    plan_id: str
    secret_id: str
    version_id: str
    kind: str
    digest: str


class FingerprintKey:
    """The HMAC key. Never printed; `digest` is the only thing it does."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("a fingerprint key needs at least 16 bytes")
        self._key = key

    def __repr__(self) -> str:
        return "FingerprintKey(...)"

    def digest(self, text: str) -> str:
        return hmac.new(self._key, text.encode("utf-8"), hashlib.sha256).hexdigest()[:32]


def load_key(text: str, where: str) -> FingerprintKey:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except ValueError:
        key = b""
    if len(key) < 16:
        raise ConfigError(
            "the fingerprint key is not base64 of at least 16 bytes",
            key=where,
            fix="run `rotator init` to make state_dir/fingerprint.key, or put `openssl rand -base64 32` in it",
        )
    return FingerprintKey(key)


def encoded_forms(value: str) -> set[str]:
    """The forms a secret is stored or sent in, besides itself: base64 (a Kubernetes Secret), percent-encoded (a
    URL), and escaped inside a JSON string (a JSON config file)."""
    forms = {value, quote(value, safe=""), quote_plus(value, safe=""), json.dumps(value)[1:-1]}
    forms.add(base64.b64encode(value.encode()).decode())
    return {form for form in forms if len(form) >= MIN_CANDIDATE}


def version_fingerprints(
    key: FingerprintKey, plan_id: str, secret_id: str, version_id: str, value: Mapping[str, Any]
) -> list[Fingerprint]:
    """The fingerprints to keep for one stored version."""
    found: dict[str, Fingerprint] = {}
    for text in sensitive_strings(value):
        for form in encoded_forms(text):
            digest = key.digest(form)
            found[digest] = Fingerprint(plan_id, secret_id, version_id, "secret", digest)
    for field in ID_FIELDS:
        raw = value.get(field)
        if isinstance(raw, str) and len(raw) >= MIN_CANDIDATE:
            digest = key.digest(raw)
            found.setdefault(digest, Fingerprint(plan_id, secret_id, version_id, "id", digest))
    return list(found.values())


def candidates(text: str) -> set[str]:
    """The strings of `text` a credential could be: every run between separators (whitespace, quotes and the
    punctuation of config files, URLs and shells), and the sides of `key=value` and `key: value`, of at least
    MIN_CANDIDATE characters. A credential that contains a separator itself is also found when the whole line is
    the credential (a file holding only the leaked value)."""
    found: set[str] = set()

    def add(piece: str) -> None:
        for form in (piece, piece.strip(), _unquoted(piece.strip()), _unquoted(piece.strip().rstrip(",;"))):
            if len(form) >= MIN_CANDIDATE:
                found.add(form)

    for line in text.splitlines():
        add(line)
        # The value side of `KEY=value`, `key: value`, `"key": "value"` and `export KEY=value`: taken whole, so a
        # value that holds separators itself (a person's password with spaces or quotes) is still one candidate.
        for separator in ("=", ":", " "):
            if separator in line:
                add(line.partition(separator)[2])
        for separators in (" \t\"'`,;()[]{}<>", " \t\"'`,;()[]{}<>=:@/?&#", " \t\"'`"):
            token: list[str] = []
            for char in line:
                if char in separators:
                    if len(token) >= MIN_CANDIDATE:
                        found.add("".join(token))
                    token = []
                else:
                    token.append(char)
            if len(token) >= MIN_CANDIDATE:
                found.add("".join(token))
    return found


def _unquoted(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'`":
        return text[1:-1]
    return text


def digests(key: FingerprintKey, texts: Iterable[str]) -> dict[str, str]:
    """digest -> the candidate it came from (kept in memory only, to say what matched in the report)."""
    return {key.digest(text): text for text in texts}
