"""Store cost per rotation: API calls and time, for the local store, AWS Secrets Manager (moto), Vault KV v2 on a
real OpenBao server (`bao server -dev`, as the tests start it), and Vault on the fake of tests/fakes/vault.py.

Two figures per store, over real HTTP for the remote stores, the clients in this process:

- engine: one full rotation through the engine, `Runner.rotate(revoke_old_now=True)` with the `generated`
  plugin (no target system, so the store and the SQLite journal are the whole cost): settle, create (PENDING),
  stage, test, promote, revoke. AWS calls are counted with a botocore event hook
  (`client.meta.events.register("before-call.secrets-manager", ...)`); OpenBao's by a counting proxy in front of
  it (every HTTP request that reaches the server, by method and endpoint); the fake's from its request log.
- store only: the least a rotation needs from the store: get(CURRENT), put_pending, promote.

Times are the median and 95th percentile over the rotations (after a warm-up), in milliseconds; OpenBao's are
measured on a second store that talks to it directly (the proxy only counts). moto, the fake and OpenBao's
in-memory dev storage answer in well under a millisecond to a few on loopback: the figures show the store's own
cost (round trips, JSON, boto3/hvac) and the number of calls, not a production server's latency, added per call.

Usage: python bench/store_calls.py [--rotations 50]
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import hvac

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rotator_plugins.rotation.generated import GeneratedSecretPlugin  # noqa: E402

from rotator import logs  # noqa: E402
from rotator.components import ComponentSetup  # noqa: E402
from rotator.engine.runner import BoundPlan, Runner  # noqa: E402
from rotator.interfaces import SecretStore  # noqa: E402
from rotator.journal.sqlite import SqliteJournal  # noqa: E402
from rotator.local_store import LocalStore, create_key_file  # noqa: E402
from rotator.model import Stage  # noqa: E402
from rotator.registry import load_store  # noqa: E402
from tests.fakes.vault import FakeVault  # noqa: E402
from tests.servers.aws import start_moto_server  # noqa: E402
from tests.servers.vault import VaultServer  # noqa: E402


class Calls:
    """Counts a store's remote calls since the last reset (none for the local store)."""

    def reset(self) -> None:
        pass

    def snapshot(self) -> Counter[str]:
        return Counter()


class AwsCalls(Calls):
    """AWS API calls, by action, through a botocore event hook on the store's client."""

    def __init__(self, store: Any):
        self.calls: Counter[str] = Counter()
        store.client.meta.events.register("before-call.secrets-manager", self._hook)

    def _hook(self, model: Any, **_: Any) -> None:
        self.calls[model.name] += 1

    def reset(self) -> None:
        self.calls.clear()

    def snapshot(self) -> Counter[str]:
        return Counter(self.calls)


def vault_call(method: str, path: str) -> str:
    """A Vault request as "METHOD kind": /v1/<mount>/<kind>/... or /v1/auth/<method>/<action>."""
    parts = path.split("?", 1)[0].split("/")
    kind = "/".join(parts[2:5]) if parts[2] == "auth" else (parts[3] if len(parts) > 3 else "")
    where = " (pending path)" if ".rotator-pending" in path else ""
    return f"{method} {kind}{where}"


class VaultCalls(Calls):
    """Vault HTTP requests, by method and endpoint kind, from the fake's request log."""

    def __init__(self, fake: FakeVault):
        self.fake = fake
        self.mark = 0

    def reset(self) -> None:
        self.mark = len(self.fake.requests)

    def snapshot(self) -> Counter[str]:
        return Counter(vault_call(method, path) for method, path, _ in self.fake.requests[self.mark :])


class CountingProxy(Calls):
    """A loopback HTTP proxy in front of a real Vault-API server: forwards every request as it came (one kept-alive
    upstream connection per client connection) and counts it, so the count is what reached the server."""

    def __init__(self, upstream: str):
        target = urlsplit(upstream)
        self.calls: Counter[str] = Counter()
        lock = threading.Lock()
        calls = self.calls

        class Forward(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                self.upstream = http.client.HTTPConnection(target.hostname or "127.0.0.1", target.port, timeout=30)

            def finish(self) -> None:
                super().finish()
                self.upstream.close()

            def forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                self.upstream.request(self.command, self.path, body=body or None, headers=headers)
                answer = self.upstream.getresponse()
                data = answer.read()
                with lock:
                    calls[vault_call(self.command, self.path)] += 1
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in ("connection", "transfer-encoding", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_LIST = forward

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Forward)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, name="counting-proxy", daemon=True).start()

    def reset(self) -> None:
        self.calls.clear()

    def snapshot(self) -> Counter[str]:
        return Counter(self.calls)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(name: str, store: SecretStore, journal_dir: Path, rotations: int, calls: Calls) -> dict[str, Any]:
    secret_id = f"bench/{name}/{uuid.uuid4().hex[:8]}"
    store.put_current(secret_id, {"value": "seed-value-not-secret-0000"})
    journal = SqliteJournal(journal_dir / f"journal-{name}.db")
    runner = Runner(journal)
    plan = BoundPlan(
        plan_id=f"bench-{name}", secret_id=secret_id, store_name=name, store=store, plugin=GeneratedSecretPlugin()
    )
    calls.reset()
    runner.rotate(plan, revoke_old_now=True)  # warm-up: imports, connections, first-use costs (login, mount config)
    cold_calls = calls.snapshot()

    engine_ms: list[float] = []
    engine_calls: Counter[str] = Counter()
    for _ in range(rotations):
        calls.reset()
        started = time.perf_counter()
        outcome = runner.rotate(plan, revoke_old_now=True)
        engine_ms.append((time.perf_counter() - started) * 1000)
        assert outcome.outcome == "succeeded", outcome
        engine_calls += calls.snapshot()
    journal.close()

    store_ms: list[float] = []
    store_calls: Counter[str] = Counter()
    for index in range(rotations):
        calls.reset()
        started = time.perf_counter()
        current = store.get(secret_id, Stage.CURRENT)
        assert current is not None
        version = uuid.uuid4().hex
        store.put_pending(secret_id, {**current.value, "value": f"next-{index}-{version}"}, version)
        store.promote(secret_id, version)
        store_ms.append((time.perf_counter() - started) * 1000)
        store_calls += calls.snapshot()
    return {
        "store": name,
        "cold_calls": dict(sorted(cold_calls.items())),
        "engine_calls": {k: v / rotations for k, v in sorted(engine_calls.items())},
        "store_calls": {k: v / rotations for k, v in sorted(store_calls.items())},
        "engine_ms": (statistics.median(engine_ms), percentile(engine_ms, 0.95)),
        "store_ms": (statistics.median(store_ms), percentile(store_ms, 0.95)),
    }


def floor_ms(call: Any, n: int = 50) -> float:
    """The median time of one bare call: the server's and the client library's floor per request."""
    call()
    times = []
    for _ in range(n):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def show(result: dict[str, Any]) -> None:
    def total(calls: dict[str, float]) -> str:
        return f"{sum(calls.values()):g}" if calls else "0 (no network)"

    print(f"\n== {result['store']}")
    if "floor_ms" in result:
        print(f"  one bare read with the same client library: {result['floor_ms']:.2f} ms")
    median, p95 = result["engine_ms"]
    print(
        f"  full rotation through the engine: {median:.2f} ms median, {p95:.2f} ms p95; "
        f"API calls per rotation: {total(result['engine_calls'])}"
    )
    for key, value in result["engine_calls"].items():
        print(f"      {value:5g}  {key}")
    if result["cold_calls"] != result["engine_calls"]:
        print(f"  the first (cold) rotation: API calls {total(result['cold_calls'])}")
        for key, value in result["cold_calls"].items():
            print(f"      {value:5g}  {key}")
    median, p95 = result["store_ms"]
    print(
        f"  store only (get CURRENT, put_pending, promote): {median:.2f} ms median, {p95:.2f} ms p95; "
        f"API calls: {total(result['store_calls'])}"
    )
    for key, value in result["store_calls"].items():
        print(f"      {value:5g}  {key}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rotations", type=int, default=50)
    args = parser.parse_args()
    logs.configure(json=True, level="warning")
    work = Path(tempfile.mkdtemp(prefix="rotator-bench-stores-"))
    moto, stop_moto = start_moto_server()
    fake = FakeVault().serve()
    openbao = VaultServer.start()
    proxy = CountingProxy(openbao.url)
    results = []
    try:
        setup = ComponentSetup(name="bench", config_dir=work, state_dir=work)
        create_key_file(work / "store.key")
        local = LocalStore({}, setup)
        results.append(measure("local", local, work, args.rotations, Calls()))
        local.close()

        aws = load_store(
            "aws-secretsmanager", {"region": moto.region, "endpoint_url": moto.endpoint_url}, setup, "stores.aws"
        )
        results.append(measure("aws-secretsmanager", aws, work, args.rotations, AwsCalls(aws)))
        raw = moto.client("secretsmanager")
        raw.create_secret(Name="bench/floor", SecretString='{"value": "x"}')
        results[-1]["floor_ms"] = floor_ms(lambda: raw.get_secret_value(SecretId="bench/floor"))

        # OpenBao with README's least-privilege policy for mount `secret`, prefix `rotator`, as the tests use it.
        os.environ["ROTATOR_BENCH_OPENBAO_TOKEN"] = openbao.rotator_token_for("secret", "rotator")
        auth = {"method": "token", "token": "env:ROTATOR_BENCH_OPENBAO_TOKEN"}
        counted = load_store("vault-kv2", {"url": proxy.url, "path_prefix": "rotator", "auth": auth}, setup, "vault")
        real = measure(f"vault-kv2 on OpenBao {openbao.version}", counted, work, args.rotations, proxy)
        direct = load_store("vault-kv2", {"url": openbao.url, "path_prefix": "rotator", "auth": auth}, setup, "vault")
        timed = measure("vault-kv2 on OpenBao (direct)", direct, work, args.rotations, Calls())
        real["engine_ms"], real["store_ms"] = timed["engine_ms"], timed["store_ms"]
        root = openbao.client().secrets.kv.v2
        root.create_or_update_secret(path="rotator/bench/floor", secret={"value": "x"})
        real["floor_ms"] = floor_ms(
            lambda: root.read_secret_version(path="rotator/bench/floor", raise_on_deleted_version=True)
        )
        results.append(real)

        os.environ["ROTATOR_BENCH_VAULT_TOKEN"] = fake.add_token(ttl=0, renewable=False)
        vault_options = {"url": fake.url, "auth": {"method": "token", "token": "env:ROTATOR_BENCH_VAULT_TOKEN"}}
        vault = load_store("vault-kv2", vault_options, setup, "stores.vault")
        faked = measure("vault-kv2 on the fake (tests/fakes/vault.py)", vault, work, args.rotations, VaultCalls(fake))
        results.append(faked)
        kv = hvac.Client(url=fake.url, token=fake.root_token).secrets.kv.v2
        kv.create_or_update_secret(path="bench/floor", secret={"value": "x"})
        read = {"path": "bench/floor", "raise_on_deleted_version": True}
        results[-1]["floor_ms"] = floor_ms(lambda: kv.read_secret_version(**read))
    finally:
        fake.stop()
        proxy.stop()
        openbao.stop()
        stop_moto()
        shutil.rmtree(work, ignore_errors=True)
    print(f"rotations per store: {args.rotations} (after one warm-up rotation); loopback servers")
    for result in results:
        show(result)
    real, faked = results[-2], results[-1]
    for figure in ("cold_calls", "engine_calls", "store_calls"):
        kinds = sorted(set(real[figure]) | set(faked[figure]))
        differ = [(k, real[figure].get(k, 0), faked[figure].get(k, 0)) for k in kinds]
        differ = [row for row in differ if row[1] != row[2]]
        print(f"\nOpenBao vs the fake, {figure.replace('_', ' ')}: " + ("the same" if not differ else ""))
        for kind, on_real, on_fake in differ:
            print(f"      {kind}: OpenBao {on_real:g}, fake {on_fake:g}")


if __name__ == "__main__":
    main()
