"""What the test servers share about the processes they run: a free port of 127.0.0.1, a start that retries when
another process took the port between probe and bind, a child process's exit status (for the watch), and stopping
one (terminate, then kill)."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Callable

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def start_on_free_ports(
    attempt: Callable[[], None],
    *,
    what: str,
    failures: tuple[type[Exception], ...] = (RuntimeError,),
    describe: Callable[[Exception], str] = str,
    tries: int = 3,
) -> None:
    """Run `attempt` (which takes free ports and starts the server on them) until it does not raise one of
    `failures`, at most `tries` times: another process may take a free port between probe and bind."""
    last_error = ""
    for _ in range(tries):
        try:
            attempt()
            return
        except failures as exc:
            last_error = describe(exc)
    raise RuntimeError(f"{what} did not start:\n{last_error}")


def process_status(process: subprocess.Popen[bytes] | None) -> str | None:
    """The watch's `exit_status` of a server that runs as our child process: None while it runs."""
    if process is None:
        return "is not running (its process was never started, or its start failed)"
    code = process.poll()
    return None if code is None else f"exited with code {code}"


def terminate(process: subprocess.Popen[bytes] | None, *, timeout: float = 15) -> None:
    """SIGTERM, then SIGKILL after `timeout` seconds; nothing when the process is gone already."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
