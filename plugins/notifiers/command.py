"""Type `command`: run a local program once the new credential is live (e.g. `systemctl reload app`).

The command is an argv list, run without a shell (no quoting, no expansion, no injection through plan names),
in `cwd` (default: the config file's directory), with stdin from /dev/null, stdout discarded, and at most
`timeout` seconds (then its whole process group is killed). It receives the event in its environment, never a
secret value:

| variable | value |
|---|---|
| ROTATOR_EVENT | the event kind (credential.rotated, ...: rotator_plugins.notifiers.events) |
| ROTATOR_PLAN, ROTATOR_RUN_ID | the plan id and the run id |
| ROTATOR_SECRET, ROTATOR_STORE | the secret's name and the store's name |
| ROTATOR_VERSION, ROTATOR_PREVIOUS_VERSION | the CURRENT version id, and the one before (empty if none) (*) |
| ROTATOR_ROTATED_AT, ROTATOR_TRIGGER, ROTATOR_REASON, ROTATOR_TAGS | time (ISO 8601), trigger, reason, tags (a,b) |
| ROTATOR_ERROR, ROTATOR_ACTION | failure events only (unset otherwise): the error (one scrubbed line), what to do |
| ROTATOR_EVENT_JSON | the whole event as JSON (rotator_plugins.notifiers.events.event_payload) |

(*) For a failure event: the failed run's version (it never went live), and CURRENT (still live).

It takes every event kind; `events = [...]` in its config chooses which it runs for (a script can branch on
ROTATOR_EVENT, or a failure-only notifier can page someone).

The rest of its environment is small on purpose (the daemon's may hold references to secrets): PATH, HOME, LANG,
LC_ALL, TZ, USER, LOGNAME from the daemon, the variables named in `pass_env`, and the fixed values in `env`.

Exit 0 is success. An exit code listed in `transient_exit_codes` (default 75, EX_TEMPFAIL) or a timeout is a
TransientError (the engine runs it again later); any other is a NotifyError carrying the exit code and the last
lines of stderr, scrubbed of every secret the process has handled (rotator.scrub).

Options: argv (required), timeout (default 60 s), cwd, env, pass_env, transient_exit_codes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import msgspec
from msgspec import Meta
from rotator_plugins.notifiers.events import EVERY_KIND, event_payload

from rotator import ComponentSetup, NotifyError, Options, RotationEvent, TransientError, invalid, parse_options, scrub

BASE_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "USER", "LOGNAME")
STDERR_TAIL_BYTES = 2000
STDERR_TAIL_LINES = 10
_KILL_GRACE_SECONDS = 2.0


def argv_problem(argv: Sequence[str]) -> str | None:
    """What is wrong with an argv list (None when nothing): also checks the `file` notifier's `reload = [...]`."""
    if not argv:
        return "argv must name the program to run (an empty list)"
    if not argv[0].strip():
        return "argv[0] (the program) must not be empty"
    if any("\0" in part for part in argv):
        return "argv must not contain NUL characters"
    return None


class CommandRun(Options):
    """How to run one argv; shared by `command` and the `file` notifier's reload command."""

    argv: Annotated[list[str], Meta(min_length=1)]
    timeout: Annotated[float, Meta(gt=0, le=3600)] = 60.0
    cwd: str | None = None
    env: dict[str, str] = {}
    pass_env: list[str] = []
    transient_exit_codes: list[int] = msgspec.field(default_factory=lambda: [75])

    def __post_init__(self) -> None:
        if problem := argv_problem(self.argv):
            raise invalid("argv", problem)
        for name in self.env:
            if not name or "=" in name or "\0" in name:
                raise invalid("env", f"env: {name!r} is not a valid variable name")


def event_environment(event: RotationEvent) -> dict[str, str]:
    """The ROTATOR_* variables for `event` (ids and names only, never a value; free text scrubbed)."""
    payload = event_payload(event)
    environment = {
        "ROTATOR_EVENT": event.kind,
        "ROTATOR_PLAN": event.plan_id,
        "ROTATOR_RUN_ID": event.run_id,
        "ROTATOR_SECRET": event.secret_id,
        "ROTATOR_STORE": event.store,
        "ROTATOR_VERSION": event.version_id,
        "ROTATOR_PREVIOUS_VERSION": event.previous_version_id or "",
        "ROTATOR_ROTATED_AT": event.rotated_at.isoformat(),
        "ROTATOR_TRIGGER": event.trigger,
        "ROTATOR_REASON": payload["reason"] or "",
        "ROTATOR_TAGS": ",".join(event.tags),
        "ROTATOR_EVENT_JSON": json.dumps(payload, sort_keys=True),
    }
    if event.is_failure:
        environment["ROTATOR_ERROR"] = payload.get("error") or ""
        environment["ROTATOR_ACTION"] = payload.get("action") or ""
    return environment


def _stderr_tail(raw: bytes) -> str:
    text = raw[-STDERR_TAIL_BYTES:].decode("utf-8", "replace")
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    return scrub(" | ".join(lines[-STDERR_TAIL_LINES:]))


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the command's process group, SIGKILL if it is still there after a short grace."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=_KILL_GRACE_SECONDS)
            return
        except subprocess.TimeoutExpired:
            continue


def run_command(run: CommandRun, *, setup: ComponentSetup, what: str, extra_env: Mapping[str, str]) -> None:
    """Run `run.argv` (see the module docstring); raise NotifyError or TransientError when it fails."""
    program = list(run.argv)
    cwd = setup.path(run.cwd) if run.cwd else setup.config_dir
    env = {name: os.environ[name] for name in (*BASE_ENV, *run.pass_env) if name in os.environ}
    env.update(run.env)
    env.update(extra_env)
    with tempfile.TemporaryFile() as stderr:
        try:
            process = subprocess.Popen(
                program,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,  # its own process group, so that a timeout kills its children too
                close_fds=True,
            )
        except FileNotFoundError:
            raise NotifyError(
                f"{what}: cannot run {program[0]!r}: no such program or working directory ({cwd}); give a full "
                "path, or a program on PATH"
            ) from None
        except PermissionError:
            raise NotifyError(f"{what}: cannot run {program[0]!r}: permission denied (is it executable?)") from None
        except OSError as exc:
            raise NotifyError(f"{what}: cannot run {program[0]!r}: {exc.strerror}") from None
        try:
            code = process.wait(timeout=run.timeout)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            stderr.seek(0)
            tail = _stderr_tail(stderr.read())
            raise TransientError(
                f"{what}: {program[0]!r} did not finish within {run.timeout:g}s and was killed"
                + (f"; stderr: {tail}" if tail else "")
            ) from None
        if code == 0:
            return
        stderr.seek(0)
        tail = _stderr_tail(stderr.read())
    how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
    message = f"{what}: {program[0]!r} {how}" + (f"; stderr: {tail}" if tail else "; no stderr")
    if code in run.transient_exit_codes:
        raise TransientError(message + "; retried")
    raise NotifyError(message)


class CommandNotifier:
    """Runs a local program with the event in its environment (see the module docstring)."""

    event_kinds = EVERY_KIND

    def __init__(self, options: Mapping[str, Any], setup: ComponentSetup):
        self.options = parse_options(CommandRun, options)
        self.setup = setup
        self._what = f"command notifier {setup.name}"

    def probe(self) -> str:
        """For dry runs: argv[0] resolves to an executable (nothing is run)."""
        program = self.options.argv[0]
        found = shutil.which(program, path=os.environ.get("PATH")) if "/" not in program else program
        resolved = self.setup.path(found) if found else None
        if resolved is None or not os.access(resolved, os.X_OK):
            raise NotifyError(f"{self._what}: {program!r} is not an executable here\n  fix: install it or correct argv")
        return f"{resolved} is executable"

    def __call__(self, event: RotationEvent) -> None:
        """Runs argv (a local process; no remote call)."""
        run_command(self.options, setup=self.setup, what=self._what, extra_env=event_environment(event))
