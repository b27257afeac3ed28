"""Helpers shared by the test files (import as ``from support import …``)."""

from __future__ import annotations

import contextlib
from contextlib import contextmanager
import os
import shutil
import socket
import sqlite3
import subprocess
import urllib.request
import time
import signal as _signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

#: small, real training settings used by store/manager/CLI tests (seconds, not minutes)
FAST = dict(timesteps=256, n_envs=2, n_steps=64, batch_size=64, n_epochs=1)
FAST_CLI = ["--timesteps", "256", "--hp", "n_envs=2", "--hp", "n_steps=64", "--hp", "batch_size=64", "--hp", "n_epochs=1"]

#: what ``trainkit --help`` (and ``import trainkit``) must not import (docs/ARCHITECTURE.md, "Rooms")
HEAVY_MODULES = ("torch", "stable_baselines3", "mlflow", "pandas", "numpy", "sklearn", "ta", "yfinance")


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


# ----------------------------------------------------------------------------- sqlite stores
def make_sqlite_template(root: Path) -> Path:
    """An empty MLflow sqlite database in ``root``, created and migrated once (the way trainkit
    prepares a new store: under its file lock), to be copied by :func:`copy_sqlite_store`.
    Creating and migrating a store costs 3-10 s on a busy machine; copying it, milliseconds."""
    from trainkit.store.connection import migrate_sqlite_locked

    db = root / "mlflow.db"
    cwd = os.getcwd()
    os.chdir(root)  # MLflow roots the Default experiment's artifacts in the working directory
    try:
        migrate_sqlite_locked(f"sqlite:///{db}")
    finally:
        os.chdir(cwd)
    leftovers = [p.name for p in root.iterdir() if p.name.startswith("mlflow.db-")]
    assert not leftovers, f"the template store has uncommitted journal files: {leftovers}"
    return db


def copy_sqlite_store(template: Path, dst_dir: Path) -> str:
    """Copy the migrated template into ``dst_dir/mlflow.db`` and return its URI. The Default
    experiment's artifact location is moved into ``dst_dir/mlruns`` too, so the copy is what a
    store created in ``dst_dir`` would be."""
    dst_dir.mkdir(parents=True, exist_ok=True)
    db = dst_dir / "mlflow.db"
    assert not db.exists(), f"{db} exists already"
    shutil.copyfile(template, db)
    with contextlib.closing(sqlite3.connect(db)) as con, con:
        con.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0",
                    (str(dst_dir / "mlruns" / "0"),))
    return f"sqlite:///{db}"


# ----------------------------------------------------------------------------- models
def observations(model: Any, n: int = 128, seed: int = 0) -> Any:
    """``n`` random observations of ``model``'s observation space (float32)."""
    import numpy as np

    dim = int(model.observation_space.shape[0])
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


def same_weights(a: Any, b: Any) -> bool:
    """Do two SB3 models have exactly the same policy parameters?"""
    import torch

    sa, sb = a.policy.state_dict(), b.policy.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def assert_same_model(loaded: Any, expected: Any, obs: Any = None, what: str = "") -> None:
    """``loaded`` is ``expected``: the same class and policy parameters, and the same
    deterministic actions on the same observations."""
    import numpy as np

    label = f"{what}: " if what else ""
    assert loaded is not None, f"{label}nothing was loaded"
    assert type(loaded) is type(expected), f"{label}{type(loaded).__name__} is not {type(expected).__name__}"
    obs = observations(expected) if obs is None else obs
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], expected.predict(obs, deterministic=True)[0],
                                  err_msg=f"{label}the loaded model acts differently from the expected one")
    assert same_weights(loaded, expected), f"{label}same actions here, but different policy parameters"


def stored_policy(tracking_uri: str, run_id: str) -> Any:
    """The policy.zip of a run's LoggedModel in a local store, read straight from its artifact
    directory (found with MlflowClient) and loaded with SB3: the expected model, independent of
    the way trainkit resolves and loads model URIs."""
    from mlflow.tracking import MlflowClient

    from trainkit.store.flavor import load_policy

    client = MlflowClient(tracking_uri)
    run = client.get_run(run_id)
    location = client.get_logged_model(run.data.tags["trainkit.model_id"]).artifact_location
    root = Path(location.removeprefix("file://"))
    (path,) = root.rglob("policy.zip")
    return load_policy(str(path), run.data.params["algo"])


@contextmanager
def served_model(model_uri: str, env: dict[str, str], root: Path) -> Iterator[str]:
    """A real ``mlflow models serve`` of ``model_uri`` on 127.0.0.1; its base URL until the block
    ends, then SIGTERM to its process group (SIGKILL if it lingers)."""
    port = free_port()
    with open(root / "serve.log", "w") as log:
        proc = subprocess.Popen(
            ["mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local", "--host", "127.0.0.1",
             "--port", str(port)],
            stdout=log, stderr=subprocess.STDOUT, cwd=root, env=env, start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, (root / "serve.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(base + "/ping", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "mlflow models serve did not answer /ping"
            time.sleep(0.5)
        yield base
    finally:
        os.killpg(proc.pid, _signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, _signal.SIGKILL)
            proc.wait()
