"""The notifier contract (rotator.testing.NotifierContract) over every built-in notifier, loaded through the
registry (entry points) with its options as a config would give them, against a real receiver:

- webhook: an HTTP receiver on loopback (a path that answers 400 for the failing case);
- slack: the Slack incoming-webhook fake (tests/fakes/slack.py) over HTTPS with a throwaway CA (a revoked webhook);
- sns: moto's server, an SQS queue subscribed to the topic, read back (a topic that does not exist);
- eventbridge: moto's server, a rule on a bus targeting an SQS queue, read back (a bus that does not exist);
- ecs: moto's server, a cluster and service; what the receiver "got" is each new deployment (a missing service);
- kubernetes: the API server fake (tests/fakes/kubernetes.py) over HTTPS; the PATCH bodies (a missing Deployment);
- command: a real process that appends its ROTATOR_* environment to a file (a process exiting 3);
- file: a real file and a reload process that appends its environment to a file (a reload that prints the
  rendered file, secret included, to stderr and fails: the error must show it scrubbed).

No Slack workspace or Kubernetes cluster can be had here: those two use fakes written from the vendors' docs.

Failure events: webhook, slack, sns, eventbridge and command take them (the contract checks each is delivered, says
which kind it is, with its error and action, and no secret); ecs, kubernetes and file take only the success events
(the contract checks they deliver nothing for a failure event), as test_declared_event_kinds pins.
"""

from __future__ import annotations

import json
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from rotator.components import ComponentSetup
from rotator.model import FAILURE_EVENTS, REMINDER_EVENTS, SUCCESS_EVENTS
from rotator.registry import load_notifier
from rotator.testing import NotifierContract, NotifierHarness
from tests.fakes.kubernetes import FakeKubernetes
from tests.fakes.slack import FakeSlack
from tests.fakes.throwaway_ca import TlsFiles, make_throwaway_tls
from tests.servers.aws import MotoServer

NOTIFIERS = ["webhook", "slack", "sns", "eventbridge", "ecs", "kubernetes", "command", "file"]
# The notifiers that report failure events; the others redeploy or write the new credential, which a failed run
# does not have.
REPORT_FAILURES = {"webhook", "slack", "sns", "eventbridge", "command"}
# A process that appends its ROTATOR_* environment, as one JSON line, to the file named by its argument.
RECORD_ENV = (
    "import json, os, sys\n"
    "with open(sys.argv[1], 'a') as out:\n"
    "    out.write(json.dumps({k: v for k, v in os.environ.items() if k.startswith('ROTATOR_')}) + '\\n')\n"
)
# A reload that shows the file it was given on stderr, then fails: the error message must come out scrubbed.
SHOW_FILE_AND_FAIL = "import os, sys\nsys.stderr.write(open(os.environ['ROTATOR_FILE']).read())\nsys.exit(1)\n"


class _Quiet(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


class Receiver:
    """A webhook receiver on loopback: keeps every body; answers 400 on /refuse, 200 elsewhere."""

    def __init__(self) -> None:
        self.bodies: list[str] = []
        self._server = make_server("127.0.0.1", 0, self.wsgi, threaded=True, request_handler=_Quiet)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        if request.path == "/refuse":
            return Response("no", status=400)(environ, start_response)
        self.bodies.append(request.get_data(as_text=True))
        return Response("", status=204)(environ, start_response)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_throwaway_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def fake_kubernetes(tls: TlsFiles) -> Iterator[FakeKubernetes]:
    fake = FakeKubernetes(tls).serve()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def fake_slack(tls: TlsFiles) -> Iterator[FakeSlack]:
    fake = FakeSlack(tls).serve()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.stop()


_CLIENTS: dict[tuple[str, str], Any] = {}


def _client(moto: MotoServer, service: str) -> Any:
    """One boto3 client per service for the module (making one costs a few hundred milliseconds)."""
    key = (moto.endpoint_url, service)
    if key not in _CLIENTS:
        _CLIENTS[key] = moto.client(service)
    return _CLIENTS[key]


def _queue(moto: MotoServer, name: str) -> tuple[str, str]:
    sqs = _client(moto, "sqs")
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, arn


def _drainer(moto: MotoServer, queue_url: str) -> Callable[[], list[str]]:
    """deliveries() for an SQS queue: every message body received so far (each received once, then deleted)."""
    sqs = _client(moto, "sqs")
    seen: list[str] = []

    def deliveries() -> list[str]:
        while True:
            got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
            messages = got.get("Messages", [])
            if not messages:
                return list(seen)
            for message in messages:
                seen.append(message["Body"])
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])

    return deliveries


def _lines(path: Path) -> Callable[[], list[str]]:
    return lambda: path.read_text().splitlines() if path.exists() else []


@pytest.fixture(params=NOTIFIERS)
def notifier_harness(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tls: TlsFiles
) -> NotifierHarness:
    kind: str = request.param
    setup = ComponentSetup(
        name=kind, config_dir=tmp_path, state_dir=tmp_path / "state", config_file=str(tmp_path / "rotator.toml")
    )

    def load(options: dict[str, Any]) -> Callable[[], Any]:
        return lambda: load_notifier(kind, options, setup, f"notifiers.{kind}")

    tag = uuid.uuid4().hex[:10]
    if kind == "webhook":
        receiver: Receiver = request.getfixturevalue("receiver")
        before = len(receiver.bodies)
        base = {"allow_plain_http": True, "timeout": 5}
        return NotifierHarness(
            new_notifier=load({"url": f"{receiver.url}/rotated", **base}),
            deliveries=lambda: receiver.bodies[before:],
            new_failing_notifier=load({"url": f"{receiver.url}/refuse", **base}),
        )
    if kind == "slack":
        slack: FakeSlack = request.getfixturevalue("fake_slack")
        good, revoked = slack.add_webhook(f"#c-{tag}"), slack.add_webhook(f"#gone-{tag}")
        slack.revoke(revoked)
        monkeypatch.setenv("CONTRACT_SLACK_URL", good)
        monkeypatch.setenv("CONTRACT_SLACK_REVOKED", revoked)
        base = {"ca_bundle": str(tls.ca_cert), "timeout": 5}
        return NotifierHarness(
            new_notifier=load({"webhook_url": "env:CONTRACT_SLACK_URL", **base}),
            deliveries=lambda: [json.dumps(m) for m in slack.messages_for(good)],
            new_failing_notifier=load({"webhook_url": "env:CONTRACT_SLACK_REVOKED", **base}),
            secrets=(good, revoked),
        )
    if kind in ("sns", "eventbridge", "ecs"):
        moto: MotoServer = request.getfixturevalue("moto_server")
        aws = {"region": moto.region, "endpoint_url": moto.endpoint_url}
        if kind == "sns":
            sns = _client(moto, "sns")
            topic = sns.create_topic(Name=f"contract-{tag}")["TopicArn"]
            queue_url, queue_arn = _queue(moto, f"contract-sns-{tag}")
            sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
            return NotifierHarness(
                new_notifier=load({"topic_arn": topic, **aws}),
                deliveries=_drainer(moto, queue_url),
                new_failing_notifier=load({"topic_arn": f"{topic}-missing", **aws}),
            )
        if kind == "eventbridge":
            events = _client(moto, "events")
            bus = f"contract-{tag}"
            events.create_event_bus(Name=bus)
            queue_url, queue_arn = _queue(moto, f"contract-events-{tag}")
            events.put_rule(Name="all", EventBusName=bus, EventPattern=json.dumps({"source": ["rotator"]}))
            events.put_targets(Rule="all", EventBusName=bus, Targets=[{"Id": "queue", "Arn": queue_arn}])
            return NotifierHarness(
                new_notifier=load({"event_bus_name": bus, **aws}),
                deliveries=_drainer(moto, queue_url),
                new_failing_notifier=load({"event_bus_name": f"{bus}-missing", **aws}),
            )
        ecs = _client(moto, "ecs")
        cluster = f"contract-{tag}"
        ecs.create_cluster(clusterName=cluster)
        ecs.register_task_definition(
            family=f"app-{tag}", containerDefinitions=[{"name": "app", "image": "app", "memory": 128}]
        )
        ecs.create_service(cluster=cluster, serviceName="api", taskDefinition=f"app-{tag}", desiredCount=0)
        started: list[str] = []

        def deployments() -> list[str]:
            [service] = ecs.describe_services(cluster=cluster, services=["api"])["services"]
            for deployment in service["deployments"]:
                text = f"deployment {deployment['id']} created {deployment['createdAt']}"
                if deployment["status"] == "PRIMARY" and text not in started:
                    started.append(text)
            return list(started)

        deployments()  # the service's first deployment is not a delivery
        offset = len(started)
        return NotifierHarness(
            new_notifier=load({"cluster": cluster, "service": "api", **aws}),
            deliveries=lambda: deployments()[offset:],
            new_failing_notifier=load({"cluster": cluster, "service": "missing", **aws}),
            carries=(),
        )
    if kind == "kubernetes":
        kube: FakeKubernetes = request.getfixturevalue("fake_kubernetes")
        token = f"contract-token-{uuid.uuid4().hex}"
        kube.add_token(token, verbs={"get", "patch"}, namespaces={"contract"})
        name = f"api-{tag}"
        kube.add_workload("deployments", "contract", name)
        monkeypatch.setenv("CONTRACT_KUBE_TOKEN", token)
        base = {
            "api_server": kube.url,
            "token": "env:CONTRACT_KUBE_TOKEN",
            "ca_bundle": str(tls.ca_cert),
            "namespace": "contract",
        }
        return NotifierHarness(
            new_notifier=load({"targets": [f"deployment/{name}"], **base}),
            deliveries=lambda: [json.dumps(r.body) for r in kube.patches(name)],
            new_failing_notifier=load({"targets": [f"deployment/{name}-missing"], **base}),
            carries=("event", "run_id"),  # the patch carries "<event> <run id>" (restarted-for), not the plan
            secrets=(token,),
        )
    log = tmp_path / f"{kind}.log"
    record = [sys.executable, "-c", RECORD_ENV, str(log)]
    if kind == "command":
        fail = [sys.executable, "-c", "import sys; sys.stderr.write('boom\\n'); sys.exit(3)"]
        return NotifierHarness(
            new_notifier=load({"argv": record, "timeout": 30}),
            deliveries=_lines(log),
            new_failing_notifier=load({"argv": fail, "timeout": 30}),
        )
    rendered = tmp_path / "app.env"
    return NotifierHarness(
        new_notifier=load({"path": str(rendered), "format": "env", "reload": record}),
        deliveries=_lines(log),
        new_failing_notifier=load(
            {"path": str(rendered), "format": "env", "reload": [sys.executable, "-c", SHOW_FILE_AND_FAIL]}
        ),
    )


class TestNotifierContract(NotifierContract):
    def test_declared_event_kinds(self, notifier_harness: NotifierHarness, request: pytest.FixtureRequest) -> None:
        """Which branch of the failure-event checks each notifier takes is not left to chance: a redeploying
        notifier that started to declare failure events (or a reporting one that stopped) fails here."""
        kind = request.node.callspec.params["notifier_harness"]
        reporting = SUCCESS_EVENTS | FAILURE_EVENTS | REMINDER_EVENTS  # reporting ones take manual plans' reminders too
        expected = reporting if kind in REPORT_FAILURES else SUCCESS_EVENTS
        assert set(notifier_harness.new_notifier().event_kinds) == expected  # type: ignore[attr-defined]
