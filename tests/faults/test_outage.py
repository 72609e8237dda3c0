"""A real outage during a real rotate-now: `pg_ctl restart -m immediate` of the target, then an immediate stop
with the server down for three seconds, while 25 plans rotate 8 at a time. Every run must end rotated or cleanly
rolled back (zero stuck) and every CURRENT must log in, without `rotator resume`: transient errors are retried
until the step's deadline, and a step refused at connect needs no compensation."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rotator.config import load_config
from rotator.workspace import Workspace
from tests.cli_env import CliEnv
from tests.servers.postgres import PgServer, ServerUnavailable
from tests.servers.watch import unavailable as _unavailable

PLANS = 25


@pytest.fixture
def restartable_pg() -> Iterator[PgServer]:
    """A cluster of its own (the session's is shared): commits are synchronous, so that a commit the client saw
    survives the immediate restart, as on any production server."""
    try:
        server = PgServer.start(extra_options=("-c synchronous_commit=on",))
    except ServerUnavailable as exc:
        _unavailable(str(exc))
        raise AssertionError("unreachable") from None
    try:
        yield server
    finally:
        server.stop()


def _steps_journaled(journal: Path) -> int:
    try:
        with sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=1) as db:
            return int(db.execute("select count(*) from steps").fetchone()[0])
    except sqlite3.Error:
        return 0


@pytest.mark.slow
def test_target_restarted_immediately_during_rotate_now_all(tmp_path: Path, restartable_pg: PgServer) -> None:
    pg = restartable_pg
    pg.make_role("outage_admin", "admin-Password-000000000000", superuser=True)
    plans = []
    for n in range(PLANS):
        strategy = "alternating-users" if n % 2 else "single-user"
        plans.append(
            f'[[plans]]\nid = "p{n}"\nplugin = "postgres"\nsecret = "db/p{n}"\nstrategy = "{strategy}"\ngrace = "0"\n'
        )
    config = tmp_path / "rotator.toml"
    config.write_text('[rotator]\nstate_dir = "state"\nstep_timeout = 60\nconcurrency = 8\n\n' + "\n".join(plans))
    cli = CliEnv(tmp_path, config)
    assert cli.run("init").code == 0
    workspace = Workspace(load_config(config))
    store = workspace.store("local")
    store.put_current("db/admin", pg.secret("outage_admin", "admin-Password-000000000000"))
    for n in range(PLANS):
        password = f"first-{n}-Password-0000000000"
        pg.make_role(f"outage{n}", password)
        extra = {"masterarn": "db/admin"} if n % 2 else {}
        store.put_current(f"db/p{n}", pg.secret(f"outage{n}", password, **extra))
    workspace.close()

    # Short sleeps between steps spread the 25 rotations over a few seconds, so the restarts land inside steps.
    proc = cli.popen(
        "rotate-now",
        "--all",
        "--json",
        env={"ROTATOR_FAILPOINTS": "after-create=sleep:0.1,after-stage=sleep:0.15,after-test=sleep:0.1"},
    )
    journal = tmp_path / "state" / "journal.db"
    restarts = 0
    deadline = time.monotonic() + 120
    for threshold, down in ((12, 0.0), (55, 3.0)):
        while _steps_journaled(journal) < threshold and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        if proc.poll() is None:
            pg.restart("immediate", down_seconds=down)
            restarts += 1
    out, err = proc.communicate(timeout=300)
    assert restarts == 2, "the rotation ended before both restarts: the test proved nothing"
    data = json.loads(out)
    outcomes = {r["plan"]: r["outcome"] for r in data["results"]}
    print("OUTCOMES", " ".join(sorted(outcomes.values())))
    print("OUTCOMES", sorted(outcomes.values()))
    assert len(outcomes) == PLANS
    failures = "\n".join(
        f"{r['plan']}: {r['outcome']}: {r.get('error')} (fix: {r.get('fix')})"
        for r in data["results"]
        if r["outcome"] != "succeeded"
    )
    assert "stuck" not in outcomes.values(), f"{failures}\n--- stderr ends:\n{err[-3000:]}"
    assert set(outcomes.values()) <= {"succeeded", "rolled_back"}, f"{failures}\n--- stderr ends:\n{err[-3000:]}"
    assert proc.returncode == (0 if set(outcomes.values()) == {"succeeded"} else 1)

    # without `resume`: nothing is open, and every CURRENT logs in
    status = {row["plan"]: row for row in cli.run("status", "--json").json()}
    for n in range(PLANS):
        plan = f"p{n}"
        assert status[plan]["in_progress"] is None and status[plan]["last_result"] in ("succeeded", "rolled_back")
        current = cli.run("store", "get", f"db/p{n}").json()
        assert pg.can_login(current["username"], current["password"]), f"{plan}: CURRENT must log in"
        assert cli.run("store", "get", f"db/p{n}", "--stage", "PENDING").code != 0, f"{plan}: PENDING left"
    resumed = cli.run("resume", "--json")
    assert resumed.code == 0 and {r["outcome"] for r in resumed.json()["results"]} == {"nothing-to-do"}
