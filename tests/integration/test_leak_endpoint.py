"""The daemon's leak endpoint (rotator/leak_reports.py) over real HTTP: GitHub secret scanning's alert shape against
a real PostgreSQL plan, AWS Health's exposed-key event against an IAM key on moto's server, and every way a report
is refused (unsigned, forged, stale, replayed, oversized, of unknown shape) without a rotation and without the
report's contents in the answer or the log."""

from __future__ import annotations

import json
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from rotator_plugins.rotation.aws_iam_key import AwsIamKeyPlugin

from rotator.components import ComponentSetup
from rotator.engine.runner import BoundPlan, Runner
from rotator.fingerprints import FingerprintKey
from rotator.journal.sqlite import SqliteJournal
from rotator.leak_reports import (
    ROUTE,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    LeakContext,
    LeakReportServer,
    sign,
)
from rotator.leaks import rotate_leaked
from rotator.local_store import LocalStore, create_key_file
from rotator.model import Stage, Trigger
from tests.lifecycle_env import LeakEnv, leak_env
from tests.servers.aws import MotoServer
from tests.servers.postgres import PgServer

HMAC_KEY = secrets.token_bytes(32)


class Endpoint:
    def __init__(self, server: LeakReportServer, done: threading.Event) -> None:
        self.server = server
        self.done = done
        host, port = server.address
        self.url = f"http://{host}:{port}{ROUTE}"

    def post(
        self,
        body: Any,
        *,
        key: bytes = HMAC_KEY,
        at: float | None = None,
        signed: bool = True,
        raw: bytes | None = None,
    ) -> requests.Response:
        data = raw if raw is not None else json.dumps(body).encode()
        stamp = int(time.time() if at is None else at)
        headers = {"Content-Type": "application/json"}
        if signed:
            headers |= {TIMESTAMP_HEADER: str(stamp), SIGNATURE_HEADER: sign(key, stamp, data)}
        return requests.post(self.url, data=data, headers=headers, timeout=10)


def serve(journal: Any, key: FingerprintKey, runner: Runner, plans: dict[str, BoundPlan]) -> Iterator[Endpoint]:
    done = threading.Event()

    def rotate(plan_ids: list[str], reasons: dict[str, str]) -> None:
        rotate_leaked(runner, [plans[p] for p in plan_ids], reasons, concurrency=4)
        done.set()

    server = LeakReportServer(("127.0.0.1", 0), HMAC_KEY, 300.0, LeakContext(journal, key, rotate))
    server.start()
    try:
        yield Endpoint(server, done)
    finally:
        server.close()


@pytest.fixture
def pg_endpoint(tmp_path: Path, pg_server: PgServer) -> Iterator[tuple[LeakEnv, Endpoint]]:
    env = leak_env(tmp_path, pg_server, 2)
    env.rotate(*env.plans)
    workspace = env.workspace()
    assert workspace.fingerprint_key is not None
    plans = {p: workspace.bind(workspace.config.plan(p)) for p in env.plans}
    try:
        yield from ((env, e) for e in serve(workspace.journal, workspace.fingerprint_key, workspace.runner(), plans))
    finally:
        workspace.close()


def github_alert(token: str) -> list[dict[str, str]]:
    return [
        {
            "token": token,
            "type": "example_db_password",
            "url": "https://github.com/octocat/Hello-World/blob/12345600b9cbe38a219f39a9941c9319b600c002/.env",
            "source": "content",
        }
    ]


def test_github_alert_rotates_the_plan_and_the_leaked_password_is_refused(
    pg_endpoint: tuple[LeakEnv, Endpoint],
) -> None:
    env, endpoint = pg_endpoint
    leaked = env.value(env.plans[1])
    assert leaked is not None and env.logs_in(leaked)
    answer = endpoint.post(github_alert(leaked["password"]))
    assert answer.status_code == 202, answer.text
    assert answer.json()["rotating"] == [env.plans[1]]
    assert leaked["password"] not in answer.text
    assert endpoint.done.wait(60), "the leak rotation did not finish"
    assert not env.logs_in(leaked), "the leaked password still logs in"
    assert env.logs_in(env.value(env.plans[1]))
    workspace = env.workspace()
    try:
        run = workspace.journal.runs(env.plans[1], limit=1)[0]
        untouched = workspace.journal.runs(env.plans[0], limit=1)[0]
    finally:
        workspace.close()
    assert run.trigger is Trigger.LEAK and run.reason and "GitHub secret scanning" in run.reason
    assert "github.com/octocat" in run.reason and leaked["password"] not in run.reason
    assert untouched.trigger is Trigger.MANUAL  # the other plan was not rotated


def test_refused_reports_rotate_nothing_and_echo_nothing(pg_endpoint: tuple[LeakEnv, Endpoint]) -> None:
    env, endpoint = pg_endpoint
    leaked = env.value(env.plans[0])
    assert leaked is not None
    alert = github_alert(leaked["password"])
    refused = {
        "unsigned": endpoint.post(alert, signed=False),
        "forged": endpoint.post(alert, key=secrets.token_bytes(32)),
        "stale": endpoint.post(alert, at=time.time() - 301),
        "future": endpoint.post(alert, at=time.time() + 301),
        "not json": endpoint.post(None, raw=b"token=" + leaked["password"].encode()),
        "unknown shape": endpoint.post({"token": leaked["password"]}),
        "other aws event": endpoint.post({"source": "aws.health", "detail": {"eventTypeCode": "AWS_EC2_REBOOT"}}),
    }
    codes = {name: answer.status_code for name, answer in refused.items()}
    assert codes == {
        "unsigned": 401,
        "forged": 401,
        "stale": 401,
        "future": 401,
        "not json": 400,
        "unknown shape": 400,
        "other aws event": 400,
    }
    for answer in refused.values():
        assert leaked["password"] not in answer.text
    big = requests.post(endpoint.url, data=b"[" + b" " * (1024 * 1024 + 10) + b"]", timeout=10)
    assert big.status_code == 413
    assert requests.get(endpoint.url, timeout=10).status_code == 405
    wrong_path = requests.post(endpoint.url.replace(ROUTE, "/other"), data=b"[]", timeout=10)
    assert wrong_path.status_code == 404
    assert env.logs_in(leaked), "a refused report must not rotate anything"


def test_a_replayed_report_is_refused(pg_endpoint: tuple[LeakEnv, Endpoint]) -> None:
    _env, endpoint = pg_endpoint
    body = json.dumps(github_alert("not-a-managed-secret-at-all")).encode()
    stamp = int(time.time())
    headers = {TIMESTAMP_HEADER: str(stamp), SIGNATURE_HEADER: sign(HMAC_KEY, stamp, body)}
    first = requests.post(endpoint.url, data=body, headers=headers, timeout=10)
    again = requests.post(endpoint.url, data=body, headers=headers, timeout=10)
    assert (first.status_code, again.status_code) == (202, 409)
    assert first.json() == {"received": 1, "matched": [], "rotating": [], "rotate_by_hand": []}


def test_aws_exposed_key_event_rotates_the_iam_key_and_deletes_the_exposed_one(
    tmp_path: Path, moto_server: MotoServer
) -> None:
    iam = moto_server.client("iam")
    user = f"app-{uuid.uuid4().hex[:10]}"
    iam.create_user(UserName=user)
    create_key_file(tmp_path / "store.key")
    store = LocalStore({}, ComponentSetup(name="local", config_dir=tmp_path, state_dir=tmp_path))
    journal = SqliteJournal(tmp_path / "journal.db")
    key = iam.create_access_key(UserName=user)["AccessKey"]
    store.put_current(
        "app/iam",
        {"UserName": user, "AccessKeyId": key["AccessKeyId"], "SecretAccessKey": key["SecretAccessKey"]},
    )
    plugin = AwsIamKeyPlugin({"endpoint_url": moto_server.endpoint_url, "region": moto_server.region})
    bp = BoundPlan(plan_id="iam", secret_id="app/iam", store_name="local", store=store, plugin=plugin)
    fingerprint_key = FingerprintKey(secrets.token_bytes(32))
    runner = Runner(journal, fingerprint_key=fingerprint_key)
    try:
        assert runner.rotate(bp).ok
        exposed = store.get("app/iam", Stage.CURRENT)
        assert exposed is not None
        exposed_id = exposed.value["AccessKeyId"]
        event = {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "AWS Health Event",
            "source": "aws.health",
            "account": "123456789012",
            "time": "2026-12-03T10:00:00Z",
            "region": "us-east-1",
            "resources": [],
            "detail": {
                "eventArn": "arn:aws:health:global::event/RISK/AWS_RISK_CREDENTIALS_EXPOSED/EXAMPLE",
                "service": "RISK",
                "eventTypeCode": "AWS_RISK_CREDENTIALS_EXPOSED",
                "eventTypeCategory": "issue",
                "affectedEntities": [{"entityValue": exposed_id}],
            },
        }
        for endpoint in serve(journal, fingerprint_key, runner, {"iam": bp}):
            answer = endpoint.post(event)
            assert answer.status_code == 202, answer.text
            assert answer.json()["matched"] == [{"plan": "iam", "version": exposed.version_id, "state": "current"}]
            assert endpoint.done.wait(60)
        keys = {k["AccessKeyId"]: k["Status"] for k in iam.list_access_keys(UserName=user)["AccessKeyMetadata"]}
        current = store.get("app/iam", Stage.CURRENT)
        assert current is not None and current.value["AccessKeyId"] != exposed_id
        assert exposed_id not in keys, f"the exposed key is still there: {keys}"
        assert keys[current.value["AccessKeyId"]] == "Active"
    finally:
        store.close()
        journal.close()
