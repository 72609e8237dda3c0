"""The Vault KV v2 store against the fake Vault (tests/fakes/vault.py, real HTTP): where PENDING lives,
check-and-set against concurrent writers, crash points inside promote and unpromote, errors, auth methods,
token renewal, namespaces, TLS options, and the Vault calls each method makes.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import hvac
import pytest
from rotator_plugins.stores.vault_kv2 import KEEP_MAPPINGS, MAP_KEY, VaultKv2Store

from rotator.components import ComponentSetup
from rotator.errors import ConfigError, SecretNotFound, StoreError, TransientError, VersionConflict
from rotator.model import Stage
from rotator.registry import load_store
from rotator.testing import new_run_id, new_secret_id, sample_value
from tests.servers.vault import VaultServer

TOKEN_ENV = "ROTATOR_TEST_VAULT_TOKEN"
ALL = {"read", "create", "update", "delete", "patch"}


@pytest.fixture
def setup(tmp_path: Path) -> ComponentSetup:
    return ComponentSetup(name="vault", config_dir=tmp_path, state_dir=tmp_path, config_file=str(tmp_path / "r.toml"))


@pytest.fixture
def make(vault_server: VaultServer, setup: ComponentSetup, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Builds a store through the registry; by default with a fresh root-policy token from an env: reference."""

    def build(token: str | None = None, **options: Any) -> VaultKv2Store:
        if "auth" not in options:
            monkeypatch.setenv(TOKEN_ENV, token or vault_server.fake.add_token())
            options["auth"] = {"method": "token", "token": f"env:{TOKEN_ENV}"}
        options.setdefault("url", vault_server.url)
        store = load_store("vault-kv2", options, setup, "stores.vault")
        assert isinstance(store, VaultKv2Store)
        return store

    return build


@pytest.fixture
def root(vault_server: VaultServer) -> hvac.Client:
    """Another Vault client: an operator, another writer, or a consumer."""
    return hvac.Client(url=vault_server.url, token=vault_server.root_token)


def read_latest(client: hvac.Client, path: str) -> dict[str, Any]:
    data: dict[str, Any] = client.secrets.kv.v2.read_secret_version(path=path, raise_on_deleted_version=True)["data"]
    return data


def staged(store: VaultKv2Store) -> tuple[str, str, str]:
    secret_id = new_secret_id("vault")
    seed = store.put_current(secret_id, sample_value("seed")).version_id
    run_id = new_run_id()
    store.put_pending(secret_id, sample_value("new"), run_id)
    return secret_id, seed, run_id


# -- where things live ------------------------------------------------------------------------------------


def test_pending_lives_apart_and_promote_records_the_run(
    make: Any, root: hvac.Client, vault_server: VaultServer
) -> None:
    store = make(path_prefix="apps")
    secret_id, seed, run_id = staged(store)
    assert seed == "v1"
    main = read_latest(root, f"apps/{secret_id}")
    assert main["metadata"]["version"] == 1 and main["data"]["password"].startswith("pw-seed")
    pending = read_latest(root, f"apps/.rotator-pending/{secret_id}")["data"]
    assert pending["version_id"] == run_id and pending["base_version"] == 1
    assert pending["value"]["password"].startswith("pw-new")
    store.promote(secret_id, run_id)
    main = read_latest(root, f"apps/{secret_id}")
    assert main["metadata"]["version"] == 2 and main["data"]["password"].startswith("pw-new")
    assert main["metadata"]["custom_metadata"] == {f"{MAP_KEY}2": run_id}
    assert vault_server.fake.secret(f"apps/.rotator-pending/{secret_id}") is None  # no PENDING material left


def test_discard_deletes_every_staged_version(make: Any, vault_server: VaultServer) -> None:
    store = make()
    secret_id, _, run_id = staged(store)
    store.put_pending(secret_id, sample_value("other"), new_run_id())
    assert vault_server.fake.secret(f".rotator-pending/{secret_id}") is not None
    pending = store.get(secret_id, Stage.PENDING)
    assert pending is not None
    store.discard_pending(secret_id, pending.version_id)
    assert vault_server.fake.secret(f".rotator-pending/{secret_id}") is None
    assert run_id != pending.version_id


def test_user_metadata_and_settings_survive_rotation(make: Any, root: hvac.Client) -> None:
    store = make()
    secret_id, _, run_id = staged(store)
    root.adapter.post(
        f"/v1/secret/metadata/{secret_id}",
        json={"custom_metadata": {"owner": "payments"}, "delete_version_after": "768h", "max_versions": 20},
    )
    store.promote(secret_id, run_id)
    meta = root.secrets.kv.v2.read_secret_metadata(path=secret_id)["data"]
    assert meta["custom_metadata"]["owner"] == "payments"
    assert meta["delete_version_after"] == "768h" and meta["max_versions"] == 20


def test_recorded_ids_are_pruned(make: Any, root: hvac.Client) -> None:
    store = make()
    secret_id = new_secret_id("vault")
    store.put_current(secret_id, sample_value("seed"))
    runs = []
    for n in range(KEEP_MAPPINGS + 4):
        runs.append(new_run_id())
        store.put_pending(secret_id, sample_value(str(n)), runs[-1])
        store.promote(secret_id, runs[-1])
    custom = root.secrets.kv.v2.read_secret_metadata(path=secret_id)["data"]["custom_metadata"]
    assert len([k for k in custom if k.startswith(MAP_KEY)]) == KEEP_MAPPINGS
    current, previous = store.get(secret_id, Stage.CURRENT), store.get(secret_id, Stage.PREVIOUS)
    assert current is not None and current.version_id == runs[-1]
    assert previous is not None and previous.version_id == runs[-2]


def test_cas_required_paths_work(make: Any, root: hvac.Client) -> None:
    store = make()
    secret_id = new_secret_id("vault")
    root.adapter.post(f"/v1/secret/metadata/{secret_id}", json={"cas_required": True})
    store.put_current(secret_id, sample_value("seed"))
    run_id = new_run_id()
    store.put_pending(secret_id, sample_value("new"), run_id)
    store.promote(secret_id, run_id)
    current = store.get(secret_id)
    assert current is not None and current.version_id == run_id


# -- concurrent writers: check-and-set ----------------------------------------------------------------------


def test_a_write_since_put_pending_makes_promote_refuse(make: Any, root: hvac.Client) -> None:
    store = make()
    secret_id, _, run_id = staged(store)
    root.secrets.kv.v2.create_or_update_secret(path=secret_id, secret=sample_value("operator"))
    with pytest.raises(VersionConflict, match="changed since PENDING was staged"):
        store.promote(secret_id, run_id)
    assert read_latest(root, secret_id)["data"]["password"].startswith("pw-operator")  # not overwritten
    pending = store.get(secret_id, Stage.PENDING)
    assert pending is not None and pending.version_id == run_id  # the engine rolls back and discards it


def test_a_write_racing_promote_is_refused_by_vault(make: Any, root: hvac.Client) -> None:
    store = make()
    secret_id, _, run_id = staged(store)
    kv = store.client.secrets.kv.v2
    original = kv.create_or_update_secret

    def racing(**kwargs: Any) -> Any:
        if kwargs["path"] == secret_id:  # another writer gets in between promote's read and its write
            root.secrets.kv.v2.create_or_update_secret(path=secret_id, secret=sample_value("racer"))
        return original(**kwargs)

    kv.create_or_update_secret = racing
    with pytest.raises(VersionConflict, match="check-and-set"):
        store.promote(secret_id, run_id)
    assert read_latest(root, secret_id)["data"]["password"].startswith("pw-racer")


# -- crash points -------------------------------------------------------------------------------------------


def test_crash_between_promote_write_and_record(make: Any, vault_server: VaultServer, root: hvac.Client) -> None:
    store = make()
    secret_id, seed, run_id = staged(store)
    vault_server.fake.fail(500, f"/secret/metadata/{secret_id}", method="POST")
    with pytest.raises(TransientError):
        store.promote(secret_id, run_id)
    assert read_latest(root, secret_id)["data"]["password"].startswith("pw-new")  # written, not recorded
    resumed = make()
    resumed.promote(secret_id, run_id)  # recognises its own write: no second version
    assert read_latest(root, secret_id)["metadata"]["version"] == 2
    current, previous = resumed.get(secret_id), resumed.get(secret_id, Stage.PREVIOUS)
    assert current is not None and current.version_id == run_id
    assert previous is not None and previous.version_id == seed
    assert resumed.get(secret_id, Stage.PENDING) is None


def test_crash_between_promote_record_and_unstage(make: Any, vault_server: VaultServer) -> None:
    store = make()
    secret_id, _, run_id = staged(store)
    vault_server.fake.fail(503, f"/secret/metadata/.rotator-pending/{secret_id}", method="DELETE")
    with pytest.raises(TransientError):
        store.promote(secret_id, run_id)
    assert vault_server.fake.secret(f".rotator-pending/{secret_id}") is not None
    assert store.get(secret_id, Stage.PENDING) is None  # staged, but already CURRENT: not pending
    store.promote(secret_id, run_id)
    assert vault_server.fake.secret(f".rotator-pending/{secret_id}") is None


def test_crash_between_unpromote_write_and_record(make: Any, vault_server: VaultServer, root: hvac.Client) -> None:
    store = make()
    secret_id, seed, run_id = staged(store)
    store.promote(secret_id, run_id)
    vault_server.fake.fail(500, f"/secret/metadata/{secret_id}", method="POST")
    with pytest.raises(TransientError):
        store.unpromote(secret_id, run_id)
    assert read_latest(root, secret_id)["data"]["password"].startswith("pw-seed")  # restored, not recorded
    store.unpromote(secret_id, run_id)
    assert read_latest(root, secret_id)["metadata"]["version"] == 3  # no second restore
    current, pending = store.get(secret_id), store.get(secret_id, Stage.PENDING)
    assert current is not None and current.version_id == seed
    assert pending is not None and pending.version_id == run_id


def test_deleted_or_destroyed_versions(make: Any, root: hvac.Client) -> None:
    store = make()
    secret_id, _, run_id = staged(store)
    store.promote(secret_id, run_id)
    root.secrets.kv.v2.destroy_secret_versions(path=secret_id, versions=[1])
    assert store.get(secret_id, Stage.PREVIOUS) is None
    with pytest.raises(StoreError, match="PREVIOUS"):
        store.unpromote(secret_id, run_id)
    root.secrets.kv.v2.delete_latest_version_of_secret(path=secret_id)
    assert store.get(secret_id, Stage.CURRENT) is None


# -- errors -------------------------------------------------------------------------------------------------


def test_missing_secret_names_the_path(make: Any) -> None:
    store = make(path_prefix="apps")
    with pytest.raises(SecretNotFound, match=r"secret/data/apps/nope/x"):
        store.get("nope/x")
    with pytest.raises(SecretNotFound, match="nope/x"):
        store.put_pending("nope/x", sample_value(), new_run_id())


def test_permission_denied_names_the_capability_and_path(make: Any, vault_server: VaultServer) -> None:
    secret_id = new_secret_id("vault")
    make().put_current(secret_id, sample_value("seed"))
    reader = vault_server.fake.add_token(policy={f"secret/data/{secret_id}": {"read"}})
    store = make(token=reader)
    assert store.get(secret_id) is not None
    with pytest.raises(StoreError, match="permission denied") as raised:
        store.put_pending(secret_id, sample_value("new"), new_run_id())
    message = str(raised.value)
    assert f"secret/data/.rotator-pending/{secret_id}" in message and "'read'" in message
    assert not isinstance(raised.value, TransientError)


@pytest.mark.parametrize("status", [429, 500, 502, 503])
def test_rate_limits_and_server_errors_are_transient(make: Any, vault_server: VaultServer, status: int) -> None:
    store = make()
    secret_id = new_secret_id("vault")
    store.put_current(secret_id, sample_value("seed"))
    vault_server.fake.fail(status, f"/secret/data/{secret_id}")
    with pytest.raises(TransientError, match="retried"):
        store.get(secret_id)
    assert store.get(secret_id) is not None


def test_connection_refused_is_transient(make: Any) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = make(url=f"http://127.0.0.1:{port}", timeout=2)
    with pytest.raises(TransientError, match="cannot reach Vault"):
        store.get("any/secret")


# -- auth ---------------------------------------------------------------------------------------------------


def test_approle_login(make: Any, vault_server: VaultServer, monkeypatch: pytest.MonkeyPatch) -> None:
    role_id, secret = new_run_id(), new_run_id()
    vault_server.fake.add_approle(role_id, secret)
    monkeypatch.setenv("ROTATOR_TEST_APPROLE_SECRET", secret)
    store = make(auth={"method": "approle", "role_id": role_id, "secret_id": "env:ROTATOR_TEST_APPROLE_SECRET"})
    secret_id = new_secret_id("vault")
    store.put_current(secret_id, sample_value("seed"))
    assert store.get(secret_id) is not None


def test_wrong_approle_secret_is_a_store_error(make: Any, vault_server: VaultServer, tmp_path: Path) -> None:
    role_id = new_run_id()
    vault_server.fake.add_approle(role_id, "right")
    (tmp_path / "secret-id").write_text("wrong\n")
    store = make(auth={"method": "approle", "role_id": role_id, "secret_id": "file:secret-id"})
    with pytest.raises(StoreError, match="auth/approle/login") as raised:
        store.get("any/secret")
    assert "wrong" not in str(raised.value)


def test_kubernetes_login_reads_the_jwt_file(make: Any, vault_server: VaultServer, tmp_path: Path) -> None:
    jwt = "eyJhbGciOiJSUzI1NiJ9." + new_run_id()
    vault_server.fake.add_kubernetes_role("rotator", jwt)
    (tmp_path / "sa-token").write_text(jwt + "\n")
    store = make(auth={"method": "kubernetes", "role": "rotator", "jwt_path": "sa-token"})
    secret_id = new_secret_id("vault")
    store.put_current(secret_id, sample_value("seed"))
    assert vault_server.fake.logins[-1] == "kubernetes-rotator"


def test_aws_iam_login_signs_get_caller_identity(
    make: Any, vault_server: VaultServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIATESTINGTESTING12")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    vault_server.fake.add_aws_role("rotator-aws", server_id="vault.example.internal")
    store = make(auth={"method": "aws", "role": "rotator-aws", "header_value": "vault.example.internal"})
    secret_id = new_secret_id("vault")
    store.put_current(secret_id, sample_value("seed"))
    assert vault_server.fake.logins[-1] == "aws-rotator-aws"
    wrong = make(auth={"method": "aws", "role": "rotator-aws", "header_value": "someone-else"})
    with pytest.raises(StoreError, match="auth/aws/login"):
        wrong.get(secret_id)


def test_token_is_renewed_when_a_third_of_its_ttl_is_left(make: Any, vault_server: VaultServer) -> None:
    token = vault_server.fake.add_token(ttl=3, renewable=True)
    store = make(token=token)
    secret_id = new_secret_id("vault")
    store.put_current(secret_id, sample_value("seed"))
    time.sleep(2.2)
    assert store.get(secret_id) is not None
    assert vault_server.fake.tokens[token].renewals == 1
    time.sleep(1.5)  # past the original expiry: the renewal kept the token alive
    assert store.get(secret_id) is not None


def test_a_login_method_logs_in_again_at_max_ttl(
    make: Any, vault_server: VaultServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    role_id = new_run_id()
    vault_server.fake.add_approle(role_id, "s3cret-id", ttl=3, max_ttl=3)
    monkeypatch.setenv("ROTATOR_TEST_APPROLE_SECRET", "s3cret-id")
    store = make(auth={"method": "approle", "role_id": role_id, "secret_id": "env:ROTATOR_TEST_APPROLE_SECRET"})
    secret_id = new_secret_id("vault")
    store.put_current(secret_id, sample_value("seed"))
    logins = len(vault_server.fake.logins)
    time.sleep(2.2)
    assert store.get(secret_id) is not None
    assert len(vault_server.fake.logins) == logins + 1  # renewal capped by max TTL: a fresh login instead
    time.sleep(1.0)
    assert store.get(secret_id) is not None


def test_a_revoked_token_triggers_one_new_login(
    make: Any, vault_server: VaultServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    role_id = new_run_id()
    vault_server.fake.add_approle(role_id, "s3cret-id")
    monkeypatch.setenv("ROTATOR_TEST_APPROLE_SECRET", "s3cret-id")
    store = make(auth={"method": "approle", "role_id": role_id, "secret_id": "env:ROTATOR_TEST_APPROLE_SECRET"})
    secret_id = new_secret_id("vault")
    store.put_current(secret_id, sample_value("seed"))
    vault_server.fake.revoke(store.client.token)
    assert store.get(secret_id) is not None


def test_a_revoked_static_token_is_permission_denied(make: Any, vault_server: VaultServer) -> None:
    token = vault_server.fake.add_token()
    store = make(token=token)
    secret_id = new_secret_id("vault")
    store.put_current(secret_id, sample_value("seed"))
    vault_server.fake.revoke(token)
    with pytest.raises(StoreError, match="permission denied"):
        store.get(secret_id)


def test_namespace_keeps_secrets_apart(make: Any, vault_server: VaultServer) -> None:
    store = make(namespace="team-a/")
    secret_id = new_secret_id("vault")
    store.put_current(secret_id, sample_value("seed"))
    assert vault_server.fake.secret(secret_id, namespace="team-a") is not None
    assert vault_server.fake.secret(secret_id) is None
    with pytest.raises(SecretNotFound, match=f"team-a/secret/data/{secret_id}"):
        store.get(secret_id + "-missing")


def test_other_mount_and_prefix(make: Any, vault_server: VaultServer) -> None:
    store = make(mount_point="kv", path_prefix="/teams/payments/", pending_prefix="_staging")
    secret_id, _, run_id = staged(store)
    assert vault_server.fake.secret(f"teams/payments/{secret_id}", mount="kv") is not None
    assert vault_server.fake.secret(f"teams/payments/_staging/{secret_id}", mount="kv") is not None
    store.promote(secret_id, run_id)


# -- options --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"auth": {"method": "token", "token": "hvs.literal-token"}}, "stores.vault.auth.token"),
        (
            {"auth": {"method": "approle", "role_id": "r", "secret_id": "literal"}},
            "stores.vault.auth.secret_id",
        ),
        ({"auth": {"method": "ldap"}}, "stores.vault.auth.method"),
        ({"url": "vault:8200"}, "stores.vault.url"),
        ({"mount_pont": "secret"}, "stores.vault.mount_pont"),
        ({"path_prefix": "../other"}, "stores.vault.path_prefix"),
    ],
)
def test_bad_options_are_config_errors_naming_the_key(setup: ComponentSetup, options: dict[str, Any], key: str) -> None:
    options.setdefault("url", "https://vault.example.internal:8200")
    with pytest.raises(ConfigError) as raised:
        load_store("vault-kv2", options, setup, "stores.vault")
    assert key in str(raised.value)
    assert "literal" not in str(raised.value)


def test_an_unknown_auth_method_lists_the_methods(setup: ComponentSetup) -> None:
    options = {"url": "https://vault.example.internal:8200", "auth": {"method": "ldap"}}
    with pytest.raises(ConfigError) as raised:
        load_store("vault-kv2", options, setup, "stores.vault")
    assert raised.value.key == "stores.vault.auth.method"
    assert "'ldap' is not one of: token, approle, kubernetes, aws" in str(raised.value)
    assert "fix: use one of: token, approle, kubernetes, aws" in str(raised.value)


def test_paths_are_stripped_of_slashes(setup: ComponentSetup) -> None:
    store = VaultKv2Store(
        {
            "url": "https://vault.example.internal:8200",
            "mount_point": "/kv/",
            "path_prefix": "/apps/",
            "pending_prefix": "p/",
        },
        setup,
    )
    assert (store.options.mount_point, store.options.path_prefix, store.options.pending_prefix) == ("kv", "apps", "p")


def test_no_address_is_a_config_error(setup: ComponentSetup, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VAULT_ADDR", raising=False)
    with pytest.raises(ConfigError, match=r"stores\.vault\.url"):
        load_store("vault-kv2", {}, setup, "stores.vault")


def test_tls_options(setup: ComponentSetup) -> None:
    default = VaultKv2Store({"url": "https://vault.example.internal:8200"}, setup)
    assert default.client.adapter._kwargs["verify"] is True
    bundle = VaultKv2Store({"url": "https://vault.example.internal:8200", "ca_bundle": "certs/ca.pem"}, setup)
    assert bundle.client.adapter._kwargs["verify"] == str(setup.config_dir / "certs" / "ca.pem")
    mtls = VaultKv2Store(
        {"url": "https://vault.example.internal:8200", "client_cert": "c.pem", "client_key": "k.pem"}, setup
    )
    assert mtls.client.adapter._kwargs["cert"] == (str(setup.config_dir / "c.pem"), str(setup.config_dir / "k.pem"))


# -- cost -----------------------------------------------------------------------------------------------------


def test_vault_calls_per_method(make: Any, vault_server: VaultServer) -> None:
    """The figures in the README: HTTP requests each method sends to Vault on the usual path (token known)."""
    store = make()
    secret_id = new_secret_id("vault")
    store.put_current(secret_id, sample_value("seed"))
    log = vault_server.fake.requests

    def cost(fn: Any) -> int:
        before = len(log)
        fn()
        return len([r for r in log[before:] if secret_id in r[1]])

    run_id = new_run_id()
    assert cost(lambda: store.get(secret_id)) == 1
    assert cost(lambda: store.get(secret_id, Stage.PREVIOUS)) == 1  # no PREVIOUS yet: metadata says so
    assert cost(lambda: store.put_pending(secret_id, sample_value("new"), run_id)) == 3
    assert cost(lambda: store.get(secret_id, Stage.PENDING)) == 2
    assert cost(lambda: store.promote(secret_id, run_id)) == 5
    assert cost(lambda: store.get(secret_id, Stage.PREVIOUS)) == 2
    assert cost(lambda: store.unpromote(secret_id, run_id)) == 6
    assert cost(lambda: store.discard_pending(secret_id, run_id)) == 2
