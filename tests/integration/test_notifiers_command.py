"""The command notifier with real processes: the event in the environment, no shell, exit codes, stderr scrubbed,
timeouts killing the whole process group, a small environment."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from rotator_plugins.notifiers.command import CommandNotifier

from rotator import ComponentSetup, ConfigError, NotifyError, TransientError, register_secret
from rotator.registry import load_notifier
from rotator.testing import sample_event

# Writes its ROTATOR_* environment, cwd and argv as JSON to the file named by argv[1].
RECORD = (
    "import json, os, sys\n"
    "json.dump({'env': dict(os.environ), 'cwd': os.getcwd(), 'argv': sys.argv[1:]}, open(sys.argv[1], 'w'))\n"
)


def make(tmp_path: Path, argv: list[str], **options: Any) -> CommandNotifier:
    setup = ComponentSetup(name="hook", config_dir=tmp_path, state_dir=tmp_path / "state")
    return CommandNotifier({"argv": argv, "timeout": 30, **options}, setup)


def python(code: str, *args: str) -> list[str]:
    return [sys.executable, "-c", code, *args]


def test_the_event_is_in_the_environment_and_never_the_secret(tmp_path: Path):
    out = tmp_path / "out.json"
    event = sample_event()
    make(tmp_path, python(RECORD, str(out)))(event)
    seen = json.loads(out.read_text())
    env = seen["env"]
    assert env["ROTATOR_EVENT"] == "credential.rotated"
    assert env["ROTATOR_PLAN"] == event.plan_id and env["ROTATOR_RUN_ID"] == event.run_id
    assert env["ROTATOR_SECRET"] == event.secret_id and env["ROTATOR_STORE"] == event.store
    assert env["ROTATOR_VERSION"] == event.version_id
    assert env["ROTATOR_PREVIOUS_VERSION"] == event.previous_version_id
    assert env["ROTATOR_TRIGGER"] == "manual" and env["ROTATOR_REASON"] == "notifier contract"
    assert env["ROTATOR_TAGS"] == "contract" and env["ROTATOR_ROTATED_AT"] == event.rotated_at.isoformat()
    assert json.loads(env["ROTATOR_EVENT_JSON"]) == event.as_dict()
    assert seen["cwd"] == str(tmp_path)  # the config file's directory by default
    value = event.read_value() if event.read_value else {}
    assert value["password"] not in out.read_text() and value["api_key"] not in out.read_text()
    assert "ROTATOR_ERROR" not in env and "ROTATOR_ACTION" not in env  # failure events only


@pytest.mark.parametrize("kind", ["credential.rotation_failed", "credential.rotation_stuck"])
def test_a_failure_event_gives_its_error_and_action(tmp_path: Path, kind: str):
    """ROTATOR_ERROR is one line, scrubbed of a secret the engine registered; ROTATOR_ACTION says what to do."""
    planted = f"planted-{os.urandom(12).hex()}"
    register_secret(planted)
    out = tmp_path / "out.json"
    event = sample_event(kind, error=f"stage failed:\n  the target answered {planted}", action="run rotator resume")
    make(tmp_path, python(RECORD, str(out)))(event)
    env = json.loads(out.read_text())["env"]
    assert env["ROTATOR_EVENT"] == kind
    assert env["ROTATOR_ERROR"] == "stage failed: the target answered [REDACTED]"
    assert env["ROTATOR_ACTION"] == "run rotator resume"
    assert env["ROTATOR_VERSION"] == event.run_id and env["ROTATOR_PREVIOUS_VERSION"] == event.previous_version_id
    payload = json.loads(env["ROTATOR_EVENT_JSON"])
    assert payload["error"] == env["ROTATOR_ERROR"] and payload["action"] == env["ROTATOR_ACTION"]
    assert planted not in out.read_text()


def test_argv_is_never_given_to_a_shell(tmp_path: Path):
    out, marker = tmp_path / "out.json", tmp_path / "injected"
    hostile = f"; touch {marker} $(touch {marker}) `touch {marker}`"
    make(tmp_path, python(RECORD, str(out), hostile))(sample_event())
    assert json.loads(out.read_text())["argv"] == [str(out), hostile]
    assert not marker.exists()


def test_a_small_environment_pass_env_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ROTATOR_WEBHOOK_KEY", "daemon-secret-value")
    monkeypatch.setenv("APP_REGION", "eu-west-1")
    out = tmp_path / "out.json"
    work = tmp_path / "work"
    work.mkdir()
    make(tmp_path, python(RECORD, str(out)), pass_env=["APP_REGION"], env={"MODE": "reload"}, cwd="work")(
        sample_event()
    )
    seen = json.loads(out.read_text())
    assert "ROTATOR_WEBHOOK_KEY" not in seen["env"]  # the daemon's variables are not passed on
    assert seen["env"]["APP_REGION"] == "eu-west-1" and seen["env"]["MODE"] == "reload"
    assert seen["env"]["PATH"] == os.environ["PATH"]
    assert seen["cwd"] == str(work)


def test_a_failure_carries_the_exit_code_and_the_scrubbed_stderr_tail(tmp_path: Path):
    secret = f"leaked-secret-{os.urandom(8).hex()}"
    register_secret(secret)  # as the engine does with every secret it handles
    noise = "".join(f"line {i}\\n" for i in range(50))
    code = (
        f"import sys; sys.stderr.write('{noise}'); sys.stderr.write('cannot reload: {secret} refused\\n'); sys.exit(4)"
    )
    with pytest.raises(NotifyError) as info:
        make(tmp_path, python(code))(sample_event())
    message = str(info.value)
    assert "exited with code 4" in message
    assert "cannot reload: [REDACTED] refused" in message and secret not in message
    assert "line 49" in message and "line 10 " not in message  # only the tail


def test_tempfail_exit_codes_are_transient(tmp_path: Path):
    with pytest.raises(TransientError, match="exited with code 75"):
        make(tmp_path, python("raise SystemExit(75)"))(sample_event())
    with pytest.raises(TransientError, match="exited with code 9"):
        make(tmp_path, python("raise SystemExit(9)"), transient_exit_codes=[9])(sample_event())


def test_a_timeout_kills_the_process_group(tmp_path: Path):
    pid_file = tmp_path / "child.pid"
    code = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "sys.stderr.write('still waiting\\n'); sys.stderr.flush()\n"
        "time.sleep(60)\n"
    )
    notifier = make(tmp_path, python(code), timeout=5)  # ample time to start the child before the kill
    with pytest.raises(TransientError, match=r"did not finish within 5s and was killed; stderr: still waiting"):
        notifier(sample_event())
    child = int(pid_file.read_text())
    for _ in range(100):  # the kill is sent; wait for the kernel to reap it (init adopts it)
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        if Path(f"/proc/{child}/stat").exists() and Path(f"/proc/{child}/stat").read_text().split()[2] == "Z":
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the command's child survived the timeout")


def test_a_missing_program_is_named(tmp_path: Path):
    with pytest.raises(NotifyError, match="cannot run '/no/such/reload-app': no such program"):
        make(tmp_path, ["/no/such/reload-app"])(sample_event())
    script = tmp_path / "reload.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    with pytest.raises(NotifyError, match="permission denied"):
        make(tmp_path, [str(script)])(sample_event())


def test_options_are_validated_with_the_key_named(tmp_path: Path):
    setup = ComponentSetup(name="hook", config_dir=tmp_path, state_dir=tmp_path, config_file="rotator.toml")
    for options, key in [
        ({"argv": []}, "notifiers.hook.argv"),
        ({"argv": "systemctl reload app"}, "notifiers.hook.argv"),
        ({"argv": ["x"], "timeout": 0}, "notifiers.hook.timeout"),
        ({"argv": ["x"], "shell": True}, "notifiers.hook.shell"),
    ]:
        with pytest.raises(ConfigError) as info:
            load_notifier("command", options, setup, "notifiers.hook")
        assert key in str(info.value), str(info.value)
