"""Fixtures of the integration tests beyond the real servers' (tests/servers/fixtures.py)."""

from tests.integration.daemon_process import shared_journal  # noqa: F401 (registered here as a fixture)
