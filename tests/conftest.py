"""The test servers' fixtures and the watch over them, as pytest plugins: each module in tests/servers/ defines the
session fixture of its server (pg_server, mariadb_server, redis_server, moto_server, vault_server, vault_fake), and
tests/servers/watch.py fails a test that needs a server which has died, with the server's log tail."""

pytest_plugins = [
    "pytester",  # tests/servers/test_watch.py runs whole sessions to show the watch at work
    "tests.servers.watch",
    "tests.servers.postgres",
    "tests.servers.mariadb",
    "tests.servers.redis",
    "tests.servers.aws",
    "tests.servers.vault",
]
