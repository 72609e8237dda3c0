"""Store cost per rotation: API calls and time, for the local store, AWS Secrets Manager (moto) and Vault (fake).

Two figures per store, both over real HTTP for the remote stores (moto's server mode; the fake Vault of
tests/fakes/vault.py), both in this process:

- engine: one full rotation through the engine, `Runner.rotate(revoke_old_now=True)` with the `generated`
  plugin (no target system, so the store and the SQLite journal are the whole cost): settle, create (PENDING),
  stage, test, promote, revoke. AWS calls are counted with a botocore event hook
  (`client.meta.events.register("before-call.secrets-manager", ...)`), Vault calls from the fake's request log.
- store only: the least a rotation needs from the store: get(CURRENT), put_pending, promote.

Times are the median and 95th percentile over the rotations (after a warm-up), in milliseconds.
moto and the fake answer in microseconds-to-milliseconds on loopback: the figures show the store's own cost
(round trips, JSON, boto3/hvac) and the number of calls, not AWS's or Vault's latency, which adds per call.

Usage: python bench/store_calls.py [--rotations 50]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

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


class VaultCalls(Calls):
    """Vault HTTP requests, by method and endpoint kind, from the fake's request log."""

    def __init__(self, fake: FakeVault):
        self.fake = fake
        self.mark = 0

    def reset(self) -> None:
        self.mark = len(self.fake.requests)

    def snapshot(self) -> Counter[str]:
        calls: Counter[str] = Counter()
        for method, path, _ in self.fake.requests[self.mark :]:
            parts = path.split("/")  # /v1/<mount>/<kind>/... or /v1/auth/token/...
            kind = "/".join(parts[2:5]) if parts[2] == "auth" else parts[3]
            where = " (pending path)" if ".rotator-pending" in path else ""
            calls[f"{method} {kind}{where}"] += 1
        return calls


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
    runner.rotate(plan, revoke_old_now=True)  # warm-up: imports, connections, first-use costs

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

        os.environ["ROTATOR_BENCH_VAULT_TOKEN"] = fake.add_token(ttl=0, renewable=False)
        vault_options = {"url": fake.url, "auth": {"method": "token", "token": "env:ROTATOR_BENCH_VAULT_TOKEN"}}
        vault = load_store("vault-kv2", vault_options, setup, "stores.vault")
        results.append(measure("vault-kv2", vault, work, args.rotations, VaultCalls(fake)))
        kv = hvac.Client(url=fake.url, token=fake.root_token).secrets.kv.v2
        kv.create_or_update_secret(path="bench/floor", secret={"value": "x"})
        read = {"path": "bench/floor", "raise_on_deleted_version": True}
        results[-1]["floor_ms"] = floor_ms(lambda: kv.read_secret_version(**read))
    finally:
        fake.stop()
        stop_moto()
        shutil.rmtree(work, ignore_errors=True)
    print(f"rotations per store: {args.rotations} (after one warm-up rotation); loopback servers in this process")
    for result in results:
        show(result)


if __name__ == "__main__":
    main()
