"""Generated passwords: the policy's characters only, one of each required class, and no character favoured by the
byte-to-character mapping (rejection sampling)."""

from __future__ import annotations

import string
from collections import Counter

from rotator.model import PasswordPolicy
from rotator.passwords import character_classes, generate_password


def test_passwords_follow_the_policy() -> None:
    policy = PasswordPolicy(length=20, exclude_characters="abc!", exclude_punctuation=False)
    allowed = set("".join(character_classes(policy)))
    for _ in range(500):
        password = generate_password(policy)
        assert len(password) == 20 and set(password) <= allowed and not set(password) & set("abc!")
        for cls in character_classes(policy):
            assert set(password) & set(cls)
    digits_only = PasswordPolicy(
        length=12, exclude_lowercase=True, exclude_uppercase=True, exclude_punctuation=True, exclude_characters=""
    )
    assert set(generate_password(digits_only)) <= set(string.digits)


def test_no_character_is_favoured() -> None:
    # 88 characters: 256 is not a multiple of 88, so a plain `byte % 88` would give the first 80 characters 3/256
    # and the last 8 only 2/256 (a third fewer). Rejection sampling must leave them all equally likely.
    policy = PasswordPolicy(length=64, require_each_included_type=False)
    alphabet = "".join(character_classes(policy))
    counts = Counter("".join(generate_password(policy) for _ in range(3000)))
    expected = 3000 * 64 / len(alphabet)
    assert set(counts) == set(alphabet)
    assert all(abs(n - expected) < 0.12 * expected for n in counts.values()), counts.most_common(3)
    low = [counts[c] for c in alphabet[-8:]]
    assert sum(low) / len(low) > 0.9 * expected  # the tail is not under-drawn
