"""What AWS's contract has no step for: revoking AWSPREVIOUS (at the next createSecret, or right after
finishSecret), and telling consumers after finishSecret. IAM access keys on moto's IAM (a key IAM mints: the
function reads before it mints and deletes a key it could not store), a webhook receiver on loopback.

moto's STS does not check signatures (TEST-SERVERS.md): revocation is checked through IAM's own state.
"""

from __future__ import annotations

import io
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from rotator_plugins.stores.aws_secretsmanager import AwsSecretsManagerStore

from rotator.errors import ConfigError, NotifyError, StepError, TestFailed
from rotator.lambda_adapter import FunctionSettings, RotationFunction, load_notifiers
from rotator.testing import RecordingNotifier
from tests.servers.aws import MotoServer
from tests.servers.postgres import PgServer
from tests.servers.redis import RedisServer

from .conftest import Function, parsed_lines
from .rotation_service import STEPS, SecretsManagerService, sample_event


@pytest.fixture(scope="module")
def iam(moto_server: MotoServer) -> Any:
    return moto_server.client("iam")


@pytest.fixture
def iam_env(moto_server: MotoServer) -> dict[str, str]:
    options = {"endpoint_url": moto_server.endpoint_url, "region": moto_server.region, "propagation_timeout": 5}
    return {"ROTATOR_PLUGIN": "aws-iam-key", "ROTATOR_PLUGIN_OPTIONS": json.dumps({"aws-iam-key": options})}


@pytest.fixture
def iam_secret(iam: Any, service: SecretsManagerService) -> tuple[str, str, str]:
    """An IAM user with one key, and a secret holding it: (arn, user, key id)."""
    user = f"app-{uuid.uuid4().hex[:10]}"
    iam.create_user(UserName=user)
    key = iam.create_access_key(UserName=user)["AccessKey"]
    value = {"UserName": user, "AccessKeyId": key["AccessKeyId"], "SecretAccessKey": key["SecretAccessKey"]}
    return service.create(value), user, key["AccessKeyId"]


def keys_of(iam: Any, user: str) -> set[str]:
    return {k["AccessKeyId"] for k in iam.list_access_keys(UserName=user)["AccessKeyMetadata"]}


def test_previous_iam_key_is_revoked_at_the_next_create_secret_before_minting(
    iam: Any,
    iam_secret: tuple[str, str, str],
    iam_env: dict[str, str],
    service: SecretsManagerService,
    make_function: Callable[..., Function],
) -> None:
    arn, user, key1 = iam_secret
    function = make_function(iam_env)
    token = service.start_rotation(arn)
    first = function(sample_event("createSecret", arn, token))
    assert first["revoke"] == "nothing to revoke", "no AWSPREVIOUS yet: nothing happens"
    for step in STEPS[1:]:
        function(sample_event(step, arn, token))
    key2 = service.value(arn)["AccessKeyId"]
    assert keys_of(iam, user) == {key1, key2}, "AWSPREVIOUS's key stays valid until the next rotation"

    token2 = service.start_rotation(arn)
    created = function(sample_event("createSecret", arn, token2))
    assert created["revoke"].startswith("revoked ")
    key3 = service.version_value(arn, token2)["AccessKeyId"]
    assert keys_of(iam, user) == {key2, key3}, "key1 deleted before key3 was minted: never three keys"
    again = make_function(iam_env)(sample_event("createSecret", arn, token2))
    assert again["result"] == "pending-kept", "read before minting: a repeated createSecret mints nothing"
    assert keys_of(iam, user) == {key2, key3}
    for step in STEPS[1:]:
        function(sample_event(step, arn, token2))
    assert service.value(arn)["AccessKeyId"] == key3
    assert keys_of(iam, user) == {key2, key3}


def test_a_key_minted_while_another_invocation_stored_first_is_deleted(
    iam: Any,
    iam_secret: tuple[str, str, str],
    iam_env: dict[str, str],
    service: SecretsManagerService,
    make_function: Callable[..., Function],
) -> None:
    """Two createSecret invocations of one rotation race (a retried invocation whose first try still runs): the
    other one stores its value between this one's read and its write."""
    arn, user, key1 = iam_secret
    token = service.start_rotation(arn)
    winner = {"UserName": user, "AccessKeyId": "AKIA" + uuid.uuid4().hex[:16].upper(),
              "SecretAccessKey": uuid.uuid4().hex}  # fmt: skip
    function = make_function(iam_env)
    raced: list[bool] = []

    def store_first(**_: Any) -> None:
        if not raced:
            raced.append(True)
            service.client.put_secret_value(SecretId=arn, ClientRequestToken=token, SecretString=json.dumps(winner),
                                            VersionStages=["AWSPENDING"])  # fmt: skip

    function.on("before-call.secrets-manager.PutSecretValue", store_first)
    result = function(sample_event("createSecret", arn, token))
    assert raced == [True] and result["result"] == "pending-kept"
    assert service.version_value(arn, token) == winner
    assert keys_of(iam, user) == {key1}, "the key this invocation minted was deleted again (it was never stored)"


def test_revoke_right_after_finish_secret(
    iam: Any,
    iam_secret: tuple[str, str, str],
    iam_env: dict[str, str],
    service: SecretsManagerService,
    make_function: Callable[..., Function],
) -> None:
    arn, user, _key1 = iam_secret
    function = make_function({**iam_env, "ROTATOR_REVOKE_PREVIOUS": "finish"})
    token = service.start_rotation(arn)
    results = [function(sample_event(step, arn, token)) for step in STEPS]
    assert "revoke" not in results[0], "nothing revoked at createSecret with this policy"
    key2 = service.value(arn)["AccessKeyId"]
    assert results[-1]["revoke"].startswith("revoked ")
    assert keys_of(iam, user) == {key2}


def test_a_failing_revoke_never_blocks_the_rotation(
    service: SecretsManagerService, make_function: Callable[..., Function], pg_server: PgServer,
    log_lines: io.StringIO,
) -> None:  # fmt: skip
    """AWSPREVIOUS names another role than AWSCURRENT (the secret was repointed by hand): single-user revoke refuses
    to touch it; the error is logged and the rotation goes on."""
    old_user, user = f"old_{uuid.uuid4().hex[:8]}", f"app_{uuid.uuid4().hex[:8]}"
    password = "Init-" + uuid.uuid4().hex
    pg_server.make_role(user, password)
    try:
        arn = service.create(pg_server.secret(old_user, "Old-" + uuid.uuid4().hex))
        service.client.put_secret_value(SecretId=arn, SecretString=json.dumps(pg_server.secret(user, password)))
        function = make_function()
        token = service.start_rotation(arn)
        created = function(sample_event("createSecret", arn, token))
        assert created["revoke"].startswith("failed: StepError")
        for step in STEPS[1:]:
            function(sample_event(step, arn, token))
        assert service.holder(arn, "AWSCURRENT") == token
        assert pg_server.can_login(user, service.value(arn)["password"])
    finally:
        pg_server.drop_role(user)
    errors = [line for line in parsed_lines(log_lines) if line.get("level") == "error"]
    assert any(line["event"].startswith("revoking AWSPREVIOUS failed") for line in errors)


# -- notifiers ---------------------------------------------------------------------------------------------------


class _Receiver(ThreadingHTTPServer):
    status = 200
    bodies: list[bytes]


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        server: _Receiver = self.server  # type: ignore[assignment]
        server.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(server.status)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    server = _Receiver(("127.0.0.1", 0), _Handler)
    server.bodies = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


def test_notifiers_run_after_finish_secret_and_a_failure_is_logged_not_raised(
    service: SecretsManagerService, make_function: Callable[..., Function], log_lines: io.StringIO
) -> None:
    arn = service.create({"value": "initial-" + uuid.uuid4().hex})
    told = RecordingNotifier()
    leaked: list[str] = []

    def careless(event: Any) -> None:
        # A notifier whose error quotes the secret: the function must scrub it from its log and summary.
        leaked.append(str(event.read_value()["value"]))
        raise NotifyError(f"receiver said no to {leaked[-1]}")

    function = make_function({"ROTATOR_PLUGIN": "generated"}, notifiers=[("ops", told), ("careless", careless)])
    previous = service.holder(arn, "AWSCURRENT")
    token = service.start_rotation(arn)
    for step in STEPS[:-1]:
        function(sample_event(step, arn, token))
        assert told.events == [], "nobody is told before finishSecret"
    finished = function(sample_event("finishSecret", arn, token))
    assert service.holder(arn, "AWSCURRENT") == token, "the failing notifier did not undo the rotation"
    [event] = told.events
    assert (event.version_id, event.previous_version_id, event.trigger) == (token, previous, "lambda")
    assert event.secret_id == arn and event.kind == "credential.rotated"
    assert [f.split(":")[0] for f in finished["notify_failures"]] == ["careless"]
    assert leaked and leaked[0] not in json.dumps(finished)
    assert leaked[0] not in log_lines.getvalue()
    assert any(line["event"].startswith("notifier failed") and line["level"] == "error"
               for line in parsed_lines(log_lines))  # fmt: skip


def test_notifiers_from_the_environment(
    service: SecretsManagerService,
    make_function: Callable[..., Function],
    receiver: _Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TEST_HOOK_KEY", "hook-signing-key-" + uuid.uuid4().hex)
    hook = {"type": "webhook", "name": "deploy", "url": f"http://127.0.0.1:{receiver.server_port}/rotated",
            "allow_plain_http": True, "signing_key": "env:TEST_HOOK_KEY"}  # fmt: skip
    function = make_function({"ROTATOR_PLUGIN": "generated", "ROTATOR_NOTIFIERS": json.dumps([hook])})
    arn = service.create({"value": "initial-" + uuid.uuid4().hex})
    token = service.rotate(function, arn)
    [body] = receiver.bodies
    payload = json.loads(body)
    assert (payload["version"], payload["trigger"], payload["event"]) == (token, "lambda", "credential.rotated")
    assert service.value(arn)["value"] not in body.decode()

    receiver.status = 400  # refused: logged and reported, the rotation stands
    token2 = service.start_rotation(arn)
    results = [function(sample_event(step, arn, token2)) for step in STEPS]
    assert service.holder(arn, "AWSCURRENT") == token2
    assert results[-1]["notify_failures"] and results[-1]["notify_failures"][0].startswith("deploy: ")


def test_a_misconfigured_notifier_stops_the_rotation_before_it_starts(
    service: SecretsManagerService, make_function: Callable[..., Function]
) -> None:
    function = make_function({"ROTATOR_PLUGIN": "generated", "ROTATOR_NOTIFIERS": '[{"type": "webhook"}]'})
    arn = service.create({"value": "initial-" + uuid.uuid4().hex})
    token = service.start_rotation(arn)
    before = service.snapshot(arn)
    with pytest.raises(ConfigError, match=r"ROTATOR_NOTIFIERS\[0\]\.url"):
        function(sample_event("createSecret", arn, token))
    assert service.snapshot(arn) == before


def test_redis_keeps_both_passwords_until_the_next_create_secret(
    redis_server: RedisServer, service: SecretsManagerService, make_function: Callable[..., Function]
) -> None:
    """Redis ACL users hold several passwords: PREVIOUS keeps working until the next rotation revokes it."""
    user, password = f"app_{uuid.uuid4().hex[:8]}", "Init-" + uuid.uuid4().hex
    redis_server.make_user(user, password)
    try:
        arn = service.create(redis_server.secret(user, password, engine="redis"))
        function = make_function()
        service.rotate(function, arn)
        first = service.value(arn)["password"]
        assert redis_server.can_login(user, first) and redis_server.can_login(user, password)
        token = service.start_rotation(arn)
        assert function(sample_event("createSecret", arn, token))["revoke"].startswith("revoked ")
        assert not redis_server.can_login(user, password), "AWSPREVIOUS's password removed at createSecret"
        assert redis_server.can_login(user, first)
        for step in STEPS[1:]:
            function(sample_event(step, arn, token))
        assert redis_server.can_login(user, service.value(arn)["password"]) and redis_server.can_login(user, first)
    finally:
        redis_server.drop_user(user)


# -- failure events ---------------------------------------------------------------------------------------------


class _UndoRefused:
    """The generated plugin's shape, over a target that fails testSecret and then refuses the unstage."""

    strategies = ("single-user",)

    def create(self, ctx: Any, current: Any) -> dict[str, Any]:
        return {**current.value, "value": "new-" + uuid.uuid4().hex}

    def stage(self, ctx: Any, current: Any, pending: Any) -> None:
        pass

    def test(self, ctx: Any, pending: Any) -> None:
        raise TestFailed(f"the new value {pending['value']} is refused")

    def unstage(self, ctx: Any, current: Any, pending: Any) -> None:
        raise StepError("the target is down: AWSCURRENT was not put back")

    def revoke(self, ctx: Any, previous: Any, current: Any) -> None:
        pass

    def discard(self, ctx: Any, pending: Any) -> None:
        pass


def _hook(receiver: _Receiver, events: list[str]) -> str:
    return json.dumps([{"type": "webhook", "name": "pager", "url": f"http://127.0.0.1:{receiver.server_port}/x",
                        "allow_plain_http": True, "events": events}])  # fmt: skip


def test_a_failed_step_tells_the_notifiers_that_list_failure_events(
    service: SecretsManagerService,
    make_function: Callable[..., Function],
    receiver: _Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    told = RecordingNotifier()  # no events listed: the rotated event only, never a failure
    events = ["credential.rotated", "credential.rotation_failed"]
    hook = _hook(receiver, events)
    notifiers = [*load_notifiers(json.loads(hook)), ("chat", told)]
    function = make_function({"ROTATOR_PLUGIN": "generated", "ROTATOR_NOTIFIERS": hook}, notifiers=notifiers)
    arn = service.create({"value": "initial-" + uuid.uuid4().hex})
    token = service.start_rotation(arn)
    function(sample_event("createSecret", arn, token))
    monkeypatch.setenv("ROTATOR_FAILPOINTS", "after-stage=error")
    with pytest.raises(RuntimeError, match="failpoint after-stage"):
        function(sample_event("setSecret", arn, token))
    [body] = receiver.bodies
    payload = json.loads(body)
    assert (payload["event"], payload["version"], payload["trigger"]) == ("credential.rotation_failed", token, "lambda")
    assert "FailpointError" in payload["error"] and "Secrets Manager retries" in payload["action"]
    assert payload["previous_version"] == service.holder(arn, "AWSCURRENT")
    assert service.version_value(arn, token)["value"] not in body.decode()
    assert told.events == []
    monkeypatch.delenv("ROTATOR_FAILPOINTS")
    for step in ("setSecret", "testSecret", "finishSecret"):  # Secrets Manager's retry goes through
        function(sample_event(step, arn, token))
    assert [json.loads(b)["event"] for b in receiver.bodies[1:]] == ["credential.rotated"]
    assert [e.kind for e in told.events] == ["credential.rotated"]


def test_a_test_failure_that_cannot_put_current_back_is_stuck(
    service: SecretsManagerService, sm_client: Any, receiver: _Receiver, log_lines: io.StringIO
) -> None:
    settings = FunctionSettings.from_env(
        {"ROTATOR_PLUGIN": "undo-refused", "ROTATOR_NOTIFIERS": _hook(receiver, ["credential.rotation_stuck"])},
        file_exists=lambda _path: False,
    )
    function = RotationFunction(
        AwsSecretsManagerStore(client=sm_client), settings, load_plugin=lambda _type, _options: _UndoRefused()
    )
    arn = service.create({"value": "initial-" + uuid.uuid4().hex})
    token = service.start_rotation(arn)
    for step in ("createSecret", "setSecret"):
        function.handle(sample_event(step, arn, token))
    with pytest.raises(TestFailed):
        function.handle(sample_event("testSecret", arn, token))
    [body] = receiver.bodies
    payload = json.loads(body)
    assert payload["event"] == "credential.rotation_stuck" and "putting it back failed" in payload["action"]
    pending = service.version_value(arn, token)["value"]
    assert pending not in body.decode() and pending not in log_lines.getvalue()
    assert any(line["event"].startswith("unstage failed") for line in parsed_lines(log_lines))


@pytest.mark.parametrize(
    ("events", "words"),
    [
        (["credential.rolled_back"], "never sends credential.rolled_back"),
        ("credential.rotation_failed", "non-empty list"),
        ([], "non-empty list"),
    ],
)
def test_notifier_events_the_function_never_sends_are_refused(events: Any, words: str) -> None:
    spec = json.dumps([{"type": "webhook", "url": "https://hooks.example", "events": events}])
    with pytest.raises(ConfigError, match=words) as raised:
        FunctionSettings.from_env({"ROTATOR_NOTIFIERS": spec}, file_exists=lambda _path: False)
    assert raised.value.key == "ROTATOR_NOTIFIERS[0].events" and raised.value.fix
