"""A PostgreSQL journal is shared by daemons on several hosts; a store that keeps its secrets on one host (the
embedded `local` store) cannot be shared with it: host B would rotate its own copy while the shared journal says
the plan rotated. Every command refuses that config when it loads it (exit 2, naming the file, the key and the
fix), exactly as `validate` does; a shareable store (vault-kv2, aws-secretsmanager) under the same journal passes.

The commands run through the real CLI (typer's CliRunner, in this process); nothing reaches a database, because
the config is refused before any journal is opened.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from rotator.cli import app

JOURNAL = 'journal = "postgresql://rotator@db.internal/rotator?sslmode=verify-full"'
PLAN = '[[plans]]\nid = "app-key"\nplugin = "generated"\nsecret = "app/key"\n'
VAULT = '[stores.vault]\ntype = "vault-kv2"\nurl = "https://vault.internal:8200"\n'
COMMANDS = [
    ["validate"],
    ["status"],
    ["history"],
    ["rotate-now", "app-key"],
    ["resume"],
    ["reconcile", "app-key"],
    ["daemon"],
]


def run(tmp_path: Path, text: str, *command: str) -> tuple[Path, str, int]:
    path = tmp_path / "rotator.toml"
    path.write_text(text)
    result = CliRunner().invoke(app, [*command, "--config", str(path)])
    return path, result.output, result.exit_code


@pytest.mark.parametrize("command", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_the_implicit_local_store_under_a_shared_journal_is_refused(tmp_path: Path, command: list[str]) -> None:
    path, output, code = run(tmp_path, f"[rotator]\n{JOURNAL}\n\n{PLAN}", *command)
    assert code == 2, output
    flat = " ".join(output.split())
    assert str(path) in flat.replace(" ", "")  # a long path may wrap
    assert "plans[0] (id 'app-key').store" in flat
    assert "local to one host" in flat and "PostgreSQL journal" in flat
    assert "vault-kv2 or aws-secretsmanager" in flat and "remove rotator.journal" in flat
    assert "Traceback" not in output and "unexpected" not in flat.lower()


@pytest.mark.parametrize("command", [["validate"], ["daemon"]], ids=["validate", "daemon"])
def test_a_declared_local_store_under_a_shared_journal_is_refused(tmp_path: Path, command: list[str]) -> None:
    text = f'[rotator]\n{JOURNAL}\n\n[stores.keys]\ntype = "local"\n\n{VAULT}\n{PLAN}store = "vault"\n'
    _path, output, code = run(tmp_path, text, *command)
    flat = " ".join(output.split())
    assert code == 2, output
    assert "stores.keys.type" in flat and "store 'keys' (type 'local') is local to one host" in flat
    assert "fix:" in flat and "vault-kv2 or aws-secretsmanager" in flat


def test_a_plan_in_plans_dir_is_named_with_its_file(tmp_path: Path) -> None:
    (tmp_path / "plans").mkdir()
    (tmp_path / "plans" / "app.toml").write_text(PLAN)
    _path, output, code = run(tmp_path, f'[rotator]\n{JOURNAL}\nplans_dir = "plans"\n', "validate")
    flat = " ".join(output.split())
    assert code == 2, output
    assert "app.toml" in flat and "(id 'app-key').store" in flat


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(f'[rotator]\n{JOURNAL}\n\n{VAULT}\n{PLAN}store = "vault"\n', id="vault-under-postgres"),
        pytest.param(
            f'[rotator]\n{JOURNAL}\n\n[stores.aws]\ntype = "aws-secretsmanager"\nregion = "eu-west-1"\n\n'
            f'{PLAN}store = "aws"\n',
            id="aws-under-postgres",
        ),
        pytest.param(f'[rotator]\nstate_dir = "state"\n\n{PLAN}', id="local-under-sqlite"),
    ],
)
def test_shareable_combinations_validate(tmp_path: Path, text: str) -> None:
    _path, output, code = run(tmp_path, text, "validate")
    assert code == 0, output
