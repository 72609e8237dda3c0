"""The fake Vault (tests/fakes/vault.py) for the whole test session, on a free port of 127.0.0.1.

No Vault server can be had here (see the fake's docstring for what it speaks and what it does not model).
Tests use unique paths; a test that injects faults with `vault_server.fake.fail(...)` scopes them to its own path.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

from tests.servers.aws import unavailable

if TYPE_CHECKING:
    from tests.fakes.vault import FakeVault

__all__ = ["VaultServer", "vault_server"]


@dataclass
class VaultServer:
    fake: FakeVault

    @property
    def url(self) -> str:
        return self.fake.url

    @property
    def root_token(self) -> str:
        return self.fake.root_token


@pytest.fixture(scope="session")
def vault_server() -> Iterator[VaultServer]:
    try:  # the fake needs werkzeug, the store hvac: both come with the dev extra
        import hvac  # noqa: F401

        from tests.fakes.vault import FakeVault
    except ImportError:
        unavailable("werkzeug or hvac is not installed (pip install -e '.[dev]')")
    fake = FakeVault(mounts=("secret", "kv")).serve()
    try:
        yield VaultServer(fake)
    finally:
        fake.stop()
