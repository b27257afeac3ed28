"""Helpers shared by the test files (import as ``from support import …``)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

#: small, real training settings used by store/manager/CLI tests (seconds, not minutes)
FAST = dict(timesteps=256, n_envs=2, n_steps=64, batch_size=64, n_epochs=1)
FAST_CLI = ["--timesteps", "256", "--hp", "n_envs=2", "--hp", "n_steps=64", "--hp", "batch_size=64", "--hp", "n_epochs=1"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_cli(*args: str, env: dict | None = None, cwd: str | Path | None = None, timeout: float = 300,
            input: str | None = None) -> subprocess.CompletedProcess:
    """Run `python -m trainkit …` as a real subprocess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [PYTHON, "-m", "trainkit", *args], capture_output=True, text=True, env=full_env, cwd=cwd,
        timeout=timeout, input=input,
    )
