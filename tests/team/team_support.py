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

    def _spawn(self, argv: list[str], shown: list[str], env: dict[str, str] | None = None) -> Running:
        self._n += 1
        out, err = self.logs / f"{self._n:02d}.out", self.logs / f"{self._n:02d}.err"
        with open(out, "w") as o, open(err, "w") as e:
            proc = subprocess.Popen(argv, stdout=o, stderr=e, stdin=subprocess.DEVNULL, cwd=self.cwd,
                                    env={**self.env(), **(env or {})})
        return Running(self, shown, proc, out, err)

    def start(self, *args: str) -> Running:
        """``python -m trainkit *args`` in the background."""
        return self._spawn([PYTHON, "-m", "trainkit", *args], list(args))

    def start_at_barrier(self, barrier: Path, n: int, *args: str, at_lease: tuple[str, int] | None = None) -> Running:
        """``python -m trainkit *args``, released together with n-1 other such processes.

        ``at_lease=(config_hash, k)``: also held, with k-1 others, inside the race window of the
        lease on ``config_hash`` — each has looked, seen no live lease and is about to create
        its own — so their claims meet in the store (the launcher of the sqlite and server races,
        tests/reliability/rel_support.ACQUIRE_BARRIER_LAUNCHER: timing only, the protocol runs
        unchanged). ``claim_times(barrier)`` then says when each went on."""
        barrier.mkdir(parents=True, exist_ok=True)
        if at_lease is None:
            return self._spawn([PYTHON, str(BARRIER), str(barrier), str(n), *args], list(args))
        from reliability.rel_support import ACQUIRE_BARRIER_LAUNCHER  # tests/ is on sys.path, as for `support`

        (barrier / "lease").mkdir(exist_ok=True)
        env = {"TK_ACQUIRE_BARRIER": str(barrier / "lease"), "TK_ACQUIRE_BARRIER_HASH": at_lease[0],
               "TK_ACQUIRE_BARRIER_N": str(at_lease[1])}
        return self._spawn([PYTHON, "-c", ACQUIRE_BARRIER_LAUNCHER, str(BARRIER), str(barrier), str(n), *args],
                           list(args), env=env)

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


def config_hash(symbol: str, timesteps: int) -> str:
    """The hash the CLI computes for ``train --symbols SYMBOL WINDOW_CLI --data-source synthetic``
    with tests/support.py's FAST_CLI at ``timesteps`` (as tests/reliability/rel_support.py's
    ``config_hash``; the tests compare it with the hash the clients report)."""
    from support import FAST
    from trainkit.config import TrainConfig

    options = {k: v for k, v in FAST.items() if k != "timesteps"}
    return TrainConfig.create(symbol, START, END, 21, "synthetic", timesteps, **options).config_hash


def claim_times(barrier: Path) -> list[float]:
    """When each process held at the lease barrier (``start_at_barrier(at_lease=…)``) went on
    to create its lease."""
    lease = barrier / "lease"
    if not lease.is_dir():
        return []
    return sorted(float((lease / f).read_text()) for f in os.listdir(lease) if f.startswith("claim-"))


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
