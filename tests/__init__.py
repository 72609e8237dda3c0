"""The test suite (a package, so that `tests.servers` can be imported by conftest and test modules)."""
