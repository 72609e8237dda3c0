"""Keyed fingerprints (rotator/fingerprints.py): a leaked string finds its plan, and the journal's fingerprints are
never enough to recover a secret, nor to test a guess, without the key kept apart from the journal."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path
from urllib.parse import quote

import pytest

from rotator.errors import ConfigError
from rotator.fingerprints import (
    FingerprintKey,
    candidates,
    create_key_file,
    encoded_forms,
    load_key,
    version_fingerprints,
)
from rotator.journal.sqlite import SqliteJournal
from tests.secret_forms import random_secret

# A password a person chose: in any dictionary an attacker would try.
HUMAN_PASSWORD = "Summer2026!Welcome"
DICTIONARY = [
    f"{word}{year}{mark}" for word in ("Summer", "Winter", "Welcome") for year in (2025, 2026) for mark in "!?"
]
DICTIONARY += ["Summer2026!Welcome", "password123", "hunter2hunter2"]


def new_key() -> FingerprintKey:
    return FingerprintKey(secrets.token_bytes(32))


def test_a_leaked_value_is_found_in_the_forms_it_travels_in() -> None:
    key = new_key()
    password = random_secret()
    stored = {
        f.digest for f in version_fingerprints(key, "p1", "db/a", "v1", {"username": "app", "password": password})
    }
    leaked_texts = [
        f"DB_PASSWORD={password}",  # a .env file (the line holds more than the value)
        f"  password: {base64.b64encode(password.encode()).decode()}",  # a Kubernetes Secret manifest
        f"postgresql://app:{quote(password, safe='')}@db.internal:5432/app",  # a connection URL
        password,  # a file that holds only the value
    ]
    for text in leaked_texts:
        assert {key.digest(c) for c in candidates(text)} & stored, f"not found in: {text[:20]}..."


def test_public_fields_are_not_fingerprinted_as_secrets_but_key_ids_are() -> None:
    key = new_key()
    value = {"username": "app_user_name", "AccessKeyId": "AKIAEXAMPLE0000001", "SecretAccessKey": random_secret()}
    found = version_fingerprints(key, "p1", "aws/k", "v1", value)
    kinds = {f.digest: f.kind for f in found}
    assert kinds[key.digest("AKIAEXAMPLE0000001")] == "id"
    assert key.digest("app_user_name") not in kinds  # a username alone is no leak
    assert key.digest(value["SecretAccessKey"]) in kinds


def test_fingerprints_are_not_plain_hashes_of_any_form() -> None:
    """Whoever reads the journal (a backup, the shared PostgreSQL) cannot test guesses: no unkeyed hash of the
    secret, in any of its forms, equals a stored digest, not even a prefix of one."""
    key = new_key()
    stored = {f.digest for f in version_fingerprints(key, "p1", "db/a", "v1", {"password": HUMAN_PASSWORD})}
    assert stored and all(len(d) == 32 and int(d, 16) >= 0 for d in stored)  # 128 bits, nothing else
    for form in encoded_forms(HUMAN_PASSWORD):
        for algorithm in ("md5", "sha1", "sha256", "sha512", "blake2b", "sha3_256"):
            plain = hashlib.new(algorithm, form.encode()).hexdigest()
            assert not any(plain.startswith(d) or d.startswith(plain[:32]) for d in stored)


def test_without_the_key_a_dictionary_attack_finds_nothing() -> None:
    """The journal's digests, a dictionary holding the real password, and a wrong key: no match. With the real key
    the same search finds it, which is exactly why the key lives apart from the journal."""
    key = new_key()
    stored = {f.digest for f in version_fingerprints(key, "p1", "db/a", "v1", {"password": HUMAN_PASSWORD})}
    for attempt in range(20):
        guess_key = FingerprintKey(secrets.token_bytes(32))
        assert not {guess_key.digest(form) for word in DICTIONARY for form in encoded_forms(word)} & stored, attempt
    assert {key.digest(form) for word in DICTIONARY for form in encoded_forms(word)} & stored


def test_the_journal_keeps_digests_only(tmp_path: Path) -> None:
    """The journal's file holds no form of the secret and no key material: only the truncated HMACs."""
    raw_key = secrets.token_bytes(32)
    key = FingerprintKey(raw_key)
    password = random_secret()
    journal = SqliteJournal(tmp_path / "journal.db")
    journal.save_fingerprints(version_fingerprints(key, "p1", "db/a", "v1", {"password": password}))
    journal.close()
    data = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    for form in encoded_forms(password) | {password}:
        assert form.encode() not in data
    assert raw_key not in data and base64.b64encode(raw_key) not in data
    full = hmac.new(raw_key, password.encode(), hashlib.sha256).hexdigest()
    assert full[:32].encode() in data and full.encode() not in data  # truncated: half the HMAC is never kept


def test_key_file_is_private_and_never_replaced(tmp_path: Path) -> None:
    path = tmp_path / "state" / "fingerprint.key"
    assert create_key_file(path) is True
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    first = path.read_text()
    assert create_key_file(path) is False and path.read_text() == first  # a second init keeps the key
    key = load_key(first, str(path))
    assert repr(key) == "FingerprintKey(...)" and first.strip() not in repr(key)


@pytest.mark.parametrize("text", ["", "not base64 at all!", base64.b64encode(b"short").decode()])
def test_a_bad_key_is_a_config_error_with_the_fix(text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_key(text, "state/fingerprint.key")
    assert caught.value.key == "state/fingerprint.key" and "rotator init" in (caught.value.fix or "")


def test_short_strings_are_never_candidates() -> None:
    assert candidates("a=b c:d") == set()  # fewer than 8 characters: too many ordinary words would be looked up
    found = candidates("x = longenough, y: tiny")
    assert "longenough" in found and all(len(c) >= 8 for c in found)
