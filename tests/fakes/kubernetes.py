"""A small fake of the Kubernetes API server: the apps/v1 workload endpoints a rollout restart uses, over HTTPS.

No API server can be run on this machine, so this fake stands in for one. It was written from the public
Kubernetes API documentation (kubernetes.io/docs/reference: "API Concepts", "Kubernetes API Reference" for
Deployment, StatefulSet and DaemonSet v1 apps, "Authenticating" (bearer tokens), "Authorization overview",
"Update API Objects in Place Using kubectl patch", and the Status kind of "API Conventions"), and speaks:

- GET   /apis/apps/v1/namespaces/{ns}/{deployments|statefulsets|daemonsets}/{name}  200 the object
- PATCH the same path with Content-Type application/strategic-merge-patch+json or application/merge-patch+json;
        200 the patched object. Any other patch type: 415 (the media types the server accepts are listed).
        A change of spec bumps metadata.generation and starts a rollout (see below); every change bumps
        metadata.resourceVersion; a patch carrying metadata.resourceVersion that is not the current one: 409.
        Annotation keys are validated (a qualified name, an optional DNS-subdomain prefix): 422 Invalid otherwise.
- GET   /version, /api, /apis, /apis/apps/v1: discovery documents (APIVersions, APIGroupList, APIResourceList),
        so that kubectl itself can talk to the fake.

Errors are `Status` objects ({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message", "reason",
"details", "code"}) with the API server's message texts: 401 Unauthorized (no or unknown bearer token), 403
Forbidden (the token's grants lack the verb: `User "..." cannot patch resource "deployments" in API group "apps"
in the namespace "..."`), 404 NotFound (`deployments.apps "x" not found`), 409 Conflict, 415, 422 Invalid,
429 TooManyRequests and 5xx (injected with `fail(...)`).

Rollouts are modelled, not run: after a change of the pod template the object's status shows a rollout in
progress (observedGeneration caught up, no replica updated yet) for `rollout_polls` GETs, then complete
(all replicas updated and available; a StatefulSet's currentRevision = updateRevision). `fail_rollout(...)` puts a
Deployment's Progressing condition at ProgressDeadlineExceeded.

Not modelled: strategic merge patch's list merge keys and `$patch` directives (lists are replaced, as a JSON merge
patch does), JSON patch and apply patches, watches, other resources, admission, RBAC objects (a token's grants
are given directly to the fake).

It serves HTTPS with a throwaway CA's certificate (tests/fakes/throwaway_ca.py), so clients verify TLS as they
would in a cluster.
"""

from __future__ import annotations

import copy
import json
import re
import threading
from dataclasses import dataclass, field
from typing import Any

from werkzeug.wrappers import Request, Response

from tests.fakes.http_server import BackgroundServer, ServedFake
from tests.fakes.throwaway_ca import TlsFiles

PLURALS = {"deployments": "Deployment", "statefulsets": "StatefulSet", "daemonsets": "DaemonSet"}
PATCH_TYPES = ("application/strategic-merge-patch+json", "application/merge-patch+json")
ACCEPTED_PATCH_TYPES = (
    "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, "
    "application/strategic-merge-patch+json"
)
_ROUTE = re.compile(r"^/apis/apps/v1/namespaces/([^/]+)/(deployments|statefulsets|daemonsets)/([^/]+)$")
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9]$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
ALL_VERBS = frozenset({"get", "list", "watch", "patch", "update"})


# -- the fake -----------------------------------------------------------------------------------------------------


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None):
        self.code, self.reason, self.message, self.details = code, reason, message, details
        super().__init__(message)

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


@dataclass
class Grant:
    user: str
    verbs: frozenset[str] = ALL_VERBS
    namespaces: frozenset[str] | None = None  # None: every namespace


@dataclass
class Fault:
    status: int
    path_contains: str
    times: int
    method: str | None = None
    retry_after: int | None = None


@dataclass
class Workload:
    obj: dict[str, Any]
    polls_left: int = 0
    failed: bool = False
    revision: int = 1


@dataclass
class Recorded:
    method: str
    path: str
    content_type: str
    body: Any
    user: str | None
    user_agent: str = ""


@dataclass
class FakeKubernetes(ServedFake):
    tls: TlsFiles
    rollout_polls: int = 0
    tokens: dict[str, Grant] = field(default_factory=dict)
    objects: dict[tuple[str, str, str], Workload] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    requests: list[Recorded] = field(default_factory=list)
    url: str = ""
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _server: BackgroundServer | None = None
    _resource_version: int = 1000

    # -- set-up for tests -----------------------------------------------------------------------------------------

    def add_token(
        self,
        token: str,
        user: str = "system:serviceaccount:default:rotator",
        *,
        verbs: set[str] | frozenset[str] = ALL_VERBS,
        namespaces: set[str] | None = None,
    ) -> None:
        with self._lock:
            self.tokens[token] = Grant(user, frozenset(verbs), frozenset(namespaces) if namespaces else None)

    def add_workload(
        self,
        plural: str,
        namespace: str,
        name: str,
        *,
        replicas: int = 2,
        paused: bool = False,
        update_strategy: str = "RollingUpdate",
    ) -> dict[str, Any]:
        kind = PLURALS[plural]
        spec: dict[str, Any] = {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": {}},
                "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]},
            },
        }
        if plural != "daemonsets":
            spec["replicas"] = replicas
        if plural == "deployments":
            spec["strategy"] = {"type": "RollingUpdate"}
            if paused:
                spec["paused"] = True
        else:
            spec["updateStrategy"] = {"type": update_strategy}
        obj = {
            "apiVersion": "apps/v1",
            "kind": kind,
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": f"uid-{namespace}-{plural}-{name}",
                "generation": 1,
                "resourceVersion": self._next_version(),
            },
            "spec": spec,
        }
        workload = Workload(obj)
        with self._lock:
            self.objects[(namespace, plural, name)] = workload
            self._settle(workload)
        return copy.deepcopy(obj)

    def workload(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(self.objects[(namespace, plural, name)].obj)

    def fail(
        self,
        status: int,
        path_contains: str = "",
        times: int = 1,
        method: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        """The next `times` requests whose path contains `path_contains` answer `status` with a Status body."""
        with self._lock:
            self.faults.append(Fault(status, path_contains, times, method, retry_after))

    def fail_rollout(self, namespace: str, name: str) -> None:
        """The Deployment's next rollout exceeds its progress deadline."""
        with self._lock:
            self.objects[(namespace, "deployments", name)].failed = True

    def patches(self, name: str | None = None) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.method == "PATCH" and (name is None or r.path.endswith(f"/{name}"))]

    # -- serving --------------------------------------------------------------------------------------------------

    def serve(self, host: str = "127.0.0.1") -> FakeKubernetes:
        self._serve_wsgi(name="fake-kubernetes", host=host, ssl_context=self.tls.server_context())
        return self

    def wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        try:
            response = self._handle(request)
        except ApiError as err:
            response = _json(err.status(), err.code)
            if err.code == 429 and err.details and "retryAfterSeconds" in err.details:
                response.headers["Retry-After"] = str(err.details["retryAfterSeconds"])
        return response(environ, start_response)

    # -- request handling -----------------------------------------------------------------------------------------

    def _handle(self, request: Request) -> Response:
        raw = request.get_data()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        grant = self._authenticate(request)
        with self._lock:
            self.requests.append(
                Recorded(
                    request.method,
                    request.path,
                    request.headers.get("Content-Type", ""),
                    body,
                    grant.user if grant else None,
                    request.headers.get("User-Agent", ""),
                )
            )
            self._inject_fault(request)
        if grant is None:
            raise ApiError(401, "Unauthorized", "Unauthorized")
        discovery = self._discovery(request.path)
        if discovery is not None:
            return _json(discovery)
        match = _ROUTE.match(request.path)
        if match is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
        namespace, plural, name = match.groups()
        verb = {"GET": "get", "PATCH": "patch", "PUT": "update"}.get(request.method)
        if verb is None:
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
        self._authorize(grant, verb, namespace, plural, name)
        with self._lock:
            workload = self.objects.get((namespace, plural, name))
            if workload is None:
                raise ApiError(
                    404,
                    "NotFound",
                    f'{plural}.apps "{name}" not found',
                    {"name": name, "group": "apps", "kind": plural},
                )
            if verb == "get":
                self._observe(workload)
                return _json(copy.deepcopy(workload.obj))
            return self._patch(request, workload, plural, name, body)

    def _authenticate(self, request: Request) -> Grant | None:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            return None
        with self._lock:
            return self.tokens.get(header[len("Bearer ") :].strip())

    def _inject_fault(self, request: Request) -> None:
        for fault in self.faults:
            if fault.times > 0 and fault.path_contains in request.path and fault.method in (None, request.method):
                fault.times -= 1
                reasons = {429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable", 409: "Conflict"}
                details = {"retryAfterSeconds": fault.retry_after} if fault.retry_after is not None else None
                raise ApiError(fault.status, reasons.get(fault.status, "Unknown"), "injected fault", details)

    def _authorize(self, grant: Grant, verb: str, namespace: str, plural: str, name: str) -> None:
        if verb in grant.verbs and (grant.namespaces is None or namespace in grant.namespaces):
            return
        raise ApiError(
            403,
            "Forbidden",
            f'{plural}.apps "{name}" is forbidden: User "{grant.user}" cannot {verb} resource "{plural}" in API '
            f'group "apps" in the namespace "{namespace}"',
            {"name": name, "group": "apps", "kind": plural},
        )

    def _patch(self, request: Request, workload: Workload, plural: str, name: str, body: Any) -> Response:
        content_type = (request.mimetype or "").lower()
        if content_type not in PATCH_TYPES:
            raise ApiError(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format - accepted media types include: "
                f"{ACCEPTED_PATCH_TYPES}",
            )
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the request body is not a JSON object")
        obj = workload.obj
        wanted_version = (body.get("metadata") or {}).get("resourceVersion")
        if wanted_version is not None and wanted_version != obj["metadata"]["resourceVersion"]:
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {plural}.apps "{name}": the object has been modified; please '
                "apply your changes to the latest version and try again",
                {"name": name, "group": "apps", "kind": plural},
            )
        patched = _merge(copy.deepcopy(obj), body)
        for field_path, key in _annotation_keys(patched):
            if not _valid_qualified_name(key):
                raise ApiError(
                    422,
                    "Invalid",
                    f'{PLURALS[plural]}.apps "{name}" is invalid: {field_path}: Invalid value: "{key}": name part '
                    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
                    "alphanumeric character",
                    {"name": name, "group": "apps", "kind": PLURALS[plural], "causes": []},
                )
        for immutable in ("name", "namespace", "uid"):
            patched["metadata"][immutable] = obj["metadata"][immutable]
        patched.pop("status", None)
        if patched == {k: v for k, v in obj.items() if k != "status"}:
            return _json(copy.deepcopy(obj))  # nothing changed: no new generation, no new resourceVersion
        patched["metadata"]["resourceVersion"] = self._next_version()
        if patched["spec"] != obj["spec"]:
            patched["metadata"]["generation"] = int(obj["metadata"]["generation"]) + 1
        template_changed = patched["spec"].get("template") != obj["spec"].get("template")
        patched["status"] = obj.get("status", {})
        workload.obj = patched
        if template_changed:
            workload.revision += 1
            workload.polls_left = self.rollout_polls
            self._start_rollout(workload)
        else:
            self._settle(workload)
        return _json(copy.deepcopy(patched))

    def _start_rollout(self, workload: Workload) -> None:
        obj = workload.obj
        plural = obj["kind"].lower() + "s"
        status = obj.setdefault("status", {})
        status["observedGeneration"] = obj["metadata"]["generation"]
        replicas = int(obj["spec"].get("replicas", 1))
        if plural == "deployments":
            if workload.failed:
                status["conditions"] = [
                    {
                        "type": "Progressing",
                        "status": "False",
                        "reason": "ProgressDeadlineExceeded",
                        "message": f'ReplicaSet "{obj["metadata"]["name"]}-2" has timed out progressing.',
                    }
                ]
            status.update(replicas=replicas + 1, updatedReplicas=0, availableReplicas=replicas)
        elif plural == "statefulsets":
            status.update(updatedReplicas=0, updateRevision=f"{obj['metadata']['name']}-{workload.revision}")
        else:
            status.update(updatedNumberScheduled=0)
        if workload.polls_left <= 0 and not workload.failed:
            self._settle(workload)

    def _observe(self, workload: Workload) -> None:
        """A GET: a rollout in progress advances; it completes once `rollout_polls` GETs have seen it."""
        if workload.failed or workload.polls_left <= 0:
            return
        workload.polls_left -= 1
        if workload.polls_left <= 0:
            self._settle(workload)

    def _settle(self, workload: Workload) -> None:
        obj = workload.obj
        plural = obj["kind"].lower() + "s"
        replicas = int(obj["spec"].get("replicas", 1))
        status: dict[str, Any] = {"observedGeneration": obj["metadata"]["generation"]}
        if plural == "deployments":
            status.update(
                replicas=replicas,
                updatedReplicas=replicas,
                readyReplicas=replicas,
                availableReplicas=replicas,
                conditions=[{"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}],
            )
        elif plural == "statefulsets":
            revision = f"{obj['metadata']['name']}-{workload.revision}"
            status.update(
                replicas=replicas,
                readyReplicas=replicas,
                updatedReplicas=replicas,
                currentRevision=revision,
                updateRevision=revision,
            )
        else:
            status.update(
                desiredNumberScheduled=3, currentNumberScheduled=3, updatedNumberScheduled=3, numberAvailable=3
            )
        obj["status"] = status

    def _next_version(self) -> str:
        with self._lock:
            self._resource_version += 1
            return str(self._resource_version)

    @staticmethod
    def _discovery(path: str) -> dict[str, Any] | None:
        if path == "/version":
            return {"major": "1", "minor": "30", "gitVersion": "v1.30.0-fake", "platform": "linux/amd64"}
        if path == "/api":
            return {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
            }
        if path == "/apis":
            return {
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [
                    {
                        "name": "apps",
                        "versions": [{"groupVersion": "apps/v1", "version": "v1"}],
                        "preferredVersion": {"groupVersion": "apps/v1", "version": "v1"},
                    }
                ],
            }
        if path == "/api/v1":
            return {"kind": "APIResourceList", "groupVersion": "v1", "resources": []}
        if path == "/apis/apps/v1":
            verbs = ["create", "delete", "get", "list", "patch", "update", "watch"]
            return {
                "kind": "APIResourceList",
                "apiVersion": "v1",
                "groupVersion": "apps/v1",
                "resources": [
                    {
                        "name": plural,
                        "singularName": kind.lower(),
                        "namespaced": True,
                        "kind": kind,
                        "verbs": verbs,
                        "shortNames": {"deployments": ["deploy"], "statefulsets": ["sts"], "daemonsets": ["ds"]}[
                            plural
                        ],
                    }
                    for plural, kind in PLURALS.items()
                ],
            }
        return None


def _merge(target: Any, patch: Any) -> Any:
    """JSON merge patch (RFC 7386): maps merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if not isinstance(target, dict):
        target = {}
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        else:
            target[key] = _merge(target.get(key), value)
    return target


def _annotation_keys(obj: dict[str, Any]) -> list[tuple[str, str]]:
    found = [("metadata.annotations", k) for k in (obj.get("metadata", {}).get("annotations") or {})]
    template = (obj.get("spec") or {}).get("template") or {}
    found += [
        ("spec.template.metadata.annotations", k) for k in ((template.get("metadata") or {}).get("annotations") or {})
    ]
    return found


def _valid_qualified_name(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return False
    return bool(_QUALIFIED_NAME.match(name)) and len(name) <= 63


def _json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json")
