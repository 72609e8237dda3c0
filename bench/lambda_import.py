"""Cold import time of the rotation function beyond ``import boto3, psycopg``, and the size of its zips.

Measured on the deployment layout itself: lambda/build/x86_64 (what the zip holds, built by lambda/build.py if it
is missing) first on sys.path, then a stand-in for Lambda's /var/runtime holding only boto3 and its dependencies,
in fresh interpreters started with -I -S (no site-packages of this environment: no rich, no typer). Each run times
its imports with perf_counter inside the interpreter (interpreter start-up excluded), runs alternate between the
variants, and the figure is the median difference over the runs:

- baseline: ``import boto3, psycopg`` (what any Python rotation function for PostgreSQL imports, AWS's samples too);
- handler: the baseline, then ``import handler`` (Lambda's init phase: the adapter, the AWS store, structlog);
- first call: the handler, then the postgres plugin loaded through the registry as the first invocation loads it;
- all components: the handler, then every plugin and notifier module (the worst a function can load; its store is
  always the AWS one, already in the handler's figure);
- pydantic alone, for the record: the baseline, then pydantic (from this environment: it is not in the zip)
  imported and one small model built. Component options were pydantic models until they moved to msgspec
  (rotator/options.py); this is the part of the cold start that move removed.

Usage: python bench/lambda_import.py [--runs 21]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "lambda" / "build"
RUNTIME_PACKAGES = ("boto3", "botocore", "jmespath", "s3transfer", "dateutil", "six.py")

VARIANTS = {
    "baseline": "import boto3, psycopg",
    "handler": "import boto3, psycopg\nt1 = time.perf_counter()\nimport handler",
    "first call": "import boto3, psycopg\nt1 = time.perf_counter()\nimport handler\n"
    "from rotator.lambda_adapter import registry_plugin_loader\nregistry_plugin_loader()('postgres', {})",
    "all components": "import boto3, psycopg\nt1 = time.perf_counter()\nimport handler\n"
    "from importlib.metadata import entry_points\nfrom rotator.registry import GROUPS\n"
    "[ep.load() for kind in ('plugin', 'notifier') for ep in entry_points(group=GROUPS[kind])]",
    # For the record: what pydantic alone (imported and one small model built) costs in that layout.
    "pydantic alone": "import boto3, psycopg\nt1 = time.perf_counter()\nsys.path.append(SITE)\n"
    "from pydantic import BaseModel\nclass Options(BaseModel):\n    region: str | None = None\nOptions()",
}


def runtime_dir() -> Path:
    site = Path(sysconfig.get_paths()["purelib"])
    runtime = Path(tempfile.mkdtemp(prefix="rotator-lambda-runtime-"))
    for name in RUNTIME_PACKAGES:
        (runtime / name).symlink_to(site / name)
    return runtime


def one_run(code: str, task: Path, runtime: Path) -> tuple[float, float, float, float]:
    """In a fresh interpreter: wall ms for the snippet, wall ms after the baseline imports, and the same two in
    CPU time of the process (less disturbed by other work on a shared machine)."""
    snippet = code.replace("t1 = time.perf_counter()", "t1 = time.perf_counter(); c1 = time.process_time()")
    script = (
        f"import sys, time, json\nsys.path[:0] = [{str(task)!r}, {str(runtime)!r}]\n"
        f"SITE = {sysconfig.get_paths()['purelib']!r}\n"
        f"t0 = time.perf_counter(); c0 = time.process_time()\nt1 = c1 = None\n{snippet}\n"
        "t2 = time.perf_counter(); c2 = time.process_time()\n"
        "print(json.dumps([(t2 - t0) * 1000, (t2 - (t1 or t2)) * 1000, (c2 - c0) * 1000, (c2 - (c1 or c2)) * 1000]))"
    )
    env = {"PATH": os.environ.get("PATH", ""), "AWS_DEFAULT_REGION": "us-east-1", "HOME": os.environ.get("HOME", "")}
    out = subprocess.run([sys.executable, "-I", "-S", "-c", script], capture_output=True, text=True, env=env,
                         check=True)  # fmt: skip
    total, after, cpu_total, cpu_after = json.loads(out.stdout.strip().splitlines()[-1])
    return total, after, cpu_total, cpu_after


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    args = parser.parse_args()
    task = BUILD / "x86_64"
    if not (task / "handler.py").exists():
        subprocess.run([sys.executable, str(ROOT / "lambda" / "build.py"), "--arch", "x86_64"], check=True)
    runtime = runtime_dir()
    samples: dict[str, list[tuple[float, float, float, float]]] = {name: [] for name in VARIANTS}
    for code in VARIANTS.values():  # warm the page cache once
        one_run(code, task, runtime)
    for _ in range(args.runs):
        for name, code in VARIANTS.items():
            samples[name].append(one_run(code, task, runtime))

    def median(name: str, index: int) -> float:
        return statistics.median(run[index] for run in samples[name])

    def least(name: str, index: int) -> float:  # the least disturbed run: robust on a shared machine
        return min(run[index] for run in samples[name])

    print(f"fresh interpreters, -I -S, {args.runs} runs each, median (min); python {sys.version.split()[0]}")
    print(f"  import boto3, psycopg: {median('baseline', 0):6.1f} ({least('baseline', 0):5.1f}) ms wall, "
          f"{median('baseline', 2):6.1f} ({least('baseline', 2):5.1f}) ms CPU")  # fmt: skip
    for name in ("handler", "first call", "all components", "pydantic alone"):
        print(f"  {name + ':':16s} beyond boto3 and psycopg: {median(name, 1):6.1f} ({least(name, 1):5.1f}) ms wall, "
              f"{median(name, 3):6.1f} ({least(name, 3):5.1f}) ms CPU")  # fmt: skip
    for zip_path in sorted(BUILD.glob("rotator-lambda-*.zip")):
        print(f"  {zip_path.name}: {zip_path.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
