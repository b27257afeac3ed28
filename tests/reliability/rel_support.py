"""Helpers of the reliability tests: CLI subprocesses, start barriers, store snapshots.

Not a test module. The tests drive trainkit the way users do — ``python -m trainkit …`` as real
processes against real MLflow stores — and read the outcome back through ``MlflowClient``
only (never through trainkit), so a bug in trainkit's own bookkeeping cannot hide itself.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
PYTHON = sys.executable
BARRIER_SCRIPT = HERE.parent / "barrier_cli.py"


def _root_conftest() -> Any:
    """tests/conftest.py, loaded under its own name: with two conftest.py files on the path the
    bare name ``conftest`` means whichever pytest imported last."""
    spec = importlib.util.spec_from_file_location("trainkit_tests_root_conftest", REPO / "tests" / "conftest.py")
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


_root = _root_conftest()
FAST: dict[str, int] = dict(_root.FAST)
FAST_CLI: list[str] = list(_root.FAST_CLI)
free_port = _root.free_port
copy_sqlite_store = _root.copy_sqlite_store  # an empty store: a copy of the session's migrated template

from support import assert_same_model, stored_policy  # noqa: E402,F401  (tests/support.py: a plain module, one name)

START, END = "2020-01-01", "2022-12-31"
WINDOW_CLI = ["--train-start", START, "--train-end", END]


# ----------------------------------------------------------------------------- subprocesses
@dataclass
class Result:
    args: list[str]
    rc: int
    out: str
    err: str
    seconds: float

    def __str__(self) -> str:  # what a failing assertion shows
        return (f"trainkit {' '.join(self.args)}\n  exit {self.rc} after {self.seconds:.1f}s\n"
                f"  stdout: {self.out[-1500:]!r}\n  stderr: {self.err[-3000:]!r}")


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The test process's environment (already isolated by the autouse fixture) plus ``extra``;
    one torch/BLAS thread per child so N children share 2 cores without oversubscription."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME")}
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MKL_NUM_THREADS", "1")
    env.update(extra or {})
    return env


def isolated_env(root: Path, uri: str) -> dict[str, str]:
    """What tests/conftest.py's autouse ``_isolate`` sets, for module-scoped fixtures (which are
    set up before it runs): own caches, short claim settle and Yahoo timeout, this store."""
    return {"TRAINKIT_CACHE_DIR": str(root / "cache"), "TRAINKIT_CLAIM_SETTLE": "0.3", "TRAINKIT_YF_TIMEOUT": "5",
            "MLFLOW_ENABLE_ASYNC_LOGGING": "false", "MLFLOW_TRACKING_URI": uri}


def cli(*args: str, env: dict[str, str] | None = None, cwd: str | Path | None = None, timeout: float = 120) -> Result:
    """``python -m trainkit *args`` as a real subprocess, timed."""
    t0 = time.monotonic()
    proc = subprocess.run([PYTHON, "-m", "trainkit", *args], capture_output=True, text=True,
                          env=child_env(env), cwd=cwd, timeout=timeout, stdin=subprocess.DEVNULL)
    return Result(list(args), proc.returncode, proc.stdout, proc.stderr, time.monotonic() - t0)


def error_lines(res: Result) -> list[str]:
    return [line for line in res.err.splitlines() if line.strip()]


def assert_clean_failure(res: Result, rc: int, *needles: str) -> None:
    """Exit code ``rc``, exactly one line on stderr that starts with ``error:`` and mentions
    every needle (case-insensitive), no traceback, nothing on stdout."""
    assert res.rc == rc, f"expected exit {rc}\n{res}"
    assert "Traceback" not in res.err, f"traceback on stderr\n{res}"
    lines = error_lines(res)
    assert len(lines) == 1, f"expected exactly one line on stderr, got {len(lines)}\n{res}"
    assert lines[0].startswith("error:"), f"stderr line does not start with 'error:'\n{res}"
    for needle in needles:
        assert needle.lower() in lines[0].lower(), f"stderr does not mention {needle!r}\n{res}"
    assert not res.out.strip(), f"a failing command printed on stdout\n{res}"


#: ``python -c`` launcher of barrier_cli.py with a second barrier *inside the race window of the
#: lease*: in the first ``LeaseManager.acquire`` for ``TK_ACQUIRE_BARRIER_HASH``, after the
#: process has looked and seen no live lease and just before it creates its own, it waits until
#: ``TK_ACQUIRE_BARRIER_N`` processes are there (files ``at-<pid>`` in ``TK_ACQUIRE_BARRIER``).
#: Only the timing is arranged; the protocol runs unchanged. Without it, processes released
#: together still reach the lease tens to hundreds of milliseconds apart (data, features, store
#: calls), the first lease is visible before the others look, and they wait without ever
#: competing: the race would test nothing. Other hashes, and later calls, pass straight through.
ACQUIRE_BARRIER_LAUNCHER = """
import os, runpy, sys, time
from trainkit.store import lease as _lease

_dir, _n, _hash = (os.environ["TK_ACQUIRE_BARRIER"], int(os.environ["TK_ACQUIRE_BARRIER_N"]),
                   os.environ["TK_ACQUIRE_BARRIER_HASH"])
_real, _passed = _lease.LeaseManager.acquire, []

def _barrier():
    open(os.path.join(_dir, f"at-{os.getpid()}"), "w").close()
    deadline = time.monotonic() + 180
    while sum(name.startswith("at-") for name in os.listdir(_dir)) < _n:
        if time.monotonic() > deadline:
            sys.exit("lease barrier: the other processes never reached the lease")
        time.sleep(0.002)
    with open(os.path.join(_dir, f"claim-{os.getpid()}"), "w") as fh:
        fh.write(repr(time.time()))

def acquire(self, config_hash, create_run, *args, **kwargs):
    if config_hash != _hash or _passed:
        return _real(self, config_hash, create_run, *args, **kwargs)
    _passed.append(True)

    def create_run_together():
        _barrier()
        return create_run()

    return _real(self, config_hash, create_run_together, *args, **kwargs)

_lease.LeaseManager.acquire = acquire
script = sys.argv[1]
sys.argv = sys.argv[1:]
runpy.run_path(script, run_name="__main__")
"""


def start_barrier_cli(n: int, barrier: Path, argvs: list[list[str]], env: dict[str, str] | None, cwd: Path,
                      logs: Path, *, at_lease: tuple[str, int] | None = None) -> list[subprocess.Popen]:
    """Start ``len(argvs)`` CLI processes that import everything heavy, then wait for each other
    in a file barrier in ``barrier`` and run ``trainkit <argv>`` at the same moment.

    ``at_lease=(config_hash, k)``: also hold ``k`` processes that saw no live lease on
    ``config_hash`` until all ``k`` are about to create theirs (:data:`ACQUIRE_BARRIER_LAUNCHER`),
    so their claims really meet in the store; ``claim_times(barrier)`` then says when each went
    on. Every one of the ``k`` must get there (a process that fails earlier holds the others
    until the barrier's deadline)."""
    assert len(argvs) == n
    barrier.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    env = dict(env or {})
    launcher = [str(BARRIER_SCRIPT)]
    if at_lease is not None:
        (barrier / "lease").mkdir(exist_ok=True)
        env.update(TK_ACQUIRE_BARRIER=str(barrier / "lease"), TK_ACQUIRE_BARRIER_HASH=at_lease[0],
                   TK_ACQUIRE_BARRIER_N=str(at_lease[1]))
        launcher = ["-c", ACQUIRE_BARRIER_LAUNCHER, str(BARRIER_SCRIPT)]
    procs = []
    for i, argv in enumerate(argvs):
        proc = subprocess.Popen(
            [PYTHON, *launcher, str(barrier), str(n), *argv],
            stdout=open(logs / f"p{i}.out", "w"), stderr=open(logs / f"p{i}.err", "w"),
            env=child_env(env), cwd=cwd, stdin=subprocess.DEVNULL,
        )
        proc.trainkit_argv = list(argv)  # type: ignore[attr-defined]
        procs.append(proc)
    return procs


def wait_all(procs: list[subprocess.Popen], logs: Path, timeout: float = 240) -> list[Result]:
    deadline = time.monotonic() + timeout
    out = []
    try:
        for i, p in enumerate(procs):
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for i, p in enumerate(procs):
        out.append(Result(getattr(p, "trainkit_argv", p.args[3:]), p.returncode, (logs / f"p{i}.out").read_text(),  # type: ignore[index]
                          (logs / f"p{i}.err").read_text(), float("nan")))
    return out


def claim_times(barrier: Path) -> list[float]:
    """When each process held at the lease barrier went on to create its lease."""
    lease = barrier / "lease"
    if not lease.is_dir():
        return []
    return sorted(float((lease / f).read_text()) for f in os.listdir(lease) if f.startswith("claim-"))


def go_times(barrier: Path) -> list[float]:
    return sorted(float((barrier / f).read_text()) for f in os.listdir(barrier) if f.startswith("go-"))


def kill(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """Signal one process we started (by its pid; never a process group or a name)."""
    if proc.poll() is None:
        os.kill(proc.pid, sig)
    proc.wait(timeout=30)


# ----------------------------------------------------------------------------- the store, read back
def client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def all_runs(uri: str, experiment: str | None = None) -> list[Any]:
    """Every run (active and deleted) of every experiment, or of ``experiment``."""
    from mlflow.entities import ViewType

    c = client(uri)
    if experiment is not None:
        exp = c.get_experiment_by_name(experiment)
        ids = [exp.experiment_id] if exp else []
    else:
        ids = [e.experiment_id for e in c.search_experiments(view_type=ViewType.ALL)]
    if not ids:
        return []
    runs: list[Any] = []
    token = None
    while True:
        page = c.search_runs(ids, run_view_type=ViewType.ALL, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def snapshot(uri: str) -> dict[str, tuple[str, str]]:
    """run_id -> (status, lifecycle_stage) over the whole store: equal before and after means
    no run was created, removed, restored or ended."""
    return {r.info.run_id: (r.info.status, r.info.lifecycle_stage) for r in all_runs(uri)}


def runs_with_hash(uri: str, config_hash: str, experiment: str = "trainkit") -> list[Any]:
    return [r for r in all_runs(uri, experiment) if r.data.tags.get("config_hash") == config_hash]


def finished_with_hash(uri: str, config_hash: str, experiment: str = "trainkit") -> list[Any]:
    return [r for r in runs_with_hash(uri, config_hash, experiment) if r.info.status == "FINISHED"]


def running(uri: str, experiment: str = "trainkit") -> list[Any]:
    return [r for r in all_runs(uri, experiment) if r.info.status == "RUNNING"]


def describe(runs: list[Any]) -> str:
    return "\n".join(
        f"  {r.info.run_id} {r.info.run_name} {r.info.status} {r.info.lifecycle_stage} "
        f"tags={ {k: v[:20] for k, v in r.data.tags.items() if k.startswith(('trainkit.', 'config_hash'))} }"
        for r in runs
    )


def policy_zip_path(uri: str, run: Any) -> Path:
    """The local policy.zip of a run's LoggedModel, found through MLflow (artifact_location of
    the LoggedModel named by the run), not by guessing trainkit's layout."""
    import urllib.parse

    model_id = run.data.tags.get("trainkit.model_id")
    assert model_id, f"run {run.info.run_id} names no LoggedModel"
    loc = client(uri).get_logged_model(model_id).artifact_location
    path = urllib.parse.urlparse(loc).path if loc.startswith("file:") else loc
    hits = [Path(d) / "policy.zip" for d, _dirs, files in os.walk(path) if "policy.zip" in files]
    assert len(hits) == 1, f"expected one policy.zip under {loc}, found {hits}"
    return hits[0]


# ----------------------------------------------------------------------------- configs
def config_hash(symbol: str, *, data_source: str = "synthetic", timesteps: int | None = None, **options: Any) -> str:
    """The hash the CLI computes for ``train --symbols SYMBOL --data-source … fast_cli(timesteps)``."""
    from trainkit.config import TrainConfig

    settings = {**FAST, **options}
    if timesteps is not None:
        settings["timesteps"] = timesteps
    steps = settings.pop("timesteps")
    return TrainConfig.create(symbol, START, END, 21, data_source, steps, **settings).config_hash


def fast_cli(steps: int | None = None) -> list[str]:
    args = list(FAST_CLI)
    if steps is not None:
        args[args.index("--timesteps") + 1] = str(steps)
    return args


def train_inprocess(uri: str, symbol: str, **options: Any) -> Any:
    """Seed a store with a real model, in this process (saves a Python start-up per model)."""
    from trainkit.manager import TrainingManager

    res = TrainingManager(uri).get(symbol, START, END, data_source=options.pop("data_source", "synthetic"),
                                   **{**FAST, **options})
    assert res.status == "trained", res.status
    return res
