"""The test servers are watched: a test that needs a server which has died fails at once with the server's log tail,
and the log is kept, instead of every later test going red with "connection refused" and the log going away with
the server's temporary directory.

Each server class (PgServer, MariaDbServer, RedisServer, VaultServer, MotoServer) is a `WatchedServer`: it says
whether it still runs (`exit_status`) and where its log is. Its session fixture starts it through `watched(...)`,
which registers it under the fixture's name for the session. This module is a pytest plugin (tests/conftest.py
lists it in `pytest_plugins`) with two hooks:

- before a test's fixtures are set up, every watched server among the fixtures it needs (directly or through
  another fixture) is checked: a dead one fails the test's setup with the server's exit status and log tail;
- when a test fails in any phase while a server it needs is dead, the report gets a section with the same text,
  so the test during which the server died says so too.

The first time a server is found dead its log is copied to a directory that outlives the session (``ROTATOR_TEST_LOGS``,
else ``<temp dir>/rotator-test-logs``) and the message names the copy.

A server whose binaries are missing skips its tests on a developer's machine, but fails them in CI (env CI set): a
green CI run must mean the tests really ran (`unavailable`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ClassVar, TypeVar

import pytest

__all__ = [
    "ServerUnavailable",
    "WatchedServer",
    "dead_servers",
    "kept_logs_dir",
    "unavailable",
    "watched",
]

TAIL_LINES = 40


class ServerUnavailable(RuntimeError):
    """The server's binaries (or its client library) are missing: its fixture skips, or fails in CI."""


def unavailable(reason: str) -> None:
    """Skip on a developer's machine, fail in CI (env CI set)."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this fails instead of skipping)", pytrace=False)
    pytest.skip(reason)


def kept_logs_dir() -> Path:
    return Path(os.environ.get("ROTATOR_TEST_LOGS") or Path(tempfile.gettempdir()) / "rotator-test-logs")


class WatchedServer:
    """What a test server tells the watch. Subclasses set `label` and implement `exit_status` and `log_path`."""

    label: ClassVar[str] = "test"  # "PostgreSQL", "MariaDB", ...
    _death: str | None = None  # the message, once the server was found dead (and its log kept)

    @property
    def log_path(self) -> Path | None:
        raise NotImplementedError

    def exit_status(self) -> str | None:
        """None while the server runs; else how it ended ("exited with code -9")."""
        raise NotImplementedError

    def tail_log(self, lines: int = TAIL_LINES) -> str:
        path = self.log_path
        if path is None:
            return ""
        try:
            text = path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def death(self, fixture: str) -> str | None:
        """None while the server runs; else the failure message (the exit status, where the log is kept, its tail).
        The log is copied the first time."""
        if self._death is not None:
            return self._death
        status = self.exit_status()
        if status is None:
            return None
        kept = self._keep_log(fixture)
        where = f"its log is kept at {kept}" if kept else "it left no log"
        tail = self.tail_log()
        self._death = (
            f"the {self.label} test server of fixture {fixture!r} {status}; every test that needs it fails from now "
            f"on. {where}; it ends:\n{tail or '(empty)'}"
        )
        return self._death

    def _keep_log(self, fixture: str) -> Path | None:
        path = self.log_path
        if path is None or not path.exists():
            return None
        directory = kept_logs_dir()
        directory.mkdir(parents=True, exist_ok=True)
        kept = directory / f"{fixture}-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{path.name}"
        shutil.copyfile(path, kept)
        return kept


_WATCHED: dict[str, WatchedServer] = {}
S = TypeVar("S", bound=WatchedServer)


@contextlib.contextmanager
def watched(fixture: str, start: Callable[[], S], stop: Callable[[S], None]) -> Iterator[S]:
    """Start a server for a session fixture named `fixture` (unavailable: skip, or fail in CI), watch it while the
    fixture lasts, stop it at the end."""
    try:
        server = start()
    except ServerUnavailable as exc:
        unavailable(str(exc))
        raise AssertionError("unreachable") from None
    _WATCHED[fixture] = server
    try:
        yield server
    finally:
        _WATCHED.pop(fixture, None)
        stop(server)


def dead_servers(fixtures: Iterator[str] | list[str]) -> list[str]:
    """The failure messages of the watched servers among `fixtures` that are dead."""
    found = []
    for name in fixtures:
        server = _WATCHED.get(name)
        message = server.death(name) if server is not None else None
        if message is not None:
            found.append(message)
    return found


# -- the pytest hooks ------------------------------------------------------------------------------------------


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    dead = dead_servers(list(getattr(item, "fixturenames", ())))
    if dead:
        pytest.fail("\n\n".join(dead), pytrace=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if not report.failed:
        return
    dead = dead_servers(list(getattr(item, "fixturenames", ())))
    if dead and not any(message in str(report.longrepr) for message in dead):
        report.sections.append(("dead test server", "\n\n".join(dead)))
