"""The Vault KV v2 store against a real OpenBao server (tests/servers/vault.py): where PENDING lives,
check-and-set against concurrent writers, crash points inside promote and unpromote (the client's requests cut
before or after the server acted), errors (a sealed server's 503, a quota's 429, permission denied, connection
refused), auth methods (token, AppRole, renewal, namespaces), TLS options, and the Vault calls each method makes.

Only what OpenBao cannot do on demand goes to the fake of tests/fakes/vault.py (fixture `vault_fake`): 500 and 502
answers, and AWS IAM login (OpenBao ships no aws auth method). Kubernetes login also stays on the fake: OpenBao's
kubernetes auth method asks a cluster's TokenReview API, and no cluster runs here.
"""

from __future__ import annotations

import socket
import time
import uuid
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
from tests.servers.vault import Cut, FakeVaultServer, RequestLog, VaultServer, cut_requests

TOKEN_ENV = "ROTATOR_TEST_VAULT_TOKEN"
PREFIX = "rotator"  # the prefix of the fixture's least-privilege policy


@pytest.fixture
def setup(tmp_path: Path) -> ComponentSetup:
    return ComponentSetup(name="vault", config_dir=tmp_path, state_dir=tmp_path, config_file=str(tmp_path / "r.toml"))


@pytest.fixture
def make(vault_server: VaultServer, setup: ComponentSetup, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Builds a store through the registry, logged in with a token that has exactly README's least-privilege
    policy for its mount and prefix (path_prefix `rotator` unless given), from an env: reference."""

    def build(token: str | None = None, **options: Any) -> VaultKv2Store:
        options.setdefault("path_prefix", PREFIX)
        if "auth" not in options:
            if token is None:
                mount = str(options.get("mount_point", "secret")).strip("/")
                token = vault_server.rotator_token_for(mount, str(options["path_prefix"]))
            monkeypatch.setenv(TOKEN_ENV, token)
            options["auth"] = {"method": "token", "token": f"env:{TOKEN_ENV}"}
        options.setdefault("url", vault_server.url)
        store = load_store("vault-kv2", options, setup, "stores.vault")
        assert isinstance(store, VaultKv2Store)
        return store

    return build


@pytest.fixture
def root(vault_server: VaultServer) -> hvac.Client:
    """Another Vault client with the root token: an operator, or another writer."""
    return vault_server.client()


def read_latest(client: hvac.Client, path: str, mount: str = "secret") -> dict[str, Any]:
    data: dict[str, Any] = client.secrets.kv.v2.read_secret_version(
        path=path, mount_point=mount, raise_on_deleted_version=True
    )["data"]
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
    store = make()
    secret_id, seed, run_id = staged(store)
    assert seed == "v1"
    main = read_latest(root, f"{PREFIX}/{secret_id}")
    assert main["metadata"]["version"] == 1 and main["data"]["password"].startswith("pw-seed")
    pending = read_latest(root, f"{PREFIX}/.rotator-pending/{secret_id}")["data"]
    assert pending["version_id"] == run_id and pending["base_version"] == 1
    assert pending["value"]["password"].startswith("pw-new")
    store.promote(secret_id, run_id)
    main = read_latest(root, f"{PREFIX}/{secret_id}")
    assert main["metadata"]["version"] == 2 and main["data"]["password"].startswith("pw-new")
    assert main["metadata"]["custom_metadata"] == {f"{MAP_KEY}2": run_id}
    assert vault_server.metadata(f"{PREFIX}/.rotator-pending/{secret_id}") is None  # no PENDING material left


def test_a_consumer_policy_cannot_read_pending(make: Any, vault_server: VaultServer) -> None:
    """README's consumer policy reads the secret and is refused the staging path (Vault, not the store, says so)."""
    store = make()
    secret_id, _, _ = staged(store)
    consumer = vault_server.client(vault_server.consumer_token)
    assert read_latest(consumer, f"{PREFIX}/{secret_id}")["data"]["password"].startswith("pw-seed")
    with pytest.raises(hvac.exceptions.Forbidden):
        read_latest(consumer, f"{PREFIX}/.rotator-pending/{secret_id}")


def test_discard_deletes_every_staged_version(make: Any, vault_server: VaultServer) -> None:
    store = make()
    secret_id, _, run_id = staged(store)
    store.put_pending(secret_id, sample_value("other"), new_run_id())
    staging = vault_server.metadata(f"{PREFIX}/.rotator-pending/{secret_id}")
    assert staging is not None and staging["current_version"] == 2
    pending = store.get(secret_id, Stage.PENDING)
    assert pending is not None
    store.discard_pending(secret_id, pending.version_id)
    assert vault_server.metadata(f"{PREFIX}/.rotator-pending/{secret_id}") is None
    assert run_id != pending.version_id


def test_user_metadata_and_settings_survive_rotation(make: Any, root: hvac.Client) -> None:
    store = make()
    secret_id, _, run_id = staged(store)
    root.adapter.post(
        f"/v1/secret/metadata/{PREFIX}/{secret_id}",
        json={"custom_metadata": {"owner": "payments"}, "delete_version_after": "768h", "max_versions": 20},
    )
    store.promote(secret_id, run_id)
    meta = root.secrets.kv.v2.read_secret_metadata(path=f"{PREFIX}/{secret_id}")["data"]
    assert meta["custom_metadata"]["owner"] == "payments"
    # OpenBao answers Go's duration form ("768h0m0s"), where the fake echoed "768h".
    assert meta["delete_version_after"] == "768h0m0s" and meta["max_versions"] == 20


def test_recorded_ids_are_pruned(make: Any, root: hvac.Client) -> None:
    store = make()
    secret_id = new_secret_id("vault")
    store.put_current(secret_id, sample_value("seed"))
    runs = []
    for n in range(KEEP_MAPPINGS + 4):
        runs.append(new_run_id())
        store.put_pending(secret_id, sample_value(str(n)), runs[-1])
        store.promote(secret_id, runs[-1])
    custom = root.secrets.kv.v2.read_secret_metadata(path=f"{PREFIX}/{secret_id}")["data"]["custom_metadata"]
    assert len([k for k in custom if k.startswith(MAP_KEY)]) == KEEP_MAPPINGS
    current, previous = store.get(secret_id, Stage.CURRENT), store.get(secret_id, Stage.PREVIOUS)
    assert current is not None and current.version_id == runs[-1]
    assert previous is not None and previous.version_id == runs[-2]


# -- concurrent writers: check-and-set ----------------------------------------------------------------------


def test_a_write_since_put_pending_makes_promote_refuse(make: Any, root: hvac.Client) -> None:
    store = make()
    secret_id, _, run_id = staged(store)
    root.secrets.kv.v2.create_or_update_secret(path=f"{PREFIX}/{secret_id}", secret=sample_value("operator"))
    with pytest.raises(VersionConflict, match="changed since PENDING was staged"):
        store.promote(secret_id, run_id)
    assert read_latest(root, f"{PREFIX}/{secret_id}")["data"]["password"].startswith("pw-operator")  # kept
    pending = store.get(secret_id, Stage.PENDING)
    assert pending is not None and pending.version_id == run_id  # the engine rolls back and discards it
    store.unpromote(secret_id, run_id)  # the rollback: the operator's version is not this run's, nothing to undo
    assert read_latest(root, f"{PREFIX}/{secret_id}")["data"]["password"].startswith("pw-operator")


def test_a_write_racing_promote_is_refused_by_vault(make: Any, root: hvac.Client) -> None:
    store = make()
    secret_id, _, run_id = staged(store)
    kv = store.client.secrets.kv.v2
    original = kv.create_or_update_secret

    def racing(**kwargs: Any) -> Any:
        if kwargs["path"] == f"{PREFIX}/{secret_id}":  # another writer gets in between promote's read and write
            root.secrets.kv.v2.create_or_update_secret(path=f"{PREFIX}/{secret_id}", secret=sample_value("racer"))
        return original(**kwargs)

    kv.create_or_update_secret = racing
    with pytest.raises(VersionConflict, match="check-and-set"):
        store.promote(secret_id, run_id)
    assert read_latest(root, f"{PREFIX}/{secret_id}")["data"]["password"].startswith("pw-racer")


def test_a_metadata_write_racing_the_record_is_merged(make: Any, root: hvac.Client) -> None:
    """OpenBao's metadata_cas refuses promote's record when someone changed the metadata after promote read it;
    the store reads it again and merges, so the other writer's custom_metadata stays and the run is recorded."""
    store = make()
    secret_id, _, run_id = staged(store)
    path = f"{PREFIX}/{secret_id}"
    raced = []
    original = store.client.adapter.post

    def racing(url: str, **kwargs: Any) -> Any:
        if url == f"/v1/secret/metadata/{path}" and not raced:
            raced.append(url)
            root.adapter.post(url, json={"custom_metadata": {"owner": "payments"}})
        return original(url, **kwargs)

    store.client.adapter.post = racing  # type: ignore[method-assign]
    store.promote(secret_id, run_id)
    meta = root.secrets.kv.v2.read_secret_metadata(path=path)["data"]
    assert raced and meta["custom_metadata"] == {"owner": "payments", f"{MAP_KEY}2": run_id}
    current = store.get(secret_id)
    assert current is not None and current.version_id == run_id


# -- crash points (the real server's state; the client's request cut there) ----------------------------------


def test_crash_between_promote_write_and_record(make: Any, root: hvac.Client) -> None:
    store = make()
    secret_id, seed, run_id = staged(store)
    cut_requests(store.client, Cut("POST", f"/secret/metadata/{PREFIX}/{secret_id}"))
    with pytest.raises(TransientError):
        store.promote(secret_id, run_id)
    assert read_latest(root, f"{PREFIX}/{secret_id}")["data"]["password"].startswith("pw-new")  # written only
    resumed = make()
    resumed.promote(secret_id, run_id)  # recognises its own write: no second version
    assert read_latest(root, f"{PREFIX}/{secret_id}")["metadata"]["version"] == 2
    current, previous = resumed.get(secret_id), resumed.get(secret_id, Stage.PREVIOUS)
    assert current is not None and current.version_id == run_id
    assert previous is not None and previous.version_id == seed
    assert resumed.get(secret_id, Stage.PENDING) is None


def test_promote_write_answered_but_lost(make: Any, root: hvac.Client) -> None:
    """The write reached Vault and its answer was lost: the repeated promote finds its own version."""
    store = make()
    secret_id, _, run_id = staged(store)
    cut_requests(store.client, Cut("POST", f"/secret/data/{PREFIX}/{secret_id}", when="after"))
    with pytest.raises(TransientError):
        store.promote(secret_id, run_id)
    store.promote(secret_id, run_id)
    assert read_latest(root, f"{PREFIX}/{secret_id}")["metadata"]["version"] == 2
    current = store.get(secret_id)
    assert current is not None and current.version_id == run_id


def test_rollback_of_an_unrecorded_promote_restores_previous(make: Any, root: hvac.Client) -> None:
    """promote wrote the new version and failed before recording it; the rollback (unpromote) recognises the
    version as this run's and restores PREVIOUS, so the new value is not left live under a rolled-back run."""
    store = make()
    secret_id, seed, run_id = staged(store)
    cut_requests(store.client, Cut("POST", f"/secret/metadata/{PREFIX}/{secret_id}"))
    with pytest.raises(TransientError):
        store.promote(secret_id, run_id)
    store.unpromote(secret_id, run_id)
    latest = read_latest(root, f"{PREFIX}/{secret_id}")
    assert latest["metadata"]["version"] == 3 and latest["data"]["password"].startswith("pw-seed")
    current, pending = store.get(secret_id), store.get(secret_id, Stage.PENDING)
    assert current is not None and current.version_id == seed
    assert pending is not None and pending.version_id == run_id
    store.discard_pending(secret_id, run_id)
    assert store.get(secret_id, Stage.PENDING) is None


def test_crash_between_promote_record_and_unstage(make: Any, vault_server: VaultServer) -> None:
    store = make()
    secret_id, _, run_id = staged(store)
    cut_requests(store.client, Cut("DELETE", f"/secret/metadata/{PREFIX}/.rotator-pending/{secret_id}"))
    with pytest.raises(TransientError):
        store.promote(secret_id, run_id)
    assert vault_server.metadata(f"{PREFIX}/.rotator-pending/{secret_id}") is not None
    assert store.get(secret_id, Stage.PENDING) is None  # staged, but already CURRENT: not pending
    store.promote(secret_id, run_id)
    assert vault_server.metadata(f"{PREFIX}/.rotator-pending/{secret_id}") is None


def test_crash_between_unpromote_write_and_record(make: Any, root: hvac.Client) -> None:
    store = make()
    secret_id, seed, run_id = staged(store)
    store.promote(secret_id, run_id)
    cut_requests(store.client, Cut("POST", f"/secret/metadata/{PREFIX}/{secret_id}"))
    with pytest.raises(TransientError):
        store.unpromote(secret_id, run_id)
    assert read_latest(root, f"{PREFIX}/{secret_id}")["data"]["password"].startswith("pw-seed")  # not recorded
    store.unpromote(secret_id, run_id)
    assert read_latest(root, f"{PREFIX}/{secret_id}")["metadata"]["version"] == 3  # no second restore
    current, pending = store.get(secret_id), store.get(secret_id, Stage.PENDING)
    assert current is not None and current.version_id == seed
    assert pending is not None and pending.version_id == run_id


def test_deleted_or_destroyed_versions(make: Any, root: hvac.Client) -> None:
    store = make()
    secret_id, _, run_id = staged(store)
    store.promote(secret_id, run_id)
    root.secrets.kv.v2.destroy_secret_versions(path=f"{PREFIX}/{secret_id}", versions=[1])
    assert store.get(secret_id, Stage.PREVIOUS) is None
    with pytest.raises(StoreError, match="PREVIOUS"):
        store.unpromote(secret_id, run_id)
    root.secrets.kv.v2.delete_latest_version_of_secret(path=f"{PREFIX}/{secret_id}")
    assert store.get(secret_id, Stage.CURRENT) is None


# -- errors -------------------------------------------------------------------------------------------------


def test_missing_secret_names_the_path(make: Any) -> None:
    store = make()
    with pytest.raises(SecretNotFound, match=rf"secret/data/{PREFIX}/nope/x"):
        store.get("nope/x")
    with pytest.raises(SecretNotFound, match="nope/x"):
        store.put_pending("nope/x", sample_value(), new_run_id())


def test_permission_denied_names_the_capability_and_path(make: Any, vault_server: VaultServer) -> None:
    secret_id = new_secret_id("vault")
    make().put_current(secret_id, sample_value("seed"))
    name = "reader-" + uuid.uuid4().hex[:8]
    vault_server.policy(
        name,
        f'path "secret/data/{PREFIX}/{secret_id}" {{ capabilities = ["read"] }}\n'
        f'path "secret/metadata/{PREFIX}/{secret_id}" {{ capabilities = ["read"] }}\n',
    )
    store = make(token=vault_server.token([name]))
    assert store.get(secret_id) is not None
    with pytest.raises(StoreError, match="permission denied") as raised:
        store.put_pending(secret_id, sample_value("new"), new_run_id())
    message = str(raised.value)
    assert f"secret/data/{PREFIX}/.rotator-pending/{secret_id}" in message and "'read'" in message
    assert not isinstance(raised.value, TransientError)


def test_a_sealed_vault_is_transient(make: Any, vault_server: VaultServer) -> None:
    """A real 503: the server sealed (as a standby or a restarted Vault answers until unsealed)."""
    store = make()
    secret_id = new_secret_id("vault")
    store.put_current(secret_id, sample_value("seed"))
    with vault_server.sealed(), pytest.raises(TransientError, match=r"sealed.*retried"):
        store.get(secret_id)
    assert store.get(secret_id) is not None


def test_a_rate_limit_quota_is_transient(make: Any, vault_server: VaultServer, root: hvac.Client) -> None:
    """A real 429: a rate-limit quota on the secret's path."""
    store = make()
    secret_id = new_secret_id("vault")
    store.put_current(secret_id, sample_value("seed"))
    quota = "q-" + uuid.uuid4().hex[:8]
    root.adapter.post(
        f"/v1/sys/quotas/rate-limit/{quota}", json={"path": f"secret/data/{PREFIX}/{secret_id}", "rate": 1}
    )
    try:
        with pytest.raises(TransientError, match=r"rate limit quota exceeded.*retried"):
            for _ in range(5):
                store.get(secret_id)
    finally:
        root.adapter.delete(f"/v1/sys/quotas/rate-limit/{quota}")
    assert store.get(secret_id) is not None


@pytest.mark.parametrize("status", [500, 502])
def test_server_errors_are_transient(
    vault_fake: FakeVaultServer, setup: ComponentSetup, monkeypatch: pytest.MonkeyPatch, status: int
) -> None:
    """500 and 502 cannot be had from a real server on demand: the fake answers them, with Vault's error body."""
    monkeypatch.setenv(TOKEN_ENV, vault_fake.fake.add_token())
    options = {"url": vault_fake.url, "auth": {"method": "token", "token": f"env:{TOKEN_ENV}"}}
    store = load_store("vault-kv2", options, setup, "stores.vault")
    secret_id = new_secret_id("vault")
    store.put_current(secret_id, sample_value("seed"))
    vault_fake.fake.fail(status, f"/secret/data/{secret_id}")
    with pytest.raises(TransientError, match="retried"):
        store.get(secret_id)
    assert store.get(secret_id) is not None


def test_a_hung_vault_times_out_as_transient(make: Any, vault_server: VaultServer) -> None:
    store = make(timeout=0.5)
    secret_id = new_secret_id("vault")
    store.put_current(secret_id, sample_value("seed"))
    with vault_server.paused(), pytest.raises(TransientError, match="cannot reach Vault"):
        store.get(secret_id)
    assert store.get(secret_id) is not None


def test_connection_refused_is_transient(make: Any) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = make(url=f"http://127.0.0.1:{port}", timeout=2, auth={"method": "token", "token": "env:NO_SUCH_VAR"})
    store._logged_in = True  # no login round trip: the point is the refused connection
    with pytest.raises(TransientError, match="cannot reach Vault"):
        store.get("any/secret")


# -- auth ---------------------------------------------------------------------------------------------------


def approle_store(make: Any, vault_server: VaultServer, monkeypatch: pytest.MonkeyPatch, **role: Any) -> Any:
    policy = "rotator-" + uuid.uuid4().hex[:8]
    from tests.servers.vault import rotator_policy

    vault_server.policy(policy, rotator_policy())
    role_id, secret = vault_server.approle("r-" + uuid.uuid4().hex[:8], [policy], **role)
    monkeypatch.setenv("ROTATOR_TEST_APPROLE_SECRET", secret)
    return make(auth={"method": "approle", "role_id": role_id, "secret_id": "env:ROTATOR_TEST_APPROLE_SECRET"})


def test_approle_login(make: Any, vault_server: VaultServer, monkeypatch: pytest.MonkeyPatch) -> None:
    store = approle_store(make, vault_server, monkeypatch)
    secret_id = new_secret_id("vault")
    store.put_current(secret_id, sample_value("seed"))
    assert store.get(secret_id) is not None
    info = vault_server.client().auth.token.lookup(store.client.token)["data"]
    assert info["path"] == "auth/approle/login"


def test_wrong_approle_secret_is_a_store_error(
    make: Any, vault_server: VaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    role_id, _ = vault_server.approle("r-" + uuid.uuid4().hex[:8], ["rotator"])
    wrong = "wrong-" + uuid.uuid4().hex
    (tmp_path / "secret-id").write_text(wrong + "\n")
    store = make(auth={"method": "approle", "role_id": role_id, "secret_id": "file:secret-id"})
    with pytest.raises(StoreError, match="auth/approle/login") as raised:
        store.get("any/secret")
    assert wrong not in str(raised.value)


def test_kubernetes_login_reads_the_jwt_file(
    vault_fake: FakeVaultServer, setup: ComponentSetup, tmp_path: Path
) -> None:
    """On the fake: OpenBao's kubernetes auth method checks the JWT with a cluster's TokenReview API."""
    jwt = "eyJhbGciOiJSUzI1NiJ9." + new_run_id()
    vault_fake.fake.add_kubernetes_role("rotator", jwt)
    (tmp_path / "sa-token").write_text(jwt + "\n")
    options = {"url": vault_fake.url, "auth": {"method": "kubernetes", "role": "rotator", "jwt_path": "sa-token"}}
    store = load_store("vault-kv2", options, setup, "stores.vault")
    store.put_current(new_secret_id("vault"), sample_value("seed"))
    assert vault_fake.fake.logins[-1] == "kubernetes-rotator"


def test_aws_iam_login_signs_get_caller_identity(
    vault_fake: FakeVaultServer, setup: ComponentSetup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the fake: OpenBao has no aws auth method (the fake checks the signed request's shape only)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIATESTINGTESTING12")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    vault_fake.fake.add_aws_role("rotator-aws", server_id="vault.example.internal")
    auth = {"method": "aws", "role": "rotator-aws", "header_value": "vault.example.internal"}
    store = load_store("vault-kv2", {"url": vault_fake.url, "auth": auth}, setup, "stores.vault")
    secret_id = new_secret_id("vault")
    store.put_current(secret_id, sample_value("seed"))
    assert vault_fake.fake.logins[-1] == "aws-rotator-aws"
    auth = {**auth, "header_value": "someone-else"}
    wrong = load_store("vault-kv2", {"url": vault_fake.url, "auth": auth}, setup, "stores.vault")
    with pytest.raises(StoreError, match="auth/aws/login"):
        wrong.get(secret_id)


def test_token_is_renewed_when_a_third_of_its_ttl_is_left(make: Any, vault_server: VaultServer) -> None:
    token = vault_server.rotator_token_for(ttl="4s")
    store = make(token=token)
    log = RequestLog(store.client)
    secret_id = new_secret_id("vault")
    store.put_current(secret_id, sample_value("seed"))
    time.sleep(3.0)
    assert store.get(secret_id) is not None
    assert len(log.since(needle="/v1/auth/token/renew-self")) == 1
    time.sleep(2.0)  # past the original expiry: the renewal kept the token alive
    assert store.get(secret_id) is not None


def test_a_login_method_logs_in_again_at_max_ttl(
    make: Any, vault_server: VaultServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = approle_store(make, vault_server, monkeypatch, token_ttl="4s", token_max_ttl="4s")
    log = RequestLog(store.client)
    secret_id = new_secret_id("vault")
    store.put_current(secret_id, sample_value("seed"))
    logins = len(log.since(needle="/v1/auth/approle/login"))
    time.sleep(3.0)
    assert store.get(secret_id) is not None
    # renewal capped by the max TTL: a fresh login instead
    assert len(log.since(needle="/v1/auth/approle/login")) == logins + 1
    time.sleep(1.5)
    assert store.get(secret_id) is not None


def test_a_revoked_token_triggers_one_new_login(
    make: Any, vault_server: VaultServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = approle_store(make, vault_server, monkeypatch)
    secret_id = new_secret_id("vault")
    store.put_current(secret_id, sample_value("seed"))
    vault_server.client().auth.token.revoke(store.client.token)
    log = RequestLog(store.client)
    assert store.get(secret_id) is not None
    assert len(log.since(needle="/v1/auth/approle/login")) == 1


def test_a_revoked_static_token_is_permission_denied(make: Any, vault_server: VaultServer) -> None:
    token = vault_server.rotator_token_for()
    store = make(token=token)
    secret_id = new_secret_id("vault")
    store.put_current(secret_id, sample_value("seed"))
    vault_server.client().auth.token.revoke(token)
    with pytest.raises(StoreError, match="permission denied"):
        store.get(secret_id)


def test_namespace_keeps_secrets_apart(make: Any, vault_server: VaultServer) -> None:
    namespace = "team-" + uuid.uuid4().hex[:8]
    vault_server.client().sys.create_namespace(namespace)
    vault_server.client(namespace=namespace).sys.enable_secrets_engine("kv", path="secret", options={"version": "2"})
    token = vault_server.rotator_token_for(namespace=namespace)  # a token of the namespace, with its own policy
    store = make(token=token, namespace=f"{namespace}/")
    secret_id = new_secret_id("vault")
    store.put_current(secret_id, sample_value("seed"))
    assert vault_server.metadata(f"{PREFIX}/{secret_id}", namespace=namespace) is not None
    assert vault_server.metadata(f"{PREFIX}/{secret_id}") is None
    with pytest.raises(SecretNotFound, match=f"{namespace}/secret/data/{PREFIX}/{secret_id}-missing"):
        store.get(secret_id + "-missing")
    run_id = new_run_id()
    store.put_pending(secret_id, sample_value("new"), run_id)
    store.promote(secret_id, run_id)
    current = store.get(secret_id)
    assert current is not None and current.version_id == run_id


def test_other_mount_and_prefix(make: Any, vault_server: VaultServer) -> None:
    mount = vault_server.kv_mount()
    token = vault_server.token(
        [_policy_for(vault_server, mount, "teams/payments", pending_prefix="_staging")], ttl="10m"
    )
    store = make(token=token, mount_point=mount, path_prefix="/teams/payments/", pending_prefix="_staging")
    secret_id, _, run_id = staged(store)
    assert vault_server.metadata(f"teams/payments/{secret_id}", mount=mount) is not None
    assert vault_server.metadata(f"teams/payments/_staging/{secret_id}", mount=mount) is not None
    store.promote(secret_id, run_id)
    assert vault_server.metadata(f"teams/payments/_staging/{secret_id}", mount=mount) is None


def _policy_for(vault_server: VaultServer, mount: str, prefix: str, *, pending_prefix: str) -> str:
    from tests.servers.vault import rotator_policy

    name = "rotator-" + uuid.uuid4().hex[:8]
    vault_server.policy(name, rotator_policy(mount, prefix, pending_prefix))
    return name


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


def test_vault_calls_per_method(make: Any) -> None:
    """The figures in the README: HTTP requests each method sends to the real server (token known)."""
    store = make()
    log = RequestLog(store.client)
    secret_id = new_secret_id("vault")
    store.put_current(secret_id, sample_value("seed"))

    def cost(fn: Any) -> int:
        before = log.mark()
        fn()
        return len(log.since(before, secret_id))

    run_id = new_run_id()
    assert cost(lambda: store.get(secret_id)) == 1
    assert cost(lambda: store.get(secret_id, Stage.PREVIOUS)) == 1  # no PREVIOUS yet: metadata says so
    config_reads = len(log.since(needle="/v1/secret/config"))
    assert cost(lambda: store.put_pending(secret_id, sample_value("new"), run_id)) == 3
    assert len(log.since(needle="/v1/secret/config")) == config_reads + 1  # the mount's max_versions, then cached
    assert cost(lambda: store.get(secret_id, Stage.PENDING)) == 2
    assert cost(lambda: store.promote(secret_id, run_id)) == 5
    assert cost(lambda: store.get(secret_id, Stage.PREVIOUS)) == 2
    assert cost(lambda: store.unpromote(secret_id, run_id)) == 7
    assert cost(lambda: store.discard_pending(secret_id, run_id)) == 2
    assert cost(lambda: store.put_pending(secret_id, sample_value("again"), new_run_id())) == 3
    assert len(log.since(needle="/v1/secret/config")) == config_reads + 1
