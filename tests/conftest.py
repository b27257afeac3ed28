"""Shared fixtures: real MLflow stores (sqlite in a temp dir, copied from one migrated template
per session, and a real `mlflow server` process on 127.0.0.1), isolated caches, and
small-but-real training settings."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest


# shared helpers live in tests/support.py (a plain module: two conftest.py files would shadow
# each other under the bare name ``conftest``); re-exported here for older imports
from support import FAST, FAST_CLI, PYTHON, REPO, copy_sqlite_store, free_port, make_sqlite_template, run_cli  # noqa: E402,F401


def pytest_configure(config: pytest.Config) -> None:
    """Ctrl-C must be deliverable to the processes the tests start. A shell that runs a command
    in the background without job control (``make test &``, ``nohup``, some CI runners) starts
    it with SIGINT *ignored*, and an ignored signal stays ignored across ``exec``: every
    ``python -m trainkit`` child would then shrug off the SIGINT that the Ctrl-C tests send,
    and those tests would fail for a reason that has nothing to do with trainkit. A handled
    signal is reset to its default in an exec'd child, so handling it here (as Python does by
    default) gives every child the default a terminal user has."""
    import signal

    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


#: **What `slow` means.** A test is slow when it trains a model, starts a server, a cluster or a
#: database, or runs trainkit (or MLflow) in a subprocess. The test files below hold only fast
#: tests (in-process, pure or on small frames), except those marked ``slow`` one by one; every
#: test of every other file is marked ``slow`` here, so a new file starts out slow and
#: ``make test-fast`` (``-m "not slow"``, a couple of minutes) stays fast. ``make test`` runs all.
FAST_FILES = frozenset({
    "test_architecture.py", "test_contract.py", "test_data.py", "test_env.py", "test_features.py",
    "test_registries.py", "test_search_space.py", "test_selection.py", "test_windows.py",
})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.name not in FAST_FILES:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session", autouse=True)
def closed_yahoo_proxy():
    """``http://127.0.0.1:<port>`` where nothing listens, for the whole session, set as
    TRAINKIT_YF_PROXY from the start (so module-scoped fixtures see it too). The port is held by
    a bound socket that never listens: connecting is refused at once, and no other process (an
    mlflow server picking a free port) can take it."""
    import socket

    with socket.socket() as sock, pytest.MonkeyPatch.context() as mp:
        sock.bind(("127.0.0.1", 0))
        proxy = f"http://127.0.0.1:{sock.getsockname()[1]}"
        mp.setenv("TRAINKIT_YF_PROXY", proxy)
        yield proxy


@pytest.fixture(autouse=True)
def _isolate(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch, closed_yahoo_proxy: str) -> None:
    """No test touches the user's caches, the repo's mlflow.db or the network's patience, and
    Yahoo is unreachable on purpose: every yfinance request (in this process and in the
    ``python -m trainkit`` / ``mlflow run`` subprocesses, which inherit the environment) goes
    through TRAINKIT_YF_PROXY, a closed port, and is refused at once. MLflow ignores that
    variable. A test that wants Yahoo to answer says so: a recorded session, a filled download
    cache, or ``monkeypatch.delenv("TRAINKIT_YF_PROXY")`` for the real thing."""
    cache = tmp_path_factory.mktemp("tk-cache")
    monkeypatch.setenv("TRAINKIT_CACHE_DIR", str(cache))
    monkeypatch.setenv("TRAINKIT_YF_PROXY", closed_yahoo_proxy)
    monkeypatch.setenv("TRAINKIT_CLAIM_SETTLE", "0.3")
    monkeypatch.setenv("TRAINKIT_YF_TIMEOUT", "5")
    monkeypatch.setenv("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ONE empty, migrated MLflow sqlite database for the whole session (made on first use),
    which ``sqlite_uri`` and the module-scoped stores copy: creating and migrating a store
    costs 3-10 s on a busy machine, copying it milliseconds. Nothing opens the template
    itself after this."""
    return make_sqlite_template(tmp_path_factory.mktemp("sqlite-template"))


@pytest.fixture
def sqlite_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sqlite_template: Path) -> str:
    """An empty sqlite tracking store (a copy of the migrated template) whose artifacts live in
    the same temp dir, set as MLFLOW_TRACKING_URI; the temp dir is the working directory."""
    monkeypatch.chdir(tmp_path)  # MLflow puts ./mlruns next to the working directory
    uri = copy_sqlite_store(sqlite_template, tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


@pytest.fixture
def fresh_sqlite_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Like ``sqlite_uri``, but no database file exists yet: for the tests whose point is the
    creation and first migration of a store (docs/ARCHITECTURE.md, "MLflow pitfalls")."""
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "mlflow.db"
    assert not db.exists()
    uri = f"sqlite:///{db}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


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
            # trainkit uses no server-side jobs: 2 processes instead of 10, up in a third of the time
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
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
