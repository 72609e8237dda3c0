"""What the command line prints, in real processes: tables that read at 80 columns (one line per row, no plan id
broken, long texts cut with the full text one flag away), one JSON document on stdout whatever happens (errors
included, exit codes unchanged, RFC 3339 times with Z), the help (no `<bool>`, choices listed, every option
explained), --version and --config on either side of the command.

The plans use the `generated` plugin (no target needed); a failure comes from a secret that was never seeded,
whose error is longer than any terminal line.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli_env import CliEnv, Result

LONG_ID = "payments-ledger-postgres-eu1"  # 28 characters: every table still fits 80 columns with it
LONGER_ID = "payments-ledger-postgres-primary-eu-west-1-replica-of-billing"  # 61: widens the line, never broken
PLANS = ["signing-key", "api-token", LONG_ID, "webhook-hmac", "session-key", "never-seeded"]
RFC3339_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def config_text() -> str:
    blocks = [
        f'[[plans]]\nid = "{plan}"\nplugin = {{type = "generated", bytes = 32}}\nsecret = "app/{plan}"\n'
        f'schedule = "rate(1 day)"\ngrace = "1h"\ntags = ["web"]\n'
        for plan in PLANS
    ]
    return '[rotator]\nstate_dir = "state"\n\n' + "\n".join(blocks)


@pytest.fixture
def cli(tmp_path: Path) -> CliEnv:
    config = tmp_path / "rotator.toml"
    config.write_text(config_text())
    env = CliEnv(tmp_path, config)
    assert env.run("init").code == 0
    for plan in PLANS[:-1]:
        env.seed(f"app/{plan}", {"value": "v" * 43})
    return env


def at(columns: int, cli: CliEnv, *args: str, env: dict[str, str] | None = None) -> Result:
    return cli.run(*args, env={"COLUMNS": str(columns), **(env or {})})


def table_rows(text: str, rows: int) -> list[str]:
    """The header and the rows of a table printed first on stdout (what follows is the footer)."""
    lines = text.splitlines()
    assert len(lines) >= rows + 1, text
    return lines[: rows + 1]


def assert_reads_at_80(text: str, plan_ids: list[str], rows: int) -> list[str]:
    lines = text.splitlines()
    assert all(len(line) <= 80 for line in lines), "\n".join(line for line in lines if len(line) > 80)
    table = table_rows(text, rows)
    assert re.match(r"^[A-Z][A-Z ()]+(  +[A-Z][A-Z ()]+)+$", table[0]), f"kubectl-style header: {table[0]!r}"
    assert not any(ch in text for ch in "│┃╭╮╰╯─━┏┓"), "no borders"
    for plan_id in plan_ids:  # each id whole, on one row of its own
        hits = [line for line in table[1:] if re.search(rf"(^|\s){re.escape(plan_id)}(\s|$)", line)]
        assert hits, f"{plan_id} not whole in:\n{text}"
    return table


def test_status_is_one_line_per_plan_at_80_columns(cli: CliEnv) -> None:
    rotated = cli.run("rotate-now", "--all", "--json")
    assert rotated.code == 1  # never-seeded fails
    result = at(80, cli, "status")
    assert result.code == 0, result.stderr
    table = assert_reads_at_80(result.stdout, PLANS, len(PLANS))
    assert table[0].split() == ["PLAN", "RESULT", "AGE", "NEXT", "DUE", "REVOKE", "NOTES"]
    row = next(line for line in table if line.startswith("never-seeded"))
    assert "failed" in row and row.endswith("…"), "the long error is cut to the line"
    assert "--wide or --json for the full text" in result.stdout
    full = cli.run("status", "--json").json()
    error = next(r for r in full if r["plan"] == "never-seeded")["last_error"]
    assert len(error) > 80 and "app/never-seeded" in error
    wide = at(80, cli, "status", "--wide")
    assert error in wide.stdout, "--wide prints the error in full, on its one line"
    assert len(wide.stdout.splitlines()) == len(PLANS) + 1
    assert "SCHEDULE" in wide.stdout and "rate(1 day)" in wide.stdout


def test_status_at_120_columns_cuts_less(cli: CliEnv) -> None:
    cli.run("rotate-now", "never-seeded")
    narrow = at(80, cli, "status").stdout.splitlines()
    broad = at(120, cli, "status").stdout.splitlines()
    assert all(len(line) <= 120 for line in broad)
    assert max(map(len, broad)) > max(map(len, narrow)), "the notes use the width there is"


def test_history_is_one_line_per_run_and_one_run_in_full(cli: CliEnv) -> None:
    cli.run("rotate-now", "signing-key", LONG_ID, "--reason", "quarterly", "--json")
    cli.run("rotate-now", "never-seeded", "--json")
    runs = cli.run("history", "--json").json()
    assert len(runs) == 3
    result = at(80, cli, "history")
    assert result.code == 0, result.stderr
    table = assert_reads_at_80(result.stdout, ["signing-key", LONG_ID, "never-seeded"], 3)
    assert table[0].split() == ["AGE", "PLAN", "RUN", "OUTCOME", "TRIGGER", "NOTES"]
    failed = next(r for r in runs if r["plan"] == "never-seeded")
    assert failed["error"] and len(failed["error"]) > 80
    assert "history PLAN --run RUN" in result.stdout

    detail = at(80, cli, "history", "never-seeded", "--run", failed["run_id"][:8])
    assert detail.code == 0, detail.stderr
    assert failed["run_id"] in detail.stdout and "outcome:    failed" in detail.stdout
    assert " ".join(failed["error"].split()) in " ".join(detail.stdout.split()), "the whole error, wrapped"
    assert all(len(line) <= 80 for line in detail.stdout.splitlines()), "wrapped, not cut"

    wide = at(80, cli, "history", "--wide")
    assert failed["error"] in wide.stdout and "STEPS (s)" in wide.stdout and "TOOK" in wide.stdout
    assert len(wide.stdout.splitlines()) == 4
    missing = cli.run("history", "--run", "ffffffff", "--json")
    assert missing.code == 2 and missing.json()["key"] == "--run" and missing.json()["fix"]


def test_rotate_now_summary_and_resume_summary_at_80_columns(cli: CliEnv) -> None:
    result = at(80, cli, "rotate-now", "--all")
    assert result.code == 1
    table = assert_reads_at_80(result.stdout, PLANS, len(PLANS))
    assert table[0].split() == ["PLAN", "OUTCOME", "RUN", "SECONDS", "NOTES"]
    assert "5 succeeded, 1 failed" in result.stdout
    assert any(line.startswith("never-seeded") and line.endswith("…") for line in table)
    wide = at(80, cli, "rotate-now", "never-seeded", "--wide")
    error = cli.run("history", "never-seeded", "--json").json()[0]["error"]
    assert error in wide.stdout

    crashed = cli.run("rotate-now", "signing-key", env={"ROTATOR_FAILPOINTS": "after-stage=crash"})
    assert crashed.code != 0
    resumed = at(80, cli, "resume")
    assert resumed.code == 0, resumed.stdout + resumed.stderr
    table = assert_reads_at_80(resumed.stdout, ["signing-key"], 1)  # only the interrupted run's plan
    assert len(table) == 2 and "1 succeeded, 0 failed" in resumed.stdout
    quiet = at(80, cli, "resume")
    assert quiet.code == 0 and "nothing to resume" in quiet.stdout


def test_json_is_one_document_on_stdout_even_for_errors(cli: CliEnv) -> None:
    cases = [
        (("status", "--json"), 0),
        (("history", "--json"), 0),
        (("validate", "--json"), 0),
        (("rotate-now", "no-such-plan", "--json"), 2),
        (("rotate-now", "--json"), 2),
        (("rotate-now", "signing-key", "--revoke-old", "later", "--json"), 2),
        (("rotate-now", "--concurrency", "0", "--all", "--json"), 2),
        (("rotate-now", "--no-such-flag", "--json"), 2),
        (("rotate-now", "never-seeded", "--json"), 1),
        (("history", "no-such-plan", "--json"), 2),
        (("store", "put", "x", "--file", "/nonexistent.json", "--json"), 2),
    ]
    for args, code in cases:
        result = cli.run(*args)
        assert result.code == code, (args, result.stdout, result.stderr)
        document = json.loads(result.stdout)  # exactly one JSON document, nothing else on stdout
        if code == 2:
            assert set(document) >= {"error", "key", "fix"}, (args, document)
            assert document["error"] and document["fix"], (args, document)
            assert "error" in result.stderr.lower(), "the person at the terminal reads it too"
    bad_config = cli.root / "bad.toml"
    bad_config.write_text('[rotator]\nstat_dir = "x"\n')
    result = cli.run("validate", "--json", config=False, env={"ROTATOR_CONFIG": str(bad_config)})
    assert result.code == 2
    document = result.json()
    assert document == {**document, "key": "rotator.stat_dir", "file": str(bad_config)}
    assert "did you mean 'state_dir'?" in document["error"]


def test_json_times_are_rfc3339_with_z(cli: CliEnv) -> None:
    cli.run("rotate-now", "signing-key", "--json")
    [row] = [r for r in cli.run("status", "--json").json() if r["plan"] == "signing-key"]
    for key in ("last_run", "last_rotated", "next_due", "revoke_due"):
        assert RFC3339_Z.match(row[key]), (key, row[key])
    [run] = cli.run("history", "signing-key", "--json").json()
    assert run["ended_at"] is None  # awaiting revoke: the run ends at revoke
    for key in ("started_at", "revoke_due_at"):
        assert RFC3339_Z.match(run[key]), (key, run[key])
    assert all(RFC3339_Z.match(step["started_at"]) for step in run["steps"])


def test_log_lines_carry_rfc3339_z_timestamps(cli: CliEnv) -> None:
    result = cli.run("rotate-now", "signing-key", "--log-level", "info", "--json")
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert lines, result.stderr
    assert all(RFC3339_Z.match(line["timestamp"]) for line in lines)
    promoted = next(line for line in lines if "revoke_due_at" in line)
    assert RFC3339_Z.match(promoted["revoke_due_at"]), promoted


def test_store_get_of_a_missing_secret_is_a_usage_error_with_a_fix(cli: CliEnv) -> None:
    for args in (("store", "get", "app/never-seeded"), ("store", "get", "app/signing-key", "--stage", "PENDING")):
        result = cli.run(*args)
        assert result.code == 2 and result.stdout == ""
        assert "has no" in result.stderr and "\n  fix: " in result.stderr


def test_version_and_config_on_either_side(cli: CliEnv) -> None:
    version = cli.run("--version", config=False)
    assert version.code == 0 and re.match(r"^rotator \d+\.\d+\.\d+$", version.stdout.strip())
    before = cli.run("--config", str(cli.config), "status", "--json", config=False)
    after = cli.run("status", "--json")
    short = cli.run("-c", str(cli.config), "status", "--json", config=False)
    assert before.code == after.code == short.code == 0
    assert [r["plan"] for r in before.json()] == [r["plan"] for r in after.json()] == PLANS
    other = cli.root / "other.toml"
    other.write_text(config_text().replace("never-seeded", "elsewhere"))
    wins = cli.run("-c", str(other), "validate", "--json", "-c", str(cli.config), config=False)
    assert wins.code == 0 and wins.json()["config"] == str(cli.config), "the one after the command wins"


def option_entries(help_text: str) -> list[tuple[str, str]]:
    """(option spec, its help) for each option of a command's --help (click's plain layout: the help after two or
    more spaces, or on the lines below, indented)."""
    entries: list[list[str]] = []
    for line in help_text.split("Options:", 1)[1].splitlines():
        if line.startswith("  -"):
            entries.append([line.strip()])
        elif entries and line.strip():
            entries[-1].append(line.strip())
    found = []
    for first, *rest in entries:
        spec, _, same_line = first.partition("  ")
        found.append((spec, " ".join([same_line.strip(), *rest]).strip()))
    return found


def test_help_lists_choices_explains_every_option_and_fits_80_columns(cli: CliEnv) -> None:
    top = cli.run("--help", config=False, env={"COLUMNS": "80"})
    assert top.code == 0
    commands = re.findall(r"^  ([a-z][a-z-]+)  ", top.stdout.split("Commands:")[1], re.M)
    assert {"init", "validate", "store", "status", "history", "rotate-now", "resume", "reconcile", "daemon"} <= set(
        commands
    )
    groups = {"store": ["put", "get"]}
    for command in [c for c in commands if c not in groups] + [f"store {s}" for s in groups["store"]]:
        result = cli.run(*command.split(), "--help", config=False, env={"COLUMNS": "80"})
        assert result.code == 0, (command, result.stderr)
        text = result.stdout
        assert "<bool>" not in text, (command, text)
        assert all(len(line) <= 80 for line in text.splitlines()), command
        for spec, explained in option_entries(text):
            assert explained, f"{command}: {spec} has no help"
    rotate = cli.run("rotate-now", "--help", config=False, env={"COLUMNS": "200"}).stdout
    assert "--revoke-old <grace|now>" in rotate and "--log-level <debug|info|warning|error>" in rotate
    assert "--dry-run " in rotate and "--dry-run <" not in rotate
    daemon = cli.run("daemon", "--help", config=False, env={"COLUMNS": "200"}).stdout
    assert "--json-logs / --console-logs" in daemon
    stage = cli.run("store", "get", "--help", config=False, env={"COLUMNS": "200"}).stdout
    assert "<current|pending|previous>" in stage.lower()


def test_a_plan_id_wider_than_the_table_is_never_broken(tmp_path: Path) -> None:
    config = tmp_path / "rotator.toml"
    config.write_text(config_text().replace("never-seeded", LONGER_ID))
    cli = CliEnv(tmp_path, config)
    assert cli.run("init").code == 0
    for command in (("status",), ("rotate-now", "--all"), ("history",)):
        result = at(80, cli, *command)
        rows = [line for line in result.stdout.splitlines() if LONGER_ID in line]
        assert rows, (command, result.stdout)
        assert all(re.search(rf"(^|\s){LONGER_ID}(\s|$)", row) for row in rows), "whole, on one line"
        assert not any(line.strip() and LONGER_ID.startswith(line.strip()) for line in result.stdout.splitlines())


LOADED_AT_EXIT = (
    "import atexit, json, runpy, sys\n"
    "atexit.register(lambda: sys.__stderr__.write('LOADED ' + json.dumps(sorted({m.split('.')[0] for m, v in "
    "sys.modules.items() if v is not None})) + '\\n'))\n"
    "sys.argv = ['rotator', *sys.argv[1:]]\n"
    "runpy.run_module('rotator', run_name='__main__')\n"
)


def loaded(cli: CliEnv, *args: str) -> set[str]:
    """The top-level packages `rotator ARGS` had imported when it exited."""
    done = subprocess.run(
        [sys.executable, "-c", LOADED_AT_EXIT, *args], capture_output=True, text=True, cwd=cli.root, timeout=120
    )
    line = next(x for x in done.stderr.splitlines() if x.startswith("LOADED "))
    return set(json.loads(line.removeprefix("LOADED ")))


def test_commands_import_only_what_they_need(cli: CliEnv) -> None:
    heavy = {"rich", "pydantic", "structlog", "boto3", "psycopg", "psycopg_pool", "apscheduler", "cryptography"}
    assert loaded(cli, "--help") & heavy == set(), "--help: typer and the command modules only"
    assert loaded(cli, "--version") & heavy == set()
    status = loaded(cli, "status", "--config", str(cli.config))
    assert status & {"rich", "structlog", "boto3", "psycopg", "cryptography", "apscheduler"} == set(), status
    rotated = loaded(cli, "rotate-now", "signing-key", "--config", str(cli.config))
    assert rotated & {"rich", "structlog", "boto3", "psycopg_pool"} == set(), "one plan: no bar, nothing logged"
