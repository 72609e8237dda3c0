"""From leak to dead against a real PostgreSQL: a leaked password (in the forms it travels in, in a file or in a git
repository's history) is matched to its plan by keyed fingerprint, current, previous and retired versions told
apart, and rotating with revoke-now makes the leaked password refused by the server."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path
from urllib.parse import quote

from rotator.leaks import CURRENT, PREVIOUS, RETIRED, find_leaks, leak_reason, rotate_leaked, scan_lines, value_lines
from rotator.model import Stage, Trigger
from tests.lifecycle_env import leak_env
from tests.servers.postgres import PgServer


def test_a_leaked_password_is_found_in_each_form_and_only_for_its_plan(tmp_path: Path, pg_server: PgServer) -> None:
    env = leak_env(tmp_path, pg_server, 3)
    env.rotate(*env.plans)
    leaked = env.value(env.plans[1])
    assert leaked is not None
    password = leaked["password"]
    text = "\n".join(
        [
            "# an .env file pushed by mistake",
            f"DB_PASSWORD={password}",
            f"  password: {base64.b64encode(password.encode()).decode()}",
            f"DATABASE_URL=postgresql://{leaked['username']}:{quote(password, safe='')}@db:5432/app",
            "an ordinary line that matches nothing at all",
        ]
    )
    workspace = env.workspace()
    try:
        assert workspace.fingerprint_key is not None
        report = find_leaks(workspace.journal, workspace.fingerprint_key, value_lines(text, "paste"))
    finally:
        workspace.close()
    assert [(m.plan_id, m.state, m.kind) for m in report.matches] == [(env.plans[1], CURRENT, "secret")]
    assert report.matches[0].found_in == ["paste:2", "paste:3", "paste:4"]
    assert password not in repr(report) and password not in str(report.matches[0].as_dict())


def test_current_previous_and_retired_versions_are_told_apart(tmp_path: Path, pg_server: PgServer) -> None:
    env = leak_env(tmp_path, pg_server, 1)
    plan = env.plans[0]
    versions = []
    for _ in range(3):
        env.rotate(plan)
        value = env.value(plan)
        assert value is not None
        versions.append(value["password"])
    workspace = env.workspace()
    try:
        assert workspace.fingerprint_key is not None
        lines = value_lines("\n".join(versions), "leak.txt")
        report = find_leaks(workspace.journal, workspace.fingerprint_key, lines)
    finally:
        workspace.close()
    states = {m.found_in[0]: m.state for m in report.matches}
    assert states == {"leak.txt:1": RETIRED, "leak.txt:2": PREVIOUS, "leak.txt:3": CURRENT}
    assert report.live_plans() == [plan]


def test_rotating_a_leak_makes_the_leaked_password_refused_current_and_previous(
    tmp_path: Path, pg_server: PgServer
) -> None:
    """Alternating users keep PREVIOUS valid through the grace hour: a leak of either version must end it now."""
    env = leak_env(tmp_path, pg_server, 2)
    env.rotate(*env.plans)
    env.rotate(env.plans[1])  # plan 1: its first rotated version is now PREVIOUS, still logging in
    leaked_current = env.value(env.plans[0])
    leaked_previous = env.value(env.plans[1], Stage.PREVIOUS)
    assert env.logs_in(leaked_current) and env.logs_in(leaked_previous)
    workspace = env.workspace()
    try:
        assert workspace.fingerprint_key is not None and leaked_current and leaked_previous
        text = f"token={leaked_current['password']}\nother={leaked_previous['password']}"
        report = find_leaks(workspace.journal, workspace.fingerprint_key, value_lines(text, "report"))
        assert [(m.plan_id, m.state) for m in report.live] == [(env.plans[0], CURRENT), (env.plans[1], PREVIOUS)]
        plans = [workspace.bind(workspace.config.plan(p)) for p in report.live_plans()]
        reasons = {m.plan_id: leak_reason(m.found_in, "a test") for m in report.live}
        outcomes = rotate_leaked(workspace.runner(), plans, reasons, concurrency=2)
        assert [o.outcome for o in outcomes] == ["succeeded", "succeeded"], outcomes
        assert all(o.revoked for o in outcomes)
        history = workspace.journal.runs(env.plans[0], limit=1)[0]
    finally:
        workspace.close()
    assert not env.logs_in(leaked_current), "the leaked current password still logs in"
    assert not env.logs_in(leaked_previous), "the leaked previous password still logs in"
    for plan in env.plans:
        assert env.logs_in(env.value(plan)), "CURRENT must log in after the leak rotation"
        assert env.value(plan, Stage.PREVIOUS) is None or not env.logs_in(env.value(plan, Stage.PREVIOUS))
    assert history.trigger is Trigger.LEAK and history.reason == "leak reported by a test: found in report:1"


def test_a_secret_deleted_from_a_git_repository_is_still_found_in_its_history(
    tmp_path: Path, pg_server: PgServer
) -> None:
    (tmp_path / "env").mkdir()
    env = leak_env(tmp_path / "env", pg_server, 1)
    env.rotate(env.plans[0])
    value = env.value(env.plans[0])
    assert value is not None
    repo = tmp_path / "repo"
    repo.mkdir()

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout.strip()

    git("init", "-q")
    (repo / "app.yaml").write_text(f'db:\n  user: {value["username"]}\n  password: "{value["password"]}"\n')
    git("add", "app.yaml")
    git("commit", "-q", "-m", "config")
    leaked_in = git("rev-parse", "HEAD")[:12]
    (repo / "app.yaml").write_text("db:\n  password: ${DB_PASSWORD}\n")
    git("commit", "-q", "-am", "remove the password")
    (repo / "notes.bin").write_bytes(b"\0binary " + value["password"].encode())  # binary files are skipped
    skipped: list[str] = []
    workspace = env.workspace()
    try:
        assert workspace.fingerprint_key is not None
        in_tree = find_leaks(workspace.journal, workspace.fingerprint_key, scan_lines(repo, skipped, history=False))
        with_history = find_leaks(workspace.journal, workspace.fingerprint_key, scan_lines(repo, skipped))
    finally:
        workspace.close()
    assert in_tree.matches == []  # the working tree no longer holds it
    assert [m.plan_id for m in with_history.matches] == [env.plans[0]]
    assert f"git {leaked_in} app.yaml" in with_history.matches[0].found_in
    assert with_history.lines > 4
