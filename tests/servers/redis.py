"""A throwaway redis-server for tests, on free ports, in a temporary directory.

Recipe from /work/shared/TEST-SERVERS.md, without `--daemonize` so that the fixture holds the process and stops
exactly that one. Password auth: the `default` user has a password (`requirepass`), and tests add ACL users with
`ACL SETUSER`; a wrong password really fails with WRONGPASS. The server listens on a plain TCP port and on a TLS
port (a throwaway CA from tests/fakes/throwaway_ca.py, `ca_path`), and can be started with an ACL file
(`aclfile=True`) to test `ACL SAVE`.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.throwaway_ca import make_throwaway_tls
from tests.servers.processes import HOST, free_port, process_status, start_on_free_ports, terminate
from tests.servers.watch import ServerUnavailable, WatchedServer, watched

try:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry
except ImportError:  # without the dev extra the whole suite must still import: the fixture reports it instead
    redis = None  # type: ignore[assignment]


def sha256_hex(password: str) -> str:
    return hashlib.sha256(password.encode("utf-8")).hexdigest()


@dataclass
class RedisServer(WatchedServer):
    """A running throwaway redis-server. Create it with `RedisServer.start()`, end it with `stop()`."""

    label = "Redis"

    root: Path
    port: int
    tls_port: int
    default_password: str = field(repr=False)
    ca_path: Path
    aclfile: Path | None = None
    host: str = HOST
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _stopped: bool = field(default=False, repr=False)

    @property
    def log_path(self) -> Path:
        return self.root / "redis.log"

    @classmethod
    def start(cls, *, aclfile: bool = False) -> RedisServer:
        if redis is None:
            raise ServerUnavailable("redis-py is not installed (pip install -e '.[dev]')")
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServerUnavailable("redis-server is not on PATH (install the redis-server package)")
        root = Path(tempfile.mkdtemp(prefix="rotator-redis-"))
        (root / "tls").mkdir()
        tls = make_throwaway_tls(root / "tls")
        cert_path, key_path = tls.server_cert, tls.server_key
        server = cls(
            root=root, port=0, tls_port=0, default_password=secrets.token_urlsafe(18), ca_path=tls.ca_cert,
            aclfile=root / "users.acl" if aclfile else None,
        )  # fmt: skip
        try:

            def attempt() -> None:
                server.port, server.tls_port = free_port(), free_port()
                server._run(binary, cert_path, key_path)

            start_on_free_ports(attempt, what="redis-server")
        except BaseException:
            server.stop()
            raise
        return server

    def _run(self, binary: str, cert: Path, key: Path) -> None:
        cmd = [
            binary, "--port", str(self.port), "--bind", HOST, "--save", "", "--appendonly", "no",
            "--dir", str(self.root), "--logfile", str(self.log_path),
            "--tls-port", str(self.tls_port), "--tls-cert-file", str(cert), "--tls-key-file", str(key),
            "--tls-ca-cert-file", str(self.ca_path), "--tls-auth-clients", "no",
            "--slowlog-log-slower-than", "0", "--slowlog-max-len", "10000",
        ]  # fmt: skip
        if self.aclfile is not None:
            # The default user is defined in the ACL file (requirepass would be reset when the file loads).
            self.aclfile.write_text(f"user default on #{sha256_hex(self.default_password)} ~* &* +@all\n")
            cmd += ["--aclfile", str(self.aclfile)]
        else:
            cmd += ["--requirepass", self.default_password]
        self.process = subprocess.Popen(
            cmd, cwd=self.root, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                raise RuntimeError(self.tail_log())
            try:
                with contextlib.closing(self.admin()) as client:
                    client.ping()
                return
            except redis.exceptions.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not answer within 30 s:\n{self.tail_log()}")

    def exit_status(self) -> str | None:
        return process_status(self.process)

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        terminate(self.process)
        shutil.rmtree(self.root, ignore_errors=True)

    # -- clients -----------------------------------------------------------------------------------------------

    def admin(self) -> redis.Redis:
        """The `default` user with its password, over plain TCP."""
        return self.client("default", self.default_password)

    def client(self, user: str, password: str, *, tls: bool = False) -> redis.Redis:
        extra: dict[str, Any] = (
            {"ssl": True, "ssl_ca_certs": str(self.ca_path), "ssl_check_hostname": True} if tls else {}
        )
        return redis.Redis(
            host=self.host, port=self.tls_port if tls else self.port, username=user, password=password,
            socket_connect_timeout=5, socket_timeout=5, decode_responses=True, single_connection_client=True,
            retry=Retry(NoBackoff(), 0),  # redis-py retries a refused AUTH (a ConnectionError) by default
            **extra,
        )  # fmt: skip

    def can_login(self, user: str, password: str, *, tls: bool = False) -> bool:
        """Whether AUTH `user` `password` then PING works. Only a refusal (WRONGPASS) is False."""
        try:
            with contextlib.closing(self.client(user, password, tls=tls)) as client:
                return bool(client.ping())
        except redis.exceptions.AuthenticationError:
            return False

    def command(self, *args: Any) -> Any:
        with contextlib.closing(self.admin()) as client:
            return client.execute_command(*args)

    # -- ACL users ---------------------------------------------------------------------------------------------

    def make_user(self, name: str, *passwords: str, rules: str = "~* &* +@all") -> None:
        """(Re)create the ACL user, enabled, with these passwords (sent hashed) and rules."""
        self.command("ACL", "DELUSER", name)
        hashed = [f"#{sha256_hex(p)}" for p in passwords]
        self.command("ACL", "SETUSER", name, "reset", "on", *hashed, *rules.split())

    def drop_user(self, name: str) -> None:
        self.command("ACL", "DELUSER", name)

    def password_hashes(self, name: str) -> set[str] | None:
        """The user's password hashes (ACL GETUSER), or None when there is no such user."""
        with contextlib.closing(self.admin()) as client:
            info = client.acl_getuser(name)
        return None if info is None else set(info.get("passwords") or [])

    def slowlog_text(self) -> str:
        """Every command the server logged (slowlog-log-slower-than 0 logs them all), one per line."""
        with contextlib.closing(self.admin()) as client:
            entries = client.slowlog_get(10000)
        return "\n".join(
            e["command"].decode("utf-8", "replace") if isinstance(e["command"], bytes) else str(e["command"])
            for e in entries
        )

    def secret(self, username: str, password: str, **extra: Any) -> dict[str, Any]:
        """A secret value (host, port, username, password) pointing at this server's plain TCP port."""
        value: dict[str, Any] = {"host": self.host, "port": self.port, "username": username, "password": password}
        value.update(extra)
        return value


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A throwaway redis-server for the whole session: requirepass for `default`, ACL users, a TLS port; watched."""
    with watched("redis_server", RedisServer.start, RedisServer.stop) as server:
        yield server
