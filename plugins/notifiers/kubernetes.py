"""Type `kubernetes`: a rollout restart of Deployments, StatefulSets and DaemonSets, as `kubectl rollout restart`.

kubectl restarts a workload by changing its pod template: it sets the annotation
`kubectl.kubernetes.io/restartedAt` (an RFC 3339 time) with a strategic merge patch, and the controller replaces
the pods, which then read the new credential. This notifier sends the same patch, for each target:

1. `GET /apis/apps/v1/namespaces/{ns}/{deployments|statefulsets|daemonsets}/{name}`: a paused Deployment is refused
   (as kubectl does: resume it first), and so is updateStrategy OnDelete (a template change replaces no pod);
2. `PATCH` the same path, Content-Type `application/strategic-merge-patch+json`, body
   `{"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": <rotated_at>,
   "credential-rotator/restarted-for": "<event> <run id>"}}}}}`.
   Both values come from the event, not the clock, so the same event twice patches nothing new and restarts the
   pods once; a rollback event (other `restarted-for`) restarts them again. A target that already carries both
   values is not patched.
3. with `wait_for_rollout = true`, `GET` again every `poll_interval` seconds, at most `wait_timeout` seconds, until
   the rollout is complete by kubectl's rules (`kubectl rollout status`): observedGeneration caught up, all
   replicas updated and available (StatefulSet: updateRevision current). A Deployment past its progress deadline
   is a NotifyError; a rollout still running at the timeout a TransientError (the engine calls again; nothing new
   is patched, it waits again).

It takes only credential.rotated and credential.rolled_back: a failed run (credential.rotation_failed,
credential.rotation_stuck) has no new credential to restart for, so the config refuses those kinds for it, and a
failure event handed to it all the same patches nothing.

Connection: in a pod, the defaults are the service account's (`https://$KUBERNETES_SERVICE_HOST:$..._PORT`, the
token file, re-read at each call because the kubelet rotates it, the cluster CA and the pod's namespace, all under
/var/run/secrets/kubernetes.io/serviceaccount/). Elsewhere: `api_server`, `token = "env:VAR"` or `"file:PATH"`,
`ca_bundle`, `namespace`. TLS is always verified (the system CAs when no ca_bundle is given).

Errors, mapped once in `raise_for_kubernetes` from the API's Status body: 401 (token refused), 403 (RBAC: the
message names the verb and resource to grant), 404, 422 are NotifyError; 409, 429, 5xx and connection failures are
TransientError. RBAC for the service account, per namespace: apiGroups ["apps"], resources ["deployments",
"statefulsets", "daemonsets"] (those used), verbs ["get", "patch"].
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote

import requests
from msgspec import Meta
from rotator_plugins.http_transport import require_https, retry_after_seconds, send, tls_verify
from rotator_plugins.notifiers.events import SUCCESS_KINDS

from rotator import (
    ComponentSetup,
    ConfigError,
    NotifyError,
    Options,
    RotationEvent,
    TransientError,
    get_logger,
    invalid,
    is_secret_ref,
    parse_options,
    register_secret,
    resolve_secret_ref,
    scrub,
)

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
RESTARTED_FOR = "credential-rotator/restarted-for"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
# kind as written in the config -> the resource's plural in /apis/apps/v1
KINDS = {
    "deployment": "deployments",
    "deployments": "deployments",
    "deploy": "deployments",
    "statefulset": "statefulsets",
    "statefulsets": "statefulsets",
    "sts": "statefulsets",
    "daemonset": "daemonsets",
    "daemonsets": "daemonsets",
    "ds": "daemonsets",
}
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?\Z")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z")
log = get_logger("rotator.notifiers.kubernetes")


class Target(Options):
    kind: Literal[
        "deployment", "deployments", "deploy", "statefulset", "statefulsets", "sts", "daemonset", "daemonsets", "ds"
    ]
    name: Annotated[str, Meta(pattern=_DNS_SUBDOMAIN.pattern)]
    namespace: Annotated[str, Meta(pattern=_DNS_LABEL.pattern)] | None = None

    @property
    def plural(self) -> str:
        return KINDS[self.kind]


class KubernetesOptions(Options):
    # "deployment/NAME" (kubectl's KIND/NAME) or a table {kind, name, namespace}
    targets: Annotated[list[str | Target], Meta(min_length=1)]
    namespace: Annotated[str, Meta(pattern=_DNS_LABEL.pattern)] | None = None
    api_server: Annotated[str, Meta(pattern=r"^https://")] | None = None
    token: str | None = None  # "env:VAR" or "file:PATH"; default: the service account's token file
    ca_bundle: str | None = None
    timeout: Annotated[float, Meta(gt=0, le=120)] = 10.0
    wait_for_rollout: bool = False
    wait_timeout: Annotated[float, Meta(gt=0, le=3600)] = 600.0
    poll_interval: Annotated[float, Meta(gt=0, le=300)] = 5.0

    def __post_init__(self) -> None:
        for value in self.targets:
            if isinstance(value, str):
                kind, _, name = value.partition("/")
                if kind.lower() not in KINDS or not _DNS_SUBDOMAIN.match(name):
                    raise invalid(
                        "targets",
                        f"target {value!r} is not KIND/NAME with KIND deployment, statefulset or daemonset "
                        '(e.g. "deployment/api")',
                    )
        if self.token is not None and not is_secret_ref(self.token):
            raise invalid("token", 'token must be a reference such as "env:KUBE_TOKEN" or "file:/path", not the token')


def restart_patch(event: RotationEvent) -> dict[str, Any]:
    """The strategic merge patch: kubectl's restartedAt annotation, with values taken from the event."""
    restarted_at = event.rotated_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    annotations = {RESTARTED_AT: restarted_at, RESTARTED_FOR: f"{event.kind} {event.run_id}"}
    return {"spec": {"template": {"metadata": {"annotations": annotations}}}}


def rollout_status(obj: Mapping[str, Any], plural: str) -> tuple[str, str]:
    """("complete" | "failed" | "in_progress", why), by the rules of `kubectl rollout status`."""
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    if int(meta.get("generation") or 0) > int(status.get("observedGeneration") or 0):
        return "in_progress", "waiting for the controller to observe the new generation"
    if plural == "deployments":
        for condition in status.get("conditions") or []:
            if condition.get("type") == "Progressing" and condition.get("reason") == "ProgressDeadlineExceeded":
                return "failed", "it exceeded its progress deadline"
        wanted = int(spec.get("replicas", 1))
        updated = int(status.get("updatedReplicas") or 0)
        if updated < wanted:
            return "in_progress", f"{updated} of {wanted} new replicas updated"
        if int(status.get("replicas") or 0) > updated:
            return "in_progress", "old replicas are pending termination"
        if int(status.get("availableReplicas") or 0) < updated:
            return "in_progress", "updated replicas are not all available yet"
        return "complete", "rolled out"
    if plural == "daemonsets":
        desired = int(status.get("desiredNumberScheduled") or 0)
        if int(status.get("updatedNumberScheduled") or 0) < desired:
            return "in_progress", "pods are being updated"
        if int(status.get("numberAvailable") or 0) < desired:
            return "in_progress", "updated pods are not all available yet"
        return "complete", "rolled out"
    wanted = int(spec.get("replicas", 1))
    if int(status.get("readyReplicas") or 0) < wanted:
        return "in_progress", "pods are not all ready yet"
    partition = ((spec.get("updateStrategy") or {}).get("rollingUpdate") or {}).get("partition")
    if partition is not None:
        if int(status.get("updatedReplicas") or 0) < wanted - int(partition):
            return "in_progress", "partitioned pods are being updated"
        return "complete", "partitioned rollout done"
    if status.get("updateRevision") != status.get("currentRevision"):
        return "in_progress", "pods are being updated to the new revision"
    return "complete", "rolled out"


def raise_for_kubernetes(response: requests.Response, *, what: str, verb: str, resource: str, namespace: str) -> None:
    """The one place where API server answers become rotator errors. The Status body's message names objects,
    never secrets; it is scrubbed all the same."""
    status = response.status_code
    if 200 <= status < 300:
        return
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    reason = str(body.get("reason") or "")
    message = scrub(" ".join(str(body.get("message") or "").split())[:500])
    label = f"{status} {reason}".strip()
    head = f"{what}: {verb.upper()} {resource} in namespace {namespace}"
    if status == 401:
        raise NotifyError(
            f"{head}: the API server refused the token ({label}); check `token` (or the pod's service "
            "account token) and that it is not expired"
        )
    if status == 403:
        plural = resource.split("/")[0]
        raise NotifyError(
            f"{head}: forbidden ({message or label}); grant the service account verbs get and patch on {plural} "
            f'(apiGroups ["apps"]) in namespace {namespace} with a Role and RoleBinding'
        )
    if status == 404:
        raise NotifyError(f"{head}: not found ({message or label}); check the target's kind, name and namespace")
    if status == 409 or status == 429 or status >= 500:
        wait = retry_after_seconds(response) if status == 429 else None
        after = f", Retry-After {wait:g}s" if wait is not None else ""
        raise TransientError(f"{head}: {label}{after}: {message}; retried" if message else f"{head}: {label}; retried")
    raise NotifyError(f"{head}: the API server refused it ({label}): {message}")


class KubernetesRolloutNotifier:
    """Rollout restarts of Kubernetes workloads (see the module docstring)."""

    event_kinds = SUCCESS_KINDS

    def __init__(
        self,
        options: Mapping[str, Any],
        setup: ComponentSetup,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        service_account_dir: Path = SERVICE_ACCOUNT_DIR,
    ):
        self.options = parse_options(KubernetesOptions, options)
        self.setup = setup
        self._sleep, self._clock = sleep, clock
        self._what = f"kubernetes notifier {setup.name}"
        key = f"notifiers.{setup.name}"
        in_cluster = self.options.api_server is None
        if in_cluster:
            host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT", "443")
            if not host:
                raise ConfigError(
                    "no api_server, and not running in a pod (KUBERNETES_SERVICE_HOST is not set)",
                    key=f"{key}.api_server",
                    fix='set api_server = "https://...", token = "env:VAR" and ca_bundle = "PATH"',
                )
            host = f"[{host}]" if ":" in host else host
            self.api_server = f"https://{host}:{port}"
        else:
            self.api_server = str(self.options.api_server).rstrip("/")
        self.token_ref = self.options.token or f"file:{service_account_dir / 'token'}"
        ca_bundle = self.options.ca_bundle or (str(service_account_dir / "ca.crt") if in_cluster else None)
        self.verify = tls_verify(ca_bundle, setup)
        default_namespace = self.options.namespace or self._pod_namespace(service_account_dir)
        self.targets: list[tuple[str, str, str]] = []  # (namespace, plural, name)
        for target in self.options.targets:
            if isinstance(target, str):
                kind, _, name = target.partition("/")
                plural, namespace = KINDS[kind.lower()], default_namespace
            else:
                plural, name, namespace = target.plural, target.name, target.namespace or default_namespace
            if not namespace:
                raise ConfigError(
                    f"no namespace for target {plural}/{name}",
                    key=f"{key}.namespace",
                    fix='set namespace = "..." (or a namespace in the target\'s table)',
                )
            self.targets.append((namespace, plural, name))
        self._session = requests.Session()

    def close(self) -> None:
        """For the daemon's reload and shutdown: the HTTP session's keep-alive connections are closed."""
        self._session.close()

    @staticmethod
    def _pod_namespace(service_account_dir: Path) -> str | None:
        try:
            return (service_account_dir / "namespace").read_text().strip() or None
        except OSError:
            return None

    def __call__(self, event: RotationEvent) -> None:
        """Per target: GET then PATCH (strategic merge) /apis/apps/v1/namespaces/{ns}/{plural}/{name};
        GET again while waiting for the rollout."""
        if event.kind not in self.event_kinds:
            # Restarting pods after a failed run would only bring them back on the credential they already have.
            log.info("event kind not taken by this notifier: nothing done", notifier=self.setup.name, kind=event.kind)
            return
        token = self._token()
        patch = restart_patch(event)
        wanted = patch["spec"]["template"]["metadata"]["annotations"]
        for namespace, plural, name in self.targets:
            current = self.get(token, namespace, plural, name)
            self._check_restartable(current, namespace, plural, name)
            template = (current.get("spec") or {}).get("template") or {}
            annotations = (template.get("metadata") or {}).get("annotations") or {}
            if all(annotations.get(k) == v for k, v in wanted.items()):
                continue  # already restarted for this event
            self.patch(token, namespace, plural, name, patch)
        if self.options.wait_for_rollout:
            self.wait(token)

    def get(self, token: str, namespace: str, plural: str, name: str) -> dict[str, Any]:
        """GET /apis/apps/v1/namespaces/{namespace}/{plural}/{name}."""
        response = self._request("GET", token, namespace, plural, name)
        raise_for_kubernetes(response, what=self._what, verb="get", resource=f"{plural}/{name}", namespace=namespace)
        return self._json(response, f"{plural}/{name}")

    def patch(self, token: str, namespace: str, plural: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """PATCH /apis/apps/v1/namespaces/{namespace}/{plural}/{name} (application/strategic-merge-patch+json)."""
        response = self._request(
            "PATCH", token, namespace, plural, name, json=body, headers={"Content-Type": STRATEGIC_MERGE_PATCH}
        )
        raise_for_kubernetes(response, what=self._what, verb="patch", resource=f"{plural}/{name}", namespace=namespace)
        return self._json(response, f"{plural}/{name}")

    def wait(self, token: str) -> None:
        """GET every target every poll_interval until all rolled out, one failed, or wait_timeout passed."""
        deadline = self._clock() + self.options.wait_timeout
        while True:
            pending: list[str] = []
            for namespace, plural, name in self.targets:
                state, why = rollout_status(self.get(token, namespace, plural, name), plural)
                if state == "failed":
                    raise NotifyError(
                        f"{self._what}: the rollout of {plural}/{name} in namespace {namespace} failed: {why}; "
                        f"see `kubectl -n {namespace} rollout status {plural}/{name}` (the old pods keep running)"
                    )
                if state == "in_progress":
                    pending.append(f"{plural}/{name} in {namespace} ({why})")
            if not pending:
                return
            if self._clock() >= deadline:
                raise TransientError(
                    f"{self._what}: rollout not complete after {self.options.wait_timeout:g}s: "
                    f"{'; '.join(pending)}; waiting again on the next attempt"
                )
            self._sleep(self.options.poll_interval)

    def _check_restartable(self, obj: Mapping[str, Any], namespace: str, plural: str, name: str) -> None:
        spec = obj.get("spec") or {}
        where = f"{self._what}: {plural}/{name} in namespace {namespace}"
        if plural == "deployments" and spec.get("paused"):
            raise NotifyError(f"{where} is paused, so a restart would not roll out; run `kubectl rollout resume`")
        if (spec.get("updateStrategy") or {}).get("type") == "OnDelete":
            raise NotifyError(
                f"{where} uses updateStrategy OnDelete: changing its template replaces no pod; delete its pods, "
                "or switch it to RollingUpdate"
            )

    def _token(self) -> str:
        try:
            token = resolve_secret_ref(self.token_ref, key=f"notifiers.{self.setup.name}.token", setup=self.setup)
        except ConfigError as exc:
            raise NotifyError(f"{self._what}: {exc}") from None
        register_secret(token)
        return token

    def _request(
        self, method: str, token: str, namespace: str, plural: str, name: str, **kwargs: Any
    ) -> requests.Response:
        url = f"{self.api_server}/apis/apps/v1/namespaces/{quote(namespace)}/{plural}/{quote(name)}"
        require_https(url, what=self._what)
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json", **kwargs.pop("headers", {})}
        return send(
            self._session,
            method,
            url,
            what=f"{self._what}: {method} {plural}/{name} in namespace {namespace}",
            headers=headers,
            timeout=self.options.timeout,
            verify=self.verify,
            allow_redirects=False,
            **kwargs,
        )

    def _json(self, response: requests.Response, resource: str) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise NotifyError(f"{self._what}: {resource}: the API server's answer is not a JSON object")
        return body
