"""Helpers of the team-cache tests: clients with their own working directory and download
cache, running the public CLI as real processes against one shared ``mlflow server``.

Not a test module. Outcomes are read back with ``MlflowClient`` (never through trainkit's
internals, which may move)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PYTHON = sys.executable
BARRIER = HERE.parent / "barrier_cli.py"

START, END = "2020-01-01", "2022-12-31"
WINDOW_CLI = ["--train-start", START, "--train-end", END]


@dataclass
class Result:
    args: list[str]
    rc: int
    out: str
    err: str
    seconds: float
    client: str = ""

    def __str__(self) -> str:  # what a failing assertion shows
        return (f"[{self.client}] trainkit {' '.join(self.args)}\n  exit {self.rc} after {self.seconds:.1f}s\n"
                f"  stdout: {self.out[-1500:]!r}\n  stderr: {self.err[-3000:]!r}")

    def json(self) -> Any:
        assert self.rc == 0, str(self)
        assert "Traceback" not in self.err, str(self)
        try:
            return json.loads(self.out)
        except ValueError as exc:
            raise AssertionError(f"stdout is not one JSON document ({exc})\n{self}") from None


@dataclass
class Running:
    """A client process in flight; ``result()`` waits for it."""

    client: "TeamClient"
    args: list[str]
    proc: subprocess.Popen
    out_path: Path
    err_path: Path
    t0: float = field(default_factory=time.monotonic)

    def result(self, timeout: float = 300) -> Result:
        try:
            self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:  # ours, by pid
                self.proc.kill()
                self.proc.wait()
        return Result(self.args, self.proc.returncode, self.out_path.read_text(), self.err_path.read_text(),
                      time.monotonic() - self.t0, self.client.name)


class TeamClient:
    """One member of the team: own working directory, own ``TRAINKIT_CACHE_DIR``, the shared
    tracking server in ``MLFLOW_TRACKING_URI``, nothing else in common with the others."""

    def __init__(self, name: str, root: Path, tracking_uri: str, extra_env: dict[str, str] | None = None) -> None:
        self.name = name
        self.extra_env = dict(extra_env or {})  # e.g. TRAINKIT_SERVER_RETRY_S for one test
        self.cwd = root / name / "work"
        self.cache = root / name / "cache"
        self.logs = root / name / "logs"
        for d in (self.cwd, self.cache, self.logs):
            d.mkdir(parents=True, exist_ok=True)
        self.tracking_uri = tracking_uri
        self._n = 0

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("MLFLOW_", "TRAINKIT_")) and k != "RAY_ADDRESS"}
        env.update({
            "MLFLOW_TRACKING_URI": self.tracking_uri,
            "TRAINKIT_CACHE_DIR": str(self.cache),
            "TRAINKIT_CLAIM_SETTLE": "0.3",
            "MLFLOW_ENABLE_ASYNC_LOGGING": "false",
            "OMP_NUM_THREADS": "1",  # two clients share 2 cores
            "MKL_NUM_THREADS": "1",
        })
        env.update(self.extra_env)
        return env

    def _spawn(self, argv: list[str], shown: list[str]) -> Running:
        self._n += 1
        out, err = self.logs / f"{self._n:02d}.out", self.logs / f"{self._n:02d}.err"
        with open(out, "w") as o, open(err, "w") as e:
            proc = subprocess.Popen(argv, stdout=o, stderr=e, stdin=subprocess.DEVNULL, cwd=self.cwd, env=self.env())
        return Running(self, shown, proc, out, err)

    def start(self, *args: str) -> Running:
        """``python -m trainkit *args`` in the background."""
        return self._spawn([PYTHON, "-m", "trainkit", *args], list(args))

    def start_at_barrier(self, barrier: Path, n: int, *args: str) -> Running:
        """``python -m trainkit *args``, released together with n-1 other such processes."""
        barrier.mkdir(parents=True, exist_ok=True)
        return self._spawn([PYTHON, str(BARRIER), str(barrier), str(n), *args], list(args))

    def start_python(self, code: str, *args: str) -> Running:
        """``python -c code *args`` in the client's directory and environment."""
        return self._spawn([PYTHON, "-c", code, *args], ["<python -c>", *args])

    def cli(self, *args: str, timeout: float = 300) -> Result:
        return self.start(*args).result(timeout)


def together(*running: Running, timeout: float = 300) -> list[Result]:
    """Wait for processes started side by side."""
    deadline = time.monotonic() + timeout
    return [r.result(max(1.0, deadline - time.monotonic())) for r in running]


def go_times(barrier: Path) -> list[float]:
    return sorted(float((barrier / f).read_text()) for f in os.listdir(barrier) if f.startswith("go-"))


# ----------------------------------------------------------------------------- the server, read back
def mlflow_client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def all_runs(uri: str, experiment: str) -> list[Any]:
    """Every run (active and deleted) of ``experiment``."""
    from mlflow.entities import ViewType

    c = mlflow_client(uri)
    exp = c.get_experiment_by_name(experiment)
    if exp is None:
        return []
    runs: list[Any] = []
    token = None
    while True:
        page = c.search_runs([exp.experiment_id], run_view_type=ViewType.ALL, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def describe(runs: list[Any]) -> str:
    return "\n".join(
        f"  {r.info.run_id} {r.info.run_name} {r.info.status} {r.info.lifecycle_stage} "
        f"tags={ {k: v[:20] for k, v in r.data.tags.items() if k.startswith(('trainkit.', 'config_hash'))} }"
        for r in runs
    ) or "  (none)"
