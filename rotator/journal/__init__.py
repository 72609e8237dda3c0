"""Journals: the durable record of runs, steps and leases.

`open_journal(url, state_dir)` picks the backend: SQLite by default (a file in state_dir, or `sqlite:///PATH`).
A `postgresql://user@host:port/dbname` URL selects the shared journal for several daemons
(rotator/journal/postgres.py), imported only then, so that the embedded path never loads a network client.
The PostgreSQL URL never holds the password (libpq reads PGPASSWORD, PGPASSFILE or ~/.pgpass); it may carry
libpq parameters (sslmode, sslrootcert, connect_timeout, ...) and `schema=NAME` for the journal's tables.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import cast

from rotator.errors import ConfigError
from rotator.interfaces import Journal

JOURNAL_FILE_NAME = "journal.db"


def open_journal(url: str | None, state_dir: Path) -> Journal:
    if url and url.startswith(("postgresql://", "postgres://")):
        try:
            module = importlib.import_module("rotator.journal.postgres")
        except ModuleNotFoundError as exc:
            if not (exc.name or "").startswith("psycopg"):
                raise
            raise ConfigError(
                "the PostgreSQL journal needs the psycopg package, which is not installed",
                key="rotator.journal",
                fix="pip install 'psycopg[binary]' (or psycopg with libpq on the host), "
                "or remove rotator.journal to use the embedded SQLite journal",
            ) from None
        return cast(Journal, module.PostgresJournal(url))
    if url and not url.startswith("sqlite:///"):
        raise ConfigError(
            f"unknown journal URL scheme in {url.split(':', 1)[0]!r}",
            key="rotator.journal",
            fix='use "sqlite:///PATH" or "postgresql://user@host/db", or remove it for the default',
        )
    from rotator.journal.sqlite import SqliteJournal

    path = Path(url.removeprefix("sqlite:///")) if url else state_dir / JOURNAL_FILE_NAME
    return SqliteJournal(path)
