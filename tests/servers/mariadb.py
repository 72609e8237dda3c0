"""A throwaway MariaDB server for tests: mariadb-install-db and mariadbd on a free port, in a temporary directory.

Recipe from /work/shared/TEST-SERVERS.md. Password auth everywhere (`--skip-grant-tables` is never used): the
install's extra passwordless root accounts (root@127.0.0.1, root@::1, root@<hostname>) are dropped and root@localhost
gets a password, so a TCP login with a wrong password really fails with error 1045. `--skip-name-resolve` keeps
logins fast and makes every TCP client `'user'@'127.0.0.1'`, matched by accounts at host `%`.

The server also speaks TLS with a throwaway CA (tests/fakes/throwaway_ca.py, `ca_path`), so tests can check that
`REQUIRE SSL` is really enforced, and it writes the general query log (`general_log_text()`), which shows every
statement exactly as it arrived: tests use it to prove that the plugin never sends a plaintext password to MariaDB.

The fixture connects as root over TCP, with the root password, never over a trusted socket.
"""

from __future__ import annotations

import contextlib
import os
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
    import pymysql
except ImportError:  # without the dev extra the whole suite must still import: the fixture reports it instead
    pymysql = None  # type: ignore[assignment]

ROOT = "root"


def find_binaries() -> tuple[str, str]:
    if pymysql is None:
        raise ServerUnavailable("PyMySQL is not installed (pip install -e '.[dev]')")
    install = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db")
    server = shutil.which("mariadbd") or shutil.which("mysqld")
    for candidate in ("/usr/sbin/mariadbd", "/usr/sbin/mysqld"):
        if server is None and Path(candidate).exists():
            server = candidate
    if not install or not server:
        raise ServerUnavailable("mariadb-install-db or mariadbd is not on PATH (install the mariadb-server package)")
    return install, server


def quote(name: str) -> str:
    """A backtick-quoted identifier, for the fixture's own SQL (the plugin has its own)."""
    return "`" + name.replace("`", "``") + "`"


def account(user: str, host: str = "%") -> str:
    """`user`@`host`, with '%' doubled: every statement here runs through PyMySQL's %-formatting."""
    return (quote(user) + "@" + quote(host)).replace("%", "%%")


@dataclass
class MariaDbServer(WatchedServer):
    """A running throwaway server. Create it with `MariaDbServer.start()`, end it with `stop()`."""

    label = "MariaDB"

    root: Path
    port: int
    root_password: str = field(repr=False)
    ca_path: Path
    host: str = HOST
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    version: str = ""
    _stopped: bool = field(default=False, repr=False)

    # -- life cycle --------------------------------------------------------------------------------------------

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def socket_path(self) -> Path:
        return self.root / "mariadb.sock"

    @property
    def error_log(self) -> Path:
        return self.root / "error.log"

    @property
    def log_path(self) -> Path:
        return self.error_log

    def exit_status(self) -> str | None:
        return process_status(self.process)

    @property
    def general_log(self) -> Path:
        return self.root / "general.log"

    @classmethod
    def start(cls) -> MariaDbServer:
        install, server_bin = find_binaries()
        root = Path(tempfile.mkdtemp(prefix="rotator-mariadb-"))
        (root / "tls").mkdir()
        tls = make_throwaway_tls(root / "tls")
        cert_path, key_path = tls.server_cert, tls.server_key
        server = cls(root=root, port=0, root_password=secrets.token_urlsafe(18), ca_path=tls.ca_cert)
        try:
            server._install(install)

            def attempt() -> None:
                server.port = free_port()
                server._run_server(server_bin, cert_path, key_path)

            start_on_free_ports(attempt, what="mariadbd")
            server._secure_root()
            with server.admin_conn() as conn, conn.cursor() as cur:
                cur.execute("SELECT VERSION()")
                server.version = str(cur.fetchone()[0])
        except BaseException:
            server.stop()
            raise
        return server

    def _install(self, install: str) -> None:
        cmd = [
            install, "--no-defaults", f"--datadir={self.datadir}", "--user=root",
            "--auth-root-authentication-method=normal", "--skip-test-db", "--skip-name-resolve",
        ]  # fmt: skip
        if os.geteuid() != 0:
            cmd.remove("--user=root")
        try:
            subprocess.run(cmd, cwd=self.root, check=True, capture_output=True, text=True, timeout=120)
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(f"mariadb-install-db failed:\n{exc.stdout}\n{exc.stderr}") from None

    def _run_server(self, server_bin: str, cert: Path, key: Path) -> None:
        cmd = [
            server_bin, "--no-defaults", f"--datadir={self.datadir}", f"--port={self.port}",
            f"--bind-address={HOST}", f"--socket={self.socket_path}", f"--pid-file={self.root / 'mariadbd.pid'}",
            f"--log-error={self.error_log}", "--skip-name-resolve", "--skip-log-bin",
            "--general-log=1", f"--general-log-file={self.general_log}",
            f"--ssl-ca={self.ca_path}", f"--ssl-cert={cert}", f"--ssl-key={key}",
            "--innodb-buffer-pool-size=16M", "--innodb-flush-log-at-trx-commit=0", "--innodb-doublewrite=0",
            "--max-connections=300", "--performance-schema=OFF", "--character-set-server=utf8mb4",
        ]  # fmt: skip
        if os.geteuid() == 0:
            cmd.insert(2, "--user=root")
        self.process = subprocess.Popen(
            cmd, cwd=self.root, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                raise RuntimeError(self.tail_log())
            try:
                # Before _secure_root the fresh install's root@localhost has no password (socket only).
                with contextlib.closing(pymysql.connect(unix_socket=str(self.socket_path), user=ROOT, password="")):
                    return
            except pymysql.err.OperationalError:
                time.sleep(0.1)
        raise RuntimeError(f"mariadbd did not answer within 60 s:\n{self.tail_log()}")

    def _secure_root(self) -> None:
        """Drop the passwordless root accounts the install makes, and give root@localhost a password."""
        conn = pymysql.connect(unix_socket=str(self.socket_path), user=ROOT, password="", autocommit=True)
        with contextlib.closing(conn), conn.cursor() as cur:
            cur.execute("SELECT user, host FROM mysql.user WHERE user = 'root' AND host <> 'localhost'")
            for user, host in cur.fetchall():
                cur.execute(f"DROP USER {account(user, host)}", ())
            cur.execute("DELETE FROM mysql.global_priv WHERE user = ''")  # anonymous accounts, if any
            cur.execute("FLUSH PRIVILEGES")
            # Set here, before the tests look at the general log, and never on TCP.
            cur.execute("ALTER USER `root`@`localhost` IDENTIFIED BY %s", (self.root_password,))
            cur.execute(f"CREATE USER {account(ROOT, HOST)} IDENTIFIED BY %s", (self.root_password,))
            cur.execute(f"GRANT ALL PRIVILEGES ON *.* TO {account(ROOT, HOST)} WITH GRANT OPTION", ())
            cur.execute("GRANT PROXY ON ''@'%%' TO `root`@`127.0.0.1` WITH GRANT OPTION", ())

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        terminate(self.process, timeout=30)
        shutil.rmtree(self.root, ignore_errors=True)

    # -- connections -------------------------------------------------------------------------------------------

    def admin_conn(self) -> pymysql.connections.Connection:
        """root over TCP, with root's password: for setting up and inspecting."""
        return pymysql.connect(
            host=self.host, port=self.port, user=ROOT, password=self.root_password, autocommit=True,
            connect_timeout=5, ssl_disabled=True, charset="utf8mb4",
        )  # fmt: skip

    def tcp_conn(self, user: str, password: str, *, tls: bool = False) -> pymysql.connections.Connection:
        """A TCP login as `user`: the server checks the password (and, with tls, the connection is encrypted)."""
        extra: dict[str, Any] = {"ssl_ca": str(self.ca_path), "ssl_verify_identity": True} if tls else {}
        return pymysql.connect(
            host=self.host, port=self.port, user=user, password=password, autocommit=True, connect_timeout=5,
            ssl_disabled=not tls, charset="utf8mb4", **extra,
        )  # fmt: skip

    def can_login(self, user: str, password: str, *, tls: bool = False) -> bool:
        """Whether `user` logs in over TCP with `password`. Only a refusal (1045) is False; other errors raise."""
        try:
            with contextlib.closing(self.tcp_conn(user, password, tls=tls)) as conn, conn.cursor() as cur:
                cur.execute("SELECT 1")
            return True
        except pymysql.err.OperationalError as exc:
            if exc.args and exc.args[0] == 1045:
                return False
            raise

    def execute(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run one statement as root (with PyMySQL's %-formatting: write '%%' for a literal '%')."""
        with contextlib.closing(self.admin_conn()) as conn, conn.cursor() as cur:
            cur.execute(statement, params)
            return list(cur.fetchall())

    # -- accounts ----------------------------------------------------------------------------------------------

    def make_user(self, name: str, password: str, *, host: str = "%", extra: str = "") -> None:
        """Create the account (dropping any old one) with this password; `extra` is appended (REQUIRE ..., WITH ...)."""
        self.drop_user(name, host)
        self.execute(f"CREATE USER {account(name, host)} IDENTIFIED BY %s {extra}", (password,))

    def drop_user(self, name: str, host: str = "%") -> None:
        try:
            self.execute(f"DROP USER IF EXISTS {account(name, host)}")
        except pymysql.err.OperationalError as exc:
            if not exc.args or exc.args[0] != 1470:  # a name too long to exist: nothing to drop
                raise

    def user_exists(self, name: str, host: str = "%") -> bool:
        return bool(self.execute("SELECT 1 FROM mysql.user WHERE user = %s AND host = %s", (name, host)))

    def grants(self, name: str, host: str = "%") -> list[str]:
        """SHOW GRANTS for the account, with the grantee written as `?` (so two accounts' lists compare)."""
        rows = self.execute(f"SHOW GRANTS FOR {account(name, host)}")
        grantee = quote(name) + "@" + quote(host)
        out = []
        for (line,) in rows:
            text = str(line)
            if " IDENTIFIED BY PASSWORD '" in text:  # the hash is not what a comparison is about
                head, _, tail = text.partition(" IDENTIFIED BY PASSWORD '")
                text = head + tail.split("'", 1)[1]
            out.append(text.replace(grantee, "?"))
        return sorted(out)

    def tls_requirement(self, name: str, host: str = "%") -> tuple[str, str, str, str]:
        """(ssl_type, ssl_cipher, x509_issuer, x509_subject) from mysql.user."""
        rows = self.execute(
            "SELECT ssl_type, ssl_cipher, x509_issuer, x509_subject FROM mysql.user WHERE user = %s AND host = %s",
            (name, host),
        )
        assert rows, f"no account {name!r}@{host!r}"
        return tuple(v.decode() if isinstance(v, bytes) else str(v) for v in rows[0])  # type: ignore[return-value]

    def secret(self, username: str, password: str, **extra: Any) -> dict[str, Any]:
        """A secret value in the AWS sample shape pointing at this server over TCP."""
        value: dict[str, Any] = {
            "engine": "mariadb",
            "host": self.host,
            "port": self.port,
            "username": username,
            "password": password,
        }
        value.update(extra)
        return value

    # -- the general query log ---------------------------------------------------------------------------------

    def general_log_size(self) -> int:
        try:
            return self.general_log.stat().st_size
        except FileNotFoundError:
            return 0

    def general_log_text(self, since: int = 0) -> str:
        """The general query log from byte offset `since`: every statement, exactly as the server received it."""
        self.execute("FLUSH GENERAL LOGS")  # writes are buffered per statement; this is a cheap barrier
        with self.general_log.open("rb") as fh:
            fh.seek(since)
            return fh.read().decode("utf-8", errors="replace")


@pytest.fixture(scope="session")
def mariadb_server() -> Iterator[MariaDbServer]:
    """A throwaway MariaDB for the whole session: password auth over TCP, TLS available, general log on; watched."""
    with watched("mariadb_server", MariaDbServer.start, MariaDbServer.stop) as server:
        yield server
