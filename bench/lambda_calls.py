"""Secrets Manager API calls per full rotation by the rotation function, against AWS's PostgreSQL single-user sample.

One single-user PostgreSQL secret (AWS's sample shape) on a throwaway PostgreSQL, Secrets Manager on moto's server
(real HTTP), the four steps invoked as Secrets Manager invokes them (tests/lambda/rotation_service.py). Calls are
counted with a botocore event hook (``before-call.secrets-manager``) on the function's client. The secret has an
AWSPREVIOUS version, as in steady state (createSecret reads it to revoke it).

- cold: every step in a new container (nothing cached): the most a rotation costs;
- warm: the four steps in one container (Lambda's usual case: four invocations within seconds);
- sample: the calls AWS's SecretsManagerRDSPostgreSQLRotationSingleUser/lambda_function.py makes, replayed in its
  order with boto3 against the same secret (its database part done with psycopg): DescribeSecret on every step and
  again in finishSecret, GetRandomPassword, three reads in setSecret.

Usage: python bench/lambda_calls.py [--rotations 20]
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rotator_plugins.stores.aws_secretsmanager import AwsSecretsManagerStore  # noqa: E402

from rotator import logs  # noqa: E402
from rotator.lambda_adapter import FunctionSettings, RotationFunction  # noqa: E402
from tests.servers.aws import start_moto_server  # noqa: E402
from tests.servers.postgres import PgServer  # noqa: E402

# tests/lambda is a folder named after a keyword: imported by name, not by an import statement.
service_module = importlib.import_module("tests.lambda.rotation_service")
STEPS = service_module.STEPS


class Counted:
    """A Secrets Manager client whose calls are counted by action."""

    def __init__(self, client: Any):
        self.client = client
        self.calls: Counter[str] = Counter()
        client.meta.events.register("before-call.secrets-manager", self._count)

    def _count(self, model: Any, **_: Any) -> None:
        self.calls[model.name] += 1

    def take(self) -> Counter[str]:
        taken, self.calls = self.calls, Counter()
        return taken


def function(client: Any) -> RotationFunction:
    return RotationFunction(AwsSecretsManagerStore(client=client), FunctionSettings.from_env({}))


def rotate_with_function(service: Any, arn: str, client: Any, *, warm: RotationFunction | None) -> None:
    token = service.start_rotation(arn)
    for step in STEPS:
        (warm or function(client)).handle(service_module.sample_event(step, arn, token))


def rotate_like_the_sample(service: Any, arn: str, sm: Any, pg: PgServer) -> None:
    """AWS's single-user sample's Secrets Manager calls, in its order (see the module docstring)."""
    token = service.start_rotation(arn)

    def get(stage: str, version: str | None = None) -> dict[str, Any] | None:
        params = {"SecretId": arn, "VersionStage": stage, **({"VersionId": version} if version else {})}
        try:
            return dict(json.loads(sm.get_secret_value(**params)["SecretString"]))
        except sm.exceptions.ResourceNotFoundException:
            return None

    for step in STEPS:
        sm.describe_secret(SecretId=arn)  # lambda_handler: the contract's checks
        if step == "createSecret":
            current = get("AWSCURRENT")
            assert current is not None
            if get("AWSPENDING", token) is None:
                current["password"] = sm.get_random_password(ExcludeCharacters=":/@\"'\\")["RandomPassword"]
                sm.put_secret_value(SecretId=arn, ClientRequestToken=token, SecretString=json.dumps(current),
                                    VersionStages=["AWSPENDING"])  # fmt: skip
        elif step == "setSecret":
            get("AWSPREVIOUS")
            current, pending = get("AWSCURRENT"), get("AWSPENDING", token)
            assert current is not None and pending is not None
            pg.make_role(pending["username"], pending["password"])  # the sample's ALTER USER, logged in as CURRENT
        elif step == "testSecret":
            pending = get("AWSPENDING", token)
            assert pending is not None and pg.can_login(pending["username"], pending["password"])
        else:
            labels = sm.describe_secret(SecretId=arn)["VersionIdsToStages"]
            current_version = next(v for v, stages in labels.items() if "AWSCURRENT" in stages)
            sm.update_secret_version_stage(SecretId=arn, VersionStage="AWSCURRENT", MoveToVersionId=token,
                                           RemoveFromVersionId=current_version)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rotations", type=int, default=20)
    args = parser.parse_args()
    logs.configure(json=True, level="warning")
    moto, stop_moto = start_moto_server()
    pg = PgServer.start()
    try:
        with service_module.aws_put_semantics():
            service = service_module.SecretsManagerService(moto.client("secretsmanager"))
            counted = Counted(moto.client("secretsmanager"))
            user, password = f"bench_{uuid.uuid4().hex[:8]}", "Init-" + uuid.uuid4().hex
            pg.make_role(user, password)
            arn = service.create(pg.secret(user, password))
            warm = function(counted.client)
            rotate_with_function(service, arn, counted.client, warm=warm)  # now there is an AWSPREVIOUS
            counted.take()
            results: dict[str, list[Counter[str]]] = {"cold": [], "warm": [], "sample": []}
            times: dict[str, list[float]] = {name: [] for name in results}
            for _ in range(args.rotations):
                for name in results:
                    started = time.perf_counter()
                    if name == "sample":
                        rotate_like_the_sample(service, arn, counted.client, pg)
                    else:
                        rotate_with_function(service, arn, counted.client, warm=warm if name == "warm" else None)
                    times[name].append((time.perf_counter() - started) * 1000)
                    results[name].append(counted.take())
                    assert pg.can_login(user, service.value(arn)["password"]), name
    finally:
        pg.stop()
        stop_moto()

    labels = {"cold": "this function, each step in a new container", "warm": "this function, one warm container",
              "sample": "AWS's PostgreSQL single-user sample (its calls replayed)"}  # fmt: skip
    for name, counts in results.items():
        totals = {sum(c.values()) for c in counts}
        by_action = counts[-1]
        print(f"\n== {labels[name]}")
        print(f"  Secrets Manager calls per rotation: {sorted(totals)} (over {len(counts)} rotations)")
        for action, count in sorted(by_action.items()):
            print(f"      {count:3d}  {action}")
        if name != "sample":  # the replay's database part is a stand-in: its time says nothing
            print(f"  ms per rotation on loopback (moto, PostgreSQL): {statistics.median(times[name]):.1f} median")


if __name__ == "__main__":
    main()
