"""kill -9 at every named crash point, for each strategy, then `rotator resume`: DESIGN.md's invariants hold.

Each case is a real `rotator rotate-now` process that SIGKILLs itself at the point (rotator/failpoints.py), so no
finally block, no lease release and no rollback runs, exactly as `kill -9`. The lease it leaves behind belongs
to a dead process on this host, so `resume` takes it over at once.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from rotator.failpoints import POINTS
from tests.pg_plans import pg_plan_config
from tests.servers.postgres import PgServer

# Points a forward run passes (notify has no notifier here, so it has no point to hit).
FORWARD_POINTS = [
    p
    for p in POINTS
    if "rollback" not in p and "notify" not in p and "unpromote" not in p and "discard-pending" not in p
]
# Points only a rollback passes: make the test step fail, then crash while undoing it.
ROLLBACK_POINTS = [
    "before-rollback-unstage",
    "after-rollback-unstage",
    "before-rollback-discard",
    "after-rollback-discard",
    "before-store-discard-pending",
    "after-store-discard-pending",
]
CASES = [(s, p, "") for s in ("single-user", "alternating-users") for p in FORWARD_POINTS] + [
    (s, p, "after-test=error") for s in ("single-user", "alternating-users") for p in ROLLBACK_POINTS
]


def test_every_forward_and_store_point_is_covered() -> None:
    covered = {p for _, p, _ in CASES}
    missing = [p for p in POINTS if p not in covered and "notify" not in p and "unpromote" not in p]
    assert not missing, f"crash points without a fault test: {missing}"


@pytest.mark.slow
@pytest.mark.parametrize(("strategy", "point", "also"), CASES, ids=[f"{s}:{p}" for s, p, _ in CASES])
def test_kill_at_point_then_resume(tmp_path: Path, pg_server: PgServer, strategy: str, point: str, also: str) -> None:
    plan = pg_plan_config(tmp_path, pg_server, strategy)
    before = plan.stage("CURRENT")
    failpoints = ",".join(x for x in (also, f"{point}=crash") if x)
    crashed = plan.cli.run("rotate-now", plan.plan_id, "--revoke-old", "now", env={"ROTATOR_FAILPOINTS": failpoints})
    assert crashed.code == -signal.SIGKILL, f"the process did not die at {point}: {crashed.stderr[-500:]}"

    # invariant 3 while the run is interrupted: the default read is never PENDING
    current = plan.stage("CURRENT")
    pending = plan.stage("PENDING")
    assert current is not None and current != pending

    resumed = plan.cli.run("resume", "--json")
    plan.assert_invariants()
    history = plan.cli.run("history", plan.plan_id, "--json").json()
    assert history[0]["state"] in ("succeeded", "rolled_back", "awaiting_revoke")
    # resume says how the run it touched ended: 0 when it went forward to its end, 1 when it was rolled back
    assert resumed.code == (1 if history[0]["state"] == "rolled_back" else 0), resumed.stdout + resumed.stderr
    after = plan.stage("CURRENT")
    if history[0]["state"] == "rolled_back":
        assert after == before
    else:
        assert after != before and not plan.logs_in(before)  # revoke-now was asked for: the old one is dead

    # invariant 4 and 5: the plan is free and rotates normally again
    again = plan.cli.run("rotate-now", plan.plan_id, "--revoke-old", "now")
    assert again.code == 0, again.stdout + again.stderr
    plan.assert_invariants()

    # invariant 6: nothing the processes printed or wrote holds a password
    passwords = {v["password"] for v in (before, plan.stage("CURRENT"), plan.stage("PREVIOUS")) if v}
    text = crashed.stdout + crashed.stderr + resumed.stdout + resumed.stderr + again.stdout + again.stderr
    files = b"".join(p.read_bytes() for p in plan.cli.state_files())
    for password in passwords:
        assert password not in text and password.encode() not in files
