"""The command line on a real terminal (a pseudo-terminal of 80x24): rotate-now's progress bar with log lines
printing above it, never inside it; the daemon's log lines readable on a terminal and JSON lines otherwise (or as
rotator.log_format says).
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from tests.cli_env import CliEnv

PLANS = [f"key-{n}" for n in range(6)]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]")
RFC3339_Z = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z"


@pytest.fixture
def cli(tmp_path: Path) -> CliEnv:
    blocks = [
        f'[[plans]]\nid = "{plan}"\nplugin = {{type = "generated", bytes = 32}}\nsecret = "app/{plan}"\n'
        f'schedule = "rate(1 day)"\ngrace = "1h"\n'
        for plan in PLANS
    ]
    config = tmp_path / "rotator.toml"
    config.write_text('[rotator]\nstate_dir = "state"\nconcurrency = 2\n\n' + "\n".join(blocks))
    env = CliEnv(tmp_path, config)
    assert env.run("init").code == 0
    for plan in PLANS:
        env.seed(f"app/{plan}", {"value": "v" * 43})
    return env


def on_terminal(
    cli: CliEnv, *args: str, env: dict[str, str] | None = None, until: str | None = None, timeout: float = 60
) -> tuple[int, str, str]:
    """Run `rotator ARGS --config ...` with stderr on a pseudo-terminal of 80x24 (stdout a pipe): the exit code,
    stdout, and what the terminal showed. With `until`, SIGTERM once the terminal has shown that text."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    full_env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR")}
    full_env.update({"TERM": "xterm-256color", **(env or {})})
    proc = subprocess.Popen(
        [sys.executable, "-m", "rotator", *args, "--config", str(cli.config)],
        stdout=subprocess.PIPE,
        stderr=slave,
        env=full_env,
        cwd=cli.root,
    )
    os.close(slave)
    shown = b""
    deadline = time.monotonic() + timeout
    signalled = False
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                shown += chunk
            if until and not signalled and until in ANSI.sub("", shown.decode(errors="replace")):
                proc.send_signal(signal.SIGTERM)
                signalled = True
            if proc.poll() is not None and not ready:
                break
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    stdout = proc.stdout.read().decode() if proc.stdout else ""
    return code, stdout, shown.decode(errors="replace")


def screen_lines(shown: str) -> list[str]:
    """What the terminal showed, split where the cursor went back to a line's start (\\r) or down (\\n)."""
    return [line for line in re.split(r"[\r\n]", ANSI.sub("", shown)) if line.strip()]


def test_log_lines_print_above_the_progress_bar_never_inside_it(cli: CliEnv) -> None:
    code, stdout, shown = on_terminal(
        cli, "rotate-now", "--all", "--log-level", "info", env={"ROTATOR_FAILPOINTS": "after-create=sleep:0.4"}
    )
    assert code == 0, stdout + shown
    lines = screen_lines(shown)
    bar = [line for line in lines if "rotating" in line]
    assert bar, f"no progress bar on the terminal:\n{shown[-3000:]}"
    logged = [line for line in lines if "rotation started" in line or "promoted" in line]
    assert len(logged) >= len(PLANS), "the log lines reached the terminal"
    for line in logged:
        assert "rotating" not in line and "━" not in line, f"a log line inside the bar: {line!r}"
        assert re.match(rf"^{RFC3339_Z} \[", line), f"a readable log line, RFC 3339 first: {line!r}"
    assert not any(line.lstrip().startswith("{") for line in lines), "no JSON on a terminal"
    assert "6 succeeded, 0 failed" in stdout and "rotating" not in stdout, "the summary on stdout, the bar not"


def test_the_daemon_logs_readable_lines_on_a_terminal(cli: CliEnv) -> None:
    code, _stdout, shown = on_terminal(cli, "daemon", until="daemon running")
    assert code == 0, shown[-3000:]
    lines = screen_lines(shown)
    running = [line for line in lines if "daemon running" in line]
    assert running and re.match(rf"^{RFC3339_Z} \[info", running[0]), running
    assert not any(line.lstrip().startswith('{"') for line in lines)


def test_the_daemon_logs_json_lines_when_stderr_is_not_a_terminal(cli: CliEnv) -> None:
    proc = cli.popen("daemon")
    try:
        deadline = time.monotonic() + 60
        lines: list[str] = []
        while time.monotonic() < deadline:
            line = proc.stderr.readline() if proc.stderr else ""
            if not line:
                break
            lines.append(line)
            if "daemon running" in line:
                break
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    records = [json.loads(line) for line in lines if line.strip()]  # every line is JSON
    running = next(r for r in records if r["event"] == "daemon running")
    assert re.fullmatch(RFC3339_Z, running["timestamp"])


def test_log_format_json_holds_on_a_terminal_and_the_flag_overrides_it(cli: CliEnv) -> None:
    cli.config.write_text(cli.config.read_text().replace("[rotator]\n", '[rotator]\nlog_format = "json"\n', 1))
    _code, _stdout, shown = on_terminal(cli, "daemon", until="daemon running")
    lines = screen_lines(shown)
    assert any(line.startswith('{"') and '"daemon running"' in line for line in lines), lines[-5:]
    _code, _stdout, shown = on_terminal(cli, "daemon", "--console-logs", until="daemon running")
    assert any(re.match(rf"^{RFC3339_Z} \[info", line) for line in screen_lines(shown) if "daemon running" in line)
