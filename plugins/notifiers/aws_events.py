"""Types `sns` and `eventbridge`: publish the rotation event to an SNS topic or an EventBridge event bus.

Both send the event's JSON (rotator_plugins.notifiers.events: plan, run id, secret name, store, version ids, time,
trigger, reason, tags, and `event` = "credential.rotated", "credential.rolled_back", "credential.rotation_failed"
or "credential.rotation_stuck"; the two failure kinds add `error`, one scrubbed line, and `action`, what the
operator should do); never a secret value. Both take every kind (`events = [...]` in the config chooses).

`sns` calls `sns:Publish` on `topic_arn`:
- Message = the event JSON; Subject = "<title>: <plan>" (for e-mail subscriptions), where the title is `title`
  for a rotation and "Credential rotation rolled back", "Credential rotation failed" or "Credential rotation stuck"
  for the other kinds;
- MessageAttributes `plan`, `event`, `secret`, `store` (String) and `tags` (String.Array), so that subscriptions
  can filter with a filter policy, e.g. {"plan": ["orders-db"], "event": ["credential.rotated"]}, or a pager's
  subscription {"event": ["credential.rotation_stuck"]};
- on a FIFO topic (`.fifo`): MessageGroupId = the plan (a plan's events stay in order: a rotation, its rollback,
  the next rotation) and MessageDeduplicationId = "<run id>-<event>", so a repeated delivery of the same event
  within SNS's five-minute window is dropped, while a run's rollback event is not taken for its rotation event.
- IAM: sns:Publish on the topic (and kms:GenerateDataKey, kms:Decrypt on the topic's key if it is encrypted).

`eventbridge` calls `events:PutEvents` with one entry: Source (default "rotator"), DetailType "Credential Rotated",
"Credential Rolled Back", "Credential Rotation Failed" or "Credential Rotation Stuck" (a rule matches on it),
Detail = the event JSON, EventBusName (default "default"), Time = the event's time, Resources (optional ARNs).
PutEvents answers 200 even when an entry failed (FailedEntryCount > 0): that entry's ErrorCode is mapped like an
error (ThrottlingException, InternalFailure: TransientError; others NotifyError).
IAM: events:PutEvents on the bus's ARN.

Options of both: region, endpoint_url, profile, role_arn (+ role_session_name, external_id, sts_endpoint_url),
max_attempts, connect_timeout, read_timeout (rotator_plugins.aws.session). Tests inject a boto3 client with `client=`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Annotated, Any

from msgspec import Meta
from rotator_plugins.aws.errors import TRANSIENT_CODES, notifier_call
from rotator_plugins.aws.session import AwsConnectionOptions, notifier_client
from rotator_plugins.notifiers.events import (
    EVERY_KIND,
    ROLLED_BACK,
    ROTATED,
    ROTATION_FAILED,
    ROTATION_STUCK,
    event_json,
)

from rotator import ComponentSetup, NotifyError, RotationEvent, TransientError, invalid, parse_options, scrub

_SNS_TOPIC_ARN = r"^arn:aws[a-z-]*:sns:[a-z]{2}(-[a-z]+)+-\d+:\d{12}:[A-Za-z0-9_-]{1,256}(\.fifo)?\Z"
# SNS: MessageGroupId and MessageDeduplicationId take up to 128 alphanumeric or punctuation characters.
_NOT_FIFO_ID_CHAR = re.compile(r"[^\x21-\x7e]")
DETAIL_TYPES = {
    ROTATED: "Credential Rotated",
    ROLLED_BACK: "Credential Rolled Back",
    ROTATION_FAILED: "Credential Rotation Failed",
    ROTATION_STUCK: "Credential Rotation Stuck",
}
# The SNS Subject's title for the kinds other than a rotation (which uses the `title` option).
SUBJECT_TITLES = {
    ROLLED_BACK: "Credential rotation rolled back",
    ROTATION_FAILED: "Credential rotation failed",
    ROTATION_STUCK: "Credential rotation stuck",
}
ENTRY_TRANSIENT_CODES = TRANSIENT_CODES | {"ThrottlingException", "InternalFailure", "InternalException"}


def _fifo_id(text: str) -> str:
    return _NOT_FIFO_ID_CHAR.sub("_", text)[:128]


class SnsOptions(AwsConnectionOptions, kw_only=True):
    topic_arn: Annotated[str, Meta(pattern=_SNS_TOPIC_ARN)]
    title: Annotated[str, Meta(min_length=1, max_length=60)] = "Credential rotated"

    def __post_init__(self) -> None:
        if not self.title.isascii() or not self.title.isprintable():
            raise invalid("title", "title must be printable ASCII (it becomes the SNS Subject)")


class SnsNotifier:
    """Publishes each event to an SNS topic (see the module docstring)."""

    event_kinds = EVERY_KIND

    def __init__(self, options: Mapping[str, Any], setup: ComponentSetup, *, client: Any = None):
        self.options = parse_options(SnsOptions, options)
        self.setup = setup
        self.client = client if client is not None else notifier_client("sns", self.options, setup)
        self._what = f"sns notifier {setup.name}"

    def publish_request(self, event: RotationEvent) -> dict[str, Any]:
        """The sns:Publish parameters for `event` (no secret: ids and names only)."""
        title = SUBJECT_TITLES.get(event.kind, self.options.title)
        # SNS Subject: printable ASCII, fewer than 100 characters.
        subject = f"{title}: {event.plan_id}".encode("ascii", "replace").decode()[:99]
        attributes: dict[str, dict[str, str]] = {
            "plan": {"DataType": "String", "StringValue": event.plan_id},
            "event": {"DataType": "String", "StringValue": event.kind},
            "secret": {"DataType": "String", "StringValue": event.secret_id},
            "store": {"DataType": "String", "StringValue": event.store},
        }
        if event.tags:
            attributes["tags"] = {"DataType": "String.Array", "StringValue": json.dumps(list(event.tags))}
        request: dict[str, Any] = {
            "TopicArn": self.options.topic_arn,
            "Message": event_json(event),
            "Subject": subject,
            "MessageAttributes": attributes,
        }
        if self.options.topic_arn.endswith(".fifo"):
            request["MessageGroupId"] = _fifo_id(event.plan_id)
            request["MessageDeduplicationId"] = _fifo_id(f"{event.run_id}-{event.kind}")
        return request

    def __call__(self, event: RotationEvent) -> None:
        """sns:Publish on topic_arn."""
        with notifier_call(what=self._what, action="sns:Publish", resource=self.options.topic_arn):
            self.client.publish(**self.publish_request(event))


class EventBridgeOptions(AwsConnectionOptions):
    event_bus_name: Annotated[str, Meta(min_length=1, max_length=1600)] = "default"
    source: Annotated[str, Meta(min_length=1, max_length=256)] = "rotator"
    resources: Annotated[list[str], Meta(max_length=10)] = []

    def __post_init__(self) -> None:
        if self.source.startswith("aws."):
            raise invalid("source", 'source must not start with "aws." (reserved for AWS services)')


class EventBridgeNotifier:
    """Puts each event on an EventBridge bus (see the module docstring)."""

    event_kinds = EVERY_KIND

    def __init__(self, options: Mapping[str, Any], setup: ComponentSetup, *, client: Any = None):
        self.options = parse_options(EventBridgeOptions, options)
        self.setup = setup
        self.client = client if client is not None else notifier_client("events", self.options, setup)
        self._what = f"eventbridge notifier {setup.name}"

    def entry(self, event: RotationEvent) -> dict[str, Any]:
        """The PutEvents entry for `event` (no secret: ids and names only)."""
        entry: dict[str, Any] = {
            "Source": self.options.source,
            "DetailType": DETAIL_TYPES.get(event.kind, "Credential Event"),
            "Detail": event_json(event),
            "EventBusName": self.options.event_bus_name,
            "Time": event.rotated_at,
        }
        if self.options.resources:
            entry["Resources"] = list(self.options.resources)
        return entry

    def __call__(self, event: RotationEvent) -> None:
        """events:PutEvents on event_bus_name; a failed entry (FailedEntryCount > 0) is an error too."""
        bus = self.options.event_bus_name
        with notifier_call(what=self._what, action="events:PutEvents", resource=f"event bus {bus}"):
            response = self.client.put_events(Entries=[self.entry(event)])
        if not response.get("FailedEntryCount"):
            return
        failed: dict[str, Any] = next((e for e in response.get("Entries", []) if e.get("ErrorCode")), {})
        code = str(failed.get("ErrorCode") or "unknown")
        message = scrub(str(failed.get("ErrorMessage") or "").strip())
        where = f"{self._what}: events:PutEvents on event bus {bus}: the entry failed ({code})"
        if code in ENTRY_TRANSIENT_CODES:
            raise TransientError(f"{where}; retried")
        if code in ("AccessDeniedException", "NotAuthorizedForSourceException"):
            raise NotifyError(f"{where}: grant events:PutEvents on the bus to the rotator's AWS identity")
        raise NotifyError(f"{where}: {message}" if message else where)
