"""The command line at scale, in fresh processes as an operator runs them:

- `rotator status` (table and --json) with N plans (default 10,000; goal: under 1 s), each with a run in the
  journal (a quarter of them failed, so the failure counts are looked up too), against 1 plan as the baseline;
- `rotator rotate-now --all` of 10, 100 and 500 PostgreSQL single-user plans (admin_secret_id set) on one
  throwaway PostgreSQL: the time per plan at each size (goal: linear, so the per-plan time stays flat).

Usage: python bench/cli_scale.py [--status-plans 10000] [--sizes 10,100,500]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.daemon_scale import write_config  # noqa: E402
from bench.installed_env import installed_env  # noqa: E402
from rotator.config import load_config  # noqa: E402
from rotator.journal.sqlite import SqliteJournal  # noqa: E402
from rotator.model import RunRecord, RunState, Trigger  # noqa: E402
from rotator.passwords import generate_password  # noqa: E402
from rotator.workspace import Workspace  # noqa: E402
from tests.servers.postgres import PgServer  # noqa: E402


def _env(extra: dict[str, str] | None) -> dict[str, str]:
    # COLUMNS=80: the table is cut to a terminal of 80 columns, as at a shell.
    return installed_env(COLUMNS="80", **(extra or {}))


def rotator(*args: str, env: dict[str, str] | None = None) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "rotator", *args], capture_output=True, text=True, check=False, env=_env(env)
    )
    return time.perf_counter() - started, done


def cpu_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def median_time(rounds: int, *args: str) -> tuple[float, float]:
    """The median wall and CPU seconds of `rounds` runs of the command (which must succeed), after a warm-up run.
    CPU (the child's user + system time) is what an idle machine's wall time comes close to; on a loaded one
    the wall time also counts the waits for a core."""
    walls, cpus = [], []
    for _ in range(rounds + 1):
        before = cpu_of_children()
        wall, done = rotator(*args)
        assert done.returncode == 0, done.stderr[-2000:]
        walls.append(wall)
        cpus.append(cpu_of_children() - before)
    return statistics.median(walls[1:]), statistics.median(cpus[1:])


def status_times(plans: int, rounds: int = 5) -> tuple[tuple[float, float], tuple[float, float]]:
    root = Path(tempfile.mkdtemp(prefix="rotator-status-"))
    config = write_config(root, plans)
    rotator("init", "-c", str(config))
    journal = SqliteJournal(root / "state" / "journal.db")
    started = datetime.now(UTC) - timedelta(days=1)
    for n in range(plans):
        plan_id = f"key{n:05d}"
        lease = journal.acquire_lease(plan_id, 60)
        assert lease is not None
        state = RunState.ROLLED_BACK if n % 4 == 0 else RunState.SUCCEEDED
        record = RunRecord(f"{n:032x}", plan_id, state, Trigger.SCHEDULE, started, "local", f"app/{plan_id}")
        journal.begin_run(record, lease)
        journal.release_lease(lease)
    journal.close()
    table = median_time(rounds, "status", "-c", str(config))
    as_json = median_time(rounds, "status", "--json", "-c", str(config))
    return table, as_json


def rotate_now_time(pg: PgServer, plans: int) -> tuple[float, float]:
    root = Path(tempfile.mkdtemp(prefix="rotator-scale-"))
    blocks = "".join(
        f'\n[[plans]]\nid = "p{n}"\nplugin = {{type = "postgres", admin_secret_id = "db/admin"}}\nsecret = "db/p{n}"\n'
        for n in range(plans)
    )
    config = root / "rotator.toml"
    config.write_text(f'[rotator]\nstate_dir = "state"\n{blocks}')
    rotator("init", "-c", str(config))
    workspace = Workspace(load_config(config))
    store = workspace.store("local")
    store.put_current("db/admin", pg.secret(pg.superuser, pg.superuser_password))
    for n in range(plans):
        password = generate_password()
        pg.make_role(f"scale{plans}_{n}", password)
        store.put_current(f"db/p{n}", pg.secret(f"scale{plans}_{n}", password))
    workspace.close()
    before = cpu_of_children()
    wall, done = rotator("rotate-now", "--all", "--json", "-c", str(config))
    cpu = cpu_of_children() - before
    result = json.loads(done.stdout)
    assert result["failed"] == 0, done.stdout[-2000:]
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--status-plans", type=int, default=10_000)
    parser.add_argument("--sizes", default="10,100,500")
    args = parser.parse_args()
    one_table, one_json = status_times(1)
    many_table, many_json = status_times(args.status_plans)
    print(f"load average {os.getloadavg()[0]:.2f}; status: median of 5 runs, wall (CPU)")
    print(
        f"status, 1 plan:        table {one_table[0]:.2f} s ({one_table[1]:.2f}), "
        f"--json {one_json[0]:.2f} s ({one_json[1]:.2f})"
    )
    print(
        f"status, {args.status_plans} plans: table {many_table[0]:.2f} s ({many_table[1]:.2f}), "
        f"--json {many_json[0]:.2f} s ({many_json[1]:.2f}) (goal < 1 s)"
    )
    pg = PgServer.start()
    try:
        for size in (int(s) for s in args.sizes.split(",")):
            wall, cpu = rotate_now_time(pg, size)
            print(
                f"rotate-now --all, {size:4d} plans: {wall:6.2f} s wall, {wall / size * 1000:6.1f} ms per plan; "
                f"rotator's CPU {cpu:6.2f} s, {cpu / size * 1000:6.1f} ms per plan"
            )
    finally:
        pg.stop()


if __name__ == "__main__":
    main()
