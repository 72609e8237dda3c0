"""The store contract (rotator.testing.StoreContract) over every built-in store, loaded through the registry.

- local: the embedded store in a temporary state directory;
- aws-secretsmanager: moto's server mode, over real HTTP (tests/servers/aws.py);
- vault-kv2: a real OpenBao server (tests/servers/vault.py), the store logged in through AppRole with exactly the
  least-privilege policy README documents.

A consumer's read is what consumers really do: AWS GetSecretValue without a stage, Vault a GET of the secret's
path (its latest version) with the consumer's own read-only token, the local store's CURRENT.
"""

from __future__ import annotations

import json
import os
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
VAULT_SECRET_ID_ENV = "ROTATOR_TEST_VAULT_SECRET_ID"
VAULT_CONSUMER_TOKEN_ENV = "ROTATOR_TEST_VAULT_CONSUMER_TOKEN"


def store_options(kind: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    if kind == "aws-secretsmanager":
        moto = request.getfixturevalue("moto_server")
        return {"region": moto.region, "endpoint_url": moto.endpoint_url}
    if kind == "vault-kv2":
        vault = request.getfixturevalue("vault_server")
        return {
            "url": vault.url,
            "path_prefix": "rotator",  # the prefix of the fixture's least-privilege policy
            "auth": {"method": "approle", "role_id": vault.approle_role_id, "secret_id": f"env:{VAULT_SECRET_ID_ENV}"},
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
        vault = request.getfixturevalue("vault_server")
        monkeypatch.setenv(VAULT_SECRET_ID_ENV, vault.approle_secret_id)
        monkeypatch.setenv(VAULT_CONSUMER_TOKEN_ENV, vault.consumer_token)
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
            # What an application does: read the secret's path, i.e. its latest version, with its own token (a
            # policy that may read the secrets and not the rotator's staging paths).
            import hvac

            consumer = hvac.Client(url=store.client.url, token=os.environ[VAULT_CONSUMER_TOKEN_ENV])
            path = f"{store.options.path_prefix}/{secret_id}"
            response = consumer.secrets.kv.v2.read_secret_version(path=path, raise_on_deleted_version=True)
            data: dict[str, Any] = response["data"]["data"]
            return data
        return read_current(store, secret_id)
