"""The one place where Vault errors (hvac, requests) become rotator errors.

| Vault says | rotator raises |
|---|---|
| 429 (rate limit quota), 500, 502, 503 (sealed, standby), connection refused or reset, timeout | TransientError |
| 403 permission denied | StoreError naming the capability and the path the policy must grant |
| 404 | SecretNotFound naming the path |
| 400 "check-and-set parameter did not match the current version" | VersionConflict |
| 400 "metadata check-and-set parameter does not match the current version" (OpenBao) | VersionConflict |
| anything else | StoreError with Vault's error text |

Vault's error texts never echo the data written, so they may be shown; hvac's own exception text (which adds the
full URL) is not used.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import requests
from hvac import exceptions as hvac_errors

from rotator import RotatorError, SecretNotFound, StoreError, TransientError, VersionConflict

STORE = "vault-kv2"
TRANSIENT = (
    hvac_errors.RateLimitExceeded,
    hvac_errors.InternalServerError,
    hvac_errors.BadGateway,
    hvac_errors.VaultDown,
)
CAS_MISMATCH = "check-and-set parameter did not match"
METADATA_CAS_MISMATCH = "metadata check-and-set parameter does not match"


def vault_error_text(exc: hvac_errors.VaultError) -> str:
    errors = exc.errors if isinstance(exc.errors, list) else ([exc.errors] if exc.errors else [])
    text = "; ".join(" ".join(str(e).split()) for e in errors)
    return text or type(exc).__name__


def map_vault_error(exc: BaseException, *, capability: str, path: str, secret: str | None = None) -> RotatorError:
    """The rotator error for `exc`, raised while using `capability` (read, create/update, delete) on `path`
    (the API path without /v1/, e.g. secret/data/prod/orders/db)."""
    of = f" (secret {secret!r})" if secret else ""
    where = f"{STORE}: {capability} {path}{of}"
    if isinstance(exc, RotatorError):
        return exc
    if isinstance(exc, TRANSIENT):
        return TransientError(f"{where} failed for now ({vault_error_text(exc)}); it will be retried")
    if isinstance(exc, hvac_errors.Forbidden):
        return StoreError(
            f"{STORE}: permission denied: the token's policy does not grant {capability!r} on {path}{of}; "
            "add it to the daemon's Vault policy, or check that the token is still valid"
        )
    if isinstance(exc, hvac_errors.InvalidPath):
        return SecretNotFound(f"{STORE}: nothing at {path}{of}; seed it with `rotator store put`")
    if isinstance(exc, hvac_errors.InvalidRequest) and CAS_MISMATCH in vault_error_text(exc):
        return VersionConflict(
            f"{where}: check-and-set refused the write: another writer changed the secret since this run read it; "
            "nothing was overwritten"
        )
    if isinstance(exc, hvac_errors.InvalidRequest) and METADATA_CAS_MISMATCH in vault_error_text(exc):
        return VersionConflict(
            f"{where}: metadata check-and-set refused the write: another writer changed the secret's metadata since "
            "this run read it; nothing was overwritten"
        )
    if isinstance(exc, hvac_errors.VaultError):
        return StoreError(f"{where} failed: {vault_error_text(exc)}")
    if isinstance(exc, requests.exceptions.SSLError):
        return StoreError(f"{where}: TLS verification failed; set ca_bundle to the CA that signed Vault's certificate")
    if isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
        return TransientError(f"{where}: cannot reach Vault ({type(exc).__name__}); it will be retried")
    return StoreError(f"{where} failed: {type(exc).__name__}")


@contextmanager
def vault_errors(*, capability: str, path: str, secret: str | None = None) -> Iterator[None]:
    """Run one Vault call; re-raise whatever it raises as the matching rotator error."""
    try:
        yield
    except RotatorError:
        raise
    except (hvac_errors.VaultError, requests.exceptions.RequestException) as exc:
        raise map_vault_error(exc, capability=capability, path=path, secret=secret) from None
