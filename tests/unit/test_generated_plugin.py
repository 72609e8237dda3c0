"""The `generated` rotation plugin: an application secret with no target system."""

from __future__ import annotations

import base64
import string
import uuid
from typing import Any

import pytest
from rotator_plugins.rotation.generated import GeneratedSecretPlugin

from rotator.errors import SecretNotFound, StepError, TestFailed
from rotator.interfaces import RotationPlugin
from rotator.model import Credential, PasswordPolicy, RotationContext, Stage
from rotator.options import OptionsError


def ctx(policy: PasswordPolicy | None = None, strategy: str = "single-user") -> RotationContext:
    def read_secret(secret_id: str) -> Credential:
        raise SecretNotFound(secret_id)

    return RotationContext(
        plan_id="signing-key",
        run_id=uuid.uuid4().hex,
        secret_id="prod/app/signing",
        strategy=strategy,
        options={},
        password_policy=policy or PasswordPolicy(),
        read_secret=read_secret,
    )


def cred(value: dict[str, Any], stage: Stage = Stage.CURRENT) -> Credential:
    return Credential(version_id=uuid.uuid4().hex, value=value, stages=frozenset({stage}))


CURRENT = cred({"value": "old-signing-key-material", "kid": "2024-01", "alg": "HS256"})


def test_satisfies_the_protocol() -> None:
    plugin = GeneratedSecretPlugin({}, None)
    assert isinstance(plugin, RotationPlugin)
    assert plugin.strategies == ("single-user",)


def test_default_urlsafe_token_keeps_other_fields() -> None:
    plugin = GeneratedSecretPlugin({}, None)
    value = plugin.create(ctx(), CURRENT)
    assert value["kid"] == "2024-01" and value["alg"] == "HS256"
    token = value["value"]
    assert token != CURRENT["value"]
    assert set(token) <= set(string.ascii_letters + string.digits + "-_")
    assert len(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))) == 32
    plugin.test(ctx(), cred(value, Stage.PENDING))


def test_values_differ_between_runs() -> None:
    plugin = GeneratedSecretPlugin({}, None)
    assert len({plugin.create(ctx(), CURRENT)["value"] for _ in range(20)}) == 20


def test_hex_with_custom_field_and_size() -> None:
    plugin = GeneratedSecretPlugin({"field": "hmac_key", "bytes": 64, "encoding": "hex"}, None)
    value = plugin.create(ctx(), CURRENT)
    assert value["value"] == CURRENT["value"]  # other fields untouched
    assert len(value["hmac_key"]) == 128
    bytes.fromhex(value["hmac_key"])
    plugin.test(ctx(), cred(value, Stage.PENDING))


def test_password_encoding_follows_the_policy() -> None:
    policy = PasswordPolicy(length=20, exclude_punctuation=True)
    plugin = GeneratedSecretPlugin({"encoding": "password"}, None)
    value = plugin.create(ctx(policy), CURRENT)
    assert len(value["value"]) == 20
    assert not set(value["value"]) & set(string.punctuation)
    plugin.test(ctx(policy), cred(value, Stage.PENDING))
    with pytest.raises(TestFailed, match="policy"):
        plugin.test(ctx(PasswordPolicy(length=20, exclude_numbers=True, exclude_punctuation=True)),
                    cred({"value": "a1" * 10}, Stage.PENDING))  # fmt: skip


@pytest.mark.parametrize(
    ("options", "value", "problem"),
    [
        ({}, {}, "missing"),
        ({}, {"value": 12345}, "not a string"),
        ({}, {"value": "short"}, "characters"),
        ({}, {"value": "!" * 43}, "base64url"),
        ({"encoding": "hex"}, {"value": "ab" * 31}, "characters"),
        ({"encoding": "hex"}, {"value": "zz" * 32}, "hex"),
        ({"encoding": "password"}, {"value": "x" * 31}, "characters"),
        ({"encoding": "password"}, {"value": "'" * 32}, "excludes"),
    ],
)
def test_test_rejects_a_wrong_shape(options: dict[str, Any], value: dict[str, Any], problem: str) -> None:
    plugin = GeneratedSecretPlugin(options, None)
    with pytest.raises(TestFailed, match=problem) as caught:
        plugin.test(ctx(), cred(value, Stage.PENDING))
    assert "signing-key" in str(caught.value)
    if isinstance(value.get("value"), str) and len(value["value"]) >= 6:
        assert value["value"] not in str(caught.value)


def test_the_other_steps_do_nothing_and_are_idempotent() -> None:
    plugin = GeneratedSecretPlugin({}, None)
    pending = cred(plugin.create(ctx(), CURRENT), Stage.PENDING)
    for _ in range(2):
        plugin.stage(ctx(), CURRENT, pending)
        plugin.unstage(ctx(), CURRENT, pending)
        plugin.discard(ctx(), pending)
        plugin.revoke(ctx(), cred(CURRENT.value, Stage.PREVIOUS), pending)


@pytest.mark.parametrize(
    ("options", "option", "message"),
    [
        ({"bytez": 32}, "bytez", "unknown option"),
        ({"encoding": "base32"}, "encoding", "'base32' is not one of: hex, password, urlsafe"),
        ({"bytes": 4}, "bytes", "Expected int >= 16"),
        ({"bytes": 5000}, "bytes", "Expected int <= 4096"),
        ({"field": ""}, "field", "Expected str of length >= 1"),
    ],
)
def test_options_are_validated(options: dict[str, Any], option: str, message: str) -> None:
    with pytest.raises(OptionsError) as raised:
        GeneratedSecretPlugin(options, None)
    assert (raised.value.option, raised.value.message) == (option, message)


def test_options_defaults_and_lax_values() -> None:
    options = GeneratedSecretPlugin({}, None).options
    assert (options.field, options.bytes, options.encoding) == ("value", 32, "urlsafe")
    assert GeneratedSecretPlugin({"bytes": "64", "encoding": "hex"}, None).options.bytes == 64


def test_alternating_is_refused() -> None:
    plugin = GeneratedSecretPlugin({}, None)
    with pytest.raises(StepError, match="single-user"):
        plugin.create(ctx(strategy="alternating-users"), CURRENT)
