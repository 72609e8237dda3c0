"""A config with PostgreSQL plans in both strategies, for the end-to-end and crash tests."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.cli_env import CliEnv
from tests.servers.postgres import PgServer, scram_matches

_counter = itertools.count()


@dataclass
class PgPlan:
    cli: CliEnv
    pg: PgServer
    plan_id: str
    secret: str
    username: str
    strategy: str

    @property
    def clone(self) -> str:
        return self.username + "_clone"

    def stage(self, stage: str) -> dict[str, Any] | None:
        result = self.cli.run("store", "get", self.secret, "--stage", stage)
        return result.json() if result.code == 0 else None

    def logs_in(self, value: dict[str, Any] | None) -> bool:
        return value is not None and self.pg.can_login(value["username"], value["password"])

    def assert_invariants(self) -> None:
        """DESIGN.md's invariants 1-3 as seen from the store and the server."""
        current = self.stage("CURRENT")
        assert current is not None
        assert self.logs_in(current), "invariant 1: the store's CURRENT authenticates"
        assert self.stage("PENDING") is None, "no PENDING after the run ended"
        stored = [v for v in (current, self.stage("PREVIOUS")) if v is not None]
        for user in (self.username, self.clone):
            verifier = self.pg.rolpassword(user)
            if verifier is None:
                continue
            matches = [v for v in stored if v["username"] == user and scram_matches(verifier, v["password"])]
            if user == current["username"]:
                assert matches and matches[0] == current, f"{user} must hold CURRENT's password"
            # any other user holds PREVIOUS (during grace) or a random password nobody knows (invariant 2):
            # a generated password is stored before it is applied, so an unstored one was never applied
        status = {row["plan"]: row for row in self.cli.run("status", "--json").json()}
        assert status[self.plan_id]["in_progress"] is None
        assert status[self.plan_id]["last_result"] in ("succeeded", "awaiting_revoke", "rolled_back")


def pg_plan_config(
    root: Path, pg: PgServer, strategy: str, username: str | None = None, grace: str = "1h", extra: str = ""
) -> PgPlan:
    n = next(_counter)
    username = username or f"app{n}"
    plan_id = f"pg{n}"
    secret = f"db/{plan_id}"
    config = root / "rotator.toml"
    config.write_text(f"""
[rotator]
state_dir = "state"
step_timeout = 20

[[plans]]
id = "{plan_id}"
plugin = "postgres"
secret = "{secret}"
strategy = "{strategy}"
grace = "{grace}"
{extra}
""")
    cli = CliEnv(root, config)
    assert cli.run("init").code == 0
    pg.drop_role(username + "_clone")
    pg.drop_role(username)
    first = f"first-{n}-Password-000000000000"
    pg.make_role(username, first)
    value = pg.secret(username, first)
    if strategy == "alternating-users":
        cli.seed("db/admin", pg.secret(pg.superuser, pg.superuser_password))
        value["masterarn"] = "db/admin"
    cli.seed(secret, value)
    return PgPlan(cli, pg, plan_id, secret, username, strategy)
