"""Random keys kept in files: the local store's key and the fingerprint key are made the same way."""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path


def create_key_file(path: Path) -> bool:
    """Write a new random key (32 bytes, base64) with mode 0600. Returns False (and keeps the old key) if the file
    exists: a key is never replaced, since what it protects would be lost."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as handle:
        handle.write(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return True
