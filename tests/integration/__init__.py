"""Tests against real services started by the fixtures in tests/servers/."""
