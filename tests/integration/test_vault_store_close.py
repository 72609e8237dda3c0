"""vault-kv2's close(), as the daemon calls it on the old config's store after a reload, on real OpenBao: a token
the store logged in for is revoked, a configured token is not (others may use it), and the connections close."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import hvac
import pytest
from hvac import exceptions as hvac_errors
from rotator_plugins.stores.vault_kv2 import VaultKv2Store

from rotator.components import ComponentSetup
from rotator.registry import load_store
from tests.servers.vault import VaultServer, rotator_policy


def build(vault_server: VaultServer, tmp_path: Path, auth: dict[str, Any]) -> VaultKv2Store:
    setup = ComponentSetup(name="vault", config_dir=tmp_path, state_dir=tmp_path)
    options = {"url": vault_server.url, "path_prefix": "rotator", "auth": auth}
    store = load_store("vault-kv2", options, setup, "stores.vault")
    assert isinstance(store, VaultKv2Store)
    return store


def lookup(vault_server: VaultServer, token: str) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = vault_server.client().auth.token.lookup(token)["data"]
    except hvac_errors.Forbidden:  # OpenBao answers a bad token's lookup with 403 "bad token"
        return None
    except hvac_errors.InvalidRequest:
        return None
    return data


def test_close_revokes_an_approle_login_and_closes_the_connections(
    vault_server: VaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy = "rotator-" + uuid.uuid4().hex[:8]
    vault_server.policy(policy, rotator_policy())
    role_id, secret = vault_server.approle("r-" + uuid.uuid4().hex[:8], [policy])
    monkeypatch.setenv("ROTATOR_TEST_APPROLE_SECRET", secret)
    store = build(
        vault_server,
        tmp_path,
        {"method": "approle", "role_id": role_id, "secret_id": "env:ROTATOR_TEST_APPROLE_SECRET"},
    )
    secret_id = f"close/{uuid.uuid4().hex[:8]}"
    store.put_current(secret_id, {"value": "v" * 40})
    token = store.client.token
    assert lookup(vault_server, token) is not None
    pools = store.client.adapter.session.get_adapter(vault_server.url).poolmanager.pools
    assert len(pools) == 1  # the keep-alive connection to OpenBao
    store.close()
    assert lookup(vault_server, token) is None, "the store's own login outlived the store"
    assert len(pools) == 0


def test_close_leaves_a_configured_token_alone(
    vault_server: VaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = vault_server.rotator_token_for("secret", "rotator")
    monkeypatch.setenv("ROTATOR_TEST_VAULT_TOKEN", token)
    store = build(vault_server, tmp_path, {"method": "token", "token": "env:ROTATOR_TEST_VAULT_TOKEN"})
    secret_id = f"close/{uuid.uuid4().hex[:8]}"
    store.put_current(secret_id, {"value": "v" * 40})
    store.close()
    assert lookup(vault_server, token) is not None  # the operator's token: another daemon may hold it too
    again = hvac.Client(url=vault_server.url, token=token)
    assert again.secrets.kv.v2.read_secret_version(
        path=f"rotator/{secret_id}", mount_point="secret", raise_on_deleted_version=True
    )["data"]["data"] == {"value": "v" * 40}
