"""Who holds a lease, and whether that holder is still alive (shared by every journal backend)."""

from __future__ import annotations

import os
import socket
from functools import cache


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), which tells a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


@cache
def this_host() -> str:
    """This host's name in lease holders: ROTATOR_HOST_ID if set, else the hostname. Set ROTATOR_HOST_ID where
    several daemons share a hostname but not a process table (containers with a fixed hostname): a holder "on
    this host" whose pid is gone is taken over at once, which is only right if the pid is in our process table."""
    return os.environ.get("ROTATOR_HOST_ID") or socket.gethostname()


def this_holder() -> tuple[str, str, int]:
    """(holder, host, pid) for the current process. The holder string embeds the process start time."""
    pid = os.getpid()
    host = this_host()
    return f"{host}:{pid}:{_start_time(pid) or '0'}", host, pid


def holder_is_dead(holder: str, host: str, pid: int) -> bool:
    """True when the holder ran on this host and that process is gone (or its pid was reused).

    A holder on another host is never judged dead here: only its lease's expiry frees it.
    """
    if host != this_host():
        return False
    started = _start_time(pid)
    if started is None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False
    return not holder.endswith(f":{pid}:{started}")
