"""The redis rotation plugin against a real throwaway redis-server (tests/servers/redis.py).

The `default` user has a password (requirepass) and tests add ACL users: every login is AUTH user password over
TCP, and a wrong password really fails with WRONGPASS. The plugin is called directly, step by step, with a
RotationContext built here; `read_secret` is a dict.
"""

from __future__ import annotations

import contextlib
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from rotator_plugins.rotation.redis import RedisPlugin, password_hash

from rotator.components import ComponentSetup
from rotator.errors import (
    AuthenticationFailed,
    ConfigError,
    SecretNotFound,
    StepError,
    StepRefused,
    TestFailed,
    TransientError,
)
from rotator.interfaces import RotationPlugin
from rotator.model import Credential, PasswordPolicy, RotationContext, Stage
from rotator.options import OptionsError
from tests.cli_env import CliEnv
from tests.servers.redis import RedisServer, sha256_hex

PLAN = "cache"
ADMIN_ARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:redis-admin-AbCdEf"
NASTY_POLICY = PasswordPolicy(length=40, exclude_characters="")
# Users with only what an application needs: no ACL commands.
APP_RULES = "~app:* +get +set +ping"
# Users that may change their own password (and, as the docs warn, anyone's).
SELF_RULES = "~app:* +get +set +ping +acl|getuser +acl|setuser"


def cred(value: dict[str, Any], stage: Stage = Stage.CURRENT) -> Credential:
    return Credential(version_id=uuid.uuid4().hex, value=value, stages=frozenset({stage}))


def make_ctx(
    secrets: dict[str, dict[str, Any]] | None = None,
    policy: PasswordPolicy | None = None,
    strategy: str = "single-user",
) -> RotationContext:
    known = dict(secrets or {})

    def read_secret(secret_id: str) -> Credential:
        if secret_id not in known:
            raise SecretNotFound(f"no secret {secret_id}")
        return cred(known[secret_id])

    return RotationContext(
        plan_id=PLAN,
        run_id=uuid.uuid4().hex,
        secret_id="prod/cache/redis",
        strategy=strategy,
        options={},
        password_policy=policy or PasswordPolicy(),
        read_secret=read_secret,
    )


@pytest.fixture
def users(redis_server: RedisServer) -> Iterator[Callable[[str], str]]:
    made: list[str] = []

    def name(prefix: str) -> str:
        user = f"{prefix}-{uuid.uuid4().hex[:8]}"
        made.append(user)
        return user

    yield name
    for user in made:
        redis_server.drop_user(user)


@pytest.fixture
def admin(redis_server: RedisServer) -> dict[str, Any]:
    """The `default` user (requirepass) as an admin secret; host and port default to the target's."""
    return {"username": "default", "password": redis_server.default_password}


@pytest.fixture
def plugin() -> RedisPlugin:
    return RedisPlugin({"connect_timeout": 3}, None)


def rotate(plugin: RedisPlugin, ctx: RotationContext, current: Credential, *, twice: bool = True) -> Credential:
    """create, stage, test (each step twice when `twice`, as after a crash): returns PENDING."""
    pending = cred(plugin.create(ctx, current), Stage.PENDING)
    for _ in range(2 if twice else 1):
        plugin.stage(ctx, current, pending)
    for _ in range(2 if twice else 1):
        plugin.test(ctx, pending)
    return pending


# -- options and basics -------------------------------------------------------------------------------------------


def test_options_are_validated(tmp_path: Path) -> None:
    plugin = RedisPlugin({}, None)
    assert isinstance(plugin, RotationPlugin)
    assert plugin.strategies == ("single-user",)
    with pytest.raises(OptionsError) as wrong:
        RedisPlugin({"admin": "x"}, None)
    assert wrong.value.option == "admin" and wrong.value.exit_code == 2
    with pytest.raises(OptionsError) as wrong:
        RedisPlugin({"persist": "sometimes"}, None)
    assert wrong.value.option == "persist" and wrong.value.exit_code == 2
    setup = ComponentSetup(name=PLAN, config_dir=tmp_path, state_dir=tmp_path, config_file=str(tmp_path / "r.toml"))
    with pytest.raises(ConfigError, match="ssl_ca"):
        RedisPlugin({"ssl_ca": "missing.pem"}, setup)
    (tmp_path / "ca.pem").write_text("x")
    assert RedisPlugin({"ssl_ca": "ca.pem"}, setup)._ssl_ca == str(tmp_path / "ca.pem")


def test_password_hash_is_what_redis_stores(redis_server: RedisServer, users: Callable[[str], str]) -> None:
    user = users("hash")
    redis_server.command("ACL", "SETUSER", user, "on", ">plain-text-pw", "+ping")  # the fixture, not the plugin
    assert redis_server.password_hashes(user) == {password_hash("plain-text-pw")}


def test_create_keeps_the_user_and_only_one_strategy(plugin: RedisPlugin) -> None:
    current = cred({"host": "cache", "port": 6379, "username": "app", "password": "old-password-1"})
    value = plugin.create(make_ctx(), current)
    assert value["username"] == "app" and value["host"] == "cache"
    assert value["password"] != "old-password-1" and len(value["password"]) == 32
    with pytest.raises(StepError, match="no window"):
        plugin.create(make_ctx(strategy="alternating-users"), current)


# -- the rotation ---------------------------------------------------------------------------------------------------


def test_stage_keeps_both_revoke_removes_old_as_admin(
    redis_server: RedisServer, plugin: RedisPlugin, admin: dict[str, Any], users: Callable[[str], str]
) -> None:
    user = users("app")
    redis_server.make_user(user, "old-password-1", rules=APP_RULES)
    ctx = make_ctx({ADMIN_ARN: admin}, NASTY_POLICY)
    current = cred(redis_server.secret(user, "old-password-1", masterarn=ADMIN_ARN))
    pending = rotate(plugin, ctx, current)
    assert redis_server.can_login(user, "old-password-1")  # both work during grace: no window
    assert redis_server.can_login(user, pending["password"])
    assert redis_server.password_hashes(user) == {sha256_hex("old-password-1"), sha256_hex(pending["password"])}
    for _ in range(2):
        plugin.revoke(ctx, current, pending)
    assert not redis_server.can_login(user, "old-password-1")  # WRONGPASS
    with pytest.raises(redis.exceptions.AuthenticationError, match="invalid username-password pair"):
        redis_server.client(user, "old-password-1").ping()
    assert redis_server.can_login(user, pending["password"])
    assert redis_server.password_hashes(user) == {sha256_hex(pending["password"])}
    # the user's rules are untouched
    with contextlib.closing(redis_server.admin()) as client:
        info = client.acl_getuser(user)
    assert "on" in info["flags"] and set(info["keys"]) == {"~app:*"}
    plugin.discard(ctx, pending)


def test_unstage_removes_new_and_keeps_old(
    redis_server: RedisServer, plugin: RedisPlugin, admin: dict[str, Any], users: Callable[[str], str]
) -> None:
    user = users("undo")
    redis_server.make_user(user, "old-password-2", rules=APP_RULES)
    ctx = make_ctx({ADMIN_ARN: admin})
    current = cred(redis_server.secret(user, "old-password-2", masterarn=ADMIN_ARN))
    pending = rotate(plugin, ctx, current)
    for _ in range(2):
        plugin.unstage(ctx, current, pending)
    assert redis_server.can_login(user, "old-password-2")
    assert not redis_server.can_login(user, pending["password"])
    assert redis_server.password_hashes(user) == {sha256_hex("old-password-2")}
    with pytest.raises(TestFailed, match="invalid username-password pair"):
        plugin.test(ctx, pending)
    # unstage also puts CURRENT back when something removed it
    pending = rotate(plugin, ctx, current)
    redis_server.command("ACL", "SETUSER", user, f"!{sha256_hex('old-password-2')}")
    plugin.unstage(ctx, current, pending)
    assert redis_server.password_hashes(user) == {sha256_hex("old-password-2")}


def test_the_user_rotates_itself_without_an_admin(
    redis_server: RedisServer, plugin: RedisPlugin, users: Callable[[str], str]
) -> None:
    user = users("self")
    redis_server.make_user(user, "old-password-3", rules=SELF_RULES)
    ctx = make_ctx()
    current = cred(redis_server.secret(user, "old-password-3"))
    pending = rotate(plugin, ctx, current)
    assert redis_server.can_login(user, "old-password-3") and redis_server.can_login(user, pending["password"])
    for _ in range(2):
        plugin.revoke(ctx, current, pending)
    assert not redis_server.can_login(user, "old-password-3")
    # a rollback after CURRENT itself was lost: unstage logs in with PENDING and restores CURRENT
    nxt = cred(plugin.create(ctx, pending), Stage.PENDING)
    plugin.stage(ctx, pending, nxt)
    redis_server.command("ACL", "SETUSER", user, f"!{sha256_hex(pending['password'])}")
    plugin.unstage(ctx, pending, nxt)
    assert redis_server.password_hashes(user) == {sha256_hex(pending["password"])}


def test_without_acl_permission_the_error_says_what_to_grant(
    redis_server: RedisServer, plugin: RedisPlugin, users: Callable[[str], str]
) -> None:
    user = users("noacl")
    redis_server.make_user(user, "old-password-4", rules=APP_RULES)
    ctx = make_ctx()
    current = cred(redis_server.secret(user, "old-password-4"))
    pending = cred(plugin.create(ctx, current), Stage.PENDING)
    with pytest.raises(StepError) as err:
        plugin.stage(ctx, current, pending)
    text = str(err.value)
    assert "+acl|setuser" in text and "admin_secret_id" in text
    assert "old-password-4" not in text and pending["password"] not in text
    assert redis_server.password_hashes(user) == {sha256_hex("old-password-4")}


def test_admin_from_the_option_and_a_wrong_admin(
    redis_server: RedisServer, admin: dict[str, Any], users: Callable[[str], str]
) -> None:
    user = users("opt")
    redis_server.make_user(user, "old-password-5", rules=APP_RULES)
    plugin = RedisPlugin({"admin_secret_id": "redis/admin"}, None)
    current = cred(redis_server.secret(user, "old-password-5"))
    rotate(plugin, make_ctx({"redis/admin": admin}), current, twice=False)
    bad = make_ctx({"redis/admin": {**admin, "password": "wrong-admin-password"}})
    pending = cred(plugin.create(bad, current), Stage.PENDING)
    with pytest.raises(AuthenticationFailed) as err:
        plugin.stage(bad, current, pending)
    assert "redis/admin" in str(err.value) and "wrong-admin-password" not in str(err.value)
    elsewhere = make_ctx({"redis/admin": {**admin, "host": "cache.elsewhere.example"}})
    with pytest.raises(StepError, match="is for host"):
        plugin.stage(elsewhere, current, pending)
    with pytest.raises(StepRefused, match="rotator store put redis/admin"):  # refused before anything is sent
        plugin.stage(make_ctx(), current, pending)


def test_refuses_missing_and_nopass_users(
    redis_server: RedisServer, plugin: RedisPlugin, admin: dict[str, Any], users: Callable[[str], str]
) -> None:
    ctx = make_ctx({ADMIN_ARN: admin})
    ghost = users("ghost")
    current = cred(redis_server.secret(ghost, "ghost-password-1", masterarn=ADMIN_ARN))
    with pytest.raises(StepError, match="never creates"):
        plugin.stage(ctx, current, cred(plugin.create(ctx, current), Stage.PENDING))
    assert redis_server.password_hashes(ghost) is None  # ACL SETUSER would have created it
    open_user = users("nopass")
    redis_server.command("ACL", "SETUSER", open_user, "on", "nopass", "+ping")
    current = cred(redis_server.secret(open_user, "anything-goes-1", masterarn=ADMIN_ARN))
    with pytest.raises(StepError, match="nopass"):
        plugin.stage(ctx, current, cred(plugin.create(ctx, current), Stage.PENDING))


def test_revoke_never_removes_the_last_working_password(
    redis_server: RedisServer, plugin: RedisPlugin, admin: dict[str, Any], users: Callable[[str], str]
) -> None:
    user = users("last")
    redis_server.make_user(user, "previous-pass-1", rules=APP_RULES)
    ctx = make_ctx({ADMIN_ARN: admin})
    previous = cred(redis_server.secret(user, "previous-pass-1", masterarn=ADMIN_ARN))
    current = cred(redis_server.secret(user, "never-staged-1", masterarn=ADMIN_ARN))
    with pytest.raises(StepError, match="CURRENT's password is not among"):
        plugin.revoke(ctx, previous, current)
    assert redis_server.can_login(user, "previous-pass-1")
    other = cred(redis_server.secret("someone-else", "x-12345678", masterarn=ADMIN_ARN))
    with pytest.raises(StepError, match="will not touch"):
        plugin.revoke(ctx, other, current)


def test_test_step_maps_errors(redis_server: RedisServer, plugin: RedisPlugin, users: Callable[[str], str]) -> None:
    user = users("probe")
    redis_server.make_user(user, "probe-password-1", rules=APP_RULES)
    ctx = make_ctx()
    plugin.test(ctx, cred(redis_server.secret(user, "probe-password-1")))
    with pytest.raises(TestFailed):
        plugin.test(ctx, cred(redis_server.secret(user, "wrong-password-1")))
    redis_server.command("ACL", "SETUSER", user, "off")
    with pytest.raises(TestFailed, match="disabled"):
        plugin.test(ctx, cred(redis_server.secret(user, "probe-password-1")))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    with pytest.raises(TransientError) as err:
        plugin.test(ctx, cred({**redis_server.secret(user, "probe-password-1"), "port": closed_port}))
    assert "probe-password-1" not in str(err.value)
    with pytest.raises(StepError, match="has no password"):
        plugin.test(ctx, cred({"host": "h", "username": "u"}))
    with pytest.raises(StepError, match="not a TCP port"):
        plugin.test(ctx, cred({"host": "h", "port": "x", "password": "p-12345678"}))


def test_the_default_user_rotates_too(redis_server: RedisServer, plugin: RedisPlugin) -> None:
    """No username means `default`, the requirepass user: rotate it and put it back."""
    original = redis_server.default_password
    ctx = make_ctx()
    current = cred({"host": redis_server.host, "port": redis_server.port, "password": original})
    pending = rotate(plugin, ctx, current)
    assert pending.get("username") is None
    try:
        assert redis_server.can_login("default", original) and redis_server.can_login("default", pending["password"])
        plugin.unstage(ctx, current, pending)
        assert not redis_server.can_login("default", pending["password"])
    finally:
        redis_server.command("ACL", "SETUSER", "default", f"#{sha256_hex(original)}")
    assert redis_server.can_login("default", original)


# -- TLS, persistence, what reaches the server -------------------------------------------------------------------


def test_tls_verified_with_the_ca_and_refused_without(
    redis_server: RedisServer, admin: dict[str, Any], users: Callable[[str], str]
) -> None:
    user = users("tls")
    redis_server.make_user(user, "tls-password-1", rules=APP_RULES)
    value = {**redis_server.secret(user, "tls-password-1", ssl=True), "port": redis_server.tls_port}
    verified = RedisPlugin({"ssl_ca": str(redis_server.ca_path)}, None)
    ctx = make_ctx({"redis/admin": admin})
    current = cred({**value, "masterarn": "redis/admin"})  # the admin inherits "ssl" and the TLS port
    pending = rotate(verified, ctx, current)
    assert redis_server.can_login(user, pending["password"], tls=True)
    with pytest.raises(StepError) as err:  # the system CAs do not know the test CA: not transient
        RedisPlugin({}, None).test(ctx, pending)
    assert not isinstance(err.value, TransientError) and "ssl_ca" in str(err.value)
    RedisPlugin({"tls": "required"}, None).test(ctx, pending)  # encrypted, unverified


def test_persist_acl_save_writes_the_acl_file(admin: dict[str, Any]) -> None:
    server = RedisServer.start(aclfile=True)
    try:
        assert server.aclfile is not None
        server.make_user("app", "old-password-6", rules=APP_RULES)
        server.command("ACL", "SAVE")
        plugin = RedisPlugin({"persist": "acl-save"}, None)
        ctx = make_ctx({"admin": {"password": server.default_password}})
        current = cred(server.secret("app", "old-password-6", masterarn="admin"))
        pending = rotate(plugin, ctx, current, twice=False)
        text = server.aclfile.read_text()
        assert sha256_hex(pending["password"]) in text and sha256_hex("old-password-6") in text
        plugin.revoke(ctx, current, pending)
        text = server.aclfile.read_text()
        assert sha256_hex(pending["password"]) in text and sha256_hex("old-password-6") not in text
        assert pending["password"] not in text
        # started without a config file, CONFIG REWRITE fails: a StepError that names the option
        rewrite = RedisPlugin({"persist": "config-rewrite"}, None)
        later = cred(rewrite.create(ctx, pending), Stage.PENDING)
        with pytest.raises(StepError, match="persist") as err:
            rewrite.stage(ctx, pending, later)
        assert later["password"] not in str(err.value) and sha256_hex(later["password"]) not in str(err.value)
    finally:
        server.stop()


def test_only_hashes_reach_the_server(
    redis_server: RedisServer,
    plugin: RedisPlugin,
    admin: dict[str, Any],
    users: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every command the plugin sends, except the AUTH/HELLO that logs in, is free of plaintext passwords."""
    user = users("wire")
    redis_server.make_user(user, "old-password-7", rules=APP_RULES)
    sent: list[tuple[Any, ...]] = []
    original = redis.connection.Connection.send_command

    def record(self: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(args)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(redis.connection.Connection, "send_command", record)
    ctx = make_ctx({ADMIN_ARN: admin}, NASTY_POLICY)
    current = cred(redis_server.secret(user, "old-password-7", masterarn=ADMIN_ARN))
    pending = rotate(plugin, ctx, current, twice=False)
    plugin.revoke(ctx, current, pending)
    nxt = rotate(plugin, ctx, pending, twice=False)
    plugin.unstage(ctx, pending, nxt)
    setusers = [args for args in sent if args[:2] == ("ACL", "SETUSER")]
    assert len(setusers) == 4  # stage, revoke, stage, unstage
    passwords = ("old-password-7", pending["password"], nxt["password"])
    for args in sent:
        if args and str(args[0]).upper() in ("AUTH", "HELLO"):
            continue
        for password in passwords:
            assert all(password not in str(arg) for arg in args)
    assert setusers[0][3] == f"#{sha256_hex(pending['password'])}"
    assert setusers[1][3] == f"!{sha256_hex('old-password-7')}"
    assert setusers[2][3] == f"#{sha256_hex(nxt['password'])}"
    assert setusers[3][3] == f"!{sha256_hex(nxt['password'])}"
    log = redis_server.slowlog_text()
    assert all(password not in log for password in passwords)


@pytest.mark.parametrize("name", ["we'ird\"user", "pct%s%%", "back\\slash;", "ünï-cøde", "`tick`", "a:b:c"])
def test_nasty_user_names(redis_server: RedisServer, plugin: RedisPlugin, admin: dict[str, Any], name: str) -> None:
    user = f"{name}{uuid.uuid4().hex[:4]}"
    try:
        redis_server.make_user(user, "old-password-8", rules=APP_RULES)
        ctx = make_ctx({ADMIN_ARN: admin}, NASTY_POLICY)
        current = cred(redis_server.secret(user, "old-password-8", masterarn=ADMIN_ARN))
        pending = rotate(plugin, ctx, current)
        plugin.revoke(ctx, current, pending)
        assert redis_server.can_login(user, pending["password"])
        assert not redis_server.can_login(user, "old-password-8")
    finally:
        redis_server.drop_user(user)


# -- end to end through the `rotator` command (engine, local store, journal) --------------------------------------


def test_end_to_end_rotation_grace_revoke_and_rollback(
    tmp_path: Path, redis_server: RedisServer, admin: dict[str, Any], users: Callable[[str], str]
) -> None:
    user = users("e2e")
    redis_server.make_user(user, f"first-{user}-Password-0", rules=APP_RULES)
    config = tmp_path / "rotator.toml"
    config.write_text(f"""
[rotator]
state_dir = "state"
step_timeout = 20

[[plans]]
id = "cache"
plugin = {{type = "redis", admin_secret_id = "redis/admin"}}
secret = "redis/{user}"
strategy = "single-user"
grace = "1h"
""")
    cli = CliEnv(tmp_path, config)
    assert cli.run("init").code == 0
    cli.seed("redis/admin", admin)
    cli.seed(f"redis/{user}", redis_server.secret(user, f"first-{user}-Password-0"))

    def stage(name: str) -> dict[str, Any] | None:
        result = cli.run("store", "get", f"redis/{user}", "--stage", name)
        return result.json() if result.code == 0 else None

    old = stage("CURRENT")
    result = cli.run("rotate-now", "cache", "--json", "--log-level", "debug")
    assert result.code == 0, result.stdout + result.stderr
    new = stage("CURRENT")
    assert old is not None and new is not None and new["password"] != old["password"]
    assert redis_server.can_login(user, old["password"]) and redis_server.can_login(user, new["password"])  # grace
    revoked = cli.run("rotate-now", "cache", "--revoke-old", "now", "--json", "--log-level", "debug")
    assert revoked.code == 0, revoked.stdout + revoked.stderr
    latest = stage("CURRENT")
    assert latest is not None
    assert redis_server.password_hashes(user) == {sha256_hex(latest["password"])}  # old and new both revoked

    failed = cli.run("rotate-now", "cache", "--json", env={"ROTATOR_FAILPOINTS": "after-test=error"})
    assert failed.code == 1 and failed.json()["results"][0]["outcome"] == "rolled_back"
    assert stage("CURRENT") == latest and stage("PENDING") is None
    assert redis_server.password_hashes(user) == {sha256_hex(latest["password"])}  # the staged one is gone

    text = "\n".join(r.stdout + r.stderr for r in (result, revoked, failed))
    files = b"".join(p.read_bytes() for p in cli.state_files())
    for password in (old["password"], new["password"], latest["password"]):
        assert password not in text and password.encode() not in files
