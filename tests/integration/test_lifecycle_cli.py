"""`rotator import`, `rotator mark-rotated` and `rotator leak` through the real command, against a real PostgreSQL:
an imported credential keeps its real age and is not due at once, --verify logs in first and writes nothing when
refused, a manual plan's rotation is recorded, and a leaked password is found, rotated and refused by the server,
with the password never in the command's output."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.cli_env import CliEnv
from tests.servers.postgres import PgServer


def pg_config(root: Path, pg: PgServer, user: str, extra_plans: str = "") -> CliEnv:
    config = root / "rotator.toml"
    config.write_text(f"""
[rotator]
state_dir = "state"
step_timeout = 20

[[plans]]
id = "app-db"
plugin = "postgres"
secret = "db/app"
schedule = "rate(30 days)"
{extra_plans}
""")
    cli = CliEnv(root, config)
    assert cli.run("init").code == 0
    pg.drop_role(user)
    return cli


def credential_file(root: Path, value: dict[str, object]) -> str:
    path = root / "credential.json"
    path.write_text(json.dumps(value))
    return str(path)


def status_of(cli: CliEnv, plan: str) -> dict[str, object]:
    result = cli.run("status", "--json")
    assert result.code == 0, result.stderr
    return {row["plan"]: row for row in result.json()}[plan]


def test_import_keeps_the_real_age_and_is_not_due_at_once(tmp_path: Path, pg_server: PgServer) -> None:
    cli = pg_config(tmp_path, pg_server, "imported_app")
    password = "An-Existing-Password-0000000001"
    pg_server.make_role("imported_app", password)
    made = (datetime.now(UTC) - timedelta(days=10)).replace(microsecond=0)
    result = cli.run(
        "import",
        "app-db",
        "--file",
        credential_file(tmp_path, pg_server.secret("imported_app", password)),
        "--rotated-at",
        made.isoformat().replace("+00:00", "Z"),
        "--verify",
        "--reason",
        "brought under management",
        "--json",
    )
    assert result.code == 0, result.stderr
    document = result.json()
    assert document["verified"] is True and document["stored"] is True
    assert password not in result.stdout + result.stderr
    row = status_of(cli, "app-db")
    assert 10 * 86400 - 120 <= int(row["credential_age_seconds"]) <= 10 * 86400 + 120  # type: ignore[call-overload]
    assert row["overdue"] is False and row["last_result"] == "succeeded"
    next_due = datetime.fromisoformat(str(row["next_due"]).replace("Z", "+00:00"))
    assert abs((next_due - (made + timedelta(days=30))).total_seconds()) < 5  # the schedule counts from `made`
    history = cli.run("history", "app-db", "--json").json()
    assert history[0]["trigger"] == "import" and history[0]["reason"] == "brought under management"
    # the credential is findable as a leak from now on (fingerprinted at import)
    leak = cli.run("leak", "--value-from", "-", "--json", stdin=f"PGPASSWORD={password}\n")
    assert leak.code == 1 and [m["plan"] for m in leak.json()["matches"]] == ["app-db"]


def test_import_verify_refused_writes_nothing(tmp_path: Path, pg_server: PgServer) -> None:
    cli = pg_config(tmp_path, pg_server, "refused_app")
    pg_server.make_role("refused_app", "The-Real-Password-000000000001")
    wrong = pg_server.secret("refused_app", "Not-The-Password-0000000000001")
    result = cli.run("import", "app-db", "--file", credential_file(tmp_path, wrong), "--verify")
    assert result.code == 1, result.stdout + result.stderr
    assert "Not-The-Password" not in result.stdout + result.stderr
    missing = cli.run("store", "get", "db/app")
    assert missing.code == 2 and "db/app has no CURRENT version" in missing.stderr  # nothing was stored
    assert cli.run("history", "app-db", "--json").json() == []  # nor journaled


def test_import_bad_input_is_refused_with_the_fix(tmp_path: Path, pg_server: PgServer) -> None:
    cli = pg_config(tmp_path, pg_server, "bad_input_app")
    file = credential_file(tmp_path, pg_server.secret("bad_input_app", "Some-Password-000000000000001"))
    future = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    cases = {
        "future": ["import", "app-db", "--file", file, "--rotated-at", future],
        "not a time": ["import", "app-db", "--file", file, "--rotated-at", "last tuesday"],
        "no such plan": ["import", "nope", "--file", file],
        "nothing stored": ["import", "app-db"],
    }
    for name, args in cases.items():
        result = cli.run(*args, "--json")
        assert result.code == 2, (name, result.stdout, result.stderr)
        document = result.json()
        assert document["error"] and document["fix"], (name, document)
    assert cli.run("history", "app-db", "--json").json() == []


def test_mark_rotated_records_a_manual_plan_and_refuses_an_automatic_one(tmp_path: Path, pg_server: PgServer) -> None:
    cli = pg_config(
        tmp_path,
        pg_server,
        "manual_side_app",
        extra_plans='\n[[plans]]\nid = "vendor"\nplugin = "manual"\nowner = "team-payments"\nsecret = "vendor/key"\n'
        'schedule = "rate(90 days)"\n',
    )
    refused = cli.run("mark-rotated", "app-db", "--reason", "by hand", "--json")
    assert refused.code == 2 and "rotator import" in refused.json()["fix"]
    before = status_of(cli, "vendor")
    assert before["overdue"] is True  # never recorded: its age is unknown
    done = cli.run("mark-rotated", "vendor", "--reason", "new key issued in the vendor console", "--json")
    assert done.code == 0, done.stderr
    after = status_of(cli, "vendor")
    assert after["overdue"] is False and int(after["credential_age_seconds"]) < 120  # type: ignore[call-overload]
    rotate = cli.run("rotate-now", "vendor", "--json")
    assert rotate.code == 2 and "mark-rotated vendor" in rotate.json()["fix"]
    everything = cli.run("rotate-now", "--all", "--dry-run", "--json")  # --all passes over manual plans
    assert [r["plan"] for r in everything.json()["results"]] == ["app-db"]


def test_leak_finds_rotates_and_kills_the_leaked_password(tmp_path: Path, pg_server: PgServer) -> None:
    cli = pg_config(tmp_path, pg_server, "leaky_app")
    pg_server.make_role("leaky_app", "First-Password-0000000000000001")
    cli.seed("db/app", pg_server.secret("leaky_app", "First-Password-0000000000000001"))
    assert cli.run("rotate-now", "app-db").code == 0
    leaked = cli.run("store", "get", "db/app").json()
    text = f"# pasted in a ticket\nDATABASE_PASSWORD={leaked['password']}\n"
    found = cli.run("leak", "--value-from", "-", stdin=text)
    assert found.code == 1
    assert "app-db" in found.stdout and "current" in found.stdout and "stdin:2" in found.stdout
    assert "--rotate" in found.stdout
    assert leaked["password"] not in found.stdout + found.stderr
    rotated = cli.run("leak", "--value-from", "-", "--rotate", "--reason", "ticket 4711", "--json", stdin=text)
    assert rotated.code == 0, rotated.stdout + rotated.stderr
    document = rotated.json()
    assert [r["outcome"] for r in document["rotations"]] == ["succeeded"] and document["still_live"] == []
    assert leaked["password"] not in rotated.stdout + rotated.stderr
    assert not pg_server.can_login(leaked["username"], leaked["password"])
    current = cli.run("store", "get", "db/app").json()
    assert pg_server.can_login(current["username"], current["password"])
    again = cli.run("leak", "--value-from", "-", "--json", stdin=text)
    assert again.code == 0 and [m["state"] for m in again.json()["matches"]] == ["retired"]
    history = cli.run("history", "app-db", "--json").json()
    assert history[0]["trigger"] == "leak" and "ticket 4711" in history[0]["reason"]


def test_leak_without_input_or_key_is_a_usage_error(tmp_path: Path, pg_server: PgServer) -> None:
    cli = pg_config(tmp_path, pg_server, "nokey_app")
    nothing = cli.run("leak", "--json")
    assert nothing.code == 2 and "--value-from" in nothing.json()["fix"]
    (tmp_path / "state" / "fingerprint.key").unlink()
    no_key = cli.run("leak", "--value-from", "-", "--json", stdin="some text here\n")
    assert no_key.code == 2 and "rotator init" in no_key.json()["fix"]
