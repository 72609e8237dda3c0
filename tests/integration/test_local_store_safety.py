"""The local store keeps its data: `rotator init` never makes a new key for versions another key encrypted, and a
missing, empty, truncated or corrupt database, or a key that does not decrypt it, is named with its recovery
(exit 2) instead of an "unexpected DatabaseError", a silently recreated empty store, or a new key.

Every scenario runs the real `rotator` command (tests/cli_env.py) on a real store that `init` made and `store put`
filled, then breaks it as a disk, an operator or a restore from backup would.
"""

from __future__ import annotations

import base64
import os
import secrets
import sqlite3
from pathlib import Path

import pytest

from rotator.components import ComponentSetup
from rotator.errors import StoreError
from rotator.local_store import LocalStore, create_key_file
from tests.cli_env import CliEnv, Result

CONFIG = """
[rotator]
state_dir = "state"

[[plans]]
id = "signing-key"
plugin = "generated"
secret = "app/signing-key"
"""
VALUE = {"value": "s3cret-signing-key-" + "x" * 30}


@pytest.fixture
def cli(tmp_path: Path) -> CliEnv:
    config = tmp_path / "rotator.toml"
    config.write_text(CONFIG)
    env = CliEnv(tmp_path, config)
    assert env.run("init").code == 0
    # Big enough (about 40 pages) that damage in the middle of the file hits data, not only the header.
    env.seed("app/filler", {"value": secrets.token_urlsafe(120_000)})
    env.seed("app/signing-key", VALUE)
    return env


def state(cli: CliEnv, name: str) -> Path:
    return cli.root / "state" / name


def assert_named(result: Result, code: int, *words: str) -> None:
    assert result.code == code, result.stdout + result.stderr
    text = result.stderr
    for word in words:
        assert word in text, f"{word!r} not in {text!r}"
    assert "unexpected" not in text and "Traceback" not in text
    assert VALUE["value"] not in result.stdout + result.stderr


def test_init_makes_the_store_database_and_keeps_both(cli: CliEnv, tmp_path: Path) -> None:
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "rotator.toml").write_text(CONFIG)
    result = CliEnv(fresh, fresh / "rotator.toml").run("init", "--json")
    assert result.code == 0, result.stderr
    assert result.json()["stores_created"] == [str(fresh / "state" / "store.db")]
    assert (fresh / "state" / "store.db").stat().st_size > 0  # the database exists before any `store put`
    key, db = state(cli, "store.key").read_bytes(), state(cli, "store.db").read_bytes()
    again = cli.run("init", "--json")
    assert again.code == 0 and again.json()["keys_created"] == [] and again.json()["stores_created"] == []
    assert state(cli, "store.key").read_bytes() == key and cli.run("store", "get", "app/signing-key").json() == VALUE
    assert len(db) > 0


def test_init_refuses_a_new_key_for_stored_versions(cli: CliEnv) -> None:
    database = state(cli, "store.db").read_bytes()
    state(cli, "store.key").unlink()  # lost, or not restored with the database
    result = cli.run("init")
    assert_named(result, 2, str(state(cli, "store.key")), "2 encrypted versions", "restore", "key_env")
    assert not state(cli, "store.key").exists(), "no new key was made"
    assert state(cli, "store.db").read_bytes() == database
    # Every other command says the same, not "run rotator init".
    get = cli.run("store", "get", "app/signing-key")
    assert_named(get, 2, "does not exist, but", "2 encrypted versions", "will not make one")


def test_a_key_that_does_not_decrypt_the_store(cli: CliEnv) -> None:
    key_path = state(cli, "store.key")
    key_path.write_text(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")  # another store's key
    wrong = key_path.read_bytes()
    for command in (("store", "get", "app/signing-key"), ("init",), ("rotate-now", "signing-key")):
        result = cli.run(*command)
        assert_named(result, 2, str(key_path), "does not decrypt", str(state(cli, "store.db")), "restore the key")
    assert key_path.read_bytes() == wrong, "init kept the key it was given"


def test_a_missing_database_beside_its_key_is_reported_then_init_makes_an_empty_one(cli: CliEnv) -> None:
    state(cli, "store.db").unlink()
    for suffix in ("-wal", "-shm"):
        state(cli, f"store.db{suffix}").unlink(missing_ok=True)
    for command in (("store", "get", "app/signing-key"), ("store", "put", "x", "--file", "-")):
        result = cli.run(*command, stdin="{}")
        assert_named(result, 2, str(state(cli, "store.db")), "does not exist, but its key", "restore")
    assert not state(cli, "store.db").exists(), "nothing recreated it silently"
    init = cli.run("init")
    assert init.code == 0 and "was missing beside an existing key" in init.stderr
    assert cli.run("store", "get", "app/signing-key").code == 2  # an empty store: the secret is not there


def _garbage_in_the_middle(path: Path) -> None:
    size = path.stat().st_size
    with path.open("r+b") as handle:
        handle.seek(8192)
        handle.write(os.urandom(size - 8192))


def _truncated(path: Path) -> None:
    with path.open("r+b") as handle:
        handle.truncate(4096)


def _emptied(path: Path) -> None:
    path.write_bytes(b"")


def _not_a_database(path: Path) -> None:
    path.write_text("this is a backup log, not a database\n" * 200)


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (_garbage_in_the_middle, ["cannot be read", "corrupt or truncated"]),
        (_truncated, ["cannot be read", "malformed"]),
        (_emptied, ["is empty (0 bytes)"]),
        (_not_a_database, ["cannot be read"]),
    ],
    ids=["garbage", "truncated", "empty", "not-a-database"],
)
def test_a_damaged_database_is_named_with_the_recovery(cli: CliEnv, damage: object, words: list[str]) -> None:
    cli.run("status")  # a command that does not open the store checkpoints nothing: the WAL stays as it is
    db = sqlite3.connect(state(cli, "store.db"))
    db.execute("pragma wal_checkpoint(truncate)")  # everything in the main file, so that damaging it counts
    db.close()
    damage(state(cli, "store.db"))  # type: ignore[operator]
    key = state(cli, "store.key").read_bytes()
    for command in (("store", "get", "app/signing-key"), ("rotate-now", "signing-key"), ("init",)):
        result = cli.run(*command)
        assert_named(result, 2, str(state(cli, "store.db")), *words, "restore", "fix:")
    assert state(cli, "store.key").read_bytes() == key


def test_init_checks_every_store_before_creating_anything(tmp_path: Path) -> None:
    """Two local stores: `b`'s key is lost beside its versions; init refuses and does not make `a`'s key either."""
    root = tmp_path
    (root / "rotator.toml").write_text(
        '[stores.a]\ntype = "local"\npath = "a/store.db"\nkey_file = "a/store.key"\n'
        '[stores.b]\ntype = "local"\npath = "b/store.db"\nkey_file = "b/store.key"\n'
    )
    env = CliEnv(root, root / "rotator.toml")
    # `b` holds a version, encrypted with a key that is then lost.
    create_key_file(root / "lost.key")
    setup = ComponentSetup(name="b", config_dir=root, state_dir=root / "state")
    made = LocalStore({"path": "b/store.db", "key_file": "lost.key"}, setup, create=True)
    made.put_current("app/x", {"password": "p" * 20})
    made.close()
    (root / "lost.key").unlink()
    result = env.run("init")
    assert_named(result, 2, "stores.b", str(root / "b" / "store.key"), "1 encrypted versions")
    assert not (root / "a" / "store.key").exists() and not (root / "state").exists()


def test_init_with_key_env_unset_creates_nothing(tmp_path: Path) -> None:
    (tmp_path / "rotator.toml").write_text('[stores.local]\ntype = "local"\nkey_env = "STORE_KEY_NOT_SET"\n')
    result = CliEnv(tmp_path, tmp_path / "rotator.toml").run("init")
    assert_named(result, 2, "stores.local.key_env", "STORE_KEY_NOT_SET is not set")
    assert not (tmp_path / "state").exists()


def test_a_database_failure_after_open_is_a_store_error_naming_the_file(tmp_path: Path) -> None:
    """Damage that SQLite meets only on a later read (the pages were fine at open) fails that read with a
    StoreError (exit 1: the run fails and rolls back) naming the file and the recovery."""
    create_key_file(tmp_path / "store.key")
    store = LocalStore({}, ComponentSetup(name="local", config_dir=tmp_path, state_dir=tmp_path), create=True)
    store.put_current("app/x", {"password": "p" * 20})
    (tmp_path / "other.db").write_text("not sqlite at all\n" * 100)
    store._db.close()
    store._db = sqlite3.connect(tmp_path / "other.db", isolation_level=None, check_same_thread=False)  # what it meets
    with pytest.raises(StoreError) as caught:
        store.get("app/x")
    assert str(tmp_path / "store.db") in str(caught.value) and "restore" in str(caught.value)
    assert caught.value.exit_code == 1
