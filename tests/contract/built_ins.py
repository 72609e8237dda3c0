"""The project's own components among the entry points installed: a third-party plugin, store or notifier that is
installed beside the project (its own distribution, registered in the same groups) is the user's, so the project's
tests never load it, never count it and never run a contract over it.

The contract suites (test_plugins.py, test_stores.py, test_notifiers.py) name their components one by one; a test
that walks the installed entry points goes through `built_in_entry_points`."""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points

from rotator.registry import GROUPS

DISTRIBUTION = "credential-rotator"  # [project] name in pyproject.toml


def is_built_in(entry_point: EntryPoint) -> bool:
    return entry_point.dist is not None and entry_point.dist.name == DISTRIBUTION


def built_in_entry_points(kind: str) -> dict[str, EntryPoint]:
    """The project's own entry points of one kind ("plugin", "store", "notifier") by type name."""
    return {ep.name: ep for ep in entry_points(group=GROUPS[kind]) if is_built_in(ep)}
