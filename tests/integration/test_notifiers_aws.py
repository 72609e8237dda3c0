"""The sns, eventbridge and ecs notifiers against moto's server (real HTTP), read back the way consumers read:
an SQS queue subscribed to the topic, a rule on the bus targeting an SQS queue, the ECS service's deployments.

Where moto cannot produce an answer AWS documents (a PutEvents entry that fails inside a 200 answer, an ECS
rollout that FAILED), a botocore Stubber on a real client gives that answer, and also checks our request's shape
against the service model.
"""

from __future__ import annotations

import json
import re
import socket
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from rotator_plugins.aws.errors import notify_error
from rotator_plugins.notifiers.aws_events import EventBridgeNotifier, SnsNotifier
from rotator_plugins.notifiers.ecs import EcsRedeployNotifier

from rotator import ComponentSetup, ConfigError, NotifyError, RotationEvent, TransientError
from rotator.registry import load_notifier
from rotator.testing import sample_event
from tests.cli_env import CliEnv
from tests.servers.aws import MotoServer


@pytest.fixture
def setup(tmp_path: Path) -> ComponentSetup:
    return ComponentSetup(name="aws", config_dir=tmp_path, state_dir=tmp_path / "state", config_file="rotator.toml")


def aws(moto: MotoServer) -> dict[str, Any]:
    return {"region": moto.region, "endpoint_url": moto.endpoint_url}


def queue(moto: MotoServer, name: str, **attributes: str) -> tuple[str, str]:
    sqs = moto.client("sqs")
    url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, arn


def receive(moto: MotoServer, url: str) -> list[dict[str, Any]]:
    got = moto.client("sqs").receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0, MessageAttributeNames=["All"], AttributeNames=["All"]
    )
    return list(got.get("Messages", []))


def rolled_back(event: RotationEvent) -> RotationEvent:
    return RotationEvent(**{**event.__dict__, "kind": "credential.rolled_back"})


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


# -- sns ----------------------------------------------------------------------------------------------------------


def test_sns_publishes_the_event_with_filterable_attributes(moto_server: MotoServer, setup: ComponentSetup):
    sns = moto_server.client("sns")
    tag = uuid.uuid4().hex[:8]
    topic = sns.create_topic(Name=f"rotations-{tag}")["TopicArn"]
    everything, everything_arn = queue(moto_server, f"all-{tag}")
    rollbacks, rollbacks_arn = queue(moto_server, f"rollbacks-{tag}")
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=everything_arn)
    sns.subscribe(
        TopicArn=topic,
        Protocol="sqs",
        Endpoint=rollbacks_arn,
        Attributes={"FilterPolicy": json.dumps({"event": ["credential.rolled_back"]})},
    )
    notifier = SnsNotifier({"topic_arn": topic, **aws(moto_server)}, setup)
    event = sample_event()
    notifier(event)
    [message] = receive(moto_server, everything)
    envelope = json.loads(message["Body"])
    assert json.loads(envelope["Message"]) == event.as_dict()
    assert envelope["Subject"] == f"Credential rotated: {event.plan_id}"
    attributes = {name: a["Value"] for name, a in envelope["MessageAttributes"].items()}
    assert attributes == {
        "plan": event.plan_id,
        "event": "credential.rotated",
        "secret": event.secret_id,
        "store": event.store,
        "tags": '["contract"]',
    }
    value = event.read_value() if event.read_value else {}
    assert value["password"] not in message["Body"] and value["api_key"] not in message["Body"]
    assert receive(moto_server, rollbacks) == []  # the filter policy kept the rotation out
    notifier(rolled_back(event))
    [rollback] = receive(moto_server, rollbacks)
    assert json.loads(json.loads(rollback["Body"])["Message"])["event"] == "credential.rolled_back"
    assert json.loads(rollback["Body"])["Subject"].startswith("Credential rotation rolled back")


def test_sns_fifo_drops_a_repeated_event_but_not_the_rollback(moto_server: MotoServer, setup: ComponentSetup):
    sns = moto_server.client("sns")
    tag = uuid.uuid4().hex[:8]
    topic = sns.create_topic(
        Name=f"rotations-{tag}.fifo", Attributes={"FifoTopic": "true", "ContentBasedDeduplication": "false"}
    )["TopicArn"]
    url, arn = queue(moto_server, f"rotations-{tag}.fifo", FifoQueue="true")
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": "true"})
    notifier = SnsNotifier({"topic_arn": topic, **aws(moto_server)}, setup)
    event = sample_event()
    notifier(event)
    notifier(event)  # a retry within SNS's deduplication window
    notifier(rolled_back(event))
    messages = receive(moto_server, url)
    assert [json.loads(m["Body"])["event"] for m in messages] == ["credential.rotated", "credential.rolled_back"]
    assert {m["Attributes"]["MessageGroupId"] for m in messages} == {event.plan_id}
    assert [m["Attributes"]["MessageDeduplicationId"] for m in messages] == [
        f"{event.run_id}-credential.rotated",
        f"{event.run_id}-credential.rolled_back",
    ]


# -- eventbridge --------------------------------------------------------------------------------------------------


def test_eventbridge_puts_the_event_on_the_bus(moto_server: MotoServer, setup: ComponentSetup):
    events = moto_server.client("events")
    tag = uuid.uuid4().hex[:8]
    bus = f"platform-{tag}"
    events.create_event_bus(Name=bus)
    url, arn = queue(moto_server, f"bus-{tag}")
    pattern = {"source": ["acme.rotator"], "detail-type": ["Credential Rotated", "Credential Rolled Back"]}
    events.put_rule(Name="rotations", EventBusName=bus, EventPattern=json.dumps(pattern))
    events.put_targets(Rule="rotations", EventBusName=bus, Targets=[{"Id": "queue", "Arn": arn}])
    resource = "arn:aws:ecs:us-east-1:123456789012:service/prod/api"
    options = {"event_bus_name": bus, "source": "acme.rotator", "resources": [resource], **aws(moto_server)}
    notifier = EventBridgeNotifier(options, setup)
    event = sample_event()
    notifier(event)
    notifier(rolled_back(event))
    bodies = [json.loads(m["Body"]) for m in receive(moto_server, url)]
    assert [b["detail-type"] for b in bodies] == ["Credential Rotated", "Credential Rolled Back"]
    assert bodies[0]["source"] == "acme.rotator" and bodies[0]["resources"] == [resource]
    assert bodies[0]["detail"] == event.as_dict()
    assert bodies[1]["detail"]["event"] == "credential.rolled_back"
    value = event.read_value() if event.read_value else {}
    assert value["password"] not in json.dumps(bodies)


# -- failure events -----------------------------------------------------------------------------------------------

FAILED, STUCK = "credential.rotation_failed", "credential.rotation_stuck"


def test_sns_failure_events_have_their_subject_and_reach_a_pagers_filter_policy(
    moto_server: MotoServer, setup: ComponentSetup
):
    """A pager subscribes with {"event": ["credential.rotation_stuck"]}: it gets the stuck run only, as SNS's
    filter policy reads the `event` attribute; the payload carries the error and the action."""
    sns = moto_server.client("sns")
    tag = uuid.uuid4().hex[:8]
    topic = sns.create_topic(Name=f"rotations-{tag}")["TopicArn"]
    everything, everything_arn = queue(moto_server, f"all-{tag}")
    pager, pager_arn = queue(moto_server, f"pager-{tag}")
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=everything_arn)
    sns.subscribe(
        TopicArn=topic,
        Protocol="sqs",
        Endpoint=pager_arn,
        Attributes={"FilterPolicy": json.dumps({"event": [STUCK]})},
    )
    notifier = SnsNotifier({"topic_arn": topic, **aws(moto_server)}, setup)
    failed, stuck = sample_event(FAILED), sample_event(STUCK)
    notifier(failed)
    notifier(stuck)
    envelopes = [json.loads(m["Body"]) for m in receive(moto_server, everything)]
    assert [e["Subject"] for e in envelopes] == [
        f"Credential rotation failed: {failed.plan_id}",
        f"Credential rotation stuck: {stuck.plan_id}",
    ]
    assert [json.loads(e["Message"]) for e in envelopes] == [failed.as_dict(), stuck.as_dict()]
    assert json.loads(envelopes[1]["Message"])["error"] == stuck.error
    assert json.loads(envelopes[1]["Message"])["action"] == stuck.action
    assert [e["MessageAttributes"]["event"]["Value"] for e in envelopes] == [FAILED, STUCK]
    [paged] = receive(moto_server, pager)
    assert json.loads(json.loads(paged["Body"])["Message"])["run_id"] == stuck.run_id


def test_sns_fifo_dedup_id_names_the_failure_kind(moto_server: MotoServer, setup: ComponentSetup):
    sns = moto_server.client("sns")
    tag = uuid.uuid4().hex[:8]
    topic = sns.create_topic(
        Name=f"rotations-{tag}.fifo", Attributes={"FifoTopic": "true", "ContentBasedDeduplication": "false"}
    )["TopicArn"]
    url, arn = queue(moto_server, f"rotations-{tag}.fifo", FifoQueue="true")
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": "true"})
    notifier = SnsNotifier({"topic_arn": topic, **aws(moto_server)}, setup)
    event = sample_event(FAILED)
    notifier(event)
    notifier(event)  # a retry within SNS's deduplication window
    notifier(RotationEvent(**{**event.__dict__, "kind": STUCK}))  # the same run, stuck later: not a repeat
    messages = receive(moto_server, url)
    assert [json.loads(m["Body"])["event"] for m in messages] == [FAILED, STUCK]
    assert [m["Attributes"]["MessageDeduplicationId"] for m in messages] == [
        f"{event.run_id}-{FAILED}",
        f"{event.run_id}-{STUCK}",
    ]


def test_eventbridge_failure_events_have_their_detail_type(moto_server: MotoServer, setup: ComponentSetup):
    """A rule on detail-type "Credential Rotation Stuck" routes the stuck run only; every payload carries its error
    and action."""
    events = moto_server.client("events")
    tag = uuid.uuid4().hex[:8]
    bus = f"platform-{tag}"
    events.create_event_bus(Name=bus)
    everything, everything_arn = queue(moto_server, f"bus-all-{tag}")
    pager, pager_arn = queue(moto_server, f"bus-pager-{tag}")
    rules = {"all": ({"source": ["rotator"]}, everything_arn)}
    rules["stuck"] = ({"source": ["rotator"], "detail-type": ["Credential Rotation Stuck"]}, pager_arn)
    for name, (pattern, target) in rules.items():
        events.put_rule(Name=name, EventBusName=bus, EventPattern=json.dumps(pattern))
        events.put_targets(Rule=name, EventBusName=bus, Targets=[{"Id": "queue", "Arn": target}])
    notifier = EventBridgeNotifier({"event_bus_name": bus, **aws(moto_server)}, setup)
    failed, stuck = sample_event(FAILED), sample_event(STUCK)
    notifier(failed)
    notifier(stuck)
    bodies = [json.loads(m["Body"]) for m in receive(moto_server, everything)]
    assert [b["detail-type"] for b in bodies] == ["Credential Rotation Failed", "Credential Rotation Stuck"]
    assert [b["detail"] for b in bodies] == [failed.as_dict(), stuck.as_dict()]
    assert bodies[0]["detail"]["error"] == failed.error and bodies[0]["detail"]["action"] == failed.action
    [paged] = receive(moto_server, pager)
    assert json.loads(paged["Body"])["detail"]["run_id"] == stuck.run_id


@pytest.mark.parametrize(
    ("code", "error", "match"),
    [
        ("ThrottlingException", TransientError, r"the entry failed \(ThrottlingException\); retried"),
        ("InternalFailure", TransientError, r"\(InternalFailure\); retried"),
        ("NotAuthorizedForSourceException", NotifyError, "grant events:PutEvents on the bus"),
        ("InvalidArgument", NotifyError, r"\(InvalidArgument\): Parameter Detail is not valid"),
    ],
)
def test_eventbridge_a_failed_entry_in_a_200_answer_is_an_error(
    moto_server: MotoServer, setup: ComponentSetup, code: str, error: type[Exception], match: str
):
    """PutEvents answers 200 with FailedEntryCount > 0 when an entry fails: that is a failure, not a success."""
    client = moto_server.client("events")
    notifier = EventBridgeNotifier({"event_bus_name": "platform"}, setup, client=client)
    event = sample_event()
    with Stubber(client) as stub:
        stub.add_response(
            "put_events",
            {"FailedEntryCount": 1, "Entries": [{"ErrorCode": code, "ErrorMessage": "Parameter Detail is not valid"}]},
            expected_params={"Entries": [notifier.entry(event)]},
        )
        with pytest.raises(error, match=match):
            notifier(event)
        stub.assert_no_pending_responses()


# -- ecs ----------------------------------------------------------------------------------------------------------


def ecs_service(moto: MotoServer, cluster: str, name: str, desired: int) -> str:
    ecs = moto.client("ecs")
    ecs.register_task_definition(family=name, containerDefinitions=[{"name": "app", "image": "app", "memory": 128}])
    deployment = ecs.create_service(cluster=cluster, serviceName=name, taskDefinition=name, desiredCount=desired)
    return str(deployment["service"]["deployments"][0]["id"])


def primary(moto: MotoServer, cluster: str, name: str) -> dict[str, Any]:
    [service] = moto.client("ecs").describe_services(cluster=cluster, services=[name])["services"]
    return next(d for d in service["deployments"] if d["status"] == "PRIMARY")


def test_ecs_forces_a_new_deployment_of_each_service(moto_server: MotoServer, setup: ComponentSetup):
    cluster = f"prod-{uuid.uuid4().hex[:8]}"
    moto_server.client("ecs").create_cluster(clusterName=cluster)
    before = {name: ecs_service(moto_server, cluster, name, desired=0) for name in ("api", "worker")}
    clock = Clock()
    options = {"cluster": cluster, "services": ["api", "worker"], "wait_for_steady_state": True, **aws(moto_server)}
    EcsRedeployNotifier(options, setup, sleep=clock.sleep, clock=clock)(sample_event())
    for name, old in before.items():
        deployment = primary(moto_server, cluster, name)
        assert deployment["id"] != old, f"{name} was not redeployed"
        assert deployment["rolloutState"] == "COMPLETED"
    assert clock.sleeps == []  # steady at the first look


def test_ecs_wait_timeout_is_transient_and_the_retry_does_not_redeploy(moto_server: MotoServer, setup: ComponentSetup):
    """moto keeps a service with desired tasks IN_PROGRESS (it runs no task): the wait times out."""
    cluster = f"prod-{uuid.uuid4().hex[:8]}"
    moto_server.client("ecs").create_cluster(clusterName=cluster)
    ecs_service(moto_server, cluster, "api", desired=2)
    clock = Clock()
    options = {
        "cluster": cluster,
        "service": "api",
        "wait_for_steady_state": True,
        "wait_timeout": 60,
        "poll_interval": 15,
        **aws(moto_server),
    }
    notifier = EcsRedeployNotifier(options, setup, sleep=clock.sleep, clock=clock)
    event = sample_event()
    with pytest.raises(TransientError, match="not steady after 60s: api"):
        notifier(event)
    assert clock.sleeps == [15, 15, 15, 15]
    redeployed = primary(moto_server, cluster, "api")["id"]
    with pytest.raises(TransientError):
        notifier(event)  # the engine's retry: waits again, forces nothing new
    assert primary(moto_server, cluster, "api")["id"] == redeployed


def test_ecs_a_failed_rollout_is_a_notify_error(moto_server: MotoServer, setup: ComponentSetup):
    client = moto_server.client("ecs")
    clock = Clock()
    notifier = EcsRedeployNotifier(
        {"cluster": "prod", "service": "api", "wait_for_steady_state": True},
        setup,
        client=client,
        sleep=clock.sleep,
        clock=clock,
    )
    now = datetime.now(UTC)
    deployment = {"id": "ecs-svc/1", "status": "PRIMARY", "createdAt": now, "desiredCount": 2, "runningCount": 0}
    with Stubber(client) as stub:
        stub.add_response(
            "update_service",
            {"service": {"serviceName": "api", "deployments": [deployment]}},
            expected_params={"cluster": "prod", "service": "api", "forceNewDeployment": True},
        )
        failed = {**deployment, "rolloutState": "FAILED", "rolloutStateReason": "circuit breaker: tasks failed"}
        stub.add_response(
            "describe_services",
            {"services": [{"serviceName": "api", "deployments": [failed]}], "failures": []},
            expected_params={"cluster": "prod", "services": ["api"]},
        )
        with pytest.raises(NotifyError, match="deployment of service api failed: circuit breaker: tasks failed"):
            notifier(sample_event())


def test_ecs_missing_service_and_cluster(moto_server: MotoServer, setup: ComponentSetup):
    cluster = f"prod-{uuid.uuid4().hex[:8]}"
    moto_server.client("ecs").create_cluster(clusterName=cluster)
    with pytest.raises(NotifyError, match=rf"ecs:UpdateService on service {cluster}/gone: it does not exist"):
        EcsRedeployNotifier({"cluster": cluster, "service": "gone", **aws(moto_server)}, setup)(sample_event())
    with pytest.raises(NotifyError, match=r"ClusterNotFoundException"):
        EcsRedeployNotifier({"cluster": "no-such-cluster", "service": "api", **aws(moto_server)}, setup)(sample_event())


# -- errors and options -------------------------------------------------------------------------------------------


def client_error(code: str, status: int, message: str = "") -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Publish"
    )


@pytest.mark.parametrize(
    ("code", "status", "error", "match"),
    [
        ("Throttling", 400, TransientError, r"failed for now \(Throttling\)"),
        ("InternalError", 500, TransientError, "failed for now"),
        ("ServiceUnavailable", 503, TransientError, "failed for now"),
        ("KMSThrottling", 400, TransientError, "failed for now"),
        ("AuthorizationError", 403, NotifyError, "access denied; grant sns:Publish on arn:topic"),
        ("AccessDeniedException", 400, NotifyError, "access denied; grant sns:Publish on arn:topic"),
        ("NotFound", 404, NotifyError, r"it does not exist \(NotFound\)"),
        ("KMSDisabled", 400, NotifyError, "KMS key refused"),
        ("InvalidClientTokenId", 403, NotifyError, "rejected the credentials"),
        ("InvalidParameter", 400, NotifyError, "failed: InvalidParameter: Invalid parameter: TopicArn"),
    ],
)
def test_aws_errors_are_mapped_in_one_place(code: str, status: int, error: type[Exception], match: str):
    mapped = notify_error(
        client_error(code, status, "Invalid parameter: TopicArn"),
        what="sns notifier n",
        action="sns:Publish",
        resource="arn:topic",
    )
    assert type(mapped) is error
    assert re.search(match, str(mapped)), str(mapped)


def test_an_unreachable_endpoint_is_transient(setup: ComponentSetup):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    topic = "arn:aws:sns:us-east-1:123456789012:rotations"
    notifier = SnsNotifier(
        {"topic_arn": topic, "region": "us-east-1", "endpoint_url": closed, "max_attempts": 1, "connect_timeout": 2},
        setup,
    )
    with pytest.raises(TransientError, match="cannot reach AWS"):
        notifier(sample_event())


@pytest.mark.parametrize(
    ("kind", "options", "key"),
    [
        ("sns", {"topic_arn": "rotations"}, "notifiers.aws.topic_arn"),
        ("sns", {"topic_arn": "arn:aws:sns:us-east-1:123456789012:t", "subject": "x"}, "notifiers.aws.subject"),
        ("eventbridge", {"source": "aws.rotator"}, "notifiers.aws.source"),
        ("eventbridge", {"region": "mars"}, "notifiers.aws.region"),
        ("ecs", {"cluster": "prod"}, "notifiers.aws"),
        ("ecs", {"service": "a", "services": ["b"]}, "notifiers.aws"),
        ("ecs", {"service": "a", "wait_timeout": 0}, "notifiers.aws.wait_timeout"),
    ],
)
def test_options_are_validated_with_the_key_named(
    moto_server: MotoServer, setup: ComponentSetup, kind: str, options: dict[str, Any], key: str
):
    with pytest.raises(ConfigError) as info:
        load_notifier(kind, options, setup, "notifiers.aws")
    assert key in str(info.value), str(info.value)


def test_through_the_engine_sns_carries_the_version_and_no_secret(moto_server: MotoServer, tmp_path: Path):
    sns = moto_server.client("sns")
    tag = uuid.uuid4().hex[:8]
    topic = sns.create_topic(Name=f"rotations-{tag}")["TopicArn"]
    url, arn = queue(moto_server, f"engine-{tag}")
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": "true"})
    config = tmp_path / "rotator.toml"
    config.write_text(f"""
[rotator]
state_dir = "state"

[notifiers.bus]
type = "sns"
topic_arn = "{topic}"
endpoint_url = "{moto_server.endpoint_url}"
region = "{moto_server.region}"

[[plans]]
id = "signing-key"
plugin = {{type = "generated"}}
secret = "app/signing-key"
notify = ["bus"]
""")
    cli = CliEnv(tmp_path, config)
    assert cli.run("init").code == 0
    cli.seed("app/signing-key", {"value": "s" * 43})
    done = cli.run("rotate-now", "signing-key", "--json")
    assert done.code == 0, done.stderr
    [message] = receive(moto_server, url)
    body = json.loads(message["Body"])
    assert body["version"] == done.json()["results"][0]["run_id"] and body["plan"] == "signing-key"
    current = cli.run("store", "get", "app/signing-key").json()["value"]
    assert current not in message["Body"] and "s" * 43 not in message["Body"]
