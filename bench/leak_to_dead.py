"""From leak to dead: how long from a leak report to the leaked credential refused by the server.

One throwaway PostgreSQL, N plans (alternating users, grace 1 hour: without the leak path the old password would
keep working for an hour). Each round: every plan's CURRENT password is "leaked" in one GitHub-shaped report, signed
and POSTed to the leak endpoint (rotator/leak_reports.py, the daemon's code, in this process); the clock stops when
a login with every leaked password is refused by PostgreSQL. Rounds for N = 1 and N = 100 by default.

The baseline, measured in the same process: one plain `rotate-now`-style rotation of the same plans (Runner.rotate,
grace kept), whose old passwords stay valid. The ratio says what matching and revoke-now add over a rotation.

Run: python bench/leak_to_dead.py [--plans 1 100] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rotator import leak_reports, logs  # noqa: E402
from rotator.leaks import rotate_leaked  # noqa: E402
from rotator.model import Trigger  # noqa: E402
from tests.lifecycle_env import leak_env  # noqa: E402
from tests.servers.postgres import PgServer  # noqa: E402


def one_round(pg: PgServer, count: int, concurrency: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        env = leak_env(Path(tmp), pg, count)
        workspace = env.workspace()
        try:
            runner = workspace.runner()
            bound = {p: workspace.bind(workspace.config.plan(p)) for p in env.plans}
            started = time.perf_counter()
            for bp in bound.values():  # the baseline: an ordinary rotation of each plan, one after another
                assert runner.rotate(bp, trigger=Trigger.MANUAL).ok
            baseline = time.perf_counter() - started
            leaked = {p: env.value(p) for p in env.plans}
            assert all(env.logs_in(v) for v in leaked.values())
            done = threading.Event()

            def rotate(plan_ids: list[str], reasons: dict[str, str]) -> None:
                rotate_leaked(runner, [bound[p] for p in plan_ids], reasons, concurrency=concurrency)
                done.set()

            key = secrets.token_bytes(32)
            assert workspace.fingerprint_key is not None
            context = leak_reports.LeakContext(workspace.journal, workspace.fingerprint_key, rotate)
            server = leak_reports.LeakReportServer(("127.0.0.1", 0), key, 300, context)
            server.start()
            host, port = server.address
            body = json.dumps(
                [
                    {"token": v["password"], "type": "db_password", "url": "https://example.test/x"}
                    for v in leaked.values()
                ]  # type: ignore[index]
            ).encode()
            stamp = int(time.time())
            started = time.perf_counter()
            answer = requests.post(
                f"http://{host}:{port}{leak_reports.ROUTE}",
                data=body,
                headers={
                    leak_reports.TIMESTAMP_HEADER: str(stamp),
                    leak_reports.SIGNATURE_HEADER: leak_reports.sign(key, stamp, body),
                },
                timeout=30,
            )
            accepted = time.perf_counter() - started
            assert answer.status_code == 202 and len(answer.json()["rotating"]) == count, answer.text
            alive = dict(leaked)
            while alive:  # poll logins until PostgreSQL refuses every leaked password
                alive = {p: v for p, v in alive.items() if env.logs_in(v)}
                if time.perf_counter() - started > 300:
                    raise SystemExit(f"still alive after 300 s: {sorted(alive)}")
            dead = time.perf_counter() - started
            done.wait(60)
            server.close()
        finally:
            workspace.close()
    return {"plans": count, "accepted_s": accepted, "leak_to_dead_s": dead, "baseline_rotation_s": baseline}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plans", type=int, nargs="+", default=[1, 100])
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    logs.configure(json=True, level="error")
    pg = PgServer.start()
    try:
        print(f"{'plans':>6} {'report accepted':>16} {'leak to dead':>13} {'per plan':>9} {'vs rotation':>12}")
        for count in args.plans:
            r = one_round(pg, count, args.concurrency)
            dead, baseline = r["leak_to_dead_s"], r["baseline_rotation_s"]
            print(
                f"{count:>6} {r['accepted_s'] * 1000:>13.1f} ms {dead:>11.2f} s "
                f"{dead / count * 1000:>6.1f} ms {dead / baseline:>11.2f}x"
            )
    finally:
        pg.stop()


if __name__ == "__main__":
    main()
