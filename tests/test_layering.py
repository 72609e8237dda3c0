"""DESIGN.md's import rules, enforced by walking every module's imports (top-level and lazy ones alike).

- plugins/ imports only rotator's public API (the `rotator` package itself), never rotator.<module>.
- inside plugins/, a rotation plugin, store or notifier imports its own subpackage and what all of them share
  (rotator_plugins.aws, rotator_plugins.http_transport), never another subpackage: shared code lives in one place.
- rotator/ never imports rotator_plugins, and no network client except where allowed (the PostgreSQL journal).
- the engine never imports the CLI, the daemon or a concrete component; the Lambda path never imports
  APScheduler, the daemon or the CLI (checked in a fresh interpreter).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NETWORK_CLIENTS = {"psycopg", "boto3", "botocore", "hvac", "requests", "redis", "pymysql", "urllib3", "httpx"}
# rotator modules allowed to import a network client, and which
NETWORK_ALLOWED = {"rotator/journal/postgres.py": {"psycopg"}}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    for node in ast.walk(tree):  # importlib.import_module("x") with a literal
        if (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", "") == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.add(node.args[0].value)
    return found


def modules(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("path", modules("plugins"), ids=lambda p: str(p.relative_to(ROOT)))
def test_plugins_import_only_the_public_api(path: Path) -> None:
    bad = sorted(
        name
        for name in imports_of(path)
        if name.startswith("rotator.")
        and not name.startswith("rotator_plugins")
        and name.split(".")[1] not in _public_names()
    )
    assert not bad, f"{path.relative_to(ROOT)} imports rotator internals: {bad}"


SHARED_PLUGIN_MODULES = ("rotator_plugins.aws", "rotator_plugins.http_transport")


@pytest.mark.parametrize("path", modules("plugins"), ids=lambda p: str(p.relative_to(ROOT)))
def test_plugin_subpackages_share_only_through_the_shared_modules(path: Path) -> None:
    parts = path.relative_to(ROOT / "plugins").parts
    own = f"rotator_plugins.{parts[0]}" if len(parts) > 1 else None
    bad = sorted(
        name
        for name in imports_of(path)
        if name.startswith("rotator_plugins.")
        and not name.startswith(SHARED_PLUGIN_MODULES)
        and not (own is not None and (name == own or name.startswith(own + ".")))
    )
    assert not bad, f"{path.relative_to(ROOT)} imports another plugin subpackage: {bad}"


def _public_names() -> set[str]:
    import rotator

    return set(rotator.__all__)


@pytest.mark.parametrize("path", modules("rotator"), ids=lambda p: str(p.relative_to(ROOT)))
def test_core_imports_no_plugin_and_no_network_client(path: Path) -> None:
    rel = str(path.relative_to(ROOT))
    names = imports_of(path)
    assert not [n for n in names if n.startswith("rotator_plugins")], f"{rel} imports a concrete plugin"
    clients = {n.split(".")[0] for n in names} & NETWORK_CLIENTS
    assert clients <= NETWORK_ALLOWED.get(rel, set()), f"{rel} imports network clients {sorted(clients)}"


@pytest.mark.parametrize("path", modules("rotator/engine"), ids=lambda p: str(p.relative_to(ROOT)))
def test_engine_points_one_way(path: Path) -> None:
    names = imports_of(path)
    forbidden = {
        "rotator.cli",
        "rotator.daemon",
        "rotator.scheduler",
        "rotator.workspace",
        "rotator.local_store",
        "rotator.journal.sqlite",
        "rotator.journal.postgres",
        "rotator.registry",
        "apscheduler",
        "typer",
    }
    hit = sorted(n for n in names if any(n == f or n.startswith(f + ".") for f in forbidden))
    assert not hit, f"{path.relative_to(ROOT)} imports {hit}"


def test_lambda_path_imports_no_scheduler_daemon_or_cli() -> None:
    targets = [
        "rotator.engine.runner",
        "rotator.local_store",
        "rotator.journal.sqlite",
        "rotator.registry",
        "rotator.config",
    ]
    if (ROOT / "rotator" / "lambda_adapter.py").exists():
        targets.append("rotator.lambda_adapter")
    code = (
        f"import sys; import {', '.join(targets)}; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('apscheduler', 'typer') "
        "or m in ('rotator.daemon', 'rotator.cli', 'rotator.scheduler')]; print(','.join(sorted(bad)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "", f"the Lambda path loaded {out.stdout.strip()}"


def test_builtin_components_register_through_entry_points() -> None:
    from importlib.metadata import entry_points

    text = (ROOT / "pyproject.toml").read_text()
    for group in ("rotator.plugins", "rotator.stores", "rotator.notifiers"):
        names = {ep.name for ep in entry_points(group=group)}
        assert names, f"nothing registered in {group}"
        for name in names:
            assert f"{name} = " in text or f'"{name}" = ' in text
