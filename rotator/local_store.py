"""The embedded default store: an SQLite database of versions, each value encrypted with AES-256-GCM.

- The key is 32 random bytes in `store.key` (mode 0600, made by `rotator init`) or, base64, in the environment
  variable named by `key_env`. A key file readable by group or others is refused, as ssh refuses such a key.
- Each ciphertext is bound to its secret id and version id (GCM associated data), so rows cannot be swapped.
- Labels (CURRENT, PENDING, PREVIOUS) live in their own table; `promote` moves them in one transaction.
  Versions that lose every label are deleted, so the file never keeps more secret material than it must.
- Writes are durable (WAL, synchronous=FULL): a value the engine has stored survives a crash or power loss.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import sqlite3
import stat
import threading
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from rotator.components import ComponentSetup
from rotator.errors import ConfigError, SecretNotFound, StoreError, VersionConflict
from rotator.key_files import create_key_file as create_key_file  # the one way keys are made (re-exported)
from rotator.model import Credential, Stage
from rotator.options import Options, parse_options

KEY_FILE_NAME = "store.key"
DB_FILE_NAME = "store.db"

_SCHEMA = """
create table if not exists versions (
    secret_id text not null,
    version_id text not null,
    nonce blob not null,
    ciphertext blob not null,
    created_at text not null,
    primary key (secret_id, version_id)
);
create table if not exists labels (
    secret_id text not null,
    stage text not null,
    version_id text not null,
    primary key (secret_id, stage)
);
"""


class LocalStoreOptions(Options):
    path: str | None = None  # default: <state_dir>/store.db
    key_file: str | None = None  # default: <state_dir>/store.key
    key_env: str | None = None  # name of an environment variable holding the base64 key instead of a file


def _decode_key(text: str, where: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise ConfigError(
            "the local store key is not 32 bytes of base64",
            key=where,
            fix="run `rotator init` to make a key file, or put `openssl rand -base64 32` in the variable",
        )
    return key


_RESTORE = (
    "restore {db} and its key from the same backup (README: backing up the local store); "
    "if it never held a secret, delete it and run `rotator init` to start an empty one"
)


def stored_versions(path: Path) -> int:
    """How many versions the store database at `path` holds (0 when it does not exist), opened without creating
    anything; a ConfigError naming the file when it is not a readable store database."""
    if not path.exists():
        return 0
    try:
        db = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=30)
        try:
            count: int = db.execute("select count(*) from versions").fetchone()[0]
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        raise _unreadable(path, exc) from None
    return count


def _unreadable(path: Path, exc: sqlite3.DatabaseError) -> ConfigError:
    return ConfigError(
        f"the local store database {path} cannot be read: {exc} (corrupt or truncated, or not a store)",
        fix=_RESTORE.format(db=path),
    )


class LocalStore:
    """Type `local`. Options: path, key_file, key_env (see LocalStoreOptions).

    The database is created only when `create` is true; by default, only when the store is not opened for a config
    file (setup.config_file empty: tests, tools). Every command opens it for its config, and there a missing
    database next to an existing key is an error, not a new empty store: `rotator init` creates it. A corrupt
    database, or a key that does not decrypt the stored versions, is a ConfigError (exit 2) naming the file and the
    recovery; a read or write that fails on a database corrupted later is a StoreError (exit 1).
    """

    def __init__(
        self,
        options: Mapping[str, Any] | None = None,
        setup: ComponentSetup | None = None,
        *,
        create: bool | None = None,
    ):
        opts = parse_options(LocalStoreOptions, options)
        setup = setup or ComponentSetup(name="local", config_dir=Path.cwd(), state_dir=Path.cwd() / "state")
        self.path = setup.path(opts.path) if opts.path else setup.state_dir / DB_FILE_NAME
        self.key_source = (
            f"${opts.key_env}"
            if opts.key_env
            else str(setup.path(opts.key_file) if opts.key_file else setup.state_dir / KEY_FILE_NAME)
        )
        self._name = setup.name
        self._aead = AESGCM(self._load_key(opts, setup, self.path))
        self._lock = threading.RLock()
        self._db = self._open(self.path, not setup.config_file if create is None else create)
        self._check_key()

    # -- set-up ---------------------------------------------------------------------------------------------

    @staticmethod
    def _load_key(opts: LocalStoreOptions, setup: ComponentSetup, db_path: Path) -> bytes:
        if opts.key_env:
            value = os.environ.get(opts.key_env)
            if not value:
                raise ConfigError(
                    f"environment variable {opts.key_env} is not set",
                    key=f"stores.{setup.name}.key_env",
                    fix=f"export {opts.key_env}=$(openssl rand -base64 32), or drop key_env to use a key file",
                )
            return _decode_key(value, f"stores.{setup.name}.key_env")
        key_path = setup.path(opts.key_file) if opts.key_file else setup.state_dir / KEY_FILE_NAME
        try:
            mode = key_path.stat().st_mode
        except FileNotFoundError:
            versions = stored_versions(db_path)
            if versions:
                raise ConfigError(
                    f"the local store key {key_path} does not exist, but {db_path} holds {versions} encrypted versions",
                    key=f"stores.{setup.name}",
                    fix=f"restore {key_path} (mode 0600) from your backup, or set key_env to a variable holding the "
                    "key; a new key cannot decrypt them, so `rotator init` will not make one",
                ) from None
            raise ConfigError(
                f"the local store key {key_path} does not exist",
                key=f"stores.{setup.name}",
                fix="run `rotator init` to create it",
            ) from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(
                f"the local store key {key_path} is readable by others (mode {stat.S_IMODE(mode):o})",
                key=f"stores.{setup.name}.key_file",
                fix=f"chmod 600 {key_path}",
            )
        return _decode_key(key_path.read_text(), str(key_path))

    def _open(self, path: Path, create: bool) -> sqlite3.Connection:
        if not path.exists():
            if not create:
                raise ConfigError(
                    f"the local store database {path} does not exist, but its key {self.key_source} does",
                    key=f"stores.{self._name}",
                    fix=f"restore {path} from your backup; for a new, empty store run `rotator init`",
                )
            path.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))  # SQLite gives -wal/-shm the same mode
        elif path.stat().st_size == 0 and not create:
            raise ConfigError(
                f"the local store database {path} is empty (0 bytes): truncated?",
                key=f"stores.{self._name}",
                fix=_RESTORE.format(db=path),
            )
        try:
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
            db.execute("pragma journal_mode=wal")
            db.execute("pragma synchronous=full")
            db.executescript(_SCHEMA)
            problem = db.execute("pragma quick_check(1)").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise _unreadable(path, exc) from None
        if problem != "ok":
            db.close()
            raise _unreadable(path, sqlite3.DatabaseError(problem))
        return db

    def _check_key(self) -> None:
        """The key must decrypt what is stored (one version tried): a wrong key is found at open, not mid-run."""
        row = self._db.execute("select secret_id, version_id, nonce, ciphertext from versions limit 1").fetchone()
        if row is None:
            return
        try:
            self._aead.decrypt(row[2], row[3], f"{row[0]}\0{row[1]}".encode())
        except Exception:
            self._db.close()
            raise ConfigError(
                f"the local store key {self.key_source} does not decrypt the versions in {self.path}",
                key=f"stores.{self._name}",
                fix="restore the key that goes with this database (the same backup), or point key_file or key_env "
                "at it; `rotator init` never replaces an existing key",
            ) from None

    @contextmanager
    def _reading(self) -> Iterator[None]:
        """A database failure after open (corrupted since) as a StoreError naming the file and the recovery."""
        try:
            yield
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                raise StoreError(f"local store {self.path}: {exc}; retry when the other writer is done") from None
            raise StoreError(
                f"local store {self.path}: the database cannot be read or written ({exc}); fix: "
                + _RESTORE.format(db=self.path)
            ) from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- encryption -----------------------------------------------------------------------------------------

    def _seal(self, secret_id: str, version_id: str, value: Mapping[str, Any]) -> tuple[bytes, bytes]:
        nonce = secrets.token_bytes(12)
        plaintext = json.dumps(dict(value), sort_keys=True).encode()
        return nonce, self._aead.encrypt(nonce, plaintext, f"{secret_id}\0{version_id}".encode())

    def _open_value(self, secret_id: str, version_id: str, nonce: bytes, ciphertext: bytes) -> dict[str, Any]:
        try:
            plaintext = self._aead.decrypt(nonce, ciphertext, f"{secret_id}\0{version_id}".encode())
        except Exception:
            raise StoreError(
                f"local store: version {version_id} of {secret_id} does not decrypt with this key "
                "(wrong key file, or the database was tampered with)"
            ) from None
        value: dict[str, Any] = json.loads(plaintext)
        return value

    # -- reads ----------------------------------------------------------------------------------------------

    def _labels(self, secret_id: str) -> dict[str, str]:
        rows = self._db.execute("select stage, version_id from labels where secret_id = ?", (secret_id,))
        return dict(rows.fetchall())

    def _credential(self, secret_id: str, version_id: str, labels: dict[str, str]) -> Credential | None:
        row = self._db.execute(
            "select nonce, ciphertext from versions where secret_id = ? and version_id = ?",
            (secret_id, version_id),
        ).fetchone()
        if row is None:
            return None
        stages = frozenset(Stage(stage) for stage, vid in labels.items() if vid == version_id)
        return Credential(version_id, self._open_value(secret_id, version_id, row[0], row[1]), stages)

    def get(self, secret_id: str, stage: Stage = Stage.CURRENT) -> Credential | None:
        with self._lock, self._reading():
            labels = self._labels(secret_id)
            if not labels:
                raise SecretNotFound(f"local store: no secret named {secret_id!r} (seed it with `rotator store put`)")
            version_id = labels.get(Stage(stage).value)
            return self._credential(secret_id, version_id, labels) if version_id else None

    def get_version(self, secret_id: str, version_id: str) -> Credential | None:
        with self._lock, self._reading():
            return self._credential(secret_id, version_id, self._labels(secret_id))

    def secret_ids(self) -> list[str]:
        with self._lock, self._reading():
            return [r[0] for r in self._db.execute("select distinct secret_id from labels order by 1")]

    # -- writes ---------------------------------------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (callers hold self._lock): committed, or rolled back on any exception."""
        self._db.execute("begin immediate")
        try:
            yield self._db
        except BaseException:
            self._db.execute("rollback")
            raise
        self._db.execute("commit")

    def _drop_unlabelled(self, secret_id: str) -> None:
        self._db.execute(
            "delete from versions where secret_id = ? and version_id not in "
            "(select version_id from labels where secret_id = ?)",
            (secret_id, secret_id),
        )

    def put_pending(self, secret_id: str, value: Mapping[str, Any], version_id: str) -> Credential:
        with self._lock, self._reading():
            labels = self._labels(secret_id)
            if not labels:
                raise SecretNotFound(f"local store: no secret named {secret_id!r} (seed it with `rotator store put`)")
            existing = self._credential(secret_id, version_id, labels)
            if existing is not None:
                if dict(existing.value) != dict(value):
                    raise VersionConflict(
                        f"local store: version {version_id} of {secret_id} already holds a different value"
                    )
                if labels.get(Stage.PENDING.value) == version_id or Stage.CURRENT in existing.stages:
                    return existing
            nonce, ciphertext = self._seal(secret_id, version_id, value)
            with self._transaction() as db:
                db.execute(
                    "insert or ignore into versions values (?, ?, ?, ?, ?)",
                    (secret_id, version_id, nonce, ciphertext, datetime.now(UTC).isoformat()),
                )
                db.execute(
                    "insert or replace into labels values (?, ?, ?)",
                    (secret_id, Stage.PENDING.value, version_id),
                )
                self._drop_unlabelled(secret_id)
        return Credential(version_id, dict(value), frozenset({Stage.PENDING}))

    def promote(self, secret_id: str, version_id: str) -> None:
        with self._lock, self._reading():
            labels = self._labels(secret_id)
            if labels.get(Stage.CURRENT.value) == version_id:
                return
            if labels.get(Stage.PENDING.value) != version_id:
                raise VersionConflict(f"local store: cannot promote {version_id} of {secret_id}: it is not PENDING")
            with self._transaction() as db:
                current = labels.get(Stage.CURRENT.value)
                if current:
                    db.execute(
                        "insert or replace into labels values (?, ?, ?)",
                        (secret_id, Stage.PREVIOUS.value, current),
                    )
                db.execute(
                    "insert or replace into labels values (?, ?, ?)",
                    (secret_id, Stage.CURRENT.value, version_id),
                )
                db.execute("delete from labels where secret_id = ? and stage = ?", (secret_id, Stage.PENDING.value))
                self._drop_unlabelled(secret_id)

    def unpromote(self, secret_id: str, version_id: str) -> None:
        with self._lock, self._reading():
            labels = self._labels(secret_id)
            previous = labels.get(Stage.PREVIOUS.value)
            if labels.get(Stage.CURRENT.value) != version_id or previous is None:
                return
            with self._transaction() as db:
                db.execute(
                    "insert or replace into labels values (?, ?, ?)",
                    (secret_id, Stage.CURRENT.value, previous),
                )
                db.execute(
                    "insert or replace into labels values (?, ?, ?)",
                    (secret_id, Stage.PENDING.value, version_id),
                )
                db.execute("delete from labels where secret_id = ? and stage = ?", (secret_id, Stage.PREVIOUS.value))

    def discard_pending(self, secret_id: str, version_id: str) -> None:
        with self._lock, self._reading():
            if self._labels(secret_id).get(Stage.PENDING.value) != version_id:
                return
            with self._transaction() as db:
                db.execute("delete from labels where secret_id = ? and stage = ?", (secret_id, Stage.PENDING.value))
                self._drop_unlabelled(secret_id)

    def put_current(self, secret_id: str, value: Mapping[str, Any]) -> Credential:
        version_id = uuid.uuid4().hex
        nonce, ciphertext = self._seal(secret_id, version_id, value)
        with self._lock, self._reading(), self._transaction() as db:
            current = self._labels(secret_id).get(Stage.CURRENT.value)
            db.execute(
                "insert into versions values (?, ?, ?, ?, ?)",
                (secret_id, version_id, nonce, ciphertext, datetime.now(UTC).isoformat()),
            )
            if current:
                db.execute(
                    "insert or replace into labels values (?, ?, ?)",
                    (secret_id, Stage.PREVIOUS.value, current),
                )
            db.execute(
                "insert or replace into labels values (?, ?, ?)",
                (secret_id, Stage.CURRENT.value, version_id),
            )
            self._drop_unlabelled(secret_id)
        return Credential(version_id, dict(value), frozenset({Stage.CURRENT}))
