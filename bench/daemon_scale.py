"""The daemon at scale: N plans (default 10,000): start-up time, resident memory, CPU while idle.

Each plan is a `generated` plan with `rate(30 days)` that rotated a day ago (its success is written to the
journal first), so after start-up nothing is due and the daemon only waits: what it costs to keep N plans armed.
The same measurement runs with 1 plan as the baseline, in this process, one after the other; figures are printed
absolute (against the goals: start-up under 2 s, RSS under 150 MB, idle CPU under 1 %) and as ratios to it.

Start-up is measured two ways: the process's wall time from spawn until it logs "daemon running", and the
daemon's own start_up_seconds (config already loaded: checking components, resuming, arming every plan).
Usage: python bench/daemon_scale.py [--plans 10000] [--idle 60]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rotator.journal.sqlite import SqliteJournal  # noqa: E402
from rotator.model import RunRecord, RunState, Trigger  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def write_config(root: Path, plans: int) -> Path:
    blocks = [
        f'[[plans]]\nid = "key{n:05d}"\nplugin = "generated"\nsecret = "app/key{n:05d}"\n'
        f'schedule = "rate(30 days)"\nwindow = "02:00-04:00"\ngrace = "1h"\n'
        for n in range(plans)
    ]
    config = root / "rotator.toml"
    config.write_text('[rotator]\nstate_dir = "state"\nlog_level = "info"\n\n' + "\n".join(blocks))
    return config


def seed_journal(root: Path, plans: int) -> None:
    """A promoted run a day old for every plan, so nothing is due at start-up."""
    journal = SqliteJournal(root / "state" / "journal.db")
    started = datetime.now(UTC) - timedelta(days=1)
    for n in range(plans):
        plan_id = f"key{n:05d}"
        lease = journal.acquire_lease(plan_id, 60)
        assert lease is not None
        run_id = f"{n:032x}"
        journal.begin_run(
            RunRecord(run_id, plan_id, RunState.SUCCEEDED, Trigger.SCHEDULE, started, "local", f"app/{plan_id}"),
            lease,
        )
        journal.release_lease(lease)
    journal.close()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(plans: int, idle: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="rotator-scale-") as tmp:
        root = Path(tmp)
        config = write_config(root, plans)
        env = {**os.environ, "ROTATOR_CONFIG": str(config)}
        subprocess.run([sys.executable, "-m", "rotator", "init"], env=env, check=True, capture_output=True)
        seed_journal(root, plans)
        spawned = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "rotator", "daemon", "--json-logs"],
            env=env,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        assert proc.stderr is not None
        startup_inside = float("nan")
        scheduled = -1
        for line in proc.stderr:
            if not line.startswith("{"):
                continue
            event = json.loads(line)
            if event.get("event") == "plans scheduled":
                scheduled = int(event["scheduled"])
            if event.get("event") == "daemon running":
                startup_inside = float(event["startup_seconds"])
                break
        wall = time.monotonic() - spawned
        rss_start = rss_mb(proc.pid)
        cpu_before = cpu_seconds(proc.pid)
        time.sleep(idle)
        cpu_idle = (cpu_seconds(proc.pid) - cpu_before) / idle * 100
        rss_idle = rss_mb(proc.pid)
        proc.terminate()
        proc.wait(timeout=60)
        return {
            "plans": plans,
            "armed": scheduled,
            "startup_wall_s": wall,
            "startup_daemon_s": startup_inside,
            "rss_after_start_mb": rss_start,
            "rss_after_idle_mb": rss_idle,
            "idle_cpu_percent": cpu_idle,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plans", type=int, default=10_000)
    parser.add_argument("--idle", type=float, default=60.0, help="seconds of idle CPU measurement")
    args = parser.parse_args()
    base = measure(1, args.idle)
    scale = measure(args.plans, args.idle)
    print(f"{'':24}{'1 plan':>12}{f'{args.plans} plans':>14}{'ratio':>8}   goal")
    goals = {
        "startup_wall_s": "< 2 s",
        "startup_daemon_s": "",
        "rss_after_start_mb": "",
        "rss_after_idle_mb": "< 150 MB",
        "idle_cpu_percent": "< 1 %",
    }
    for key, goal in goals.items():
        ratio = scale[key] / base[key] if base[key] else float("nan")
        print(f"{key:24}{base[key]:12.3f}{scale[key]:14.3f}{ratio:8.2f}   {goal}")
    print(f"plans armed: {scale['armed']} of {args.plans}")


if __name__ == "__main__":
    main()
