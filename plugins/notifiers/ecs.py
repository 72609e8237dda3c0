"""Type `ecs`: redeploy ECS services so that their new tasks read the new credential.

For each service: `ecs:UpdateService` (cluster, service, forceNewDeployment=True), which starts a new deployment
of the same task definition: new tasks start (and read the secret), old ones drain. Nothing of the event is sent.

With `wait_for_steady_state = true` it then polls `ecs:DescribeServices` every `poll_interval` seconds, at most
`wait_timeout` seconds, until each service's PRIMARY deployment has rolloutState COMPLETED (or, for a deployment
controller that reports no rolloutState, is the only deployment with runningCount = desiredCount). A FAILED
rollout (the deployment circuit breaker) is a NotifyError; a rollout still running at the timeout is a
TransientError: the engine calls again, and the same event does not force a second deployment of a service this
notifier already redeployed for it (it only waits again).

It takes only credential.rotated and credential.rolled_back: a failed run (credential.rotation_failed,
credential.rotation_stuck) has no new credential to redeploy for, so the config refuses those kinds for it, and a
failure event handed to it all the same redeploys nothing.

Options: cluster (name or ARN, default "default"), service or services (names or ARNs, up to 10 per call are
described at once), wait_for_steady_state, wait_timeout, poll_interval, and the AWS options of
rotator_plugins.aws.session (region, endpoint_url, profile, role_arn, ...). IAM: ecs:UpdateService and, when
waiting, ecs:DescribeServices, on the services' ARNs (arn:aws:ecs:REGION:ACCOUNT:service/CLUSTER/SERVICE).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any

from msgspec import Meta
from rotator_plugins.aws.errors import notifier_call
from rotator_plugins.aws.session import AwsConnectionOptions, notifier_client
from rotator_plugins.notifiers.events import SUCCESS_KINDS

from rotator import (
    ComponentSetup,
    NotifyError,
    RotationEvent,
    TransientError,
    get_logger,
    invalid,
    parse_options,
    scrub,
)

_DESCRIBE_BATCH = 10  # DescribeServices takes at most 10 services per call
_REMEMBERED = 1024  # redeploys remembered for repeated calls (a few per rotation)
log = get_logger("rotator.notifiers.ecs")


class EcsOptions(AwsConnectionOptions):
    cluster: Annotated[str, Meta(min_length=1)] = "default"
    service: Annotated[str, Meta(min_length=1)] | None = None
    services: list[str] = []
    wait_for_steady_state: bool = False
    wait_timeout: Annotated[float, Meta(gt=0, le=3600)] = 600.0
    poll_interval: Annotated[float, Meta(gt=0, le=300)] = 15.0

    def __post_init__(self) -> None:
        if not self.service and not self.services:
            raise invalid("service", 'name the service to redeploy: service = "NAME" (or services = ["A", "B"])')
        if self.service and self.services:
            raise invalid("service", "give either service or services, not both")
        if len(set(self.all_services())) != len(self.all_services()):
            raise invalid("services", "services lists a service twice")

    def all_services(self) -> list[str]:
        return [self.service] if self.service else list(self.services)


def rollout_state(service: Mapping[str, Any]) -> tuple[str, str]:
    """("completed" | "failed" | "in_progress", reason) for a DescribeServices service."""
    deployments = list(service.get("deployments") or [])
    primary = next((d for d in deployments if d.get("status") == "PRIMARY"), None)
    if primary is None:
        return "in_progress", "no PRIMARY deployment yet"
    state = primary.get("rolloutState")
    reason = str(primary.get("rolloutStateReason") or "")
    if state == "FAILED":
        return "failed", reason or "the deployment failed"
    if state == "COMPLETED":
        return "completed", reason
    if state is None and len(deployments) == 1 and primary.get("runningCount") == primary.get("desiredCount"):
        return "completed", "the only deployment runs its desired count"
    running, desired = primary.get("runningCount"), primary.get("desiredCount")
    return "in_progress", reason or f"{running} of {desired} tasks running"


class EcsRedeployNotifier:
    """Forces a new deployment of ECS services (see the module docstring)."""

    event_kinds = SUCCESS_KINDS

    def __init__(
        self,
        options: Mapping[str, Any],
        setup: ComponentSetup,
        *,
        client: Any = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.options = parse_options(EcsOptions, options)
        self.setup = setup
        self.client = client if client is not None else notifier_client("ecs", self.options, setup)
        self._sleep, self._clock = sleep, clock
        self._what = f"ecs notifier {setup.name}"
        # (run id, event kind, service) -> the deployment this notifier started for it, so that a repeated call
        # for the same event waits for that deployment instead of starting another one.
        self._started: OrderedDict[tuple[str, str, str], str] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, event: RotationEvent) -> None:
        """ecs:UpdateService (forceNewDeployment) per service; ecs:DescribeServices while waiting."""
        if event.kind not in self.event_kinds:
            # Redeploying after a failed run would only restart the services on the credential they already have.
            log.info("event kind not taken by this notifier: nothing done", notifier=self.setup.name, kind=event.kind)
            return
        services = self.options.all_services()
        for service in services:
            key = (event.run_id, event.kind, service)
            with self._lock:
                if key in self._started:
                    continue
            deployment = self.redeploy(service)
            with self._lock:
                self._started[key] = deployment
                while len(self._started) > _REMEMBERED:
                    self._started.popitem(last=False)
        if self.options.wait_for_steady_state:
            self.wait_until_steady(services)

    def redeploy(self, service: str) -> str:
        """ecs:UpdateService with forceNewDeployment=True. Returns the new PRIMARY deployment's id."""
        with notifier_call(what=self._what, action="ecs:UpdateService", resource=self._arnish(service)):
            response = self.client.update_service(
                cluster=self.options.cluster, service=service, forceNewDeployment=True
            )
        deployments = response.get("service", {}).get("deployments") or []
        primary: dict[str, Any] = next((d for d in deployments if d.get("status") == "PRIMARY"), {})
        return str(primary.get("id", ""))

    def describe(self, services: Sequence[str]) -> list[dict[str, Any]]:
        """ecs:DescribeServices for `services` (in batches of 10). A missing service is a NotifyError."""
        found: list[dict[str, Any]] = []
        for start in range(0, len(services), _DESCRIBE_BATCH):
            batch = list(services[start : start + _DESCRIBE_BATCH])
            resource = ", ".join(self._arnish(s) for s in batch)
            with notifier_call(what=self._what, action="ecs:DescribeServices", resource=resource):
                response = self.client.describe_services(cluster=self.options.cluster, services=batch)
            failures = response.get("failures") or []
            if failures:
                what = ", ".join(f"{f.get('arn', '?')} ({f.get('reason', '?')})" for f in failures)
                raise NotifyError(f"{self._what}: ecs:DescribeServices: {what}; check the cluster and service names")
            found.extend(response.get("services") or [])
        return found

    def wait_until_steady(self, services: Sequence[str]) -> None:
        """Polls ecs:DescribeServices until every service's rollout completed, failed, or wait_timeout passed."""
        deadline = self._clock() + self.options.wait_timeout
        while True:
            pending: list[str] = []
            for described in self.describe(services):
                name = str(described.get("serviceName") or described.get("serviceArn") or "?")
                state, reason = rollout_state(described)
                if state == "failed":
                    raise NotifyError(
                        scrub(
                            f"{self._what}: the new deployment of service {name} failed: {reason}; see the "
                            "service's events in the ECS console (the previous tasks keep running)"
                        )
                    )
                if state == "in_progress":
                    pending.append(f"{name} ({reason})")
            if not pending:
                return
            if self._clock() >= deadline:
                raise TransientError(
                    scrub(
                        f"{self._what}: not steady after {self.options.wait_timeout:g}s: {'; '.join(pending)}; "
                        "waiting again on the next attempt"
                    )
                )
            self._sleep(self.options.poll_interval)

    def _arnish(self, service: str) -> str:
        return service if service.startswith("arn:") else f"service {self.options.cluster}/{service}"
