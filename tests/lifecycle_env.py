"""PostgreSQL plans on the local store with a fingerprint key, driven in-process through the Workspace, for the
leak and import tests (the same engine `rotator leak`, `rotator import` and the daemon's leak endpoint use)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rotator.config import load_config
from rotator.fingerprints import create_key_file
from rotator.local_store import KEY_FILE_NAME, LocalStore
from rotator.local_store import create_key_file as create_store_key
from rotator.model import Stage, Trigger
from rotator.workspace import Workspace
from tests.servers.postgres import PgServer

_counter = itertools.count()


@dataclass
class LeakEnv:
    root: Path
    config_path: Path
    pg: PgServer
    plans: list[str]  # plan ids; plan i rotates role f"{prefix}{i}"
    users: dict[str, str]  # plan id -> role

    def workspace(self) -> Workspace:
        return Workspace(load_config(self.config_path))

    def value(self, plan_id: str, stage: Stage = Stage.CURRENT) -> dict[str, Any] | None:
        workspace = self.workspace()
        try:
            credential = workspace.store("local").get(f"db/{plan_id}", stage)
            return dict(credential.value) if credential else None
        finally:
            workspace.close()

    def logs_in(self, value: dict[str, Any] | None) -> bool:
        return value is not None and self.pg.can_login(value["username"], value["password"])

    def rotate(self, *plan_ids: str, revoke_old_now: bool = False) -> None:
        workspace = self.workspace()
        try:
            runner = workspace.runner()
            for plan_id in plan_ids:
                bound = workspace.bind(workspace.config.plan(plan_id))
                outcome = runner.rotate(bound, trigger=Trigger.MANUAL, revoke_old_now=revoke_old_now)
                assert outcome.ok, outcome
        finally:
            workspace.close()


def leak_env(root: Path, pg: PgServer, count: int, *, strategy: str = "alternating-users", extra: str = "") -> LeakEnv:
    """`count` plans, each its own role (with its clone for alternating users), grace 1h so that PREVIOUS stays
    valid until revoked; state_dir initialised as `rotator init` does (store key, store, fingerprint key)."""
    n = next(_counter)
    prefix = f"leak{n}_"
    plans = [f"lk{n}-{i}" for i in range(count)]
    users = {plan: f"{prefix}{i}" for i, plan in enumerate(plans)}
    blocks = "".join(
        f'\n[[plans]]\nid = "{plan}"\nplugin = "postgres"\nsecret = "db/{plan}"\nstrategy = "{strategy}"\n'
        'grace = "1h"\n'
        for plan in plans
    )
    config_path = root / "rotator.toml"
    config_path.write_text(f'[rotator]\nstate_dir = "state"\nstep_timeout = 20\n{extra}\n{blocks}')
    state = root / "state"
    state.mkdir(mode=0o700, exist_ok=True)
    create_store_key(state / KEY_FILE_NAME)
    create_key_file(state / "fingerprint.key")
    config = load_config(config_path)
    LocalStore(config.store_config("local").options, config.setup("local"), create=True).close()
    workspace = Workspace(config)
    store = workspace.store("local")
    admin = pg.secret(pg.superuser, pg.superuser_password)
    store.put_current("db/admin", admin)
    for plan, user in users.items():
        for role in (user, user + "_clone"):
            pg.drop_role(role)
        password = f"first-{user}-Password-0000000000"
        pg.make_role(user, password)
        value = pg.secret(user, password)
        if strategy == "alternating-users":
            value["masterarn"] = "db/admin"
        store.put_current(f"db/{plan}", value)
    workspace.close()
    return LeakEnv(root, config_path, pg, plans, users)
