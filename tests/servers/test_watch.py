"""The watch over the test servers (tests/servers/watch.py): a throwaway server of each kind is killed with SIGKILL,
as a crash would end it, and the failure a test then gets carries the server's exit status and its log tail, and the
log survives the server's temporary directory. Then a whole pytest session (pytester, in a subprocess) shows the
hooks at work: once the session's Redis is killed, the tests that need it fail at setup with its log tail instead of
"connection refused", and a test that fails while it is dead says so in its report."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from tests.servers.mariadb import MariaDbServer
from tests.servers.postgres import PgServer
from tests.servers.redis import RedisServer
from tests.servers.vault import VaultServer
from tests.servers.watch import WatchedServer, dead_servers, watched

ROOT = Path(__file__).resolve().parents[2]
S = TypeVar("S", bound=WatchedServer)


@pytest.fixture(autouse=True)
def _kept_logs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    kept = tmp_path / "kept-logs"
    monkeypatch.setenv("ROTATOR_TEST_LOGS", str(kept))
    return kept


def wait_dead(server: WatchedServer, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while server.exit_status() is None:
        assert time.monotonic() < deadline, f"the {server.label} server did not die"
        time.sleep(0.05)


def kill_process(server: MariaDbServer | RedisServer | VaultServer) -> None:
    assert server.process is not None
    server.process.send_signal(signal.SIGKILL)
    server.process.wait(timeout=30)


def kill_postmaster(server: PgServer) -> None:
    pid = int((server.datadir / "postmaster.pid").read_text().split()[0])
    os.kill(pid, signal.SIGKILL)


def assert_watch_reports_death(
    fixture: str, start: Callable[[], S], stop: Callable[[S], None], kill: Callable[[S], None], kept: Path
) -> None:
    with watched(fixture, start, stop) as server:
        assert server.exit_status() is None
        assert dead_servers([fixture]) == []  # alive: nothing to say
        live_log = server.log_path
        assert live_log is not None
        kill(server)
        wait_dead(server)
        [message] = dead_servers(["some_other_fixture", fixture])
        last_line = live_log.read_text(errors="replace").splitlines()[-1]
        root = live_log.parent
    assert f"the {server.label} test server of fixture {fixture!r}" in message
    assert "exited with code -9" in message or "is gone" in message, message
    assert last_line in message  # the log's tail, as it ended
    assert not root.exists()  # the server's temporary directory went with stop()
    [copy] = kept.iterdir()  # ... but the log is kept, and the message says where
    assert str(copy) in message
    assert copy.read_text(errors="replace").splitlines()[-1] == last_line
    assert dead_servers([fixture]) == []  # no longer watched once its fixture ended


def test_a_killed_redis_is_reported_with_its_log_tail_and_its_log_kept(_kept_logs: Path) -> None:
    assert_watch_reports_death("throwaway_redis", RedisServer.start, RedisServer.stop, kill_process, _kept_logs)


def test_a_killed_mariadb_is_reported_with_its_log_tail_and_its_log_kept(_kept_logs: Path) -> None:
    assert_watch_reports_death("throwaway_mariadb", MariaDbServer.start, MariaDbServer.stop, kill_process, _kept_logs)


def test_a_killed_postgresql_is_reported_with_its_log_tail_and_its_log_kept(_kept_logs: Path) -> None:
    assert_watch_reports_death("throwaway_pg", PgServer.start, PgServer.stop, kill_postmaster, _kept_logs)


def test_a_killed_openbao_is_reported_with_its_log_tail_and_its_log_kept(_kept_logs: Path) -> None:
    assert_watch_reports_death("throwaway_bao", VaultServer.start, VaultServer.stop, kill_process, _kept_logs)


SESSION = """
import os, signal

import redis


def test_1_kills_the_server(redis_server):
    redis_server.process.send_signal(signal.SIGKILL)
    redis_server.process.wait(timeout=30)


def test_2_needs_it(redis_server):
    assert redis_server.admin().ping()


def test_3_needs_it_through_another_fixture(admin_client):
    assert admin_client.ping()


def test_4_does_not_need_it():
    assert True
"""

SESSION_CONFTEST = """
import pytest

pytest_plugins = ["tests.servers.watch", "tests.servers.redis"]


@pytest.fixture
def admin_client(redis_server):
    return redis_server.admin()
"""

DIES_DURING = """
import signal


def test_fails_after_the_server_dies_under_it(redis_server):
    redis_server.process.send_signal(signal.SIGKILL)
    redis_server.process.wait(timeout=30)
    redis_server.admin().ping()  # connection refused
"""


@pytest.fixture
def session(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.Pytester]:
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    pytester.makeconftest(SESSION_CONFTEST)
    yield pytester


def test_a_session_fails_the_tests_that_need_a_dead_server_at_setup(session: pytest.Pytester, _kept_logs: Path):
    session.makepyfile(test_session=SESSION)
    result = session.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly")
    result.assert_outcomes(passed=2, errors=2)  # test_1 and test_4 pass; 2 and 3 never start
    output = result.stdout.str()
    assert output.count("the Redis test server of fixture 'redis_server' exited with code -9") >= 2
    assert "Ready to accept connections" in output  # redis-server's log, in the failure
    assert "Connection refused" not in output and "ConnectionError" not in output
    [copy] = _kept_logs.iterdir()
    assert "Ready to accept connections" in copy.read_text()


def test_a_test_that_fails_while_its_server_is_dead_says_so(session: pytest.Pytester, _kept_logs: Path):
    session.makepyfile(test_dies=DIES_DURING)
    result = session.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    output = result.stdout.str()
    assert "dead test server" in output
    assert "the Redis test server of fixture 'redis_server' exited with code -9" in output
    assert "Ready to accept connections" in output
