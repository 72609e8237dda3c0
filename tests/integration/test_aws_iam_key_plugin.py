"""The aws-iam-key plugin on moto's server (real HTTP), through the engine (Runner, LocalStore, SqliteJournal).

moto differs from AWS here (see /work/shared/TEST-SERVERS.md): STS does not verify signatures and an Inactive key
still signs, so revocation is checked through IAM's own state (ListAccessKeys), never through STS.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from rotator_plugins.rotation.aws_iam_key import AwsIamKeyPlugin

from rotator import (
    Credential,
    PasswordPolicy,
    RotationContext,
    Stage,
    StepError,
    TestFailed,
    TransientError,
    options_dict,
)
from rotator.components import ComponentSetup
from rotator.engine.runner import BoundPlan, Runner
from rotator.journal.sqlite import SqliteJournal
from rotator.local_store import LocalStore, create_key_file
from tests.cli_env import CliEnv
from tests.servers.aws import MotoServer

SECRET = "app/iam"


@pytest.fixture
def iam(moto_server: MotoServer) -> Any:
    return moto_server.client("iam")


@pytest.fixture
def user(iam: Any) -> str:
    name = f"app-{uuid.uuid4().hex[:10]}"
    iam.create_user(UserName=name)
    return name


@pytest.fixture
def env(tmp_path: Path, moto_server: MotoServer, iam: Any, user: str):
    create_key_file(tmp_path / "store.key")
    store = LocalStore({}, ComponentSetup(name="local", config_dir=tmp_path, state_dir=tmp_path))
    journal = SqliteJournal(tmp_path / "journal.db")
    key = iam.create_access_key(UserName=user)["AccessKey"]
    store.put_current(SECRET, value_of(key))
    yield store, journal
    store.close()
    journal.close()


def value_of(key: dict[str, Any]) -> dict[str, str]:
    return {"UserName": key["UserName"], "AccessKeyId": key["AccessKeyId"], "SecretAccessKey": key["SecretAccessKey"]}


def plugin_for(moto_server: MotoServer, **options: Any) -> AwsIamKeyPlugin:
    return AwsIamKeyPlugin({"endpoint_url": moto_server.endpoint_url, "region": moto_server.region, **options})


def bind(store: LocalStore, plugin: AwsIamKeyPlugin, grace: timedelta = timedelta(hours=1)) -> BoundPlan:
    return BoundPlan(plan_id="iam", secret_id=SECRET, store_name="local", store=store, plugin=plugin, grace=grace)


def keys_of(iam: Any, user: str) -> dict[str, str]:
    return {k["AccessKeyId"]: k["Status"] for k in iam.list_access_keys(UserName=user)["AccessKeyMetadata"]}


def context(store: LocalStore) -> RotationContext:
    return RotationContext(
        plan_id="iam",
        run_id=uuid.uuid4().hex,
        secret_id=SECRET,
        strategy="single-user",
        options={},
        password_policy=PasswordPolicy(),
        read_secret=lambda _s: None,  # type: ignore[arg-type,return-value]
        read_stage=lambda stage: store.get(SECRET, stage),
    )


def test_rotation_two_keys_during_grace_then_previous_deleted(env, moto_server, iam, user):
    store, journal = env
    plugin = plugin_for(moto_server)
    old = store.get(SECRET)
    outcome = Runner(journal).rotate(bind(store, plugin))
    assert outcome.outcome == "awaiting_revoke", outcome.error
    new = store.get(SECRET)
    assert new.version_id == outcome.run_id and new["UserName"] == user
    assert store.get(SECRET, Stage.PREVIOUS).version_id == old.version_id
    assert store.get(SECRET, Stage.PENDING) is None
    assert keys_of(iam, user) == {old["AccessKeyId"]: "Active", new["AccessKeyId"]: "Active"}  # grace: both valid

    later = Runner(journal, clock=lambda: datetime.now(UTC) + timedelta(hours=2))
    [revoked] = later.revoke_due(bind(store, plugin))
    assert revoked.revoked and revoked.outcome == "succeeded"
    assert keys_of(iam, user) == {new["AccessKeyId"]: "Active"}  # PREVIOUS deleted, CURRENT untouched
    used = plugin.last_used(context(store), new)
    assert used is None or isinstance(used, datetime)


def test_revoke_with_delete_after_deactivates_then_reconcile_deletes(env, moto_server, iam, user):
    store, journal = env
    plugin = plugin_for(moto_server, delete_after=3600)
    old = store.get(SECRET)
    outcome = Runner(journal).rotate(bind(store, plugin), revoke_old_now=True)
    assert outcome.outcome == "succeeded" and outcome.revoked, outcome.error
    new = store.get(SECRET)
    assert keys_of(iam, user) == {old["AccessKeyId"]: "Inactive", new["AccessKeyId"]: "Active"}
    plugin.revoke(context(store), old, new)  # idempotent
    ctx, known = context(store), [new, store.get(SECRET, Stage.PREVIOUS)]
    assert plugin.reconcile(ctx, known) == []  # not yet delete_after old
    aged = AwsIamKeyPlugin(options_dict(plugin.options), clock=lambda: datetime.now(UTC) + timedelta(hours=2))
    assert aged.reconcile(ctx, known) == [old["AccessKeyId"]]
    assert keys_of(iam, user) == {new["AccessKeyId"]: "Active"}
    plugin.revoke(ctx, old, new)  # the key is gone: still done


def test_create_at_two_key_limit_removes_the_stray_never_current(env, moto_server, iam, user):
    store, _ = env
    current = store.get(SECRET)
    stray = iam.create_access_key(UserName=user)["AccessKey"]["AccessKeyId"]
    value = plugin_for(moto_server).create(context(store), current)
    assert value["UserName"] == user and value["AccessKeyId"] not in (stray, current["AccessKeyId"])
    assert set(keys_of(iam, user)) == {current["AccessKeyId"], value["AccessKeyId"]}


def test_create_refuses_when_both_keys_are_stored(env, moto_server, iam, user):
    store, _ = env
    current = store.get(SECRET)
    pending = iam.create_access_key(UserName=user)["AccessKey"]
    store.put_pending(SECRET, value_of(pending), uuid.uuid4().hex)
    with pytest.raises(StepError, match="rotator resume") as caught:
        plugin_for(moto_server).create(context(store), current)
    assert pending["SecretAccessKey"] not in str(caught.value)
    assert set(keys_of(iam, user)) == {current["AccessKeyId"], pending["AccessKeyId"]}


def test_orphan_from_a_crash_is_deleted_by_the_next_run(env, moto_server, iam, user, capsys):
    store, journal = env
    orphan = iam.create_access_key(UserName=user)["AccessKey"]  # minted, then the process died before the store
    current = store.get(SECRET)
    outcome = Runner(journal).rotate(bind(store, plugin_for(moto_server)))
    assert outcome.outcome == "awaiting_revoke", outcome.error
    new = store.get(SECRET)
    assert keys_of(iam, user) == {current["AccessKeyId"]: "Active", new["AccessKeyId"]: "Active"}
    assert orphan["AccessKeyId"] not in keys_of(iam, user)
    out = capsys.readouterr()
    assert orphan["AccessKeyId"] in out.out + out.err  # reconcile logs the ids it deleted
    for secret in (orphan["SecretAccessKey"], current["SecretAccessKey"], new["SecretAccessKey"]):
        assert secret not in out.out + out.err


def test_failed_test_rolls_back_deleting_the_new_key(env, moto_server, iam, user, monkeypatch, capsys):
    store, journal = env
    current = store.get(SECRET)
    monkeypatch.setenv("ROTATOR_FAILPOINTS", "after-test=error")
    outcome = Runner(journal).rotate(bind(store, plugin_for(moto_server)))
    assert outcome.outcome == "rolled_back", outcome.error
    assert store.get(SECRET).version_id == current.version_id
    assert store.get(SECRET, Stage.PENDING) is None
    assert keys_of(iam, user) == {current["AccessKeyId"]: "Active"}  # the minted key was deleted; CURRENT stays
    out = capsys.readouterr()
    assert current["SecretAccessKey"] not in out.out + out.err


def test_access_denied_names_action_and_user(moto_server, user) -> None:
    from botocore.exceptions import ClientError

    class Denied:
        def list_access_keys(self, **_kw: Any) -> Any:
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "ListAccessKeys")

    plugin = AwsIamKeyPlugin({}, iam_client=Denied())
    ctx = RotationContext("iam", "r", SECRET, "single-user", {}, PasswordPolicy(), lambda _s: None)  # type: ignore[arg-type,return-value]
    credential = Credential("v", {"UserName": user, "AccessKeyId": "AKIAEXAMPLE", "SecretAccessKey": "s" * 40})
    with pytest.raises(StepError, match=f"iam:ListAccessKeys for IAM user '{user}'") as caught:
        plugin.create(ctx, credential)
    assert "s" * 40 not in str(caught.value)
    assert json.dumps(options_dict(plugin.options))  # options are plain data


def test_probe_fails_for_a_deleted_key_and_discard_is_idempotent(env, moto_server, iam, user):
    store, _ = env
    plugin = plugin_for(moto_server, propagation_timeout=1)
    ctx = context(store)
    pending = Credential("p", plugin.create(ctx, store.get(SECRET)), frozenset({Stage.PENDING}))
    plugin.test(ctx, pending)  # the new key signs as the user
    plugin.discard(ctx, pending)
    plugin.discard(ctx, pending)  # already gone: done
    assert pending["AccessKeyId"] not in keys_of(iam, user)
    # moto answers GetCallerIdentity for an unknown key as its default identity, not as the user; AWS refuses
    # the signature (InvalidClientTokenId). Both end in TestFailed once propagation_timeout has passed.
    with pytest.raises(TestFailed) as caught:
        plugin.test(ctx, pending)
    assert pending["SecretAccessKey"] not in str(caught.value)


@pytest.mark.parametrize(
    ("code", "status", "expected", "text"),
    [
        ("Throttling", 400, TransientError, "retried"),
        ("ServiceFailure", 500, TransientError, "retried"),
        ("LimitExceeded", 409, StepError, "fix: delete the key"),
        ("AccessDenied", 403, StepError, "fix: grant iam:CreateAccessKey"),
    ],
)
def test_errors_are_mapped_at_one_boundary(code, status, expected, text) -> None:
    from botocore.exceptions import ClientError

    class Iam:
        def list_access_keys(self, **_kw: Any) -> Any:
            return {"AccessKeyMetadata": []}

        def create_access_key(self, **_kw: Any) -> Any:
            raise ClientError(
                {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
                "CreateAccessKey",
            )

    plugin = AwsIamKeyPlugin({}, iam_client=Iam())
    ctx = RotationContext("iam", "r", SECRET, "single-user", {}, PasswordPolicy(), lambda _s: None)  # type: ignore[arg-type,return-value]
    credential = Credential("v", {"UserName": "app", "AccessKeyId": "AKIAEXAMPLE", "SecretAccessKey": "s" * 40})
    with pytest.raises(expected, match=text):
        plugin.create(ctx, credential)


def test_cli_rotation_through_the_config(tmp_path: Path, moto_server: MotoServer, iam: Any, user: str) -> None:
    """The plugin loaded by its entry point from a config, in the `rotator` command's own process (the session's
    AWS_* dummy environment is inherited, so the CLI signs its IAM calls to moto)."""
    config = tmp_path / "rotator.toml"
    config.write_text(f"""
[rotator]
state_dir = "state"
step_timeout = 20

[[plans]]
id = "ci-key"
plugin = {{type = "aws-iam-key", endpoint_url = "{moto_server.endpoint_url}", propagation_timeout = 5}}
secret = "iam/{user}"
strategy = "single-user"
grace = "1h"
""")
    cli = CliEnv(tmp_path, config)
    assert cli.run("init").code == 0
    first = value_of(iam.create_access_key(UserName=user)["AccessKey"])
    cli.seed(f"iam/{user}", first)

    def stage(name: str) -> dict[str, Any] | None:
        result = cli.run("store", "get", f"iam/{user}", "--stage", name)
        return result.json() if result.code == 0 else None

    rotated = cli.run("rotate-now", "ci-key", "--json", "--log-level", "debug")
    assert rotated.code == 0, rotated.stdout + rotated.stderr
    second = stage("CURRENT")
    assert second is not None and keys_of(iam, user) == {
        first["AccessKeyId"]: "Active",
        second["AccessKeyId"]: "Active",
    }
    now = cli.run("rotate-now", "ci-key", "--revoke-old", "now", "--json", "--log-level", "debug")
    assert now.code == 0, now.stdout + now.stderr
    third = stage("CURRENT")
    assert third is not None and keys_of(iam, user) == {third["AccessKeyId"]: "Active"}  # first and second revoked
    failed = cli.run("rotate-now", "ci-key", "--json", env={"ROTATOR_FAILPOINTS": "after-test=error"})
    assert failed.code == 1 and failed.json()["results"][0]["outcome"] == "rolled_back"
    assert stage("CURRENT") == third and stage("PENDING") is None
    assert keys_of(iam, user) == {third["AccessKeyId"]: "Active"}  # the minted key is gone
    text = "\n".join(r.stdout + r.stderr for r in (rotated, now, failed))
    files = b"".join(p.read_bytes() for p in cli.state_files())
    for secret in (first["SecretAccessKey"], second["SecretAccessKey"], third["SecretAccessKey"]):
        assert secret not in text and secret.encode() not in files


def test_docstring_names_every_iam_action_the_code_calls() -> None:
    """The module docstring is the least-privilege policy: it names exactly the IAM actions the code calls."""
    import inspect
    import re

    import rotator_plugins.rotation.aws_iam_key as module

    source = inspect.getsource(module)
    called = set(re.findall(r'_call\(\s*ctx,\s*[a-z"_]+,\s*"([A-Za-z]+)"', source)) | {"DeleteAccessKey"}
    called |= {"ListAccessKeys"}  # _list_keys
    named = set(re.findall(r"``iam:([A-Za-z]+)", module.__doc__ or ""))
    assert called == named
    assert "``sts:GetCallerIdentity``" in (module.__doc__ or "")
