"""The environment a benchmark runs `rotator` processes in: as an installed package runs.

pip compiles the bytecode at install. With PYTHONDONTWRITEBYTECODE set, as in some shells and CI, every run would
compile the project's modules again (about 60 ms of each command here), which no operator pays.
"""

from __future__ import annotations

import os


def installed_env(**extra: str) -> dict[str, str]:
    """This process's environment without PYTHONDONTWRITEBYTECODE, with `extra` set."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    return {**env, **extra}
