"""rotator.lambda_adapter's pure parts, without any server: the function's environment (the samples' variables and
defaults), which plugin and strategy a secret gets, the contract's checks on a described secret, event parsing."""

from __future__ import annotations

import json
from typing import Any

import pytest

from rotator.errors import ConfigError
from rotator.lambda_adapter import (
    LAMBDA_CA_BUNDLE,
    FunctionSettings,
    RotationRefused,
    SecretDescription,
    check_contract,
    failure,
    parse_event,
    plugin_type_for,
    strategy_for,
)
from rotator.logs import register_secret
from rotator.model import PasswordPolicy, Stage
from rotator.passwords import generate_password

from .rotation_service import sample_event

NO_FILES: dict[str, Any] = {"file_exists": lambda _path: False}


def test_defaults_are_the_samples_defaults() -> None:
    settings = FunctionSettings.from_env({}, **NO_FILES)
    assert settings.password_policy == PasswordPolicy(length=32, exclude_characters=":/@\"'\\")
    assert settings.password_policy.require_each_included_type
    assert settings.endpoint_url is None and settings.plugin is None and settings.strategy is None
    assert settings.revoke_previous == "next-rotation" and settings.notifiers == () and settings.ca_bundle is None


def test_the_samples_password_variables_are_honoured() -> None:
    env = {
        "SECRETS_MANAGER_ENDPOINT": "https://vpce-0abc.secretsmanager.eu-west-1.vpce.amazonaws.com",
        "EXCLUDE_CHARACTERS": "abc",
        "PASSWORD_LENGTH": "20",
        "EXCLUDE_NUMBERS": "true",
        "EXCLUDE_PUNCTUATION": "Y",
        "EXCLUDE_UPPERCASE": "0",
        "EXCLUDE_LOWERCASE": "no",
        "REQUIRE_EACH_INCLUDED_TYPE": "yes",
    }
    settings = FunctionSettings.from_env(env, **NO_FILES)
    assert settings.endpoint_url == env["SECRETS_MANAGER_ENDPOINT"]
    policy = settings.password_policy
    assert (policy.length, policy.exclude_characters, policy.exclude_numbers, policy.exclude_punctuation) == (
        20, "abc", True, True,
    )  # fmt: skip
    assert not policy.exclude_uppercase and not policy.exclude_lowercase
    password = generate_password(policy)
    assert len(password) == 20 and password.isalpha() and not set(password) & set("abc")


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"PASSWORD_LENGTH": "eight"}, "PASSWORD_LENGTH"),
        ({"SECRETS_MANAGER_ENDPOINT": "secretsmanager.eu-west-1.amazonaws.com"}, "SECRETS_MANAGER_ENDPOINT"),
        ({"PASSWORD_LENGTH": "8"}, "PASSWORD_LENGTH"),
        ({"EXCLUDE_NUMBERS": "sometimes"}, "EXCLUDE_NUMBERS"),
        ({"ROTATOR_REVOKE_PREVIOUS": "later"}, "ROTATOR_REVOKE_PREVIOUS"),
        ({"ROTATOR_PLUGIN_OPTIONS": "{not json"}, "ROTATOR_PLUGIN_OPTIONS"),
        ({"ROTATOR_PLUGIN_OPTIONS": "[1]"}, "ROTATOR_PLUGIN_OPTIONS"),
        ({"ROTATOR_PLUGIN_OPTIONS": '{"connect_timeout": 3}'}, "ROTATOR_PLUGIN_OPTIONS.connect_timeout"),
        ({"ROTATOR_NOTIFIERS": '{"type": "webhook"}'}, "ROTATOR_NOTIFIERS"),
        ({"ROTATOR_NOTIFIERS": '[{"url": "https://x"}]'}, "ROTATOR_NOTIFIERS[0]"),
        (
            {"EXCLUDE_NUMBERS": "1", "EXCLUDE_PUNCTUATION": "1", "EXCLUDE_UPPERCASE": "1", "EXCLUDE_LOWERCASE": "1"},
            "PASSWORD_LENGTH / EXCLUDE_*",
        ),
    ],
)
def test_bad_variables_name_the_variable_and_the_fix(env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as raised:
        FunctionSettings.from_env(env, **NO_FILES)
    assert raised.value.key == key and raised.value.file == "environment"
    assert raised.value.fix


def test_the_ca_bundle_goes_to_each_database_plugins_own_option() -> None:
    settings = FunctionSettings.from_env({}, file_exists=lambda path: path == LAMBDA_CA_BUNDLE)
    assert settings.ca_bundle == LAMBDA_CA_BUNDLE, "as the samples: Lambda's CA bundle when it is there"
    assert settings.options_for("postgres") == {"sslrootcert": LAMBDA_CA_BUNDLE}
    assert settings.options_for("mysql") == {"ssl_ca": LAMBDA_CA_BUNDLE}
    assert settings.options_for("aws-iam-key") == {}
    explicit = FunctionSettings.from_env(
        {
            "ROTATOR_CA_BUNDLE": "/var/task/rds.pem",
            "ROTATOR_PLUGIN_OPTIONS": json.dumps({"postgres": {"sslrootcert": "/x.pem", "connect_timeout": 3}}),
        },
        **NO_FILES,
    )
    assert explicit.options_for("postgres") == {"sslrootcert": "/x.pem", "connect_timeout": 3}, "explicit wins"
    assert explicit.options_for("redis") == {"ssl_ca": "/var/task/rds.pem"}


@pytest.mark.parametrize(
    ("engine", "plugin"),
    [
        ("postgres", "postgres"),
        ("aurora-postgresql", "postgres"),
        ("mysql", "mysql"),
        ("aurora-mysql", "mysql"),
        ("mariadb", "mysql"),
        ("MariaDB", "mysql"),
        ("redis", "redis"),
    ],
)
def test_the_plugin_comes_from_the_engine(engine: str, plugin: str) -> None:
    settings = FunctionSettings.from_env({"ROTATOR_PLUGIN": "aws-iam-key"}, **NO_FILES)
    assert plugin_type_for({"engine": engine}, {}, settings) == plugin, "the engine wins over the default"
    assert plugin_type_for({"engine": engine}, {"rotator:plugin": "generated"}, settings) == "generated"


def test_the_plugin_of_a_secret_without_engine() -> None:
    settings = FunctionSettings.from_env({"ROTATOR_PLUGIN": "aws-iam-key"}, **NO_FILES)
    assert plugin_type_for({"UserName": "u"}, {}, settings) == "aws-iam-key"
    assert plugin_type_for({"UserName": "u"}, {"rotator:plugin": "datadog"}, settings) == "datadog"
    assert plugin_type_for({"engine": "oracle"}, {}, settings) == "aws-iam-key"
    bare = FunctionSettings.from_env({}, **NO_FILES)
    with pytest.raises(ConfigError, match='no "engine"') as raised:
        plugin_type_for({"UserName": "u"}, {}, bare)
    assert raised.value.key == "ROTATOR_PLUGIN"
    with pytest.raises(ConfigError, match="engine 'oracle' has no plugin"):
        plugin_type_for({"engine": "oracle"}, {}, bare)


def test_the_strategy() -> None:
    assert strategy_for({}, FunctionSettings.from_env({}, **NO_FILES))[0] == "single-user"
    alternating = FunctionSettings.from_env({"ROTATOR_STRATEGY": "alternating-users"}, **NO_FILES)
    assert strategy_for({}, alternating)[0] == "alternating-users"
    assert strategy_for({"rotator:strategy": "single-user"}, alternating)[0] == "single-user"


def described(versions: dict[str, list[str]], enabled: bool | None = True) -> SecretDescription:
    raw: dict[str, Any] = {"Name": "prod/db", "VersionIdsToStages": versions, "Tags": [{"Key": "k", "Value": "v"}]}
    if enabled is not None:
        raw["RotationEnabled"] = enabled
    return SecretDescription.parse("arn:aws:secretsmanager:us-east-1:1:secret:prod/db-x", raw)


def test_the_contract_checks() -> None:
    versions = {"old": ["AWSCURRENT"], "new": ["AWSPENDING"], "older": ["AWSPREVIOUS"]}
    assert check_contract(described(versions), "new") is True
    assert check_contract(described(versions, enabled=None), "new") is True, "never configured: as the samples"
    with pytest.raises(RotationRefused, match="not enabled for rotation"):
        check_contract(described(versions, enabled=False), "new")
    with pytest.raises(RotationRefused, match="has no stage for rotation"):
        check_contract(described(versions), "unknown")
    assert check_contract(described(versions), "old") is False
    with pytest.raises(RotationRefused, match="not set as AWSPENDING"):
        check_contract(described(versions), "older")


def test_a_described_secret() -> None:
    secret = described({"a": ["AWSCURRENT", "AWSPENDING"], "b": ["AWSPREVIOUS"]})
    assert secret.name == "prod/db" and secret.tags == {"k": "v"}
    assert secret.holder("AWSPREVIOUS") == "b" and secret.holder("AWSPENDING") == "a"
    assert secret.stages("a") == frozenset({Stage.CURRENT}), "AWSPENDING beside AWSCURRENT: nothing pending"
    assert secret.stages("zzz") == frozenset()


def test_events() -> None:
    event = sample_event("finishSecret", "arn:x", "tok")
    parsed = parse_event(event)
    assert (parsed.step, parsed.secret_id, parsed.token) == ("finishSecret", "arn:x", "tok")
    assert parsed.rotation_token == event["RotationToken"]
    assert event["RotationToken"] not in repr(parsed)
    assert parse_event(sample_event("createSecret", "arn:x", "tok")).rotation_token is None


def test_a_failure_is_one_scrubbed_error() -> None:
    register_secret("s3cr3t-value-for-the-scrubber")
    error = failure(ValueError("login with s3cr3t-value-for-the-scrubber refused\n  fix: check it"))
    assert "s3cr3t" not in str(error) and str(error).startswith("ValueError: login with [REDACTED] refused")
    assert "fix: check it" in str(error)
