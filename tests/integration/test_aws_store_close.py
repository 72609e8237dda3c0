"""aws-secretsmanager's close(), as the daemon calls it on the old config's store after a reload (moto's server
mode): the client's keep-alive connections are closed; a client the caller injected is left open."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from rotator_plugins.stores.aws_secretsmanager import AwsSecretsManagerStore

from rotator.components import ComponentSetup
from rotator.registry import load_store
from tests.servers.aws import MotoServer


def open_pools(client: Any) -> int:
    """botocore keeps one urllib3 pool per endpoint host while it holds a connection there."""
    return len(client._endpoint.http_session._manager.pools)


def test_close_closes_the_clients_connections(moto_server: MotoServer, tmp_path: Path) -> None:
    setup = ComponentSetup(name="aws", config_dir=tmp_path, state_dir=tmp_path)
    options = {"region": moto_server.region, "endpoint_url": moto_server.endpoint_url}
    store = load_store("aws-secretsmanager", options, setup, "stores.aws")
    assert isinstance(store, AwsSecretsManagerStore)
    secret_id = f"close/{uuid.uuid4().hex[:8]}"
    store.put_current(secret_id, {"value": "v" * 40})
    assert open_pools(store.client) == 1
    store.close()
    assert open_pools(store.client) == 0


def test_close_leaves_an_injected_client_open(moto_server: MotoServer, tmp_path: Path) -> None:
    client = moto_server.client("secretsmanager")
    store = AwsSecretsManagerStore({"region": moto_server.region}, client=client)
    secret_id = f"close/{uuid.uuid4().hex[:8]}"
    store.put_current(secret_id, {"value": "v" * 40})
    store.close()
    assert open_pools(client) == 1
    assert client.get_secret_value(SecretId=secret_id)["SecretString"]
