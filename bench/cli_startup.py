"""The command line's fixed cost: what `rotator` costs before (and around) any real work, in fresh processes.

Measured, each in a new interpreter as an operator runs it, in alternating rounds, median of `--runs`:
- the baseline: `python -c pass` with the same interpreter (its start-up, site and the editable install's finder);
- `rotator --help`, `rotator --version`, `rotator validate` of a one-plan config;
- `rotator rotate-now` of one plan: a `generated` secret (no target), and one single-user PostgreSQL role on a
  throwaway cluster (login with CURRENT, ALTER ROLE with a verifier, login with PENDING, promote, journal).

Each line gives wall and CPU (user + system of the child, from getrusage) in ms, and the ratio of each to the
baseline of the same round. Goals (issue 15): `--help` < 150 ms and `rotate-now` of one plan < 400 ms wall on an
idle machine. Then, from `python -X importtime`, which heavy modules each command imports (`--help` must import
none of rich, pydantic, structlog, boto3, psycopg or psycopg_pool) and the largest imports of the one-plan
rotate-now.

Usage: python bench/cli_startup.py [--runs 15] [--no-postgres]
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.installed_env import installed_env  # noqa: E402

HEAVY = ("rich", "typer", "pydantic", "structlog", "boto3", "psycopg", "psycopg_pool", "apscheduler", "cryptography")
HELP_MUST_NOT_IMPORT = ("rich", "pydantic", "structlog", "boto3", "psycopg", "psycopg_pool")


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds of one run of argv (which must succeed)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


# Runs the command in this interpreter and prints, at exit, the top-level packages it had imported.
_LOADED = (
    "import atexit, json, runpy, sys\n"
    "atexit.register(lambda: sys.__stderr__.write('LOADED ' + json.dumps(sorted({m.split('.')[0] for m, v in "
    "sys.modules.items() if v is not None})) + '\\n'))\n"
    "sys.argv = ['rotator', *sys.argv[1:]]\n"
    "runpy.run_module('rotator', run_name='__main__')\n"
)


def heavy_imports(args: list[str], env: dict[str, str]) -> list[str]:
    """The heavy packages (HEAVY) that `rotator ARGS` really imports (not those it only tried: structlog's
    attempt at rich while rich is hidden shows in importtime's list but loads nothing)."""
    done = subprocess.run([sys.executable, "-c", _LOADED, *args], capture_output=True, text=True, env=env, check=False)
    line = next((x for x in done.stderr.splitlines() if x.startswith("LOADED ")), "LOADED []")
    return [name for name in json.loads(line.removeprefix("LOADED ")) if name in HEAVY]


def imported(argv: list[str], env: dict[str, str]) -> list[tuple[str, float]]:
    """The 12 largest top-level imports of `argv` (a `python -X importtime ...` command), cumulative ms."""
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    rows: list[tuple[str, float, int]] = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _self, cumulative, name = line.removeprefix("import time:").split("|", 2)
        if not cumulative.strip().isdigit():
            continue
        rows.append((name.strip(), int(cumulative) / 1000, len(name) - len(name.lstrip())))
    return sorted(((n, ms) for n, ms, depth in rows if depth <= 1), key=lambda r: -r[1])[:12]


def generated_config(root: Path) -> Path:
    config = root / "rotator.toml"
    config.write_text(
        '[rotator]\nstate_dir = "state"\n\n[[plans]]\nid = "signing-key"\nplugin = {type = "generated", bytes = 32}\n'
        'secret = "app/signing-key"\nschedule = "rate(30 days)"\ngrace = "1h"\n'
    )
    return config


def postgres_config(root: Path) -> Path:
    config = root / "rotator.toml"
    config.write_text(
        '[rotator]\nstate_dir = "state"\n\n[[plans]]\nid = "orders-db"\nplugin = "postgres"\n'
        'secret = "db/orders"\nschedule = "rate(30 days)"\ngrace = "1h"\n'
    )
    return config


def seed(config: Path, env: dict[str, str], secret: str, value: dict[str, object]) -> None:
    rotator = [sys.executable, "-m", "rotator"]
    subprocess.run([*rotator, "init", "-c", str(config)], check=True, capture_output=True, env=env)
    subprocess.run(
        [*rotator, "store", "put", secret, "-f", "-", "-c", str(config)],
        input=json.dumps(value),
        text=True,
        check=True,
        capture_output=True,
        env=env,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--no-postgres", action="store_true", help="skip the PostgreSQL rotation")
    args = parser.parse_args()
    env = installed_env(COLUMNS="80")
    env.pop("ROTATOR_FAILPOINTS", None)
    python = sys.executable
    rotator = [python, "-m", "rotator"]

    gen_root = Path(tempfile.mkdtemp(prefix="rotator-startup-"))
    gen_config = generated_config(gen_root)
    seed(gen_config, env, "app/signing-key", {"value": "s" * 43})
    commands: dict[str, list[str]] = {
        "python -c pass (baseline)": [python, "-c", "pass"],
        "rotator --help": [*rotator, "--help"],
        "rotator --version": [*rotator, "--version"],
        "rotator validate (1 plan)": [*rotator, "validate", "-c", str(gen_config)],
        "rotator rotate-now (generated)": [*rotator, "rotate-now", "signing-key", "-c", str(gen_config)],
    }
    pg = None
    if not args.no_postgres:
        from tests.servers.postgres import PgServer

        pg = PgServer.start()
        pg_root = Path(tempfile.mkdtemp(prefix="rotator-startup-pg-"))
        pg_config = postgres_config(pg_root)
        password = "Initial-Password-0123456789-abcdef"
        pg.make_role("orders_app", password)
        seed(pg_config, env, "db/orders", pg.secret("orders_app", password))
        commands["rotator rotate-now (postgres)"] = [*rotator, "rotate-now", "orders-db", "-c", str(pg_config)]
    try:
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
        for argv in commands.values():  # warm the page cache and write the bytecode once
            timed(argv, env)
        for _round in range(args.runs):
            for name, argv in commands.items():
                samples[name].append(timed(argv, env))
    finally:
        if pg is not None:
            pg.stop()

    base_wall = statistics.median(w for w, _ in samples["python -c pass (baseline)"])
    base_cpu = statistics.median(c for _, c in samples["python -c pass (baseline)"])
    print(f"{args.runs} rounds, median; load average {os.getloadavg()[0]:.2f} at the end")
    print(f"{'command':34s} {'wall ms':>8s} {'x base':>7s} {'cpu ms':>8s} {'x base':>7s}")
    for name, runs in samples.items():
        wall = statistics.median(w for w, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        print(f"{name:34s} {wall * 1000:8.1f} {wall / base_wall:7.1f} {cpu * 1000:8.1f} {cpu / base_cpu:7.1f}")
    goals = {"rotator --help": 0.150, "rotator rotate-now (postgres)": 0.400, "rotator rotate-now (generated)": 0.400}
    for name, goal in goals.items():
        if name in samples:
            wall = statistics.median(w for w, _ in samples[name])
            print(
                f"goal {name}: < {goal * 1000:.0f} ms wall: {'met' if wall < goal else 'NOT met'} ({wall * 1000:.0f})"
            )

    print("\nheavy packages imported, and the largest top-level imports (python -X importtime, ms cumulative):")
    for name, argv in commands.items():
        if argv[1:3] != ["-m", "rotator"]:
            continue
        heavy = heavy_imports(argv[3:], env)
        top = imported([python, "-X", "importtime", *argv[1:]], env)
        print(f"{name}: {', '.join(heavy) or 'none of ' + ', '.join(HEAVY)}")
        if name == "rotator --help":
            bad = [h for h in heavy if h in HELP_MUST_NOT_IMPORT]
            verdict = "yes" if not bad else "NO: " + ", ".join(bad)
            print(f"  --help imports none of {', '.join(HELP_MUST_NOT_IMPORT)}: {verdict}")
        print("  " + ", ".join(f"{module} {ms:.0f}" for module, ms in top[:8]))


if __name__ == "__main__":
    main()
