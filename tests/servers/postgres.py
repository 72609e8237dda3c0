"""A throwaway PostgreSQL cluster for tests: initdb and pg_ctl on a free port, in a temporary directory.

Local (Unix socket) connections use trust and are only used by the fixture itself, as superuser, to set things
up and look at them. Everything a test checks about a password goes over TCP to 127.0.0.1, where pg_hba says
scram-sha-256: a wrong password really fails (see /work/shared/TEST-SERVERS.md).

The server runs with `log_statement=all`, so `log_text()` shows every statement any client sent; tests use it to
prove that a plaintext password never reaches the server. For the same reason the fixture itself never sends
a plaintext password: it sends SCRAM verifiers computed on the client, like the plugin does.

As root, initdb and postgres refuse to run: the temporary directory is given to the `postgres` user and the
commands run through `runuser -u postgres --`.
"""

from __future__ import annotations

import base64
import contextlib
import glob
import hashlib
import hmac
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.servers.processes import HOST, free_port, start_on_free_ports
from tests.servers.watch import ServerUnavailable, WatchedServer, watched

SUPERUSER = "postgres"


def find_pg_bin() -> Path:
    """The directory holding initdb and pg_ctl: from PATH, else Debian's newest /usr/lib/postgresql/N/bin."""
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).resolve().parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0,
    )
    if candidates:
        return Path(candidates[-1]).parent
    raise ServerUnavailable("initdb is not on PATH (install PostgreSQL's server package)")


def scram_verifier(conn: psycopg.Connection[Any], password: str, username: str) -> str:
    """A SCRAM-SHA-256 verifier computed by libpq on the client, so no plaintext is ever sent to the server."""
    return conn.pgconn.encrypt_password(password.encode(), username.encode(), b"scram-sha-256").decode()


def scram_matches(verifier: str, password: str) -> bool:
    """True when the SCRAM-SHA-256 verifier (as in pg_authid.rolpassword) was made from `password`.

    Format: `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (base64 parts, RFC 5802/7677).
    SaltedPassword = PBKDF2-HMAC-SHA256(password, salt, iterations); ClientKey = HMAC(SaltedPassword, "Client Key");
    StoredKey = SHA256(ClientKey); ServerKey = HMAC(SaltedPassword, "Server Key").
    SASLprep is skipped: PostgreSQL leaves an all-ASCII password unchanged, and generated passwords are ASCII.
    """
    try:
        mechanism, params, keys = verifier.split("$")
        iterations_text, salt_b64 = params.split(":")
        stored_b64, server_b64 = keys.split(":")
    except ValueError:
        return False
    if mechanism != "SCRAM-SHA-256":
        return False
    salt = base64.b64decode(salt_b64)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, int(iterations_text))
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    return hmac.compare_digest(stored_key, base64.b64decode(stored_b64)) and hmac.compare_digest(
        server_key, base64.b64decode(server_b64)
    )


@dataclass
class PgServer(WatchedServer):
    """A running throwaway cluster. Create it with `PgServer.start()`, end it with `stop()`."""

    label = "PostgreSQL"

    root: Path
    bindir: Path
    port: int
    superuser_password: str
    run_as: str | None  # "postgres" when we are root, else None
    host: str = HOST
    superuser: str = SUPERUSER
    _stopped: bool = field(default=False, repr=False)
    _options: tuple[str, ...] = field(default=(), repr=False)

    # -- life cycle --------------------------------------------------------------------------------------------

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def sockdir(self) -> Path:
        return self.root / "sock"

    @property
    def log_path(self) -> Path:
        return self.root / "server.log"

    @classmethod
    def start(cls, *, extra_options: tuple[str, ...] = ()) -> PgServer:
        bindir = find_pg_bin()
        run_as: str | None = None
        if os.geteuid() == 0:
            if shutil.which("runuser") is None:
                raise ServerUnavailable("running as root but `runuser` is not on PATH")
            try:
                pwd.getpwnam(SUPERUSER)
            except KeyError:
                raise ServerUnavailable("running as root but there is no `postgres` user to run the server") from None
            run_as = SUPERUSER
        root = Path(tempfile.mkdtemp(prefix="rotator-pg-"))
        (root / "sock").mkdir()
        if run_as:
            entry = pwd.getpwnam(run_as)
            for path in (root, root / "sock"):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        server = cls(
            root=root,
            bindir=bindir,
            port=0,
            superuser_password=base64.urlsafe_b64encode(os.urandom(18)).decode(),
            run_as=run_as,
        )
        try:
            server._initdb()

            def attempt() -> None:
                server.port = free_port()
                server._pg_ctl_start(extra_options)

            start_on_free_ports(
                attempt,
                what="pg_ctl start",
                failures=(subprocess.CalledProcessError,),
                describe=lambda exc: server.tail_log() or str(exc),
            )
            with server.admin_conn() as conn:
                conn.execute(
                    sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                        sql.Identifier(SUPERUSER),
                        sql.Literal(scram_verifier(conn, server.superuser_password, SUPERUSER)),
                    )
                )
        except BaseException:
            server.stop()
            raise
        return server

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = [str(a) for a in args]
        if self.run_as:
            cmd = ["runuser", "-u", self.run_as, "--", *cmd]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = env["LANG"] = "C"  # English server messages, whatever the host's locale
        return subprocess.run(cmd, cwd=self.root, env=env, check=True, capture_output=True, text=True, timeout=120)

    def _initdb(self) -> None:
        try:
            self._run(
                str(self.bindir / "initdb"),
                "-D", str(self.datadir),
                "-U", SUPERUSER,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--no-sync",
                "-E", "UTF8",
            )  # fmt: skip
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(f"initdb failed:\n{exc.stdout}\n{exc.stderr}") from None

    def _pg_ctl_start(self, extra_options: tuple[str, ...]) -> None:
        self._options = extra_options
        options = [
            f"-p {self.port}",
            f"-k {self.sockdir}",
            "-c listen_addresses=127.0.0.1",
            "-c max_connections=300",
            "-c fsync=off",
            "-c synchronous_commit=off",
            "-c full_page_writes=off",
            "-c log_statement=all",
            "-c log_min_error_statement=error",
            "-c password_encryption=scram-sha-256",
            *extra_options,
        ]
        self._run(
            str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-l", str(self.log_path), "-w", "-t", "60",
            "-o", " ".join(options), "start",
        )  # fmt: skip

    def restart(self, mode: str = "immediate", *, down_seconds: float = 0.0) -> None:
        """`pg_ctl restart -m <mode>` with the options it was started with: with "immediate", every backend is
        killed at once (no checkpoint) and the server recovers from its WAL, as after a crash. With
        `down_seconds`, it stays stopped that long (connections refused) before it starts again."""
        pg_ctl = str(self.bindir / "pg_ctl")
        try:
            if not down_seconds:
                self._run(
                    pg_ctl, "-D", str(self.datadir), "-l", str(self.log_path), "-m", mode, "-w", "-t", "60", "restart"
                )
                return
            self._run(pg_ctl, "-D", str(self.datadir), "-m", mode, "-w", "-t", "60", "stop")
            time.sleep(down_seconds)
            self._pg_ctl_start(self._options)
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(f"pg_ctl restart failed:\n{self.tail_log() or exc.stderr}") from None

    def exit_status(self) -> str | None:
        """pg_ctl runs the postmaster detached: it is alive while the pid its postmaster.pid names is."""
        try:
            pid = int((self.datadir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return "is not running (no postmaster.pid)"
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            return f"is gone (postmaster pid {pid} no longer exists)"
        except OSError:  # no /proc here: ask the kernel whether the pid exists
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return f"is gone (postmaster pid {pid} no longer exists)"
            except PermissionError:  # it exists, as another user
                pass
            return None
        # A killed postmaster is reparented, not our child: where nobody reaps it, it stays a zombie ("Z").
        if stat.rpartition(")")[2].split()[0] == "Z":
            return f"is gone (postmaster pid {pid} exited)"
        return None

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if (self.datadir / "postmaster.pid").exists():
            with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
                self._run(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    # -- connections -------------------------------------------------------------------------------------------

    def admin_conn(self, dbname: str = "postgres") -> psycopg.Connection[Any]:
        """Superuser over the Unix socket (trust): for setting up and inspecting, never for a password check."""
        return psycopg.connect(host=str(self.sockdir), port=self.port, user=SUPERUSER, dbname=dbname, autocommit=True)

    def tcp_conn(self, user: str, password: str, dbname: str = "postgres") -> psycopg.Connection[Any]:
        """A TCP connection to 127.0.0.1: SCRAM checks the password."""
        return psycopg.connect(
            host=self.host, port=self.port, user=user, password=password, dbname=dbname,
            sslmode="disable", connect_timeout=5, autocommit=True,
        )  # fmt: skip

    def can_login(self, user: str, password: str, dbname: str = "postgres") -> bool:
        """Whether `user` can log in over TCP with `password`. Only an authentication refusal is False."""
        try:
            with self.tcp_conn(user, password, dbname) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.OperationalError as exc:
            if is_auth_failure(exc):
                return False
            raise

    # -- roles -------------------------------------------------------------------------------------------------

    def make_role(
        self, name: str, password: str | None, *, superuser: bool = False, createrole: bool = False, login: bool = True
    ) -> None:
        """Create the role (or reset an existing one) with these attributes and password (as a verifier)."""
        attrs = [
            "SUPERUSER" if superuser else "NOSUPERUSER",
            "CREATEROLE" if createrole else "NOCREATEROLE",
            "LOGIN" if login else "NOLOGIN",
        ]
        with self.admin_conn() as conn:
            secret = (
                sql.SQL("PASSWORD {}").format(sql.Literal(scram_verifier(conn, password, name)))
                if password
                else sql.SQL("PASSWORD NULL")
            )
            verb = "ALTER" if self.role_exists(name, conn) else "CREATE"
            conn.execute(
                sql.SQL("{} ROLE {} {} {}").format(
                    sql.SQL(verb), sql.Identifier(name), sql.SQL(" ".join(attrs)), secret
                )
            )

    def drop_role(self, name: str) -> None:
        """Drop the role if it exists, with its privileges and owned objects (DROP OWNED BY)."""
        with self.admin_conn() as conn:
            if self.role_exists(name, conn):
                conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))

    def role_exists(self, name: str, conn: psycopg.Connection[Any] | None = None) -> bool:
        with self._conn(conn) as c:
            return c.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone() is not None

    def rolpassword(self, name: str) -> str | None:
        """The stored verifier from pg_authid (None when the role has no password or does not exist)."""
        with self.admin_conn() as conn:
            row = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (name,)).fetchone()
        return None if row is None else row[0]

    def is_member(self, member: str, group: str) -> bool:
        """Whether `member` is a direct member of `group` (pg_auth_members)."""
        with self.admin_conn() as conn:
            row = conn.execute(
                """SELECT 1 FROM pg_auth_members m
                     JOIN pg_roles r ON r.oid = m.roleid JOIN pg_roles u ON u.oid = m.member
                    WHERE r.rolname = %s AND u.rolname = %s""",
                (group, member),
            ).fetchone()
        return row is not None

    def secret(self, username: str, password: str, **extra: Any) -> dict[str, Any]:
        """A secret value in the AWS sample shape pointing at this server over TCP."""
        value: dict[str, Any] = {
            "engine": "postgres",
            "host": self.host,
            "port": self.port,
            "username": username,
            "password": password,
            "dbname": "postgres",
        }
        value.update(extra)
        return value

    # -- the server log ----------------------------------------------------------------------------------------

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def log_text(self, since: int = 0) -> str:
        """The server log from byte offset `since` (every statement is logged: log_statement=all)."""
        deadline = time.monotonic() + 0.5
        with self.log_path.open("rb") as fh:
            fh.seek(since)
            data = fh.read()
        while time.monotonic() < deadline and not data.endswith(b"\n"):  # the server may be mid-line
            time.sleep(0.05)
            with self.log_path.open("rb") as fh:
                fh.seek(since)
                data = fh.read()
        return data.decode("utf-8", errors="replace")

    @contextlib.contextmanager
    def _conn(self, conn: psycopg.Connection[Any] | None) -> Iterator[psycopg.Connection[Any]]:
        if conn is not None:
            yield conn
        else:
            with self.admin_conn() as own:
                yield own


def is_auth_failure(exc: psycopg.Error) -> bool:
    """A login refused for the credential (wrong password, no such role, not allowed to log in)."""
    if exc.sqlstate in ("28P01", "28000"):
        return True
    text = str(exc)
    return any(
        marker in text
        for marker in ("password authentication failed", "is not permitted to log in", "no pg_hba.conf entry")
    )


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A throwaway PostgreSQL cluster for the whole session: scram-sha-256 over TCP, log_statement=all; watched."""
    with watched("pg_server", PgServer.start, PgServer.stop) as server:
        yield server
