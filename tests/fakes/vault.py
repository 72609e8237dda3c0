"""A small fake of HashiCorp Vault's HTTP API: the KV v2 endpoints and logins the vault-kv2 store uses.

No Vault server can be had on this machine, so this fake stands in for one. It was written from Vault's public
API documentation (developer.hashicorp.com/vault/api-docs: "KV secrets engine - version 2", "Token auth method",
"AppRole", "Kubernetes", "AWS" auth methods), and speaks those endpoints with the same paths, status codes,
response envelopes and error bodies:

- GET    /v1/<mount>/data/<path>[?version=N]   200 {"data": {"data": {...}, "metadata": {...}}};
                                               404 {"errors": []} when the path or version does not exist;
                                               404 with the envelope and `"data": null` for a deleted/destroyed version
- POST   /v1/<mount>/data/<path>               body {"data": {...}, "options": {"cas": N}}; 200 {"data": {metadata}};
                                               400 {"errors": ["check-and-set parameter did not match the current
                                               version"]}; 400 "check-and-set parameter required for this call"
                                               when cas_required is set and cas is missing
- DELETE /v1/<mount>/data/<path>               soft-deletes the latest version (204)
- POST   /v1/<mount>/delete/<path>, /destroy/<path>   {"versions": [...]} (204)
- GET    /v1/<mount>/metadata/<path>           200 {"data": {current_version, oldest_version, max_versions,
                                               cas_required, delete_version_after, custom_metadata, versions, ...}}
- POST   /v1/<mount>/metadata/<path>           updates only the fields given (custom_metadata replaced whole) (204)
- PATCH  /v1/<mount>/metadata/<path>           JSON merge patch (Content-Type application/merge-patch+json, else 415)
- DELETE /v1/<mount>/metadata/<path>           every version and the metadata (204, also when absent)
- POST   /v1/auth/approle/login, /v1/auth/kubernetes/login, /v1/auth/aws/login   200 {"auth": {client_token, ...}}
- GET    /v1/auth/token/lookup-self, POST /v1/auth/token/renew-self

Requests need X-Vault-Token (403 {"errors": ["permission denied"]} otherwise); X-Vault-Namespace selects a separate
namespace. Tokens carry a TTL, a max TTL, a renewable flag and a policy (path glob -> capabilities), checked like
Vault's ACLs ("read", "create", "update", "patch", "delete"; a trailing `*` is a prefix glob). Versions beyond
max_versions (default 10) are removed, oldest first.

What it does not model: real signature checks for AWS IAM login (it checks the request's shape: a POST of
sts:GetCallerIdentity signed with AWS4-HMAC-SHA256, and the X-Vault-AWS-IAM-Server-ID header when configured),
JWT verification for Kubernetes (a configured JWT -> role table), leases of dynamic secrets, LIST, replication.

Tests inject faults with `fail(...)` (e.g. 429, 500, 503 for N requests matching a path) and read `requests`,
the log of (method, path, namespace) handled.
"""

from __future__ import annotations

import base64
import copy
import fnmatch
import json
import re
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from werkzeug.wrappers import Request, Response

from tests.fakes.http_server import BackgroundServer, ServedFake

CAS_MISMATCH = "check-and-set parameter did not match the current version"
CAS_REQUIRED = "check-and-set parameter required for this call"
ROOT_POLICY = {"*": {"read", "create", "update", "patch", "delete", "list", "sudo"}}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Version:
    data: dict[str, Any] | None
    created_time: str
    deletion_time: str = ""
    destroyed: bool = False


@dataclass
class Secret:
    versions: dict[int, Version] = field(default_factory=dict)
    current_version: int = 0
    oldest_version: int = 0
    max_versions: int = 0
    cas_required: bool = False
    delete_version_after: str = "0s"
    custom_metadata: dict[str, str] | None = None
    created_time: str = field(default_factory=_now)
    updated_time: str = field(default_factory=_now)

    def version_meta(self, number: int) -> dict[str, Any]:
        version = self.versions[number]
        return {
            "created_time": version.created_time,
            "custom_metadata": copy.deepcopy(self.custom_metadata),
            "deletion_time": version.deletion_time,
            "destroyed": version.destroyed,
            "version": number,
        }


@dataclass
class Token:
    token: str
    policy: dict[str, set[str]]
    ttl: float  # 0: never expires
    renewable: bool
    max_ttl: float
    issued: float = field(default_factory=time.monotonic)
    expires: float | None = None
    accessor: str = field(default_factory=lambda: secrets.token_hex(12))
    display_name: str = "token"
    renewals: int = 0

    def __post_init__(self) -> None:
        if self.expires is None and self.ttl > 0:
            self.expires = self.issued + self.ttl

    def remaining(self) -> float:
        return max(0.0, self.expires - time.monotonic()) if self.expires is not None else 0.0

    def alive(self) -> bool:
        return self.expires is None or time.monotonic() < self.expires


@dataclass
class Fault:
    status: int
    path_contains: str
    times: int
    method: str | None = None


class VaultError(Exception):
    def __init__(self, status: int, errors: Iterable[str] = (), body: dict[str, Any] | None = None):
        self.status = status
        self.errors = list(errors)
        self.body = body
        super().__init__(status)


class FakeVault(ServedFake):
    """The fake's state and its WSGI app. Start it with `serve()`; `url` and `root_token` then address it."""

    def __init__(self, *, mounts: Iterable[str] = ("secret",), root_token: str | None = None):
        self._lock = threading.RLock()
        self.mounts = set(mounts)
        self.root_token = root_token or "hvs." + secrets.token_urlsafe(24)
        self.tokens: dict[str, Token] = {}
        self.data: dict[tuple[str, str, str], Secret] = {}  # (namespace, mount, path) -> secret
        self.approles: dict[str, dict[str, Any]] = {}  # role_id -> {"secret_id", "policy", "ttl", ...}
        self.k8s_roles: dict[str, dict[str, Any]] = {}  # role -> {"jwt", "policy", ...}
        self.aws_roles: dict[str, dict[str, Any]] = {}  # role -> {"policy", "server_id", ...}
        self.faults: list[Fault] = []
        self.requests: list[tuple[str, str, str]] = []
        self.logins: list[str] = []
        self.add_token(self.root_token, policy=ROOT_POLICY, ttl=0, renewable=False)
        self._server: BackgroundServer | None = None
        self.url = ""

    # -- set-up helpers for tests -------------------------------------------------------------------------

    def add_token(
        self,
        token: str | None = None,
        *,
        policy: dict[str, set[str]] | None = None,
        ttl: float = 3600,
        renewable: bool = True,
        max_ttl: float = 0,
    ) -> str:
        token = token or "hvs." + secrets.token_urlsafe(24)
        with self._lock:
            self.tokens[token] = Token(token, dict(policy or ROOT_POLICY), ttl, renewable, max_ttl)
        return token

    def revoke(self, token: str) -> None:
        with self._lock:
            self.tokens.pop(token, None)

    def add_approle(
        self,
        role_id: str,
        secret_id: str,
        *,
        policy: dict[str, set[str]] | None = None,
        ttl: float = 3600,
        max_ttl: float = 0,
    ) -> None:
        with self._lock:
            self.approles[role_id] = {"secret_id": secret_id, "policy": policy, "ttl": ttl, "max_ttl": max_ttl}

    def add_kubernetes_role(
        self, role: str, jwt: str, *, policy: dict[str, set[str]] | None = None, ttl: float = 3600
    ) -> None:
        with self._lock:
            self.k8s_roles[role] = {"jwt": jwt, "policy": policy, "ttl": ttl}

    def add_aws_role(
        self, role: str, *, server_id: str | None = None, policy: dict[str, set[str]] | None = None, ttl: float = 3600
    ) -> None:
        with self._lock:
            self.aws_roles[role] = {"server_id": server_id, "policy": policy, "ttl": ttl}

    def fail(self, status: int, path_contains: str = "", times: int = 1, method: str | None = None) -> None:
        """The next `times` requests whose path contains `path_contains` answer `status` with Vault's error body."""
        with self._lock:
            self.faults.append(Fault(status, path_contains, times, method))

    def secret(self, path: str, *, mount: str = "secret", namespace: str = "") -> Secret | None:
        with self._lock:
            return self.data.get((namespace.strip("/"), mount, path.strip("/")))

    def requests_matching(self, needle: str) -> list[tuple[str, str, str]]:
        with self._lock:
            return [r for r in self.requests if needle in r[1]]

    # -- serving ------------------------------------------------------------------------------------------

    def serve(self, host: str = "127.0.0.1", port: int = 0) -> FakeVault:
        self._serve_wsgi(name="fake-vault", host=host, port=port)
        return self

    def wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        try:
            response = self._handle(request)
        except VaultError as err:
            body = err.body if err.body is not None else {"errors": err.errors}
            response = _json(body, err.status)
        return response(environ, start_response)

    # -- request handling ---------------------------------------------------------------------------------

    def _handle(self, request: Request) -> Response:
        path = request.path
        namespace = (request.headers.get("X-Vault-Namespace") or "").strip("/")
        with self._lock:
            self.requests.append((request.method, path, namespace))
            for fault in self.faults:
                if fault.times > 0 and fault.path_contains in path and fault.method in (None, request.method):
                    fault.times -= 1
                    raise VaultError(fault.status, [_fault_text(fault.status, path)])
        if not path.startswith("/v1/"):
            raise VaultError(404)
        route = path[len("/v1/") :]
        body = _body(request)
        if route.startswith("auth/"):
            return self._auth(request, route, body)
        token = self._token(request)
        mount, _, rest = route.partition("/")
        kind, _, secret_path = rest.partition("/")
        if mount not in self.mounts:
            raise VaultError(404, [f'no handler for route "{route}". route entry not found.'])
        if not secret_path:
            raise VaultError(404)
        capability = _capability(request.method, kind)
        self._authorize(token, route, capability, namespace, mount, secret_path)
        key = (namespace, mount, secret_path.strip("/"))
        with self._lock:
            if kind == "data":
                return self._data(request, key, body)
            if kind == "metadata":
                return self._metadata(request, key, body)
            if kind in ("delete", "destroy", "undelete") and request.method in ("POST", "PUT"):
                return self._versions_op(kind, key, body)
        raise VaultError(405, ["unsupported operation"])

    def _token(self, request: Request) -> Token:
        value = request.headers.get("X-Vault-Token") or ""
        with self._lock:
            token = self.tokens.get(value)
            if token is None or not token.alive():
                raise VaultError(403, ["permission denied"])
            return token

    def _authorize(self, token: Token, route: str, capability: str, namespace: str, mount: str, path: str) -> None:
        if capability == "create/update":
            exists = (namespace, mount, path.strip("/")) in self.data
            capability = "update" if exists else "create"
        for glob, allowed in token.policy.items():
            if (fnmatch.fnmatchcase(route, glob) if "*" in glob else route == glob) and capability in allowed:
                return
        raise VaultError(403, ["1 error occurred:\n\t* permission denied\n\n"])

    def _data(self, request: Request, key: tuple[str, str, str], body: dict[str, Any]) -> Response:
        secret = self.data.get(key)
        if request.method == "GET":
            if secret is None or secret.current_version == 0:
                raise VaultError(404)
            raw = request.args.get("version")
            number = int(raw) if raw and raw != "0" else secret.current_version
            if number not in secret.versions:
                raise VaultError(404)
            version = secret.versions[number]
            payload = {"data": version.data, "metadata": secret.version_meta(number)}
            if version.data is None or version.deletion_time or version.destroyed:
                payload["data"] = None
                raise VaultError(404, body=_envelope(payload))
            return _json(_envelope({"data": copy.deepcopy(version.data), "metadata": secret.version_meta(number)}))
        if request.method in ("POST", "PUT"):
            data = body.get("data")
            if not isinstance(data, dict):
                raise VaultError(400, ["no data provided"])
            options = body.get("options") or {}
            current = secret.current_version if secret else 0
            if "cas" in options:
                if int(options["cas"]) != current:
                    raise VaultError(400, [CAS_MISMATCH])
            elif secret is not None and secret.cas_required:
                raise VaultError(400, [CAS_REQUIRED])
            if secret is None:
                secret = self.data[key] = Secret()
            number = secret.current_version + 1
            secret.versions[number] = Version(copy.deepcopy(data), _now())
            secret.current_version = number
            secret.updated_time = _now()
            if secret.oldest_version == 0:
                secret.oldest_version = number
            limit = secret.max_versions or 10
            for old in sorted(secret.versions):
                if len(secret.versions) <= limit:
                    break
                del secret.versions[old]
            secret.oldest_version = min(secret.versions)
            return _json(_envelope(secret.version_meta(number)))
        if request.method == "DELETE":
            if secret is not None and secret.current_version in secret.versions:
                secret.versions[secret.current_version].deletion_time = _now()
            return Response(status=204)
        raise VaultError(405, ["unsupported operation"])

    def _metadata(self, request: Request, key: tuple[str, str, str], body: dict[str, Any]) -> Response:
        secret = self.data.get(key)
        if request.method == "GET":
            if secret is None:
                raise VaultError(404)
            return _json(
                _envelope(
                    {
                        "cas_required": secret.cas_required,
                        "created_time": secret.created_time,
                        "current_version": secret.current_version,
                        "custom_metadata": copy.deepcopy(secret.custom_metadata),
                        "delete_version_after": secret.delete_version_after,
                        "max_versions": secret.max_versions,
                        "oldest_version": secret.oldest_version,
                        "updated_time": secret.updated_time,
                        "versions": {
                            str(n): {
                                "created_time": v.created_time,
                                "deletion_time": v.deletion_time,
                                "destroyed": v.destroyed,
                            }
                            for n, v in sorted(secret.versions.items())
                        },
                    }
                )
            )
        if request.method in ("POST", "PUT", "PATCH"):
            if request.method == "PATCH" and request.mimetype != "application/merge-patch+json":
                raise VaultError(415, ["PATCH requires Content-Type application/merge-patch+json"])
            if secret is None:
                if request.method == "PATCH":
                    raise VaultError(404)
                secret = self.data[key] = Secret()
            custom = body.get("custom_metadata")
            if custom is not None:
                if not isinstance(custom, dict) or len(custom) > 64:
                    raise VaultError(400, ["custom_metadata must be a map of at most 64 keys"])
                if request.method == "PATCH":
                    merged = dict(secret.custom_metadata or {})
                    for k, v in custom.items():
                        if v is None:
                            merged.pop(k, None)
                        else:
                            merged[k] = str(v)
                    secret.custom_metadata = merged
                else:
                    secret.custom_metadata = {str(k): str(v) for k, v in custom.items()}
            if "max_versions" in body:
                secret.max_versions = int(body["max_versions"])
            if "cas_required" in body:
                secret.cas_required = bool(body["cas_required"])
            if "delete_version_after" in body:
                secret.delete_version_after = str(body["delete_version_after"])
            secret.updated_time = _now()
            return Response(status=204)
        if request.method == "DELETE":
            self.data.pop(key, None)
            return Response(status=204)
        raise VaultError(405, ["unsupported operation"])

    def _versions_op(self, kind: str, key: tuple[str, str, str], body: dict[str, Any]) -> Response:
        secret = self.data.get(key)
        for number in body.get("versions") or []:
            version = secret.versions.get(int(number)) if secret else None
            if version is None:
                continue
            if kind == "delete":
                version.deletion_time = _now()
            elif kind == "undelete":
                version.deletion_time = ""
            else:
                version.destroyed = True
                version.data = None
        return Response(status=204)

    # -- auth -----------------------------------------------------------------------------------------------

    def _issue(self, display: str, policy: dict[str, set[str]] | None, ttl: float, max_ttl: float = 0) -> Response:
        token = self.add_token(policy=policy or ROOT_POLICY, ttl=ttl, renewable=True, max_ttl=max_ttl)
        with self._lock:
            record = self.tokens[token]
            record.display_name = display
            self.logins.append(display)
        return _json(_envelope(None, auth=_auth_block(record)))

    def _auth(self, request: Request, route: str, body: dict[str, Any]) -> Response:
        if route == "auth/token/lookup-self" and request.method == "GET":
            token = self._token(request)
            return _json(
                _envelope(
                    {
                        "accessor": token.accessor,
                        "creation_ttl": int(token.ttl),
                        "display_name": token.display_name,
                        "entity_id": "",
                        "expire_time": None,
                        "explicit_max_ttl": int(token.max_ttl),
                        "id": token.token,
                        "meta": None,
                        "num_uses": 0,
                        "orphan": True,
                        "path": "auth/token/create",
                        "policies": ["root"] if token.policy == ROOT_POLICY else ["default", "rotator"],
                        "renewable": token.renewable,
                        "ttl": int(token.remaining()),
                        "type": "service",
                    }
                )
            )
        if route == "auth/token/renew-self" and request.method in ("POST", "PUT"):
            token = self._token(request)
            if not token.renewable or token.ttl <= 0:
                raise VaultError(400, ["lease is not renewable"])
            with self._lock:
                ttl = token.ttl
                if token.max_ttl:
                    ttl = min(ttl, token.issued + token.max_ttl - time.monotonic())
                token.expires = time.monotonic() + max(ttl, 0)
                token.renewals += 1
            return _json(_envelope(None, auth=_auth_block(token)))
        match = re.fullmatch(r"auth/([^/]+)/login", route)
        if not match or request.method not in ("POST", "PUT"):
            raise VaultError(404, [f'no handler for route "{route}"'])
        method = match.group(1)
        if method == "approle":
            role = self.approles.get(str(body.get("role_id")))
            if role is None or not secrets.compare_digest(str(body.get("secret_id")), role["secret_id"]):
                raise VaultError(400, ["invalid role or secret ID"])
            return self._issue("approle", role["policy"], role["ttl"], role.get("max_ttl", 0))
        if method == "kubernetes":
            k8s = self.k8s_roles.get(str(body.get("role")))
            if k8s is None or not secrets.compare_digest(str(body.get("jwt")), k8s["jwt"]):
                raise VaultError(403, ["permission denied"])
            return self._issue(f"kubernetes-{body.get('role')}", k8s["policy"], k8s["ttl"])
        if method == "aws":
            aws = self.aws_roles.get(str(body.get("role")))
            if aws is None or not _valid_iam_request(body, aws.get("server_id")):
                raise VaultError(400, ["error making upstream request: invalid IAM login request"])
            return self._issue(f"aws-{body.get('role')}", aws["policy"], aws["ttl"])
        raise VaultError(400, [f"unsupported auth method {method!r}"])


def _valid_iam_request(body: dict[str, Any], server_id: str | None) -> bool:
    """The shape Vault's aws auth method expects: a signed POST of sts:GetCallerIdentity, base64-encoded."""
    try:
        url = base64.b64decode(body["iam_request_url"]).decode()
        request_body = base64.b64decode(body["iam_request_body"]).decode()
        headers = json.loads(base64.b64decode(body["iam_request_headers"]))
    except (KeyError, ValueError):
        return False
    authorization = " ".join(headers.get("Authorization") or [])
    if (
        body.get("iam_http_request_method") != "POST"
        or "sts" not in url
        or "Action=GetCallerIdentity" not in request_body
    ):
        return False
    if not authorization.startswith("AWS4-HMAC-SHA256 Credential="):
        return False
    return server_id is None or (headers.get("X-Vault-AWS-IAM-Server-ID") or [None])[0] == server_id


def _capability(method: str, kind: str) -> str:
    if method == "GET":
        return "read"
    if method == "DELETE":
        return "delete"
    if method == "PATCH":
        return "patch"
    if kind in ("delete", "undelete"):
        return "update"
    if kind == "destroy":
        return "update"
    return "create/update"


def _fault_text(status: int, path: str) -> str:
    if status == 429:
        return f'request path "{path[4:]}": rate limit quota exceeded'
    if status == 503:
        return "Vault is sealed"
    if status == 403:
        return "permission denied"
    return "internal error"


def _auth_block(token: Token) -> dict[str, Any]:
    return {
        "client_token": token.token,
        "accessor": token.accessor,
        "policies": ["default", "rotator"],
        "token_policies": ["default", "rotator"],
        "metadata": {},
        "lease_duration": int(token.remaining()),
        "renewable": token.renewable,
        "entity_id": "",
        "token_type": "service",
        "orphan": True,
    }


def _envelope(data: Any, auth: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "request_id": secrets.token_hex(16),
        "lease_id": "",
        "renewable": False,
        "lease_duration": 0,
        "data": data,
        "wrap_info": None,
        "warnings": None,
        "auth": auth,
    }


def _json(body: Any, status: int = 200) -> Response:
    # Vault answers application/json exactly; hvac only parses error bodies with that content type.
    return Response(json.dumps(body), status=status, content_type="application/json")


def _body(request: Request) -> dict[str, Any]:
    raw = request.get_data()
    if not raw:
        return {}
    try:
        parsed = json.loads(raw)
    except ValueError:
        raise VaultError(400, ["failed to parse JSON input"]) from None
    return parsed if isinstance(parsed, dict) else {}
