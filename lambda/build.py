"""Build the rotation function's deployment zips: lambda/build/rotator-lambda-<arch>.zip for x86_64 and arm64.

The zip holds, at its root: handler.py (the handler is ``handler.lambda_handler``), the packages ``rotator`` and
``rotator_plugins`` with their distribution metadata (the entry points the registry finds plugins by), and the
Linux wheels of lambda/requirements.txt for the architecture (manylinux2014, CPython 3.11: psycopg's binary build,
pydantic-core, cryptography). Python files are compiled to .pyc with unchecked hashes, because Lambda's code
directory is read-only (it could not cache them) and a zip's 2-second timestamps would invalidate checked ones.

    python lambda/build.py                      # both architectures; rotator-lambda.zip is the x86_64 one
    python lambda/build.py --arch arm64         # rotator-lambda.zip is the arm64 one (deploy: Architecture=arm64)
    python lambda/build.py --arch x86_64 --with-boto3 --out /tmp/build

Wheels are downloaded once into <out>/wheels/<arch> (pip download) and installed from there, so a second build
works offline (--offline). Run it with Python 3.11, the runtime's version, so that the .pyc files match.
"""

from __future__ import annotations

import argparse
import compileall
import os
import py_compile
import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = ROOT / "lambda"
PLATFORMS = {"x86_64": "x86_64", "arm64": "aarch64"}  # Lambda's name -> the wheel platform's
ELF_MACHINES = {"x86_64": 0x3E, "arm64": 0xB7}  # e_machine of a Linux shared object
PYTHON = "3.11"
# Packages the Lambda path must never carry (DESIGN: no CLI, daemon or scheduler there; and pydantic, which only
# reads the config file: component options are msgspec, so its ~60 ms of import stay out of the cold start).
FORBIDDEN = ("apscheduler", "typer", "rich", "prometheus_client", "pydantic", "pydantic_core")
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed: the same inputs give the same zip


@dataclass
class Built:
    arch: str
    zip_path: Path
    zip_bytes: int
    unzipped_bytes: int
    files: int


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args], check=True)


def platform_args(arch: str) -> list[str]:
    machine = PLATFORMS[arch]
    return [
        "--only-binary=:all:",
        # glibc 2.17 at most: the python3.11 runtime runs on Amazon Linux 2 (glibc 2.26), so a manylinux_2_28 wheel
        # (psycopg-binary's newest aarch64 builds) would not load there; pip picks a release built for 2014.
        "--platform", f"manylinux2014_{machine}",
        "--platform", f"manylinux_2_17_{machine}",
        "--python-version", PYTHON,
        "--implementation", "cp",
        "--abi", "cp311",
    ]  # fmt: skip


def requirements(with_boto3: bool) -> list[str]:
    lines = (HERE / "requirements.txt").read_text().splitlines()
    wanted = [line.split("#", 1)[0].strip() for line in lines]
    return [line for line in wanted if line] + (["boto3>=1.34"] if with_boto3 else [])


def install_dependencies(arch: str, target: Path, wheels: Path, with_boto3: bool, offline: bool) -> None:
    reqs = requirements(with_boto3)
    if not offline:
        pip("download", "--quiet", "--dest", str(wheels), *platform_args(arch), *reqs)
    pip("install", "--quiet", "--no-index", "--find-links", str(wheels), "--target", str(target), "--no-compile",
        *platform_args(arch), *reqs)  # fmt: skip


def install_project(target: Path) -> None:
    """rotator/ and plugins/ (as rotator_plugins/), and the metadata a wheel would install: importlib.metadata finds
    the entry points (rotator.plugins, rotator.stores, rotator.notifiers) in it, as it does in the daemon's venv."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "rotator", target / "rotator", ignore=ignore)
    shutil.copytree(ROOT / "plugins", target / "rotator_plugins", ignore=ignore)
    name, version = project["name"], project["version"]
    info = target / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "top_level.txt").write_text("rotator\nrotator_plugins\n")
    (info / "INSTALLER").write_text("lambda/build.py\n")
    sections = []
    for group, entries in project.get("entry-points", {}).items():
        sections.append(f"[{group}]\n" + "".join(f"{key} = {value}\n" for key, value in entries.items()))
    (info / "entry_points.txt").write_text("\n".join(sections))


def prune(target: Path) -> None:
    for path in [target / "bin", *target.rglob("__pycache__")]:
        shutil.rmtree(path, ignore_errors=True)


def compile_all(target: Path) -> None:
    if sys.version_info[:2] != (3, 11):
        print(f"warning: Python {sys.version.split()[0]} is not the runtime's {PYTHON}: no .pyc files compiled")
        return
    ok = compileall.compile_dir(
        str(target),
        quiet=1,
        workers=0,
        invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
    )
    if not ok:
        raise SystemExit("compileall failed")


def write_zip(target: Path, zip_path: Path) -> Built:
    files = sorted(p for p in target.rglob("*") if p.is_file())
    unzipped = 0
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for path in files:
            info = zipfile.ZipInfo(path.relative_to(target).as_posix(), date_time=ZIP_DATE)
            mode = 0o755 if os.access(path, os.X_OK) else 0o644
            info.external_attr = (0o100000 | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            data = path.read_bytes()
            unzipped += len(data)
            archive.writestr(info, data)
    return Built("", zip_path, zip_path.stat().st_size, unzipped, len(files))


def check_layout(zip_path: Path, arch: str) -> list[str]:
    """What is wrong with the zip's layout for `arch` (empty when nothing): the handler at the root, both packages,
    their entry points, psycopg's binary build and pydantic-core for the architecture, no CLI or scheduler."""
    problems = []
    with zipfile.ZipFile(zip_path) as archive:
        names = set(archive.namelist())
        for required in ("handler.py", "rotator/__init__.py", "rotator/lambda_adapter.py", "rotator/lambda_settings.py",
                         "rotator_plugins/__init__.py", "rotator_plugins/stores/aws_secretsmanager.py"):  # fmt: skip
            if required not in names:
                problems.append(f"missing {required}")
        points = [n for n in names if n.startswith("credential_rotator-") and n.endswith(".dist-info/entry_points.txt")]
        if not points or "[rotator.plugins]" not in archive.read(points[0]).decode():
            problems.append("no entry points for rotator.plugins")
        for package in ("psycopg_binary", "msgspec"):
            objects = [n for n in names if n.startswith(f"{package}/") and ".so" in n.rsplit("/", 1)[-1]]
            if not objects:
                problems.append(f"no {package} shared object")
            for name in objects:
                head = archive.read(name)[:20]
                machine = int.from_bytes(head[18:20], "little")
                if head[:4] != b"\x7fELF" or machine != ELF_MACHINES[arch]:
                    problems.append(f"{name} is not a Linux {arch} shared object")
        for package in FORBIDDEN:
            if any(n.startswith(f"{package}/") for n in names):
                problems.append(f"{package} must not be in the Lambda zip")
    return problems


def build(arch: str, out: Path, *, with_boto3: bool = False, offline: bool = False) -> Built:
    target = out / arch
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    wheels = out / "wheels" / arch
    wheels.mkdir(parents=True, exist_ok=True)
    install_dependencies(arch, target, wheels, with_boto3, offline)
    install_project(target)
    shutil.copy2(HERE / "handler.py", target / "handler.py")
    prune(target)
    compile_all(target)
    built = write_zip(target, out / f"rotator-lambda-{arch}.zip")
    built.arch = arch
    problems = check_layout(built.zip_path, arch)
    if problems:
        raise SystemExit(f"{built.zip_path}: " + "; ".join(problems))
    return built


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--arch",
        nargs="+",
        choices=sorted(PLATFORMS),
        default=["x86_64", "arm64"],
        help="the first one is also written as rotator-lambda.zip (what template.yaml deploys)",
    )
    parser.add_argument("--out", type=Path, default=HERE / "build")
    parser.add_argument("--with-boto3", action="store_true", help="bundle boto3 instead of the runtime's")
    parser.add_argument("--offline", action="store_true", help="install from <out>/wheels only")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    for index, arch in enumerate(args.arch):
        built = build(arch, out, with_boto3=args.with_boto3, offline=args.offline)
        print(f"{built.zip_path}: {built.zip_bytes / 1e6:.1f} MB zipped, {built.unzipped_bytes / 1e6:.1f} MB "
              f"unzipped, {built.files} files ({arch})")  # fmt: skip
        if index == 0:  # what lambda/template.yaml deploys (its Architecture parameter must match)
            shutil.copy2(built.zip_path, out / "rotator-lambda.zip")
            print(f"{out / 'rotator-lambda.zip'}: the {arch} zip, for lambda/template.yaml")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
