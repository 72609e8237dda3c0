"""The deployment: importing the handler loads no scheduler, daemon or CLI; lambda/build.py makes a zip for each
architecture with the handler at its root, both packages with their entry points and psycopg's binary build for
that architecture; and the x86_64 zip, unpacked the way Lambda unpacks it, rotates a real PostgreSQL secret.

The build downloads the Linux wheels once into lambda/build/wheels (git-ignored) and reuses them; both zips take
about 40 s to build here, most of it pip resolving and compiling .pyc files.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import sysconfig
import uuid
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.servers.aws import DUMMY_ENV, MotoServer
from tests.servers.postgres import PgServer

from .rotation_service import STEPS, SecretsManagerService, sample_event

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN_MODULES = ("apscheduler", "typer", "rotator.daemon", "rotator.cli", "rotator.scheduler", "rotator.workspace",
                     "pydantic", "pydantic_core", "rotator.config")  # fmt: skip
# What Lambda's Python runtime provides besides the zip (its /var/runtime): boto3 and its dependencies.
RUNTIME_PACKAGES = ("boto3", "botocore", "jmespath", "s3transfer", "dateutil", "six.py")


def loaded_modules(code: str, *, args: list[str], env: dict[str, str] | None = None) -> list[str]:
    out = subprocess.run([sys.executable, *args, "-c", code], capture_output=True, text=True, check=True,
                         cwd=ROOT, env=env)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


LIST_MODULES = "import sys, json; print(json.dumps(sorted(sys.modules)))"


def test_importing_the_handler_loads_no_scheduler_daemon_or_cli() -> None:
    code = f"import sys; sys.path.insert(0, 'lambda'); import handler; {LIST_MODULES}"
    modules = loaded_modules(code, args=[])
    bad = [m for m in modules if any(m == f or m.startswith(f + ".") for f in FORBIDDEN_MODULES)]
    assert bad == []
    assert "rotator.lambda_adapter" in modules and "rotator_plugins.stores.aws_secretsmanager" in modules


def test_no_built_in_component_imports_pydantic() -> None:
    """Every plugin, store and notifier the function may load (from a tag or its settings) declares its options with
    rotator.options: importing them all (each module defines its options class) leaves pydantic unimported (it is
    not in the zip: see build.FORBIDDEN)."""
    code = (
        "import sys; sys.path.insert(0, 'lambda'); import handler\n"
        "from importlib.metadata import entry_points\n"
        "from rotator.registry import GROUPS\n"
        "loaded = [ep.load() for group in GROUPS.values() for ep in entry_points(group=group)\n"
        "          if ep.dist is not None and ep.dist.name == 'credential-rotator']  # built-ins only\n"
        f"assert len(loaded) >= 20, loaded\n{LIST_MODULES}"
    )
    modules = loaded_modules(code, args=[])
    assert not [m for m in modules if m.split(".")[0] in ("pydantic", "pydantic_core")]
    assert "msgspec" in modules and "rotator_plugins.notifiers.kubernetes" in modules


def load_build() -> ModuleType:
    """lambda/build.py as a module (registered first: its dataclass needs its module in sys.modules)."""
    name = "rotator_lambda_build"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "lambda" / "build.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("lambda-build")
    cache = ROOT / "lambda" / "build" / "wheels"
    cache.mkdir(parents=True, exist_ok=True)
    (out / "wheels").symlink_to(cache)
    build = load_build()
    for arch in ("x86_64", "arm64"):
        build.build(arch, out)
    return out


@pytest.mark.parametrize("arch", ["x86_64", "arm64"])
def test_the_zip_layout(build_dir: Path, arch: str) -> None:
    zip_path = build_dir / f"rotator-lambda-{arch}.zip"
    assert load_build().check_layout(zip_path, arch) == []
    with zipfile.ZipFile(zip_path) as archive:
        names = archive.namelist()
        assert "handler.py" in names, "the handler at the zip root: handler.lambda_handler"
        assert any(n.startswith("psycopg_binary/") and ".so" in n for n in names)
        assert not [n for n in names if n.startswith(("boto3/", "botocore/"))], "the runtime's boto3 is used"
        assert not [n for n in names if n.startswith(("tests/", "lambda/"))]
        assert "rotator/__pycache__/lambda_adapter.cpython-311.pyc" in names, "compiled: /var/task is read-only"
    assert zip_path.stat().st_size < 50_000_000, "Lambda's limit for a zip uploaded directly"


def test_the_wrong_architecture_is_caught(build_dir: Path) -> None:
    problems = load_build().check_layout(build_dir / "rotator-lambda-x86_64.zip", "arm64")
    assert any("psycopg_binary" in p and "not a Linux arm64" in p for p in problems)


def runtime_dir(tmp: Path) -> Path:
    """A stand-in for Lambda's /var/runtime: only boto3 and its dependencies, linked from this environment."""
    site = Path(sysconfig.get_paths()["purelib"])
    runtime = tmp / "runtime"
    runtime.mkdir(exist_ok=True)
    for name in RUNTIME_PACKAGES:
        if not (runtime / name).exists():
            (runtime / name).symlink_to(site / name)
    return runtime


def test_the_unpacked_zip_rotates_a_postgres_secret(
    build_dir: Path,
    tmp_path: Path,
    service: SecretsManagerService,
    moto_server: MotoServer,
    pg_server: PgServer,
) -> None:
    task = tmp_path / "task"
    with zipfile.ZipFile(build_dir / "rotator-lambda-x86_64.zip") as archive:
        archive.extractall(task)
    runtime = runtime_dir(tmp_path)
    user, password = f"zip_{uuid.uuid4().hex[:8]}", "Init-" + uuid.uuid4().hex
    pg_server.make_role(user, password)
    try:
        arn = service.create(pg_server.secret(user, password))
        token = service.start_rotation(arn)
        events = [sample_event(step, arn, token) for step in STEPS]
        # -I -S: no site-packages of this environment; the zip first, then the runtime's boto3, as on Lambda.
        code = (
            "import sys, json; sys.path[:0] = sys.argv[1:3]\n"
            "import handler, psycopg\n"
            "results = [handler.lambda_handler(e, None) for e in json.loads(sys.argv[3])]\n"
            "print(json.dumps({'results': results, 'modules': sorted(sys.modules), 'psycopg': psycopg.pq.__impl__,"
            " 'psycopg_file': psycopg.__file__}))"
        )
        env: dict[str, Any] = {**DUMMY_ENV, "PATH": os.environ.get("PATH", ""),
                               "SECRETS_MANAGER_ENDPOINT": moto_server.endpoint_url}  # fmt: skip
        out = subprocess.run(
            [sys.executable, "-I", "-S", "-c", code, str(task), str(runtime), json.dumps(events)],
            capture_output=True, text=True, env=env, timeout=120,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr[-3000:]
        report = json.loads(out.stdout.strip().splitlines()[-1])
        assert [r["result"] for r in report["results"]] == ["pending-created", "staged", "tested", "promoted"]
        assert report["psycopg"] == "binary" and report["psycopg_file"].startswith(str(task))
        loaded = report["modules"]
        for forbidden in (*FORBIDDEN_MODULES, "rich"):
            assert not [m for m in loaded if m == forbidden or m.startswith(forbidden + ".")], forbidden
        new = service.value(arn)
        assert pg_server.can_login(user, new["password"]) and not pg_server.can_login(user, password)
        assert password not in out.stdout and new["password"] not in out.stdout, "the JSON log carries no secret"
        assert '"event": "step done"' in out.stdout
    finally:
        pg_server.drop_role(user)
