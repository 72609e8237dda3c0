"""Engine overhead: N PostgreSQL plans rotated through the engine against a raw psycopg loop doing the same I/O.

Both run in this process against one throwaway PostgreSQL (scram-sha-256 over TCP), with the same local store:
- raw: per role, log in with the current password and ALTER ROLE to the new verifier, log in with the new
  password and SELECT 1, then the two durable store writes (the new secret, then the label move);
- engine: Runner.rotate(revoke_old_now=True) on a single-user plan: the same I/O plus the journal, the lease,
  the store reads, retries and logging.
Prints both times and the ratio (goal: at most 1.10). Runs alternate (raw, engine, raw, engine) to share
the machine's noise. Usage: python bench/engine_overhead.py [--plans 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rotator_plugins.rotation.postgres import PostgresPlugin  # noqa: E402

from rotator import logs  # noqa: E402
from rotator.components import ComponentSetup  # noqa: E402
from rotator.engine.runner import BoundPlan, Runner  # noqa: E402
from rotator.journal.sqlite import SqliteJournal  # noqa: E402
from rotator.local_store import LocalStore, create_key_file  # noqa: E402
from rotator.model import Stage  # noqa: E402
from rotator.passwords import generate_password  # noqa: E402
from tests.servers.postgres import PgServer  # noqa: E402


def raw_rotation(pg: PgServer, store: LocalStore, secret: str) -> None:
    current = store.get(secret, Stage.CURRENT)
    assert current is not None
    user, old = current["username"], current["password"]
    new = generate_password()
    common = {"host": pg.host, "port": pg.port, "dbname": "postgres", "autocommit": True, "sslmode": "prefer"}
    with psycopg.connect(user=user, password=old, **common) as conn:
        verifier = conn.pgconn.encrypt_password(new.encode(), user.encode(), b"scram-sha-256").decode()
        conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(user), sql.Literal(verifier)))
    with psycopg.connect(user=user, password=new, **common) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    version = uuid.uuid4().hex
    store.put_pending(secret, {**current.value, "password": new}, version)
    store.promote(secret, version)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plans", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    logs.configure(json=True, level="warning")
    pg = PgServer.start()
    work = Path(tempfile.mkdtemp(prefix="rotator-bench-"))
    try:
        create_key_file(work / "store.key")
        store = LocalStore({}, ComponentSetup(name="local", config_dir=work, state_dir=work))
        journal = SqliteJournal(work / "journal.db")
        runner = Runner(journal)
        plugin = PostgresPlugin({}, ComponentSetup(name="bench", config_dir=work, state_dir=work))
        plans = []
        for index in range(args.plans):
            user, password = f"bench{index}", generate_password()
            pg.make_role(user, password)
            store.put_current(f"db/{user}", pg.secret(user, password))
            plans.append(
                BoundPlan(
                    plan_id=f"plan{index}", secret_id=f"db/{user}", store_name="local", store=store, plugin=plugin
                )
            )
        # warm both paths (imports, connections' first use)
        raw_rotation(pg, store, plans[0].secret_id)
        runner.rotate(plans[0], revoke_old_now=True)

        raw_times, engine_times = [], []
        for _ in range(args.rounds):
            started = time.perf_counter()
            for bp in plans:
                raw_rotation(pg, store, bp.secret_id)
            raw_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            for bp in plans:
                outcome = runner.rotate(bp, revoke_old_now=True)
                assert outcome.outcome == "succeeded", outcome
            engine_times.append(time.perf_counter() - started)
        raw, engine = statistics.median(raw_times), statistics.median(engine_times)
        print(f"plans: {args.plans}, rounds: {args.rounds} (median)")
        print(f"raw psycopg loop: {raw:.3f} s ({raw / args.plans * 1000:.2f} ms per rotation)")
        print(f"engine:           {engine:.3f} s ({engine / args.plans * 1000:.2f} ms per rotation)")
        print(f"ratio engine/raw: {engine / raw:.3f} (goal <= 1.10)")
        store.close()
        journal.close()
    finally:
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
