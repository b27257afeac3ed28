"""Benchmark: the same cache misses run one after the other, by ``LocalExecutor(2)`` and by
``RayExecutor`` on a local 2-CPU Ray instance (issue 15).

Each mode trains N symbols (synthetic data, the default config with ``timesteps``) into a fresh
sqlite store of its own, so every request is a miss, through
``TrainingManager.iter_models(requests, executor)`` — exactly what ``trainkit train`` does. The
times are wall clock for the whole call: process spawning, imports, the Ray start-up and the
MLflow logging included (the Ray start-up is also shown on its own). Targets: Ray within 15 %
of the local pool, and both at least 1.7x faster than sequential.

Run alone: ``python bench/bench_executors.py [--symbols 8] [--timesteps 100000]``. Needs
``trainkit[ray]``. The local Ray instance uses token authentication with a throwaway token
(nothing is written to ``~/.ray``) and is shut down at the end.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repo importable without installing
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

Row = tuple[str, str, str]

WINDOW = ("2015-01-01", "2019-12-31")


def _symbols(n: int) -> list[str]:
    return [f"BEX{i:02d}" for i in range(n)]


def _timed(label: str, executor_factory, symbols: list[str], timesteps: int) -> tuple[float, float, float]:
    """Seconds for every symbol's miss through ``executor_factory()``, seconds spent
    connecting first (Ray), and the mean seconds of one request inside its worker (a per-model
    time that grows with parallelism means the cores were contended, not the executor slow)."""
    from trainkit import TrainingManager
    from trainkit.manager import ModelRequest

    root = tempfile.mkdtemp(prefix=f"tk-bench-{label}-")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        manager = TrainingManager(f"sqlite:///{os.path.join(root, 'mlflow.db')}")
        requests = [ModelRequest(manager.config_for(s, *WINDOW, data_source="synthetic", timesteps=timesteps))
                    for s in symbols]
        _ = manager.store.experiment_id  # the store exists before the clock starts (same for all modes)
        executor = executor_factory()
        t0 = time.perf_counter()
        connect_s = 0.0
        if hasattr(executor, "connect"):
            with executor:  # keep the connection for the call; shut the instance down after
                executor.connect()
                connect_s = time.perf_counter() - t0
                outcomes = list(manager.iter_models(requests, executor))
        else:
            outcomes = list(manager.iter_models(requests, executor))
        seconds = time.perf_counter() - t0
    finally:
        os.chdir(cwd)
    bad = [o for o in outcomes if not o.ok or o.result.status != "trained"]
    if bad or len(outcomes) != len(symbols):
        raise SystemExit(f"{label}: not every request trained: {bad}")
    return seconds, connect_s, sum(o.result.seconds for o in outcomes) / len(outcomes)


def run(symbols: int = 8, timesteps: int = 100_000) -> list[Row]:
    from trainkit.executors import LocalExecutor, RayExecutor

    os.environ.setdefault("TRAINKIT_CACHE_DIR", tempfile.mkdtemp(prefix="tk-bench-cache-"))
    os.environ.pop("RAY_ADDRESS", None)  # a local 2-CPU instance, whatever the shell points at
    if not os.environ.get("RAY_AUTH_TOKEN"):  # a throwaway token: nothing written to ~/.ray
        os.environ["RAY_AUTH_MODE"] = "token"
        os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    names = _symbols(symbols)
    what = f"{symbols} symbols x {timesteps:,} steps"
    seq, _, seq_one = _timed("seq", lambda: LocalExecutor(1), names, timesteps)
    pool, _, pool_one = _timed("pool", lambda: LocalExecutor(2), names, timesteps)
    ray_s, ray_start, ray_one = _timed("ray", lambda: RayExecutor(num_cpus=2), names, timesteps)
    return [
        (f"executors: sequential, {what}", f"{seq:.1f} s", f"LocalExecutor(1), in this process; {seq_one:.1f} s per model"),
        (f"executors: local pool, {what}", f"{pool:.1f} s", f"LocalExecutor(2), spawned processes; {pool_one:.1f} s per model"),
        (f"executors: Ray, {what}", f"{ray_s:.1f} s",
         f"RayExecutor, local 2-CPU instance; start-up {ray_start:.1f} s included; {ray_one:.1f} s per model"),
        ("executors: sequential / local pool", f"{seq / pool:.2f}x", "target >= 1.7x"),
        ("executors: sequential / Ray", f"{seq / ray_s:.2f}x", "target >= 1.7x"),
        ("executors: Ray / local pool (time)", f"{ray_s / pool:.2f}x", "target <= 1.15x"),
        ("executors: Ray without start-up / local pool", f"{(ray_s - ray_start) / pool:.2f}x", "for reference"),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--symbols", type=int, default=8)
    parser.add_argument("--timesteps", type=int, default=100_000)
    args = parser.parse_args(argv)
    rows = run(args.symbols, args.timesteps)
    width = max(len(r[0]) for r in rows)
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>9}  {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
