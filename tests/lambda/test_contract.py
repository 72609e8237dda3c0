"""Secrets Manager's rotation contract, checked before every step as AWS's sample functions check it, on moto's
server: rotation enabled, the token a version of the secret, a token already AWSCURRENT returns at once, a token
without AWSPENDING is an error; and AWSPENDING that already holds a value is kept, as the samples keep it."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from rotator.lambda_adapter import RotationFailed, RotationRefused
from tests.servers.aws import MotoServer
from tests.servers.postgres import PgServer

from .conftest import Function, load_handler
from .rotation_service import STEPS, LambdaContext, SecretsManagerService, sample_event

GENERATED = {"ROTATOR_PLUGIN": "generated"}  # a secret without "engine": the plugin comes from the environment


def app_secret(service: SecretsManagerService, **kwargs: Any) -> str:
    return service.create({"value": "initial-" + uuid.uuid4().hex, "note": "kept"}, **kwargs)


@pytest.mark.parametrize("step", STEPS)
def test_rotation_not_enabled_refuses_every_step(
    service: SecretsManagerService, make_function: Callable[..., Function], step: str
) -> None:
    arn = app_secret(service)
    token = service.start_rotation(arn)
    service.set_rotation(arn, False)
    before = service.snapshot(arn)
    function = make_function(GENERATED)
    with pytest.raises(RotationRefused, match="is not enabled for rotation"):
        function(sample_event(step, arn, token))
    assert service.snapshot(arn) == before
    assert dict(function.calls) == {"DescribeSecret": 1}


@pytest.mark.parametrize("step", STEPS)
def test_unknown_token_is_refused(
    service: SecretsManagerService, make_function: Callable[..., Function], step: str
) -> None:
    arn = app_secret(service)
    service.start_rotation(arn)
    before = service.snapshot(arn)
    function = make_function(GENERATED)
    with pytest.raises(RotationRefused, match="has no stage for rotation"):
        function(sample_event(step, arn, str(uuid.uuid4())))
    assert service.snapshot(arn) == before
    assert dict(function.calls) == {"DescribeSecret": 1}


def test_token_already_current_returns_at_once(
    service: SecretsManagerService, make_function: Callable[..., Function]
) -> None:
    arn = app_secret(service)
    function = make_function(GENERATED)
    token = service.rotate(function, arn)
    before = service.snapshot(arn)
    function.calls.clear()
    for step in STEPS:
        assert function(sample_event(step, arn, token))["result"] == "already-current"
    assert service.snapshot(arn) == before
    assert dict(function.calls) == {"DescribeSecret": 4}


@pytest.mark.parametrize("step", STEPS)
def test_token_without_awspending_is_refused(
    service: SecretsManagerService, make_function: Callable[..., Function], step: str
) -> None:
    arn = app_secret(service)
    function = make_function(GENERATED)
    first = service.holder(arn, "AWSCURRENT")
    assert first
    service.rotate(function, arn)  # the first version is AWSPREVIOUS now
    before = service.snapshot(arn)
    with pytest.raises(RotationRefused, match="not set as AWSPENDING"):
        function(sample_event(step, arn, first))
    assert service.snapshot(arn) == before


@pytest.mark.parametrize("event", [{}, {"Step": "createSecret"}, "createSecret", {"Step": 1, "SecretId": "x"}])
def test_an_event_that_is_not_a_rotation_event_is_refused(make_function: Callable[..., Function], event: Any) -> None:
    function = make_function(GENERATED)
    with pytest.raises(RotationRefused, match="rotation event"):
        function(event)
    assert not function.calls


def test_an_invalid_step_is_refused(service: SecretsManagerService, make_function: Callable[..., Function]) -> None:
    arn = app_secret(service)
    token = service.start_rotation(arn)
    function = make_function(GENERATED)
    with pytest.raises(RotationRefused, match="invalid step parameter 'revokeSecret'"):
        function(sample_event("invalid", arn, token, variant="step"))
    assert not function.calls


def test_pending_already_holding_a_value_is_kept(
    service: SecretsManagerService, make_function: Callable[..., Function], pg_server: PgServer
) -> None:
    """As after AWS's sample ran createSecret before the switch to this function: its value goes live."""
    user = f"app_{uuid.uuid4().hex[:8]}"
    password = "Init-" + uuid.uuid4().hex
    pg_server.make_role(user, password)
    try:
        arn = service.create(pg_server.secret(user, password))
        token = service.start_rotation(arn)
        staged = pg_server.secret(user, "Staged-" + uuid.uuid4().hex)
        service.client.put_secret_value(SecretId=arn, ClientRequestToken=token, SecretString=json.dumps(staged),
                                        VersionStages=["AWSPENDING"])  # fmt: skip
        function = make_function()
        results = [function(sample_event(step, arn, token))["result"] for step in STEPS]
        assert results == ["pending-kept", "staged", "tested", "promoted"]
        assert service.value(arn) == staged
        assert pg_server.can_login(user, staged["password"])
        assert not pg_server.can_login(user, password)
    finally:
        pg_server.drop_role(user)


def test_rotation_token_is_passed_to_put_secret_value_and_never_logged(
    service: SecretsManagerService, make_function: Callable[..., Function], log_lines: io.StringIO
) -> None:
    arn = app_secret(service)
    token = service.start_rotation(arn)
    function = make_function(GENERATED)
    sent: list[dict[str, Any]] = []
    function.on("provide-client-params.secrets-manager.PutSecretValue", lambda params, **_: sent.append(dict(params)))
    event = sample_event("createSecret", arn, token, variant="cross-account")
    function(event)
    assert [p.get("RotationToken") for p in sent] == [event["RotationToken"]]
    assert event["RotationToken"] not in log_lines.getvalue()


def test_the_handler_rotates_and_fails_with_a_scrubbed_error(
    service: SecretsManagerService, moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """lambda/handler.py itself: the client from SECRETS_MANAGER_ENDPOINT, one function per container."""
    monkeypatch.setenv("SECRETS_MANAGER_ENDPOINT", moto_server.endpoint_url)
    monkeypatch.setenv("ROTATOR_PLUGIN", "generated")
    handler = load_handler()
    arn = app_secret(service)
    before = service.value(arn)
    token = service.rotate(handler.lambda_handler, arn)
    after = service.value(arn)
    assert service.holder(arn, "AWSCURRENT") == token
    assert after["note"] == "kept" and after["value"] != before["value"]
    built = handler._function
    service.rotate(handler.lambda_handler, arn)
    assert handler._function is built, "one function per container"

    # A failure: the plugin's options are wrong. The error names the variable and carries no secret.
    monkeypatch.setenv("ROTATOR_PLUGIN_OPTIONS", json.dumps({"generated": {"encoding": after["value"]}}))
    handler._function = None
    token3 = service.start_rotation(arn)
    with pytest.raises(RotationFailed) as raised:
        handler.lambda_handler(sample_event("createSecret", arn, token3), LambdaContext())
    assert "ROTATOR_PLUGIN_OPTIONS.generated.encoding" in str(raised.value)
    assert after["value"] not in str(raised.value)
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


def test_a_refused_login_fails_set_secret_with_no_secret_in_the_error(
    service: SecretsManagerService, moto_server: MotoServer, pg_server: PgServer, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """The role's password was changed behind the secret's back: setSecret fails, the error (what Lambda logs)
    and the function's log name the role and the fix, never a password; nothing is promoted."""
    user = f"app_{uuid.uuid4().hex[:8]}"
    stored, real = "Stored-" + uuid.uuid4().hex, "Real-" + uuid.uuid4().hex
    pg_server.make_role(user, real)
    try:
        arn = service.create(pg_server.secret(user, stored))
        monkeypatch.setenv("SECRETS_MANAGER_ENDPOINT", moto_server.endpoint_url)
        handler = load_handler()
        token = service.start_rotation(arn)
        handler.lambda_handler(sample_event("createSecret", arn, token), LambdaContext())
        pending = service.version_value(arn, token)["password"]
        with pytest.raises(RotationFailed) as raised:
            handler.lambda_handler(sample_event("setSecret", arn, token), LambdaContext())
        text, logged = str(raised.value), capsys.readouterr().out
        assert user in text and "fix:" in text
        assert '"event": "rotation step failed"' in logged
        for secret in (stored, real, pending):
            assert secret not in text and secret not in logged
        assert service.holder(arn, "AWSPENDING") == token and pg_server.can_login(user, real)
    finally:
        pg_server.drop_role(user)
