"""config/rotator.service: what it must say and do for a first install to work (issue 14), and that systemd reads
it without a complaint (`systemd-analyze verify`, with ExecStart pointed at this checkout's `rotator`)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "config" / "rotator.service"


def settings() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def comment_lines() -> list[str]:
    return [line.lstrip("# ").strip() for line in UNIT.read_text().splitlines() if line.startswith("#")]


def test_the_unit_runs_the_daemon_as_its_own_user_and_never_restarts_into_a_config_error() -> None:
    unit = settings()
    assert unit["User"] == ["rotator"] and unit["Group"] == ["rotator"]
    assert unit["ExecStart"] == ["/opt/rotator/venv/bin/rotator daemon"]  # rotator.log_format picks the format
    assert "2" in unit["RestartPreventExitStatus"][0].split(), "exit 2 (bad config) is not restarted into"
    assert unit["Restart"] == ["on-failure"]
    assert unit["StateDirectory"] == ["rotator"] and unit["StateDirectoryMode"] == ["0700"]
    assert "/var/lib/rotator" in unit["ReadWritePaths"][0]


def test_the_install_steps_create_the_user_then_init_and_seed_before_enable() -> None:
    comments = comment_lines()
    order = [
        next(i for i, line in enumerate(comments) if line.startswith(step))
        for step in ("useradd --system", "install -d -o rotator", "sudo -u rotator", "systemctl daemon-reload")
    ]
    assert order == sorted(order)
    text = "\n".join(comments)
    init = text.index("rotator init")
    seed = text.index("rotator store put")
    enable = text.index("enable --now")
    assert init < seed < enable, "init and store put come before enable --now"
    assert "--home-dir /var/lib/rotator" in text, "the home is the state directory, outside ProtectHome's reach"


def test_pgpass_stays_readable_under_protect_home() -> None:
    unit = settings()
    text = "\n".join(comment_lines())
    assert unit["ProtectHome"] == ["true"]
    assert "~/.pgpass" in text and "/var/lib/rotator/.pgpass" in text and "PGPASSFILE" in text


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_reads_the_unit_without_a_complaint(tmp_path: Path) -> None:
    rotator = Path(sys.executable).parent / "rotator"
    assert rotator.exists()
    copy = tmp_path / "rotator.service"
    copy.write_text(UNIT.read_text().replace("/opt/rotator/venv/bin/rotator", str(rotator)))
    done = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60)
    complaints = [line for line in (done.stdout + done.stderr).splitlines() if "rotator.service" in line]
    assert done.returncode == 0 and complaints == [], done.stdout + done.stderr
