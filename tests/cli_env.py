"""Runs the real `rotator` command in a subprocess against a config in a temporary directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


@dataclass
class CliEnv:
    root: Path
    config: Path

    def run(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        timeout: float = 120,
        stdin: str | None = None,
        config: bool = True,
    ) -> Result:
        full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
        argv = [sys.executable, "-m", "rotator", *args]
        if config:
            argv += ["--config", str(self.config)]
        proc = subprocess.run(
            argv, capture_output=True, text=True, env=full_env, timeout=timeout, input=stdin, cwd=self.root
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def popen(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
        return subprocess.Popen(
            [sys.executable, "-m", "rotator", *args, "--config", str(self.config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=full_env,
            cwd=self.root,
        )

    def seed(self, secret: str, value: dict[str, Any], store: str = "local") -> None:
        path = self.root / "seed.json"
        path.write_text(json.dumps(value))
        result = self.run("store", "put", secret, "--file", str(path), "--store", store)
        path.unlink()
        assert result.code == 0, result.stderr

    def state_files(self) -> list[Path]:
        return [p for p in (self.root / "state").rglob("*") if p.is_file()]
