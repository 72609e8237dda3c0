"""pytest fixtures for the real servers in tests/servers/, registered by tests/conftest.py.

A server whose binaries are missing skips its tests on a developer's machine, but fails them in CI (env CI set):
a green CI run must mean the tests really ran.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.servers.postgres import PgServer, ServerUnavailable

__all__ = ["pg_server"]


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this fails instead of skipping)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A throwaway PostgreSQL cluster for the whole session: scram-sha-256 over TCP, log_statement=all."""
    try:
        server = PgServer.start()
    except ServerUnavailable as exc:
        _unavailable(str(exc))
        raise AssertionError("unreachable") from None
    try:
        yield server
    finally:
        server.stop()


from tests.servers.mariadb import *  # noqa: E402, F403

__all__ += ["mariadb_server"]  # noqa: F405 (a star import does not extend this module's __all__)
from tests.servers.aws import *  # noqa: E402, F403
from tests.servers.vault import *  # noqa: E402, F403

# star imports do not extend this module's __all__
__all__ += ["_openbao_session", "moto_server", "vault_fake", "vault_server"]  # noqa: F405
from tests.servers.redis import *  # noqa: E402, F403

__all__ += ["redis_server"]  # noqa: F405 (a star import does not extend this module's __all__)
