"""Cold import time of the rotation function beyond ``import boto3, psycopg``, and the size of its zips.

Measured on the deployment layout itself: lambda/build/x86_64 (what the zip holds, built by lambda/build.py if it
is missing) first on sys.path, then a stand-in for Lambda's /var/runtime holding only boto3 and its dependencies,
in fresh interpreters started with -I -S (no site-packages of this environment: no rich, no typer). Each run times
its imports with perf_counter inside the interpreter (interpreter start-up excluded), runs alternate between the
variants, and the figure is the median difference over the runs:

- baseline: ``import boto3, psycopg`` (what any Python rotation function for PostgreSQL imports, AWS's samples too);
- handler: the baseline, then ``import handler`` (Lambda's init phase: the adapter, the AWS store, structlog);
- first call: the handler, then the postgres plugin loaded through the registry as the first invocation loads it;
- pydantic alone: the baseline, then pydantic imported and one small model built (the store's and plugins' options
  are pydantic models), to show which part of the handler's figure is pydantic's.

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
    # For the record: what pydantic alone (imported and one small model built) costs in that layout.
    "pydantic alone": "import boto3, psycopg\nt1 = time.perf_counter()\nfrom pydantic import BaseModel\n"
    "class Options(BaseModel):\n    region: str | None = None\nOptions()",
}


def runtime_dir() -> Path:
    site = Path(sysconfig.get_paths()["purelib"])
    runtime = Path(tempfile.mkdtemp(prefix="rotator-lambda-runtime-"))
    for name in RUNTIME_PACKAGES:
        (runtime / name).symlink_to(site / name)
    return runtime


def one_run(code: str, task: Path, runtime: Path) -> tuple[float, float]:
    """(ms for the whole snippet, ms after the baseline imports) in a fresh interpreter."""
    script = (
        f"import sys, time, json\nsys.path[:0] = [{str(task)!r}, {str(runtime)!r}]\n"
        f"t0 = time.perf_counter()\nt1 = None\n{code}\nt2 = time.perf_counter()\n"
        "print(json.dumps([(t2 - t0) * 1000, (t2 - (t1 or t2)) * 1000]))"
    )
    env = {"PATH": os.environ.get("PATH", ""), "AWS_DEFAULT_REGION": "us-east-1", "HOME": os.environ.get("HOME", "")}
    out = subprocess.run([sys.executable, "-I", "-S", "-c", script], capture_output=True, text=True, env=env,
                         check=True)  # fmt: skip
    total, after = json.loads(out.stdout.strip().splitlines()[-1])
    return total, after


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    args = parser.parse_args()
    task = BUILD / "x86_64"
    if not (task / "handler.py").exists():
        subprocess.run([sys.executable, str(ROOT / "lambda" / "build.py"), "--arch", "x86_64"], check=True)
    runtime = runtime_dir()
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in VARIANTS}
    for code in VARIANTS.values():  # warm the page cache once
        one_run(code, task, runtime)
    for _ in range(args.runs):
        for name, code in VARIANTS.items():
            samples[name].append(one_run(code, task, runtime))
    baseline = statistics.median(total for total, _ in samples["baseline"])
    print(f"fresh interpreters, -I -S, {args.runs} runs each, median; python {sys.version.split()[0]}")
    print(f"  import boto3, psycopg:                {baseline:7.1f} ms")
    for name in ("handler", "first call", "pydantic alone"):
        beyond = statistics.median(after for _, after in samples[name])
        totals = statistics.median(total for total, _ in samples[name])
        print(f"  {name + ':':37s} {totals:7.1f} ms, of which beyond boto3 and psycopg: {beyond:6.1f} ms")
    for zip_path in sorted(BUILD.glob("rotator-lambda-*.zip")):
        print(f"  {zip_path.name}: {zip_path.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
