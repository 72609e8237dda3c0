"""The entry points: every built-in plugin, store and notifier is registered as pyproject.toml says and loads the
class it names; and a third-party package installed beside the project, registering its own plugin, store and
notifier (one of them broken, one using pydantic, as a user's may), does not make the project's own tests fail: the
tests that walk the installed entry points take the project's own (tests/contract/built_ins.py), and the registry
loads a built-in as before and names the broken one when asked for it.

The package is a real distribution as pip leaves it in site-packages: a `*.dist-info` folder (METADATA,
entry_points.txt) beside its module, in a folder put on sys.path (in process) or PYTHONPATH (a pytest subprocess
running a selection of the project's tests that look at entry points)."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from rotator import registry
from rotator.components import ComponentSetup
from rotator.errors import PluginLoadError
from rotator.registry import GROUPS, load_plugin
from tests.contract.built_ins import built_in_entry_points

ROOT = Path(__file__).resolve().parents[2]
KINDS = {"plugin": "rotator.plugins", "store": "rotator.stores", "notifier": "rotator.notifiers"}

ENTRY_POINTS = """\
[rotator.plugins]
acme-key = acme_rotator_extras:AcmeKeyPlugin
acme-broken = acme_rotator_extras.missing:Plugin

[rotator.stores]
acme-store = acme_rotator_extras:AcmeStore

[rotator.notifiers]
acme-pager = acme_rotator_extras:AcmePager
"""

MODULE = '''"""A third-party rotator extension, as a user might install one."""

import pydantic  # the project's own components never import it (tests/lambda/test_packaging.py)


class AcmeKeyPlugin:
    strategies = ("single-user",)

    def __init__(self, options, setup):
        self.options = options

    def create(self, ctx, current): return dict(current.value)
    def stage(self, ctx, current, pending): pass
    def test(self, ctx, pending): pass
    def revoke(self, ctx, previous, current): pass
    def unstage(self, ctx, current, pending): pass
    def discard(self, ctx, pending): pass


class AcmeStore:
    def __init__(self, options, setup): pass


class AcmePager:
    def __init__(self, options, setup): pass

    def __call__(self, event): pass
'''


def install_third_party(folder: Path) -> Path:
    """acme-rotator-extras 1.0 as pip installs it: the module and its dist-info in `folder`."""
    package = folder / "acme_rotator_extras"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(MODULE)
    info = folder / "acme_rotator_extras-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-rotator-extras\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    (info / "top_level.txt").write_text("acme_rotator_extras\n")
    (info / "RECORD").write_text("")
    return folder


def project_entry_points(kind: str) -> dict[str, str]:
    """What pyproject.toml registers in the group of `kind`: type name -> "module:attribute"."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return dict(project["entry-points"][GROUPS[kind]])


def project_entry_point_names(kind: str) -> set[str]:
    return set(project_entry_points(kind))


@pytest.mark.parametrize(
    ("kind", "name"), [(kind, name) for kind in sorted(KINDS) for name in sorted(project_entry_points(kind))]
)
def test_every_built_in_is_registered_and_loads_what_pyproject_names(kind: str, name: str) -> None:
    """The installed metadata matches pyproject.toml (a stale editable install would not), and each entry point
    loads the class it names."""
    module, _, attribute = project_entry_points(kind)[name].partition(":")
    entry_point = built_in_entry_points(kind)[name]
    assert entry_point.value == f"{module}:{attribute}"
    assert entry_point.load() is getattr(importlib.import_module(module), attribute)


@pytest.fixture
def third_party(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    folder = install_third_party(tmp_path / "site")
    monkeypatch.syspath_prepend(str(folder))
    importlib.invalidate_caches()
    registry.available.cache_clear()
    yield folder
    registry.available.cache_clear()
    sys.modules.pop("acme_rotator_extras", None)


def test_the_third_party_package_is_installed_for_real(third_party: Path) -> None:
    """What the other tests rely on: the environment really has the extension's entry points."""
    names = {ep.name for group in KINDS.values() for ep in entry_points(group=group)}
    assert {"acme-key", "acme-broken", "acme-store", "acme-pager"} <= names
    assert {"acme-key", "acme-broken"} <= set(registry.available("plugin"))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_built_in_entry_points_are_exactly_the_projects(third_party: Path, kind: str) -> None:
    assert set(built_in_entry_points(kind)) == project_entry_point_names(kind)


def test_the_registry_loads_a_built_in_beside_it_and_names_the_broken_one(third_party: Path, tmp_path: Path):
    setup = ComponentSetup(name="p", config_dir=tmp_path, state_dir=tmp_path)
    plugin = load_plugin("generated", {}, setup, "plans[0].plugin")
    assert type(plugin).__module__ == "rotator_plugins.rotation.generated"
    assert type(load_plugin("acme-key", {}, setup, "plans[1].plugin")).__name__ == "AcmeKeyPlugin"
    with pytest.raises(PluginLoadError, match="plugin 'acme-broken' failed to load: ModuleNotFoundError"):
        load_plugin("acme-broken", {}, setup, "plans[2].plugin")


# The project's tests that look at the installed entry points, run with the extension installed beside it.
ENTRY_POINT_TESTS = [
    "tests/lambda/test_packaging.py::test_no_built_in_component_imports_pydantic",
    "tests/unit/test_config_errors.py",
    "tests/contract/test_entry_points.py::test_every_built_in_is_registered_and_loads_what_pyproject_names",
    "tests/contract/test_entry_points.py::test_built_in_entry_points_are_exactly_the_projects",
]


def test_the_projects_entry_point_tests_pass_with_it_installed(tmp_path: Path) -> None:
    folder = install_third_party(tmp_path / "site")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(folder), env.get("PYTHONPATH")]))
    selected = [t for t in ENTRY_POINT_TESTS if (ROOT / t.split("::")[0]).exists()]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", *selected],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "skipped" not in proc.stdout
