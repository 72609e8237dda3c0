"""Plugin harnesses (rotator.testing.PluginHarness) for every built-in rotation plugin, over real servers.

Each harness makes a fresh credential per scenario at the target (a role, an account, an ACL user, an IAM user
with a key) and removes it afterwards, so scenarios never share one and the servers can be session-wide.
`authenticates` always asks the target itself over the network (a TCP login with the password; IAM's own key
list), never the plugin.

Adding a harness for an API-key plugin written against an HTTP fake (tests/fakes/): subclass PluginHarness with
`plugin_type` (the entry point), `plugin_options` pointing the plugin at the fake's URL (and its CA bundle),
`seed` asking the fake to mint a key for a new account, `authenticates` asking the fake whether the key is live,
and `unknown_valid` listing the account's live keys that none of the stored values names (a key minted just
before a crash): the shape of `AwsIamKeyHarness` below. Then add a `Test...(PluginContract)` class in
test_plugins.py whose `plugin_harness` fixture builds it from the fake's fixture.
"""

from __future__ import annotations

import string
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from rotator import generate_password, generate_token
from rotator.testing.plugins import PluginHarness
from tests.servers.aws import MotoServer
from tests.servers.mariadb import MariaDbServer, account
from tests.servers.postgres import PgServer
from tests.servers.redis import RedisServer, sha256_hex

SINGLE, ALTERNATING = "single-user", "alternating-users"
ADMIN_SECRET = "contract/admin"


def _name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


class GeneratedHarness(PluginHarness):
    """`generated`: no target. A value is "valid" when it has the configured shape (43 base64url characters, the
    default 32 bytes): what a consumer that reads the store can use."""

    name = "generated"
    plugin_type = "generated"
    has_target = False

    def seed(self, strategy: str) -> dict[str, Any]:
        return {"value": generate_token(32, "urlsafe"), "key_id": f"signing-{uuid.uuid4().hex[:8]}"}

    def authenticates(self, value: Mapping[str, Any]) -> bool:
        secret = value.get("value")
        return isinstance(secret, str) and len(secret) == 43 and set(secret) <= _URLSAFE


_URLSAFE = frozenset(string.ascii_letters + string.digits + "-_")


class PostgresHarness(PluginHarness):
    """`postgres` on the session's throwaway cluster: scram-sha-256 over TCP, so a wrong password really fails.
    The admin of alternating-users is a CREATEROLE role (least privilege on PostgreSQL 15), not the superuser."""

    name = "postgres"
    plugin_type = "postgres"
    strategies = (SINGLE, ALTERNATING)

    def __init__(self, pg: PgServer) -> None:
        self.pg = pg
        self.admin_name = _name("contract_admin")
        self.admin_password = generate_password()
        pg.make_role(self.admin_name, self.admin_password, createrole=True)

    def plugin_options(self, strategy: str) -> dict[str, Any]:
        return {"connect_timeout": 5}

    def seed(self, strategy: str) -> dict[str, Any]:
        user, password = _name("ct"), generate_password()
        self.pg.make_role(user, password)
        extra = {"masterarn": ADMIN_SECRET} if strategy == ALTERNATING else {}
        return self.pg.secret(user, password, **extra)

    def other_secrets(self, strategy: str, seeded: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        if strategy != ALTERNATING:
            return {}
        return {ADMIN_SECRET: self.pg.secret(self.admin_name, self.admin_password)}

    def authenticates(self, value: Mapping[str, Any]) -> bool:
        return self.pg.can_login(str(value["username"]), str(value["password"]))

    def previous_still_valid_during_grace(self, strategy: str) -> bool:
        return strategy == ALTERNATING

    def target_log_mark(self) -> int:
        return self.pg.log_size()

    def target_log_since(self, mark: int) -> str:
        return self.pg.log_text(mark)  # log_statement=all: every statement any client sent

    def cleanup(self, seeded: Mapping[str, Any]) -> None:
        for role in (f"{seeded['username']}_clone", str(seeded["username"])):
            self.pg.drop_role(role)

    def close(self) -> None:
        self.pg.drop_role(self.admin_name)


class MySqlHarness(PluginHarness):
    """`mysql` on the session's throwaway MariaDB: TCP logins with the password (a wrong one fails with 1045).
    The admin is like RDS's master user: every privilege WITH GRANT OPTION, and PROXY."""

    name = "mysql"
    plugin_type = "mysql"
    strategies = (SINGLE, ALTERNATING)

    def __init__(self, db: MariaDbServer) -> None:
        self.db = db
        self.admin_name = _name("ct_admin")
        self.admin_password = generate_password()
        db.make_user(self.admin_name, self.admin_password)
        db.execute(f"GRANT ALL PRIVILEGES ON *.* TO {account(self.admin_name)} WITH GRANT OPTION")
        db.execute(f"GRANT PROXY ON ''@'%%' TO {account(self.admin_name)} WITH GRANT OPTION")

    def plugin_options(self, strategy: str) -> dict[str, Any]:
        # TLS verified against the server's throwaway CA. (The default, "preferred", makes PyMySQL 1.2 build an
        # SSL context from the system's CA store for every connection: about 80 ms of CPU each here.)
        return {"connect_timeout": 5, "ssl_mode": "verify_identity", "ssl_ca": str(self.db.ca_path)}

    def seed(self, strategy: str) -> dict[str, Any]:
        user, password = _name("ct"), generate_password()
        self.db.make_user(user, password)
        extra = {"masterarn": ADMIN_SECRET} if strategy == ALTERNATING else {}
        return self.db.secret(user, password, **extra)

    def other_secrets(self, strategy: str, seeded: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        if strategy != ALTERNATING:
            return {}
        return {ADMIN_SECRET: self.db.secret(self.admin_name, self.admin_password)}

    def authenticates(self, value: Mapping[str, Any]) -> bool:
        return self.db.can_login(str(value["username"]), str(value["password"]))

    def previous_still_valid_during_grace(self, strategy: str) -> bool:
        return strategy == ALTERNATING

    def target_log_mark(self) -> int:
        return self.db.general_log_size()

    def target_log_since(self, mark: int) -> str:
        return self.db.general_log_text(mark)  # every statement exactly as the server received it

    def cleanup(self, seeded: Mapping[str, Any]) -> None:
        for user in (str(seeded["username"]), f"{seeded['username']}_clone"):
            self.db.drop_user(user)

    def close(self) -> None:
        self.db.drop_user(self.admin_name)


class RedisHarness(PluginHarness):
    """`redis` on the session's throwaway server. ACL SETUSER runs as the admin secret named by masterarn (the
    `default` user). An ACL user lists the SHA-256 of each password it accepts, so `unknown_valid` is exact."""

    name = "redis"
    plugin_type = "redis"
    rules = "~app:* +get +set +ping"

    def __init__(self, server: RedisServer) -> None:
        self.server = server

    def plugin_options(self, strategy: str) -> dict[str, Any]:
        return {"connect_timeout": 5}

    def seed(self, strategy: str) -> dict[str, Any]:
        user, password = _name("ct"), generate_password()
        self.server.make_user(user, password, rules=self.rules)
        return self.server.secret(user, password, masterarn=ADMIN_SECRET)

    def other_secrets(self, strategy: str, seeded: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        return {ADMIN_SECRET: {"username": "default", "password": self.server.default_password}}

    def authenticates(self, value: Mapping[str, Any]) -> bool:
        return self.server.can_login(str(value["username"]), str(value["password"]))

    def unknown_valid(self, seeded: Mapping[str, Any], known: Sequence[Mapping[str, Any]]) -> list[str]:
        user = str(seeded["username"])
        held = {sha256_hex(str(v["password"])) for v in known if v.get("username") == user}
        hashes = self.server.password_hashes(user) or set()
        return [f"{user}: password #{h[:12]}..." for h in sorted(hashes - held)]

    def target_log_since(self, mark: int) -> str:
        # slowlog-log-slower-than 0: every command (the last 10,000, all scenarios: their secrets are all random)
        return self.server.slowlog_text()

    def cleanup(self, seeded: Mapping[str, Any]) -> None:
        self.server.drop_user(str(seeded["username"]))


class AwsIamKeyHarness(PluginHarness):
    """`aws-iam-key` on moto's server. moto's STS accepts any signature and an Inactive key still signs (see
    TEST-SERVERS.md), so a key "authenticates" when IAM lists it as Active for its user: what AWS itself checks
    first. Revoke and discard are then seen exactly as AWS records them (Inactive, or deleted)."""

    name = "aws-iam-key"
    plugin_type = "aws-iam-key"

    def __init__(self, moto: MotoServer) -> None:
        self.moto = moto
        self.iam = moto.client("iam")

    def plugin_options(self, strategy: str) -> dict[str, Any]:
        return {"endpoint_url": self.moto.endpoint_url, "region": self.moto.region, "propagation_timeout": 5}

    def seed(self, strategy: str) -> dict[str, Any]:
        user = f"ct-{uuid.uuid4().hex[:10]}"
        self.iam.create_user(UserName=user)
        key = self.iam.create_access_key(UserName=user)["AccessKey"]
        return {"UserName": user, "AccessKeyId": key["AccessKeyId"], "SecretAccessKey": key["SecretAccessKey"]}

    def _keys(self, user: str) -> dict[str, str]:
        listed = self.iam.list_access_keys(UserName=user)["AccessKeyMetadata"]
        return {str(k["AccessKeyId"]): str(k["Status"]) for k in listed}

    def authenticates(self, value: Mapping[str, Any]) -> bool:
        return self._keys(str(value["UserName"])).get(str(value["AccessKeyId"])) == "Active"

    def unknown_valid(self, seeded: Mapping[str, Any], known: Sequence[Mapping[str, Any]]) -> list[str]:
        held = {str(v.get("AccessKeyId")) for v in known}
        return [f"{key} ({status})" for key, status in self._keys(str(seeded["UserName"])).items() if key not in held]

    def refused_value(self, seeded: Mapping[str, Any]) -> dict[str, Any]:
        # moto ignores the secret half, so a refused value is a key IAM never issued (AWS would refuse both).
        return {
            "UserName": seeded["UserName"],
            "AccessKeyId": "AKIA" + uuid.uuid4().hex[:16].upper(),
            "SecretAccessKey": generate_token(30, "urlsafe"),
        }

    def cleanup(self, seeded: Mapping[str, Any]) -> None:
        user = str(seeded["UserName"])
        for key in self._keys(user):
            self.iam.delete_access_key(UserName=user, AccessKeyId=key)
        self.iam.delete_user(UserName=user)
