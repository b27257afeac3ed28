"""Shared fixtures: real MLflow stores (sqlite in a temp dir, and a real `mlflow server`
process on 127.0.0.1), isolated caches, and small-but-real training settings."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

#: small, real training settings used by store/manager/CLI tests (seconds, not minutes)
FAST = dict(timesteps=256, n_envs=2, n_steps=64, batch_size=64, n_epochs=1)
FAST_CLI = ["--timesteps", "256", "--hp", "n_envs=2", "--hp", "n_steps=64", "--hp", "batch_size=64", "--hp", "n_epochs=1"]


@pytest.fixture(autouse=True)
def _isolate(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test touches the user's caches, the repo's mlflow.db or the network's patience."""
    cache = tmp_path_factory.mktemp("tk-cache")
    monkeypatch.setenv("TRAINKIT_CACHE_DIR", str(cache))
    monkeypatch.setenv("TRAINKIT_CLAIM_SETTLE", "0.3")
    monkeypatch.setenv("TRAINKIT_YF_TIMEOUT", "5")
    monkeypatch.setenv("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)


@pytest.fixture
def sqlite_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh sqlite tracking store whose artifacts live in the same temp dir."""
    monkeypatch.chdir(tmp_path)  # MLflow puts ./mlruns next to the working directory
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        log = open(self.root / "server.log", "w")
        self.proc = subprocess.Popen(
            [
                PYTHON, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
                "--backend-store-uri", f"sqlite:///{self.root / 'server.db'}",
                "--artifacts-destination", str(self.root / "artifacts"),
                "--workers", "1",
            ],
            stdout=log, stderr=subprocess.STDOUT, cwd=self.root, start_new_session=True,
        )
        deadline = time.time() + 90
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {(self.root / 'server.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.uri + "/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError("mlflow server did not start within 90 s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            import signal

            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    """A real `mlflow server` on a random loopback port, shared by the session."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def server_uri(mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
    return mlflow_server.uri


def run_cli(*args: str, env: dict | None = None, cwd: str | Path | None = None, timeout: float = 300,
            input: str | None = None) -> subprocess.CompletedProcess:
    """Run `python -m trainkit …` as a real subprocess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [PYTHON, "-m", "trainkit", *args], capture_output=True, text=True, env=full_env, cwd=cwd,
        timeout=timeout, input=input,
    )
