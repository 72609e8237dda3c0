"""The store contract (rotator.testing.StoreContract) over every built-in store, loaded through the registry.

- local: the embedded store in a temporary state directory;
- aws-secretsmanager: moto's server mode, over real HTTP (tests/servers/aws.py);
- vault-kv2: the fake Vault of tests/fakes/vault.py, over real HTTP (no Vault server can be had here).

A consumer's read is what consumers really do: AWS GetSecretValue without a stage, Vault a GET of the secret's
path (its latest version), the local store's CURRENT.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from rotator.components import ComponentSetup
from rotator.interfaces import SecretStore
from rotator.local_store import LocalStore, create_key_file
from rotator.registry import load_store
from rotator.testing import StoreContract, StoreFactory, read_current

try:  # without the dev extra (boto3, hvac) the local store's contract still runs; the others skip (fail in CI)
    from rotator_plugins.stores.aws_secretsmanager import AwsSecretsManagerStore
    from rotator_plugins.stores.vault_kv2 import VaultKv2Store
except ImportError:  # pragma: no cover
    AwsSecretsManagerStore = VaultKv2Store = None  # type: ignore[assignment, misc]

STORES = ["local", "aws-secretsmanager", "vault-kv2"]
VAULT_TOKEN_ENV = "ROTATOR_TEST_VAULT_TOKEN"


def store_options(kind: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    if kind == "aws-secretsmanager":
        moto = request.getfixturevalue("moto_server")
        return {"region": moto.region, "endpoint_url": moto.endpoint_url}
    if kind == "vault-kv2":
        vault = request.getfixturevalue("vault_server")
        return {
            "url": vault.url,
            "path_prefix": "contract-suite",
            "auth": {"method": "token", "token": f"env:{VAULT_TOKEN_ENV}"},
        }
    return {}


@pytest.fixture(params=STORES)
def store_factory(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[StoreFactory]:
    kind: str = request.param
    setup = ComponentSetup(
        name=kind, config_dir=tmp_path, state_dir=tmp_path / "state", config_file=str(tmp_path / "rotator.toml")
    )
    if kind == "local":  # as `rotator init` makes them: the key, then the empty database
        create_key_file(setup.state_dir / "store.key")
        LocalStore({}, setup, create=True).close()
    if kind == "vault-kv2":
        monkeypatch.setenv(VAULT_TOKEN_ENV, request.getfixturevalue("vault_server").root_token)
    options = store_options(kind, request)
    made: list[SecretStore] = []

    def new_store() -> SecretStore:
        store = load_store(kind, options, setup, f"stores.{kind}")
        made.append(store)
        return store

    yield new_store
    for store in made:
        if isinstance(store, LocalStore):
            store.close()


class TestStoreContract(StoreContract):
    def read_as_consumer(self, store: SecretStore, secret_id: str) -> Mapping[str, Any] | None:
        if AwsSecretsManagerStore is not None and isinstance(store, AwsSecretsManagerStore):
            # What an application does: GetSecretValue with no stage, which AWS documents as AWSCURRENT. (moto's
            # no-stage read did not follow UpdateSecretVersionStage; tests/servers/aws.py corrects that.)
            response = store.client.get_secret_value(SecretId=secret_id)
            value: dict[str, Any] = json.loads(response["SecretString"])
            return value
        if VaultKv2Store is not None and isinstance(store, VaultKv2Store):
            # What an application does: read the secret's path, i.e. its latest version.
            path = f"{store.options.path_prefix}/{secret_id}"
            response = store.client.secrets.kv.v2.read_secret_version(path=path, raise_on_deleted_version=True)
            data: dict[str, Any] = response["data"]["data"]
            return data
        return read_current(store, secret_id)
