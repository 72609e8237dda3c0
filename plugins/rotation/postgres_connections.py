"""What makes a PostgreSQL rotation cheap without making it weaker: SCRAM verifiers computed once, on the client,
with their keys kept for the login that tests them, and a small pool of admin connections.

SCRAM-SHA-256 (RFC 5802/7677). A verifier is ``SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`` where
SaltedPassword = PBKDF2-HMAC-SHA256(password, salt, iterations), ClientKey = HMAC(SaltedPassword, "Client Key"),
StoredKey = SHA256(ClientKey), ServerKey = HMAC(SaltedPassword, "Server Key"). A client logging in derives
SaltedPassword from the password and the salt the server sends: PBKDF2 is the whole cost of a SCRAM login on the
client (4096 rounds of HMAC). Having just made the verifier, we hold ClientKey and ServerKey already; libpq 18 takes
them as connection parameters (``scram_client_key``, ``scram_server_key``), so the test login proves the new
password's verifier at the server without deriving it again. It proves exactly what a password login would: the
server holds a verifier made from this password (a consumer's libpq derives the same keys from the same salt).
Keys are kept in memory only, for the plugin's life, and only for passwords this process generated and staged;
where they are missing (another process staged it) or refused, the login falls back to the password.

Passwords outside ASCII are hashed by libpq (PostgreSQL SASLpreps them first); generated ones are ASCII.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg

SCRAM_ITERATIONS = 4096  # PostgreSQL's default (scram_iterations); a 32-character random password gains nothing more
LIBPQ_TAKES_SCRAM_KEYS = psycopg.pq.version() >= 180000
_MAX_KEPT = 4096


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass(frozen=True)
class ScramKeys:
    client_key: str  # base64, as libpq's scram_client_key
    server_key: str  # base64, as libpq's scram_server_key


class ScramKeyring:
    """Verifiers for (role, password), and the keys of the ones this process made, newest kept."""

    def __init__(self, iterations: int = SCRAM_ITERATIONS) -> None:
        self.iterations = iterations
        self._lock = threading.Lock()
        self._keys: OrderedDict[bytes, ScramKeys] = OrderedDict()

    @staticmethod
    def _slot(user: str, password: str) -> bytes:
        return hashlib.sha256(user.encode() + b"\0" + password.encode()).digest()

    def verifier(self, user: str, password: str) -> str | None:
        """A new verifier (fresh salt) for an ASCII password, its keys kept for `keys`; None for another password
        (libpq must SASLprep it: see the module docstring)."""
        if not password.isascii():
            return None
        salt = secrets.token_bytes(16)
        salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, self.iterations)
        client_key = hmac.new(salted, b"Client Key", "sha256").digest()
        server_key = hmac.new(salted, b"Server Key", "sha256").digest()
        stored_key = hashlib.sha256(client_key).digest()
        with self._lock:
            self._keys[self._slot(user, password)] = ScramKeys(_b64(client_key), _b64(server_key))
            self._keys.move_to_end(self._slot(user, password))
            while len(self._keys) > _MAX_KEPT:
                self._keys.popitem(last=False)
        return f"SCRAM-SHA-256${self.iterations}:{_b64(salt)}${_b64(stored_key)}:{_b64(server_key)}"

    def keys(self, user: str, password: str) -> ScramKeys | None:
        """The keys of the verifier this process made last for (user, password), when libpq can use them."""
        if not LIBPQ_TAKES_SCRAM_KEYS:
            return None
        with self._lock:
            return self._keys.get(self._slot(user, password))

    def forget(self, user: str, password: str) -> None:
        with self._lock:
            self._keys.pop(self._slot(user, password), None)


class ConnectionPool:
    """Idle admin connections by login, reused across rotations of plans on the same server (alternating users,
    or single-user with an admin): one backend and one SCRAM login saved per rotation. A connection is taken by one
    caller at a time, given back only if it is idle and healthy, and dropped after `max_idle` seconds."""

    def __init__(self, *, max_idle_per_login: int = 8, max_idle: float = 60.0) -> None:
        self._lock = threading.Lock()
        self._idle: dict[tuple[Any, ...], list[tuple[float, psycopg.Connection[Any]]]] = {}
        self._max_per_login = max_idle_per_login
        self._max_idle = max_idle

    @contextmanager
    def connection(self, login: tuple[Any, ...], connect: Any) -> Iterator[tuple[psycopg.Connection[Any], bool]]:
        """An idle connection for `login` (reused=True), else a new one from `connect()` (reused=False)."""
        conn, reused = self._take(login), True
        if conn is None:
            conn, reused = connect(), False
        healthy = False
        try:
            yield conn, reused
            healthy = True
        finally:
            if healthy and self._reusable(conn):
                self._give_back(login, conn)
            else:
                conn.close()

    def _take(self, login: tuple[Any, ...]) -> psycopg.Connection[Any] | None:
        now = time.monotonic()
        with self._lock:
            idle = self._idle.get(login, [])
            while idle:
                since, conn = idle.pop()
                if now - since <= self._max_idle and self._reusable(conn):
                    return conn
                conn.close()
        return None

    def _give_back(self, login: tuple[Any, ...], conn: psycopg.Connection[Any]) -> None:
        now = time.monotonic()
        stale: list[psycopg.Connection[Any]] = []
        with self._lock:
            for key, conns in list(self._idle.items()):  # connections of logins no longer used: not kept forever
                stale.extend(c for since, c in conns if now - since > self._max_idle)
                self._idle[key] = [(since, c) for since, c in conns if now - since <= self._max_idle]
            idle = self._idle.setdefault(login, [])
            keep = len(idle) < self._max_per_login
            if keep:
                idle.append((now, conn))
        for old in stale:
            old.close()
        if not keep:
            conn.close()

    @staticmethod
    def _reusable(conn: psycopg.Connection[Any]) -> bool:
        return not conn.closed and not conn.broken and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for _since, conn in conns:
                conn.close()


# One pool per process: every plan's plugin object shares it, so plans on one server share its admin connections.
ADMIN_POOL = ConnectionPool()
