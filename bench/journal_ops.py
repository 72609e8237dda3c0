"""Journal operations: the PostgreSQL journal against the SQLite journal, per operation, in one process.

PostgreSQL is a throwaway server on loopback (tests/servers/postgres.py, without its statement log), reached
over TCP by a role with a password (SCRAM), as a daemon would reach it. The test server runs with fsync and
synchronous_commit off; `--durable` turns both on (each commit waits for its WAL flush, as in production).
SQLite is a file in a temporary directory (WAL, synchronous=NORMAL: no fsync per commit). Each operation runs
`--ops` times per round, rounds alternate between the two journals (to share the machine's noise), and the
median of the rounds' per-operation times is printed with the ratio PostgreSQL / SQLite.

Then the daemon's start with `--plans` plans (latest_runs, last_successes, live_leases: one query each), and the
PostgreSQL journal's connection pool under the daemon's 8 threads (pool sizes 1, 2, 4, 8; size 1 is a lock
around one connection). Usage: python bench/journal_ops.py [--ops 300] [--rounds 5] [--plans 10000] [--durable]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rotator.interfaces import Journal  # noqa: E402
from rotator.journal.postgres import PostgresJournal  # noqa: E402
from rotator.journal.sqlite import SqliteJournal  # noqa: E402
from rotator.model import Lease, RunRecord, RunState, Step, Trigger  # noqa: E402
from tests.servers.postgres import PgServer  # noqa: E402

STEPS = (Step.CREATE, Step.STAGE, Step.TEST, Step.PROMOTE)


def run_record(run_id: str, plan_id: str) -> RunRecord:
    return RunRecord(run_id, plan_id, RunState.RUNNING, Trigger.SCHEDULE, datetime.now(UTC), "local", f"db/{plan_id}")


def per_op(ops: int, work: Callable[[int], None]) -> float:
    """Microseconds per call of work(i), over `ops` calls."""
    start = time.perf_counter()
    for index in range(ops):
        work(index)
    return (time.perf_counter() - start) / ops * 1e6


def one_round(journal: Journal, ops: int) -> dict[str, float]:
    """Times each operation on fresh runs of one plan held under one lease (as a run does)."""
    tag = uuid.uuid4().hex[:8]
    plan = f"bench-{tag}"
    lease = journal.acquire_lease(plan, 600)
    assert lease is not None
    ids = [f"{tag}-{i}" for i in range(ops)]
    times = {
        "begin_run": per_op(ops, lambda i: journal.begin_run(run_record(ids[i], plan), lease)),
        "step_started": per_op(ops, lambda i: journal.step_started(ids[i], Step.CREATE, "forward", lease)),
        "step_finished": per_op(ops, lambda i: journal.step_finished(ids[i], Step.CREATE, "forward", lease)),
        "update_run": per_op(
            ops, lambda i: journal.update_run(ids[i], lease, state=RunState.SUCCEEDED, ended_at=datetime.now(UTC))
        ),
        "get_run": per_op(ops, lambda i: journal.get_run(ids[i])),
    }
    journal.release_lease(lease)

    def lease_cycle(i: int) -> None:
        held = journal.acquire_lease(f"lease-{tag}-{i % 20}", 600)
        assert held is not None
        journal.release_lease(held)

    times["acquire+release lease"] = per_op(ops, lease_cycle)
    return times


def fill(journal: Journal, plans: int) -> None:
    """Every plan gets one finished run with four steps, written through the journal as the engine does."""
    for index in range(plans):
        plan = f"plan{index:05d}"
        lease = journal.acquire_lease(plan, 600)
        assert lease is not None
        run_id = f"{plan}-run"
        journal.begin_run(run_record(run_id, plan), lease)
        for step in STEPS:
            journal.step_started(run_id, step, "forward", lease)
            journal.step_finished(run_id, step, "forward", lease)
        journal.update_run(run_id, lease, state=RunState.SUCCEEDED, ended_at=datetime.now(UTC))
        journal.release_lease(lease)


def daemon_start(journal: Journal) -> tuple[float, float, int]:
    """Seconds for latest_runs alone, for the three batch queries a daemon makes at start, and the plans found."""
    start = time.perf_counter()
    latest = journal.latest_runs()
    alone = time.perf_counter() - start
    journal.last_successes()
    journal.live_leases()
    return alone, time.perf_counter() - start, len(latest)


def threaded_runs(journal: Journal, threads: int, runs_each: int) -> float:
    """Journal writes per second when `threads` threads each drive runs of their own plans at once."""
    barrier = threading.Barrier(threads + 1)
    tag = uuid.uuid4().hex[:8]

    def worker(index: int) -> None:
        barrier.wait()
        for run_no in range(runs_each):
            plan = f"pool-{tag}-{index}"
            lease: Lease | None = journal.acquire_lease(plan, 600)
            assert lease is not None
            run_id = f"{plan}-{run_no}"
            journal.begin_run(run_record(run_id, plan), lease)
            for step in STEPS:
                journal.step_started(run_id, step, "forward", lease)
                journal.step_finished(run_id, step, "forward", lease)
            journal.update_run(run_id, lease, state=RunState.SUCCEEDED)
            journal.release_lease(lease)

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in workers:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in workers:
        thread.join()
    writes = threads * runs_each * (3 + 2 * len(STEPS) + 1)
    return writes / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--plans", type=int, default=10_000)
    parser.add_argument("--durable", action="store_true", help="PostgreSQL with fsync and synchronous_commit on")
    args = parser.parse_args()

    options = ("-c log_statement=none",)  # the test fixture logs every statement; later -c options win
    if args.durable:
        options += ("-c fsync=on", "-c synchronous_commit=on")
    pg = PgServer.start(extra_options=options)
    work = Path(tempfile.mkdtemp(prefix="rotator-bench-"))
    try:
        password = uuid.uuid4().hex
        pg.make_role("journal", password)
        with pg.admin_conn() as conn:
            for name in ("bench_ops", "bench_plans"):
                conn.execute(f"CREATE DATABASE {name} OWNER journal")
        os.environ["PGPASSWORD"] = password

        def pg_url(dbname: str) -> str:
            return f"postgresql://journal@{pg.host}:{pg.port}/{dbname}?sslmode=disable"

        journals: dict[str, Journal] = {
            "sqlite": SqliteJournal(work / "ops.db"),
            "postgres": PostgresJournal(pg_url("bench_ops")),
        }
        one_round(journals["sqlite"], 20)  # warm up: tables, prepared statements, connections
        one_round(journals["postgres"], 20)
        samples: dict[str, dict[str, list[float]]] = {name: {} for name in journals}
        for _round in range(args.rounds):
            for name, journal in journals.items():
                for op, micros in one_round(journal, args.ops).items():
                    samples[name].setdefault(op, []).append(micros)
        print(f"per operation, median of {args.rounds} rounds of {args.ops} (microseconds)")
        print(f"{'operation':<24}{'sqlite':>10}{'postgres':>10}{'ratio':>8}")
        for op in samples["sqlite"]:
            lite, post = statistics.median(samples["sqlite"][op]), statistics.median(samples["postgres"][op])
            print(f"{op:<24}{lite:>10.0f}{post:>10.0f}{post / lite:>8.1f}")

        print(f"\n{args.plans} plans: latest_runs, and a daemon's start (latest_runs + last_successes + live_leases)")
        latest_runs: dict[str, float] = {}
        big = {"sqlite": SqliteJournal(work / "plans.db"), "postgres": PostgresJournal(pg_url("bench_plans"))}
        for name, journal in big.items():
            start = time.perf_counter()
            fill(journal, args.plans)
            filled = time.perf_counter() - start
            starts = [daemon_start(journal) for _ in range(3)]
            latest_runs[name] = statistics.median(alone for alone, _s, _n in starts)
            seconds = statistics.median(s for _a, s, _n in starts)
            assert all(n == args.plans for _a, _s, n in starts)
            opened = time.perf_counter()
            again = PostgresJournal(pg_url("bench_plans")) if name == "postgres" else SqliteJournal(work / "plans.db")
            open_ms = (time.perf_counter() - opened) * 1000
            again.close()
            print(
                f"{name:<10} latest_runs {latest_runs[name]:.2f} s, start {seconds:.2f} s "
                f"(open {open_ms:.0f} ms; filling {args.plans} runs took {filled:.0f} s)"
            )
        print(f"latest_runs ratio postgres / sqlite: {latest_runs['postgres'] / latest_runs['sqlite']:.1f}")
        for journal in big.values():
            journal.close()

        print("\nPostgreSQL pool under 8 threads (journal writes per second, median of 3)")
        for size in (1, 2, 4, 8):
            pooled = PostgresJournal(pg_url("bench_ops"), pool_size=size)
            threaded_runs(pooled, 8, 3)  # warm up: open the connections
            rate = statistics.median(threaded_runs(pooled, 8, 20) for _ in range(3))
            pooled.close()
            print(f"pool_size={size}: {rate:,.0f}")
        sqlite_rate = statistics.median(threaded_runs(journals["sqlite"], 8, 20) for _ in range(3))
        print(f"(sqlite, one connection under a lock: {sqlite_rate:,.0f})")
        for journal in journals.values():
            journal.close()
    finally:
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
